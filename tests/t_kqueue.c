/* What the kqueue backend does its own way, checked on every backend where
   the behaviour is common: an fd number closed and reused, a watcher
   removed just before its fd is closed while a dup keeps the file open,
   coalesced wake-ups, child exits, the process's signal handler after the
   loop lets a signal go. On kqueue builds a kevent() wrapper also checks
   how: batched interest changes, one EVFILT_USER trigger per burst,
   EVFILT_PROC and EVFILT_SIGNAL registrations, the poll fallback. */
#define _GNU_SOURCE 1 /* RTLD_NEXT */
#include "test.h"

#ifdef EVLOOP_NO_PROCESS
TESTS_LEFT_OUT(
    "built with EVLOOP_NO_PROCESS: no signals and subprocesses (their "
    "kqueue filters are most of this file)")
#else

#ifdef _WIN32
/* Windows has no kqueue, and these checks use fds, dup() and fork(). */
TEST(kqueue_is_refused_on_windows) {
  evl_loop_config cfg;
  evl_loop *loop = NULL;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = EVL_BACKEND_KQUEUE;
  CHECK_EQ(evl_loop_new(&loop, &cfg), EVL_ENOTSUP);
  CHECK(loop == NULL);
  loop = test_open();
  CHECK(strcmp(evl_backend_name(loop), "kqueue") != 0);
  test_close(loop);
}

TESTS_BEGIN
T(kqueue_is_refused_on_windows)
T_SKIP(kqueue_and_fd_reuse_checks, "Windows: no kqueue; fds, dup and fork")
TESTS_END
#else

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>

/* ---- counting kevent() calls (kqueue builds) ---------------------------
   The test program's own kevent() takes the implementation's calls and
   hands them to the real one. Only where kevent() has this signature
   (NetBSD's takes size_t counts and is renamed). */
#if defined(EVLOOP_BACKEND_KQUEUE) &&                                          \
    (defined(EVFILT_LIBKQUEUE) || defined(__FreeBSD__) || defined(__APPLE__))
#define KQ_COUNT 1
#include <dlfcn.h>
#include <pthread.h>

typedef int (*kevent_fn)(int, const struct kevent *, int, struct kevent *, int,
                         const struct timespec *);
typedef struct kq_counts {
  int calls, waits;          /* all calls; calls with an event list */
  int proc_refused;          /* EVFILT_PROC registrations that failed */
  int triggers;              /* EVFILT_USER NOTE_TRIGGER changes */
  int changes, wait_changes; /* changes in all calls; in waits */
  int adds[3], deletes[3];   /* 0: READ/WRITE, 1: SIGNAL, 2: PROC */
} kq_counts;
static kq_counts g_kq;
static pthread_mutex_t g_kq_mu = PTHREAD_MUTEX_INITIALIZER; /* wakers too */

static int filter_kind(int filter) {
  return filter == EVFILT_SIGNAL ? 1 : filter == EVFILT_PROC ? 2 : 0;
}

int kevent(int kq, const struct kevent *ch, int nch, struct kevent *ev, int nev,
           const struct timespec *ts) {
  static kevent_fn real;
  kevent_fn fn;
  int i;
  pthread_mutex_lock(&g_kq_mu);
  if (!real) {
    void *p = dlsym(RTLD_NEXT, "kevent");
    if (!p)
      abort();
    memcpy(&real, &p, sizeof p);
  }
  fn = real;
  g_kq.calls++;
  g_kq.changes += nch;
  if (nev > 0 && !(nch > 0 && (ch[0].flags & EV_RECEIPT))) {
    g_kq.waits++;
    g_kq.wait_changes += nch;
  }
  for (i = 0; i < nch; i++) {
    if (ch[i].filter == EVFILT_USER && (ch[i].fflags & NOTE_TRIGGER))
      g_kq.triggers++;
    if (ch[i].flags & EV_ADD)
      g_kq.adds[filter_kind(ch[i].filter)]++;
    if (ch[i].flags & EV_DELETE)
      g_kq.deletes[filter_kind(ch[i].filter)]++;
  }
  pthread_mutex_unlock(&g_kq_mu);
  i = fn(kq, ch, nch, ev, nev, ts);
  if (i < 0 && nch == 1 && ch[0].filter == EVFILT_PROC &&
      (ch[0].flags & EV_ADD)) {
    pthread_mutex_lock(&g_kq_mu);
    g_kq.proc_refused++;
    pthread_mutex_unlock(&g_kq_mu);
  }
  return i;
}
#endif

static int on_kqueue(evl_loop *loop) {
  return strcmp(evl_backend_name(loop), "kqueue") == 0;
}

/* Says why the kqueue-only half of a test does not run here. */
static int kq_counting(evl_loop *loop) {
  if (!on_kqueue(loop)) {
    printf("  note: %s loop: the kqueue-only checks do not apply\n",
           evl_backend_name(loop));
    return 0;
  }
#ifdef KQ_COUNT
  memset(&g_kq, 0, sizeof g_kq);
  return 1;
#else
  printf("  note: kevent() cannot be counted on this system\n");
  return 0;
#endif
}

typedef struct io_rec {
  int calls;
  evl_fd fd;
} io_rec;

static void reader_cb(evl_loop *loop, evl_fd fd, void *arg) {
  io_rec *r = (io_rec *)arg;
  char buf[16];
  (void)loop;
  r->calls++;
  r->fd = fd;
  CHECK(read((int)fd, buf, sizeof buf) > 0);
}
static void writer_cb(evl_loop *loop, evl_fd fd, void *arg) {
  io_rec *r = (io_rec *)arg;
  (void)loop;
  r->calls++;
  r->fd = fd;
}

static void run_until(evl_loop *loop, const int *what, int n) {
  double end = test_now() + 10;
  while (*what < n && test_now() < end)
    CHECK(evl_run_once(loop, 0.05) >= 0);
  CHECK(*what >= n);
}

/* ---- fds closed and reused ------------------------------------------ */

/* The watcher goes, the fd is closed, a new socketpair takes the same
   numbers: watching the new one works, and only the new callback runs. */
TEST(closed_fd_number_is_reused) {
  evl_loop *loop = test_open();
  io_rec old_r, new_r;
  int a[2], b[2], round;
  memset(&old_r, 0, sizeof old_r);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
  CHECK_EQ(evl_add_reader(loop, a[0], reader_cb, &old_r), 0);
  CHECK_EQ(evl_add_writer(loop, a[0], writer_cb, &old_r), 0);
  CHECK_EQ(write(a[1], "x", 1), 1);
  run_until(loop, &old_r.calls, 2);
  for (round = 0; round < 3; round++) {
    CHECK_EQ(evl_remove_writer(loop, a[0]), 1);
    CHECK_EQ(evl_remove_reader(loop, a[0]), 1);
    close(a[0]); /* no loop iteration in between */
    close(a[1]);
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    CHECK_EQ(b[0], a[0]); /* the same numbers */
    memset(&new_r, 0, sizeof new_r);
    old_r.calls = 0;
    CHECK_EQ(evl_add_reader(loop, b[0], reader_cb, &new_r), 0);
    CHECK_EQ(write(b[1], "y", 1), 1);
    run_until(loop, &new_r.calls, 1);
    CHECK_EQ(new_r.fd, b[0]);
    CHECK_EQ(old_r.calls, 0);
    CHECK_EQ(evl_add_writer(loop, b[0], writer_cb, &new_r), 0);
    a[0] = b[0];
    a[1] = b[1];
  }
  CHECK_EQ(evl_remove_writer(loop, a[0]), 1);
  CHECK_EQ(evl_remove_reader(loop, a[0]), 1);
  close(a[0]);
  close(a[1]);
  test_close(loop);
}

/* A watcher removed right before its fd is closed, while a dup keeps the
   file open and readable: the registration must be gone before the close
   (epoll under libkqueue would keep reporting the open file). The idle
   loop then sleeps its whole timeout. */
TEST(removed_then_closed_while_a_dup_stays_open) {
  evl_loop *loop = test_open();
  io_rec r;
  int sv[2], d, i;
  double t0;
  memset(&r, 0, sizeof r);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  d = dup(sv[0]);
  CHECK(d >= 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  CHECK_EQ(evl_run_once(loop, 0), 0); /* registered for real */
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  close(sv[0]);
  CHECK_EQ(write(sv[1], "x", 1), 1); /* d is readable now */
  for (i = 0; i < 3; i++) {
    t0 = test_now();
    CHECK_EQ(evl_run_once(loop, 0.05), 0);
    CHECK(test_now() - t0 >= 0.045);
  }
  CHECK_EQ(r.calls, 0);
  test_close(loop);
  close(d);
  close(sv[1]);
}

/* The library's own close path (a transport) on a reused number. */
static int g_lost;
static void tr_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  (void)user;
  g_lost++;
}
TEST(transport_closed_and_its_number_reused) {
  static const evl_protocol proto = {NULL, NULL, NULL, tr_lost, NULL,
                                     NULL, NULL, NULL, NULL,    NULL};
  evl_loop *loop = test_open();
  io_rec r;
  int sv[2], b[2], fd;
  evl_future *f;
  memset(&r, 0, sizeof r);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  fd = sv[0];
  f = evl_connect_read_pipe(loop, &proto, NULL, sv[0]);
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  evl_transport_close((evl_transport *)evl_future_result(f));
  evl_future_release(f);
  run_until(loop, &g_lost, 1);
  close(sv[1]);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
  CHECK_EQ(b[0], fd); /* the transport closed it; the number is free */
  CHECK_EQ(evl_add_reader(loop, b[0], reader_cb, &r), 0);
  CHECK_EQ(write(b[1], "z", 1), 1);
  run_until(loop, &r.calls, 1);
  CHECK_EQ(evl_remove_reader(loop, b[0]), 1);
  close(b[0]);
  close(b[1]);
  test_close(loop);
}

/* ---- interest changes ----------------------------------------------- */

/* Adding a second filter waits for the next wait; a change undone before
   it costs nothing; the first filter and the last removal go at once. */
TEST(interest_changes_are_batched) {
  evl_loop *loop = test_open();
  io_rec r, w;
  int sv[2];
  memset(&r, 0, sizeof r);
  memset(&w, 0, sizeof w);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  if (!kq_counting(loop)) {
    close(sv[0]);
    close(sv[1]);
    test_close(loop);
    return;
  }
#ifdef KQ_COUNT
  CHECK_EQ(evl_add_reader(loop, sv[0], reader_cb, &r), 0);
  CHECK_EQ(g_kq.calls, 1); /* the first filter: at once */
  CHECK_EQ(g_kq.adds[0], 1);
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  CHECK_EQ(g_kq.calls, 1); /* queued, and undone and redone in the queue */
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(w.calls, 1); /* the socket is writable */
  CHECK_EQ(g_kq.calls, 2);
  CHECK_EQ(g_kq.wait_changes, 1); /* one EV_ADD went in with the wait */
  CHECK_EQ(g_kq.adds[0], 2);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(evl_add_writer(loop, sv[0], writer_cb, &w), 0);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(g_kq.calls, 2);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(g_kq.calls, 3);
  CHECK_EQ(g_kq.wait_changes, 2); /* the EV_DELETE, once */
  CHECK_EQ(g_kq.deletes[0], 1);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1); /* the last one: at once */
  CHECK_EQ(g_kq.calls, 4);
  CHECK_EQ(g_kq.deletes[0], 2);
  CHECK_EQ(w.calls, 1);
  CHECK_EQ(r.calls, 0);
#endif
  close(sv[0]);
  close(sv[1]);
  test_close(loop);
}

/* A bad fd is refused by add_reader itself, as epoll_ctl refuses it. */
TEST(bad_fd_is_refused_at_once) {
  evl_loop *loop = test_open();
  io_rec r;
  int sv[2], fd;
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  fd = sv[0];
  close(sv[0]);
  close(sv[1]);
  CHECK_EQ(evl_add_reader(loop, fd, reader_cb, &r), EVL_EBADF);
  CHECK_EQ(evl_add_writer(loop, fd, writer_cb, &r), EVL_EBADF);
  CHECK_EQ(evl_remove_reader(loop, fd), 0);
  CHECK(evl_call_soon(loop, test_count_cb, &r.calls) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  test_close(loop);
}

/* ---- wake-ups --------------------------------------------------------- */

/* A burst of call_soon_threadsafe costs one wake-up, and the wake-up is
   consumed: the next idle iteration sleeps. */
TEST(wakeups_coalesce) {
  evl_loop *loop = test_open();
  int ran = 0, i, counting = kq_counting(loop);
  double t0;
  for (i = 0; i < 100; i++)
    CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ran), 0);
#ifdef KQ_COUNT
  if (counting) {
#if defined(EVFILT_USER) &&                                                    \
    (!defined(EVLOOP_HAVE_EVFILT_USER) || EVLOOP_HAVE_EVFILT_USER)
    CHECK_EQ(g_kq.triggers, 1);
#else
    CHECK_EQ(g_kq.triggers, 0); /* the self-pipe instead */
#endif
  }
#endif
  (void)counting;
  t0 = test_now();
  while (ran < 100 && test_now() - t0 < 5)
    CHECK(evl_run_once(loop, 1.0) >= 0);
  CHECK_EQ(ran, 100);
  t0 = test_now();
  CHECK_EQ(evl_run_once(loop, 0.05), 0);
  CHECK(test_now() - t0 >= 0.045);
  /* and the next burst wakes the loop again */
  for (i = 0; i < 10; i++)
    CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ran), 0);
  t0 = test_now();
  while (ran < 110 && test_now() - t0 < 5)
    CHECK(evl_run_once(loop, 5.0) >= 0);
  CHECK_EQ(ran, 110);
  CHECK(test_now() - t0 < 4.0);
  test_close(loop);
}

/* ---- child exits ------------------------------------------------------ */

typedef struct child {
  int exited, lost, rc, pid;
} child;
static void child_exited(evl_subprocess *p, void *user) {
  child *c = (child *)user;
  c->exited++;
  c->pid = evl_subprocess_get_pid(p);
  CHECK_EQ(evl_subprocess_get_returncode(p, &c->rc), 1);
}
static void child_lost(evl_subprocess *p, int err, void *user) {
  (void)p;
  (void)err;
  ((child *)user)->lost++;
}

/* The exit is seen (EVFILT_PROC NOTE_EXIT on kqueue, without SIGCHLD),
   the child is reaped, its status is the returncode. */
TEST(child_exit_is_seen_and_reaped) {
  static const evl_subprocess_protocol proto = {NULL, NULL, NULL, child_exited,
                                                child_lost};
  const char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
  evl_subprocess_options opts;
  evl_loop *loop = test_open();
  int counting = kq_counting(loop);
  struct sigaction sa;
  evl_future *f;
  child c;
  memset(&c, 0, sizeof c);
  memset(&opts, 0, sizeof opts);
  opts.stdin_mode = opts.stdout_mode = opts.stderr_mode = EVL_STDIO_DEVNULL;
  f = evl_subprocess_exec(loop, &proto, &c, argv, &opts);
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  evl_future_release(f);
  run_until(loop, &c.lost, 1);
  CHECK_EQ(c.exited, 1);
  CHECK_EQ(c.rc, 3);
  CHECK(c.pid > 0);
  errno = 0;
  CHECK_EQ(waitpid(c.pid, NULL, WNOHANG), -1); /* reaped */
  CHECK_EQ(errno, ECHILD);
#ifdef KQ_COUNT
  if (counting && g_kq.proc_refused) {
    /* libkqueue needs pidfd_open, which valgrind does not know */
    printf("  note: EVFILT_PROC refused here: exits came another way\n");
    counting = 0;
  }
  if (counting) {
    CHECK_EQ(g_kq.adds[2], 1); /* EVFILT_PROC */
    CHECK_EQ(g_kq.adds[1], 0); /* no EVFILT_SIGNAL (SIGCHLD) */
  }
#endif
  if (counting) {
    CHECK_EQ(sigaction(SIGCHLD, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_DFL);
  }
  test_close(loop);
}

/* ---- signals ---------------------------------------------------------- */

static volatile sig_atomic_t g_own_calls;
static void own_handler(int signum) {
  (void)signum;
  g_own_calls++;
}
static void on_signal(evl_loop *loop, int signum, void *arg) {
  (void)loop;
  (void)signum;
  (*(int *)arg)++;
}

/* While the loop watches SIGUSR1 its callback runs instead of the
   process's handler; after, the process's handler runs again at once
   (under libkqueue: the signal is unblocked again). */
TEST(process_handler_works_again_after_the_loop) {
  evl_loop *loop = test_open();
  int counting = kq_counting(loop), calls = 0;
  struct sigaction mine;
  sigset_t mask;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = own_handler;
  sigemptyset(&mine.sa_mask);
  CHECK_EQ(sigaction(SIGUSR1, &mine, NULL), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &calls), 0);
  /* to the process: libkqueue does not see a signal sent to one thread */
  CHECK_EQ(kill(getpid(), SIGUSR1), 0);
  run_until(loop, &calls, 1);
  CHECK_EQ(g_own_calls, 0);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  CHECK_EQ(sigprocmask(SIG_BLOCK, NULL, &mask), 0);
  CHECK(!sigismember(&mask, SIGUSR1));
  CHECK_EQ(raise(SIGUSR1), 0);
  CHECK_EQ(g_own_calls, 1);
  CHECK_EQ(calls, 1);
  if (counting) {
#ifdef KQ_COUNT
    CHECK_EQ(g_kq.adds[1], 1); /* EVFILT_SIGNAL */
    CHECK_EQ(g_kq.deletes[1], 1);
#endif
  }
  test_close(loop);
  signal(SIGUSR1, SIG_DFL);
}

/* The executor's threads were started before the handler was added: a
   signal to the process must still reach the loop, not a worker (under
   libkqueue a worker that took it would lose it). */
static int work_nothing(void *arg, void **result) {
  (void)arg;
  *result = NULL;
  return 0;
}
TEST(signal_reaches_the_loop_after_executor_threads_started) {
  evl_loop *loop = test_open();
  int calls = 0, i;
  for (i = 0; i < 8; i++) {
    evl_future *f = evl_run_in_executor(loop, NULL, work_nothing, NULL, NULL);
    CHECK(f != NULL);
    CHECK_EQ(evl_run_until_complete(loop, f), 0);
    evl_future_release(f);
  }
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR2, on_signal, &calls), 0);
  for (i = 1; i <= 5; i++) {
    CHECK_EQ(kill(getpid(), SIGUSR2), 0);
    run_until(loop, &calls, i);
  }
  CHECK_EQ(calls, 5);
  test_close(loop);
}

/* ---- the backend fd and the poll fallback ------------------------------ */

TEST(backend_fd_is_a_kqueue) {
  evl_loop *loop = test_open();
  if (!on_kqueue(loop)) {
    printf("  note: not a kqueue loop\n");
    test_close(loop);
    return;
  }
#ifdef EVLOOP_BACKEND_KQUEUE
  {
    static const struct timespec zero = {0, 0};
    struct kevent ev;
    int kq = (int)evl_backend_fd(loop);
    CHECK(kq >= 0);
    CHECK_EQ(kevent(kq, NULL, 0, &ev, 1, &zero), 0); /* a kqueue, idle */
    CHECK(fcntl(kq, F_GETFD) & FD_CLOEXEC);
  }
#endif
  test_close(loop);
}

#if defined(EVFILT_LIBKQUEUE) && defined(__linux__) && defined(__x86_64__) &&  \
    defined(__GLIBC__)
/* libkqueue builds its kqueues on epoll: refusing epoll_create makes
   kqueue() fail, as a sandbox would. */
#include "seccomp_test.h"
#define HAVE_REFUSE_KQUEUE 1
#endif

TEST(refused_kqueue_falls_back_to_poll) {
#ifdef HAVE_REFUSE_KQUEUE
  check_refused_backend_falls_back("poll (kqueue unavailable)",
                                   EVL_BACKEND_KQUEUE, 0);
#else
  printf("  (needs a libkqueue build on Linux x86-64: kqueue() cannot be "
         "made to fail here)\n");
#endif
}

TESTS_BEGIN
T(closed_fd_number_is_reused)
T(removed_then_closed_while_a_dup_stays_open)
T(transport_closed_and_its_number_reused)
T(interest_changes_are_batched)
T(bad_fd_is_refused_at_once)
T(wakeups_coalesce)
T(child_exit_is_seen_and_reaped)
T(process_handler_works_again_after_the_loop)
T(signal_reaches_the_loop_after_executor_threads_started)
T(backend_fd_is_a_kqueue)
T(refused_kqueue_falls_back_to_poll)
TESTS_END
#endif /* _WIN32 */
#endif /* EVLOOP_NO_PROCESS */
