/* Watching file descriptors: readers and writers on socketpairs and pipes,
   removal, replacement, bad fds, regular files, FD_SETSIZE, many fds. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#ifndef _WIN32
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#endif

/* An AF_UNIX socketpair on POSIX, a loopback TCP pair on Windows. */
static void make_socketpair(int sv[2]) {
  CHECK_EQ(test_socketpair(sv), 0);
}
static void close_pair(int sv[2]) {
  test_closesocket(sv[0]);
  test_closesocket(sv[1]);
}

static void write_byte(int fd) {
  CHECK_EQ(test_send(fd, "x", 1), 1);
}

static int is_backend(evl_loop *loop, const char *name) {
  const char *b = evl_backend_name(loop);
  return b != NULL && strcmp(b, name) == 0;
}

/* Proves the loop still works: a call_soon runs in the next iteration. */
static void soon_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (*(int *)arg)++;
}
static void check_loop_works(evl_loop *loop) {
  int ran = 0;
  CHECK(evl_call_soon(loop, soon_cb, &ran) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran, 1);
}

/* What an I/O callback saw. */
typedef struct {
  int calls;
  evl_fd fd;
  void *arg;
  int read_it;   /* read one byte each call */
  int remove_it; /* remove the reader from inside the callback */
  int remove_rc;
  int stop_it; /* stop the loop */
  char byte;
} io_rec;

/* Most tests here watch one end of a socket pair with a reader r and a
   writer w (either may be NULL): a new loop, the pair, cleared records. */
static evl_loop *open_loop_and_pair(int sv[2], io_rec *r, io_rec *w) {
  evl_loop *loop = test_open();
  make_socketpair(sv);
  if (r)
    memset(r, 0, sizeof *r);
  if (w)
    memset(w, 0, sizeof *w);
  return loop;
}
static void close_loop_and_pair(evl_loop *loop, int sv[2]) {
  test_close(loop);
  close_pair(sv);
}

/* Records a call of a reader (reading 1) or a writer in the io_rec at
   arg, then does what its flags ask. */
static void record_io(evl_loop *loop, evl_fd fd, void *arg, int reading) {
  io_rec *r = (io_rec *)arg;
  r->calls++;
  r->fd = fd;
  r->arg = arg;
  if (reading && r->read_it)
    CHECK_EQ(test_recv((int)fd, &r->byte, 1), 1);
  if (r->remove_it)
    r->remove_rc =
        reading ? evl_remove_reader(loop, fd) : evl_remove_writer(loop, fd);
  if (r->stop_it)
    evl_stop(loop);
}
static void reader_cb(evl_loop *loop, evl_fd fd, void *arg) {
  record_io(loop, fd, arg, 1);
}
static void writer_cb(evl_loop *loop, evl_fd fd, void *arg) {
  record_io(loop, fd, arg, 0);
}

static void timeout_cb(evl_loop *loop, void *arg) {
  (*(int *)arg)++;
  evl_stop(loop);
}

/* Runs the loop, at most 100 rounds of up to 50 ms each, until *a + *b
   (b may be NULL) reaches want; returns what the last round ran
   (evl_run_once counts the callbacks it ran). */
static int run_until_calls(evl_loop *loop, const int *a, const int *b,
                           int want) {
  int i, n = 0;
  for (i = 0; i < 100 && *a + (b ? *b : 0) < want; i++)
    n = evl_run_once(loop, 0.05);
  return n;
}

/* Waits (bounded) for one reader callback on rfd after writing to wfd. */
static void reader_fires_once(evl_loop *loop, int rfd, int wfd) {
  io_rec r;
  int timed_out = 0;
  evl_handle guard;
  memset(&r, 0, sizeof r);
  r.read_it = 1;
  r.stop_it = 1;
  CHECK_EQ(evl_add_reader(loop, rfd, reader_cb, &r), 0);
  write_byte(wfd);
  guard = evl_call_later(loop, 5.0, timeout_cb, &timed_out);
  CHECK(guard > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(timed_out, 0);
  CHECK_EQ(r.calls, 1);
  CHECK_EQ(r.fd, rfd);
  CHECK(r.arg == &r);
  CHECK_EQ(r.byte, 'x');
  CHECK_EQ(evl_handle_cancel(loop, guard), 1);
  CHECK_EQ(evl_remove_reader(loop, rfd), 1);
  CHECK_EQ(evl_remove_reader(loop, rfd), 0);
  /* Nothing fires after removal. */
  write_byte(wfd);
  CHECK_EQ(evl_run_once(loop, 0.02), 0);
  CHECK_EQ(r.calls, 1);
}

TEST(reader_on_socketpair_fires_with_fd_and_arg) {
  int sv[2];
  evl_loop *loop = open_loop_and_pair(sv, NULL, NULL);
  reader_fires_once(loop, sv[0], sv[1]);
  close_loop_and_pair(loop, sv);
}

#ifndef _WIN32
TEST(reader_on_pipe_fires) {
  evl_loop *loop = test_open();
  int p[2];
  CHECK_EQ(pipe(p), 0);
  reader_fires_once(loop, p[0], p[1]);
  test_close(loop);
  close(p[0]);
  close(p[1]);
}
#endif

TEST(reader_removed_inside_its_callback_fires_once) {
  int sv[2], i;
  io_rec r;
  evl_loop *loop = open_loop_and_pair(sv, &r, NULL);
  r.remove_it = 1; /* and does not read: the fd stays readable */
  r.remove_rc = -1;
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  write_byte(sv[1]);
  run_until_calls(loop, &r.calls, NULL, 1);
  CHECK_EQ(r.calls, 1);
  CHECK_EQ(r.remove_rc, 1);
  for (i = 0; i < 5; i++)
    evl_run_once(loop, 0.01);
  CHECK_EQ(r.calls, 1);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 0);
  close_loop_and_pair(loop, sv);
}

TEST(reader_and_writer_on_one_fd_both_fire) {
  int sv[2];
  io_rec r, w;
  evl_loop *loop = open_loop_and_pair(sv, &r, &w);
  r.read_it = 1;
  r.remove_it = 1;
  w.remove_it = 1;
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  /* A fresh socket is writable at once; nothing to read yet. */
  run_until_calls(loop, &w.calls, NULL, 1);
  CHECK_EQ(w.calls, 1);
  CHECK_EQ(w.fd, sv[0]);
  CHECK(w.arg == &w);
  CHECK_EQ(w.remove_rc, 1);
  CHECK_EQ(r.calls, 0);
  write_byte(sv[1]);
  run_until_calls(loop, &r.calls, NULL, 1);
  CHECK_EQ(r.calls, 1);
  CHECK_EQ(r.fd, sv[0]);
  CHECK_EQ(r.remove_rc, 1);
  CHECK_EQ(w.calls, 1);
  close_loop_and_pair(loop, sv);
}

TEST(reader_and_writer_fire_in_the_same_iteration) {
  int sv[2], n;
  io_rec r, w;
  evl_loop *loop = open_loop_and_pair(sv, &r, &w);
  write_byte(sv[1]);
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  n = run_until_calls(loop, &r.calls, &w.calls, 1);
  CHECK_EQ(r.calls, 1);
  CHECK_EQ(w.calls, 1);
  CHECK_EQ(n, 2); /* evl_run_once counts the callbacks it ran */
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 0);
  close_loop_and_pair(loop, sv);
}

/* Two ready fds; whichever callback runs first removes the other's
   reader, which then must not run although its fd was reported ready. */
static int g_pair_a[2], g_pair_b[2], g_first_calls, g_other_calls;
static void remove_other_cb(evl_loop *loop, evl_fd fd, void *arg) {
  (void)arg;
  if (g_first_calls + g_other_calls > 0) {
    g_other_calls++;
    return;
  }
  g_first_calls++;
  CHECK_EQ(
      evl_remove_reader(loop, fd == g_pair_a[0] ? g_pair_b[0] : g_pair_a[0]),
      1);
}

TEST(reader_removed_by_earlier_callback_in_same_iteration_does_not_run) {
  evl_loop *loop = test_open();
  int n;
  make_socketpair(g_pair_a);
  make_socketpair(g_pair_b);
  write_byte(g_pair_a[1]);
  write_byte(g_pair_b[1]);
  CHECK_EQ(evl_add_reader(loop, g_pair_a[0], remove_other_cb, NULL), 0);
  CHECK_EQ(evl_add_reader(loop, g_pair_b[0], remove_other_cb, NULL), 0);
  n = run_until_calls(loop, &g_first_calls, NULL, 1);
  CHECK_EQ(g_first_calls, 1);
  CHECK_EQ(g_other_calls, 0);
  CHECK_EQ(n, 1); /* only one callback ran */
  /* The survivor keeps firing (data unread); the removed one never. */
  evl_run_once(loop, 0.05);
  CHECK_EQ(g_other_calls, 1);
  CHECK(evl_remove_reader(loop, g_pair_a[0]) +
            evl_remove_reader(loop, g_pair_b[0]) ==
        1);
  test_close(loop);
  close_pair(g_pair_a);
  close_pair(g_pair_b);
}

TEST(adding_a_reader_again_replaces_the_callback) {
  int sv[2];
  io_rec r1, r2;
  evl_loop *loop = open_loop_and_pair(sv, &r1, &r2);
  r1.read_it = r2.read_it = 1;
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r1), 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r2), 0);
  write_byte(sv[1]);
  run_until_calls(loop, &r1.calls, &r2.calls, 1);
  CHECK_EQ(r1.calls, 0);
  CHECK_EQ(r2.calls, 1);
  CHECK(r2.arg == &r2);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 0);
  close_loop_and_pair(loop, sv);
}

TEST(removed_writer_stops_while_reader_goes_on_level_triggered) {
  int sv[2], i, wcalls;
  io_rec r, w;
  evl_loop *loop = open_loop_and_pair(sv, &r, &w);
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  run_until_calls(loop, &w.calls, NULL, 1);
  CHECK(w.calls >= 1);
  CHECK_EQ(r.calls, 0);
  /* Level-triggered: still writable, so it fires again. */
  wcalls = w.calls;
  evl_run_once(loop, 0.05);
  CHECK_EQ(w.calls, wcalls + 1);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 0);
  wcalls = w.calls;
  write_byte(sv[1]);
  /* The reader does not read: it fires every iteration. */
  run_until_calls(loop, &r.calls, NULL, 1);
  CHECK_EQ(r.calls, 1);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_run_once(loop, 0.05), 1);
  CHECK_EQ(r.calls, 4);
  CHECK_EQ(w.calls, wcalls);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  close_loop_and_pair(loop, sv);
}

TEST(bad_fds_and_null_callbacks_are_refused) {
  int p[2], sv[2];
  io_rec r;
  /* the pair before the pipe: the pipe's numbers then stay closed */
  evl_loop *loop = open_loop_and_pair(sv, &r, NULL);
#ifdef _WIN32
  /* Closed socket handles. Watching once first makes the loop open what
     it needs (the IOCP loop's AFD handle), which could reuse them. */
  CHECK_EQ(evl_add_reader(loop, sv[1], reader_cb, &r), 0);
  CHECK_EQ(evl_remove_reader(loop, sv[1]), 1);
  check_loop_works(loop);
  make_socketpair(p);
  close_pair(p);
#else
  CHECK_EQ(pipe(p), 0);
  close(p[0]);
  close(p[1]);
#endif
  CHECK_EQ(evl_add_reader(loop, p[0], reader_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_writer(loop, p[1], writer_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_reader(loop, -1, reader_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_writer(loop, -1, writer_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_reader(loop, -12345, reader_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  /* A huge fd number that cannot be open. */
  CHECK_EQ(evl_add_reader(loop, 1 << 30, reader_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  if (sizeof(evl_fd) > 4) { /* beyond int on 64-bit */
    CHECK_EQ(evl_add_reader(loop, (evl_fd)((int64_t)1 << 40), reader_cb, &r),
             EVL_EBADF);
    CHECK(evl_remove_reader(loop, (evl_fd)((int64_t)1 << 40)) <= 0);
    check_loop_works(loop);
  }
  /* Again once the loop has watched an fd: its fd table then covers the
     closed numbers. */
  CHECK_EQ(evl_add_reader(loop, sv[1], reader_cb, &r), 0);
  CHECK_EQ(evl_remove_reader(loop, sv[1]), 1);
  CHECK_EQ(evl_add_reader(loop, p[0], reader_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_writer(loop, p[1], writer_cb, &r), EVL_EBADF);
  check_loop_works(loop);
  CHECK_EQ(evl_add_reader(loop, sv[0], NULL, &r), EVL_EINVAL);
  check_loop_works(loop);
  CHECK_EQ(evl_add_writer(loop, sv[0], NULL, &r), EVL_EINVAL);
  check_loop_works(loop);
  /* None of these left a watcher behind. */
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 0);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 0);
  CHECK_EQ(evl_remove_reader(loop, p[0]), 0);
  CHECK_EQ(r.calls, 0);
  /* The same fd works once given a callback. */
  reader_fires_once(loop, sv[0], sv[1]);
  close_loop_and_pair(loop, sv);
}

#ifndef _WIN32
TEST(regular_file_is_eperm_on_epoll_and_ready_elsewhere) {
  evl_loop *loop = test_open();
  char path[] = "/tmp/evloop-t_io-XXXXXX";
  int fd = mkstemp(path);
  io_rec r;
  CHECK(fd >= 0);
  unlink(path);
  memset(&r, 0, sizeof r);
  if (is_backend(loop, "epoll")) {
    CHECK_EQ(evl_add_reader(loop, fd, reader_cb, &r), EVL_EPERM);
    CHECK_EQ(evl_add_writer(loop, fd, writer_cb, &r), EVL_EPERM);
    check_loop_works(loop);
    CHECK_EQ(evl_remove_reader(loop, fd), 0);
  } else if (is_backend(loop, "kqueue")) {
    /* kqueue: readable while the offset is before the end of the file. */
    CHECK_EQ(write(fd, "abc", 3), 3);
    CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
    r.remove_it = 1;
    CHECK_EQ(evl_add_reader(loop, fd, reader_cb, &r), 0);
    run_until_calls(loop, &r.calls, NULL, 1);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(r.fd, fd);
    CHECK_EQ(r.remove_rc, 1);
  } else {
    /* select and poll: a regular file is always ready. */
    CHECK_EQ(evl_add_reader(loop, fd, reader_cb, &r), 0);
    run_until_calls(loop, &r.calls, NULL, 1);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(r.fd, fd);
    CHECK_EQ(evl_remove_reader(loop, fd), 1);
  }
  CHECK_EQ(r.calls == 0, is_backend(loop, "epoll"));
  test_close(loop);
  close(fd);
}

TEST(fd_above_fd_setsize_is_erange_on_select_only) {
  evl_loop *loop = test_open();
  struct rlimit rl;
  int sv[2], high = FD_SETSIZE + 10;
  io_rec r;
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur <= (rlim_t)high) {
    rlim_t want = (rlim_t)high + 16;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
      printf("note: RLIMIT_NOFILE hard limit too low; skipping\n");
      test_close(loop);
      return;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      printf("note: cannot raise RLIMIT_NOFILE; skipping\n");
      test_close(loop);
      return;
    }
  }
  make_socketpair(sv);
  CHECK_EQ(dup2(sv[0], high), high);
  CHECK_EQ(dup2(sv[0], FD_SETSIZE), FD_SETSIZE);
  CHECK_EQ(dup2(sv[0], FD_SETSIZE - 1), FD_SETSIZE - 1);
  memset(&r, 0, sizeof r);
  r.read_it = 1;
  if (is_backend(loop, "select")) {
    CHECK_EQ(evl_add_reader(loop, high, reader_cb, &r), EVL_ERANGE);
    check_loop_works(loop);
    CHECK_EQ(evl_add_writer(loop, high, writer_cb, &r), EVL_ERANGE);
    check_loop_works(loop);
    CHECK_EQ(evl_add_reader(loop, FD_SETSIZE, reader_cb, &r), EVL_ERANGE);
    check_loop_works(loop);
    CHECK_EQ(evl_remove_reader(loop, high), 0);
    /* The last fd select can watch is fine. */
    CHECK_EQ(evl_add_reader(loop, FD_SETSIZE - 1, reader_cb, &r), 0);
    write_byte(sv[1]);
    run_until_calls(loop, &r.calls, NULL, 1);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(r.fd, FD_SETSIZE - 1);
    CHECK_EQ(evl_remove_reader(loop, FD_SETSIZE - 1), 1);
  } else {
    /* poll and epoll have no such limit. */
    CHECK_EQ(evl_add_reader(loop, high, reader_cb, &r), 0);
    write_byte(sv[1]);
    run_until_calls(loop, &r.calls, NULL, 1);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(r.fd, high);
    CHECK_EQ(evl_remove_reader(loop, high), 1);
  }
  /* A low fd still works on every backend. */
  reader_fires_once(loop, sv[0], sv[1]);
  test_close(loop);
  close(high);
  close(FD_SETSIZE);
  close(FD_SETSIZE - 1);
  close(sv[0]);
  close(sv[1]);
}
#else
/* Windows: only sockets can be watched (Winsock's select and AFD polls
   take nothing else); a pipe or a file handle is a clear EVL_ENOTSUP on
   both backends, a closed handle EVL_EBADF. */
TEST(non_socket_handles_are_enotsup_on_windows) {
  char dir[MAX_PATH], path[MAX_PATH];
  HANDLE file;
  int p[2], sv[2];
  io_rec r;
  evl_loop *loop = open_loop_and_pair(sv, &r, NULL);
  CHECK_EQ(test_pipe(p), 0);
  CHECK_EQ(evl_add_reader(loop, p[0], reader_cb, &r), EVL_ENOTSUP);
  check_loop_works(loop);
  CHECK_EQ(evl_add_writer(loop, p[1], writer_cb, &r), EVL_ENOTSUP);
  check_loop_works(loop);
  /* The same once the loop's fd table covers the handle values. */
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  CHECK_EQ(evl_add_reader(loop, p[0], reader_cb, &r), EVL_ENOTSUP);
  CHECK_EQ(evl_add_writer(loop, p[1], writer_cb, &r), EVL_ENOTSUP);
  CHECK(GetTempPathA(sizeof dir, dir) > 0);
  CHECK(GetTempFileNameA(dir, "evl", 0, path) != 0);
  file =
      CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                  FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, NULL);
  CHECK(file != INVALID_HANDLE_VALUE);
  CHECK_EQ(evl_add_reader(loop, (evl_fd)(intptr_t)file, reader_cb, &r),
           EVL_ENOTSUP);
  check_loop_works(loop);
  /* Nothing was left behind; a socket still works next to them. */
  CHECK_EQ(evl_remove_reader(loop, p[0]), 0);
  CHECK_EQ(evl_remove_writer(loop, p[1]), 0);
  CHECK_EQ(r.calls, 0);
  reader_fires_once(loop, sv[0], sv[1]);
  test_close(loop);
  CloseHandle(file);
  test_pipe_close(p[0]);
  test_pipe_close(p[1]);
  close_pair(sv);
}

static void count_io_cb(evl_loop *loop, evl_fd fd, void *arg) {
  (void)loop;
  (void)fd;
  (*(int *)arg)++;
}

/* Winsock's fd_set is a list of at most FD_SETSIZE sockets (evloop.h makes
   it 1024, and the loop's wake-up socket takes one): select refuses the
   socket after that with EVL_ERANGE; IOCP has no such limit. */
TEST(select_refuses_sockets_beyond_fd_setsize_on_windows) {
  enum { N = 1100 };
  static int socks[N];
  evl_loop *loop = test_open();
  int is_select = is_backend(loop, "select"), i, refused = 0, fired = 0;
  int sv[2];
  for (i = 0; i < N; i++) {
    SOCKET s = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    CHECK(s != INVALID_SOCKET);
    socks[i] = (int)s;
  }
  for (i = 0; i < N; i++) {
    int rc = evl_add_reader(loop, socks[i], count_io_cb, &fired);
    if (rc == EVL_ERANGE) {
      if (!refused)
        CHECK_EQ(i, 1023); /* 1023 sockets and the wake-up socket */
      refused++;
    } else {
      CHECK_EQ(rc, 0);
    }
  }
  CHECK_EQ(refused, is_select ? N - 1023 : 0);
  check_loop_works(loop);
  CHECK_EQ(fired, 0); /* unbound UDP sockets have nothing to read */
  /* A freed place can be used again. */
  CHECK_EQ(evl_remove_reader(loop, socks[0]), 1);
  make_socketpair(sv);
  reader_fires_once(loop, sv[0], sv[1]);
  for (i = 1; i < N; i++)
    CHECK_EQ(evl_remove_reader(loop, socks[i]), is_select ? i < 1023 : 1);
  test_close(loop);
  for (i = 0; i < N; i++)
    closesocket((SOCKET)socks[i]);
  close_pair(sv);
}
#endif

#define NPAIRS 200
static int g_pairs[NPAIRS][2];
static int g_pair_calls[NPAIRS];
static int g_pair_total;

static void pair_reader_cb(evl_loop *loop, evl_fd fd, void *arg) {
  int i = (int)((int *)arg - g_pair_calls);
  char c;
  (void)loop;
  CHECK_EQ(fd, g_pairs[i][0]);
  CHECK_EQ(test_recv((int)fd, &c, 1), 1);
  g_pair_calls[i]++;
  g_pair_total++;
}

TEST(two_hundred_socketpairs_each_reader_fires_once) {
  evl_loop *loop = test_open();
  int i;
  for (i = 0; i < NPAIRS; i++) {
    make_socketpair(g_pairs[i]);
    CHECK_EQ(
        evl_add_reader(loop, g_pairs[i][0], pair_reader_cb, &g_pair_calls[i]),
        0);
  }
  CHECK_EQ(evl_run_once(loop, 0), 0); /* nothing readable yet */
  for (i = 0; i < NPAIRS; i++)
    write_byte(g_pairs[i][1]);
  run_until_calls(loop, &g_pair_total, NULL, NPAIRS);
  CHECK_EQ(g_pair_total, NPAIRS);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_run_once(loop, 0.01), 0);
  for (i = 0; i < NPAIRS; i++)
    CHECK_EQ(g_pair_calls[i], 1);
  /* Remove every other reader: only the rest fire on a second write. */
  for (i = 0; i < NPAIRS; i += 2)
    CHECK_EQ(evl_remove_reader(loop, g_pairs[i][0]), 1);
  for (i = 0; i < NPAIRS; i++)
    write_byte(g_pairs[i][1]);
  run_until_calls(loop, &g_pair_total, NULL, NPAIRS + NPAIRS / 2);
  CHECK_EQ(evl_run_once(loop, 0.01), 0);
  for (i = 0; i < NPAIRS; i++)
    CHECK_EQ(g_pair_calls[i], i % 2 ? 2 : 1);
  for (i = 1; i < NPAIRS; i += 2)
    CHECK_EQ(evl_remove_reader(loop, g_pairs[i][0]), 1);
  test_close(loop);
  for (i = 0; i < NPAIRS; i++)
    close_pair(g_pairs[i]);
}

TESTS_BEGIN
T(reader_on_socketpair_fires_with_fd_and_arg)
T_POSIX(reader_on_pipe_fires,
        "no pipes can be watched (non_socket_handles_are_enotsup_on_windows)")
T(reader_removed_inside_its_callback_fires_once)
T(reader_and_writer_on_one_fd_both_fire)
T(reader_and_writer_fire_in_the_same_iteration)
T(reader_removed_by_earlier_callback_in_same_iteration_does_not_run)
T(adding_a_reader_again_replaces_the_callback)
T(removed_writer_stops_while_reader_goes_on_level_triggered)
T(bad_fds_and_null_callbacks_are_refused)
T_POSIX(regular_file_is_eperm_on_epoll_and_ready_elsewhere,
        "files cannot be watched (non_socket_handles_are_enotsup_on_windows)")
T_POSIX(fd_above_fd_setsize_is_erange_on_select_only,
        "no fd numbers or rlimits (select_refuses_sockets_beyond_fd_setsize_"
        "on_windows)")
#ifdef _WIN32
T(non_socket_handles_are_enotsup_on_windows)
T(select_refuses_sockets_beyond_fd_setsize_on_windows)
#endif
T(two_hundred_socketpairs_each_reader_fires_once)
TESTS_END
