/* Unix signals: handlers run in the loop, bursts coalesce but are never
   lost, several signals and several loops in several threads, the previous
   disposition comes back, bad numbers are errors. Windows has SIGINT and
   SIGBREAK only (console Ctrl-C and Ctrl-Break): its own tests at the end. */
#include "test.h"

#ifndef EVLOOP_NO_PROCESS
#include <pthread.h>
#include <signal.h>

typedef struct sig_count {
  int calls, last_signum;
  int in_loop; /* evl_loop_is_running() inside the callback */
} sig_count;

static void on_signal(evl_loop *loop, int signum, void *arg) {
  sig_count *c = (sig_count *)arg;
  c->calls++;
  c->last_signum = signum;
  c->in_loop = evl_loop_is_running(loop);
}

#ifndef _WIN32
/* A signal to this process from this thread: raise(). libkqueue does not
   see a signal sent to one thread (its signalfd reads the process's queue
   and its own thread's), so there the signal goes to the process. */
static int send_self(int signum) {
#ifdef EVFILT_LIBKQUEUE
  static int said;
  if (!said++)
    printf("  note: libkqueue misses raise(): kill(getpid()) instead\n");
  return kill(getpid(), signum);
#else
  return raise(signum);
#endif
}

static void run_until_calls(evl_loop *loop, const int *calls, int n) {
  double end = test_now() + 10;
  while (*calls < n && test_now() < end)
    CHECK(evl_run_once(loop, 0.05) >= 0);
  CHECK(*calls >= n);
}

TEST(handler_runs_in_the_loop) {
  evl_loop *loop = test_open();
  sig_count c = {0, 0, 0};
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &c), 0);
  CHECK_EQ(send_self(SIGUSR1), 0);
  CHECK_EQ(c.calls, 0); /* not in signal context, not inline */
  run_until_calls(loop, &c.calls, 1);
  CHECK_EQ(c.calls, 1);
  CHECK_EQ(c.last_signum, SIGUSR1);
  CHECK_EQ(c.in_loop, 1);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 0);
  test_close(loop);
}

/* A burst of one signal: at least one call, and the loop goes on. */
TEST(burst_is_never_lost_or_hung) {
  evl_loop *loop = test_open();
  sig_count c = {0, 0, 0};
  int i, before;
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &c), 0);
  for (i = 0; i < 200; i++)
    CHECK_EQ(kill(getpid(), SIGUSR1), 0);
  run_until_calls(loop, &c.calls, 1);
  CHECK(c.calls >= 1 && c.calls <= 200);
  /* one more after the burst arrives too */
  before = c.calls;
  CHECK_EQ(send_self(SIGUSR1), 0);
  run_until_calls(loop, &c.calls, before + 1);
  CHECK(evl_call_soon(loop, test_count_cb, &i) > 0);
  test_close(loop);
}

TEST(several_signals_on_one_loop) {
  evl_loop *loop = test_open();
  sig_count a = {0, 0, 0}, b = {0, 0, 0};
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &a), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR2, on_signal, &b), 0);
  CHECK_EQ(send_self(SIGUSR2), 0);
  run_until_calls(loop, &b.calls, 1);
  CHECK_EQ(a.calls, 0);
  CHECK_EQ(b.last_signum, SIGUSR2);
  CHECK_EQ(send_self(SIGUSR1), 0);
  run_until_calls(loop, &a.calls, 1);
  CHECK_EQ(b.calls, 1);
  /* adding again replaces the callback */
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &b), 0);
  CHECK_EQ(send_self(SIGUSR1), 0);
  run_until_calls(loop, &b.calls, 2);
  CHECK_EQ(a.calls, 1);
  test_close(loop);
}

/* Several loops in several threads: a process-directed signal reaches the
   handler of every loop. */
#define NTHREADS 4
typedef struct thread_loop {
  evl_loop *loop;
  sig_count c;
  int ready, done;
  pthread_mutex_t *mu;
} thread_loop;

static void *loop_thread(void *p) {
  thread_loop *tl = (thread_loop *)p;
  double end;
  tl->loop = test_open();
  CHECK_EQ(evl_add_signal_handler(tl->loop, SIGUSR1, on_signal, &tl->c), 0);
  pthread_mutex_lock(tl->mu);
  tl->ready = 1;
  pthread_mutex_unlock(tl->mu);
  end = test_now() + 10;
  while (test_now() < end) {
    int calls;
    CHECK(evl_run_once(tl->loop, 0.02) >= 0);
    calls = tl->c.calls;
    if (calls >= 1)
      break;
  }
  evl_loop_free(tl->loop);
  pthread_mutex_lock(tl->mu);
  tl->done = 1;
  pthread_mutex_unlock(tl->mu);
  return NULL;
}

TEST(each_loop_in_each_thread_gets_its_own) {
  pthread_t th[NTHREADS];
  thread_loop tl[NTHREADS];
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  int i, ready = 0;
  double end = test_now() + 10;
  memset(tl, 0, sizeof tl);
#ifdef EVFILT_LIBKQUEUE
  { /* libkqueue: every thread must block the signal, this one too */
    sigset_t usr1;
    printf("  note: libkqueue needs SIGUSR1 blocked in the main thread\n");
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, &usr1, NULL), 0);
  }
#endif
  for (i = 0; i < NTHREADS; i++) {
    tl[i].mu = &mu;
    CHECK_EQ(pthread_create(&th[i], NULL, loop_thread, &tl[i]), 0);
  }
  while (ready < NTHREADS && test_now() < end) {
    ready = 0;
    pthread_mutex_lock(&mu);
    for (i = 0; i < NTHREADS; i++)
      ready += tl[i].ready;
    pthread_mutex_unlock(&mu);
    if (ready < NTHREADS)
      test_sleep_ms(1); /* no spinning: valgrind runs one thread at a time */
  }
  CHECK_EQ(ready, NTHREADS);
#if defined(__i386__)
  /* qemu-i386 keeps one GDT for all threads: each pthread_create rewrites
     the shared TLS entry, and a signal return reloads %gs from it, so a
     handler run by any thread but the newest leaves that thread with the
     newest one's TLS (pthread_join then fails with EDEADLK). There, the
     newest thread takes the signal; every loop must still get it. */
  if (under_qemu()) {
    printf("  (qemu-i386: signal sent to the newest thread, not the "
           "process: see t_signal.c)\n");
    CHECK_EQ(pthread_kill(th[NTHREADS - 1], SIGUSR1), 0);
  } else
#endif
    CHECK_EQ(kill(getpid(), SIGUSR1), 0);
  for (i = 0; i < NTHREADS; i++)
    CHECK_EQ(pthread_join(th[i], NULL), 0);
  for (i = 0; i < NTHREADS; i++) {
    CHECK_EQ(tl[i].c.calls, 1);
    CHECK_EQ(tl[i].c.last_signum, SIGUSR1);
  }
}

static volatile sig_atomic_t g_own_handler_calls;
static void own_handler(int signum) {
  (void)signum;
  g_own_handler_calls++;
}

/* The disposition the process had comes back with the last handler, and
   when the loop closes. */
TEST(previous_disposition_is_restored) {
  evl_loop *a = test_open(), *b = test_open();
  struct sigaction mine, now;
  sig_count ca = {0, 0, 0}, cb = {0, 0, 0};
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = own_handler;
  sigemptyset(&mine.sa_mask);
  CHECK_EQ(sigaction(SIGUSR2, &mine, NULL), 0);
  CHECK_EQ(evl_add_signal_handler(a, SIGUSR2, on_signal, &ca), 0);
  CHECK_EQ(evl_add_signal_handler(b, SIGUSR2, on_signal, &cb), 0);
  CHECK_EQ(sigaction(SIGUSR2, NULL, &now), 0);
  CHECK(now.sa_handler != own_handler);
  CHECK_EQ(send_self(SIGUSR2), 0);
  run_until_calls(a, &ca.calls, 1);
  run_until_calls(b, &cb.calls, 1);
  CHECK_EQ(g_own_handler_calls, 0);
  CHECK_EQ(evl_remove_signal_handler(a, SIGUSR2), 1);
  CHECK_EQ(sigaction(SIGUSR2, NULL, &now), 0);
  CHECK(now.sa_handler != own_handler); /* b still watches it */
  test_close(b);                        /* closing removes b's handler */
  CHECK_EQ(sigaction(SIGUSR2, NULL, &now), 0);
  CHECK(now.sa_handler == own_handler);
  CHECK_EQ(raise(SIGUSR2), 0); /* the process's handler, at once */
  CHECK_EQ(g_own_handler_calls, 1);
  test_close(a);
  signal(SIGUSR2, SIG_DFL);
}

TEST(bad_signals_are_errors) {
  evl_loop *loop = test_open();
  sig_count c = {0, 0, 0};
  CHECK_EQ(evl_add_signal_handler(loop, SIGKILL, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, SIGSTOP, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, 0, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, -3, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, 100000, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, NULL, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(NULL, SIGUSR1, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGKILL), 0);
  CHECK_EQ(evl_remove_signal_handler(loop, 100000), EVL_EINVAL); /* as add */
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, on_signal, &c), EVL_ECLOSED);
  test_close(loop);
}

/* The signal's callback may remove its own handler or close the loop's
   other handlers safely. */
static void remove_self(evl_loop *loop, int signum, void *arg) {
  (*(int *)arg)++;
  CHECK_EQ(evl_remove_signal_handler(loop, signum), 1);
}

TEST(handler_removes_itself) {
  evl_loop *loop = test_open();
  int calls = 0;
  struct sigaction now;
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, remove_self, &calls), 0);
  CHECK_EQ(send_self(SIGUSR1), 0);
  run_until_calls(loop, &calls, 1);
  CHECK_EQ(sigaction(SIGUSR1, NULL, &now), 0);
  CHECK(now.sa_handler == SIG_DFL); /* the test process's disposition */
  test_close(loop);
}

#else
/* Windows: SIGINT and SIGBREAK through a console control handler; any
   other number is EVL_EINVAL. */
TEST(windows_has_sigint_and_sigbreak_only) {
  evl_loop *loop = test_open(), *other = test_open();
  sig_count c = {0, 0, 0};
  static const int bad[] = {0,       -3,     100000, SIGTERM,         SIGABRT,
                            SIGSEGV, SIGFPE, SIGILL, 9 /* SIGKILL */, 10,
                            12};
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_EQ(evl_add_signal_handler(loop, bad[i], on_signal, &c), EVL_EINVAL);
    CHECK_EQ(evl_remove_signal_handler(loop, bad[i]), EVL_EINVAL); /* as add */
  }
  CHECK_EQ(evl_add_signal_handler(loop, SIGINT, NULL, &c), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(NULL, SIGINT, on_signal, &c), EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGINT), 0); /* none yet */
  CHECK_EQ(evl_add_signal_handler(loop, SIGINT, on_signal, &c), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGINT, on_signal, &c), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGBREAK, on_signal, &c), 0);
  CHECK_EQ(evl_add_signal_handler(other, SIGINT, on_signal, &c), 0);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGINT), 1);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGINT), 0);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGBREAK), 1);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGBREAK), 0);
  /* a loop closed with a handler still registered */
  CHECK_EQ(evl_loop_close(other), 0);
  CHECK_EQ(evl_remove_signal_handler(other, SIGINT), 0);
  CHECK_EQ(evl_add_signal_handler(other, SIGINT, on_signal, &c), EVL_ECLOSED);
  test_close(other);
  CHECK(evl_call_soon(loop, test_count_cb, &c.calls) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(c.calls, 1); /* the count callback, no signal */
  test_close(loop);
}

/* A Ctrl-C reaches the SIGINT handler of each loop that has one, in the
   loop. It has to come from outside: GenerateConsoleCtrlEvent would hit
   the whole console (the runner too), and wine has no console. wine runs
   the console control handlers when its process gets a Unix SIGINT, so
   tests/run_windows.sh runs this test on its own with
   EVL_TEST_SIGINT_FROM_OUTSIDE=1 and sends the kill -INT once it prints
   "ready for SIGINT". */
TEST(ctrl_c_from_outside_runs_the_sigint_handlers) {
  evl_loop *loop, *other;
  sig_count c = {0, 0, 0}, o = {0, 0, 0}, brk = {0, 0, 0};
  double end;
  if (!getenv("EVL_TEST_SIGINT_FROM_OUTSIDE"))
    SKIP("needs a Ctrl-C from outside: tests/run_windows.sh runs it on its "
         "own and sends one (kill -INT to the wine process)");
  loop = test_open();
  other = test_open();
  CHECK_EQ(evl_add_signal_handler(loop, SIGINT, on_signal, &c), 0);
  CHECK_EQ(evl_add_signal_handler(loop, SIGBREAK, on_signal, &brk), 0);
  CHECK_EQ(evl_add_signal_handler(other, SIGINT, on_signal, &o), 0);
  printf("ready for SIGINT\n");
  fflush(stdout);
  end = test_now() + 30;
  while ((c.calls < 1 || o.calls < 1) && test_now() < end) {
    CHECK(evl_run_once(loop, 0.02) >= 0);
    CHECK(evl_run_once(other, 0.02) >= 0);
  }
  CHECK_EQ(c.calls, 1);
  CHECK_EQ(c.last_signum, SIGINT);
  CHECK_EQ(c.in_loop, 1);
  CHECK_EQ(o.calls, 1);
  CHECK_EQ(o.last_signum, SIGINT);
  CHECK_EQ(brk.calls, 0);
  test_close(other);
  test_close(loop);
}
#endif

TESTS_BEGIN
#define NO_UNIX_SIGNALS "SIGINT and SIGBREAK (console events) only"
T_POSIX(handler_runs_in_the_loop, NO_UNIX_SIGNALS)
T_POSIX(burst_is_never_lost_or_hung, NO_UNIX_SIGNALS)
T_POSIX(several_signals_on_one_loop, NO_UNIX_SIGNALS)
T_POSIX(each_loop_in_each_thread_gets_its_own, NO_UNIX_SIGNALS)
T_POSIX(previous_disposition_is_restored, NO_UNIX_SIGNALS)
T_POSIX(bad_signals_are_errors, NO_UNIX_SIGNALS)
T_POSIX(handler_removes_itself, NO_UNIX_SIGNALS)
#ifdef _WIN32
T(windows_has_sigint_and_sigbreak_only)
T(ctrl_c_from_outside_runs_the_sigint_handlers)
#endif
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_PROCESS: no signal handlers")
#endif
