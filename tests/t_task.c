/* Tasks (stackless coroutines), evl_sleep, evl_wait_for, evl_gather and the
   task factory. No threads. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_value_a = 1, g_value_b = 2, g_value_c = 3;

static void set_result_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_set_result((evl_future *)arg, &g_value_b);
}

static void set_error_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_set_error((evl_future *)arg, EVL_EIO, "disk");
}

/* Releases a and b (b may be NULL), then closes the loop (no report). */
static void release_and_close(evl_loop *loop, evl_future *a, evl_future *b) {
  evl_future_release(a);
  if (b)
    evl_future_release(b);
  test_close(loop);
}

/* Releases the gather g and its n children, then closes the loop (no
   report). */
static void release_all_and_close(evl_loop *loop, evl_future *g,
                                  evl_future **futs, int n) {
  int i;
  evl_future_release(g);
  for (i = 0; i < n; i++)
    evl_future_release(futs[i]);
  test_close(loop);
}

/* Runs the loop until *flag != 0, at most ~5 s. */
static void run_until_flag(evl_loop *loop, const int *flag) {
  int i;
  for (i = 0; i < 500 && !*flag; i++)
    evl_run_once(loop, 0.01);
}

/* ---- a task awaiting evl_sleep ----------------------------------------- */

/* A task that sleeps s->delay: started once it runs, after once the sleep
   is over (a cancel or timeout during the sleep leaves after at 0). */
typedef struct sleeper_state {
  double delay;
  int started, after;
  double t_started, t_after;
} sleeper_state;

static void sleeper(evl_task *t, void *state) {
  sleeper_state *s = (sleeper_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->started = 1;
  s->t_started = evl_time(evl_task_loop(t));
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delay, NULL));
  s->t_after = evl_time(evl_task_loop(t));
  s->after = 1;
  EVL_ASYNC_RETURN(t, &g_value_a);
  EVL_ASYNC_END(t);
}

TEST(task_awaits_sleep) {
  sleeper_state s = {0.02, 0, 0, 0, 0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, sleeper, &s, 0);
  CHECK(t != NULL);
  CHECK_EQ(evl_is_task(t), 1);
  CHECK(evl_task_loop(t) == loop);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(s.started, 1);
  CHECK_EQ(s.after, 1);
  CHECK(s.t_after - s.t_started >= 0.0199);
  CHECK_EQ(evl_future_done(t), 1);
  CHECK(evl_future_result(t) == &g_value_a);
  CHECK_EQ(evl_future_error(t), 0);
  release_and_close(loop, t, NULL);
}

/* ---- a task awaiting a plain future ------------------------------------ */

/* A loop and a task awaiting the future fut, with EVL_AWAIT or (use_try)
   EVL_AWAIT_TRY; the task records what the await gave it. */
typedef struct awaiting {
  evl_loop *loop;
  evl_task *t;
  evl_future *fut;
  int use_try;
  int started, after;  /* after: the code after the await ran */
  void *got;           /* evl_await_result */
  int err;             /* evl_await_error */
  evl_future *awaited; /* evl_await_future */
} awaiting;

/* Returns what it got; with EVL_AWAIT_TRY, &g_value_a (a result of its own,
   so a test sees the task went on to return normally). */
static void awaiter(evl_task *t, void *state) {
  awaiting *a = (awaiting *)state;
  EVL_ASYNC_BEGIN(t);
  a->started = 1;
  if (a->use_try) {
    EVL_AWAIT_TRY(t, evl_future_ref(a->fut));
  } else {
    EVL_AWAIT(t, evl_future_ref(a->fut));
  }
  a->got = evl_await_result(t);
  a->err = evl_await_error(t);
  a->awaited = evl_await_future(t);
  a->after = 1;
  EVL_ASYNC_RETURN(t, a->use_try ? (void *)&g_value_a : a->got);
  EVL_ASYNC_END(t);
}

/* Opens the loop, makes a->fut, has settle(fut) called at 10 ms (unless
   NULL) and creates the awaiting task (not started yet). got and err hold
   sentinels the await must overwrite. */
static void awaiting_open(awaiting *a, int use_try, evl_callback settle) {
  memset(a, 0, sizeof *a);
  a->loop = test_open();
  a->fut = evl_future_new(a->loop);
  a->use_try = use_try;
  a->got = a;
  a->err = 12345;
  if (settle)
    CHECK(evl_call_later(a->loop, 0.01, settle, a->fut) > 0);
  a->t = evl_task_create(a->loop, awaiter, a, 0);
  CHECK(a->t != NULL);
}

/* Runs the loop (at most 10 iterations) until the task says it started. */
static void run_until_started(evl_loop *loop, const int *started) {
  int i;
  for (i = 0; i < 10 && !*started; i++)
    evl_run_once(loop, 0);
  CHECK_EQ(*started, 1);
}

/* awaiting_open with nothing to settle the future, then runs until the
   task has started awaiting it. */
static void start_awaiting(awaiting *a, int use_try) {
  awaiting_open(a, use_try, NULL);
  run_until_started(a->loop, &a->started);
}

static void awaiting_close(awaiting *a) {
  release_and_close(a->loop, a->t, a->fut);
}

TEST(task_awaits_future_set_by_callback) {
  awaiting a;
  awaiting_open(&a, 0, set_result_cb);
  CHECK_EQ(evl_run_until_complete(a.loop, a.t), 0);
  CHECK_EQ(a.after, 1);
  CHECK(a.got == &g_value_b);
  CHECK_EQ(a.err, 0);
  CHECK(a.awaited == a.fut);
  CHECK(evl_future_result(a.t) == &g_value_b);
  awaiting_close(&a);
}

/* ---- a task awaiting another task -------------------------------------- */

typedef struct outer_state {
  void *got;
  int inner_err;
} outer_state;

static void inner_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  EVL_ASYNC_RETURN(t, &g_value_c);
  EVL_ASYNC_END(t);
}

static void outer_task(evl_task *t, void *state) {
  outer_state *s = (outer_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_task_create(evl_task_loop(t), inner_task, NULL, 0));
  s->got = evl_await_result(t);
  s->inner_err = evl_await_error(t);
  EVL_ASYNC_RETURN(t, s->got);
  EVL_ASYNC_END(t);
}

TEST(task_awaits_task) {
  outer_state s = {NULL, -1};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, outer_task, &s, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK(s.got == &g_value_c);
  CHECK_EQ(s.inner_err, 0);
  CHECK(evl_future_result(t) == &g_value_c);
  release_and_close(loop, t, NULL);
}

/* ---- errors propagate through EVL_AWAIT, not through EVL_AWAIT_TRY ----- */

TEST(await_failing_future_fails_task) {
  awaiting a;
  awaiting_open(&a, 0, set_error_cb);
  CHECK_EQ(evl_run_until_complete(a.loop, a.t), EVL_EIO);
  CHECK_EQ(a.started, 1);
  CHECK_EQ(a.after, 0); /* the code after the await never ran */
  CHECK_EQ(evl_future_done(a.t), 1);
  CHECK_EQ(evl_future_cancelled(a.t), 0);
  CHECK_EQ(evl_future_error(a.t), EVL_EIO);
  CHECK(evl_future_result(a.t) == NULL);
  awaiting_close(&a); /* no report: awaiting retrieved the inner error */
}

TEST(await_try_sees_error_and_continues) {
  awaiting a;
  awaiting_open(&a, 1, set_error_cb);
  CHECK_EQ(evl_run_until_complete(a.loop, a.t), 0);
  CHECK_EQ(a.after, 1);
  CHECK_EQ(a.err, EVL_EIO);
  CHECK(a.got == NULL);
  CHECK(evl_future_result(a.t) == &g_value_a);
  CHECK_EQ(evl_future_error(a.t), 0);
  awaiting_close(&a);
}

/* ---- cancellation ------------------------------------------------------ */

/* After a cancel of the awaiting task (EVL_AWAIT): it ends cancelled, the
   code after its await never ran, and the awaited future was cancelled
   with it unless it was already done (fut_cancelled 0). */
static void check_awaiter_cancelled(awaiting *a, int fut_cancelled) {
  CHECK_EQ(evl_run_until_complete(a->loop, a->t), EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(a->t), 1);
  CHECK_EQ(evl_future_error(a->t), EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(a->fut), fut_cancelled);
  CHECK_EQ(a->after, 0);
}

TEST(cancel_task_cancels_awaited_future) {
  awaiting a;
  start_awaiting(&a, 0);
  CHECK_EQ(evl_future_done(a.t), 0);
  CHECK_EQ(evl_task_cancel(a.t), 1);
  check_awaiter_cancelled(&a, 1);
  CHECK_EQ(evl_task_cancel(a.t), 0); /* done now */
  awaiting_close(&a);
}

TEST(cancel_task_with_future_cancel) {
  /* evl_future_cancel on a task behaves as evl_task_cancel. */
  awaiting a;
  start_awaiting(&a, 0);
  CHECK_EQ(evl_future_cancel(a.t), 1);
  check_awaiter_cancelled(&a, 1);
  awaiting_close(&a);
}

TEST(cancelled_await_try_can_recover) {
  awaiting a;
  start_awaiting(&a, 1);
  CHECK_EQ(evl_task_cancel(a.t), 1);
  CHECK_EQ(evl_run_until_complete(a.loop, a.t), 0);
  CHECK_EQ(a.after, 1);
  CHECK_EQ(a.err, EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(a.fut), 1);
  CHECK_EQ(evl_future_cancelled(a.t), 0);
  CHECK_EQ(evl_future_error(a.t), 0);
  CHECK(evl_future_result(a.t) == &g_value_a);
  awaiting_close(&a);
}

typedef struct ran_state {
  int ran;
} ran_state;

static void mark_ran(evl_task *t, void *state) {
  ran_state *s = (ran_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->ran++;
  EVL_ASYNC_RETURN(t, &g_value_a);
  EVL_ASYNC_END(t);
}

TEST(cancel_before_start) {
  ran_state s = {0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, mark_ran, &s, 0);
  CHECK(t != NULL);
  CHECK_EQ(evl_task_cancel(t), 1);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(s.ran, 0);
  CHECK_EQ(evl_future_cancelled(t), 1);
  CHECK_EQ(evl_future_error(t), EVL_ECANCELED);
  evl_run_once(loop, 0);
  CHECK_EQ(s.ran, 0);
  release_and_close(loop, t, NULL);
}

/* ---- a task is a future ------------------------------------------------ */

static evl_future *g_cb_fut;
static void record_fut_cb(evl_future *fut, void *arg) {
  g_cb_fut = fut;
  (*(int *)arg)++;
}

TEST(task_is_a_future) {
  ran_state s = {0};
  int n = 0;
  evl_loop *loop = test_open();
  evl_future *plain = evl_future_new(loop);
  evl_task *t = evl_task_create(loop, mark_ran, &s, 0);
  g_cb_fut = NULL;
  CHECK_EQ(evl_is_task(t), 1);
  CHECK_EQ(evl_is_task(plain), 0);
  CHECK_EQ(evl_future_done(t), 0);
  CHECK_EQ(evl_future_add_done_callback(t, record_fut_cb, &n), 0);
  CHECK(evl_future_loop(t) == loop);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  CHECK(g_cb_fut == t);
  CHECK_EQ(s.ran, 1);
  CHECK(evl_future_result(t) == &g_value_a);
  release_and_close(loop, plain, t);
}

TEST(task_starts_next_iteration) {
  ran_state s = {0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, mark_ran, &s, 0);
  CHECK_EQ(s.ran, 0); /* not inline */
  CHECK_EQ(evl_future_done(t), 0);
  evl_run_once(loop, 0);
  CHECK_EQ(s.ran, 1);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(s.ran, 1);
  release_and_close(loop, t, NULL);
}

/* ---- state: copied or passed through ----------------------------------- */

typedef struct copy_state {
  int value;
  int seen;
} copy_state;

/* What the task saw (each test is its own process: they start at 0). */
static int g_seen;
static void *g_state_ptr;

static void read_state(evl_task *t, void *state) {
  copy_state *s = (copy_state *)state;
  EVL_ASYNC_BEGIN(t);
  g_seen = s->value;
  g_state_ptr = state;
  s->seen = 1;
  EVL_ASYNC_END(t);
}

TEST(state_is_copied) {
  copy_state orig = {5, 0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, read_state, &orig, sizeof orig);
  CHECK(t != NULL);
  CHECK(evl_task_state(t) != NULL);
  CHECK(evl_task_state(t) != (void *)&orig);
  CHECK_EQ(((copy_state *)evl_task_state(t))->value, 5);
  orig.value = 99; /* the task has its own copy */
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(g_seen, 5);
  CHECK(g_state_ptr == evl_task_state(t));
  CHECK_EQ(orig.seen, 0);
  CHECK(evl_future_result(t) == NULL); /* fell off EVL_ASYNC_END */
  release_and_close(loop, t, NULL);
}

TEST(state_is_passed_through) {
  copy_state orig = {5, 0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, read_state, &orig, 0);
  CHECK(evl_task_state(t) == (void *)&orig);
  orig.value = 7; /* the task sees the change */
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(g_seen, 7);
  CHECK_EQ(orig.seen, 1);
  release_and_close(loop, t, NULL);
}

/* ---- interleaving ------------------------------------------------------ */

typedef struct step_state {
  char tag;
  int i;
  int n;
  double delays[4];
} step_state;

static char g_log[32];
static int g_log_n;

static void stepper(evl_task *t, void *state) {
  step_state *s = (step_state *)state;
  EVL_ASYNC_BEGIN(t);
  for (s->i = 0; s->i < s->n; s->i++) {
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delays[s->i], NULL));
    if (g_log_n < 31)
      g_log[g_log_n++] = (char)(s->tag + s->i);
  }
  EVL_ASYNC_END(t);
}

TEST(tasks_interleave) {
  /* A wakes at 100, 200, 300 ms; B at 50 and 250 ms: B1 A1 A2 B2 A3. The
     events are 50 ms apart, so a loaded machine's late wake-ups (which
     add up along A's chain) do not reorder them. */
  step_state a, b;
  evl_loop *loop = test_open();
  evl_task *ta, *tb;
  evl_future *futs[2], *g;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(g_log, 0, sizeof g_log);
  g_log_n = 0;
  a.tag = 'a';
  a.n = 3;
  a.delays[0] = a.delays[1] = a.delays[2] = 0.1;
  b.tag = 'A';
  b.n = 2;
  b.delays[0] = 0.05;
  b.delays[1] = 0.2;
  ta = evl_task_create(loop, stepper, &a, sizeof a);
  tb = evl_task_create(loop, stepper, &b, sizeof b);
  futs[0] = ta;
  futs[1] = tb;
  g = evl_gather(loop, futs, 2, 0);
  CHECK(g != NULL);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  g_log[g_log_n] = '\0';
  if (strcmp(g_log, "AabBc") != 0)
    fprintf(stderr, "  order: %s\n", g_log);
  CHECK(strcmp(g_log, "AabBc") == 0);
  evl_future_release(g);
  release_and_close(loop, ta, tb);
}

/* ---- names and the task factory ---------------------------------------- */

static void my_named_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_ASYNC_END(t);
}

TEST(task_name_is_function_name) {
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, my_named_task, NULL, 0);
  const char *name = evl_task_name(t);
  CHECK(name != NULL);
  CHECK(strcmp(name, "my_named_task") == 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK(strcmp(evl_task_name(t), "my_named_task") == 0);
  release_and_close(loop, t, NULL);
}

typedef struct factory_ctx {
  int calls;
  evl_task_fn last_fn;
} factory_ctx;

static evl_task *counting_factory(evl_loop *loop, evl_task_fn fn,
                                  const void *state, size_t state_size,
                                  void *ctx) {
  factory_ctx *c = (factory_ctx *)ctx;
  c->calls++;
  c->last_fn = fn;
  return evl_task_new(loop, fn, state, state_size);
}

TEST(task_factory) {
  factory_ctx ctx;
  ran_state s1 = {0}, s2 = {0};
  void *got_ctx = &ctx;
  evl_loop *loop = test_open();
  evl_task *t1, *t2;
  memset(&ctx, 0, sizeof ctx);
  CHECK(evl_get_task_factory(loop, &got_ctx) == NULL);
  evl_set_task_factory(loop, counting_factory, &ctx);
  got_ctx = NULL;
  CHECK(evl_get_task_factory(loop, &got_ctx) == counting_factory);
  CHECK(got_ctx == &ctx);
  t1 = evl_task_create(loop, mark_ran, &s1, 0);
  CHECK(t1 != NULL);
  CHECK_EQ(ctx.calls, 1);
  CHECK(ctx.last_fn == mark_ran);
  t2 = evl_task_new(loop, mark_ran, &s2, 0);
  CHECK(t2 != NULL);
  CHECK_EQ(ctx.calls, 1); /* evl_task_new never uses the factory */
  CHECK_EQ(evl_run_until_complete(loop, t1), 0);
  CHECK_EQ(evl_run_until_complete(loop, t2), 0);
  CHECK_EQ(s1.ran, 1);
  CHECK_EQ(s2.ran, 1);
  evl_set_task_factory(loop, NULL, NULL);
  CHECK(evl_get_task_factory(loop, &got_ctx) == NULL);
  evl_future_release(t1);
  t1 = evl_task_create(loop, mark_ran, &s1, 0);
  CHECK_EQ(ctx.calls, 1);
  CHECK_EQ(evl_run_until_complete(loop, t1), 0);
  CHECK_EQ(s1.ran, 2);
  release_and_close(loop, t1, t2);
}

/* ---- fire and forget --------------------------------------------------- */

typedef struct ff_state {
  int *done;
  char padding[100];
} ff_state;

static void fire_and_forget_task(evl_task *t, void *state) {
  ff_state *s = (ff_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  *s->done = 1;
  EVL_ASYNC_END(t);
}

TEST(fire_and_forget) {
  int done = 0;
  ff_state s;
  evl_loop *loop = test_open();
  evl_task *t;
  memset(&s, 0, sizeof s);
  s.done = &done;
  t = evl_task_create(loop, fire_and_forget_task, &s, sizeof s);
  CHECK(t != NULL);
  evl_future_release(t); /* the task keeps itself alive */
  run_until_flag(loop, &done);
  CHECK_EQ(done, 1);
  evl_run_once(loop, 0);
  test_close(loop);
}

/* ---- evl_wait_for ------------------------------------------------------ */

TEST(wait_for_in_time) {
  evl_loop *loop = test_open();
  evl_future *inner = evl_sleep(loop, 0.01, &g_value_c);
  evl_future *w = evl_wait_for(evl_future_ref(inner), 1.0);
  CHECK(w != NULL);
  CHECK_EQ(evl_run_until_complete(loop, w), 0);
  CHECK(evl_future_result(w) == &g_value_c);
  CHECK_EQ(evl_future_cancelled(inner), 0);
  CHECK(evl_future_result(inner) == &g_value_c);
  release_and_close(loop, w, inner);
}

TEST(wait_for_inner_error) {
  evl_loop *loop = test_open();
  evl_future *inner = evl_future_new(loop);
  evl_future *w = evl_wait_for(evl_future_ref(inner), 1.0);
  CHECK(evl_call_later(loop, 0.01, set_error_cb, inner) > 0);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_EIO);
  CHECK_EQ(evl_future_error(w), EVL_EIO);
  release_and_close(loop, w, inner);
}

/* evl_wait_for(timeout) on a future nobody completes: it times out and
   cancels the inner future. Returns how long that took. */
static double wait_for_never_done(double timeout) {
  evl_loop *loop = test_open();
  evl_future *inner = evl_future_new(loop);
  double t0 = evl_time(loop), took;
  evl_future *w = evl_wait_for(evl_future_ref(inner), timeout);
  CHECK(w != NULL);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_ETIMEDOUT);
  took = evl_time(loop) - t0;
  CHECK_EQ(evl_future_cancelled(inner), 1);
  CHECK_EQ(evl_future_error(w), EVL_ETIMEDOUT);
  release_and_close(loop, w, inner);
  return took;
}

TEST(wait_for_times_out) {
  CHECK(wait_for_never_done(0.03) >= 0.0299);
}

TEST(wait_for_task_times_out) {
  sleeper_state s = {30.0, 0, 0, 0, 0};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, sleeper, &s, 0);
  evl_future *w = evl_wait_for(evl_future_ref(t), 0.02);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_ETIMEDOUT);
  CHECK_EQ(s.started, 1);
  CHECK_EQ(s.after, 0);
  CHECK_EQ(evl_future_done(t), 1); /* wait_for waits for the cancel */
  CHECK_EQ(evl_future_cancelled(t), 1);
  CHECK_EQ(evl_future_error(t), EVL_ECANCELED);
  release_and_close(loop, w, t);
}

TEST(wait_for_negative_timeout) {
  CHECK(wait_for_never_done(-1.0) < 1.0);
}

TEST(wait_for_nan_timeout) {
  evl_loop *loop = test_open();
  evl_future *inner = evl_future_new(loop);
  evl_future *w = evl_wait_for(evl_future_ref(inner), (double)NAN);
  CHECK(w != NULL);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_EINVAL);
  release_and_close(loop, w, inner);
}

/* ---- evl_gather -------------------------------------------------------- */

TEST(gather_all_succeed) {
  evl_loop *loop = test_open();
  evl_future *futs[3], *g;
  int i;
  futs[0] = evl_sleep(loop, 0.02, &g_value_a);
  futs[1] = evl_sleep(loop, 0.01, &g_value_b);
  futs[2] = evl_sleep(loop, 0.03, &g_value_c);
  g = evl_gather(loop, futs, 3, 0);
  CHECK(g != NULL);
  CHECK_EQ(evl_future_done(g), 0);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  CHECK(evl_future_result(g) == NULL);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_future_done(futs[i]), 1);
  CHECK(evl_future_result(futs[0]) == &g_value_a);
  CHECK(evl_future_result(futs[1]) == &g_value_b);
  CHECK(evl_future_result(futs[2]) == &g_value_c);
  release_all_and_close(loop, g, futs, 3);
}

TEST(gather_takes_own_references) {
  /* Releasing ours at once is fine: gather holds its own. */
  evl_loop *loop = test_open();
  evl_future *futs[2], *g;
  futs[0] = evl_sleep(loop, 0.01, &g_value_a);
  futs[1] = evl_sleep(loop, 0.02, &g_value_b);
  g = evl_gather(loop, futs, 2, 0);
  evl_future_release(futs[0]);
  evl_future_release(futs[1]);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  release_and_close(loop, g, NULL);
}

/* futs: a 5 ms sleep giving &g_value_a, a future failing with EVL_EIO
   at 10 ms, and a sleep of last_delay giving &g_value_c. */
static void one_fails_in_three(evl_loop *loop, evl_future **futs,
                               double last_delay) {
  futs[0] = evl_sleep(loop, 0.005, &g_value_a);
  futs[1] = evl_future_new(loop);
  futs[2] = evl_sleep(loop, last_delay, &g_value_c);
  CHECK(evl_call_later(loop, 0.01, set_error_cb, futs[1]) > 0);
}

TEST(gather_one_fails) {
  evl_loop *loop = test_open();
  evl_future *futs[3], *g;
  one_fails_in_three(loop, futs, 0.06);
  g = evl_gather(loop, futs, 3, 0);
  CHECK_EQ(evl_run_until_complete(loop, g), EVL_EIO);
  CHECK_EQ(evl_future_error(g), EVL_EIO);
  CHECK_EQ(evl_future_done(futs[2]), 0); /* the others go on */
  CHECK_EQ(evl_run_until_complete(loop, futs[2]), 0);
  CHECK_EQ(evl_future_cancelled(futs[2]), 0);
  CHECK(evl_future_result(futs[2]) == &g_value_c);
  CHECK(evl_future_result(futs[0]) == &g_value_a);
  CHECK_EQ(evl_future_error(futs[1]), EVL_EIO);
  release_all_and_close(loop, g, futs, 3);
}

TEST(gather_return_errors) {
  evl_loop *loop = test_open();
  evl_future *futs[3], *g;
  int i;
  one_fails_in_three(loop, futs, 0.04);
  g = evl_gather(loop, futs, 3, EVL_GATHER_RETURN_ERRORS);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  CHECK(evl_future_result(g) == NULL);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_future_done(futs[i]), 1);
  CHECK_EQ(evl_future_error(futs[1]), EVL_EIO);
  CHECK(evl_future_result(futs[2]) == &g_value_c);
  release_all_and_close(loop, g, futs, 3);
}

TEST(gather_nothing) {
  evl_loop *loop = test_open();
  evl_future *g = evl_gather(loop, NULL, 0, 0);
  CHECK(g != NULL);
  CHECK_EQ(evl_future_done(g), 1);
  CHECK_EQ(evl_future_error(g), 0);
  CHECK(evl_future_result(g) == NULL);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  release_and_close(loop, g, NULL);
}

TEST(gather_cancel_cancels_children) {
  sleeper_state s = {30.0, 0, 0, 0, 0};
  evl_loop *loop = test_open();
  evl_future *futs[3], *g;
  int i;
  futs[0] = evl_future_new(loop);
  futs[1] = evl_sleep(loop, 30.0, NULL);
  futs[2] = evl_task_create(loop, sleeper, &s, 0);
  g = evl_gather(loop, futs, 3, 0);
  run_until_started(loop, &s.started);
  CHECK_EQ(evl_future_cancel(g), 1);
  CHECK_EQ(evl_run_until_complete(loop, g), EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(g), 1);
  CHECK_EQ(evl_run_until_complete(loop, futs[2]), EVL_ECANCELED);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_future_cancelled(futs[i]), 1);
  CHECK_EQ(s.after, 0);
  release_all_and_close(loop, g, futs, 3);
}

/* ---- evl_sleep and EVL_ASYNC_FAIL ---------------------------------------- */

TEST(sleep_returns_result) {
  evl_loop *loop = test_open();
  double t0 = evl_time(loop);
  evl_future *f = evl_sleep(loop, 0.02, &g_value_b);
  CHECK(f != NULL);
  CHECK_EQ(evl_future_done(f), 0);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK(evl_time(loop) - t0 >= 0.0199);
  CHECK(evl_future_result(f) == &g_value_b);
  release_and_close(loop, f, NULL);
}

TEST(sleep_zero_next_iteration) {
  evl_loop *loop = test_open();
  evl_future *f = evl_sleep(loop, 0, &g_value_a);
  CHECK(f != NULL);
  CHECK_EQ(evl_future_done(f), 0); /* not inline */
  evl_run_once(loop, 0);
  CHECK_EQ(evl_future_done(f), 1);
  CHECK(evl_future_result(f) == &g_value_a);
  release_and_close(loop, f, NULL);
}

static void failing_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  EVL_ASYNC_FAIL(t, EVL_ECONNRESET, "peer went away");
  EVL_ASYNC_END(t);
}

TEST(async_fail) {
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, failing_task, NULL, 0);
  const char *msg;
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECONNRESET);
  CHECK_EQ(evl_future_error(t), EVL_ECONNRESET);
  CHECK_EQ(evl_future_cancelled(t), 0);
  msg = evl_future_error_message(t);
  CHECK(msg != NULL);
  CHECK(strcmp(msg, "peer went away") == 0);
  release_and_close(loop, t, NULL);
}

TEST(gather_child_cancelled) {
  /* asyncio: a cancelled child fails the gather, which is not cancelled. */
  evl_loop *loop = test_open();
  evl_future *futs[2], *g;
  futs[0] = evl_future_new(loop);
  futs[1] = evl_sleep(loop, 0.01, &g_value_a);
  g = evl_gather(loop, futs, 2, 0);
  CHECK_EQ(evl_future_cancel(futs[0]), 1);
  CHECK_EQ(evl_run_until_complete(loop, g), EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(g), 0);
  CHECK_EQ(evl_future_cancelled(futs[1]), 0);
  CHECK_EQ(evl_run_until_complete(loop, futs[1]), 0);
  release_all_and_close(loop, g, futs, 2);
}

TEST(cancel_after_awaited_future_done) {
  /* The awaited future is done but the task has not resumed yet: the
     cancel still wins, as in asyncio (the task is cancelled). */
  awaiting a;
  start_awaiting(&a, 0);
  CHECK_EQ(evl_future_set_result(a.fut, &g_value_a), 0);
  CHECK_EQ(evl_task_cancel(a.t), 1);
  check_awaiter_cancelled(&a, 0);
  awaiting_close(&a);
}

static int g_report_error;
static int g_report_had_future;
static void record_handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)arg;
  g_reports++;
  g_report_error = ctx->error;
  g_report_had_future = ctx->future != NULL;
}

TEST(failed_task_error_reported) {
  /* A fire-and-forget task that fails: nobody retrieves its error, so it
     goes to the exception handler when the task is freed. */
  evl_loop *loop = test_open();
  evl_task *t;
  int i;
  g_reports = 0;
  g_report_error = 0;
  evl_set_exception_handler(loop, record_handler, NULL);
  t = evl_task_create(loop, failing_task, NULL, 0);
  evl_future_release(t);
  for (i = 0; i < 20 && !g_reports; i++)
    evl_run_once(loop, 0.01);
  CHECK_EQ(g_reports, 1);
  CHECK_EQ(g_report_error, EVL_ECONNRESET);
  CHECK_EQ(g_report_had_future, 1);
  test_close_reported(loop, 1);
}

#define NTASKS 2000

typedef struct many_state {
  int i, id;
} many_state;

static void many_task(evl_task *t, void *state) {
  many_state *s = (many_state *)state;
  EVL_ASYNC_BEGIN(t);
  for (s->i = 0; s->i < 3; s->i++) {
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  }
  EVL_ASYNC_RETURN(t, (void *)(intptr_t)(s->id * 3));
  EVL_ASYNC_END(t);
}

TEST(many_tasks) {
  evl_loop *loop = test_open();
  evl_task **ts = (evl_task **)calloc(NTASKS, sizeof *ts);
  evl_future *g;
  many_state s;
  int i, bad = 0;
  CHECK(ts != NULL);
  for (i = 0; i < NTASKS; i++) {
    s.i = 0;
    s.id = i + 1;
    ts[i] = evl_task_create(loop, many_task, &s, sizeof s);
    CHECK(ts[i] != NULL);
  }
  g = evl_gather(loop, ts, NTASKS, 0);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  for (i = 0; i < NTASKS; i++)
    bad += evl_future_result(ts[i]) != (void *)(intptr_t)((i + 1) * 3);
  CHECK_EQ(bad, 0);
  release_all_and_close(loop, g, ts, NTASKS);
  free(ts);
}

typedef struct self_cancel_state {
  int after;
  int err;
  int mode; /* 0: await a long sleep, 1: return at once */
} self_cancel_state;

static void self_cancelling(evl_task *t, void *state) {
  self_cancel_state *s = (self_cancel_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->err = evl_task_cancel(t);
  if (s->mode == 1)
    EVL_ASYNC_RETURN(t, &g_value_a);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 30.0, NULL));
  s->after = 1;
  EVL_ASYNC_END(t);
}

TEST(task_cancels_itself) {
  /* The cancel is delivered at the next await: the 30 s sleep is cut. */
  self_cancel_state s = {0, 0, 0};
  evl_loop *loop = test_open();
  double t0 = evl_time(loop);
  evl_task *t = evl_task_create(loop, self_cancelling, &s, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(s.err, 1);
  CHECK_EQ(s.after, 0);
  CHECK_EQ(evl_future_cancelled(t), 1);
  CHECK(evl_time(loop) - t0 < 10.0);
  release_and_close(loop, t, NULL);
}

TEST(task_cancelled_while_running_then_returns) {
  /* asyncio: a task cancelled while it runs that then returns without
     awaiting again ends cancelled (Task.__step: _must_cancel wins). */
  self_cancel_state s = {0, 0, 1};
  evl_loop *loop = test_open();
  evl_task *t = evl_task_create(loop, self_cancelling, &s, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(s.err, 1);
  CHECK_EQ(evl_future_cancelled(t), 1);
  release_and_close(loop, t, NULL);
}

TESTS_BEGIN
T(task_awaits_sleep)
T(task_awaits_future_set_by_callback)
T(task_awaits_task)
T(await_failing_future_fails_task)
T(await_try_sees_error_and_continues)
T(cancel_task_cancels_awaited_future)
T(cancel_task_with_future_cancel)
T(cancelled_await_try_can_recover)
T(cancel_before_start)
T(task_is_a_future)
T(task_starts_next_iteration)
T(state_is_copied)
T(state_is_passed_through)
T(tasks_interleave)
T(task_name_is_function_name)
T(task_factory)
T(fire_and_forget)
T(wait_for_in_time)
T(wait_for_inner_error)
T(wait_for_times_out)
T(wait_for_task_times_out)
T(wait_for_negative_timeout)
T(wait_for_nan_timeout)
T(gather_all_succeed)
T(gather_takes_own_references)
T(gather_one_fails)
T(gather_return_errors)
T(gather_nothing)
T(gather_cancel_cancels_children)
T(sleep_returns_result)
T(sleep_zero_next_iteration)
T(async_fail)
T(gather_child_cancelled)
T(cancel_after_awaited_future_done)
T(failed_task_error_reported)
T(many_tasks)
T(task_cancels_itself)
T(task_cancelled_while_running_then_returns)
TESTS_END
