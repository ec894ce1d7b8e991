/* Scenarios for the fault sweeps (t_allocfail: allocations failing;
   t_fdlimit: a small RLIMIT_NOFILE). Include after test.h (and
   proc_test.h). Each scenario runs a whole piece of work on a loop and
   returns how many of its steps succeeded; with no fault it must reach
   its FULL_* count. Under a fault a step may fail, but only cleanly:
   every future completes (none is left pending: sweep_wait fails the test
   after SWEEP_PATIENCE seconds), with its result or an error the fault
   explains (sweep_err_ok), every callback scheduled runs, and every
   object made is given back. g_sweep_failing says whether the fault is
   on; g_sweep_where names the run for the messages. POSIX only. */
#ifndef EVL_SWEEP_TEST_H
#define EVL_SWEEP_TEST_H

#ifndef _WIN32
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>

#define SWEEP_PATIENCE 10.0

/* Set by the file that includes this: the errors its fault may cause. */
static int sweep_fault_err(int err);

/* A step that depends on a peer (the other end of a connection, a child)
   may also see what the peer's own failure looks like from here. */
static int sweep_peer_err(int err) {
  return err == EVL_EINCOMPLETE || err == EVL_ECONNRESET || err == EVL_EPIPE ||
         err == EVL_ECLOSED || err == EVL_ECONNREFUSED ||
         err == EVL_ECONNABORTED || err == EVL_ECANCELED || err == EVL_ECLOSING;
}

static void sweep_fail(const char *what, int err, const char *why) {
  fprintf(stderr, "  %s: %s: %s (%s)\n", g_sweep_where, what, why,
          err ? evl_err_name(err) : "-");
  CHECK(0);
}

/* A task fails with EVL_EINVAL when a future it awaits could not be made
   (EVL_AWAIT on NULL, documented): for sweep_wait's peer. */
#define SWEEP_TASK 2

/* Runs the loop until f is done (f NULL: the call failed; 0). Returns 1
   for a result, 0 for an error the fault explains (peer 1: also a peer's
   failure; SWEEP_TASK: a task's EINVAL); anything else fails the test.
   Releases f. */
static int sweep_wait(evl_loop *loop, evl_future *f, const char *what,
                      int peer) {
  double end = test_now() + SWEEP_PATIENCE;
  int err;
  if (!f) {
    if (!g_sweep_failing)
      sweep_fail(what, 0, "no future with no fault");
    return 0;
  }
  while (!evl_future_done(f) && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  if (!evl_future_done(f))
    sweep_fail(what, 0, "pending forever");
  err = evl_future_error(f);
  evl_future_release(f);
  if (err == 0)
    return 1;
  if (g_sweep_failing &&
      (sweep_fault_err(err) || (peer == 1 && sweep_peer_err(err)) ||
       (peer == SWEEP_TASK && err == EVL_EINVAL)))
    return 0;
  sweep_fail(what, err, "failed");
  return 0;
}
/* The same for a call that returns an error code. */
static int sweep_rc_peer(int rc, const char *what, int peer) {
  if (rc >= 0)
    return 1;
  if (!g_sweep_failing ||
      !(sweep_fault_err(rc) || (peer && sweep_peer_err(rc))))
    sweep_fail(what, rc, "failed");
  return 0;
}
static int sweep_rc(int rc, const char *what) {
  return sweep_rc_peer(rc, what, 0);
}
/* Runs the loop until *n reaches want (at most SWEEP_PATIENCE s). */
static void sweep_until(evl_loop *loop, const int *n, int want,
                        const char *what) {
  double end = test_now() + SWEEP_PATIENCE;
  while (*n < want && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  if (*n < want)
    sweep_fail(what, 0, "never came");
}

/* ---- core: timers, tasks, gather, wait_for, executor, DNS ------------- */

static void sc_count(evl_loop *loop, void *arg) {
  (void)loop;
  (*(int *)arg)++;
}
static void sc_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, (void *)7));
  EVL_ASYNC_RETURN(t, evl_await_result(t));
  EVL_ASYNC_END(t);
}
static int sc_twice(void *arg, void **result) {
  *result = (void *)((intptr_t)arg * 2);
  return 0;
}
/* What a future must give when it succeeds: checked, then released. */
static int sweep_value(evl_loop *loop, evl_future *f, intptr_t want,
                       const char *what) {
  int ok;
  if (f)
    evl_future_ref(f);
  ok = sweep_wait(loop, f, what, evl_is_task(f) ? SWEEP_TASK : 0);
  if (ok && (intptr_t)evl_future_result(f) != want)
    sweep_fail(what, 0, "wrong result");
  evl_future_release(f);
  return ok;
}

/* An executor job that calls back into the loop from its thread. */
typedef struct sc_ts {
  evl_loop *loop;
  int hits;
} sc_ts;
static void sc_ts_cb(evl_loop *loop, void *arg) {
  (void)loop;
  ((sc_ts *)arg)->hits++;
}
static int sc_ts_job(void *arg, void **result) {
  sc_ts *t = (sc_ts *)arg;
  *result = NULL;
  return evl_call_soon_threadsafe(t->loop, sc_ts_cb, t);
}

#define FULL_CORE 12
static int sc_core(evl_loop *loop, void *arg) {
  int hits = 0, want = 0, score = 0, i;
  evl_future *kids[2], *g;
  sc_ts ts;
  (void)arg;
  ts.loop = loop;
  ts.hits = 0;
  if (sweep_wait(loop, evl_run_in_executor(loop, NULL, sc_ts_job, &ts, NULL),
                 "call_soon_threadsafe", 0)) {
    sweep_until(loop, &ts.hits, 1, "call_soon_threadsafe's callback");
    score++;
  }
  score +=
      sweep_value(loop, evl_wait_for(evl_sleep(loop, 0.001, (void *)5), 10.0),
                  5, "wait_for in time");
  for (i = 0; i < 3; i++)
    if (sweep_rc((int)evl_call_later(loop, 0.001 * i, sc_count, &hits),
                 "call_later"))
      want++;
  if (sweep_rc((int)evl_call_soon(loop, sc_count, &hits), "call_soon"))
    want++;
  score +=
      sweep_value(loop, evl_task_create(loop, sc_task, NULL, 0), 7, "task");
  kids[0] = evl_sleep(loop, 0.001, NULL);
  kids[1] = evl_sleep(loop, 0.002, NULL);
  g = kids[0] && kids[1] ? evl_gather(loop, kids, 2, 0) : NULL;
  score += sweep_wait(loop, g, "gather", 0);
  evl_future_release(kids[0]);
  evl_future_release(kids[1]);
  {
    evl_future *w = evl_wait_for(evl_sleep(loop, 30.0, NULL), 0.002);
    double end = test_now() + SWEEP_PATIENCE;
    int err;
    if (!w && !g_sweep_failing)
      sweep_fail("wait_for", 0, "no future");
    while (w && !evl_future_done(w) && test_now() < end)
      (void)evl_run_once(loop, 0.01);
    if (w && !evl_future_done(w))
      sweep_fail("wait_for", 0, "pending forever");
    err = w ? evl_future_error(w) : 0;
    if (w && err == EVL_ETIMEDOUT)
      score++;
    else if (w && !(g_sweep_failing && sweep_fault_err(err)))
      sweep_fail("wait_for", err, "not a timeout");
    evl_future_release(w);
  }
  score += sweep_value(
      loop, evl_run_in_executor(loop, NULL, sc_twice, (void *)21, NULL), 42,
      "run_in_executor");
  score += sweep_wait(
      loop,
      evl_getaddrinfo(loop, "localhost", "80", AF_INET, SOCK_STREAM, 0, 0),
      "getaddrinfo", 0);
  {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(80);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    score += sweep_wait(
        loop,
        evl_getnameinfo(loop, &sa, sizeof sa, NI_NUMERICHOST | NI_NUMERICSERV),
        "getnameinfo", 0);
  }
  sweep_until(loop, &hits, want, "timers and call_soon");
  return score + (want == 4 ? 4 : 0);
}

/* ---- networking: streams (start_server, open_connection) -------------- */

typedef struct sc_net {
  int open;             /* server-side streams not yet freed */
  int made, lost, got;  /* protocol side */
  evl_transport *peer;  /* the client's transport */
  evl_transport *dg[2]; /* datagram endpoints */
  int dg_lost;
} sc_net;

static void sc_echo_read(evl_future *f, void *arg) {
  evl_stream *s = (evl_stream *)arg;
  evl_bytes *b = (evl_bytes *)evl_future_result(f);
  if (b)
    (void)evl_stream_write(s, b->data, b->len);
  evl_future_release(f);
}
/* The server side: echoes the first 5 bytes, then lets go of the stream
   (freed once its transport is gone, what was written sent first). */
static sc_net *g_sc_net;
static void sc_echo_done(evl_future *f, void *arg) {
  sc_echo_read(f, arg);
  evl_stream_free((evl_stream *)arg);
  g_sc_net->open--;
}
static void sc_serve(evl_stream *s, void *arg) {
  sc_net *n = (sc_net *)arg;
  evl_future *f = evl_stream_readexactly(s, 5);
  n->open++;
  if (!f || evl_future_add_done_callback(f, sc_echo_done, s) != 0) {
    evl_future_release(f);
    evl_stream_free(s);
    n->open--;
  }
}

/* Every server-side stream's read completes and the stream is freed. */
static void sweep_streams_freed(evl_loop *loop, sc_net *n) {
  double end = test_now() + SWEEP_PATIENCE;
  while (n->open > 0 && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  if (n->open > 0)
    sweep_fail("server stream", 0, "its read never completed");
}

/* A result that is a transport or server, or NULL. */
static void *sweep_object(evl_loop *loop, evl_future *f, const char *what,
                          int peer, int *score) {
  void *r = NULL;
  if (f)
    evl_future_ref(f);
  if (sweep_wait(loop, f, what, peer)) {
    r = evl_future_result(f);
    (*score)++;
  }
  evl_future_release(f);
  return r;
}

/* "hello" written on c comes back from sc_serve: 2 points, with c freed. */
static int sweep_hello_round_trip(evl_loop *loop, evl_stream *c) {
  int score;
  evl_future *fr;
  score = sweep_rc_peer(evl_stream_write(c, "hello", 5), "stream_write", 1);
  fr = evl_stream_readexactly(c, 5);
  if (fr)
    evl_future_ref(fr);
  if (sweep_wait(loop, fr, "readexactly", 1)) {
    evl_bytes *b = (evl_bytes *)evl_future_result(fr);
    if (b->len != 5 || memcmp(b->data, "hello", 5) != 0)
      sweep_fail("readexactly", 0, "wrong bytes");
    score++;
  }
  evl_future_release(fr);
  evl_stream_free(c);
  return score;
}

#define FULL_STREAMS 4
static int sc_streams(evl_loop *loop, void *arg) {
  sc_net *n = (sc_net *)arg;
  evl_server *srv = NULL;
  evl_stream *c = NULL;
  int score = 0;
  memset(n, 0, sizeof *n);
  g_sc_net = n;
  srv = (evl_server *)sweep_object(
      loop, evl_start_server(loop, sc_serve, n, "127.0.0.1", 0, 0, NULL),
      "start_server", 0, &score);
  if (srv)
    c = (evl_stream *)sweep_object(
        loop,
        evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, NULL),
        "open_connection", 0, &score);
  if (c)
    score += sweep_hello_round_trip(loop, c);
  if (srv)
    evl_server_free(srv);
  sweep_streams_freed(loop, n);
  return score;
}

/* ---- networking: protocols (create_server, create_connection, sendfile),
   UDP ------------------------------------------------------------------- */

static void sc_made(evl_transport *t, void *user) {
  (void)t;
  ((sc_net *)user)->made++;
}
static void sc_lost(evl_transport *t, int err, void *user) {
  sc_net *n = (sc_net *)user;
  (void)err;
  if (t == n->peer)
    n->peer = NULL;
  if (t == n->dg[0] || t == n->dg[1])
    n->dg_lost++;
  n->lost++;
}
static void sc_echo(evl_transport *t, const void *d, size_t len, void *user) {
  (void)user;
  if (evl_transport_write(t, d, len) != 0) /* the echo would lie */
    evl_transport_abort(t);
}
static void sc_got(evl_transport *t, const void *d, size_t len, void *user) {
  (void)t;
  (void)d;
  ((sc_net *)user)->got += (int)len;
}
static void sc_dgram(evl_transport *t, const void *d, size_t len,
                     const void *addr, size_t addrlen, void *user) {
  sc_net *n = (sc_net *)user;
  n->got++;
  if (t == n->dg[0]) /* the first endpoint answers */
    (void)evl_transport_sendto(t, d, len, addr, addrlen);
}
static const evl_protocol sc_srv_proto = {
    sc_made, sc_echo, NULL, sc_lost, NULL, NULL, NULL, NULL, NULL, NULL};
static const evl_protocol sc_cli_proto = {sc_made, sc_got, NULL, sc_lost, NULL,
                                          NULL,    NULL,   NULL, NULL,    NULL};
static const evl_protocol sc_dg_proto = {sc_made, NULL, NULL, sc_lost,  NULL,
                                         NULL,    NULL, NULL, sc_dgram, NULL};

#define SC_FILE_LEN 3000
#define FULL_PROTO 4
static int sc_proto(evl_loop *loop, void *arg) {
  sc_net *n = (sc_net *)arg;
  evl_server *srv;
  int score = 0, fd;
  memset(n, 0, sizeof *n);
  srv = (evl_server *)sweep_object(
      loop, evl_create_server(loop, &sc_srv_proto, n, "127.0.0.1", 0, NULL),
      "create_server", 0, &score);
  if (srv)
    n->peer = (evl_transport *)sweep_object(
        loop,
        evl_create_connection(loop, &sc_cli_proto, n, "127.0.0.1",
                              evl_server_port(srv), NULL),
        "create_connection", 0, &score);
  fd = n->peer ? test_tmpfile_fd() : -1;
  if (fd >= 0) {
    static char buf[SC_FILE_LEN];
    int sent;
    memset(buf, 'f', sizeof buf);
    CHECK_EQ(test_fd_write(fd, buf, sizeof buf), SC_FILE_LEN);
    sent = sweep_wait(loop, evl_sendfile(n->peer, fd, 0, SC_FILE_LEN),
                      "sendfile", 1);
    score += sent;
    test_fd_close(fd);
    if (sent) {
      double end = test_now() + SWEEP_PATIENCE;
      while (n->peer && n->got < SC_FILE_LEN && test_now() < end)
        (void)evl_run_once(loop, 0.01);
      if (n->peer && n->got < SC_FILE_LEN) {
        fprintf(stderr, "  got %d, made %d, lost %d\n", n->got, n->made,
                n->lost);
        sweep_fail("sendfile echo", 0, "never came back");
      }
      if (n->got == SC_FILE_LEN)
        score++;
    }
  }
  if (n->peer)
    evl_transport_close(n->peer);
  if (srv)
    evl_server_free(srv);
  sweep_until(loop, &n->lost, n->made, "connection_lost");
  return score;
}

#define FULL_UDP 4
static int sc_udp(evl_loop *loop, void *arg) {
  sc_net *n = (sc_net *)arg;
  int score = 0, i, ndg;
  memset(n, 0, sizeof *n);
  n->dg[0] = (evl_transport *)sweep_object(
      loop,
      evl_create_datagram_endpoint(loop, &sc_dg_proto, n, "127.0.0.1", 0, NULL,
                                   0, NULL),
      "datagram endpoint", 0, &score);
  if (n->dg[0]) {
    struct sockaddr_in sa;
    size_t len = sizeof sa;
    CHECK_EQ(evl_transport_get_sockname(n->dg[0], &sa, &len), 0);
    n->dg[1] = (evl_transport *)sweep_object(
        loop,
        evl_create_datagram_endpoint(loop, &sc_dg_proto, n, NULL, 0,
                                     "127.0.0.1", ntohs(sa.sin_port), NULL),
        "connected datagram endpoint", 0, &score);
  }
  if (n->dg[1]) {
    int sent = 0;
    for (i = 0; i < 3; i++)
      sent += sweep_rc(evl_transport_sendto(n->dg[1], "ping", 4, NULL, 0),
                       "sendto");
    {
      double end = test_now() + 2.0; /* datagrams may be dropped */
      while (n->got < 2 * sent && test_now() < end)
        (void)evl_run_once(loop, 0.01);
    }
    if (sent == 3 && n->got == 6)
      score += 2;
    else if (!g_sweep_failing)
      sweep_fail("datagrams", 0, "lost with no fault");
  }
  ndg = (n->dg[0] != NULL) + (n->dg[1] != NULL);
  for (i = 0; i < 2; i++)
    if (n->dg[i])
      evl_transport_close(n->dg[i]);
  sweep_until(loop, &n->dg_lost, ndg, "datagram connection_lost");
  return score;
}

/* ---- local: Unix stream server and connection, sock_* futures, pipes -- */

static void sc_pipe_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  ((sc_net *)user)->lost++;
}
static const evl_protocol sc_pipe_proto = {
    sc_made, sc_got, NULL, sc_pipe_lost, NULL, NULL, NULL, NULL, NULL, NULL};

/* A pipe transport over fd; the fd is closed here if it got none. */
static evl_transport *sc_pipe(evl_loop *loop, sc_net *n, int fd, int write_side,
                              int *score) {
  evl_transport *t = (evl_transport *)sweep_object(
      loop,
      write_side ? evl_connect_write_pipe(loop, &sc_pipe_proto, n, fd)
                 : evl_connect_read_pipe(loop, &sc_pipe_proto, n, fd),
      write_side ? "connect_write_pipe" : "connect_read_pipe", 0, score);
  if (!t)
    close(fd);
  return t;
}

#define FULL_LOCAL 9
static int sc_local(evl_loop *loop, void *arg) {
  sc_net *n = (sc_net *)arg;
  char path[64], buf[8];
  evl_server *srv;
  evl_stream *c = NULL;
  evl_transport *r = NULL, *w = NULL;
  int score = 0, sv[2], p[2];
  memset(n, 0, sizeof *n);
  g_sc_net = n;
  snprintf(path, sizeof path, "/tmp/evl-sweep-%d.sock", (int)getpid());
  srv = (evl_server *)sweep_object(
      loop, evl_start_unix_server(loop, sc_serve, n, path, 0),
      "start_unix_server", 0, &score);
  if (srv)
    c = (evl_stream *)sweep_object(loop,
                                   evl_open_unix_connection(loop, path, 0),
                                   "open_unix_connection", 0, &score);
  if (c)
    score += sweep_hello_round_trip(loop, c);
  if (srv)
    evl_server_free(srv);
  /* sock_*: a socket pair the caller owns */
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
    /* (valgrind hands out fds past a low limit that fcntl then refuses) */
    int nb =
        test_set_nonblocking(sv[0]) == 0 && test_set_nonblocking(sv[1]) == 0;
    CHECK(nb || g_sweep_failing);
    if (nb && sweep_wait(loop, evl_sock_sendall(loop, sv[0], "data", 4),
                         "sock_sendall", 0)) {
      evl_future *f = evl_sock_recv(loop, sv[1], buf, sizeof buf);
      if (f)
        evl_future_ref(f);
      if (sweep_wait(loop, f, "sock_recv", 0) && evl_future_result_int(f) == 4)
        score += 2;
      evl_future_release(f);
    }
    close(sv[0]);
    close(sv[1]);
  } else if (!g_sweep_failing) {
    CHECK(0);
  }
  /* pipes: three bytes through a write pipe into a read pipe */
  if (pipe(p) == 0) {
    r = sc_pipe(loop, n, p[0], 0, &score);
    w = sc_pipe(loop, n, p[1], 1, &score);
    if (r && w && sweep_rc(evl_transport_write(w, "abc", 3), "pipe write")) {
      double end = test_now() + SWEEP_PATIENCE;
      while (n->got < 3 && n->lost == 0 && test_now() < end)
        (void)evl_run_once(loop, 0.01);
      if (n->got == 3)
        score++;
      else if (!g_sweep_failing || n->lost == 0)
        sweep_fail("pipe", 0, "the bytes never came");
    }
    if (w)
      evl_transport_close(w);
    if (r)
      evl_transport_close(r);
    sweep_until(loop, &n->lost, (r != NULL) + (w != NULL), "pipes' lost");
  } else if (!g_sweep_failing) {
    CHECK(0);
  }
  sweep_streams_freed(loop, n);
  return score;
}

#ifndef EVLOOP_NO_PROCESS /* (signals and subprocesses left out) */
/* ---- subprocesses: exec, shell (communicate), the low-level API -------- */

static int sc_communicate(evl_loop *loop, evl_future *fp, const char *in,
                          const char *want, const char *what) {
  int score = 0;
  evl_process *p = (evl_process *)sweep_object(loop, fp, what, 0, &score);
  evl_future *fc;
  if (!p)
    return score;
  fc = evl_process_communicate(p, in, in ? strlen(in) : 0);
  if (fc)
    evl_future_ref(fc);
  if (sweep_wait(loop, fc, "communicate", 1)) {
    evl_communicate *r = (evl_communicate *)evl_future_result(fc);
    if (r->returncode != 0 || !r->out || r->out->len != strlen(want) ||
        memcmp(r->out->data, want, r->out->len) != 0) {
      fprintf(stderr, "  %s: returncode %d, %s%.*s\n", what, r->returncode,
              r->out ? "output " : "no output", r->out ? (int)r->out->len : 0,
              r->out ? (const char *)r->out->data : "");
      sweep_fail("communicate", 0, "wrong output");
    }
    score++;
  } else
    (void)evl_process_kill(p); /* it may wait for its input */
  evl_future_release(fc);
  /* Whatever happened, the child is reaped (here or by the loop). */
  (void)sweep_wait(loop, evl_process_wait(p), "process_wait", 1);
  evl_process_free(p);
  return score;
}

typedef struct sc_sub {
  int made, exited, lost;
} sc_sub;
static void sc_sub_made(evl_subprocess *p, void *user) {
  (void)p;
  ((sc_sub *)user)->made++;
}
static void sc_sub_exited(evl_subprocess *p, void *user) {
  (void)p;
  ((sc_sub *)user)->exited++;
}
static void sc_sub_lost(evl_subprocess *p, int err, void *user) {
  (void)p;
  (void)err;
  ((sc_sub *)user)->lost++;
}
static const evl_subprocess_protocol sc_sub_proto = {
    sc_sub_made, NULL, NULL, sc_sub_exited, sc_sub_lost};

#define FULL_SUBPROCESS 6
static int sc_subprocess(evl_loop *loop, void *arg) {
  static const char *const cat[] = {"cat", NULL};
  static const char *const tru[] = {"true", NULL};
  sc_sub sub;
  evl_subprocess_options inherit;
  int score = 0;
  (void)arg;
  /* the low-level one inherits its stdio: its spawn needs no fd, so that
     the exit watch (pidfd, SIGCHLD self-pipe) meets a full fd table */
  memset(&inherit, 0, sizeof inherit);
  inherit.stdin_mode = inherit.stdout_mode = inherit.stderr_mode =
      EVL_STDIO_INHERIT;
  score += sc_communicate(loop, evl_create_subprocess_exec(loop, cat, NULL, 0),
                          "hello", "hello", "create_subprocess_exec");
  score += sc_communicate(loop,
                          evl_create_subprocess_shell(loop, "echo hi", NULL, 0),
                          NULL, "hi\n", "create_subprocess_shell");
  memset(&sub, 0, sizeof sub);
  if (sweep_object(
          loop, evl_subprocess_exec(loop, &sc_sub_proto, &sub, tru, &inherit),
          "subprocess_exec", 0, &score)) {
    sweep_until(loop, &sub.lost, 1, "subprocess connection_lost");
    if (sub.exited == 1 && sub.made == 1)
      score++;
  }
  return score;
}

/* ---- signals ----------------------------------------------------------- */

static void sc_sig(evl_loop *loop, int signum, void *arg) {
  (void)loop;
  (void)signum;
  (*(int *)arg)++;
}
#define FULL_SIGNALS 2
static int sc_signals(evl_loop *loop, void *arg) {
  int hits = 0, score = 0;
  (void)arg;
  if (sweep_rc(evl_add_signal_handler(loop, SIGUSR1, sc_sig, &hits),
               "add_signal_handler")) {
    score++;
    CHECK_EQ(kill(getpid(), SIGUSR1), 0);
    sweep_until(loop, &hits, 1, "signal callback");
    score++;
    CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  }
  return score;
}

#endif /* EVLOOP_NO_PROCESS */

#if !defined(EVLOOP_NO_SYNC) && !defined(EVLOOP_NO_COMPOSE)
/* ---- composition: queues, sync primitives, task groups, wait ---------- */

/* What the scenario's tasks share. Under a fault a task fails (its error
   checked by sweep_wait) and its partner, which may wait for it, is
   cancelled (sc_cmp_tasks); the queue's sides shut the queue down and the
   barrier's parties break it too, as a program would. */
typedef struct sc_cmp {
  evl_queue *q;        /* FIFO, maxsize 1: both sides wait */
  evl_lock *lock;      /* held by one task, waited for by another */
  evl_semaphore *sem;  /* bounded, 1 */
  evl_event *ev;       /* waited for, set by another task */
  evl_condition *cond; /* waited on, notified */
  evl_barrier *bar;    /* two parties */
  int got, put, ready, deferred, kids, after, dropped;
} sc_cmp;
typedef struct sc_cmp_task {
  sc_cmp *c;
  int i;
  evl_task_group *tg;
  evl_timeout *to;
  evl_queue *own;
  evl_lock *lock;
  evl_semaphore *sem;
  evl_future *f;
  int held;
} sc_cmp_task;

/* The queue's two sides, three items through a queue of one: each waits
   for the other. The side that fails shuts the queue down (at once) so
   that the other does not wait forever. */
static void sc_cmp_shutdown_on_error(evl_task *t, sc_cmp *c) {
  if (evl_task_finally_error(t) != 0)
    (void)evl_queue_shutdown(c->q, 1);
}
EVL_TASK(sc_producer, t, sc_cmp_task, s)
  for (s->i = 0; s->i < 3; s->i++)
    EVL_AWAIT(t, evl_queue_put(s->c->q, (void *)(intptr_t)(s->i + 1)));
  s->c->put = 3;
  EVL_FINALLY(t);
  sc_cmp_shutdown_on_error(t, s->c);
EVL_TASK_END(t)
EVL_TASK(sc_consumer, t, sc_cmp_task, s)
  for (s->i = 0; s->i < 3; s->i++) {
    EVL_AWAIT(t, evl_queue_get(s->c->q));
    if ((intptr_t)evl_await_result(t) != s->i + 1)
      sweep_fail("queue get", 0, "wrong item");
    CHECK_EQ(evl_queue_task_done(s->c->q), 0);
    s->c->got++;
  }
  EVL_FINALLY(t);
  sc_cmp_shutdown_on_error(t, s->c);
EVL_TASK_END(t)

/* A queue the task owns, left with an item for its item_free, and a
   priority queue filled by awaited puts. */
static int g_sc_dropped;
static void sc_drop(void *item) {
  (void)item;
  g_sc_dropped++;
}
EVL_TASK(sc_own_queue, t, sc_cmp_task, s)
  s->own = evl_queue_new_in(t, EVL_QUEUE_PRIORITY, 0, sc_drop);
  if (!s->own)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "queue_new_in");
  for (s->i = 0; s->i < 3; s->i++)
    EVL_AWAIT(
        t, evl_queue_put_prio(s->own, (void *)(intptr_t)(s->i + 1), 3 - s->i));
  EVL_AWAIT(t, evl_queue_get(s->own));
  if ((intptr_t)evl_await_result(t) != 3)
    sweep_fail("priority queue", 0, "not the lowest priority first");
EVL_TASK_END(t)

/* Lock and semaphore held to the task's end (evl_*_hold), made in the
   task (evl_*_new_in), or waited for (acquire while another holds it). */
static evl_future *sc_take(evl_future **f) {
  evl_future *r = *f;
  *f = NULL;
  return r;
}
EVL_TASK(sc_holder, t, sc_cmp_task, s)
  EVL_AWAIT(t, evl_lock_hold(s->c->lock, t));
  EVL_AWAIT(t, evl_semaphore_hold(s->c->sem, t));
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.002, NULL));
EVL_TASK_END(t)
/* Waits for both at once while the holder has them; then a lock and a
   bounded semaphore of its own, held to its end. */
EVL_TASK(sc_acquirer, t, sc_cmp_task, s)
  s->f = evl_semaphore_acquire(s->c->sem);
  EVL_AWAIT(t, evl_lock_acquire(s->c->lock));
  s->held = 1;
  EVL_AWAIT(t, sc_take(&s->f));
  s->held |= 2;
  CHECK_EQ(evl_lock_release(s->c->lock), 0);
  CHECK_EQ(evl_semaphore_release(s->c->sem), 0);
  s->held = 0;
  s->lock = evl_lock_new_in(t);
  s->sem = s->lock ? evl_semaphore_new_in(t, 1, 1) : NULL;
  if (!s->sem)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "lock_new_in, semaphore_new_in");
  EVL_AWAIT(t, evl_lock_hold(s->lock, t));
  EVL_AWAIT(t, evl_semaphore_hold(s->sem, t));
  if (evl_semaphore_locked(s->sem) != 1 || evl_lock_locked(s->lock) != 1)
    sweep_fail("hold", 0, "not held");
  EVL_FINALLY(t);
  evl_future_release(s->f); /* unread: its grant passes on */
  if (s->held & 1)
    CHECK_EQ(evl_lock_release(s->c->lock), 0);
  if (s->held & 2)
    CHECK_EQ(evl_semaphore_release(s->c->sem), 0);
EVL_TASK_END(t)

/* Event and condition: a waiter that waits, then the one that wakes it. */
static int sc_ready(void *arg) {
  return ((sc_cmp *)arg)->ready;
}
EVL_TASK(sc_waiter, t, sc_cmp_task, s)
  EVL_AWAIT(t, evl_event_wait(s->c->ev));
  EVL_AWAIT(t, evl_lock_acquire(evl_condition_lock(s->c->cond)));
  EVL_AWAIT_TRY(t, evl_condition_wait_for(s->c->cond, sc_ready, s->c));
  /* The lock is this task's again however the wait ended: done, failed,
     cancelled, or not made at all (NULL: the task's EVL_EINVAL), since
     what retaking it needs is allocated before it is given up. Nobody
     else holds it across an await here. */
  CHECK_EQ(evl_lock_locked(evl_condition_lock(s->c->cond)), 1);
  CHECK_EQ(evl_lock_release(evl_condition_lock(s->c->cond)), 0);
  if (evl_await_error(t))
    EVL_ASYNC_FAIL(t, evl_await_error(t), "condition wait");
EVL_TASK_END(t)
EVL_TASK(sc_waker, t, sc_cmp_task, s)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
  evl_event_set(s->c->ev);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
  EVL_AWAIT(t, evl_lock_acquire(evl_condition_lock(s->c->cond)));
  s->c->ready = 1;
  (void)evl_condition_notify_all(s->c->cond);
  CHECK_EQ(evl_lock_release(evl_condition_lock(s->c->cond)), 0);
EVL_TASK_END(t)

/* A barrier's party; one that fails breaks the barrier for the other. */
EVL_TASK(sc_party, t, sc_cmp_task, s)
  EVL_AWAIT_TRY(t, evl_barrier_wait(s->c->bar));
  if (evl_await_error(t)) {
    (void)evl_barrier_abort(s->c->bar);
    EVL_ASYNC_FAIL(t, evl_await_error(t), "barrier wait");
  }
EVL_TASK_END(t)

/* A task group: one child made, one spawned, a deferred call, a deadline
   that holds and one that passes, the group's end closing the body. */
static void sc_deferred(void *arg) {
  ((sc_cmp *)arg)->deferred++;
}
EVL_TASK(sc_kid, t, sc_cmp_task, s)
  EVL_AWAIT(t, evl_wait_for(evl_sleep(evl_task_loop(t), 0.001, NULL), 10.0));
  s->c->kids++;
EVL_TASK_END(t)
EVL_TASK(sc_group, t, sc_cmp_task, s)
  {
    sc_cmp_task kid;
    memset(&kid, 0, sizeof kid);
    kid.c = s->c;
    s->tg = evl_task_group_new(evl_task_loop(t), t);
    evl_future_release(evl_task_group_create(s->tg, sc_kid, &kid, sizeof kid));
    (void)evl_task_group_spawn(s->tg, sc_kid, &kid, sizeof kid);
    if (evl_task_defer(t, sc_deferred, s->c) != 0)
      EVL_ASYNC_FAIL(t, EVL_ENOMEM, "task_defer");
  }
  s->to = evl_timeout_new(t, 10.0);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
  if (!s->to || evl_timeout_end(s->to) != 0)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "timeout_new");
  s->to = evl_timeout_new(t, 0.002);
  if (!s->to)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "timeout_new");
  EVL_AWAIT_TRY(t, evl_sleep(evl_task_loop(t), 30.0, NULL));
  if (evl_timeout_end(s->to) != EVL_ETIMEDOUT)
    EVL_ASYNC_FAIL(t, evl_await_error(t) ? evl_await_error(t) : EVL_EINVAL,
                   "the deadline did not pass");
  EVL_TASK_GROUP_END(t, s->tg);
  s->c->after++;
EVL_TASK_END(t)

/* Runs the loop until f (if any) is done. */
static void sweep_until_done(evl_loop *loop, evl_future *f, const char *what) {
  double end = test_now() + SWEEP_PATIENCE;
  while (f && !evl_future_done(f) && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  if (f && !evl_future_done(f))
    sweep_fail(what, 0, "pending forever");
}
/* What a task fails with when its partner failed first (the queue shut
   down, the barrier broken, itself cancelled): clean under a fault. */
static int sc_cmp_partner_err(int err) {
  return err == EVL_ESHUTDOWN || err == EVL_EBROKEN || err == EVL_ECANCELED;
}
/* Starts the tasks fn0 (i = 0) and fn1 (i = 1; none if NULL), state c,
   and waits for them: a point for each that succeeds. If one could not be
   made or failed, the other is cancelled: it may wait for its partner. */
static int sc_cmp_tasks(evl_loop *loop, sc_cmp *c, evl_task_fn fn0,
                        evl_task_fn fn1, const char *what) {
  evl_task *t[2] = {NULL, NULL};
  sc_cmp_task s;
  int i, n = fn1 ? 2 : 1, score = 0, cancelled = 0;
  double end = test_now() + SWEEP_PATIENCE;
  for (i = 0; i < n; i++) {
    memset(&s, 0, sizeof s);
    s.c = c;
    s.i = i;
    t[i] = evl_task_create(loop, i ? fn1 : fn0, &s, sizeof s);
  }
  while (n == 2 && !cancelled && test_now() < end) {
    for (i = 0; i < 2; i++)
      if (t[i] && !evl_future_done(t[i]) &&
          (!t[1 - i] ||
           (evl_future_done(t[1 - i]) && evl_future_error(t[1 - i]) != 0)))
        cancelled = evl_task_cancel(t[i]);
    if ((!t[0] || evl_future_done(t[0])) && (!t[1] || evl_future_done(t[1])))
      break;
    (void)evl_run_once(loop, 0.01);
  }
  for (i = 0; i < n; i++) {
    sweep_until_done(loop, t[i], what);
    if (t[i] && g_sweep_failing && sc_cmp_partner_err(evl_future_error(t[i])))
      evl_future_release(t[i]);
    else
      score += sweep_wait(loop, t[i], what, SWEEP_TASK);
  }
  return score;
}

/* The waiting primitives on two sleeps: as_completed, wait, gather,
   shield. */
static int sc_cmp_waits(evl_loop *loop) {
  evl_future *f[2], *w;
  evl_as_completed *ac;
  int score = 0, i, got;
  f[0] = evl_sleep(loop, 0.002, NULL);
  f[1] = evl_sleep(loop, 0.001, NULL);
  ac = f[0] && f[1] ? evl_as_completed_new(loop, f, 2, 10.0) : NULL;
  if (!ac && !g_sweep_failing)
    sweep_fail("as_completed_new", 0, "no iterator with no fault");
  w = f[0] && f[1] ? evl_wait(loop, f, 2, EVL_ALL_COMPLETED, 10.0) : NULL;
  score += sweep_value(loop, w, 2, "wait");
  w = f[0] && f[1] ? evl_gather(loop, f, 2, EVL_GATHER_RETURN_ERRORS) : NULL;
  score += sweep_wait(loop, w, "gather", 0);
  for (i = 0, got = 0; ac && i < 2; i++) /* a failed call delivers none */
    got += sweep_value(loop, evl_as_completed_next(ac), (intptr_t)f[1 - got],
                       "as_completed_next");
  score += got;
  evl_as_completed_free(ac);
  score += sweep_value(loop, f[0] ? evl_shield(f[0]) : NULL, 0, "shield");
  evl_future_release(f[0]);
  evl_future_release(f[1]);
  return score;
}

/* The queue part: both sides waiting, join, nowait on a LIFO queue, a
   getter waiting when the queue shuts down, a queue a task owns. */
static int sc_cmp_queues(evl_loop *loop, sc_cmp *c) {
  int score = 0, r;
  void *item;
  c->q = evl_queue_new(loop, EVL_QUEUE_FIFO, 1, NULL);
  if (c->q) {
    evl_queue *lifo = evl_queue_new(loop, EVL_QUEUE_LIFO, 2, NULL);
    evl_future *g;
    score += sc_cmp_tasks(loop, c, sc_consumer, sc_producer, "queue side");
    score += sweep_wait(loop, evl_queue_join(c->q), "queue join", 0);
    if (lifo) {
      if (sweep_rc(evl_queue_put_nowait(lifo, (void *)1), "put_nowait") &&
          sweep_rc(evl_queue_put_nowait(lifo, (void *)2), "put_nowait")) {
        CHECK_EQ(evl_queue_put_nowait(lifo, (void *)3), EVL_EQUEUEFULL);
        CHECK(evl_queue_get_nowait(lifo, &item) == 0 && item == (void *)2);
        CHECK(evl_queue_get_nowait(lifo, &item) == 0 && item == (void *)1);
        score++;
      }
      evl_queue_free(lifo);
    } else if (!g_sweep_failing)
      sweep_fail("queue_new", 0, "no queue with no fault");
    g = evl_queue_get(c->q); /* the queue is empty: it waits */
    (void)evl_run_once(loop, 0);
    (void)evl_queue_shutdown(c->q, 0); /* (perhaps done by a failed side) */
    sweep_until_done(loop, g, "get at shutdown");
    if (g && evl_future_error(g) == EVL_ESHUTDOWN)
      score++;
    else if (g || !g_sweep_failing)
      if (!g_sweep_failing || !sweep_fault_err(evl_future_error(g)))
        sweep_fail("get at shutdown", g ? evl_future_error(g) : 0,
                   "not failed with EVL_ESHUTDOWN");
    evl_future_release(g);
    evl_queue_free(c->q);
  } else if (!g_sweep_failing)
    sweep_fail("queue_new", 0, "no queue with no fault");
  g_sc_dropped = 0;
  r = sc_cmp_tasks(loop, c, sc_own_queue, NULL, "queue_new_in");
  if (r && g_sc_dropped != 2)
    sweep_fail("queue_new_in", 0, "the items left were not dropped");
  return score + r;
}

#define FULL_COMPOSE 19
static sc_cmp g_sc_cmp;
static int sc_compose(evl_loop *loop, void *arg) {
  sc_cmp *c = (sc_cmp *)arg;
  int score;
  memset(c, 0, sizeof *c);
  score = sc_cmp_queues(loop, c);
  /* sync primitives, each with a waiter that waits */
  c->lock = evl_lock_new(loop);
  c->sem = evl_semaphore_new(loop, 1, 1);
  c->ev = evl_event_new(loop);
  c->cond = evl_condition_new(loop, NULL);
  c->bar = evl_barrier_new(loop, 2);
  if (!(c->lock && c->sem && c->ev && c->cond && c->bar) && !g_sweep_failing)
    sweep_fail("sync primitives", 0, "not made with no fault");
  if (c->lock && c->sem)
    score += sc_cmp_tasks(loop, c, sc_holder, sc_acquirer, "lock, semaphore");
  if (c->ev && c->cond)
    score += sc_cmp_tasks(loop, c, sc_waiter, sc_waker, "event, condition");
  if (c->bar)
    score += sc_cmp_tasks(loop, c, sc_party, sc_party, "barrier");
  evl_lock_free(c->lock);
  evl_semaphore_free(c->sem);
  evl_event_free(c->ev);
  evl_condition_free(c->cond);
  evl_barrier_free(c->bar);
  /* a task group closing a task's body, and the waiting primitives */
  score += sc_cmp_tasks(loop, c, sc_group, NULL, "task group");
  if (c->kids == 2 && c->deferred == 1 && c->after == 1)
    score++;
  else if (!g_sweep_failing)
    sweep_fail("task group", 0, "children, deferred call or end missing");
  return score + sc_cmp_waits(loop);
}
#endif

/* The sweep tests, one per scenario, for both sweeps: SWEEP_TESTS(P, run)
   defines P_core, P_streams, P_protocols_sendfile, P_udp, P_local,
   P_subprocess, P_signals and P_compose, each calling run(name, scenario,
   arg, full). */
#ifndef EVLOOP_NO_PROCESS
#define SWEEP_PROCESS_TESTS(P, run)                                            \
  TEST(P##_subprocess) {                                                       \
    run("subprocess", sc_subprocess, NULL, FULL_SUBPROCESS);                   \
  }                                                                            \
  TEST(P##_signals) {                                                          \
    run("signals", sc_signals, NULL, FULL_SIGNALS);                            \
  }
#else
#define SWEEP_PROCESS_TESTS(P, run)                                            \
  TEST(P##_subprocess) {                                                       \
    SKIP("built with EVLOOP_NO_PROCESS: no subprocesses");                     \
  }                                                                            \
  TEST(P##_signals) {                                                          \
    SKIP("built with EVLOOP_NO_PROCESS: no signal handlers");                  \
  }
#endif
#if !defined(EVLOOP_NO_SYNC) && !defined(EVLOOP_NO_COMPOSE)
#define SWEEP_COMPOSE_TESTS(P, run)                                            \
  TEST(P##_compose) {                                                          \
    run("compose", sc_compose, &g_sc_cmp, FULL_COMPOSE);                       \
  }
#else
#define SWEEP_COMPOSE_TESTS(P, run)                                            \
  TEST(P##_compose) {                                                          \
    SKIP("built with EVLOOP_NO_SYNC or EVLOOP_NO_COMPOSE");                    \
  }
#endif
#define SWEEP_TESTS(P, run)                                                    \
  TEST(P##_core) {                                                             \
    run("core", sc_core, NULL, FULL_CORE);                                     \
  }                                                                            \
  TEST(P##_streams) {                                                          \
    run("streams", sc_streams, &g_net, FULL_STREAMS);                          \
  }                                                                            \
  TEST(P##_protocols_sendfile) {                                               \
    run("protocols+sendfile", sc_proto, &g_net, FULL_PROTO);                   \
  }                                                                            \
  TEST(P##_udp) {                                                              \
    run("udp", sc_udp, &g_net, FULL_UDP);                                      \
  }                                                                            \
  TEST(P##_local) {                                                            \
    run("unix+sock+pipes", sc_local, &g_net, FULL_LOCAL);                      \
  }                                                                            \
  SWEEP_PROCESS_TESTS(P, run)                                                  \
  SWEEP_COMPOSE_TESTS(P, run)

#endif /* _WIN32 */
#endif
