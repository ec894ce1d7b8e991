/* Pipe transports: connect_read_pipe / connect_write_pipe on pipes, FIFOs,
   sockets and a pty; flow control, EOF and close, no SIGPIPE, refusals.
   Windows takes sockets everywhere (a loopback socket pair stands in for a
   pipe there) and, on IOCP loops, named pipes opened for overlapped I/O;
   other handles are refused. */
#define _XOPEN_SOURCE 700 /* posix_openpt & co. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#ifndef _WIN32
#include <poll.h>
#include <sys/socket.h>
#include <termios.h>
#endif

/* What a pipe transport's protocol saw: net_test.h's rec_peer (made,
   data, EOF and lost, recorded by its rec_made, rec_eof and rec_lost),
   with the flow-control calls and a pattern check added. */
typedef struct pend {
  rec_peer rec; /* first: rec_made & co. take a pend as a rec_peer */
  int paused, resumed;
  size_t expect_pattern; /* > 0: check a pattern of that many bytes */
  int bad;
} pend;

/* Keeps the first bytes in rec.buf (those that fit), or with
   expect_pattern set counts the bytes off the test pattern. */
static void p_data(evl_transport *t, const void *data, size_t len, void *user) {
  pend *p = (pend *)user;
  const unsigned char *d = (const unsigned char *)data;
  size_t i;
  (void)t;
  for (i = 0; i < len; i++) {
    if (p->expect_pattern) {
      if (d[i] != test_pat(p->rec.n + i))
        p->bad++;
    } else if (p->rec.n + i < sizeof p->rec.buf) {
      p->rec.buf[p->rec.n + i] = d[i];
    }
  }
  p->rec.n += len;
}
static void p_pause(evl_transport *t, void *user) {
  (void)t;
  ((pend *)user)->paused++;
}
static void p_resume(evl_transport *t, void *user) {
  (void)t;
  ((pend *)user)->resumed++;
}
/* (rec_eof returns eof_keep: a pipe closes at EOF whatever it says.) */
static const evl_protocol pipe_proto = {rec_made, p_data,   rec_eof, rec_lost,
                                        p_pause,  p_resume, NULL,    NULL,
                                        NULL,     NULL};

static evl_transport *open_pipe(evl_loop *loop, pend *p, int fd, int write) {
  evl_future *f = write ? evl_connect_write_pipe(loop, &pipe_proto, p, fd)
                        : evl_connect_read_pipe(loop, &pipe_proto, p, fd);
  evl_transport *t;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  t = (evl_transport *)evl_future_result(f);
  CHECK(t != NULL);
  CHECK_EQ(p->rec.made, 1); /* connection_made ran before the future */
  evl_future_release(f);
  return t;
}

/* A read pipe r on fds[0] and a write pipe w on fds[1], both records
   cleared first. */
static void open_pipe_pair(evl_loop *loop, pend *r, pend *w, int fds[2]) {
  memset(r, 0, sizeof *r);
  memset(w, 0, sizeof *w);
  open_pipe(loop, r, fds[0], 0);
  open_pipe(loop, w, fds[1], 1);
}

/* connect_read_pipe (write 0) or connect_write_pipe on fd fails with want;
   the protocol's callbacks never run. */
static void check_refused(evl_loop *loop, const evl_protocol *proto, evl_fd fd,
                          int write, int want) {
  pend p;
  evl_future *f;
  int rc;
  memset(&p, 0, sizeof p);
  f = write ? evl_connect_write_pipe(loop, proto, &p, fd)
            : evl_connect_read_pipe(loop, proto, &p, fd);
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (rc != want) /* which of the caller's refusals this was */
    fprintf(stderr, "  fd %ld as a %s pipe: %s\n", (long)fd,
            write ? "write" : "read", evl_err_name(rc));
  CHECK_EQ(rc, want);
  evl_future_release(f);
  CHECK_EQ(p.rec.made, 0);
}

#ifdef _WIN32
static int make_pipe(int fds[2]) { /* fds[0] reads, fds[1] writes */
  return test_socketpair(fds);
}
static long pipe_write(int fd, const void *data, size_t len) {
  return test_send(fd, data, len);
}
static void pipe_close(int fd) {
  test_closesocket(fd);
}
static int fd_closed(int fd) {
  return test_sock_is_closed(fd);
}
#else
static int make_pipe(int fds[2]) {
  return pipe(fds);
}
static long pipe_write(int fd, const void *data, size_t len) {
  return (long)write(fd, data, len);
}
static void pipe_close(int fd) {
  close(fd);
}
static int fd_closed(int fd) {
  return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}
#endif

/* A new pipe (make_pipe: a socket pair on Windows), both ends as
   transports through open_pipe_pair. */
static void new_pipe_pair(evl_loop *loop, pend *r, pend *w, int fds[2]) {
  CHECK_EQ(make_pipe(fds), 0);
  open_pipe_pair(loop, r, w, fds);
}

/* Writes text through w, checks that r got it, closes w: both ends go. */
static void write_through_then_close(evl_loop *loop, pend *r, pend *w,
                                     const char *text) {
  size_t n = strlen(text);
  CHECK_EQ(evl_transport_write(w->rec.t, text, n), 0);
  RUN_UNTIL(loop, r->rec.n == n);
  CHECK(!memcmp(r->rec.buf, text, n));
  evl_transport_close(w->rec.t);
  RUN_UNTIL(loop, r->rec.lost == 1 && w->rec.lost == 1);
}

TEST(read_pipe_data_then_eof_closes) {
  evl_loop *loop = test_open();
  pend r;
  int fds[2];
  memset(&r, 0, sizeof r);
  r.rec.eof_keep = 1; /* ignored for pipes: EOF ends a read pipe */
  CHECK_EQ(make_pipe(fds), 0);
  open_pipe(loop, &r, fds[0], 0);
  CHECK_EQ(pipe_write(fds[1], "abc", 3), 3);
  RUN_UNTIL(loop, r.rec.n == 3);
  CHECK(!memcmp(r.rec.buf, "abc", 3));
  /* a read pipe cannot be written to */
  CHECK_EQ(evl_transport_write(r.rec.t, "x", 1), EVL_ENOTSUP);
  CHECK_EQ(evl_transport_can_write_eof(r.rec.t), 0);
  pipe_close(fds[1]);
  RUN_UNTIL(loop, r.rec.lost == 1);
  CHECK_EQ(r.rec.eofs, 1);
  CHECK_EQ(r.rec.lost_err, 0);
  CHECK(fd_closed(fds[0])); /* the transport owned it */
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* 8 MiB through a pipe, both ends transports on one loop: flow control
   pauses the writer once and resumes it once; every byte arrives. */
TEST(write_pipe_flow_control_and_write_eof) {
  evl_loop *loop = test_open();
  pend r, w;
  int fds[2];
  size_t total = 8u << 20, i;
  unsigned char *big = (unsigned char *)malloc(total);
  CHECK(big != NULL);
  for (i = 0; i < total; i++)
    big[i] = test_pat(i);
  new_pipe_pair(loop, &r, &w, fds);
  r.expect_pattern = total; /* before any data: nothing was written yet */
  CHECK_EQ(evl_transport_can_write_eof(w.rec.t), 1);
  CHECK_EQ(evl_transport_pause_reading(w.rec.t), EVL_ENOTSUP);
  CHECK_EQ(evl_transport_write(w.rec.t, big, total), 0);
  CHECK(evl_transport_get_write_buffer_size(w.rec.t) > 65536);
  CHECK_EQ(w.paused, 1);
  CHECK_EQ(evl_transport_write_eof(w.rec.t), 0); /* closes once flushed */
  RUN_UNTIL(loop, r.rec.lost == 1 && w.rec.lost == 1);
  CHECK_EQ(r.rec.n, total);
  CHECK_EQ(r.bad, 0);
  CHECK_EQ(w.resumed, 1);
  CHECK_EQ(w.rec.lost_err, 0);
  CHECK_EQ(r.rec.eofs, 1);
  free(big);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The reader goes away: a write fails with EVL_EPIPE, never SIGPIPE. */
TEST(write_pipe_reader_gone_no_sigpipe) {
  evl_loop *loop = test_open();
  pend w;
  int fds[2], rc;
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_DFL); /* the runner ignores it: undo that */
#endif
  memset(&w, 0, sizeof w);
  CHECK_EQ(make_pipe(fds), 0);
  open_pipe(loop, &w, fds[1], 1);
  pipe_close(fds[0]);
#ifdef _WIN32 /* a socket pair: this write may still go into the buffer */
  rc = evl_transport_write(w.rec.t, "data", 4);
  CHECK(rc == 0 || rc == EVL_EPIPE || rc == EVL_ECONNRESET);
#else
  CHECK(evl_transport_write(w.rec.t, "data", 4) == EVL_EPIPE ||
        w.rec.t == NULL || evl_transport_is_closing(w.rec.t));
#endif
  (void)rc;
  RUN_UNTIL(loop, w.rec.lost == 1);
#ifdef _WIN32 /* a socket pair: a reset too */
  CHECK(w.rec.lost_err == EVL_EPIPE || w.rec.lost_err == 0 ||
        w.rec.lost_err == EVL_ECONNRESET);
#else
  CHECK(w.rec.lost_err == EVL_EPIPE || w.rec.lost_err == 0);
#endif
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The reader goes away while nothing is queued: the write pipe notices
   (its fd turns readable) and ends with connection_lost(0). */
TEST(write_pipe_notices_reader_gone_when_idle) {
  evl_loop *loop = test_open();
  pend w;
  int fds[2];
  memset(&w, 0, sizeof w);
  CHECK_EQ(make_pipe(fds), 0);
  open_pipe(loop, &w, fds[1], 1);
  pipe_close(fds[0]);
  RUN_UNTIL(loop, w.rec.lost == 1);
  CHECK_EQ(w.rec.lost_err, 0);
  CHECK(fd_closed(fds[1]));
  test_close(loop);
}

#ifndef _WIN32
TEST(fifo_read_and_write_pipes) {
  evl_loop *loop = test_open();
  char dir[] = "/tmp/evl-fifo-XXXXXX", path[64];
  pend r, w;
  int fds[2];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/f", dir);
  CHECK_EQ(mkfifo(path, 0600), 0);
  fds[0] = open(path, O_RDONLY | O_NONBLOCK);
  CHECK(fds[0] >= 0);
  fds[1] = open(path, O_WRONLY);
  CHECK(fds[1] >= 0);
  open_pipe_pair(loop, &r, &w, fds);
  write_through_then_close(loop, &r, &w, "through a fifo");
  unlink(path);
  rmdir(dir);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#endif

TEST(socketpair_as_pipes) {
  evl_loop *loop = test_open();
  pend r, w;
  int sv[2];
  CHECK_EQ(test_socketpair(sv), 0);
  open_pipe_pair(loop, &r, &w, sv);
  write_through_then_close(loop, &r, &w, "sock");
  CHECK_EQ(r.rec.eofs, 1);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

#ifndef _WIN32
/* A pty: the master as a read pipe and, on a dup, as a write pipe. */
TEST(pty_read_and_write_pipes) {
  evl_loop *loop = test_open();
  pend r, w;
  struct termios tio;
  struct pollfd pfd;
  char got[64];
  int master, slave, masters[2];
  ssize_t k;
  master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0) {
    printf("  (no pty here: skipped)\n");
    test_close(loop);
    return;
  }
  CHECK_EQ(grantpt(master), 0);
  CHECK_EQ(unlockpt(master), 0);
  slave = open(ptsname(master), O_RDWR | O_NOCTTY);
  CHECK(slave >= 0);
  CHECK_EQ(tcgetattr(slave, &tio), 0);
  tio.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* raw enough: no echo */
  tio.c_oflag &= ~(tcflag_t)OPOST;
  CHECK_EQ(tcsetattr(slave, TCSANOW, &tio), 0);
  masters[0] = master;
  masters[1] = dup(master);
  CHECK(masters[1] >= 0);
  open_pipe_pair(loop, &r, &w, masters);
  CHECK_EQ(write(slave, "from the tty", 12), 12);
  RUN_UNTIL(loop, r.rec.n >= 12);
  CHECK(!memcmp(r.rec.buf, "from the tty", 12));
  CHECK_EQ(evl_transport_write(w.rec.t, "to the tty", 10), 0);
  RUN_UNTIL(loop, evl_transport_get_write_buffer_size(w.rec.t) == 0);
  pfd.fd = slave;
  pfd.events = POLLIN;
  CHECK_EQ(poll(&pfd, 1, 5000), 1);
  k = read(slave, got, sizeof got);
  CHECK_EQ(k, 10);
  CHECK(!memcmp(got, "to the tty", 10));
  evl_transport_close(w.rec.t);
  evl_transport_close(r.rec.t);
  RUN_UNTIL(loop, r.rec.lost == 1 && w.rec.lost == 1);
  close(slave);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

#else
/* Windows: pipe and file handles are EVL_ENOTSUP (sockets only), a closed
   socket or -1 EVL_EBADF, no protocol EVL_EINVAL; the caller keeps what
   was refused. */
TEST(regular_files_and_bad_fds_are_refused) {
  evl_loop *loop = test_open();
  char dir[MAX_PATH], path[MAX_PATH];
  HANDLE file;
  int hp[2], sv[2];
  DWORD flags;
  CHECK_EQ(test_pipe(hp), 0);
  check_refused(loop, &pipe_proto, hp[0], 0, EVL_ENOTSUP);
  check_refused(loop, &pipe_proto, hp[1], 1, EVL_ENOTSUP);
  CHECK(GetHandleInformation((HANDLE)(intptr_t)hp[0], &flags));
  test_pipe_close(hp[0]);
  test_pipe_close(hp[1]);
  CHECK(GetTempPathA(sizeof dir, dir) > 0);
  CHECK(GetTempFileNameA(dir, "evl", 0, path) != 0);
  file = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                     FILE_FLAG_DELETE_ON_CLOSE, NULL);
  CHECK(file != INVALID_HANDLE_VALUE);
  check_refused(loop, &pipe_proto, (evl_fd)(intptr_t)file, 0, EVL_ENOTSUP);
  CHECK(CloseHandle(file));
  check_refused(loop, &pipe_proto, -1, 0, EVL_EBADF);
  CHECK_EQ(test_socketpair(sv), 0);
  test_closesocket(sv[0]);
  check_refused(loop, &pipe_proto, sv[0], 0, EVL_EBADF); /* closed */
  check_refused(loop, NULL, sv[1], 1, EVL_EINVAL);
  CHECK(!fd_closed(sv[1]));
  test_closesocket(sv[1]);
  test_close(loop);
}
#endif

#ifndef _WIN32
TEST(regular_files_and_bad_fds_are_refused) {
  evl_loop *loop = test_open();
  char path[] = "/tmp/evl-regular-XXXXXX";
  int fd = mkstemp(path), fds[2];
  CHECK(fd >= 0);
  check_refused(loop, &pipe_proto, fd, 0, EVL_EINVAL);
  check_refused(loop, &pipe_proto, fd, 1, EVL_EINVAL);
  CHECK(!fd_closed(fd)); /* refused: the caller keeps it */
  close(fd);
  unlink(path);
  fd = open("/tmp", O_RDONLY);
  CHECK(fd >= 0);
  check_refused(loop, &pipe_proto, fd, 0, EVL_EINVAL); /* a directory */
  close(fd);
  check_refused(loop, &pipe_proto, -1, 0, EVL_EBADF);
  CHECK_EQ(make_pipe(fds), 0);
  close(fds[0]);
  check_refused(loop, &pipe_proto, fds[0], 0, EVL_EBADF); /* closed */
  check_refused(loop, NULL, fds[1], 1, EVL_EINVAL);
  close(fds[1]);
  test_close(loop);
}
#endif

/* Closing the loop with pipe transports open runs their close paths. */
TEST(loop_close_closes_pipe_transports) {
  evl_loop *loop = test_open();
  pend r, w;
  int fds[2];
  new_pipe_pair(loop, &r, &w, fds);
  CHECK_EQ(evl_transport_write(w.rec.t, "pending", 7), 0);
  test_close(loop);
  CHECK_EQ(r.rec.lost, 1);
  CHECK_EQ(w.rec.lost, 1);
  CHECK_EQ(r.rec.lost_err, EVL_ECLOSED);
  CHECK(fd_closed(fds[0]) && fd_closed(fds[1]));
}

#ifdef _WIN32
/* A named pipe pair, both ends overlapped: h[0] the server end (mode:
   PIPE_ACCESS_INBOUND, _OUTBOUND or _DUPLEX), h[1] the client end that
   talks to it. */
static void named_pipe(HANDLE h[2], DWORD mode) {
  static int serial;
  char name[96];
  snprintf(name, sizeof name, "\\\\.\\pipe\\evl-test-%lu-%d",
           (unsigned long)GetCurrentProcessId(), serial++);
  h[0] = CreateNamedPipeA(name, mode | FILE_FLAG_OVERLAPPED,
                          PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1,
                          4096, 4096, 0, NULL);
  CHECK(h[0] != INVALID_HANDLE_VALUE);
  h[1] =
      CreateFileA(name,
                  mode == PIPE_ACCESS_INBOUND    ? GENERIC_WRITE
                  : mode == PIPE_ACCESS_OUTBOUND ? GENERIC_READ
                                                 : GENERIC_READ | GENERIC_WRITE,
                  0, NULL, OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
  CHECK(h[1] != INVALID_HANDLE_VALUE);
}
#define HFD(h) ((evl_fd)(intptr_t)(h))

/* On IOCP a named pipe is a pipe transport (ReadFile/WriteFile through the
   port): 3 MiB through 4 KiB pipe buffers with flow control, EOF when the
   writer closes; on select it is refused. */
TEST(named_pipes_on_iocp) {
  evl_loop *loop = test_open();
  pend r, w;
  HANDLE h[2];
  int fds[2];
  size_t total = (size_t)3 << 20, i;
  unsigned char *big = (unsigned char *)malloc(total);
  CHECK(big != NULL);
  named_pipe(h, PIPE_ACCESS_INBOUND);
  if (strcmp(evl_backend_name(loop), "iocp") != 0) {
    check_refused(loop, &pipe_proto, HFD(h[0]), 0, EVL_ENOTSUP);
    CHECK(CloseHandle(h[0]) && CloseHandle(h[1]));
    free(big);
    test_close(loop);
    return;
  }
  fds[0] = (int)HFD(h[0]);
  fds[1] = (int)HFD(h[1]);
  open_pipe_pair(loop, &r, &w, fds);
  r.expect_pattern = total; /* before any data: nothing was written yet */
  CHECK(evl_transport_can_write_eof(w.rec.t));
  for (i = 0; i < total; i++)
    big[i] = test_pat(i);
  CHECK_EQ(evl_transport_write(w.rec.t, big, total), 0);
  free(big);
  CHECK(w.paused == 1); /* 3 MiB queued: above the high mark */
  CHECK(evl_transport_get_write_buffer_size(w.rec.t) > 0);
  RUN_UNTIL(loop, r.rec.n == total && w.resumed == 1 &&
                      evl_transport_get_write_buffer_size(w.rec.t) == 0);
  CHECK_EQ(r.bad, 0);
  CHECK_EQ(evl_transport_write_eof(w.rec.t), 0); /* a pipe: closes it */
  RUN_UNTIL(loop, w.rec.lost == 1 && r.rec.lost == 1);
  CHECK_EQ(w.rec.lost_err, 0);
  CHECK_EQ(r.rec.eofs, 1); /* EOF, then the read pipe closed */
  CHECK_EQ(r.rec.lost_err, 0);
  CHECK_EQ(r.rec.n, total);
  test_close(loop);
}

/* A write pipe on a named pipe learns that the reader left: a duplex end
   while idle (its own read fails), an outbound-only end at its next write
   (EVL_EPIPE). */
TEST(named_pipe_reader_gone) {
  evl_loop *loop = test_open();
  pend w;
  HANDLE h[2];
  if (strcmp(evl_backend_name(loop), "iocp") != 0) {
    test_close(loop);
    return; /* named_pipes_on_iocp checks the refusal */
  }
  memset(&w, 0, sizeof w);
  named_pipe(h, PIPE_ACCESS_DUPLEX);
  open_pipe(loop, &w, (int)HFD(h[0]), 1);
  CHECK(CloseHandle(h[1]));
  RUN_UNTIL(loop, w.rec.lost == 1);
  CHECK_EQ(w.rec.lost_err, 0); /* nothing was lost: a plain close */

  memset(&w, 0, sizeof w);
  named_pipe(h, PIPE_ACCESS_OUTBOUND);
  open_pipe(loop, &w, (int)HFD(h[0]), 1);
  CHECK_EQ(evl_transport_write(w.rec.t, "abc", 3), 0);
  CHECK(CloseHandle(h[1])); /* the reader never read */
  RUN_UNTIL(loop,
            evl_transport_get_write_buffer_size(w.rec.t) == 0 || w.rec.lost);
  if (!w.rec.lost)
    (void)evl_transport_write(w.rec.t, "def", 3);
  RUN_UNTIL(loop, w.rec.lost == 1);
  CHECK_EQ(w.rec.lost_err, EVL_EPIPE);
  test_close(loop);
}
#endif

TESTS_BEGIN
T(read_pipe_data_then_eof_closes)
T(write_pipe_flow_control_and_write_eof)
T(write_pipe_reader_gone_no_sigpipe)
T(write_pipe_notices_reader_gone_when_idle)
T_POSIX(fifo_read_and_write_pipes, "no FIFOs")
T(socketpair_as_pipes)
T_POSIX(pty_read_and_write_pipes, "no ptys")
T(regular_files_and_bad_fds_are_refused)
T(loop_close_closes_pipe_transports)
#ifdef _WIN32
T(named_pipes_on_iocp)
T(named_pipe_reader_gone)
#endif
TESTS_END
