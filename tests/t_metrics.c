/* Loop metrics (evl_loop_metrics_get): iterations, events, callbacks,
   time idle in the wait, time in callbacks, the longest callback. */
#include "test.h"

static void nop(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
}
static void busy(evl_loop *loop, void *arg) {
  double until = test_now() + *(const double *)arg;
  (void)loop;
  while (test_now() < until)
    ;
}
static void on_readable(evl_loop *loop, evl_fd fd, void *arg) {
  char b[8];
  (void)loop;
  (void)arg;
  CHECK(test_recv((int)fd, b, sizeof b) >= 1);
}
static void stop_cb(evl_loop *loop, void *arg) {
  (void)arg;
  evl_stop(loop);
}

/* Counts: callbacks, timers, fd callbacks and hooks are callbacks; an fd
   event is an event. */
TEST(metrics_count) {
  evl_loop *loop = test_open();
  evl_loop_metrics m;
  int sv[2];
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK_EQ(m.iterations, 0);
  CHECK_EQ(m.callbacks, 0);
  CHECK_EQ(test_socketpair(sv), 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], on_readable, NULL), 0);
  CHECK_EQ(test_send(sv[1], "x", 1), 1);
  CHECK(evl_call_soon(loop, nop, NULL) > 0);
  CHECK(evl_call_soon(loop, nop, NULL) > 0);
  CHECK(evl_call_later(loop, 0, nop, NULL) > 0);
  CHECK(evl_hook_add(loop, EVL_HOOK_CHECK, nop, NULL) > 0);
  test_sleep_ms(10);
  CHECK_EQ(evl_run_once(loop, 0), 4);
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK_EQ(m.iterations, 1);
  CHECK_EQ(m.events, 1);
  CHECK_EQ(m.callbacks, 5);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK_EQ(m.iterations, 2);
  CHECK_EQ(m.callbacks, 6); /* the check hook */
  CHECK_EQ(evl_loop_metrics_get(NULL, &m), EVL_EINVAL);
  CHECK_EQ(evl_loop_metrics_get(loop, NULL), EVL_EINVAL);
  evl_remove_reader(loop, sv[0]);
  test_closesocket(sv[0]);
  test_closesocket(sv[1]);
  test_close(loop);
}

/* A 100 ms wait is idle time; a 40 ms callback is callback time and the
   longest callback, which two later 5 ms callbacks do not replace. */
TEST(metrics_times) {
  evl_loop *loop = test_open();
  evl_loop_metrics m;
  static const double d40 = 0.040, d5 = 0.005;
  evl_run_once(loop, 0.1);
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK(m.idle_ns >= 90000000);
  CHECK(m.callback_ns < 50000000);
  CHECK_EQ(m.longest_ns, 0); /* no callback ran */
  CHECK(evl_call_soon(loop, busy, (void *)&d40) > 0);
  evl_run_once(loop, 0);
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK(m.callback_ns >= 40000000);
  CHECK(m.longest_ns >= 40000000);
  CHECK(m.idle_ns < 1000000000);
  CHECK(evl_call_soon(loop, busy, (void *)&d5) > 0);
  evl_run_once(loop, 0);
  CHECK(evl_call_soon(loop, busy, (void *)&d5) > 0);
  evl_run_once(loop, 0);
  {
    evl_loop_metrics m2;
    CHECK_EQ(evl_loop_metrics_get(loop, &m2), 0);
    CHECK(m2.longest_ns >= m.longest_ns); /* never shrinks */
    CHECK(m2.callback_ns >= m.callback_ns + 10000000);
  }
  test_close(loop);
}

/* run_forever: the time between iterations is all counted, once: idle plus
   callback time is about the wall time of the run. */
TEST(metrics_run_forever) {
  evl_loop *loop = test_open();
  evl_loop_metrics m;
  static const double d20 = 0.020;
  double t0, wall;
  int i;
  for (i = 1; i <= 5; i++)
    CHECK(evl_call_later(loop, 0.03 * i, busy, (void *)&d20) > 0);
  CHECK(evl_call_later(loop, 0.2, stop_cb, NULL) > 0);
  t0 = test_now();
  CHECK_EQ(evl_run_forever(loop), 0);
  wall = test_now() - t0;
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK(m.iterations >= 2); /* (a late wake-up runs several timers) */
  CHECK_EQ(m.callbacks, 6);
  CHECK(m.callback_ns >= 100000000);
  CHECK(m.idle_ns >= 40000000);
  CHECK((double)(m.idle_ns + m.callback_ns) / 1e9 <= wall + 0.001);
  /* (the loop's own work between the two is not counted: a loaded
     machine can stall there for tens of ms) */
  CHECK((double)(m.idle_ns + m.callback_ns) / 1e9 >= wall - 0.05);
  printf("  wall %.3f s: idle %.3f s, callbacks %.3f s, %llu iterations\n",
         wall, (double)m.idle_ns / 1e9, (double)m.callback_ns / 1e9,
         (unsigned long long)m.iterations);
  test_close(loop);
}

/* With a manual clock, the metrics still count real time. */
static int64_t g_ns;
static int64_t manual_clock(void *ctx) {
  (void)ctx;
  return g_ns;
}
TEST(metrics_manual_clock) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_loop_metrics m;
  memset(&cfg, 0, sizeof cfg);
  cfg.clock_ns = manual_clock;
  g_ns = 1000000000000ll;
  loop = test_open_with(&cfg);
  evl_run_once(loop, 0.05);
  CHECK_EQ(evl_loop_metrics_get(loop, &m), 0);
  CHECK(m.idle_ns >= 0 && m.idle_ns < 1000000000);
  CHECK(m.callback_ns >= 0 && m.callback_ns < 1000000000);
  test_close(loop);
}

TESTS_BEGIN
T(metrics_count)
T(metrics_times)
T(metrics_run_forever)
T(metrics_manual_clock)
TESTS_END
