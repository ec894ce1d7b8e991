/* Timers: deadline order, never early, cancellation, the handle API, bad
   delays, a manual clock and timers that re-arm themselves. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <math.h>
#include <time.h>

static int g_log[256];
static int g_nlog;
static int g_ids[256];
static int g_stop_after; /* log_cb stops the loop when g_nlog reaches it */

static void reset_log(int stop_after) {
  int i;
  g_nlog = 0;
  g_stop_after = stop_after;
  for (i = 0; i < 256; i++)
    g_ids[i] = i;
}

static void log_cb(evl_loop *loop, void *arg) {
  if (g_nlog < 256)
    g_log[g_nlog++] = *(int *)arg;
  if (g_nlog == g_stop_after)
    evl_stop(loop);
}

TEST(timers_fire_in_deadline_order) {
  evl_loop *loop = test_open();
  reset_log(3);
  CHECK(evl_call_later(loop, 0.030, log_cb, &g_ids[30]) > 0);
  CHECK(evl_call_later(loop, 0.010, log_cb, &g_ids[10]) > 0);
  CHECK(evl_call_later(loop, 0.020, log_cb, &g_ids[20]) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_nlog, 3);
  CHECK_EQ(g_log[0], 10);
  CHECK_EQ(g_log[1], 20);
  CHECK_EQ(g_log[2], 30);
  test_close(loop);
}

TEST(equal_deadlines_fire_in_scheduling_order) {
  evl_loop *loop = test_open();
  double when = evl_time(loop) + 0.02;
  int i;
  reset_log(50);
  for (i = 0; i < 50; i++)
    CHECK(evl_call_at(loop, when, log_cb, &g_ids[i]) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_nlog, 50);
  for (i = 0; i < 50; i++)
    CHECK_EQ(g_log[i], i);
  test_close(loop);
}

/* Timers that record when they were scheduled and when they fired. */
typedef struct {
  double delay;
  double sched_loop, sched_real; /* before evl_call_later */
  double fire_loop, fire_real;
  int fired;
} early_rec;
static early_rec g_early[61];
static int g_early_left;

static void early_cb(evl_loop *loop, void *arg) {
  early_rec *r = (early_rec *)arg;
  r->fire_real = test_now();
  r->fire_loop = evl_time(loop);
  r->fired++;
  if (--g_early_left == 0)
    evl_stop(loop);
}

TEST(timers_never_fire_before_their_deadline) {
  evl_loop *loop = test_open();
  int d;
  g_early_left = 60;
  for (d = 1; d <= 60; d++) {
    early_rec *r = &g_early[d];
    r->delay = d / 1000.0;
    r->sched_real = test_now();
    r->sched_loop = evl_time(loop);
    CHECK(evl_call_later(loop, r->delay, early_cb, r) > 0);
  }
  CHECK_EQ(evl_run_forever(loop), 0);
  for (d = 1; d <= 60; d++) {
    early_rec *r = &g_early[d];
    CHECK_EQ(r->fired, 1);
    if (r->fire_loop < r->sched_loop + r->delay - 1e-9 ||
        r->fire_real < r->sched_real + r->delay - 1e-6) {
      fprintf(stderr,
              "  delay %d ms fired after %.6f s (loop), %.6f s (real)\n", d,
              r->fire_loop - r->sched_loop, r->fire_real - r->sched_real);
      CHECK(0);
    }
  }
  test_close(loop);
}

/* 100,000 timers with pseudo-random deadlines. */
#define MANY_TIMERS 100000
static double g_when[MANY_TIMERS];
static int g_many_fired, g_many_bad_order, g_many_early;
static double g_many_last_when;
static int g_many_last_index;

static void many_cb(evl_loop *loop, void *arg) {
  int i = (int)((double *)arg - g_when);
  double when = g_when[i];
  if (when < g_many_last_when ||
      (when == g_many_last_when && i < g_many_last_index))
    g_many_bad_order++;
  if (evl_time(loop) < when - 1e-9)
    g_many_early++;
  g_many_last_when = when;
  g_many_last_index = i;
  if (++g_many_fired == MANY_TIMERS)
    evl_stop(loop);
}

TEST(hundred_thousand_random_timers_fire_in_deadline_order) {
  evl_loop *loop = test_open();
  uint32_t seed = 12345;
  int i;
  double t0 = evl_time(loop);
  for (i = 0; i < MANY_TIMERS; i++) {
    evl_handle h;
    double delay;
    seed = seed * 1103515245u + 12345u;
    delay = (double)((seed >> 8) % 200001u) / 1e6; /* 0 .. 200 ms */
    h = evl_call_later(loop, delay, many_cb, &g_when[i]);
    CHECK(h > 0);
    g_when[i] = evl_handle_when(loop, h);
    CHECK(g_when[i] >= t0 + delay - 1e-9);
  }
  g_many_last_when = -1.0;
  g_many_last_index = -1;
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_many_fired, MANY_TIMERS);
  CHECK_EQ(g_many_bad_order, 0);
  CHECK_EQ(g_many_early, 0);
  test_close(loop);
}

/* Timers cancelled at random, before and while the loop runs: the heap
   must drop exactly those and keep the rest in order. */
#define CANCEL_TIMERS 20000
static evl_handle g_ch[CANCEL_TIMERS];
static double g_cwhen[CANCEL_TIMERS];
static char g_ccancelled[CANCEL_TIMERS], g_cfired[CANCEL_TIMERS];
static int g_cleft, g_cbad;
static double g_clast;

static void cancel_some_cb(evl_loop *loop, void *arg) {
  int i = (int)((char *)arg - g_cfired), j = (int)((i * 7919L) % CANCEL_TIMERS);
  if (g_ccancelled[i] || g_cfired[i] || g_cwhen[i] < g_clast)
    g_cbad++;
  g_clast = g_cwhen[i];
  g_cfired[i] = 1;
  g_cleft--;
  /* Cancel another timer: 1 exactly when it is still pending. */
  if (!g_ccancelled[j] && !g_cfired[j]) {
    if (evl_handle_cancel(loop, g_ch[j]) != 1)
      g_cbad++;
    g_ccancelled[j] = 1;
    g_cleft--;
  } else if (evl_handle_cancel(loop, g_ch[j]) != 0) {
    g_cbad++;
  }
  if (g_cleft == 0)
    evl_stop(loop);
}

TEST(randomly_cancelled_timers_never_fire_and_the_rest_stay_ordered) {
  evl_loop *loop = test_open();
  uint32_t seed = 777;
  int i, fired = 0, cancelled = 0;
  for (i = 0; i < CANCEL_TIMERS; i++) {
    seed = seed * 1103515245u + 12345u;
    g_ch[i] = evl_call_later(loop, (double)((seed >> 8) % 100001u) / 1e6,
                             cancel_some_cb, &g_cfired[i]);
    CHECK(g_ch[i] > 0);
    g_cwhen[i] = evl_handle_when(loop, g_ch[i]);
  }
  g_cleft = CANCEL_TIMERS;
  for (i = 0; i < CANCEL_TIMERS; i++) {
    seed = seed * 1103515245u + 12345u;
    if ((seed >> 16) & 1) {
      CHECK_EQ(evl_handle_cancel(loop, g_ch[i]), 1);
      g_ccancelled[i] = 1;
      g_cleft--;
    }
  }
  g_clast = -1.0;
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_cbad, 0);
  CHECK_EQ(g_cleft, 0);
  for (i = 0; i < CANCEL_TIMERS; i++) {
    CHECK(g_cfired[i] + g_ccancelled[i] == 1);
    fired += g_cfired[i];
    cancelled += g_ccancelled[i];
  }
  CHECK(fired > 0);
  CHECK(cancelled > CANCEL_TIMERS / 3);
  CHECK(evl_next_timeout(loop) == -1.0);
  test_close(loop);
}

TEST(huge_delays_are_accepted_and_do_not_fire) {
  evl_loop *loop = test_open();
  int fired = 0, stops = 0;
  evl_handle a, b, c;
  a = evl_call_later(loop, 1e300, test_count_cb, &fired);
  b = evl_call_at(loop, 1e300, test_count_cb, &fired);
  c = evl_call_later(loop, 1e10, test_count_cb, &fired);
  CHECK(a > 0);
  CHECK(b > 0);
  CHECK(c > 0);
  CHECK(evl_handle_when(loop, a) > evl_time(loop) + 1e6);
  CHECK(evl_handle_when(loop, b) > evl_time(loop) + 1e6);
  CHECK(evl_next_timeout(loop) > 1e6);
  /* A near timer still fires first and the far ones stay put. */
  CHECK(evl_call_later(loop, 0.02, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(stops, 1);
  CHECK_EQ(evl_run_once(loop, 0.01), 0);
  CHECK_EQ(fired, 0);
  CHECK_EQ(evl_handle_cancel(loop, c), 1);
  test_close(loop);
}

static evl_handle g_victim;
static int g_cancel_rc = -1;
static void cancel_victim_cb(evl_loop *loop, void *arg) {
  (*(int *)arg)++;
  g_cancel_rc = evl_handle_cancel(loop, g_victim);
}

TEST(callback_cancelled_earlier_in_same_iteration_does_not_run) {
  evl_loop *loop = test_open();
  int first = 0, second = 0;
  CHECK(evl_call_soon(loop, cancel_victim_cb, &first) > 0);
  g_victim = evl_call_soon(loop, test_count_cb, &second);
  CHECK(g_victim > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(first, 1);
  CHECK_EQ(g_cancel_rc, 1);
  CHECK_EQ(second, 0);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(second, 0);
  test_close(loop);
}

TEST(timer_cancelled_by_timer_due_in_same_iteration_does_not_run) {
  evl_loop *loop = test_open();
  int first = 0, second = 0, stops = 0;
  double when = evl_time(loop) + 0.02;
  CHECK(evl_call_at(loop, when, cancel_victim_cb, &first) > 0);
  g_victim = evl_call_at(loop, when, test_count_cb, &second);
  CHECK(g_victim > 0);
  CHECK(evl_call_at(loop, when + 0.03, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(stops, 1);
  CHECK_EQ(first, 1);
  CHECK_EQ(g_cancel_rc, 1);
  CHECK_EQ(second, 0);
  test_close(loop);
}

TEST(handle_when_reports_pending_timer_deadlines_only) {
  evl_loop *loop = test_open();
  int fired = 0, soon = 0, stops = 0;
  double before = evl_time(loop), after, when;
  evl_handle timer = evl_call_later(loop, 0.05, test_count_cb, &fired);
  evl_handle s;
  after = evl_time(loop);
  CHECK(timer > 0);
  when = evl_handle_when(loop, timer);
  CHECK(when >= before + 0.05 - 1e-9);
  CHECK(when <= after + 0.05 + 1e-9);
  s = evl_call_soon(loop, test_count_cb, &soon);
  CHECK(s > 0);
  CHECK(s != timer);
  CHECK(evl_handle_when(loop, s) == -1.0);
  CHECK(evl_call_later(loop, 0.08, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(fired, 1);
  CHECK_EQ(soon, 1);
  CHECK(evl_handle_when(loop, timer) == -1.0);
  CHECK(evl_handle_when(loop, s) == -1.0);
  test_close(loop);
}

TEST(handle_cancel_returns_1_once_then_0) {
  evl_loop *loop = test_open();
  int ran = 0, ran2 = 0, tfired = 0;
  evl_handle h = evl_call_soon(loop, test_count_cb, &ran), h2, t;
  CHECK(h > 0);
  CHECK_EQ(evl_handle_cancelled(loop, h), 0);
  CHECK_EQ(evl_handle_cancel(loop, h), 1);
  CHECK_EQ(evl_handle_cancelled(loop, h), 1);
  CHECK_EQ(evl_handle_cancel(loop, h), 0);
  CHECK_EQ(evl_handle_cancelled(loop, h), 1);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(ran, 0);
  CHECK_EQ(evl_handle_cancelled(loop, h), 0); /* discarded now */
  CHECK_EQ(evl_handle_cancel(loop, h), 0);
  /* After the callback ran, cancel is a no-op. */
  h2 = evl_call_soon(loop, test_count_cb, &ran2);
  CHECK(h2 > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran2, 1);
  CHECK_EQ(evl_handle_cancel(loop, h2), 0);
  CHECK_EQ(evl_handle_cancelled(loop, h2), 0);
  /* A cancelled timer: when is -1 and it never fires. */
  t = evl_call_later(loop, 0.01, test_count_cb, &tfired);
  CHECK(t > 0);
  CHECK(evl_handle_when(loop, t) > 0.0);
  CHECK_EQ(evl_handle_cancel(loop, t), 1);
  CHECK_EQ(evl_handle_cancelled(loop, t), 1);
  CHECK_EQ(evl_handle_cancel(loop, t), 0);
  CHECK_EQ(evl_run_once(loop, 0.03), 0);
  CHECK_EQ(evl_run_once(loop, 0.03), 0);
  CHECK_EQ(tfired, 0);
  test_close(loop);
}

TEST(cancelling_a_stale_handle_does_not_cancel_a_newer_callback) {
  evl_loop *loop = test_open();
  int a = 0, b = 0, ta = 0, tb = 0, i;
  evl_handle ha, hb, hta, htb;
  ha = evl_call_soon(loop, test_count_cb, &a);
  CHECK(ha > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(a, 1);
  hb = evl_call_soon(loop, test_count_cb, &b); /* likely reuses A's slot */
  CHECK(hb > 0);
  CHECK(hb != ha);
  CHECK_EQ(evl_handle_cancel(loop, ha), 0);
  CHECK_EQ(evl_handle_cancelled(loop, hb), 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(b, 1);
  /* The same for timers. */
  hta = evl_call_later(loop, 0.001, test_count_cb, &ta);
  CHECK(hta > 0);
  for (i = 0; i < 100 && ta == 0; i++)
    evl_run_once(loop, 0.05);
  CHECK_EQ(ta, 1);
  htb = evl_call_later(loop, 0.001, test_count_cb, &tb);
  CHECK(htb > 0);
  CHECK(htb != hta);
  CHECK_EQ(evl_handle_cancel(loop, hta), 0);
  CHECK(evl_handle_when(loop, hta) == -1.0);
  CHECK(evl_handle_when(loop, htb) > 0.0);
  for (i = 0; i < 100 && tb == 0; i++)
    evl_run_once(loop, 0.05);
  CHECK_EQ(tb, 1);
  test_close(loop);
}

TEST(negative_delay_counts_as_zero) {
  evl_loop *loop = test_open();
  int i, n;
  reset_log(2);
  CHECK(evl_call_later(loop, 0.010, log_cb, &g_ids[10]) > 0);
  CHECK(evl_call_later(loop, -1.0, log_cb, &g_ids[1]) > 0);
  n = evl_run_once(loop, 0);
  CHECK(n >= 1);
  CHECK(g_nlog >= 1);
  CHECK_EQ(g_log[0], 1);
  for (i = 0; i < 100 && g_nlog < 2; i++)
    evl_run_once(loop, 0.05);
  CHECK_EQ(g_nlog, 2);
  CHECK_EQ(g_log[1], 10);
  /* call_at in the past runs at the next iteration too. */
  reset_log(0);
  CHECK(evl_call_at(loop, evl_time(loop) - 100.0, log_cb, &g_ids[5]) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(g_nlog, 1);
  CHECK_EQ(g_log[0], 5);
  test_close(loop);
}

TEST(nan_and_infinite_delays_are_einval) {
  evl_loop *loop = test_open();
  int fired = 0, i;
  CHECK_EQ(evl_call_later(loop, NAN, test_count_cb, &fired), EVL_EINVAL);
  CHECK_EQ(evl_call_later(loop, INFINITY, test_count_cb, &fired), EVL_EINVAL);
  CHECK_EQ(evl_call_later(loop, -INFINITY, test_count_cb, &fired), EVL_EINVAL);
  CHECK_EQ(evl_call_at(loop, NAN, test_count_cb, &fired), EVL_EINVAL);
  CHECK_EQ(evl_call_at(loop, INFINITY, test_count_cb, &fired), EVL_EINVAL);
  CHECK_EQ(evl_call_at(loop, -INFINITY, test_count_cb, &fired), EVL_EINVAL);
  CHECK(evl_next_timeout(loop) == -1.0); /* nothing was scheduled */
  /* The loop still works. */
  CHECK(evl_call_soon(loop, test_count_cb, &fired) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(fired, 1);
  CHECK(evl_call_later(loop, 0.001, test_count_cb, &fired) > 0);
  for (i = 0; i < 100 && fired < 2; i++)
    evl_run_once(loop, 0.05);
  CHECK_EQ(fired, 2);
  test_close(loop);
}

static int64_t g_manual_ns;
static int64_t g_manual_step;
static int64_t manual_clock(void *ctx) {
  int64_t now = g_manual_ns;
  CHECK(ctx == &g_manual_ns);
  g_manual_ns += g_manual_step;
  return now;
}

TEST(manual_clock_drives_timers) {
  evl_loop_config cfg;
  evl_loop *loop;
  memset(&cfg, 0, sizeof cfg);
  cfg.clock_ns = manual_clock;
  cfg.clock_ctx = &g_manual_ns;
  g_manual_ns = 0;
  g_manual_step = 0;
  loop = test_open_with(&cfg);
  CHECK(evl_time(loop) == 0.0);
  CHECK_EQ(evl_time_ns(loop), 0);
  reset_log(0);
  CHECK(evl_call_later(loop, 1.0, log_cb, &g_ids[1]) > 0);
  CHECK(evl_call_later(loop, 3.0, log_cb, &g_ids[3]) > 0);
  CHECK(evl_call_later(loop, 2.0, log_cb, &g_ids[2]) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(g_nlog, 0);
  g_manual_ns = 2000000000;
  CHECK(evl_time(loop) == 2.0);
  CHECK_EQ(evl_time_ns(loop), 2000000000);
  CHECK_EQ(evl_run_once(loop, 0), 2);
  CHECK_EQ(g_nlog, 2);
  CHECK_EQ(g_log[0], 1);
  CHECK_EQ(g_log[1], 2);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(g_nlog, 2);
  g_manual_ns = 3000000000;
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(g_nlog, 3);
  CHECK_EQ(g_log[2], 3);
  test_close(loop);
}

TEST(manual_clock_hour_long_sleep_completes_at_once) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_future *fut;
  double t0;
  static int token;
  memset(&cfg, 0, sizeof cfg);
  cfg.clock_ns = manual_clock;
  cfg.clock_ctx = &g_manual_ns;
  g_manual_ns = 0;
  g_manual_step = 1000000000; /* 1 s per reading */
  loop = test_open_with(&cfg);
  fut = evl_sleep(loop, 3600.0, &token);
  CHECK(fut != NULL);
  t0 = test_now();
  CHECK_EQ(evl_run_until_complete(loop, fut), 0);
  CHECK(test_now() - t0 < 5.0);
  CHECK(evl_future_result(fut) == &token);
  CHECK(evl_time(loop) >= 3600.0);
  evl_future_release(fut);
  test_close(loop);
}

static int g_rearms;
static void rearm_cb(evl_loop *loop, void *arg) {
  (void)arg;
  g_rearms++;
  CHECK(evl_call_later(loop, 0, rearm_cb, NULL) > 0);
}

TEST(timer_rearmed_with_zero_delay_does_not_starve_the_loop) {
  evl_loop *loop = test_open();
  int i, stops = 0;
  g_rearms = 0;
  CHECK(evl_call_later(loop, 0, rearm_cb, NULL) > 0);
  for (i = 1; i <= 5; i++) {
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(g_rearms, i);
  }
  /* Other timers still fire while it keeps re-arming. */
  CHECK(evl_call_later(loop, 0.03, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(stops, 1);
  CHECK(g_rearms > 6);
  test_close(loop);
}

TESTS_BEGIN
T(timers_fire_in_deadline_order)
T(equal_deadlines_fire_in_scheduling_order)
T(timers_never_fire_before_their_deadline)
T(hundred_thousand_random_timers_fire_in_deadline_order)
T(randomly_cancelled_timers_never_fire_and_the_rest_stay_ordered)
T(huge_delays_are_accepted_and_do_not_fire)
T(callback_cancelled_earlier_in_same_iteration_does_not_run)
T(timer_cancelled_by_timer_due_in_same_iteration_does_not_run)
T(handle_when_reports_pending_timer_deadlines_only)
T(handle_cancel_returns_1_once_then_0)
T(cancelling_a_stale_handle_does_not_cancel_a_newer_callback)
T(negative_delay_counts_as_zero)
T(nan_and_infinite_delays_are_einval)
T(manual_clock_drives_timers)
T(manual_clock_hour_long_sleep_completes_at_once)
T(timer_rearmed_with_zero_delay_does_not_starve_the_loop)
TESTS_END
