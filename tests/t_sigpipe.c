/* SIGPIPE sweep: with SIGPIPE at its default disposition (the runner
   ignores it; each test puts the default back, so a SIGPIPE kills the test
   process), every write path with its peer gone returns an error and the
   process lives: transport write and writev, pipe transports, sendfile,
   sock_sendall, sock_sendfile, stream write and drain, communicate, and a
   datagram sendto. Also: the guard around sendfile(2) (which has no
   MSG_NOSIGNAL) keeps a SIGPIPE that was pending before it, and leaves none
   of its own behind in a thread that blocks SIGPIPE. POSIX only: Windows
   has no SIGPIPE. */
#include "test.h"

#include "net_test.h"
#include "proc_test.h"

#ifndef _WIN32
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static void default_sigpipe(void) {
  signal(SIGPIPE, SIG_DFL); /* the runner ignores it: a SIGPIPE kills us */
}

/* A loop for a test whose failed writes may be reported (g_quiet), with
   SIGPIPE at its default disposition. */
static evl_loop *quiet_loop(void) {
  default_sigpipe();
  g_quiet = 1;
  return test_open();
}

/* A connected AF_UNIX stream pair, both ends non-blocking: a write to an
   end whose peer is closed fails with EPIPE (and raises SIGPIPE) at once. */
static void pair(int sv[2]) {
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  CHECK_EQ(test_set_nonblocking(sv[0]), 0);
  CHECK_EQ(test_set_nonblocking(sv[1]), 0);
}

/* A temporary file of n bytes. */
static int temp_file(size_t n) {
  char buf[4096];
  int fd = test_tmpfile_fd();
  size_t off = 0;
  CHECK(fd >= 0);
  memset(buf, 'f', sizeof buf);
  while (off < n) {
    size_t k = n - off < sizeof buf ? n - off : sizeof buf;
    long w = test_fd_write(fd, buf, k);
    CHECK(w > 0);
    off += (size_t)w;
  }
  return fd;
}

static int is_peer_gone(int err) {
  return err == EVL_EPIPE || err == EVL_ECONNRESET;
}

/* ---- transports -----------------------------------------------------------
   The transports' protocol is net_test.h's rec_proto: it counts made and
   lost and keeps the error. */

/* A quiet loop with c's transport on sv[0] of a pair whose peer sv[1] is
   already closed. */
static evl_loop *socket_to_gone_peer(rec_peer *c) {
  evl_loop *loop = quiet_loop();
  int sv[2];
  pair(sv);
  memset(c, 0, sizeof *c);
  CHECK(evl_connect_accepted_socket(loop, &rec_proto, c, sv[0]) != NULL);
  RUN_UNTIL(loop, c->made == 1);
  close(sv[1]);
  return loop;
}

/* writes through write() (vec 0) or writev() (vec 1) until the transport
   reports the peer gone; never more than 100 tries. */
static void write_until_gone(evl_loop *loop, rec_peer *c, int vec) {
  static const char data[1000] = {1};
  int i, rc = 0;
  for (i = 0; i < 100 && c->lost == 0 && rc == 0; i++) {
    if (vec) {
      evl_iovec iov[2];
      iov[0].base = data;
      iov[0].len = 10;
      iov[1].base = data;
      iov[1].len = sizeof data;
      rc = evl_transport_writev(c->t, iov, 2);
    } else {
      rc = evl_transport_write(c->t, data, sizeof data);
    }
    run_for(loop, 0.002);
  }
  CHECK(rc != 0 || c->lost == 1);
  if (rc != 0)
    CHECK(is_peer_gone(rc));
  RUN_UNTIL(loop, c->lost == 1);
  CHECK(is_peer_gone(c->lost_err));
}

/* A transport whose peer is gone, written to through write() or writev(). */
static void transport_to_gone_peer(int vec) {
  rec_peer c;
  evl_loop *loop = socket_to_gone_peer(&c);
  write_until_gone(loop, &c, vec);
  test_close(loop);
}

TEST(sigpipe_transport_write) {
  transport_to_gone_peer(0);
}

TEST(sigpipe_transport_writev) {
  transport_to_gone_peer(1);
}

/* A quiet loop (default SIGPIPE disposition) with c's write pipe
   transport on a pipe whose read end is already closed. */
static evl_loop *pipe_to_gone_reader(rec_peer *c) {
  evl_loop *loop;
  int p[2];
  evl_future *f;
  loop = quiet_loop();
  memset(c, 0, sizeof *c);
  CHECK_EQ(pipe(p), 0);
  f = evl_connect_write_pipe(loop, &rec_proto, c, p[1]);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  close(p[0]);
  return loop;
}

TEST(sigpipe_pipe_transport) {
  evl_loop *loop;
  rec_peer c;
  loop = pipe_to_gone_reader(&c);
  write_until_gone(loop, &c, 0);
  test_close_any(loop); /* g_quiet: reports may come */
}

/* ---- sendfile on a transport: bug 2 of issue 11 ------------------------- */

TEST(sigpipe_sendfile_pipe_transport) {
  /* sendfile(2) into a pipe whose reader is gone */
  evl_loop *loop;
  rec_peer c;
  int fd = temp_file(1 << 16), rc;
  evl_future *f;
  loop = pipe_to_gone_reader(&c);
  f = evl_sendfile(c.t, fd, 0, 1 << 16);
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (!is_peer_gone(rc))
    fprintf(stderr, "  sendfile: %s\n", evl_err_name(rc));
  CHECK(is_peer_gone(rc));
  evl_future_release(f);
  RUN_UNTIL(loop, c.lost == 1);
  close(fd);
  test_close_any(loop); /* g_quiet: reports may come */
}

TEST(sigpipe_sendfile) {
  evl_loop *loop;
  rec_peer c;
  evl_future *f;
  int fd = temp_file(1 << 16);
  loop = socket_to_gone_peer(&c);
  f = evl_sendfile(c.t, fd, 0, 1 << 16);
  CHECK(f != NULL);
  CHECK(is_peer_gone(wait_fut(loop, f)));
  evl_future_release(f);
  RUN_UNTIL(loop, c.lost == 1);
  close(fd);
  test_close_any(loop); /* g_quiet: reports may come */
}

/* ---- sockets as futures ---------------------------------------------------
 */

TEST(sigpipe_sock_sendall) {
  static char data[1 << 16];
  evl_loop *loop;
  evl_future *f;
  int sv[2];
  default_sigpipe();
  loop = test_open();
  pair(sv);
  close(sv[1]);
  f = evl_sock_sendall(loop, sv[0], data, sizeof data);
  CHECK(f != NULL);
  CHECK(is_peer_gone(wait_fut(loop, f)));
  evl_future_release(f);
  close(sv[0]);
  test_close(loop);
}

static void close_later(evl_loop *loop, void *arg) {
  (void)loop;
  close(*(int *)arg);
}

/* evl_sock_sendfile of size bytes to a peer that is gone (closed at once,
   or after `after` seconds, while the send is under way): the future fails
   with EPIPE or ECONNRESET, and the process lives. */
static void sock_sendfile_to_gone_peer(size_t size, double after) {
  evl_loop *loop = test_open();
  evl_future *f;
  int sv[2], fd = temp_file(size);
  pair(sv);
  if (after > 0)
    evl_call_later(loop, after, close_later, &sv[1]);
  else
    close(sv[1]);
  f = evl_sock_sendfile(loop, sv[0], fd, 0, size);
  CHECK(f != NULL);
  CHECK(is_peer_gone(wait_fut(loop, f)));
  evl_future_release(f);
  close(sv[0]);
  close(fd);
  test_close(loop);
}

TEST(sigpipe_sock_sendfile) {
  default_sigpipe();
  sock_sendfile_to_gone_peer(1 << 16, 0);
}

TEST(sigpipe_sock_sendfile_peer_leaves_midway) {
  /* the first chunks go, the socket buffer fills, the peer closes, the
     rest fails */
  default_sigpipe();
  sock_sendfile_to_gone_peer(4 << 20, 0.05);
}

/* ---- the guard keeps other SIGPIPEs ---------------------------------------
 */

static int sigpipe_pending(void) {
  sigset_t p;
  CHECK_EQ(sigpending(&p), 0);
  return sigismember(&p, SIGPIPE);
}

static void block_sigpipe(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGPIPE);
  CHECK_EQ(pthread_sigmask(SIG_BLOCK, set, NULL), 0);
}

TEST(sigpipe_guard_leaves_none_of_its_own) {
  /* a thread that blocks SIGPIPE itself: after the failed sendfile no
     SIGPIPE is left pending (the guard took back the one it caused), and
     the thread's mask is as it was */
  sigset_t set, now;
  default_sigpipe();
  block_sigpipe(&set);
  sock_sendfile_to_gone_peer(1 << 16, 0);
  CHECK_EQ(sigpipe_pending(), 0);
  CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &now), 0);
  CHECK_EQ(sigismember(&now, SIGPIPE), 1);
}

TEST(sigpipe_guard_keeps_a_pending_one) {
  /* a SIGPIPE pending before the sendfile is someone else's: it is still
     pending after it */
  sigset_t set;
  struct timespec zero = {0, 0};
  default_sigpipe();
  block_sigpipe(&set);
  CHECK_EQ(raise(SIGPIPE), 0);
  CHECK_EQ(sigpipe_pending(), 1);
  sock_sendfile_to_gone_peer(1 << 16, 0);
  CHECK_EQ(sigpipe_pending(), 1);
  CHECK_EQ(sigtimedwait(&set, NULL, &zero), SIGPIPE);
  CHECK_EQ(sigpipe_pending(), 0);
}

/* ---- streams --------------------------------------------------------------
 */

/* Writes and drains until the stream fails: with the peer gone. */
static void stream_write_until_gone(evl_loop *loop, evl_stream *s) {
  static char data[1 << 16];
  evl_future *f;
  int i, rc = 0;
  for (i = 0; i < 100 && rc == 0; i++) {
    rc = evl_stream_write(s, data, sizeof data);
    if (rc == 0) {
      f = evl_stream_drain(s);
      CHECK(f != NULL);
      rc = wait_fut(loop, f);
      evl_future_release(f);
    }
  }
  CHECK(rc != 0);
  CHECK(is_peer_gone(rc) || rc == EVL_EEXITED || rc == EVL_ECLOSING);
}

TEST(sigpipe_stream_write_drain) {
  evl_loop *loop;
  evl_future *f;
  evl_stream *s;
  int port, lfd, afd;
  loop = quiet_loop();
  lfd = loopback_listener(4, &port, NULL);
  f = evl_open_connection(loop, "127.0.0.1", port, 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  s = (evl_stream *)evl_future_result(f);
  evl_future_release(f);
  afd = accept(lfd, NULL, NULL);
  CHECK(afd >= 0);
  close(afd);
  close(lfd);
  /* TCP: the first write draws the RST, a later one fails */
  stream_write_until_gone(loop, s);
  evl_stream_free(s);
  test_close_any(loop); /* g_quiet: reports may come */
}

/* ---- subprocesses ---------------------------------------------------------
 */

/* A quiet loop (default SIGPIPE disposition) running argv as *p. */
static evl_loop *quiet_loop_with_child(const char *const *argv,
                                       evl_process **p) {
  evl_loop *loop;
  evl_future *f;
  loop = quiet_loop();
  f = evl_create_subprocess_exec(loop, argv, NULL, 0);
  CHECK_EQ(wait_fut(loop, f), 0);
  *p = (evl_process *)evl_future_result(f);
  evl_future_release(f);
  return loop;
}

TEST(sigpipe_communicate_child_ignores_stdin) {
  /* the child exits without reading: writing 1 MiB to its stdin fails, the
     output is still read and the exit code given */
  const char *argv[] = {"/bin/sh", "-c", "exec 0<&-; echo done", NULL};
  size_t n = 1 << 20;
  char *input = (char *)calloc(1, n);
  evl_loop *loop;
  evl_future *c;
  evl_process *p;
  evl_communicate *r;
  loop = quiet_loop_with_child(argv, &p);
  c = evl_process_communicate(p, input, n);
  CHECK(c != NULL);
  CHECK_EQ(wait_fut(loop, c), 0);
  r = (evl_communicate *)evl_future_result(c);
  CHECK_EQ(r->returncode, 0);
  CHECK(r->out != NULL && r->out->len == 5);
  CHECK(memcmp(r->out->data, "done\n", 5) == 0);
  evl_future_release(c);
  evl_process_free(p);
  free(input);
  test_close_any(loop); /* g_quiet: reports may come */
}

TEST(sigpipe_process_stdin_write) {
  const char *argv[] = {"/bin/sh", "-c", "exec 0<&-; sleep 0.05", NULL};
  evl_loop *loop;
  evl_future *f;
  evl_process *p;
  evl_stream *in;
  loop = quiet_loop_with_child(argv, &p);
  in = evl_process_stdin(p);
  CHECK(in != NULL);
  f = evl_process_wait(p);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  stream_write_until_gone(loop, in);
  evl_process_free(p);
  test_close_any(loop); /* g_quiet: reports may come */
}

/* ---- datagrams ------------------------------------------------------------
 */

static int dgram_errors, dgram_last;
static void d_error(evl_transport *t, int err, void *user) {
  (void)t;
  (void)user;
  dgram_errors++;
  dgram_last = err;
}

TEST(sigpipe_datagram_sendto) {
  /* connected UDP to a port nobody listens on: ECONNREFUSED comes back
     (through error_received or the next send), never a signal */
  static const evl_protocol dproto = {NULL, NULL, NULL, NULL, NULL,
                                      NULL, NULL, NULL, NULL, d_error};
  evl_loop *loop;
  evl_future *f;
  evl_transport *t;
  int port, fd = loopback_listener(4, &port, NULL), i, rc = 0;
  close(fd); /* a TCP port just freed: the UDP one is as free */
  loop = quiet_loop();
  dgram_errors = 0;
  f = evl_create_datagram_endpoint(loop, &dproto, NULL, NULL, 0, "127.0.0.1",
                                   port, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  t = (evl_transport *)evl_future_result(f);
  evl_future_release(f);
  for (i = 0; i < 50 && dgram_errors == 0; i++) {
    rc = evl_transport_sendto(t, "x", 1, NULL, 0);
    if (rc != 0)
      break;
    run_for(loop, 0.005);
  }
  CHECK(rc != 0 || dgram_errors > 0);
  if (rc == 0)
    CHECK_EQ(dgram_last, EVL_ECONNREFUSED);
  evl_transport_close(t);
  run_for(loop, 0.01);
  test_close_any(loop); /* g_quiet: reports may come */
}

#endif /* !_WIN32 */

TESTS_BEGIN
T_POSIX(sigpipe_transport_write, "no SIGPIPE on Windows")
T_POSIX(sigpipe_transport_writev, "no SIGPIPE on Windows")
T_POSIX(sigpipe_pipe_transport, "no SIGPIPE on Windows")
T_POSIX(sigpipe_sendfile, "no SIGPIPE on Windows")
T_POSIX(sigpipe_sendfile_pipe_transport, "no SIGPIPE on Windows")
T_POSIX(sigpipe_sock_sendall, "no SIGPIPE on Windows")
T_POSIX(sigpipe_sock_sendfile, "no SIGPIPE on Windows")
T_POSIX(sigpipe_sock_sendfile_peer_leaves_midway, "no SIGPIPE on Windows")
T_POSIX(sigpipe_guard_leaves_none_of_its_own, "no SIGPIPE on Windows")
T_POSIX(sigpipe_guard_keeps_a_pending_one, "no SIGPIPE on Windows")
T_POSIX(sigpipe_stream_write_drain, "no SIGPIPE on Windows")
T_POSIX(sigpipe_communicate_child_ignores_stdin, "no SIGPIPE on Windows")
T_POSIX(sigpipe_process_stdin_write, "no SIGPIPE on Windows")
T_POSIX(sigpipe_datagram_sendto, "no SIGPIPE on Windows")
TESTS_END
