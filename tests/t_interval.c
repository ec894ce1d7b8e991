/* Repeating timers (evl_call_every): deadlines at start + k * interval,
   the missed-tick policies, cancel from inside the callback, a new
   interval; driven by the loop's manual clock where timing matters. */
#include "test.h"

static int64_t g_ns; /* the manual clock */
static int64_t manual_clock(void *ctx) {
  (void)ctx;
  return g_ns;
}
static evl_loop *manual_loop(void) {
  evl_loop_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.clock_ns = manual_clock;
  g_ns = 0;
  return test_open_with(&cfg);
}

#define MS 1000000ll
#define SEC 1000000000ll

typedef struct ticker {
  evl_handle h;
  int ticks, cancel_at, reinterval_at;
  double new_interval;
  int64_t at[64]; /* the clock at the first ticks */
} ticker;

static void tick_cb(evl_loop *loop, void *arg) {
  ticker *t = (ticker *)arg;
  if (t->ticks < 64)
    t->at[t->ticks] = evl_time_ns(loop);
  t->ticks++;
  if (t->ticks == t->cancel_at)
    CHECK_EQ(evl_handle_cancel(loop, t->h), 1);
  if (t->ticks == t->reinterval_at)
    CHECK_EQ(evl_every_set_interval(loop, t->h, t->new_interval), 0);
}

static int64_t when_ns(evl_loop *loop, evl_handle h) {
  double w = evl_handle_when(loop, h);
  return w < 0 ? -1 : (int64_t)(w * 1e9 + 0.5);
}

/* A 1 s ticker with the given missed-tick policy (set only where it is
   not the default), then the clock jumps from 0 to 5.5 s: five ticks
   missed. */
static void start_late_ticker(evl_loop *loop, ticker *t,
                              evl_missed_tick policy) {
  memset(t, 0, sizeof *t);
  t->h = evl_call_every(loop, 1.0, tick_cb, t);
  CHECK(t->h > 0);
  if (policy != EVL_MISSED_BURST)
    CHECK_EQ(evl_every_set_missed(loop, t->h, policy), 0);
  g_ns = 5 * SEC + SEC / 2;
}

/* Delay and skip: one tick for the five missed ones, then the next
   deadline is `next`; run exactly then, the tick is on time (not missed
   again) and the one after is a second later. */
static void check_one_tick_then(evl_missed_tick policy, int64_t next) {
  evl_loop *loop = manual_loop();
  ticker t;
  start_late_ticker(loop, &t, policy);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(t.ticks, 1);
  CHECK_EQ(when_ns(loop, t.h), next);
  g_ns = next;
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(when_ns(loop, t.h), next + SEC);
  test_close(loop);
}

/* 10,000 ticks, each run late by a varying amount under the interval:
   every deadline is exactly k * interval. */
TEST(every_does_not_drift) {
  evl_loop *loop = manual_loop();
  ticker t;
  uint32_t rnd = 12345;
  int k;
  memset(&t, 0, sizeof t);
  t.h = evl_call_every(loop, 0.010, tick_cb, &t);
  CHECK(t.h > 0);
  for (k = 1; k <= 10000; k++) {
    CHECK_EQ(when_ns(loop, t.h), k * 10 * MS);
    rnd = rnd * 1103515245u + 12345u;
    g_ns = k * 10 * MS + (int64_t)(rnd >> 8) % (9 * MS); /* late, < 9 ms */
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(t.ticks, k);
  }
  CHECK_EQ(when_ns(loop, t.h), 10001 * 10 * MS);
  CHECK_EQ(evl_handle_cancel(loop, t.h), 1);
  test_close(loop);
}

/* The clock jumps from 0 to 5.5 s over a 1 s timer: burst fires the five
   missed ticks, one an iteration, and keeps the schedule. */
TEST(every_missed_burst) {
  evl_loop *loop = manual_loop();
  ticker t;
  int i;
  start_late_ticker(loop, &t, EVL_MISSED_BURST);
  for (i = 1; i <= 5; i++) {
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(t.ticks, i);
  }
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(t.ticks, 5);
  CHECK_EQ(when_ns(loop, t.h), 6 * SEC);
  test_close(loop);
}

/* Delay: one tick, then the schedule restarts from it (5.5 s). */
TEST(every_missed_delay) {
  check_one_tick_then(EVL_MISSED_DELAY, 6 * SEC + SEC / 2);
}

/* Skip: one tick, then the next deadline of the original schedule. */
TEST(every_missed_skip) {
  check_one_tick_then(EVL_MISSED_SKIP, 6 * SEC);
}

/* A cancel from inside the callback ends it: no more ticks, nothing left
   scheduled, the handle is stale. */
TEST(every_cancel_inside_callback) {
  evl_loop *loop = manual_loop();
  ticker t;
  int k;
  memset(&t, 0, sizeof t);
  t.cancel_at = 3;
  t.h = evl_call_every(loop, 0.5, tick_cb, &t);
  for (k = 1; k <= 6; k++) {
    g_ns = k * SEC / 2;
    evl_run_once(loop, 0);
  }
  CHECK_EQ(t.ticks, 3);
  CHECK_EQ(evl_handle_when(loop, t.h), -1.0);
  CHECK_EQ(evl_handle_cancel(loop, t.h), 0);
  CHECK(evl_next_timeout(loop) < 0);
  CHECK_EQ(evl_every_set_interval(loop, t.h, 1.0), EVL_EINVAL);
  test_close(loop);
}

/* A new interval counts from the last deadline: from inside the callback
   and from outside. */
TEST(every_set_interval) {
  evl_loop *loop = manual_loop();
  ticker t;
  memset(&t, 0, sizeof t);
  t.reinterval_at = 2;
  t.new_interval = 0.25;
  t.h = evl_call_every(loop, 1.0, tick_cb, &t);
  g_ns = 1 * SEC;
  CHECK_EQ(evl_run_once(loop, 0), 1);
  g_ns = 2 * SEC;
  CHECK_EQ(evl_run_once(loop, 0), 1); /* sets 0.25 s */
  CHECK_EQ(when_ns(loop, t.h), 2 * SEC + SEC / 4);
  g_ns = 2 * SEC + SEC / 4;
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(when_ns(loop, t.h), 2 * SEC + SEC / 2);
  /* from outside: last deadline 2.25 s, new interval 2 s */
  CHECK_EQ(evl_every_set_interval(loop, t.h, 2.0), 0);
  CHECK_EQ(when_ns(loop, t.h), 4 * SEC + SEC / 4);
  g_ns = 4 * SEC;
  CHECK_EQ(evl_run_once(loop, 0), 0);
  g_ns = 4 * SEC + SEC / 4;
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(t.ticks, 4);
  CHECK_EQ(t.at[3], 4 * SEC + SEC / 4);
  /* shorter than the time since the last tick: due at once */
  g_ns = 5 * SEC;
  CHECK_EQ(evl_every_set_interval(loop, t.h, 0.5), 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(t.ticks, 5);
  test_close(loop);
}

/* Bad input: an error code, nothing scheduled. */
TEST(every_bad_input) {
  evl_loop *loop = manual_loop();
  ticker t;
  evl_handle once;
  double zero = 0.0;
  memset(&t, 0, sizeof t);
  CHECK_EQ(evl_call_every(NULL, 1.0, tick_cb, &t), EVL_EINVAL);
  CHECK_EQ(evl_call_every(loop, 1.0, NULL, &t), EVL_EINVAL);
  CHECK_EQ(evl_call_every(loop, 0.0, tick_cb, &t), EVL_EINVAL);
  CHECK_EQ(evl_call_every(loop, -1.0, tick_cb, &t), EVL_EINVAL);
  CHECK_EQ(evl_call_every(loop, zero / zero, tick_cb, &t), EVL_EINVAL);
  CHECK_EQ(evl_call_every(loop, 1.0 / zero, tick_cb, &t), EVL_EINVAL);
  CHECK(evl_next_timeout(loop) < 0);
  once = evl_call_later(loop, 1.0, tick_cb, &t);
  CHECK_EQ(evl_every_set_missed(loop, once, EVL_MISSED_SKIP), EVL_EINVAL);
  CHECK_EQ(evl_every_set_interval(loop, once, 1.0), EVL_EINVAL);
  t.h = evl_call_every(loop, 1.0, tick_cb, &t);
  CHECK(t.h > 0);
  CHECK_EQ(evl_every_set_missed(loop, t.h, (evl_missed_tick)7), EVL_EINVAL);
  CHECK_EQ(evl_every_set_missed(loop, t.h, (evl_missed_tick)-1), EVL_EINVAL);
  CHECK_EQ(evl_every_set_interval(loop, t.h, 0.0), EVL_EINVAL);
  CHECK_EQ(evl_every_set_interval(loop, t.h, -2.0), EVL_EINVAL);
  CHECK_EQ(evl_every_set_interval(NULL, t.h, 1.0), EVL_EINVAL);
  CHECK_EQ(evl_every_set_interval(loop, 0, 1.0), EVL_EINVAL);
  CHECK_EQ(when_ns(loop, t.h), SEC);
  test_close(loop);
  CHECK_EQ(evl_call_every(loop = manual_loop(), 1.0, tick_cb, &t) > 0, 1);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_call_every(loop, 1.0, tick_cb, &t), EVL_ECLOSED);
  test_close(loop);
}

/* Many repeating timers beside one-shot ones, cancelled in every order:
   slots are reused, nothing fires after its cancel. */
TEST(every_many) {
  evl_loop *loop = manual_loop();
  static ticker t[40];
  int i, k;
  memset(t, 0, sizeof t);
  for (i = 0; i < 40; i++) {
    t[i].h = evl_call_every(loop, 0.001 * (i + 1), tick_cb, &t[i]);
    CHECK(t[i].h > 0);
    CHECK(evl_call_later(loop, 0.0005 * i, tick_cb, &t[0]) > 0);
  }
  for (k = 1; k <= 401; k++) { /* (a 1 ns margin: 0.001 * 7 is inexact) */
    g_ns = k * MS;
    evl_run_once(loop, 0);
    if (k % 10 == 1 && k > 1)
      CHECK_EQ(evl_handle_cancel(loop, t[k / 10 - 1].h), 1);
  }
  for (i = 1; i < 40; i++)
    CHECK_EQ(t[i].ticks, 10); /* every (i + 1) ms until 10 * (i + 1) + 1 ms */
  CHECK(evl_next_timeout(loop) < 0);
  test_close(loop);
}

/* Real clock, a callback that works 3 ms of every 5 ms tick: the 200th
   deadline is exactly 1 s after the first's start (a timer re-armed from
   its callback would be 0.6 s later), and on an idle machine 200 ticks
   take 1 s (printed). Burst fires one missed tick an iteration: where waits
   are coarse (wine rounds them to ~16 ms) ticks lag behind the deadlines,
   which still do not move. */
TEST(every_real_clock_under_load) {
  evl_loop *loop = test_open();
  ticker t;
  double start, end, first;
  memset(&t, 0, sizeof t);
  start = test_now();
  t.h = evl_call_every(loop, 0.005, tick_cb, &t);
  first = evl_handle_when(loop, t.h);
  while (t.ticks < 200) {
    double busy = test_now() + 0.003;
    evl_run_once(loop, -1);
    while (test_now() < busy)
      ;
    CHECK(test_now() < start + 30);
  }
  end = test_now();
  printf("  200 ticks of 5 ms: %.3f s\n", end - start);
  CHECK(evl_handle_when(loop, t.h) - first > 1.0 - 1e-6);
  CHECK(evl_handle_when(loop, t.h) - first < 1.0 + 1e-6);
  CHECK(end - start >= 0.995); /* never early */
  /* (how soon the ticks catch up depends on how loaded the machine is:
     not checked; the deadlines above are, and t_interval's manual-clock
     tests pin them exactly) */
  test_close(loop);
}

TESTS_BEGIN
T(every_does_not_drift)
T(every_missed_burst)
T(every_missed_delay)
T(every_missed_skip)
T(every_cancel_inside_callback)
T(every_set_interval)
T(every_bad_input)
T(every_many)
T(every_real_clock_under_load)
TESTS_END
