/* Closing and freeing a loop with work still pending: nothing runs, nothing
   leaks (run under valgrind and LeakSanitizer), late calls are safe.
   Runs under ThreadSanitizer. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "gate_test.h"
#include <string.h>

static int g_ran; /* test_count_cb's and mark_done_cb's */

static void mark_done_cb(evl_future *fut, void *arg) {
  (void)fut;
  (void)arg;
  g_ran++;
}

static int g_freed;
static void counting_free(void *p) {
  g_freed++;
  free(p);
}

/* A task that sleeps (a long time) and marks when it wakes. */
typedef struct sleep_state {
  int started;
  int *after;
  char payload[200]; /* copied state: must be freed by close */
} sleep_state;

static void sleep_state_init(sleep_state *s, int *after) {
  memset(s, 0, sizeof *s);
  s->after = after;
}

static void long_sleeper(evl_task *t, void *state) {
  sleep_state *s = (sleep_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->started = 1;
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 30.0, NULL));
  (*s->after)++;
  EVL_ASYNC_END(t);
}

/* A task that awaits a future it was given (never completed). */
typedef struct wait_state {
  evl_future *fut;
  int *after;
  int started;
} wait_state;

static void future_waiter(evl_task *t, void *state) {
  wait_state *s = (wait_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->started = 1;
  EVL_AWAIT(t, s->fut); /* consumes the reference given in the state */
  (*s->after)++;
  EVL_ASYNC_END(t);
}

TEST(close_discards_callbacks) {
  evl_loop *loop = test_open();
  int i;
  g_ran = 0;
  for (i = 0; i < 5; i++)
    CHECK(evl_call_soon(loop, test_count_cb, &g_ran) > 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  CHECK_EQ(g_ran, 0);
  CHECK(evl_call_soon(loop, test_count_cb, &g_ran) <
        0); /* refused once closed */
  test_close(loop);
  CHECK_EQ(g_ran, 0);
}

TEST(close_discards_timers) {
  evl_loop *loop = test_open();
  evl_handle h;
  g_ran = 0;
  CHECK(evl_call_later(loop, 0.0, test_count_cb, &g_ran) > 0);
  CHECK(evl_call_later(loop, 0.5, test_count_cb, &g_ran) > 0);
  CHECK(evl_call_later(loop, 60.0, test_count_cb, &g_ran) > 0);
  h = evl_call_later(loop, 10.0, test_count_cb, &g_ran);
  CHECK(h > 0);
  CHECK_EQ(evl_handle_cancel(loop, h), 1); /* a cancelled one too */
  CHECK(evl_call_at(loop, evl_time(loop) + 5.0, test_count_cb, &g_ran) > 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(g_ran, 0);
  test_close(loop);
  CHECK_EQ(g_ran, 0);
}

TEST(close_with_task_awaiting_sleep) {
  evl_loop *loop = test_open();
  sleep_state s;
  evl_task *held, *released;
  int after = 0, i;
  sleep_state_init(&s, &after);
  held = evl_task_create(loop, long_sleeper, &s, sizeof s);
  released = evl_task_create(loop, long_sleeper, &s, sizeof s);
  CHECK(held != NULL && released != NULL);
  for (i = 0; i < 10 && !((sleep_state *)evl_task_state(held))->started; i++)
    evl_run_once(loop, 0);
  CHECK_EQ(((sleep_state *)evl_task_state(held))->started, 1);
  evl_future_release(released); /* fire and forget */
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(after, 0);
  test_close(loop);
  CHECK_EQ(after, 0);
  evl_future_release(held); /* after free: safe */
}

TEST(close_with_task_awaiting_pending_future) {
  evl_loop *loop = test_open();
  wait_state s;
  evl_task *t;
  evl_future *f;
  int after = 0, i;
  memset(&s, 0, sizeof s);
  f = evl_future_new(loop);
  s.fut = evl_future_ref(f); /* the task's reference */
  s.after = &after;
  t = evl_task_create(loop, future_waiter, &s, 0);
  for (i = 0; i < 10 && !s.started; i++)
    evl_run_once(loop, 0);
  CHECK_EQ(s.started, 1);
  evl_future_release(f);
  evl_future_release(t); /* only the loop knows them now */
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(after, 0);
  test_close(loop);
}

TEST(close_with_fire_and_forget_task) {
  evl_loop *loop = test_open();
  sleep_state s;
  int after = 0;
  evl_task *t;
  sleep_state_init(&s, &after);
  t = evl_task_create(loop, long_sleeper, &s, sizeof s);
  CHECK(t != NULL);
  evl_future_release(t); /* not even started */
  evl_run_once(loop, 0);
  t = evl_task_create(loop, long_sleeper, &s, sizeof s);
  evl_future_release(t);
  CHECK_EQ(evl_loop_close(loop), 0);
  test_close(loop);
  CHECK_EQ(after, 0);
}

TEST(close_with_done_callbacks) {
  evl_loop *loop = test_open();
  evl_future *pending = evl_future_new(loop);
  evl_future *scheduled = evl_future_new(loop);
  evl_future *owned = evl_future_new(loop);
  g_ran = 0;
  g_freed = 0;
  /* never completes */
  CHECK_EQ(evl_future_add_done_callback(pending, mark_done_cb, NULL), 0);
  /* completed: its callbacks are scheduled but never run */
  CHECK_EQ(evl_future_add_done_callback(scheduled, mark_done_cb, NULL), 0);
  CHECK_EQ(evl_future_set_result(scheduled, NULL), 0);
  /* owns its result; only the scheduled callback still references it */
  CHECK_EQ(evl_future_add_done_callback(owned, mark_done_cb, NULL), 0);
  CHECK_EQ(evl_future_set_result_free(owned, malloc(48), counting_free), 0);
  evl_future_release(owned);
  evl_future_release(pending);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(g_ran, 0);
  test_close(loop);
  CHECK_EQ(g_ran, 0);
  CHECK_EQ(g_freed, 1);
  evl_future_release(scheduled);
  CHECK_EQ(g_ran, 0);
}

/* ---- executor jobs at close (the gate: gate_test.h) ----------------------
 */

TEST(close_with_executor_jobs) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_future *running, *queued[4];
  int i;
  memset(&cfg, 0, sizeof cfg);
  cfg.executor_threads = 1;
  loop = test_open_with(&cfg);
  running = gate_run_and_queue(loop, NULL, queued, 4, NULL, gate_free);
  evl_future_release(queued[3]);   /* one nobody holds */
  gate_close_while_released(loop); /* returns once the job finished */
  test_close(loop);
  CHECK_EQ(gate_get(&g_gate.markers), 0);
  CHECK_EQ(gate_get(&g_gate.freed), 1); /* the running job's result */
  evl_future_release(running);
  for (i = 0; i < 3; i++)
    evl_future_release(queued[i]);
}

/* ---- late calls -------------------------------------------------------------
 */

TEST(future_held_after_close) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  evl_future *g = evl_future_new(loop);
  int x = 1;
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_future_set_result(f, &x), EVL_ECLOSED);
  CHECK_EQ(evl_future_set_error(g, EVL_EIO, "late"), EVL_ECLOSED);
  evl_future_release(g); /* between close and free */
  test_close(loop);
  CHECK_EQ(evl_future_set_result(f, &x), EVL_ECLOSED);
  CHECK(evl_future_add_done_callback(f, mark_done_cb, NULL) < 0);
  evl_future_release(f); /* after free */
}

TEST(close_twice) {
  evl_loop *loop = test_open();
  g_ran = 0;
  CHECK(evl_call_soon(loop, test_count_cb, &g_ran) > 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  test_close(loop);
  CHECK_EQ(g_ran, 0);
}

static int g_close_rc;
static void close_from_callback(evl_loop *loop, void *arg) {
  (void)arg;
  g_close_rc = evl_loop_close(loop);
  evl_stop(loop);
}

TEST(close_while_running_refused) {
  evl_loop *loop = test_open();
  g_close_rc = 1;
  CHECK(evl_call_soon(loop, close_from_callback, NULL) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_close_rc, EVL_ERUNNING);
  CHECK_EQ(evl_loop_is_closed(loop), 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  test_close(loop);
}

TEST(free_without_close) {
  evl_loop *loop = test_open();
  sleep_state s;
  int after = 0;
  evl_future *f;
  sleep_state_init(&s, &after);
  g_ran = 0;
  CHECK(evl_call_soon(loop, test_count_cb, &g_ran) > 0);
  CHECK(evl_call_later(loop, 1.0, test_count_cb, &g_ran) > 0);
  evl_future_release(evl_task_create(loop, long_sleeper, &s, sizeof s));
  f = evl_sleep(loop, 5.0, NULL);
  evl_future_release(f);
  test_close(loop); /* closes first */
  CHECK_EQ(g_ran, 0);
  CHECK_EQ(after, 0);
}

TEST(close_with_combinators) {
  evl_loop *loop = test_open();
  evl_future *kids[3];
  evl_future *w, *g, *w2;
  int i;
  g_ran = 0;
  w = evl_wait_for(evl_future_new(loop), 10.0);
  kids[0] = evl_sleep(loop, 10.0, NULL);
  kids[1] = evl_future_new(loop);
  kids[2] = evl_wait_for(evl_sleep(loop, 20.0, NULL), 5.0);
  g = evl_gather(loop, kids, 3, 0);
  w2 = evl_wait_for(evl_future_ref(g), 8.0);
  CHECK(w != NULL && g != NULL && w2 != NULL);
  CHECK_EQ(evl_future_add_done_callback(g, mark_done_cb, NULL), 0);
  evl_run_once(loop, 0);
  for (i = 0; i < 3; i++)
    evl_future_release(kids[i]);
  evl_future_release(w2); /* only the loop holds it now */
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(g_ran, 0);
  evl_future_release(g);
  test_close(loop);
  evl_future_release(w);
  CHECK_EQ(g_ran, 0);
}

TESTS_BEGIN
T(close_discards_callbacks)
T(close_discards_timers)
T(close_with_task_awaiting_sleep)
T(close_with_task_awaiting_pending_future)
T(close_with_fire_and_forget_task)
T(close_with_done_callbacks)
T(close_with_executor_jobs)
T(future_held_after_close)
T(close_twice)
T(close_while_running_refused)
T(free_without_close)
T(close_with_combinators)
TESTS_END
