/* A small test runner for evloop.h's tests: each test runs in a child
   process (so one crash or hang is one failure), under a 60 s alarm.
   A test file ends with TESTS_BEGIN T(name) ... TESTS_END, which defines
   main(). The run prints one line per test and ends with
   "N passed, N failed". Run one test in-process: ./t_foo name            */
#ifndef EVL_TEST_H
#define EVL_TEST_H

/* clock_gettime, pthreads, setenv, AI_* under strict -std=c99. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "../evloop.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct test_case {
  const char *name;
  void (*fn)(void);
} test_case;

#define TEST(name) static void name(void)
#define T(name) {#name, name},
#define TESTS_BEGIN static const test_case test_cases_[] = {
#define TESTS_END                                                              \
  { NULL, NULL }                                                               \
  }                                                                            \
  ;                                                                            \
  int main(int argc, char **argv) {                                            \
    return test_main(test_cases_, argc, argv);                                 \
  }

/* Fails the current test: prints where and why, exits the child. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      test_fail_(__FILE__, __LINE__, "CHECK(%s)", #cond);                      \
  } while (0)
#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_)                                                              \
      test_fail_(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b, a_,    \
                 b_);                                                          \
  } while (0)

/* Which backend the tests run on: EVLOOP_TEST_BACKEND=select|poll|epoll,
   default: the build's default. */
static evl_backend test_backend(void) {
  const char *b = getenv("EVLOOP_TEST_BACKEND");
  if (!b || !*b)
    return EVL_BACKEND_DEFAULT;
  if (!strcmp(b, "select"))
    return EVL_BACKEND_SELECT;
  if (!strcmp(b, "poll"))
    return EVL_BACKEND_POLL;
  if (!strcmp(b, "epoll"))
    return EVL_BACKEND_EPOLL;
  if (!strcmp(b, "kqueue"))
    return EVL_BACKEND_KQUEUE;
  if (!strcmp(b, "iocp"))
    return EVL_BACKEND_IOCP;
  return EVL_BACKEND_DEFAULT;
}

/* A new loop on the backend under test; fails the test if it cannot. */
static evl_loop *test_loop_with(evl_loop_config *cfg) {
  evl_loop *loop = NULL;
  evl_loop_config def;
  int rc;
  if (!cfg) {
    memset(&def, 0, sizeof def);
    cfg = &def;
  }
  if (cfg->backend == EVL_BACKEND_DEFAULT)
    cfg->backend = test_backend();
  rc = evl_loop_new(&loop, cfg);
  if (rc != 0 || !loop) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(rc));
    exit(1);
  }
  return loop;
}
static evl_loop *test_loop(void) {
  return test_loop_with(NULL);
}

/* Set by `make test-cross`: the binary runs under qemu-user, whose few
   known limits some tests work around, always saying so. */
static inline int under_qemu(void) {
  const char *q = getenv("EVL_TEST_QEMU");
  return q && *q && strcmp(q, "0") != 0;
}

/* Monotonic wall time in seconds, independent of any loop's clock. */
static inline double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
/* Callbacks many tests need: count into an int; count (if given) and stop. */
static inline void test_count_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (*(int *)arg)++;
}
static inline void test_stop_cb(evl_loop *loop, void *arg) {
  if (arg)
    (*(int *)arg)++;
  evl_stop(loop);
}

static void test_fail_(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4), noreturn))
#endif
    ;

#include <stdarg.h>
static void test_fail_(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "  %s:%d: failed: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  exit(1);
}

static int test_main(const test_case *cases, int argc, char **argv) {
  int passed = 0, failed = 0, i;
  const char *backend = getenv("EVLOOP_TEST_BACKEND");
  if (argc > 1) { /* run the named tests in this process */
    int a;
    for (a = 1; a < argc; a++) {
      for (i = 0; cases[i].name; i++)
        if (!strcmp(cases[i].name, argv[a]))
          break;
      if (!cases[i].name) {
        fprintf(stderr, "no test named %s\n", argv[a]);
        return 2;
      }
      cases[i].fn();
      printf("ok %s\n", cases[i].name);
    }
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  for (i = 0; cases[i].name; i++) {
    pid_t pid;
    int status = 0;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
      alarm(60);
      cases[i].fn();
      exit(0); /* not _exit: LeakSanitizer runs at exit */
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      printf("FAIL %s: could not run\n", cases[i].name);
      failed++;
      continue;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      printf("ok   %s\n", cases[i].name);
      passed++;
    } else {
      if (WIFSIGNALED(status))
        printf("FAIL %s: killed by signal %d%s\n", cases[i].name,
               WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
      else
        printf("FAIL %s: exit status %d\n", cases[i].name, WEXITSTATUS(status));
      failed++;
    }
  }
  printf("%s [%s]: %d passed, %d failed\n", argv[0],
         backend && *backend ? backend : "default", passed, failed);
  return failed ? 1 : 0;
}

#endif
