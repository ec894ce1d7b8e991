/* evl_wait, as_completed, shield and TaskGroup, with the cancellation
   cases of CPython's test_taskgroups.py and test_tasks.py that apply to
   C. No threads. */
#include "test.h"

#ifndef EVLOOP_NO_COMPOSE

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void set_result_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_set_result((evl_future *)arg, arg);
}
static void set_error_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_set_error((evl_future *)arg, EVL_EIO, "disk");
}

/* ---- wait ---- */

static void make3(evl_loop *loop, evl_future **f) {
  int i;
  for (i = 0; i < 3; i++)
    f[i] = evl_future_new(loop);
}
static void release3(evl_future **f) {
  int i;
  for (i = 0; i < 3; i++)
    evl_future_release(f[i]);
}

TEST(wait_first_completed_reports_done_and_pending) {
  evl_loop *loop = test_open();
  evl_future *f[3], *w;
  make3(loop, f);
  w = evl_wait(loop, f, 3, EVL_FIRST_COMPLETED, INFINITY);
  evl_call_later(loop, 0.02, set_result_cb, f[1]);
  evl_call_later(loop, 0.5, set_result_cb, f[2]);
  CHECK_EQ(evl_run_until_complete(loop, w), 0);
  CHECK_EQ((int)(intptr_t)evl_future_result(w), 1);
  CHECK_EQ(evl_future_done(f[1]), 1);
  CHECK_EQ(evl_future_done(f[0]) + evl_future_done(f[2]), 0); /* pending */
  evl_future_release(w);
  release3(f);
  test_close(loop);
}

TEST(wait_first_exception_and_all_completed) {
  evl_loop *loop = test_open();
  evl_future *f[3], *w, *a;
  make3(loop, f);
  w = evl_wait(loop, f, 3, EVL_FIRST_EXCEPTION, INFINITY);
  a = evl_wait(loop, f, 3, EVL_ALL_COMPLETED, INFINITY);
  evl_call_later(loop, 0.01, set_result_cb, f[0]); /* not an exception */
  evl_call_later(loop, 0.05, set_error_cb, f[1]);
  evl_call_later(loop, 0.5, set_result_cb, f[2]);
  CHECK_EQ(evl_run_until_complete(loop, w), 0);
  CHECK_EQ((int)(intptr_t)evl_future_result(w), 2);
  CHECK_EQ(evl_future_done(f[2]), 0);
  CHECK_EQ(evl_future_done(a), 0);
  CHECK_EQ(evl_run_until_complete(loop, a), 0); /* never fails */
  CHECK_EQ((int)(intptr_t)evl_future_result(a), 3);
  CHECK_EQ(evl_future_error(f[1]), EVL_EIO);
  evl_future_release(w);
  evl_future_release(a);
  release3(f);
  test_close(loop);
}

TEST(wait_timeout_and_cancel_cancel_nothing) {
  evl_loop *loop = test_open();
  evl_future *f[3], *w, *bad;
  make3(loop, f);
  w = evl_wait(loop, f, 3, EVL_ALL_COMPLETED, 0.02);
  CHECK_EQ(evl_run_until_complete(loop, w), 0);
  CHECK_EQ((int)(intptr_t)evl_future_result(w), 0);
  CHECK_EQ(evl_future_done(f[0]), 0); /* not cancelled */
  evl_future_release(w);
  w = evl_wait(loop, f, 3, EVL_ALL_COMPLETED, INFINITY);
  CHECK_EQ(evl_future_cancel(w), 1);
  CHECK_EQ(evl_future_done(f[0]) + evl_future_done(f[1]), 0);
  evl_future_release(w);
  bad = evl_wait(loop, f, 0, EVL_ALL_COMPLETED, 1.0);
  CHECK_EQ(evl_future_error(bad), EVL_EINVAL);
  evl_future_release(bad);
  bad = evl_wait(loop, f, 3, 42, 1.0);
  CHECK_EQ(evl_future_error(bad), EVL_EINVAL);
  evl_future_release(bad);
  bad = evl_wait(loop, f, 3, EVL_ALL_COMPLETED, NAN);
  CHECK_EQ(evl_future_error(bad), EVL_EINVAL);
  evl_future_release(bad);
  release3(f);
  test_close(loop);
}

/* ---- as_completed ---- */

TEST(as_completed_order_and_timeout) {
  evl_loop *loop = test_open();
  evl_future *f[3], *n;
  evl_as_completed *ac;
  make3(loop, f);
  ac = evl_as_completed_new(loop, f, 3, 0.5);
  CHECK(ac != NULL);
  evl_call_later(loop, 0.04, set_result_cb, f[2]);
  evl_call_later(loop, 0.01, set_error_cb, f[1]);
  n = evl_as_completed_next(ac);
  CHECK_EQ(evl_run_until_complete(loop, n), 0);
  CHECK(evl_future_result(n) == f[1]);
  evl_future_release(n);
  n = evl_as_completed_next(ac);
  CHECK_EQ(evl_run_until_complete(loop, n), 0);
  CHECK(evl_future_result(n) == f[2]);
  evl_future_release(n);
  n = evl_as_completed_next(ac); /* f[0] never completes */
  CHECK_EQ(evl_run_until_complete(loop, n), EVL_ETIMEDOUT);
  evl_future_release(n);
  n = evl_as_completed_next(ac);
  CHECK_EQ(evl_future_error(n), EVL_EINVALSTATE);
  evl_future_release(n);
  CHECK_EQ(evl_future_done(f[0]), 0); /* not cancelled */
  CHECK_EQ(evl_future_error(f[1]), EVL_EIO);
  evl_as_completed_free(ac);
  CHECK(evl_as_completed_new(loop, f, 0, 1.0) == NULL);
  release3(f);
  test_close(loop);
}

/* ---- shield ---- */

TEST(shield_keeps_inner_running) {
  evl_loop *loop = test_open();
  evl_future *inner = evl_future_new(loop), *outer, *o2;
  outer = evl_shield(inner);
  CHECK_EQ(evl_future_cancel(outer), 1);
  CHECK_EQ(evl_future_cancelled(outer), 1);
  CHECK_EQ(evl_future_done(inner), 0);
  o2 = evl_shield(inner);
  evl_call_later(loop, 0.01, set_result_cb, inner);
  CHECK_EQ(evl_run_until_complete(loop, o2), 0);
  CHECK(evl_future_result(o2) == inner);
  evl_future_release(outer);
  evl_future_release(o2);
  evl_future_release(inner);
  test_close(loop);
}

/* ---- TaskGroup ---- */

typedef struct kid_state {
  double delay;
  int fail; /* error to fail with after the delay, or 0 */
  int *ended, *cancelled;
} kid_state;

static void kid(evl_task *t, void *state) {
  kid_state *k = (kid_state *)state;
  EVL_ASYNC_BEGIN(t);
  if (k->delay > 0) /* 0: fail at the first step, with no await */
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), k->delay, NULL));
  if (k->fail)
    EVL_ASYNC_FAIL(t, k->fail, "child failed");
  EVL_FINALLY(t);
  (*k->ended)++;
  if (evl_await_error(t) == EVL_ECANCELED)
    (*k->cancelled)++;
  EVL_ASYNC_END(t);
}

typedef struct parent_state {
  evl_task_group *g;
  kid_state kids[4];
  int nkids, ended, cancelled, parent_err, wait_err, others;
  double parent_sleep;
} parent_state;

/* async with TaskGroup() as g: create the children; sleep; then the end
   of the block waits (here in the finally section, so a cancel of the
   parent by the group still waits for the children). */
static void parent(evl_task *t, void *state) {
  parent_state *p = (parent_state *)state;
  int i;
  EVL_ASYNC_BEGIN(t);
  p->g = evl_task_group_new(evl_task_loop(t), t);
  for (i = 0; i < p->nkids; i++) {
    p->kids[i].ended = &p->ended;
    p->kids[i].cancelled = &p->cancelled;
    evl_future_release(
        evl_task_group_create(p->g, kid, &p->kids[i], sizeof p->kids[i]));
  }
  if (p->parent_sleep > 0)
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), p->parent_sleep, NULL));
  EVL_FINALLY(t);
  p->parent_err = evl_await_error(t);
  EVL_AWAIT_TRY(t, evl_task_group_wait(p->g));
  p->wait_err = evl_await_error(t);
  p->others = evl_task_group_others_failed(p->g);
  evl_task_group_free(p->g);
  if (p->wait_err)
    EVL_ASYNC_FAIL(t, p->wait_err, "group failed");
  EVL_ASYNC_END(t);
}

static parent_state *new_parent(int nkids, const double *delays,
                                const int *fails, double parent_sleep) {
  parent_state *p = (parent_state *)calloc(1, sizeof *p);
  int i;
  p->nkids = nkids;
  p->parent_sleep = parent_sleep;
  for (i = 0; i < nkids; i++) {
    p->kids[i].delay = delays[i];
    p->kids[i].fail = fails ? fails[i] : 0;
  }
  return p;
}

TEST(taskgroup_waits_for_all_children) {
  evl_loop *loop = test_open();
  static const double d[3] = {0.01, 0.03, 0.02};
  parent_state *p = new_parent(3, d, NULL, 0);
  evl_task *t = evl_task_create(loop, parent, p, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(p->ended, 3);
  CHECK_EQ(p->cancelled, 0);
  CHECK_EQ(p->wait_err, 0);
  evl_future_release(t);
  free(p);
  test_close(loop);
}

/* test_taskgroup_03 / _07: a child fails while the parent awaits something
   else: the other children and the parent are cancelled, the group
   reports the error. */
TEST(taskgroup_child_failure_cancels_siblings_and_parent) {
  evl_loop *loop = test_open();
  static const double d[3] = {0.01, 0.5, 0.5};
  static const int fails[3] = {EVL_ECONNRESET, 0, 0};
  parent_state *p = new_parent(3, d, fails, 1.0);
  evl_task *t = evl_task_create(loop, parent, p, 0);
  double t0 = evl_time(loop);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECONNRESET);
  CHECK(evl_time(loop) - t0 < 0.4);
  CHECK_EQ(p->parent_err, EVL_ECANCELED); /* its sleep was cancelled */
  CHECK_EQ(p->wait_err, EVL_ECONNRESET);
  CHECK_EQ(p->ended, 3);
  CHECK_EQ(p->cancelled, 2);
  CHECK_EQ(p->others, 0);
  evl_future_release(t);
  free(p);
  test_close(loop);
}

TEST(taskgroup_counts_other_failures) {
  evl_loop *loop = test_open();
  static const double d[3] = {0, 0, 0.3}; /* both fail in one iteration */
  static const int fails[3] = {EVL_EIO, EVL_EPIPE, 0};
  parent_state *p = new_parent(3, d, fails, 0);
  evl_task *t = evl_task_create(loop, parent, p, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_EIO);
  CHECK_EQ(p->others, 1);
  CHECK_EQ(p->cancelled, 1);
  evl_future_release(t);
  free(p);
  test_close(loop);
}

/* test_taskgroup_05/_06: cancelling the task that waits on the group
   cancels the children; the wait ends cancelled once they have ended. */
TEST(taskgroup_parent_cancel_cancels_children) {
  evl_loop *loop = test_open();
  static const double d[2] = {0.5, 0.5};
  parent_state *p = new_parent(2, d, NULL, 0);
  evl_task *t = evl_task_create(loop, parent, p, 0);
  evl_future *s = evl_sleep(loop, 0.02, NULL);
  evl_run_until_complete(loop, s);
  evl_future_release(s);
  CHECK_EQ(evl_task_cancel(t), 1);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(p->wait_err, EVL_ECANCELED);
  CHECK_EQ(p->ended, 2); /* no child outlived the group */
  CHECK_EQ(p->cancelled, 2);
  evl_future_release(t);
  free(p);
  test_close(loop);
}

TEST(taskgroup_no_children_after_failure_and_free_cancels) {
  evl_loop *loop = test_open();
  evl_task_group *g = evl_task_group_new(loop, NULL);
  kid_state k[2];
  int ended = 0, cancelled = 0, i;
  evl_future *w;
  for (i = 0; i < 2; i++) {
    k[i].delay = i ? 1.0 : 0.01;
    k[i].fail = i ? 0 : EVL_EIO;
    k[i].ended = &ended;
    k[i].cancelled = &cancelled;
    evl_future_release(evl_task_group_create(g, kid, &k[i], sizeof k[i]));
  }
  w = evl_task_group_wait(g);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_EIO);
  CHECK_EQ(evl_task_group_error(g), EVL_EIO);
  CHECK(evl_task_group_create(g, kid, &k[0], sizeof k[0]) == NULL);
  evl_future_release(w);
  evl_task_group_free(g);
  /* a group freed with a child still running cancels it */
  g = evl_task_group_new(loop, NULL);
  evl_future_release(evl_task_group_create(g, kid, &k[1], sizeof k[1]));
  evl_run_once(loop, 0);
  ended = cancelled = 0;
  evl_task_group_free(g);
  for (i = 0; i < 3; i++)
    evl_run_once(loop, 0);
  CHECK_EQ(ended, 1);
  CHECK_EQ(cancelled, 1);
  test_close(loop);
}

/* asyncio: an error in the body of `async with TaskGroup()` aborts the
   group; the children are cancelled and waited for, the task ends with the
   body's error. */
typedef struct body_fail {
  evl_task_group *g;
  kid_state k[2];
  int ended, cancelled, wait_err;
} body_fail;

static void failing_body(evl_task *t, void *state) {
  body_fail *b = (body_fail *)state;
  int i;
  EVL_ASYNC_BEGIN(t);
  b->g = evl_task_group_new(evl_task_loop(t), t);
  for (i = 0; i < 2; i++) {
    b->k[i].delay = 1.0;
    b->k[i].ended = &b->ended;
    b->k[i].cancelled = &b->cancelled;
    evl_future_release(
        evl_task_group_create(b->g, kid, &b->k[i], sizeof b->k[i]));
  }
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  EVL_ASYNC_FAIL(t, EVL_EPIPE, "body failed");
  EVL_FINALLY(t);
  EVL_AWAIT_TRY(t, evl_task_group_wait(b->g));
  b->wait_err = evl_await_error(t);
  evl_task_group_free(b->g);
  EVL_ASYNC_END(t);
}

TEST(taskgroup_body_error_cancels_children) {
  evl_loop *loop = test_open();
  body_fail b;
  evl_task *t;
  double t0 = evl_time(loop);
  memset(&b, 0, sizeof b);
  t = evl_task_create(loop, failing_body, &b, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_EPIPE);
  CHECK(evl_time(loop) - t0 < 0.5);
  CHECK_EQ(b.ended, 2);
  CHECK_EQ(b.cancelled, 2);
  CHECK_EQ(b.wait_err, 0);
  evl_future_release(t);
  test_close(loop);
}

TESTS_BEGIN
T(wait_first_completed_reports_done_and_pending)
T(wait_first_exception_and_all_completed)
T(wait_timeout_and_cancel_cancel_nothing)
T(as_completed_order_and_timeout)
T(shield_keeps_inner_running)
T(taskgroup_waits_for_all_children)
T(taskgroup_child_failure_cancels_siblings_and_parent)
T(taskgroup_counts_other_failures)
T(taskgroup_parent_cancel_cancels_children)
T(taskgroup_no_children_after_failure_and_free_cancels)
T(taskgroup_body_error_cancels_children)
TESTS_END
#else
TESTS_LEFT_OUT(
    "built with EVLOOP_NO_COMPOSE: no wait, as_completed, shield, TaskGroup")
#endif
