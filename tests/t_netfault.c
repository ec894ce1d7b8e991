/* Network faults: refused connections, names that do not resolve, bad
   ports, malformed hosts, peer resets, writing to a closed peer (no
   SIGPIPE), running out of fds in accept (no spinning, recovery), 10,000
   concurrent connections, no fd left behind. Resolving names starts the
   executor's threads. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <fcntl.h>
#ifdef _WIN32
#include <process.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#endif

static int is_eai(int err) {
  return err <= EVL_EAI_AGAIN && err >= EVL_EAI_OVERFLOW;
}

/* ---- a small echo server and client peers -------------------------------- */

/* Server: a stateless echo that counts. */
typedef struct echo_srv {
  int made, lost, lost_err_seen;
  int peer_ports[64]; /* client ports of the first connections */
} echo_srv;

static void srv_made(evl_transport *t, void *user) {
  echo_srv *s = (echo_srv *)user;
  if (s->made < 64) {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    CHECK_EQ(evl_transport_get_peername(t, &ss, &len), 0);
    s->peer_ports[s->made] = sockaddr_port(&ss);
  }
  s->made++;
}
static void srv_data(evl_transport *t, const void *data, size_t len,
                     void *user) {
  (void)user;
  CHECK_EQ(evl_transport_write(t, data, len), 0);
}
static void srv_lost(evl_transport *t, int err, void *user) {
  echo_srv *s = (echo_srv *)user;
  (void)t;
  s->lost++;
  if (err)
    s->lost_err_seen++;
}
static const evl_protocol echo_proto = {
    srv_made, srv_data, NULL, srv_lost, NULL, NULL, NULL, NULL, NULL, NULL};

static evl_server *echo_server(evl_loop *loop, echo_srv *s,
                               const evl_net_options *o) {
  evl_future *f = evl_create_server(loop, &echo_proto, s, "127.0.0.1", 0, o);
  evl_server *srv;
  srv = (evl_server *)wait_result(loop, f);
  return srv;
}

static int connect_error(evl_loop *loop, const char *host, int port) {
  rec_peer p;
  int rc;
  memset(&p, 0, sizeof p);
  rc = test_connect_error(loop, &rec_proto, &p, host, port);
  CHECK_EQ(p.made, 0);
  return rc;
}

static int free_port(void) {
  int port, fd = loopback_listener(64, &port, NULL);
  test_closesocket(fd);
  return port;
}

/* ---- connection errors -------------------------------------------------- */

TEST(netfault_connection_refused) {
  evl_loop *loop = test_open();
  CHECK_EQ(connect_error(loop, "127.0.0.1", free_port()), EVL_ECONNREFUSED);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(netfault_unresolvable_host) {
  evl_loop *loop = test_open();
  int rc = connect_error(loop, "no-such-host.invalid", 80);
  if (!is_eai(rc))
    fprintf(stderr, "  got %s\n", evl_err_name(rc));
  CHECK(is_eai(rc));
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(netfault_bad_ports) {
  evl_loop *loop = test_open();
  echo_srv s;
  evl_future *f;
  memset(&s, 0, sizeof s);
  /* bad arguments: a future that fails with EVL_EINVAL */
  CHECK_EQ(connect_error(loop, "127.0.0.1", -1), EVL_EINVAL);
  CHECK_EQ(connect_error(loop, "127.0.0.1", 70000), EVL_EINVAL);
  CHECK_EQ(connect_error(loop, "127.0.0.1", 65536), EVL_EINVAL);
  f = evl_create_server(loop, &echo_proto, &s, "127.0.0.1", -1, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  f = evl_create_server(loop, &echo_proto, &s, "127.0.0.1", 70000, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  f = evl_open_connection(loop, "127.0.0.1", 70000, 0, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  /* port 0 cannot be connected to */
  CHECK(connect_error(loop, "127.0.0.1", 0) < 0);
  CHECK_EQ(s.made, 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(netfault_malformed_host) {
  evl_loop *loop = test_open();
  int rc = connect_error(loop, "999.1.1.1x", 80);
  if (!(is_eai(rc) || rc == EVL_EINVAL))
    fprintf(stderr, "  got %s\n", evl_err_name(rc));
  CHECK(is_eai(rc) || rc == EVL_EINVAL);
  rc = connect_error(loop, "127.0.0.1,,", 80);
  CHECK(rc < 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- peers that go away -------------------------------------------------- */

TEST(netfault_peer_reset) {
  evl_loop *loop;
  int port, lfd, afd;
  rec_peer cl;
  evl_future *f;
  struct linger lg;
  if (test_under_wine())
    SKIP("wine 8 closes a socket with a FIN, never a reset (SO_LINGER 0 "
         "and unread data alike)");
  loop = test_open();
  lfd = loopback_listener(64, &port, NULL);
  memset(&cl, 0, sizeof cl);
  f = evl_create_connection(loop, &rec_proto, &cl, "127.0.0.1", port, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  RUN_UNTIL(loop, cl.made == 1);
  afd = (int)accept(lfd, NULL, NULL);
  CHECK(afd >= 0);
  lg.l_onoff = 1;
  lg.l_linger = 0;
  CHECK_EQ(setsockopt(afd, SOL_SOCKET, SO_LINGER, (void *)&lg, sizeof lg), 0);
  test_closesocket(afd); /* RST */
  RUN_UNTIL(loop, cl.lost == 1);
  CHECK_EQ(cl.lost_err, EVL_ECONNRESET);
  CHECK_EQ(cl.eofs, 0);
  test_closesocket(lfd);
  test_close(loop);
}

static void write_until_lost(evl_loop *loop, rec_peer *cl, size_t chunk) {
  unsigned char *data = (unsigned char *)calloc(1, chunk);
  int i;
  CHECK(data != NULL);
  for (i = 0; i < 400 && !cl->lost; i++) {
    /* the failing write may report the error itself (then it is
       closing: the next write gives EVL_ECLOSED) */
    int rc = evl_transport_write(cl->t, data, chunk);
    if (!(rc == 0 || rc == EVL_ECLOSED || rc == EVL_EPIPE ||
          rc == EVL_ECONNRESET))
      fprintf(stderr, "  write: %s (lost %d)\n", evl_err_name(rc), cl->lost);
    CHECK(rc == 0 || rc == EVL_ECLOSING || rc == EVL_EPIPE ||
          rc == EVL_ECONNRESET);
    if (rc == EVL_EPIPE || rc == EVL_ECONNRESET) {
      CHECK_EQ(evl_transport_is_closing(cl->t), 1);
      CHECK_EQ(evl_transport_write(cl->t, data, chunk), EVL_ECLOSING);
    }
    run_for(loop, 0.005);
  }
  free(data);
  CHECK_EQ(cl->lost, 1);
  if (!(cl->lost_err == EVL_EPIPE || cl->lost_err == EVL_ECONNRESET))
    fprintf(stderr, "  lost with %s\n", evl_err_name(cl->lost_err));
  CHECK(cl->lost_err == EVL_EPIPE || cl->lost_err == EVL_ECONNRESET);
}

/* A quiet loop (the write error may be reported too) with cl connected
   to the raw listener lfd, whose accepted end is closed at once; cl stays
   open for writing after the peer's FIN. SIGPIPE is back to its default
   (the runner ignores it): a SIGPIPE kills the test. */
static evl_loop *connect_to_closed_peer(int lfd, int port, rec_peer *cl) {
  evl_loop *loop;
  evl_future *f;
  int afd;
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_DFL);
#endif
  loop = test_open();
  g_quiet = 1;
  memset(cl, 0, sizeof *cl);
  cl->eof_keep = 1;
  f = evl_create_connection(loop, &rec_proto, cl, "127.0.0.1", port, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  RUN_UNTIL(loop, cl->made == 1);
  afd = (int)accept(lfd, NULL, NULL);
  CHECK(afd >= 0);
  test_closesocket(afd);
  return loop;
}

TEST(netfault_write_after_peer_closed_no_sigpipe) {
  int port, lfd = loopback_listener(64, &port, NULL);
  rec_peer cl;
  evl_loop *loop = connect_to_closed_peer(lfd, port, &cl);
  RUN_UNTIL(loop, cl.eofs == 1);
  CHECK_EQ(cl.lost, 0);
  write_until_lost(loop, &cl, 100);
  test_closesocket(lfd);
  test_close_any(loop); /* g_quiet: reports may come */
}

TEST(netfault_big_write_to_closed_peer_no_sigpipe) {
  int port, lfd = loopback_listener(64, &port, NULL);
  rec_peer cl;
  evl_loop *loop = connect_to_closed_peer(lfd, port, &cl);
  test_closesocket(lfd);
  /* no waiting for the EOF: big writes, some of them queued */
  write_until_lost(loop, &cl, (size_t)1 << 20);
  test_close_any(loop); /* g_quiet: reports may come */
}

/* ---- running out of fds in accept ---------------------------------------- */

#ifndef _WIN32 /* no per-process fd limit to run out of on Windows */
#define NCLI 24

static double cpu_seconds(void) {
  struct rusage ru;
  CHECK_EQ(getrusage(RUSAGE_SELF, &ru), 0);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int fd_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

/* Reads what is there on a raw non-blocking client; returns bytes so far. */
static size_t pump(int fd, char *buf, size_t *have, size_t cap) {
  ssize_t n;
  while (*have < cap && (n = recv(fd, buf + *have, cap - *have, 0)) > 0)
    *have += (size_t)n;
  return *have;
}

TEST(netfault_accept_out_of_fds) {
  evl_loop *loop = test_open();
  echo_srv s;
  evl_server *srv;
  struct rlimit old, low;
  struct sockaddr_in sin;
  int cli[NCLI], i, lim, nfree = 0, port;
  int accepted_before, k, fresh = -1;
  double w0, c0, wall, cpu;
  char buf[8];
  size_t have = 0;
  g_quiet = 1; /* EMFILE in accept may be reported */
  memset(&s, 0, sizeof s);
  srv = echo_server(loop, &s, NULL);
  port = evl_server_port(srv);
  for (i = 0; i < NCLI; i++) {
    cli[i] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(cli[i] >= 0);
    CHECK_EQ(fcntl(cli[i], F_SETFL, O_NONBLOCK), 0);
  }
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  /* the limit caps new fd numbers: pick it so that exactly 3 fds below it
     are free (fds above it, inherited ones say, stay usable) */
  for (lim = 0; nfree < 3; lim++)
    if (!fd_open(lim))
      nfree++;
  low = old;
  low.rlim_cur = (rlim_t)lim;
  CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);

  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((unsigned short)port);
  for (i = 0; i < NCLI; i++) {
    int rc = connect(cli[i], (struct sockaddr *)&sin, sizeof sin);
    CHECK(rc == 0 || errno == EINPROGRESS);
  }
  /* the server accepts what fits, then runs out of fds */
  RUN_UNTIL(loop, s.made == nfree);
  /* ~300 ms with connections pending and no fd to take them: the loop
     must sleep, not spin on the readable listening socket */
  w0 = test_now();
  c0 = cpu_seconds();
  run_for(loop, 0.3);
  wall = test_now() - w0;
  cpu = cpu_seconds() - c0;
  if (cpu >= 0.5 * wall)
    fprintf(stderr, "  cpu %.3f s over %.3f s\n", cpu, wall);
  CHECK(cpu < 0.5 * wall);
  CHECK_EQ(s.made, nfree);
  CHECK_EQ(evl_server_is_serving(srv), 1);

  /* close the clients: the server's fds come back (pending connections
     may have been dropped or may be accepted now, either is fine), and
     a new connection is accepted and echoes */
  for (i = 0; i < NCLI; i++)
    test_closesocket(cli[i]);
  RUN_UNTIL(loop, s.lost == s.made);
  accepted_before = s.made;
  fresh = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fresh >= 0);
  CHECK_EQ(fcntl(fresh, F_SETFL, O_NONBLOCK), 0);
  k = connect(fresh, (struct sockaddr *)&sin, sizeof sin);
  CHECK(k == 0 || errno == EINPROGRESS);
  RUN_UNTIL(loop, s.made > accepted_before);
  CHECK_EQ(send(fresh, "ping", 4, 0), 4);
  RUN_UNTIL(loop, pump(fresh, buf, &have, 4) == 4);
  CHECK(memcmp(buf, "ping", 4) == 0);
  test_closesocket(fresh);
  CHECK_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  RUN_UNTIL(loop, s.lost == s.made);
  test_server_done(loop, srv);
  test_close_any(loop); /* EMFILE in accept may have been reported */
}
#endif

/* ---- 10,000 concurrent connections --------------------------------------- */

typedef struct mconn {
  evl_transport *t;
  int idx, made, lost, ok;
  size_t n;
  char want[16], got[16];
} mconn;

typedef struct many_ctx {
  int inflight, connected, failed, echoed, lost;
  int first_err;
} many_ctx;
static many_ctx g_many;

static void m_made(evl_transport *t, void *user) {
  mconn *c = (mconn *)user;
  c->t = t;
  c->made++;
  g_many.connected++;
  CHECK_EQ(evl_transport_write(t, c->want, strlen(c->want)), 0);
}
static void m_data(evl_transport *t, const void *data, size_t len, void *user) {
  mconn *c = (mconn *)user;
  (void)t;
  CHECK(c->n + len <= strlen(c->want));
  memcpy(c->got + c->n, data, len);
  c->n += len;
  if (c->n == strlen(c->want)) {
    CHECK(memcmp(c->got, c->want, c->n) == 0);
    c->ok = 1;
    g_many.echoed++;
  }
}
static void m_lost(evl_transport *t, int err, void *user) {
  mconn *c = (mconn *)user;
  (void)t;
  (void)err;
  c->lost++;
  c->t = NULL;
  g_many.lost++;
}
static const evl_protocol many_proto = {m_made, m_data, NULL, m_lost, NULL,
                                        NULL,   NULL,   NULL, NULL,   NULL};

static void m_connected(evl_future *f, void *arg) {
  (void)arg;
  g_many.inflight--;
  if (evl_future_error(f) != 0) {
    g_many.failed++;
    if (!g_many.first_err)
      g_many.first_err = evl_future_error(f);
  }
}

/* The server runs in a child process, so each side needs ~n fds: 10,000
   connections fit under a hard limit of 20,000 fds. The child exits 0 only
   if it saw every connection made and lost without an error. */
#ifndef _WIN32
static void serve_n_then_exit(int n, int port_fd) {
  evl_loop *loop = test_open();
  evl_net_options o;
  echo_srv s;
  evl_server *srv;
  int port, ok;
  double dl = test_now() + 50;
  memset(&s, 0, sizeof s);
  memset(&o, 0, sizeof o);
  o.backlog = 1024;
  srv = echo_server(loop, &s, &o);
  port = evl_server_port(srv);
  if (write(port_fd, &port, sizeof port) != (ssize_t)sizeof port)
    exit(3);
  close(port_fd);
  while ((s.made < n || s.lost < n) && test_now() < dl)
    evl_run_once(loop, 0.05);
  ok = s.made == n && s.lost == n && s.lost_err_seen == 0;
  if (!ok)
    fprintf(stderr, "  server: made %d, lost %d, errors %d (of %d)\n", s.made,
            s.lost, s.lost_err_seen, n);
  test_server_done(loop, srv);
  test_close(loop);
  exit(ok ? 0 : 1);
}
#endif

#ifdef _WIN32
/* Windows has no fork and no fd limit: the server runs in a thread of its
   own, with its own loop. */
typedef struct server_thread {
  int n, port, ok;
  HANDLE ready;
} server_thread;
static unsigned __stdcall serve_n_thread(void *arg) {
  server_thread *st = (server_thread *)arg;
  evl_loop *loop = test_open();
  evl_net_options o;
  echo_srv s;
  evl_server *srv;
  double dl = test_now() + 50;
  evl_set_exception_handler(loop, count_handler, NULL);
  memset(&s, 0, sizeof s);
  memset(&o, 0, sizeof o);
  o.backlog = 1024;
  srv = echo_server(loop, &s, &o);
  st->port = evl_server_port(srv);
  SetEvent(st->ready);
  while ((s.made < st->n || s.lost < st->n) && test_now() < dl)
    evl_run_once(loop, 0.05);
  st->ok = s.made == st->n && s.lost == st->n && s.lost_err_seen == 0;
  if (!st->ok)
    fprintf(stderr, "  server: made %d, lost %d, errors %d (of %d)\n", s.made,
            s.lost, s.lost_err_seen, st->n);
  test_server_done(loop, srv);
  test_close(loop);
  return 0;
}
#endif

/* ThreadSanitizer cannot start threads in a child forked from a threaded
   process, and libkqueue has threads from the first kqueue on. */
#if defined(EVFILT_LIBKQUEUE) && defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_WITH_LIBKQUEUE 1
#endif
#endif

TEST(netfault_10000_connections) {
  int n = 10000, i, started = 0, port = 0;
  evl_loop *loop;
  mconn *conns;
  evl_future **futs;
  double t0, dl;
#ifdef _WIN32
  server_thread st;
  HANDLE th;
  if (test_under_wine()) { /* wine takes 2-20 ms per connection here */
    n = 1000;
    printf("  note: wine: %d connections\n", n);
  }
#else
  int pfd[2], status = 0;
  struct rlimit rl;
  pid_t child;
  rlim_t need = (rlim_t)(n + 300);
#ifdef TSAN_WITH_LIBKQUEUE
  printf("  skipped: the server child of a libkqueue process cannot start "
         "threads under ThreadSanitizer\n");
  return;
#endif
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < need) {
    struct rlimit r2 = rl;
    r2.rlim_cur = need;
    if (r2.rlim_max < need)
      r2.rlim_max = need;
    if (setrlimit(RLIMIT_NOFILE, &r2) != 0) {
      /* the hard limit cannot be raised: as many as fit */
      r2.rlim_cur = rl.rlim_max;
      r2.rlim_max = rl.rlim_max;
      if (r2.rlim_cur < 2200 || setrlimit(RLIMIT_NOFILE, &r2) != 0) {
        printf("  note: cannot raise RLIMIT_NOFILE to %lu; skipped\n",
               (unsigned long)need);
        return;
      }
      n = (int)(r2.rlim_cur - 300);
      printf("  note: RLIMIT_NOFILE hard limit %lu: %d connections\n",
             (unsigned long)r2.rlim_cur, n);
    }
  }
#endif
  loop = test_open();
  if (!strcmp(evl_backend_name(loop), "select")) {
    n = 1024 - 64; /* select cannot watch fds >= FD_SETSIZE */
    printf("  note: select backend: %d connections\n", n);
  }
#ifdef _WIN32
  memset(&st, 0, sizeof st);
  st.n = n;
  st.ready = CreateEventA(NULL, TRUE, FALSE, NULL);
  CHECK(st.ready != NULL);
  th = (HANDLE)_beginthreadex(NULL, 0, serve_n_thread, &st, 0, NULL);
  CHECK(th != NULL);
  CHECK_EQ(WaitForSingleObject(st.ready, 20000), WAIT_OBJECT_0);
  port = st.port;
#else
  CHECK_EQ(pipe(pfd), 0);
  child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    close(pfd[0]);
    test_close(loop); /* the parent's; the child makes its own */
    serve_n_then_exit(n, pfd[1]);
  }
  close(pfd[1]);
  CHECK_EQ(read(pfd[0], &port, sizeof port), (ssize_t)sizeof port);
  close(pfd[0]);
#endif
  memset(&g_many, 0, sizeof g_many);
  conns = (mconn *)calloc((size_t)n, sizeof *conns);
  futs = (evl_future **)calloc((size_t)n, sizeof *futs);
  CHECK(conns != NULL && futs != NULL);
  t0 = test_now();
  dl = t0 + 40;
  while (g_many.echoed + g_many.failed < n && test_now() < dl) {
    /* at most 256 connects in flight: the backlog never overflows */
    while (started < n && g_many.inflight < 256) {
      mconn *c = &conns[started];
      c->idx = started;
      snprintf(c->want, sizeof c->want, "m%d.", started);
      futs[started] =
          evl_create_connection(loop, &many_proto, c, "127.0.0.1", port, NULL);
      CHECK(futs[started] != NULL);
      CHECK_EQ(evl_future_add_done_callback(futs[started], m_connected, NULL),
               0);
      g_many.inflight++;
      started++;
    }
    evl_run_once(loop, 0.01);
  }
  if (g_many.failed)
    fprintf(stderr, "  %d connections failed, first with %s\n", g_many.failed,
            evl_err_name(g_many.first_err));
  CHECK_EQ(g_many.failed, 0);
  CHECK_EQ(g_many.connected, n);
  CHECK_EQ(g_many.echoed, n);
  for (i = 0; i < n; i++) {
    CHECK(conns[i].ok);
    CHECK_EQ(conns[i].made, 1);
    CHECK(conns[i].t != NULL);
  }
  /* all of them are open at once, then closed */
  for (i = 0; i < n; i++)
    evl_transport_close(conns[i].t);
  RUN_UNTIL(loop, g_many.lost == n);
#ifdef _WIN32
  CHECK_EQ(WaitForSingleObject(th, 60000), WAIT_OBJECT_0);
  CloseHandle(th);
  CloseHandle(st.ready);
  CHECK(st.ok);
#else
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
#endif
  for (i = 0; i < n; i++)
    evl_future_release(futs[i]);
  test_close(loop);
  free(conns);
  free(futs);
  CHECK_EQ(g_reports, 0);
  if (test_now() - t0 > 15)
    fprintf(stderr, "  note: took %.1f s\n", test_now() - t0);
}

/* ---- no fd left behind ------------------------------------------------- */

static void dgram_made(evl_transport *t, void *user) {
  rec_made(t, user);
}
static void dgram_recv(evl_transport *t, const void *data, size_t len,
                       const void *addr, size_t addrlen, void *user) {
  rec_peer *p = (rec_peer *)user;
  (void)t;
  (void)data;
  (void)addr;
  (void)addrlen;
  p->n += len + 1;
}
static const evl_protocol dgram_proto = {
    dgram_made, NULL, NULL, rec_lost, NULL, NULL, NULL, NULL, dgram_recv, NULL};

static evl_transport *dial(evl_loop *loop, rec_peer *p, const char *host,
                           int port) {
  evl_future *f = evl_create_connection(loop, &rec_proto, p, host, port, NULL);
  evl_transport *t;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  t = (evl_transport *)evl_future_result(f);
  evl_future_release(f);
  RUN_UNTIL(loop, p->made == 1);
  return t;
}

TEST(netfault_no_fd_left) {
  int before, i;
  evl_loop *loop;
  echo_srv s, us;
  evl_server *srv, *usrv;
  rec_peer cl[2], u1, u2, uc;
  evl_future *f;
  char dir[200], path[256];
  int have_unix = 1;
#ifdef _WIN32
  SOCKET probe = socket(AF_UNIX, SOCK_STREAM, 0);
  if (probe == INVALID_SOCKET)
    have_unix = 0; /* wine 8 */
  else
    closesocket(probe);
#endif
  test_settle_fds();
  before = test_count_fds();
  if (before < 0)
    SKIP("no /proc/self/fd to count fds with");
#ifdef _WIN32
  /* Winsock (wine's at least) makes a handle of its own on first use,
     which stays: use it once first, then count. */
  loop = test_open();
  memset(&s, 0, sizeof s);
  memset(cl, 0, sizeof cl);
  srv = echo_server(loop, &s, NULL);
  dial(loop, &cl[0], "127.0.0.1", evl_server_port(srv));
  test_close(loop);
  before = test_count_fds();
#endif
  loop = test_open();
  memset(&s, 0, sizeof s);
  memset(&us, 0, sizeof us);
  memset(cl, 0, sizeof cl);
  memset(&u1, 0, sizeof u1);
  memset(&u2, 0, sizeof u2);
  memset(&uc, 0, sizeof uc);
  /* TCP: by number and by name (through the executor) */
  srv = echo_server(loop, &s, NULL);
  dial(loop, &cl[0], "127.0.0.1", evl_server_port(srv));
  dial(loop, &cl[1], "localhost", evl_server_port(srv));
  CHECK(test_count_fds() > before);
  /* a refused connection */
  CHECK_EQ(connect_error(loop, "127.0.0.1", free_port()), EVL_ECONNREFUSED);
  /* Unix */
  if (have_unix) {
    CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/s", dir);
    f = evl_create_unix_server(loop, &echo_proto, &us, path, NULL);
    CHECK_EQ(wait_fut(loop, f), 0);
    usrv = (evl_server *)evl_future_result(f);
    evl_future_release(f);
    f = evl_create_unix_connection(loop, &rec_proto, &uc, path);
    CHECK_EQ(wait_fut(loop, f), 0);
    evl_future_release(f);
    RUN_UNTIL(loop, uc.made == 1 && us.made == 1);
  } else {
    printf("  note: no AF_UNIX sockets here (wine 8): TCP and UDP only\n");
    usrv = NULL;
  }
  /* UDP */
  f = evl_create_datagram_endpoint(loop, &dgram_proto, &u1, "127.0.0.1", 0,
                                   NULL, 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  RUN_UNTIL(loop, u1.made == 1);
  {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    CHECK_EQ(evl_transport_get_sockname(u1.t, &ss, &len), 0);
    f = evl_create_datagram_endpoint(loop, &dgram_proto, &u2, NULL, 0,
                                     "127.0.0.1", sockaddr_port(&ss), NULL);
  }
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  RUN_UNTIL(loop, u2.made == 1);
  CHECK_EQ(evl_transport_sendto(u2.t, "x", 1, NULL, 0), 0);
  RUN_UNTIL(loop, u1.n == 2);
  /* traffic on every connection, then close everything */
  for (i = 0; i < 2; i++)
    CHECK_EQ(evl_transport_write(cl[i].t, "abc", 3), 0);
  if (have_unix)
    CHECK_EQ(evl_transport_write(uc.t, "abc", 3), 0);
  RUN_UNTIL(loop, cl[0].n == 3 && cl[1].n == 3 && (uc.n == 3 || !have_unix));
  for (i = 0; i < 2; i++)
    evl_transport_close(cl[i].t);
  if (have_unix)
    evl_transport_abort(uc.t);
  evl_transport_close(u1.t);
  evl_transport_close(u2.t);
  RUN_UNTIL(loop, cl[0].lost && cl[1].lost && (uc.lost || !have_unix) &&
                      u1.lost && u2.lost);
  RUN_UNTIL(loop, s.lost == 2 && (us.lost == 1 || !have_unix));
  test_server_done(loop, srv);
  if (have_unix)
    test_server_done(loop, usrv);
  test_close(loop);
  if (have_unix) {
    test_unlink(path);
    CHECK_EQ(test_rmdir(dir), 0);
  }
  test_settle_fds();
  CHECK_EQ(test_count_fds(), before);
}

TESTS_BEGIN
T(netfault_connection_refused)
T(netfault_unresolvable_host)
T(netfault_bad_ports)
T(netfault_malformed_host)
T(netfault_peer_reset)
T(netfault_write_after_peer_closed_no_sigpipe)
T(netfault_big_write_to_closed_peer_no_sigpipe)
T_POSIX(netfault_accept_out_of_fds, "no per-process fd limit (RLIMIT_NOFILE)")
T(netfault_10000_connections)
T(netfault_no_fd_left)
TESTS_END
