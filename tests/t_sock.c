/* Sockets as futures: evl_sock_connect, evl_sock_accept, evl_sock_sendall,
   evl_sock_recv, evl_sock_recv_into and evl_sock_sendfile on non-blocking
   sockets the caller owns, awaited from tasks; a slow reader, a refused
   connection, cancelling a pending receive. */
/* 64-bit off_t here even on 32-bit glibc: the sparse file past 4 GiB. */
#define _FILE_OFFSET_BITS 64
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <fcntl.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

static void set_nonblock(int fd) {
  CHECK_EQ(test_set_nonblocking(fd), 0);
}

/* A connected pair, both ends non-blocking. */
static void nb_socketpair(int sv[2]) {
  CHECK_EQ(test_socketpair(sv), 0);
  set_nonblock(sv[0]);
  set_nonblock(sv[1]);
}

static void close_pair(int sv[2]) {
  test_closesocket(sv[0]);
  test_closesocket(sv[1]);
}

/* Runs fn as a task on state until it ends, which it must without error. */
static void run_task(evl_loop *loop, evl_task_fn fn, void *state) {
  evl_task *t = evl_task_create(loop, fn, state, 0);
  CHECK(t != NULL);
  CHECK_EQ(wait_fut(loop, t), 0);
  evl_future_release(t);
}

static int nb_socket(void) {
  int fd = (int)socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  set_nonblock(fd);
  return fd;
}

/* A non-blocking listening socket on 127.0.0.1; *addr gets its address. */
static int listener(struct sockaddr_in *addr) {
  int fd = loopback_listener(16, NULL, addr);
  set_nonblock(fd);
  return fd;
}

static int local_port(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  CHECK_EQ(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}
static int remote_port(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  CHECK_EQ(getpeername(fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}

/* ---- connect, accept, sendall, recv, recv_into, EOF -------------------- */

typedef struct basic_state {
  int lfd, cfd, afd;
  struct sockaddr_in addr;
  evl_future *acc;
  char buf[64];
  char big[4];
  intptr_t connect_res, sent, got1, got2, got_eof;
  int step;
} basic_state;

static void basic_task(evl_task *t, void *state) {
  basic_state *s = (basic_state *)state;
  evl_loop *loop = evl_task_loop(t);
  EVL_ASYNC_BEGIN(t);
  /* accept first: it waits until the connect below arrives */
  s->acc = evl_sock_accept(loop, s->lfd);
  CHECK(s->acc != NULL);
  EVL_AWAIT(t, evl_sock_connect(loop, s->cfd, &s->addr, sizeof s->addr));
  s->connect_res = evl_future_result_int(evl_await_future(t));
  s->step = 1;
  EVL_AWAIT(t, s->acc);
  s->acc = NULL;
  s->afd = (int)evl_future_result_int(evl_await_future(t));
  s->step = 2;
  EVL_AWAIT(t, evl_sock_sendall(loop, s->cfd, "hello, sock", 11));
  s->sent = evl_future_result_int(evl_await_future(t));
  EVL_AWAIT(t, evl_sock_recv(loop, s->afd, s->buf, sizeof s->buf));
  s->got1 = evl_future_result_int(evl_await_future(t));
  s->step = 3;
  EVL_AWAIT(t, evl_sock_sendall(loop, s->afd, "pong", 4));
  /* recv_into with a buffer smaller than what is there: a partial read */
  EVL_AWAIT(t, evl_sock_recv_into(loop, s->cfd, s->big, 3));
  s->got2 = evl_future_result_int(evl_await_future(t));
  EVL_AWAIT(t, evl_sock_recv_into(loop, s->cfd, s->big + 3, 1));
  s->step = 4;
  CHECK_EQ(shutdown(s->cfd, SHUT_WR), 0);
  EVL_AWAIT(t, evl_sock_recv(loop, s->afd, s->buf, sizeof s->buf));
  s->got_eof = evl_future_result_int(evl_await_future(t));
  s->step = 5;
  EVL_ASYNC_END(t);
}

TEST(sock_connect_accept_sendall_recv) {
  evl_loop *loop = test_open();
  basic_state s;
  memset(&s, 0, sizeof s);
  s.afd = -1;
  s.lfd = listener(&s.addr);
  s.cfd = nb_socket();
  run_task(loop, basic_task, &s);
  CHECK_EQ(s.step, 5);
  CHECK_EQ(s.connect_res, 0);
  CHECK(s.afd >= 0);
  CHECK(s.afd != s.lfd && s.afd != s.cfd);
  /* the accepted fd is the server end of the client's connection */
  CHECK_EQ(remote_port(s.afd), local_port(s.cfd));
  CHECK_EQ(s.sent, 11);
  CHECK_EQ(s.got1, 11);
  CHECK(memcmp(s.buf, "hello, sock", 11) == 0);
  CHECK_EQ(s.got2, 3);
  CHECK(memcmp(s.big, "pong", 4) == 0);
  CHECK_EQ(s.got_eof, 0);
  test_closesocket(s.afd);
  test_closesocket(s.cfd);
  test_closesocket(s.lfd);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- sendall of 8 MiB against a slow reader ---------------------------- */

#define BIG ((size_t)8 << 20)

typedef struct slow_state {
  int rfd, wfd;
  unsigned char *data;
  size_t got;
  int bad, ticks, sendall_done;
  intptr_t sent;
  evl_handle timer;
} slow_state;

static void slow_read_cb(evl_loop *loop, void *arg) {
  slow_state *s = (slow_state *)arg;
  unsigned char buf[64 * 1024];
  long n = test_recv(s->rfd, buf, sizeof buf);
  s->ticks++;
  if (n > 0) {
    long i;
    for (i = 0; i < n; i++)
      if (buf[i] != test_pat(s->got + (size_t)i))
        s->bad = 1;
    s->got += (size_t)n;
  } else {
    CHECK(n < 0 && test_would_block());
  }
  if (s->got < BIG)
    s->timer = evl_call_later(loop, 0.002, slow_read_cb, s);
}

static void sendall_task(evl_task *t, void *state) {
  slow_state *s = (slow_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sock_sendall(evl_task_loop(t), s->wfd, s->data, BIG));
  s->sent = evl_future_result_int(evl_await_future(t));
  s->sendall_done = 1;
  EVL_ASYNC_END(t);
}

TEST(sock_sendall_slow_reader) {
  evl_loop *loop = test_open();
  slow_state s;
  int sv[2];
  size_t i;
  double t0;
  memset(&s, 0, sizeof s);
  nb_socketpair(sv);
  s.rfd = sv[0];
  s.wfd = sv[1];
  s.data = (unsigned char *)malloc(BIG);
  CHECK(s.data != NULL);
  for (i = 0; i < BIG; i++)
    s.data[i] = test_pat(i);
  s.timer = evl_call_later(loop, 0.002, slow_read_cb, &s);
  t0 = test_now();
  run_task(loop, sendall_task, &s);
  CHECK_EQ(s.sendall_done, 1);
  CHECK_EQ(s.sent, (intptr_t)BIG);
  /* it had to wait for the reader: many reads happened meanwhile */
  CHECK(s.ticks > 10);
  CHECK(test_now() - t0 > 0.02);
  RUN_UNTIL(loop, s.got == BIG);
  CHECK_EQ(s.bad, 0);
  close_pair(sv);
  free(s.data);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- errors ------------------------------------------------------------- */

typedef struct refused_state {
  int fd;
  struct sockaddr_in addr;
  int err, after;
} refused_state;

static void refused_task(evl_task *t, void *state) {
  refused_state *s = (refused_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(
      t, evl_sock_connect(evl_task_loop(t), s->fd, &s->addr, sizeof s->addr));
  s->err = evl_await_error(t);
  s->after = 1;
  EVL_ASYNC_END(t);
}

TEST(sock_connect_refused) {
  evl_loop *loop = test_open();
  refused_state s;
  int lfd;
  memset(&s, 0, sizeof s);
  lfd = listener(&s.addr); /* take a free port, then free it */
  test_closesocket(lfd);
  s.fd = nb_socket();
  run_task(loop, refused_task, &s);
  CHECK_EQ(s.after, 1);
  CHECK_EQ(s.err, EVL_ECONNREFUSED);
  test_closesocket(s.fd);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(sock_connect_refused_plain_future) {
  evl_loop *loop = test_open();
  struct sockaddr_in addr;
  evl_future *f;
  int lfd = listener(&addr), fd, rc;
  test_closesocket(lfd);
  fd = nb_socket();
  f = evl_sock_connect(loop, fd, &addr, sizeof addr);
  CHECK(f != NULL);
  rc = evl_run_until_complete(loop, f);
  CHECK_EQ(rc, EVL_ECONNREFUSED);
  CHECK_EQ(evl_future_error(f), EVL_ECONNREFUSED);
  evl_future_release(f);
  test_closesocket(fd);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- cancelling a pending receive --------------------------------------- */

static void read_one_cb(evl_loop *loop, evl_fd fd, void *arg) {
  char c;
  int *got = (int *)arg;
  (void)loop;
  if (test_recv((int)fd, &c, 1) == 1)
    *got = c;
}

TEST(sock_recv_cancel_removes_watcher) {
  evl_loop *loop = test_open();
  int sv[2], got = 0;
  char buf[8];
  evl_future *f;
  memset(buf, '#', sizeof buf);
  nb_socketpair(sv);
  f = evl_sock_recv(loop, sv[0], buf, sizeof buf);
  CHECK(f != NULL);
  run_for(loop, 0.02);
  CHECK_EQ(evl_future_done(f), 0);
  CHECK_EQ(evl_future_cancel(f), 1);
  CHECK_EQ(evl_future_cancelled(f), 1);
  /* the fd is free for a watcher of our own; data goes to it */
  CHECK_EQ(evl_add_reader(loop, sv[0], read_one_cb, &got), 0);
  CHECK_EQ(test_send(sv[1], "Z", 1), 1);
  RUN_UNTIL(loop, got == 'Z');
  run_for(loop, 0.02);
  CHECK_EQ(evl_future_cancelled(f), 1);
  CHECK_EQ(evl_future_error(f), EVL_ECANCELED);
  CHECK_EQ(buf[0], '#'); /* the cancelled receive read nothing */
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  /* and a new sock_recv on the same fd works */
  evl_future_release(f);
  f = evl_sock_recv(loop, sv[0], buf, sizeof buf);
  CHECK(f != NULL);
  CHECK_EQ(test_send(sv[1], "Q", 1), 1);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), 1);
  CHECK_EQ(buf[0], 'Q');
  evl_future_release(f);
  close_pair(sv);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(sock_recv_cancel_then_release) {
  /* cancel and release at once, then data arrives: nothing may touch the
     (now gone) future or its buffer */
  evl_loop *loop = test_open();
  int sv[2];
  char *buf = (char *)malloc(8);
  evl_future *f;
  CHECK(buf != NULL);
  CHECK_EQ(test_socketpair(sv), 0);
  set_nonblock(sv[0]);
  f = evl_sock_recv(loop, sv[0], buf, 8);
  CHECK(f != NULL);
  evl_run_once(loop, 0);
  CHECK_EQ(evl_future_cancel(f), 1);
  evl_future_release(f);
  free(buf);
  CHECK_EQ(test_send(sv[1], "data", 4), 4);
  run_for(loop, 0.03);
  close_pair(sv);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- sock_sendfile --------------------------------------------------------
 */

#define FILE_SIZE ((size_t)1 << 20)

typedef struct sf_state {
  int file, wfd, rfd;
  intptr_t sent;
  unsigned char *rbuf;
  size_t got;
  int eof;
} sf_state;

static void sendfile_task(evl_task *t, void *state) {
  sf_state *s = (sf_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t,
            evl_sock_sendfile(evl_task_loop(t), s->wfd, s->file, 0, FILE_SIZE));
  s->sent = evl_future_result_int(evl_await_future(t));
  CHECK_EQ(shutdown(s->wfd, SHUT_WR), 0);
  EVL_ASYNC_END(t);
}

static void recv_all_task(evl_task *t, void *state) {
  sf_state *s = (sf_state *)state;
  EVL_ASYNC_BEGIN(t);
  while (!s->eof) {
    CHECK(s->got <= FILE_SIZE);
    EVL_AWAIT(t, evl_sock_recv(evl_task_loop(t), s->rfd, s->rbuf + s->got,
                               FILE_SIZE + 16 - s->got));
    if (evl_future_result_int(evl_await_future(t)) == 0)
      s->eof = 1;
    s->got += (size_t)evl_future_result_int(evl_await_future(t));
  }
  EVL_ASYNC_END(t);
}

TEST(sock_sendfile) {
  evl_loop *loop = test_open();
  sf_state s;
  evl_task *ts, *tr;
  unsigned char *data = (unsigned char *)malloc(FILE_SIZE);
  int sv[2];
  size_t i;
  memset(&s, 0, sizeof s);
  CHECK(data != NULL);
  for (i = 0; i < FILE_SIZE; i++)
    data[i] = test_pat(i);
  s.file = test_tmpfile_fd();
  CHECK(s.file >= 0);
  CHECK_EQ(test_fd_write(s.file, data, FILE_SIZE), (long)FILE_SIZE);
  s.rbuf = (unsigned char *)malloc(FILE_SIZE + 16);
  CHECK(s.rbuf != NULL);
  nb_socketpair(sv);
  s.wfd = sv[0];
  s.rfd = sv[1];
  ts = evl_task_create(loop, sendfile_task, &s, 0);
  tr = evl_task_create(loop, recv_all_task, &s, 0);
  CHECK_EQ(wait_fut(loop, tr), 0);
  CHECK_EQ(wait_fut(loop, ts), 0);
  CHECK_EQ(s.sent, (intptr_t)FILE_SIZE);
  CHECK_EQ(s.got, FILE_SIZE);
  CHECK(memcmp(s.rbuf, data, FILE_SIZE) == 0);
  evl_future_release(ts);
  evl_future_release(tr);
  close_pair(sv);
  test_fd_close(s.file);
  free(s.rbuf);
  free(data);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

#ifndef _WIN32
/* An offset past 4 GiB is sent from there, never from the offset cut to
   32 bits: where the implementation's off_t has 32 bits (32-bit glibc
   without _FILE_OFFSET_BITS=64) it is EVL_EFBIG instead. */
TEST(sock_sendfile_offset_past_4_gib) {
  evl_loop *loop = test_open();
  const int64_t at = ((int64_t)1 << 32) + 10;
  char name[] = "/tmp/evl-sock-sendfile-big-XXXXXX";
  char got[16];
  int sv[2], file = mkstemp(name), rc;
  evl_future *f;
  CHECK(file >= 0);
  unlink(name);
  /* sparse: zeros up to 4 GiB, the pattern just after it */
  if (ftruncate(file, (off_t)at + 32) != 0) {
    CHECK_EQ(errno, EFBIG);
    printf("  (/tmp cannot hold a 4 GiB sparse file: skipped)\n");
    close(file);
    test_close(loop);
    return;
  }
  CHECK_EQ(pwrite(file, "0123456789abcdefXYZ", 19, (off_t)(at - 10)), 19);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  set_nonblock(sv[0]);
  f = evl_sock_sendfile(loop, sv[0], file, at, 9);
  CHECK(f != NULL);
  rc = evl_run_until_complete(loop, f);
  if (rc == EVL_EFBIG) {
    CHECK(sizeof(void *) < 8);
    printf("  (32-bit off_t in the implementation: EVL_EFBIG)\n");
  } else {
    CHECK_EQ(rc, 0);
    CHECK_EQ(evl_future_result_int(f), 9);
    CHECK_EQ(recv(sv[1], got, sizeof got, MSG_DONTWAIT), 9);
    CHECK(memcmp(got, "abcdefXYZ", 9) == 0);
  }
  evl_future_release(f);
  close(sv[0]);
  close(sv[1]);
  close(file);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- accept of several connections -------------------------------------- */

#endif

TEST(sock_accept_several) {
  evl_loop *loop = test_open();
  struct sockaddr_in addr;
  int lfd = listener(&addr), c[3], i;
  for (i = 0; i < 3; i++) {
    evl_future *fc, *fa;
    int afd;
    c[i] = nb_socket();
    fc = evl_sock_connect(loop, c[i], &addr, sizeof addr);
    fa = evl_sock_accept(loop, lfd);
    CHECK(fc != NULL && fa != NULL);
    CHECK_EQ(evl_run_until_complete(loop, fa), 0);
    CHECK_EQ(evl_run_until_complete(loop, fc), 0);
    afd = (int)evl_future_result_int(fa);
    CHECK(afd >= 0);
    CHECK_EQ(remote_port(afd), local_port(c[i]));
    test_closesocket(afd);
    evl_future_release(fa);
    evl_future_release(fc);
  }
  for (i = 0; i < 3; i++)
    test_closesocket(c[i]);
  test_closesocket(lfd);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TESTS_BEGIN
T(sock_connect_accept_sendall_recv)
T(sock_sendall_slow_reader)
T(sock_connect_refused)
T(sock_connect_refused_plain_future)
T(sock_recv_cancel_removes_watcher)
T(sock_recv_cancel_then_release)
T(sock_sendfile)
T_POSIX(sock_sendfile_offset_past_4_gib, "a sparse file via ftruncate/pwrite")
T(sock_accept_several)
TESTS_END
