/* A task's cleanup (EVL_FINALLY and evl_task_set_cleanup) runs exactly once
   however the task ends; closing or freeing a loop runs pending tasks to
   their end; evl_timeout scopes; introspection (current task, all tasks,
   names, await sites). No threads. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_value = 7;

typedef struct fin_state {
  int how; /* what the body does, see finisher() */
  int body_done, finally_runs, cleanups, after_finally_await;
  char *buf; /* owned: freed by the finally section */
  evl_future *gate;
  evl_timeout *to;
  void *result;     /* run_finisher: the task's result */
  char message[32]; /* run_finisher: its error message, "" if none */
} fin_state;

enum {
  BODY_RETURN,
  BODY_FALL,
  BODY_FAIL,
  BODY_AWAIT_FAIL,
  BODY_WAIT,
  BODY_FINALLY_AWAITS,
  BODY_FINALLY_FAILS,
  BODY_TIMEOUT
};

static void fin_cleanup(evl_task *t, void *state) {
  (void)t;
  ((fin_state *)state)->cleanups++;
}

static void finisher(evl_task *t, void *state) {
  fin_state *s = (fin_state *)state;
  evl_loop *loop = evl_task_loop(t);
  EVL_ASYNC_BEGIN(t);
  s->buf = (char *)malloc(976);
  if (s->how == BODY_TIMEOUT)
    s->to = evl_timeout_new(t, 0.02);
  EVL_AWAIT(t, evl_sleep(loop, 0, NULL));
  if (s->how == BODY_RETURN)
    EVL_ASYNC_RETURN(t, &g_value);
  if (s->how == BODY_FAIL)
    EVL_ASYNC_FAIL(t, EVL_ECONNRESET, "peer went away");
  if (s->how == BODY_AWAIT_FAIL) {
    evl_future *f = evl_future_new(loop);
    evl_future_set_error(f, EVL_EIO, "disk");
    EVL_AWAIT(t, f);
  }
  if (s->how >= BODY_WAIT)
    EVL_AWAIT(t, evl_future_ref(s->gate)); /* until cancelled */
  s->body_done = 1;
  EVL_FINALLY(t);
  s->finally_runs++;
  free(s->buf);
  s->buf = NULL;
  if (s->how == BODY_FINALLY_AWAITS) {
    EVL_AWAIT(t, evl_sleep(loop, 0.01, NULL));
    s->after_finally_await = 1;
  }
  if (s->how == BODY_FINALLY_FAILS)
    EVL_ASYNC_FAIL(t, EVL_EPIPE, "cleanup failed");
  EVL_ASYNC_END(t);
}

/* Runs the loop for delay seconds, then cancels t (which must not be done
   yet). */
static void sleep_then_cancel(evl_loop *loop, evl_task *t, double delay) {
  evl_future *sl = evl_sleep(loop, delay, NULL);
  CHECK_EQ(evl_run_until_complete(loop, sl), 0);
  evl_future_release(sl);
  CHECK_EQ(evl_task_cancel(t), 1);
}

/* Zeroes *s and creates a finisher doing how, with fin_cleanup as its
   cleanup; the caller releases the task and s->gate. */
static evl_task *fin_task_new(evl_loop *loop, fin_state *s, int how) {
  evl_task *t;
  memset(s, 0, sizeof *s);
  s->how = how;
  s->gate = evl_future_new(loop);
  t = evl_task_create(loop, finisher, s, 0);
  CHECK(t != NULL);
  CHECK_EQ(evl_task_set_cleanup(t, fin_cleanup), 0);
  return t;
}

/* What each body (indexed by how) must give: the task's outcome, its
   result (&g_value or NULL), whether the body reached its end and the
   finally section's await completed, and its error message (NULL: not
   checked). The bodies that wait are cancelled after 20 ms. */
static const struct finisher_expect {
  int cancel, rc, returns_value, body_done, after_finally_await;
  const char *message;
} finisher_expect[] = {
    [BODY_RETURN] = {0, 0, 1, 0, 0, NULL}, /* the result survives */
    [BODY_FALL] = {0, 0, 0, 1, 0, NULL},
    [BODY_FAIL] = {0, EVL_ECONNRESET, 0, 0, 0, "peer went away"},
    [BODY_AWAIT_FAIL] = {0, EVL_EIO, 0, 0, 0, NULL},
    [BODY_WAIT] = {1, EVL_ECANCELED, 0, 0, 0, NULL},
    [BODY_FINALLY_AWAITS] = {1, EVL_ECANCELED, 0, 0, 1, NULL},
    /* the section's error replaces the cancel */
    [BODY_FINALLY_FAILS] = {1, EVL_EPIPE, 0, 0, 0, "cleanup failed"},
    [BODY_TIMEOUT] = {0, EVL_ETIMEDOUT, 0, 0, 0, NULL},
};

/* Runs a finisher doing how to its end and checks it against
   finisher_expect[how]; its finally section and its cleanup ran once
   each, whatever the body did. */
static void run_finisher(int how) {
  const struct finisher_expect *e = &finisher_expect[how];
  evl_loop *loop = test_open();
  fin_state s;
  evl_task *t = fin_task_new(loop, &s, how);
  if (e->cancel)
    sleep_then_cancel(loop, t, 0.02);
  CHECK_EQ(evl_run_until_complete(loop, t), e->rc);
  CHECK_EQ(evl_future_error(t), e->rc);
  CHECK(evl_future_result(t) == (e->returns_value ? &g_value : NULL));
  if (e->message)
    CHECK(strcmp(evl_future_error_message(t), e->message) == 0);
  CHECK_EQ(evl_task_set_cleanup(t, fin_cleanup), EVL_EINVALSTATE);
  evl_future_release(t);
  evl_future_release(s.gate);
  test_close(loop);
  CHECK(s.buf == NULL);
  CHECK_EQ(s.finally_runs, 1);
  CHECK_EQ(s.cleanups, 1);
  CHECK_EQ(s.body_done, e->body_done);
  CHECK_EQ(s.after_finally_await, e->after_finally_await);
}

TEST(finally_after_return) {
  run_finisher(BODY_RETURN);
}
TEST(finally_after_falling_through) {
  run_finisher(BODY_FALL);
}
TEST(finally_after_fail_keeps_message) {
  run_finisher(BODY_FAIL);
}
TEST(finally_after_failed_await) {
  run_finisher(BODY_AWAIT_FAIL);
}
TEST(finally_after_cancel) {
  run_finisher(BODY_WAIT);
}
TEST(finally_may_await_after_cancel) {
  run_finisher(BODY_FINALLY_AWAITS);
}
TEST(finally_error_replaces_outcome) {
  run_finisher(BODY_FINALLY_FAILS);
}
TEST(finally_after_timeout) {
  run_finisher(BODY_TIMEOUT);
}

TEST(cancel_before_start_skips_body_runs_cleanup) {
  evl_loop *loop = test_open();
  fin_state s;
  evl_task *t = fin_task_new(loop, &s, BODY_RETURN);
  CHECK_EQ(evl_task_cancel(t), 1);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(s.finally_runs, 0); /* asyncio: the coroutine never started */
  CHECK_EQ(s.cleanups, 1);
  CHECK(s.buf == NULL);
  evl_future_release(t);
  evl_future_release(s.gate);
  test_close(loop);
}

/* Closing or freeing the loop with pending tasks: each is cancelled and
   run to its end, finally sections (awaits included) and cleanups; the
   user's pending callbacks are still discarded. */
static int g_cb_ran;
static void mark_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  g_cb_ran++;
}

static void run_free_with_pending(int how, int use_close) {
  evl_loop *loop = test_open();
  fin_state s[3];
  int i;
  g_cb_ran = 0;
  for (i = 0; i < 3; i++) /* fire and forget */
    evl_future_release(fin_task_new(loop, &s[i], how));
  CHECK_EQ(evl_run_once(loop, 0), 3); /* all three start */
  CHECK_EQ(evl_run_once(loop, 0.1) > 0, 1);
  CHECK(evl_call_soon(loop, mark_cb, NULL) > 0);
  CHECK(evl_call_later(loop, 0.001, mark_cb, NULL) > 0);
  for (i = 0; i < 3; i++)
    evl_future_release(s[i].gate);
  if (use_close)
    CHECK_EQ(evl_loop_close(loop), 0);
  test_close(loop);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(s[i].finally_runs, 1);
    CHECK_EQ(s[i].cleanups, 1);
    CHECK(s[i].buf == NULL); /* ASan would also see the leak */
    CHECK_EQ(s[i].after_finally_await, how == BODY_FINALLY_AWAITS);
  }
  CHECK_EQ(g_cb_ran, 0);
}

TEST(loop_free_runs_pending_tasks_to_their_end) {
  run_free_with_pending(BODY_WAIT, 0);
}
TEST(loop_close_runs_finally_with_awaits) {
  run_free_with_pending(BODY_FINALLY_AWAITS, 1);
}

/* A task whose cleanup starts another task: that one is cancelled too. */
typedef struct spawner_state {
  int *ends;
  int spawn;
} spawner_state;
static void spawner(evl_task *t, void *state) {
  spawner_state *s = (spawner_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_future_new(evl_task_loop(t))); /* forever */
  EVL_FINALLY(t);
  (*s->ends)++;
  if (s->spawn) {
    spawner_state k;
    k.ends = s->ends;
    k.spawn = 0;
    evl_future_release(
        evl_task_create(evl_task_loop(t), spawner, &k, sizeof k));
  }
  EVL_ASYNC_END(t);
}

TEST(loop_free_cancels_tasks_started_by_cleanup) {
  evl_loop *loop = test_open();
  spawner_state s;
  int ends = 0;
  s.ends = &ends;
  s.spawn = 1;
  evl_future_release(evl_task_create(loop, spawner, &s, sizeof s));
  evl_run_once(loop, 0);
  test_close(loop);
  CHECK_EQ(ends, 2);
}

/* ---- timeouts ------------------------------------------------------------ */

/* Runs fn(state) as a task on loop to its end and releases it; a done
   task takes no new deadline. Returns the task's outcome (0 or its
   error). */
static int run_task(evl_loop *loop, evl_task_fn fn, void *state) {
  evl_task *t = evl_task_create(loop, fn, state, 0);
  int rc;
  CHECK(t != NULL);
  rc = evl_run_until_complete(loop, t);
  CHECK(evl_timeout_new(t, 1.0) == NULL);
  evl_future_release(t);
  return rc;
}

typedef struct to_state {
  int step, err, expired, end_rc;
  double moved_to;
  evl_timeout *to;
} to_state;

/* Moves the deadline later, then removes it: the sleeps outlast the
   first deadline but the task is not timed out. */
static void rescheduler(evl_task *t, void *state) {
  to_state *s = (to_state *)state;
  evl_loop *loop = evl_task_loop(t);
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_new(t, 0.1);
  CHECK(s->to != NULL);
  CHECK(evl_timeout_when(s->to) > 0);
  EVL_AWAIT(t, evl_sleep(loop, 0.01, NULL));
  CHECK_EQ(evl_timeout_reschedule(s->to, evl_time(loop) + 0.3), 0);
  EVL_AWAIT(t, evl_sleep(loop, 0.15, NULL)); /* past the first deadline */
  s->step = 1;
  CHECK_EQ(evl_timeout_reschedule(s->to, INFINITY), 0);
  CHECK(evl_timeout_when(s->to) == -1.0);
  EVL_AWAIT(t, evl_sleep(loop, 0.3, NULL)); /* past the second one */
  s->step = 2;
  s->expired = evl_timeout_expired(s->to);
  s->end_rc = evl_timeout_end(s->to);
  EVL_ASYNC_END(t);
}

TEST(timeout_moved_and_removed) {
  evl_loop *loop = test_open();
  to_state s = {0};
  CHECK_EQ(run_task(loop, rescheduler, &s), 0);
  CHECK_EQ(s.step, 2);
  CHECK_EQ(s.expired, 0);
  CHECK_EQ(s.end_rc, 0);
  test_close(loop);
}

/* The deadline spans several awaits; the one in progress when it passes
   sees EVL_ETIMEDOUT; EVL_AWAIT_TRY lets the task go on. */
static void spanner(evl_task *t, void *state) {
  to_state *s = (to_state *)state;
  evl_loop *loop = evl_task_loop(t);
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_new(t, 0.2);
  EVL_AWAIT(t, evl_sleep(loop, 0.01, NULL));
  s->step = 1;
  EVL_AWAIT(t, evl_sleep(loop, 0.01, NULL));
  s->step = 2;
  EVL_AWAIT_TRY(t, evl_sleep(loop, 5.0, NULL));
  s->err = evl_await_error(t);
  s->expired = evl_timeout_expired(s->to);
  s->end_rc = evl_timeout_end(s->to);
  EVL_AWAIT(t, evl_sleep(loop, 0, NULL)); /* no cancel left behind */
  s->step = 3;
  EVL_ASYNC_END(t);
}

TEST(timeout_spans_awaits) {
  evl_loop *loop = test_open();
  to_state s = {0};
  double t0 = evl_time(loop);
  CHECK_EQ(run_task(loop, spanner, &s), 0);
  CHECK_EQ(s.step, 3);
  CHECK_EQ(s.err, EVL_ETIMEDOUT);
  CHECK_EQ(s.expired, 1);
  CHECK_EQ(s.end_rc, EVL_ETIMEDOUT);
  CHECK(evl_time(loop) - t0 < 4.0);
  test_close(loop);
}

/* A deadline already past: the first await times out (asyncio). And a
   cancel from outside stays a cancel, not a timeout. */
static void past_deadline(evl_task *t, void *state) {
  to_state *s = (to_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_at(t, evl_time(evl_task_loop(t)) - 1.0);
  EVL_AWAIT_TRY(t, evl_sleep(evl_task_loop(t), 1.0, NULL));
  s->err = evl_await_error(t);
  EVL_ASYNC_END(t);
}

TEST(timeout_in_the_past_and_bad_input) {
  evl_loop *loop = test_open();
  to_state s = {0};
  CHECK_EQ(run_task(loop, past_deadline, &s), 0); /* checks: task done */
  CHECK_EQ(s.err, EVL_ETIMEDOUT);
  CHECK(evl_timeout_new(NULL, 1.0) == NULL);
  CHECK_EQ(evl_timeout_reschedule(NULL, 1.0), EVL_EINVAL);
  CHECK_EQ(evl_timeout_end(NULL), EVL_EINVAL);
  test_close(loop);
}

static void outside_cancel(evl_task *t, void *state) {
  to_state *s = (to_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_new(t, 10.0);
  CHECK(evl_timeout_new(t, NAN) == NULL);
  EVL_AWAIT_TRY(t, evl_sleep(evl_task_loop(t), 1.0, NULL));
  s->err = evl_await_error(t);
  s->end_rc = evl_timeout_end(s->to);
  EVL_ASYNC_END(t);
}

TEST(timeout_outside_cancel_stays_cancel) {
  evl_loop *loop = test_open();
  to_state s = {0};
  evl_task *t = evl_task_create(loop, outside_cancel, &s, 0);
  sleep_then_cancel(loop, t, 0.01);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(s.err, EVL_ECANCELED);
  CHECK_EQ(s.end_rc, 0);
  evl_future_release(t);
  test_close(loop);
}

/* ---- introspection ------------------------------------------------------- */

typedef struct intro_state {
  evl_task *seen_current;
  evl_future *gate;
} intro_state;

static void introspected(evl_task *t, void *state) {
  intro_state *s = (intro_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->seen_current = evl_current_task(evl_task_loop(t));
  EVL_AWAIT(t, evl_future_ref(s->gate));
  EVL_ASYNC_END(t);
}

static int g_logged;
static char g_last_log[512];
static void count_log(evl_loop *loop, const char *msg, void *ctx) {
  (void)loop;
  (void)ctx;
  g_logged++;
  snprintf(g_last_log, sizeof g_last_log, "%s", msg);
}

TEST(current_task_all_tasks_names_dump) {
  evl_loop_config cfg;
  evl_loop *loop;
  intro_state s[3];
  evl_task *t[3], *it;
  char name[32];
  int i, n, line;
  const char *file;
  memset(&cfg, 0, sizeof cfg);
  cfg.log = count_log;
  cfg.debug = -1;
  loop = test_open_with(&cfg);
  CHECK(evl_current_task(loop) == NULL);
  for (i = 0; i < 3; i++) {
    s[i].gate = evl_future_new(loop);
    t[i] = evl_task_create(loop, introspected, &s[i], 0);
  }
  CHECK(strcmp(evl_task_name(t[0]), "introspected") == 0);
  snprintf(name, sizeof name, "worker-1");
  CHECK_EQ(evl_task_set_name(t[1], name), 0);
  name[0] = 'X'; /* copied */
  CHECK(strcmp(evl_task_name(t[1]), "worker-1") == 0);
  CHECK_EQ(evl_task_set_name(t[1], NULL), EVL_EINVAL);
  CHECK_EQ(evl_task_set_name(NULL, "x"), EVL_EINVAL);
  evl_run_once(loop, 0);
  for (i = 0; i < 3; i++)
    CHECK(s[i].seen_current == t[i]);
  CHECK(evl_current_task(loop) == NULL);
  n = 0;
  for (it = evl_task_next(loop, NULL); it; it = evl_task_next(loop, it))
    n++;
  CHECK_EQ(n, 3);
  file = evl_task_await_site(t[2], &line);
  CHECK(file != NULL && strstr(file, "t_finally.c") != NULL);
  CHECK(line > 0);
  g_logged = 0;
  CHECK_EQ(evl_dump_tasks(loop), 3);
  CHECK_EQ(g_logged, 3);
  CHECK(strstr(g_last_log, "t_finally.c:") != NULL);
  evl_future_set_result(s[0].gate, NULL);
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  n = 0;
  for (it = evl_task_next(loop, NULL); it; it = evl_task_next(loop, it))
    n++;
  CHECK_EQ(n, 2);
  /* debug mode at close: the pending ones are listed */
  evl_set_debug(loop, 1);
  g_logged = 0;
  for (i = 0; i < 3; i++) {
    evl_future_release(t[i]);
    evl_future_release(s[i].gate);
  }
  test_close(loop);
  CHECK(g_logged >= 3); /* the summary line and one per pending task */
}

/* ---- macros: several awaits on one line, EVL_AWAIT_AS ------------------- */

typedef struct two_state {
  int *value;
  int steps;
} two_state;

#define TWO_SLEEPS(t, s)                                                       \
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));                          \
  (s)->steps++;                                                                \
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));                          \
  (s)->steps++

static void two_awaits(evl_task *t, void *state) {
  two_state *s = (two_state *)state;
  EVL_ASYNC_BEGIN(t);
  TWO_SLEEPS(t, s);
  EVL_AWAIT_AS(t, int *, s->value, evl_sleep(evl_task_loop(t), 0, &g_value));
  EVL_ASYNC_END(t);
}

TEST(awaits_sharing_a_line_and_await_as) {
  evl_loop *loop = test_open();
  two_state s = {NULL, 0};
  CHECK_EQ(run_task(loop, two_awaits, &s), 0);
  CHECK_EQ(s.steps, 2);
  CHECK(s.value == &g_value);
  test_close(loop);
}

/* In the finally section the task can tell why it is ending; the body's
   deadlines do not reach into the section (asyncio leaves the timeout
   scope before the outer finally). */
typedef struct why_state {
  int fail, why, after_sleep;
  evl_timeout *to;
} why_state;

static void why_task(evl_task *t, void *state) {
  why_state *s = (why_state *)state;
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_new(t, 0.1);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  if (s->fail)
    EVL_ASYNC_FAIL(t, EVL_EIO, NULL);
  EVL_FINALLY(t);
  s->why = evl_task_finally_error(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.15, NULL)); /* past 0.1 */
  s->after_sleep = 1;
  CHECK_EQ(evl_timeout_end(s->to), 0);
  EVL_ASYNC_END(t);
}

TEST(finally_knows_why_and_escapes_body_deadline) {
  evl_loop *loop = test_open();
  why_state failing = {1, 0, 0, NULL}, falling = {0, 0, 0, NULL};
  CHECK_EQ(run_task(loop, why_task, &failing), EVL_EIO);
  CHECK_EQ(failing.why, EVL_EIO);
  CHECK_EQ(failing.after_sleep, 1);
  CHECK_EQ(run_task(loop, why_task, &falling), 0); /* fell through */
  CHECK_EQ(falling.why, 0);
  CHECK_EQ(evl_task_finally_error(NULL), EVL_EINVAL);
  test_close(loop);
}

/* CPython test_timeouts.py cases, in one task each. */
typedef struct tcase {
  int which, err1, err2, end1, end2, exp1, exp2, fin_err;
  evl_timeout *a, *b;
  double t0, t1;
} tcase;

static void timeout_cases(evl_task *t, void *state) {
  tcase *c = (tcase *)state;
  evl_loop *loop = evl_task_loop(t);
  EVL_ASYNC_BEGIN(t);
  c->t0 = evl_time(loop);
  switch (c->which) {
  case 0: /* test_nested_timeouts: both expire, the await times out */
    c->a = evl_timeout_new(t, 0.01);
    c->b = evl_timeout_at(t, evl_timeout_when(c->a));
    break;
  case 1: /* test_timeout_zero_sleep_zero */
    c->a = evl_timeout_new(t, 0);
    break;
  case 2: /* test_nested_timeouts_loop_busy: inner expires, is handled;
             the outer one still stops a later await */
    c->a = evl_timeout_new(t, 0.1);
    c->b = evl_timeout_new(t, 0.01);
    break;
  case 3: /* test_cancel_in_timeout_after_cancellation: a cancel inside a
             scope that did not expire stays a cancel */
    c->a = evl_timeout_new(t, 1.0);
    evl_task_cancel(t);
    break;
  }
  EVL_AWAIT_TRY(t, evl_sleep(loop, c->which == 1 ? 0 : 10.0, NULL));
  c->err1 = evl_await_error(t);
  if (c->b) {
    c->exp2 = evl_timeout_expired(c->b);
    c->end2 = evl_timeout_end(c->b);
  }
  if (c->which == 2) {
    EVL_AWAIT_TRY(t, evl_sleep(loop, 10.0, NULL));
    c->err2 = evl_await_error(t);
  }
  c->exp1 = evl_timeout_expired(c->a);
  c->end1 = evl_timeout_end(c->a);
  c->t1 = evl_time(loop);
  EVL_ASYNC_END(t);
}

static void run_case(tcase *c, int which) {
  evl_loop *loop = test_open();
  memset(c, 0, sizeof *c);
  c->which = which;
  CHECK_EQ(run_task(loop, timeout_cases, c), 0); /* never cancelled */
  CHECK(c->t1 - c->t0 < 1.0);
  test_close(loop);
}

TEST(timeout_cases_from_cpython) {
  tcase c;
  run_case(&c, 0);
  CHECK_EQ(c.err1, EVL_ETIMEDOUT);
  CHECK_EQ(c.exp1 + c.exp2, 2);
  CHECK_EQ(c.end1, EVL_ETIMEDOUT);
  run_case(&c, 1);
  CHECK_EQ(c.err1, EVL_ETIMEDOUT);
  CHECK_EQ(c.exp1, 1);
  run_case(&c, 2);
  CHECK_EQ(c.err1, EVL_ETIMEDOUT);
  CHECK_EQ(c.exp2, 1);
  CHECK_EQ(c.end2, EVL_ETIMEDOUT);
  CHECK_EQ(c.err2, EVL_ETIMEDOUT);
  CHECK_EQ(c.exp1, 1);
  CHECK(c.t1 - c.t0 >= 0.099);
  run_case(&c, 3);
  CHECK_EQ(c.err1, EVL_ECANCELED);
  CHECK_EQ(c.exp1, 0);
  CHECK_EQ(c.end1, 0);
}

/* test_nested_timeout_in_finally and test_timeout_after_cancellation: a
   scope opened in the finally section works, after a timeout or a cancel
   ended the body. */
typedef struct fin_to {
  int cancel, fin_err, fin_end;
  evl_timeout *body, *fin;
} fin_to;

static void timeout_in_finally(evl_task *t, void *state) {
  fin_to *s = (fin_to *)state;
  EVL_ASYNC_BEGIN(t);
  if (s->cancel)
    evl_task_cancel(t);
  else
    s->body = evl_timeout_new(t, 0.01);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 10.0, NULL));
  EVL_FINALLY(t);
  s->fin = evl_timeout_new(t, s->cancel ? 0.0 : 0.01);
  EVL_AWAIT_TRY(t, evl_sleep(evl_task_loop(t), 10.0, NULL));
  s->fin_err = evl_await_error(t);
  s->fin_end = evl_timeout_end(s->fin);
  EVL_ASYNC_END(t);
}

TEST(timeout_inside_finally_section) {
  evl_loop *loop = test_open();
  fin_to s;
  int cancel;
  for (cancel = 0; cancel < 2; cancel++) {
    memset(&s, 0, sizeof s);
    s.cancel = cancel;
    CHECK_EQ(run_task(loop, timeout_in_finally, &s),
             cancel ? EVL_ECANCELED : EVL_ETIMEDOUT);
    CHECK_EQ(s.fin_err, EVL_ETIMEDOUT);
    CHECK_EQ(s.fin_end, EVL_ETIMEDOUT);
  }
  test_close(loop);
}

TESTS_BEGIN
T(finally_after_return)
T(finally_after_falling_through)
T(finally_after_fail_keeps_message)
T(finally_after_failed_await)
T(finally_after_cancel)
T(finally_may_await_after_cancel)
T(finally_error_replaces_outcome)
T(finally_after_timeout)
T(cancel_before_start_skips_body_runs_cleanup)
T(loop_free_runs_pending_tasks_to_their_end)
T(loop_close_runs_finally_with_awaits)
T(loop_free_cancels_tasks_started_by_cleanup)
T(timeout_moved_and_removed)
T(timeout_spans_awaits)
T(timeout_in_the_past_and_bad_input)
T(timeout_outside_cancel_stays_cancel)
T(current_task_all_tasks_names_dump)
T(awaits_sharing_a_line_and_await_as)
T(finally_knows_why_and_escapes_body_deadline)
T(timeout_cases_from_cpython)
T(timeout_inside_finally_section)
TESTS_END
