/* API contracts that cut across areas: bad arguments to functions that
   return futures give a future failing with EVL_EINVAL (NULL is kept for a
   closed loop), EVL_AWAIT on NULL fails the task, release(NULL) is a no-op. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <errno.h>
#include <math.h>
#include <time.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

static void await_null_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, NULL);
  EVL_ASYNC_RETURN(t, (void *)1); /* never reached */
  EVL_ASYNC_END(t);
}

static int never_run(void *arg, void **result) {
  (void)arg;
  (void)result;
  return 0;
}

TEST(bad_sleep_delay_gives_einval_future) {
  evl_loop *loop = test_open();
  evl_future *f = evl_sleep(loop, NAN, NULL);
  CHECK(f != NULL);
  CHECK(evl_future_done(f));
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  f = evl_sleep(loop, INFINITY, NULL);
  CHECK(f != NULL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  test_close(loop);
}

TEST(gather_of_null_or_foreign_futures_gives_einval_future) {
  evl_loop *loop = test_open(), *other = test_open();
  evl_future *mine = evl_future_new(loop), *theirs = evl_future_new(other);
  evl_future *futs[2], *g;
  futs[0] = mine;
  futs[1] = theirs;
  g = evl_gather(loop, futs, 2, 0);
  CHECK(g != NULL);
  CHECK_EQ(evl_future_error(g), EVL_EINVAL);
  evl_future_release(g);
  futs[1] = NULL;
  g = evl_gather(loop, futs, 2, 0);
  CHECK_EQ(evl_future_error(g), EVL_EINVAL);
  evl_future_release(g);
  g = evl_gather(loop, NULL, 3, 0);
  CHECK_EQ(evl_future_error(g), EVL_EINVAL);
  evl_future_release(g);
  evl_future_release(mine);
  evl_future_release(theirs);
  test_close(other);
  test_close(loop);
}

TEST(run_in_executor_without_function_gives_einval_future) {
  evl_loop *loop = test_open();
  evl_future *f = evl_run_in_executor(loop, NULL, NULL, NULL, NULL);
  CHECK(f != NULL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  (void)never_run;
  test_close(loop);
}

TEST(future_functions_on_a_closed_loop_return_null) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK(evl_sleep(loop, 1.0, NULL) == NULL);
  CHECK(evl_gather(loop, NULL, 0, 0) == NULL);
  CHECK(evl_run_in_executor(loop, NULL, never_run, NULL, NULL) == NULL);
  CHECK(evl_getaddrinfo(loop, "127.0.0.1", "80", 0, 0, 0, 0) == NULL);
  CHECK(evl_task_create(loop, await_null_task, NULL, 0) == NULL);
  test_close(loop);
}

TEST(await_null_fails_the_task_with_einval) {
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, await_null_task, NULL, 0);
  CHECK(t != NULL);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_EINVAL);
  CHECK(evl_future_result(t) == NULL);
  CHECK(evl_future_error_message(t) != NULL);
  evl_future_release(t);
  test_close(loop);
}

TEST(release_null_and_queries_on_null_are_harmless) {
  evl_future_release(NULL);
  CHECK(evl_future_ref(NULL) == NULL);
  CHECK_EQ(evl_future_done(NULL), 0);
  CHECK(evl_future_result(NULL) == NULL);
  CHECK_EQ(evl_future_error(NULL), EVL_EINVAL);
  CHECK_EQ(evl_run_forever(NULL), EVL_EINVAL);
  CHECK_EQ(evl_loop_close(NULL), EVL_EINVAL);
  evl_loop_free(NULL);
}

/* ---- the clock timers are scheduled from -------------------------------
   The loop reuses a clock reading for scheduling only within one callback;
   a new callback, or evl_time(), reads the clock again. */
static void busy_wait(double seconds) {
  double end = test_now() + seconds;
  while (test_now() < end) {
  }
}
typedef struct clock_probe {
  double sched_real, fire_real;
} clock_probe;
static void probe_fire(evl_loop *loop, void *arg) {
  (void)loop;
  ((clock_probe *)arg)->fire_real = test_now();
}
static clock_probe g_probe[2];
static void slow_first(evl_loop *loop, void *arg) {
  (void)arg;
  /* Schedules (reading the clock), then works for 40 ms. */
  CHECK(evl_call_later(loop, 10.0, probe_fire, &g_probe[1]) > 0);
  busy_wait(0.04);
}
static void schedules_after(evl_loop *loop, void *arg) {
  (void)arg;
  g_probe[0].sched_real = test_now();
  CHECK(evl_call_later(loop, 0.02, probe_fire, &g_probe[0]) > 0);
}
static void stop_when_fired(evl_loop *loop, void *arg) {
  (void)arg;
  if (g_probe[0].fire_real > 0)
    evl_stop(loop);
  else
    CHECK(evl_call_later(loop, 0.005, stop_when_fired, NULL) > 0);
}

TEST(a_new_callback_reads_the_clock_again_for_timers) {
  evl_loop *loop = test_open();
  memset(g_probe, 0, sizeof g_probe);
  CHECK(evl_call_soon(loop, slow_first, NULL) > 0);
  CHECK(evl_call_soon(loop, schedules_after, NULL) > 0);
  CHECK(evl_call_soon(loop, stop_when_fired, NULL) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  /* Measured from slow_first's reading it would fire 40 ms early. */
  CHECK(g_probe[0].fire_real >= g_probe[0].sched_real + 0.02 - 1e-6);
  test_close(loop);
}

static void schedules_around_work(evl_loop *loop, void *arg) {
  (void)arg;
  CHECK(evl_call_later(loop, 10.0, probe_fire, &g_probe[1]) > 0);
  busy_wait(0.04);
  g_probe[0].sched_real = test_now();
  (void)evl_time(loop); /* reads the clock: the next delay counts from here */
  CHECK(evl_call_later(loop, 0.02, probe_fire, &g_probe[0]) > 0);
}

TEST(evl_time_reads_the_clock_again_for_timers) {
  evl_loop *loop = test_open();
  memset(g_probe, 0, sizeof g_probe);
  CHECK(evl_call_soon(loop, schedules_around_work, NULL) > 0);
  CHECK(evl_call_soon(loop, stop_when_fired, NULL) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK(g_probe[0].fire_real >= g_probe[0].sched_real + 0.02 - 1e-6);
  test_close(loop);
}

/* Runs on the executor, or inline with EVLOOP_NO_THREADS: same result. */
TEST(getaddrinfo_numeric_resolves_with_or_without_threads) {
  evl_loop *loop = test_open();
  evl_future *f =
      evl_getaddrinfo(loop, "127.0.0.1", "8080", AF_INET, SOCK_STREAM, 0,
                      AI_NUMERICHOST | AI_NUMERICSERV);
  const struct addrinfo *ai;
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  ai = (const struct addrinfo *)evl_future_result(f);
  CHECK(ai != NULL);
  CHECK_EQ(ai->ai_family, AF_INET);
  CHECK_EQ(
      ntohs(((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_port),
      8080);
  evl_future_release(f);
  test_close(loop);
}

/* A sandbox that refuses epoll (seccomp; glibc has the kernel headers we
   need): the default loop falls back to
   poll and says so; asking for epoll explicitly is an error, not a switch. */
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__)
#include "seccomp_test.h"

TEST(refused_epoll_falls_back_to_poll) {
  evl_loop *loop = NULL;
  int epoll_default;
  CHECK_EQ(evl_loop_new(&loop, NULL), 0);
  epoll_default = strcmp(evl_backend_name(loop), "epoll") == 0;
  test_close(loop);
  if (!epoll_default) {
    printf("  (not an epoll build: nothing to fall back from)\n");
    return;
  }
  check_refused_backend_falls_back("poll (epoll unavailable)",
                                   EVL_BACKEND_EPOLL, EVL_EPERM);
}
#endif

TESTS_BEGIN
T(bad_sleep_delay_gives_einval_future)
T(gather_of_null_or_foreign_futures_gives_einval_future)
T(run_in_executor_without_function_gives_einval_future)
T(future_functions_on_a_closed_loop_return_null)
T(await_null_fails_the_task_with_einval)
T(release_null_and_queries_on_null_are_harmless)
T(a_new_callback_reads_the_clock_again_for_timers)
T(evl_time_reads_the_clock_again_for_timers)
T(getaddrinfo_numeric_resolves_with_or_without_threads)
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__)
T(refused_epoll_falls_back_to_poll)
#else
T_SKIP(refused_epoll_falls_back_to_poll,
       "needs epoll and seccomp (Linux, x86-64, glibc)")
#endif
TESTS_END
