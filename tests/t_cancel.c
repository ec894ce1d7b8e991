/* Cancellation (issue 11): every future the API returns, cancelled at
   every stage of its life, and raced by an evl_wait_for timeout.

   The matrix: each operation below is started on a fresh loop, then
   cancelled after k = 0, 1, 2, ... loop iterations (k = 0: before the loop
   ever ran; the iterations walk it through resolving, connecting or
   spawning, the transfer and completion), and once more after it
   completed; a second pass wraps it in evl_wait_for with a timeout that
   fires at each of those points instead. Every run then lets the loop go
   on a little, frees whatever the future delivered, frees the loop, and
   checks: no crash and no leak (ASan/LSan builds), no fd left open, no
   child left running or unreaped.

   What a cancelled operation leaves behind (the header says the same):
   - create_connection / open_connection / create_unix_connection: the
     socket is closed; a transport whose connection_made has not run yet
     never gets it (nor connection_lost). Once the future completed, the
     transport (stream) is the caller's, cancel or not.
   - create_server / start_server / datagram endpoints: complete at once
     or after resolving; a cancel before that closes the sockets.
   - subprocess_exec/_shell and create_subprocess_exec/_shell: the child
     is killed and reaped, nothing of it stays, no callback runs.
   - sock_sendall, evl_sendfile, sock_sendfile: bytes already handed to
     the kernel stay sent; the rest is not sent; the count is lost with
     the future.
   - stream reads: the data stays buffered for the next read.
   - process wait/communicate, server wait_closed, drain: only the waiter
     goes; the process, server, stream go on.
   POSIX only (socketpair, fork). */
#define _GNU_SOURCE 1
#include "test.h"

#ifndef EVLOOP_NO_PROCESS /* (else: see the end) */
#include "net_test.h"
#include "proc_test.h"

#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* A listening TCP socket that nobody accepts on. */
static int listener(int *port) {
  return raw_tcp_listener(port, 64);
}

static int unix_listener(char *path, size_t n) {
  struct sockaddr_un su;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  snprintf(path, n, "/tmp/evl_cancel_%d.sock", (int)getpid());
  unlink(path);
  memset(&su, 0, sizeof su);
  su.sun_family = AF_UNIX;
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  CHECK(bind(fd, (struct sockaddr *)&su, sizeof su) == 0);
  CHECK(listen(fd, 64) == 0);
  return fd;
}

/* No child of this process is left, running or unreaped. */
static void check_no_children(void) {
  int st;
  pid_t r = waitpid(-1, &st, WNOHANG);
  if (r > 0)
    printf("  a child was left unreaped (pid %d)\n", (int)r);
  if (r == 0)
    printf("  a child is still running\n");
  CHECK(r < 0 && errno == ECHILD);
}

/* ---- issue 11, bug 1: open_connection cancelled before it connected ---- */

static void open_cancel_at(int unix_path, int iterations, int wait_for) {
  evl_loop *loop;
  char path[108];
  int port = 0, lfd, fds;
  evl_future *f;
  int i;
  test_settle_fds();
  fds = test_count_fds();
  loop = test_open();
  lfd = unix_path ? unix_listener(path, sizeof path) : listener(&port);
  f = unix_path ? evl_open_unix_connection(loop, path, 0)
                : evl_open_connection(loop, "127.0.0.1", port, 0, NULL);
  CHECK(f != NULL);
  if (wait_for)
    f = evl_wait_for(f, 0.0); /* the timeout cancels it */
  for (i = 0; i < iterations; i++)
    evl_run_once(loop, 0);
  if (!wait_for)
    (void)evl_future_cancel(f);
  run_for(loop, 0.05);
  CHECK(evl_future_done(f));
  if (evl_future_error(f) == 0) /* it won the race: ours to free */
    evl_stream_free((evl_stream *)evl_future_result(f));
  evl_future_release(f);
  run_for(loop, 0.02);
  test_close(loop);
  close(lfd);
  if (unix_path)
    unlink(path);
  CHECK_EQ(test_count_fds(), fds);
}

TEST(open_connection_cancel_before_connect) {
  int k;
  for (k = 0; k < 4; k++) {
    open_cancel_at(0, k, 0);
    open_cancel_at(0, k, 1);
  }
}
TEST(open_unix_connection_cancel_before_connect) {
  int k;
  for (k = 0; k < 4; k++) {
    open_cancel_at(1, k, 0);
    open_cancel_at(1, k, 1);
  }
}

/* ---- issue 11, bug 6: a cancelled spawn leaves nothing behind ---- */

static int g_made, g_lost;
static void sub_made(evl_subprocess *p, void *user) {
  (void)p;
  (void)user;
  g_made++;
}
static void sub_lost(evl_subprocess *p, int err, void *user) {
  (void)p;
  (void)err;
  (void)user;
  g_lost++;
}
static const evl_subprocess_protocol sub_proto = {sub_made, NULL, NULL, NULL,
                                                  sub_lost};

static const char *const sleep_argv[] = {"sleep", "30", NULL};

/* Where exits come through SIGCHLD (no pidfd), the signal slot's
   self-pipe stays open once made: make it before counting fds. */
static void warm_sigchld(void) {
  evl_loop *loop = test_open();
  static const char *const argv[] = {"true", NULL};
  evl_future *f = evl_subprocess_exec(loop, &sub_proto, NULL, argv, NULL);
  (void)wait_fut(loop, f);
  evl_future_release(f);
  test_close(loop);
  test_settle_fds();
}

static evl_future *spawn_kind(evl_loop *loop, int kind) {
  switch (kind) {
  case 0:
    return evl_subprocess_exec(loop, &sub_proto, NULL, sleep_argv, NULL);
  case 1:
    return evl_subprocess_shell(loop, &sub_proto, NULL, "sleep 30", NULL);
  case 2:
    return evl_create_subprocess_exec(loop, sleep_argv, NULL, 0);
  default:
    return evl_create_subprocess_shell(loop, "sleep 30", NULL, 0);
  }
}

static void spawn_cancel(int kind, int wait_for, int free_loop_at_once) {
  evl_loop *loop;
  evl_future *f;
  int fds;
  test_settle_fds();
  fds = test_count_fds();
  loop = test_open();
  g_made = g_lost = 0;
  f = spawn_kind(loop, kind);
  CHECK(f != NULL);
  if (wait_for)
    f = evl_wait_for(f, 0.0);
  else
    CHECK_EQ(evl_future_cancel(f), 1);
  if (!free_loop_at_once)
    run_for(loop, 0.05);
  if (!free_loop_at_once || wait_for) {
    CHECK(evl_future_done(f));
    CHECK_EQ(evl_future_error(f), wait_for ? EVL_ETIMEDOUT : EVL_ECANCELED);
  }
  evl_future_release(f);
  CHECK_EQ(g_made, 0); /* no callback after the cancel */
  CHECK_EQ(g_lost, 0);
  if (!free_loop_at_once)
    check_no_children(); /* killed and reaped before the loop goes */
  test_close(loop);
  check_no_children();
  CHECK_EQ(test_count_fds(), fds);
}

TEST(spawn_cancel_kills_and_reaps) {
  int kind;
  warm_sigchld();
  for (kind = 0; kind < 4; kind++) {
    spawn_cancel(kind, 0, 0);
    spawn_cancel(kind, 1, 0);
    spawn_cancel(kind, 0, 1);
  }
}

/* ---- the matrix ---- */

/* Transports made and lost: every connection_made gets its
   connection_lost, and a future that failed (cancelled, timed out) made
   none. */
static int g_tmade, g_tlost;
static void t_made(evl_transport *t, void *user) {
  (void)t;
  (void)user;
  g_tmade++;
}
static void t_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  (void)user;
  g_tlost++;
}
static const evl_protocol null_proto = {t_made, NULL, NULL, t_lost, NULL,
                                        NULL,   NULL, NULL, NULL,   NULL};

/* What one operation needs around it: peers, a server, a stream... */
typedef struct env {
  evl_loop *loop;
  int lfd, port, ulfd;
  char upath[108];
  int sv[2], pp[2], file_fd;
  evl_server *server;
  evl_stream *client, *peer; /* a connected stream pair */
  evl_process *proc;
  unsigned char *buf;
  size_t buflen;
  int mode; /* of the run (see run_one) */
} env;

enum { R_NONE, R_TRANSPORT, R_SERVER, R_STREAM, R_FD, R_SUB, R_PROC };

typedef struct op {
  const char *name;
  int result;     /* what a completed future delivers: R_* */
  unsigned needs; /* N_* below */
  evl_future *(*start)(env *e);
} op;

enum {
  N_LISTEN = 1,    /* a TCP listener nobody accepts on: lfd, port */
  N_UNIX = 2,      /* a Unix listener: ulfd, upath */
  N_PAIR = 4,      /* a socketpair sv (sv[0] non-blocking) */
  N_STREAMS = 8,   /* client/peer streams over TCP */
  N_SERVER = 16,   /* an evl_server on 127.0.0.1 */
  N_FILE = 32,     /* a 4 MiB temporary file */
  N_PIPE = 64,     /* a pipe pp */
  N_PROC = 128,    /* a running `cat` process */
  N_EXECUTOR = 256 /* the default executor is in use */
};

static int quick_job(void *arg, void **result) {
  (void)arg;
  test_sleep_ms(5);
  *result = NULL;
  return 0;
}
static void g_peer_write(evl_loop *loop, void *arg) {
  env *e = (env *)arg;
  (void)loop;
  if (e->peer)
    (void)evl_stream_write(e->peer, "line one\nline two\n", 18);
  if (e->sv[1] >= 0)
    (void)write(e->sv[1], "data", 4);
}
static void g_peer_close(evl_loop *loop, void *arg) {
  env *e = (env *)arg;
  (void)loop;
  if (e->peer)
    evl_stream_close(e->peer);
}

static evl_future *op_sleep(env *e) {
  return evl_sleep(e->loop, 0.01, NULL);
}
static evl_future *op_wait_for(env *e) {
  return evl_wait_for(evl_sleep(e->loop, 0.01, NULL), 5.0);
}
static evl_future *op_gather(env *e) {
  evl_future *f[2], *g;
  f[0] = evl_sleep(e->loop, 0.005, NULL);
  f[1] = evl_sleep(e->loop, 0.01, NULL);
  g = evl_gather(e->loop, f, 2, 0);
  evl_future_release(f[0]);
  evl_future_release(f[1]);
  return g;
}
static evl_future *op_executor(env *e) {
  return evl_run_in_executor(e->loop, NULL, quick_job, NULL, NULL);
}
static evl_future *op_shutdown_executor(env *e) {
  return evl_shutdown_default_executor(e->loop);
}
static evl_future *op_getaddrinfo(env *e) {
  return evl_getaddrinfo(e->loop, "localhost", "80", AF_INET, SOCK_STREAM, 0,
                         0);
}
static evl_future *op_getnameinfo(env *e) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(80);
  sa.sin_addr.s_addr = htonl(0x7f000001);
  return evl_getnameinfo(e->loop, &sa, sizeof sa, 0);
}
static evl_future *op_connect(env *e) {
  return evl_create_connection(e->loop, &null_proto, NULL, "127.0.0.1", e->port,
                               NULL);
}
static evl_future *op_connect_resolve(env *e) {
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.family = AF_INET;
  return evl_create_connection(e->loop, &null_proto, NULL, "localhost", e->port,
                               &o);
}
static evl_future *op_connect_unix(env *e) {
  return evl_create_unix_connection(e->loop, &null_proto, NULL, e->upath);
}
static evl_future *op_server(env *e) {
  return evl_create_server(e->loop, &null_proto, NULL, "127.0.0.1", 0, NULL);
}
static evl_future *op_server_resolve(env *e) {
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.family = AF_INET;
  return evl_create_server(e->loop, &null_proto, NULL, "localhost", 0, &o);
}
static evl_future *op_server_unix(env *e) {
  char path[108];
  snprintf(path, sizeof path, "/tmp/evl_cancel_srv_%d.sock", (int)getpid());
  return evl_create_unix_server(e->loop, &null_proto, NULL, path, NULL);
}
static evl_future *op_datagram(env *e) {
  return evl_create_datagram_endpoint(e->loop, &null_proto, NULL, "127.0.0.1",
                                      0, NULL, 0, NULL);
}
static evl_future *op_datagram_resolve(env *e) {
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.family = AF_INET;
  return evl_create_datagram_endpoint(e->loop, &null_proto, NULL, NULL, 0,
                                      "localhost", 9, &o);
}
static evl_future *op_open(env *e) {
  return evl_open_connection(e->loop, "127.0.0.1", e->port, 0, NULL);
}
static evl_future *op_open_resolve(env *e) {
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.family = AF_INET;
  return evl_open_connection(e->loop, "localhost", e->port, 0, &o);
}
static evl_future *op_open_unix(env *e) {
  return evl_open_unix_connection(e->loop, e->upath, 0);
}
static void srv_cb(evl_stream *s, void *arg) {
  (void)arg;
  evl_stream_free(s);
}
static evl_future *op_start_server(env *e) {
  return evl_start_server(e->loop, srv_cb, NULL, "127.0.0.1", 0, 0, NULL);
}
static evl_future *op_start_unix_server(env *e) {
  char path[108];
  snprintf(path, sizeof path, "/tmp/evl_cancel_ss_%d.sock", (int)getpid());
  return evl_start_unix_server(e->loop, srv_cb, NULL, path, 0);
}
static evl_future *op_read_pipe(env *e) {
  evl_future *f = evl_connect_read_pipe(e->loop, &null_proto, NULL, e->pp[0]);
  e->pp[0] = -1; /* the loop's now */
  return f;
}
static evl_future *op_write_pipe(env *e) {
  evl_future *f = evl_connect_write_pipe(e->loop, &null_proto, NULL, e->pp[1]);
  e->pp[1] = -1;
  return f;
}
static evl_future *op_wait_closed(env *e) {
  if (e->mode == 2) /* to see it complete */
    evl_server_close(e->server);
  return evl_server_wait_closed(e->server);
}
static evl_future *op_serve_forever(env *e) {
  return evl_server_serve_forever(e->server);
}
static evl_future *op_sock_recv(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_sock_recv(e->loop, e->sv[0], e->buf, 64);
}
static evl_future *op_sock_recv_into(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_sock_recv_into(e->loop, e->sv[0], e->buf, 64);
}
static evl_future *op_sock_sendall(env *e) {
  /* 4 MiB: more than the socket takes, so a cancel comes mid-transfer;
     1000 bytes when the run wants to see it complete. */
  return evl_sock_sendall(e->loop, e->sv[0], e->buf,
                          e->mode == 2 ? 1000 : e->buflen);
}
static evl_future *op_sock_connect(env *e) {
  struct sockaddr_in sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  CHECK(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)e->port);
  sa.sin_addr.s_addr = htonl(0x7f000001);
  close(e->sv[1]); /* this op's socket takes sv[1]'s place */
  e->sv[1] = fd;
  return evl_sock_connect(e->loop, fd, &sa, sizeof sa);
}
static void connect_later(evl_loop *loop, void *arg) {
  env *e = (env *)arg;
  struct sockaddr_in sa;
  (void)loop;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)e->port);
  sa.sin_addr.s_addr = htonl(0x7f000001);
  (void)connect(e->sv[1], (struct sockaddr *)&sa, sizeof sa);
}
static evl_future *op_sock_accept(env *e) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  CHECK(fd >= 0);
  CHECK(test_set_nonblocking(e->lfd) == 0);
  close(e->sv[1]);
  e->sv[1] = fd;
  CHECK(evl_call_later(e->loop, 0.004, connect_later, e) > 0);
  return evl_sock_accept(e->loop, e->lfd);
}
static evl_future *op_sock_sendfile(env *e) {
  return evl_sock_sendfile(e->loop, e->sv[0], e->file_fd, 0,
                           e->mode == 2 ? 1000 : e->buflen);
}
static evl_future *op_sendfile(env *e) {
  evl_transport *t =
      evl_connect_accepted_socket(e->loop, &null_proto, NULL, e->sv[0]);
  CHECK(t != NULL);
  e->sv[0] = -1;
  return evl_sendfile(t, e->file_fd, 0, e->mode == 2 ? 1000 : e->buflen);
}
static evl_future *op_read(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_stream_read(e->client, 4);
}
static evl_future *op_read_eof(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  CHECK(evl_call_later(e->loop, 0.008, g_peer_close, e) > 0);
  return evl_stream_read(e->client, -1);
}
static evl_future *op_readline(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_stream_readline(e->client);
}
static evl_future *op_readexactly(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_stream_readexactly(e->client, 12);
}
static evl_future *op_readuntil(env *e) {
  CHECK(evl_call_later(e->loop, 0.004, g_peer_write, e) > 0);
  return evl_stream_readuntil(e->client, "two", 3);
}
static evl_future *op_drain(env *e) {
  if (e->mode != 2) /* else nothing to wait for: done at once */
    (void)evl_stream_write(e->client, e->buf, e->buflen);
  return evl_stream_drain(e->client);
}
static void g_client_close(evl_loop *loop, void *arg) {
  env *e = (env *)arg;
  (void)loop;
  evl_stream_close(e->client);
}
static evl_future *op_stream_wait_closed(env *e) {
  CHECK(evl_call_later(e->loop, 0.006, g_client_close, e) > 0);
  return evl_stream_wait_closed(e->client);
}
static const char *const sleep_short[] = {"sleep", "0.01", NULL};
static evl_future *op_subprocess_exec(env *e) {
  return evl_subprocess_exec(e->loop, &sub_proto, NULL, sleep_short, NULL);
}
static evl_future *op_subprocess_shell(env *e) {
  return evl_subprocess_shell(e->loop, &sub_proto, NULL, "sleep 0.01", NULL);
}
static evl_future *op_create_exec(env *e) {
  return evl_create_subprocess_exec(e->loop, sleep_short, NULL, 0);
}
static evl_future *op_create_shell(env *e) {
  return evl_create_subprocess_shell(e->loop, "echo hi; sleep 0.01", NULL, 0);
}
static evl_future *op_process_wait(env *e) {
  evl_stream_close(evl_process_stdin(e->proc)); /* cat ends */
  return evl_process_wait(e->proc);
}
static evl_future *op_communicate(env *e) {
  return evl_process_communicate(e->proc, e->buf, e->buflen);
}

static const op ops[] = {
    {"sleep", R_NONE, 0, op_sleep},
    {"wait_for", R_NONE, 0, op_wait_for},
    {"gather", R_NONE, 0, op_gather},
    {"run_in_executor", R_NONE, 0, op_executor},
    {"shutdown_default_executor", R_NONE, N_EXECUTOR, op_shutdown_executor},
    {"getaddrinfo", R_NONE, 0, op_getaddrinfo},
    {"getnameinfo", R_NONE, 0, op_getnameinfo},
    {"create_connection", R_TRANSPORT, N_LISTEN, op_connect},
    {"create_connection(resolve)", R_TRANSPORT, N_LISTEN, op_connect_resolve},
    {"create_unix_connection", R_TRANSPORT, N_UNIX, op_connect_unix},
    {"create_server", R_SERVER, 0, op_server},
    {"create_server(resolve)", R_SERVER, 0, op_server_resolve},
    {"create_unix_server", R_SERVER, 0, op_server_unix},
    {"create_datagram_endpoint", R_TRANSPORT, 0, op_datagram},
    {"create_datagram_endpoint(resolve)", R_TRANSPORT, 0, op_datagram_resolve},
    {"open_connection", R_STREAM, N_LISTEN, op_open},
    {"open_connection(resolve)", R_STREAM, N_LISTEN, op_open_resolve},
    {"open_unix_connection", R_STREAM, N_UNIX, op_open_unix},
    {"start_server", R_SERVER, 0, op_start_server},
    {"start_unix_server", R_SERVER, 0, op_start_unix_server},
    {"connect_read_pipe", R_TRANSPORT, N_PIPE, op_read_pipe},
    {"connect_write_pipe", R_TRANSPORT, N_PIPE, op_write_pipe},
    {"server_wait_closed", R_NONE, N_SERVER, op_wait_closed},
    {"server_serve_forever", R_NONE, N_SERVER, op_serve_forever},
    {"sock_recv", R_NONE, N_PAIR, op_sock_recv},
    {"sock_recv_into", R_NONE, N_PAIR, op_sock_recv_into},
    {"sock_sendall", R_NONE, N_PAIR, op_sock_sendall},
    {"sock_connect", R_NONE, N_PAIR | N_LISTEN, op_sock_connect},
    {"sock_accept", R_FD, N_PAIR | N_LISTEN, op_sock_accept},
    {"sock_sendfile", R_NONE, N_PAIR | N_FILE, op_sock_sendfile},
    {"sendfile", R_NONE, N_PAIR | N_FILE, op_sendfile},
    {"stream_read", R_NONE, N_STREAMS, op_read},
    {"stream_read(eof)", R_NONE, N_STREAMS, op_read_eof},
    {"stream_readline", R_NONE, N_STREAMS, op_readline},
    {"stream_readexactly", R_NONE, N_STREAMS, op_readexactly},
    {"stream_readuntil", R_NONE, N_STREAMS, op_readuntil},
    {"stream_drain", R_NONE, N_STREAMS, op_drain},
    {"stream_wait_closed", R_NONE, N_STREAMS, op_stream_wait_closed},
    {"subprocess_exec", R_SUB, 0, op_subprocess_exec},
    {"subprocess_shell", R_SUB, 0, op_subprocess_shell},
    {"create_subprocess_exec", R_PROC, 0, op_create_exec},
    {"create_subprocess_shell", R_PROC, 0, op_create_shell},
    {"process_wait", R_NONE, N_PROC, op_process_wait},
    {"process_communicate", R_NONE, N_PROC, op_communicate},
};
#define NOPS (sizeof ops / sizeof ops[0])

static evl_stream *g_accepted;
static void accept_cb(evl_stream *s, void *arg) {
  (void)arg;
  g_accepted = s;
}

static void env_setup(env *e, evl_loop *loop, unsigned needs) {
  static const char *const cat_argv[] = {"cat", NULL};
  memset(e, 0, sizeof *e);
  e->loop = loop;
  e->lfd = e->ulfd = e->file_fd = -1;
  e->sv[0] = e->sv[1] = e->pp[0] = e->pp[1] = -1;
  e->buflen = 4u << 20;
  e->buf = (unsigned char *)calloc(1, e->buflen);
  CHECK(e->buf != NULL);
  if (needs & (N_LISTEN | N_STREAMS))
    e->lfd = listener(&e->port);
  if (needs & N_UNIX)
    e->ulfd = unix_listener(e->upath, sizeof e->upath);
  if (needs & N_PAIR) {
    CHECK(test_socketpair(e->sv) == 0);
    CHECK(test_set_nonblocking(e->sv[0]) == 0);
  }
  if (needs & N_PIPE)
    CHECK(pipe(e->pp) == 0);
  if (needs & N_FILE) {
    e->file_fd = test_tmpfile_fd();
    CHECK(e->file_fd >= 0);
    CHECK(write(e->file_fd, e->buf, e->buflen) == (ssize_t)e->buflen);
  }
  if (needs & (N_SERVER | N_STREAMS)) {
    evl_future *f =
        evl_start_server(loop, accept_cb, NULL, "127.0.0.1", 0, 0, NULL);
    CHECK_EQ(evl_run_until_complete(loop, f), 0);
    e->server = (evl_server *)evl_future_result(f);
    evl_future_release(f);
  }
  if (needs & N_STREAMS) {
    evl_future *f = evl_open_connection(loop, "127.0.0.1",
                                        evl_server_port(e->server), 0, NULL);
    g_accepted = NULL;
    CHECK_EQ(evl_run_until_complete(loop, f), 0);
    e->client = (evl_stream *)evl_future_result(f);
    evl_future_release(f);
    RUN_UNTIL(loop, g_accepted != NULL);
    e->peer = g_accepted;
  }
  if (needs & N_PROC) {
    evl_future *f = evl_create_subprocess_exec(loop, cat_argv, NULL, 0);
    CHECK_EQ(evl_run_until_complete(loop, f), 0);
    e->proc = (evl_process *)evl_future_result(f);
    evl_future_release(f);
  }
  if (needs & N_EXECUTOR) {
    evl_future *f = evl_run_in_executor(loop, NULL, quick_job, NULL, NULL);
    CHECK_EQ(wait_fut(loop, f), 0);
    evl_future_release(f);
  }
}

/* What a completed future delivered: the caller frees it (as a user
   would) while the loop still runs. */
static void take_result(const op *o, evl_future *f) {
  void *r = evl_future_result(f);
  if (!r)
    return;
  switch (o->result) {
  case R_TRANSPORT:
    evl_transport_close((evl_transport *)r);
    break;
  case R_SERVER:
    evl_server_free((evl_server *)r);
    break;
  case R_STREAM:
    evl_stream_free((evl_stream *)r);
    break;
  case R_SUB: /* (invalid once its connection_lost ran) */
    if (!g_lost)
      evl_subprocess_close((evl_subprocess *)r);
    break;
  case R_PROC:
    evl_process_free((evl_process *)r);
    break;
  default:
    break;
  }
}

static void env_teardown(env *e, const op *o, evl_future *f) {
  int i;
  if (f && o->result == R_FD && evl_future_error(f) == 0)
    close((int)evl_future_result_int(f));
  if (e->client)
    evl_stream_free(e->client);
  if (e->peer)
    evl_stream_free(e->peer);
  if (e->proc)
    evl_process_free(e->proc);
  for (i = 0; i < 2; i++) {
    if (e->sv[i] >= 0)
      close(e->sv[i]);
    if (e->pp[i] >= 0)
      close(e->pp[i]);
  }
  if (e->lfd >= 0)
    close(e->lfd);
  if (e->ulfd >= 0) {
    close(e->ulfd);
    unlink(e->upath);
  }
  if (e->file_fd >= 0)
    close(e->file_fd);
  free(e->buf);
}

static int g_base_fds;
static long g_runs;

/* One run: op o started, then after `iters` iterations cancelled (mode 0),
   or raced by evl_wait_for(timeout) from the start (mode 1), or cancelled
   after it completed (mode 2); free_at_once: the loop is freed right after
   the cancel instead of running on. */
static void run_one(const op *o, int mode, int iters, double timeout,
                    int free_at_once) {
  evl_loop *loop;
  evl_future *f;
  env e;
  int i, rc = 0, err;
  if (getenv("T_VERBOSE"))
    printf("  %s: mode %d, %d iterations, timeout %g%s\n", o->name, mode, iters,
           timeout, free_at_once ? ", loop freed at once" : "");
  g_test_live = 0;
  g_made = g_lost = g_tmade = g_tlost = 0;
  loop = test_open();
  g_quiet = 1;
  env_setup(&e, loop, o->needs);
  e.mode = mode;
  f = o->start(&e);
  CHECK(f != NULL);
  if (mode == 1)
    f = evl_wait_for(f, timeout);
  if (mode == 2)
    CHECK_EQ(wait_fut(loop, f), 0);
  for (i = 0; i < iters; i++)
    evl_run_once(loop, 0.002);
  if (mode != 1) {
    int was_done = evl_future_done(f);
    rc = evl_future_cancel(f);
    CHECK_EQ(rc, was_done ? 0 : 1);
  }
  if (!free_at_once) {
    RUN_UNTIL(loop, evl_future_done(f));
    if (mode == 0 && rc == 1)
      CHECK_EQ(evl_future_error(f), EVL_ECANCELED);
    if (evl_future_error(f) == 0)
      take_result(o, f);
    run_for(loop, 0.005);
  }
  env_teardown(&e, o, f);
  test_close_any(loop); /* g_quiet: reports may come */
  err = evl_future_error(f);
  /* Callbacks: in pairs, and none for what the caller never got. */
  CHECK_EQ(g_tmade, g_tlost);
  CHECK_EQ(g_made, g_lost);
  if (err && o->result == R_TRANSPORT)
    CHECK_EQ(g_tmade, 0);
  if (err && o->result == R_SUB)
    CHECK_EQ(g_made, 0);
  if (free_at_once && evl_future_error(f) == 0 &&
      (o->result == R_STREAM || o->result == R_PROC))
    take_result(o, f); /* yours even after the loop (the rest was its) */
  evl_future_release(f);
  if (getenv("T_LEAKS") && g_test_live) { /* go on: LeakSanitizer says where */
    printf("  %ld allocations left\n", g_test_live);
    return;
  }
  CHECK_EQ(g_test_live, 0);
  check_no_children();
  CHECK_EQ(test_count_fds(), g_base_fds);
  g_runs++;
}

static void matrix_warm_up(void) {
  warm_sigchld();
  g_base_fds = test_count_fds();
}

static void matrix(size_t from, size_t to) {
  static const double timeouts[] = {0.0, 0.001, 0.003, 0.008, 0.02};
  const char *only = getenv("T_OP"); /* one operation (by name) */
  size_t i;
  int k, t;
  matrix_warm_up();
  g_runs = 0;
  for (i = from; i < to && i < NOPS; i++) {
    const op *o = &ops[i];
    if (only && strcmp(only, o->name))
      continue;
    for (k = 0; k <= 6; k++)
      run_one(o, 0, k, 0, 0);
    run_one(o, 0, 0, 0, 1);
    run_one(o, 0, 2, 0, 1);
    for (t = 0; t < (int)(sizeof timeouts / sizeof timeouts[0]); t++)
      run_one(o, 1, 0, timeouts[t], 0);
    if (o->start != op_serve_forever) /* (ends only when cancelled) */
      run_one(o, 2, 0, 0, 0);
  }
  printf("  %ld runs\n", g_runs);
}

TEST(cancel_matrix_core) {
  matrix(0, 7);
}
TEST(cancel_matrix_connections) {
  matrix(7, 22);
}
TEST(cancel_matrix_sockets) {
  matrix(22, 31);
}
TEST(cancel_matrix_streams) {
  matrix(31, 38);
}
TEST(cancel_matrix_subprocesses) {
  matrix(38, NOPS);
}

/* ---- what a cancelled operation leaves behind ---- */

/* Reads everything sv[1] has now (non-blocking) into buf; returns bytes. */
static size_t drain_peer(int fd, unsigned char *buf, size_t cap) {
  size_t got = 0;
  for (;;) {
    ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
    if (n <= 0)
      return got;
    got += (size_t)n;
    if (got == cap)
      return got;
  }
}
static void fill_pattern(unsigned char *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    b[i] = (unsigned char)(i % 251);
}
static int is_pattern(const unsigned char *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (b[i] != (unsigned char)(i % 251))
      return 0;
  return 1;
}

/* A cancelled read takes nothing from the buffer: the next read gets it. */
TEST(cancelled_read_leaves_data_buffered) {
  evl_loop *loop = test_open();
  env e;
  evl_future *r;
  evl_bytes *b;
  env_setup(&e, loop, N_STREAMS);
  r = evl_stream_readexactly(e.client, 100);
  CHECK_EQ(evl_stream_write(e.peer, "0123456789", 10), 0);
  run_for(loop, 0.05);
  CHECK(!evl_future_done(r));
  CHECK_EQ(evl_future_cancel(r), 1);
  evl_future_release(r);
  r = evl_stream_readuntil(e.client, "X", 1); /* not there: pending */
  run_for(loop, 0.02);
  CHECK_EQ(evl_future_cancel(r), 1);
  evl_future_release(r);
  r = evl_stream_readexactly(e.client, 10);
  CHECK_EQ(wait_fut(loop, r), 0);
  b = (evl_bytes *)evl_future_result(r);
  CHECK(b && b->len == 10 && !memcmp(b->data, "0123456789", 10));
  evl_future_release(r);
  env_teardown(&e, &ops[0], NULL);
  test_close(loop);
}

/* A cancelled sock_sendall: what the kernel took stays sent (a prefix of
   the data), nothing more is sent after the cancel. */
TEST(cancelled_sendall_keeps_what_was_sent) {
  evl_loop *loop = test_open();
  size_t len = 4u << 20, got, more;
  unsigned char *data = (unsigned char *)malloc(len);
  unsigned char *in = (unsigned char *)malloc(len);
  evl_future *f;
  int sv[2];
  CHECK(data && in);
  fill_pattern(data, len);
  CHECK(test_socketpair(sv) == 0);
  CHECK(test_set_nonblocking(sv[0]) == 0);
  f = evl_sock_sendall(loop, sv[0], data, len);
  run_for(loop, 0.02);
  got = drain_peer(sv[1], in, len); /* room for more: the future goes on */
  run_for(loop, 0.02);
  CHECK(!evl_future_done(f));
  CHECK_EQ(evl_future_cancel(f), 1);
  got += drain_peer(sv[1], in + got, len - got);
  run_for(loop, 0.05);
  more = drain_peer(sv[1], in + got, len - got);
  CHECK_EQ(more, 0); /* nothing after the cancel */
  CHECK(got > 0 && got < len);
  CHECK(is_pattern(in, got));
  printf("  %lu of %lu bytes were sent before the cancel\n", (unsigned long)got,
         (unsigned long)len);
  evl_future_release(f);
  test_close(loop);
  close(sv[0]);
  close(sv[1]);
  free(data);
  free(in);
}

/* A cancelled evl_sendfile: the transport stays open, the part of the
   file already sent stays, and the next write follows it. */
TEST(cancelled_sendfile_transport_goes_on) {
  evl_loop *loop = test_open();
  size_t len = 4u << 20, got;
  unsigned char *data = (unsigned char *)malloc(len);
  unsigned char *in = (unsigned char *)malloc(len + 16);
  evl_transport *t;
  evl_future *f;
  int sv[2], file_fd = test_tmpfile_fd();
  double end;
  CHECK(data && in && file_fd >= 0);
  fill_pattern(data, len);
  CHECK(write(file_fd, data, len) == (ssize_t)len);
  CHECK(test_socketpair(sv) == 0);
  CHECK(test_set_nonblocking(sv[0]) == 0);
  t = evl_connect_accepted_socket(loop, &null_proto, NULL, sv[0]);
  CHECK(t != NULL);
  f = evl_sendfile(t, file_fd, 0, len);
  run_for(loop, 0.02);
  CHECK(!evl_future_done(f));
  CHECK_EQ(evl_future_cancel(f), 1);
  CHECK_EQ(evl_transport_write(t, "END", 3), 0);
  got = 0;
  end = test_now() + 5;
  while (test_now() < end && (got < 3 || memcmp(in + got - 3, "END", 3) != 0)) {
    evl_run_once(loop, 0.005);
    got += drain_peer(sv[1], in + got, len + 16 - got);
  }
  CHECK(got > 3 && got < len + 3);
  CHECK(!memcmp(in + got - 3, "END", 3));
  CHECK(is_pattern(in, got - 3));
  printf("  %lu bytes of the file went before the cancel\n",
         (unsigned long)(got - 3));
  CHECK(!evl_transport_is_closing(t));
  evl_transport_close(t);
  evl_future_release(f);
  test_close(loop);
  close(sv[1]);
  close(file_fd);
  free(data);
  free(in);
}

/* Bug 6 again where exits come through SIGCHLD (no pidfd). */
TEST(spawn_cancel_without_pidfd) {
  int kind;
  if (!no_pidfd())
    SKIP("cannot take pidfd_open away here");
  matrix_warm_up(); /* the SIGCHLD slot's self-pipe stays once made */
  for (kind = 0; kind < 4; kind++) {
    spawn_cancel(kind, 0, 0);
    spawn_cancel(kind, 1, 0);
    spawn_cancel(kind, 0, 1);
  }
}

#endif /* !_WIN32 */

TESTS_BEGIN
T_POSIX(open_connection_cancel_before_connect, "POSIX sockets in the test")
T_POSIX(open_unix_connection_cancel_before_connect, "AF_UNIX paths")
T_POSIX(spawn_cancel_kills_and_reaps, "fork/waitpid in the test")
T_POSIX(cancel_matrix_core, "POSIX fds and children in the test")
T_POSIX(cancel_matrix_connections, "POSIX fds and children in the test")
T_POSIX(cancel_matrix_sockets, "POSIX fds and children in the test")
T_POSIX(cancel_matrix_streams, "POSIX fds and children in the test")
T_POSIX(cancel_matrix_subprocesses, "POSIX fds and children in the test")
T_POSIX(cancelled_read_leaves_data_buffered, "POSIX sockets in the test")
T_POSIX(cancelled_sendall_keeps_what_was_sent, "POSIX socketpair")
T_POSIX(cancelled_sendfile_transport_goes_on, "POSIX socketpair, files")
T_POSIX(spawn_cancel_without_pidfd, "Linux seccomp")
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_PROCESS: the sweeps spawn children")
#endif
