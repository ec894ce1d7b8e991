/* The cancellation cases of CPython's test_locks.py, test_queues.py,
   test_taskgroups.py and test_timeouts.py (Lib/test/test_asyncio) that
   apply to C, one test each, named after the CPython test. Written from
   what each case checks, in evloop.h's terms: a task per coroutine, one
   step of the loop (run_briefly) per `await asyncio.sleep(0)`.

   Covered here:
     test_locks.py  LockTests.test_acquire_cancel, test_cancel_race,
                    test_cancel_release_race, test_finished_waiter_cancelled;
                    EventTests.test_wait_cancel;
                    ConditionTests.test_wait_cancel,
                    test_wait_cancel_contested, test_wait_cancel_after_notify;
                    SemaphoreTests.test_acquire_cancel,
                    test_acquire_cancel_before_awoken, test_acquire_hang
     test_queues.py test_cancelled_getters_not_being_held_in_self_getters,
                    test_cancelled_puts_not_being_held_in_self_putters,
                    test_get_cancelled_race, test_put_cancelled_race
     test_timeouts.py test_foreign_cancel_doesnt_timeout_if_not_expired,
                    test_timeout_not_triggered, test_timeout_disabled
   Elsewhere: test_timeout_zero_sleep_zero, test_nested_timeouts,
   test_nested_timeouts_loop_busy, test_cancel_in_timeout_after_cancellation,
   test_nested_timeout_in_finally and test_timeout_after_cancellation are in
   t_finally.c; the TaskGroup cases (children cancelled on a child's error,
   parent cancelled, body error, no children after failure) in
   t_taskgroup.c; every wait cancelled at every stage in t_cancel_sync.c.
   Do not apply to C: the cases about exception groups, ExceptionGroup
   nesting, KeyboardInterrupt/SystemExit, `uncancel()` counts, contextvars,
   repr, the `loop=` argument, async generators and `async with` misuse
   (TypeError/RuntimeError of Python syntax). */
#include "test.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* One waiter: a task awaiting one wait of one primitive, recording how
   the await ended. */
enum { W_LOCK, W_SEM, W_EVENT, W_COND, W_GET, W_PUT };
typedef struct waiter {
  int kind;
  void *obj;
  void *item;
  int ended, err;
  void *result;
} waiter;

static evl_future *waiter_op(waiter *w) {
  switch (w->kind) {
  case W_LOCK:
    return evl_lock_acquire((evl_lock *)w->obj);
  case W_SEM:
    return evl_semaphore_acquire((evl_semaphore *)w->obj);
  case W_EVENT:
    return evl_event_wait((evl_event *)w->obj);
  case W_COND:
    return evl_condition_wait((evl_condition *)w->obj);
  case W_GET:
    return evl_queue_get((evl_queue *)w->obj);
  default:
    return evl_queue_put((evl_queue *)w->obj, w->item);
  }
}

static void waiter_task(evl_task *t, void *state) {
  waiter *w = (waiter *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(t, waiter_op(w));
  w->err = evl_await_error(t);
  w->result = evl_await_result(t);
  w->ended = 1;
  EVL_ASYNC_END(t);
}

static evl_task *start(evl_loop *loop, waiter *w, int kind, void *obj) {
  evl_task *t;
  memset(w, 0, sizeof *w);
  w->kind = kind;
  w->obj = obj;
  t = evl_task_create(loop, waiter_task, w, 0);
  CHECK(t != NULL);
  return t;
}

/* `await asyncio.sleep(0)` of the test's own coroutine: the tasks it
   started get to run until they wait. */
static void run_briefly(evl_loop *loop) {
  int i;
  for (i = 0; i < 4; i++)
    CHECK(evl_run_once(loop, 0) >= 0);
}

/* The end of a test: releases its futures and tasks (the list ends with
   NULL), frees its primitive obj (of the waiter kind) and the loop. */
static void finish(evl_loop *loop, int kind, void *obj, ...) {
  va_list ap;
  evl_future *f;
  va_start(ap, obj);
  while ((f = va_arg(ap, evl_future *)) != NULL)
    evl_future_release(f);
  va_end(ap);
  if (kind == W_LOCK)
    evl_lock_free((evl_lock *)obj);
  else if (kind == W_SEM)
    evl_semaphore_free((evl_semaphore *)obj);
  else if (kind == W_EVENT)
    evl_event_free((evl_event *)obj);
  else if (kind == W_COND)
    evl_condition_free((evl_condition *)obj);
  else
    evl_queue_free((evl_queue *)obj);
  evl_loop_free(loop);
}

/* The cancelled waiter's await saw the cancel; the other one got what it
   waited for. */
static void check_cancelled_then_got(const waiter *cancelled,
                                     const waiter *got) {
  CHECK(cancelled->ended && cancelled->err == EVL_ECANCELED);
  CHECK(got->ended && got->err == 0);
}

/* A new lock the test takes at once (*held). */
static evl_lock *lock_held(evl_loop *loop, evl_future **held) {
  evl_lock *lock = evl_lock_new(loop);
  *held = evl_lock_acquire(lock);
  CHECK(evl_future_done(*held) && evl_future_error(*held) == 0);
  return lock;
}

static void task_cancel_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (void)evl_task_cancel((evl_task *)arg);
}

/* ---- test_locks.py: LockTests ---- */

TEST(lock_test_acquire_cancel) {
  evl_loop *loop = test_loop();
  evl_future *f;
  evl_lock *lock = lock_held(loop, &f);
  waiter w;
  evl_task *t = start(loop, &w, W_LOCK, lock);
  CHECK(evl_call_soon(loop, task_cancel_cb, t) > 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0); /* the await saw it */
  CHECK_EQ(w.err, EVL_ECANCELED);
  /* no waiter left: the release frees the lock for nobody */
  CHECK_EQ(evl_lock_release(lock), 0);
  CHECK_EQ(evl_lock_locked(lock), 0);
  finish(loop, W_LOCK, lock, f, t, NULL);
}

/* The test holds a new lock (held); B waits for it, C has just been
   started behind B. */
typedef struct lock_line {
  evl_lock *lock;
  evl_future *held;
  waiter b, c;
  evl_task *tb, *tc;
} lock_line;

static void lock_line_start(evl_loop *loop, lock_line *l) {
  l->lock = lock_held(loop, &l->held);
  l->tb = start(loop, &l->b, W_LOCK, l->lock);
  run_briefly(loop);
  l->tc = start(loop, &l->c, W_LOCK, l->lock);
}

static void lock_line_finish(evl_loop *loop, lock_line *l) {
  finish(loop, W_LOCK, l->lock, l->held, l->tb, l->tc, NULL);
}

/* A holds the lock, B and C wait; A releases as B is cancelled: C gets
   it, not the cancelled B. */
TEST(lock_test_cancel_race) {
  evl_loop *loop = test_loop();
  lock_line l;
  lock_line_start(loop, &l);
  run_briefly(loop);
  CHECK(!l.b.ended && !l.c.ended);
  CHECK_EQ(evl_lock_release(l.lock), 0);
  CHECK_EQ(evl_task_cancel(l.tb), 1);
  run_briefly(loop);
  check_cancelled_then_got(&l.b, &l.c);
  CHECK(evl_future_cancelled(l.tb) == 0); /* its await saw the cancel */
  CHECK_EQ(evl_lock_locked(l.lock), 1);   /* C holds it */
  CHECK_EQ(evl_lock_release(l.lock), 0);
  CHECK_EQ(evl_lock_locked(l.lock), 0);
  lock_line_finish(loop, &l);
}

/* Issue 32734: three waiters, the first cancelled and the lock released
   in one callback: exactly one more acquire succeeds. */
static evl_lock *g_lock;
static evl_task *g_t1;
static void trigger_cancel_release(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  (void)evl_task_cancel(g_t1);
  (void)evl_lock_release(g_lock);
}
TEST(lock_test_cancel_release_race) {
  evl_loop *loop = test_loop();
  evl_future *held;
  waiter w1, w2, w3;
  evl_task *t2, *t3;
  g_lock = lock_held(loop, &held);
  g_t1 = start(loop, &w1, W_LOCK, g_lock);
  t2 = start(loop, &w2, W_LOCK, g_lock);
  t3 = start(loop, &w3, W_LOCK, g_lock);
  run_briefly(loop);
  CHECK(evl_call_soon(loop, trigger_cancel_release, NULL) > 0);
  CHECK_EQ(evl_run_until_complete(loop, g_t1), 0);
  run_briefly(loop);
  CHECK_EQ(w1.err, EVL_ECANCELED);
  CHECK(w2.ended && w2.err == 0); /* the one lock taken */
  CHECK(!w3.ended);
  CHECK_EQ(evl_task_cancel(t3), 1);
  run_briefly(loop);
  CHECK(w3.ended && w3.err == EVL_ECANCELED);
  CHECK_EQ(evl_lock_locked(g_lock), 1); /* still t2's */
  finish(loop, W_LOCK, g_lock, held, g_t1, t2, t3, NULL);
}

/* The first waiter is woken and cancelled before it resumes: the second
   gets the lock. */
TEST(lock_test_finished_waiter_cancelled) {
  evl_loop *loop = test_loop();
  lock_line l;
  lock_line_start(loop, &l);
  CHECK_EQ(evl_task_cancel(l.tb), 1);
  CHECK_EQ(evl_lock_release(l.lock), 0);
  run_briefly(loop);
  check_cancelled_then_got(&l.b, &l.c);
  CHECK_EQ(evl_lock_locked(l.lock), 1);
  lock_line_finish(loop, &l);
}

/* ---- EventTests, ConditionTests ---- */

TEST(event_test_wait_cancel) {
  evl_loop *loop = test_loop();
  evl_event *ev = evl_event_new(loop);
  waiter w, w2;
  evl_task *t = start(loop, &w, W_EVENT, ev), *t2;
  CHECK(evl_call_soon(loop, task_cancel_cb, t) > 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(w.err, EVL_ECANCELED);
  /* the cancelled waiter is gone: a set wakes only the live one */
  t2 = start(loop, &w2, W_EVENT, ev);
  run_briefly(loop);
  evl_event_set(ev);
  CHECK_EQ(evl_run_until_complete(loop, t2), 0);
  CHECK(w2.ended && w2.err == 0);
  finish(loop, W_EVENT, ev, t, t2, NULL);
}

TEST(condition_test_wait_cancel) {
  evl_loop *loop = test_loop();
  evl_condition *cond = evl_condition_new(loop, NULL);
  evl_future *held = evl_lock_acquire(evl_condition_lock(cond));
  waiter w;
  evl_task *t = start(loop, &w, W_COND, cond);
  CHECK(evl_call_soon(loop, task_cancel_cb, t) > 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(w.err, EVL_ECANCELED);
  CHECK_EQ(evl_condition_notify(cond, 1), 0);             /* no waiter left */
  CHECK_EQ(evl_lock_locked(evl_condition_lock(cond)), 1); /* retaken */
  finish(loop, W_COND, cond, held, t, NULL);
}

/* A condition with a waiter in its wait (which released the lock the
   test held: held), then the test holding the lock again (mine) and
   notifying the waiter, which now has to retake the lock. */
typedef struct notified {
  evl_condition *cond;
  evl_lock *lock;
  evl_future *held, *mine;
  waiter w;
  evl_task *t;
} notified;

static void notified_start(evl_loop *loop, notified *n) {
  n->cond = evl_condition_new(loop, NULL);
  n->lock = evl_condition_lock(n->cond);
  n->held = evl_lock_acquire(n->lock);
  n->t = start(loop, &n->w, W_COND, n->cond);
  run_briefly(loop);
  CHECK_EQ(evl_lock_locked(n->lock), 0); /* the wait released it */
  n->mine = evl_lock_acquire(n->lock);
  CHECK(evl_future_done(n->mine));
  CHECK_EQ(evl_condition_notify(n->cond, 1), 1);
}

/* Notified, then cancelled while the test holds the lock; the release
   comes after: the wait ends holding the lock either way. */
static void cond_release_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (void)evl_lock_release(evl_condition_lock((evl_condition *)arg));
}
TEST(condition_test_wait_cancel_contested) {
  evl_loop *loop = test_loop();
  notified n;
  notified_start(loop, &n);
  CHECK(evl_call_soon(loop, task_cancel_cb, n.t) > 0);
  CHECK(evl_call_soon(loop, cond_release_cb, n.cond) > 0);
  CHECK_EQ(evl_run_until_complete(loop, n.t), 0);
  CHECK(n.w.ended);
  CHECK(n.w.err == 0 || n.w.err == EVL_ECANCELED);
  CHECK_EQ(evl_lock_locked(n.lock), 1); /* the waiter's */
  finish(loop, W_COND, n.cond, n.held, n.mine, n.t, NULL);
}

/* bpo-32841: notified, then cancelled while it waits to retake the lock:
   the waiter ends cancelled, and the lock is not lost. */
TEST(condition_test_wait_cancel_after_notify) {
  evl_loop *loop = test_loop();
  notified n;
  notified_start(loop, &n);
  run_briefly(loop); /* it now waits for the lock */
  CHECK_EQ(evl_task_cancel(n.t), 1);
  run_briefly(loop);
  CHECK(!n.w.ended); /* the cancel is seen with the lock held */
  CHECK_EQ(evl_lock_release(n.lock), 0);
  run_briefly(loop);
  CHECK(n.w.ended && n.w.err == EVL_ECANCELED);
  CHECK_EQ(evl_lock_locked(n.lock), 1); /* retaken by the waiter */
  CHECK_EQ(evl_lock_release(n.lock), 0);
  CHECK_EQ(evl_lock_locked(n.lock), 0);
  finish(loop, W_COND, n.cond, n.held, n.mine, n.t, NULL);
}

/* ---- SemaphoreTests ---- */

TEST(semaphore_test_acquire_cancel) {
  evl_loop *loop = test_loop();
  evl_semaphore *sem = evl_semaphore_new(loop, 0, 0);
  waiter w;
  evl_task *t = start(loop, &w, W_SEM, sem);
  CHECK(evl_call_soon(loop, task_cancel_cb, t) > 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(w.err, EVL_ECANCELED);
  CHECK_EQ(evl_semaphore_release(sem), 0);
  CHECK_EQ(evl_semaphore_value(sem), 1); /* nobody took it */
  finish(loop, W_SEM, sem, t, NULL);
}

/* Four waiters on Semaphore(0); the first two cancelled, one release:
   exactly one of the other two gets it. */
TEST(semaphore_test_acquire_cancel_before_awoken) {
  evl_loop *loop = test_loop();
  evl_semaphore *sem = evl_semaphore_new(loop, 0, 0);
  waiter w[4];
  evl_task *t[4];
  int i;
  for (i = 0; i < 4; i++)
    t[i] = start(loop, &w[i], W_SEM, sem);
  run_briefly(loop);
  CHECK_EQ(evl_task_cancel(t[0]), 1);
  CHECK_EQ(evl_task_cancel(t[1]), 1);
  CHECK_EQ(evl_semaphore_release(sem), 0);
  run_briefly(loop);
  CHECK(w[0].err == EVL_ECANCELED && w[1].err == EVL_ECANCELED);
  CHECK_EQ(w[2].ended + w[3].ended, 1);
  CHECK(w[2].ended && w[2].err == 0); /* first come, first served */
  CHECK_EQ(evl_task_cancel(t[3]), 1);
  run_briefly(loop);
  CHECK_EQ(evl_semaphore_value(sem), 0);
  finish(loop, W_SEM, sem, t[0], t[1], t[2], t[3], NULL);
}

/* The woken waiter is cancelled before it runs: the unit goes to the
   next one instead of being lost (the hang). */
TEST(semaphore_test_acquire_hang) {
  evl_loop *loop = test_loop();
  evl_semaphore *sem = evl_semaphore_new(loop, 0, 0);
  waiter w1, w2;
  evl_task *t1 = start(loop, &w1, W_SEM, sem);
  evl_task *t2 = start(loop, &w2, W_SEM, sem);
  run_briefly(loop);
  CHECK_EQ(evl_semaphore_release(sem), 0);
  CHECK_EQ(evl_task_cancel(t1), 1);
  run_briefly(loop);
  check_cancelled_then_got(&w1, &w2);
  CHECK_EQ(evl_semaphore_locked(sem), 1);
  finish(loop, W_SEM, sem, t1, t2, NULL);
}

/* ---- test_queues.py ---- */

/* A get that timed out is not left among the getters: the next put goes
   to the queue, not to a dead getter. */
TEST(queue_test_cancelled_getters_not_being_held_in_self_getters) {
  evl_loop *loop = test_loop();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 5, NULL);
  evl_future *g = evl_wait_for(evl_queue_get(q), 0.01);
  void *item = NULL;
  CHECK_EQ(evl_run_until_complete(loop, g), EVL_ETIMEDOUT);
  CHECK_EQ(evl_queue_put_nowait(q, (void *)"a"), 0);
  CHECK_EQ(evl_queue_qsize(q), 1);
  CHECK_EQ(evl_queue_get_nowait(q, &item), 0);
  CHECK(item != NULL && !strcmp((char *)item, "a"));
  finish(loop, W_GET, q, g, NULL);
}

TEST(queue_test_cancelled_puts_not_being_held_in_self_putters) {
  evl_loop *loop = test_loop();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 1, NULL);
  evl_future *p;
  void *item = NULL;
  CHECK_EQ(evl_queue_put_nowait(q, (void *)"1"), 0);
  p = evl_wait_for(evl_queue_put(q, (void *)"2"), 0.01);
  CHECK_EQ(evl_run_until_complete(loop, p), EVL_ETIMEDOUT);
  CHECK_EQ(evl_queue_get_nowait(q, &item), 0);
  run_briefly(loop);
  CHECK_EQ(evl_queue_qsize(q), 0); /* the timed-out put added nothing */
  CHECK_EQ(evl_queue_get_nowait(q, &item), EVL_EQUEUEEMPTY);
  finish(loop, W_GET, q, p, NULL);
}

TEST(queue_test_get_cancelled_race) {
  evl_loop *loop = test_loop();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  waiter w1, w2;
  evl_task *t1 = start(loop, &w1, W_GET, q);
  evl_task *t2 = start(loop, &w2, W_GET, q);
  run_briefly(loop);
  CHECK_EQ(evl_task_cancel(t1), 1);
  run_briefly(loop);
  CHECK(w1.ended && w1.err == EVL_ECANCELED);
  CHECK_EQ(evl_queue_put_nowait(q, (void *)"a"), 0);
  CHECK_EQ(evl_run_until_complete(loop, t2), 0);
  CHECK(w2.err == 0 && !strcmp((char *)w2.result, "a"));
  finish(loop, W_GET, q, t1, t2, NULL);
}

TEST(queue_test_put_cancelled_race) {
  evl_loop *loop = test_loop();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 1, NULL);
  waiter w1, w2, w3;
  evl_task *t1, *t2, *t3;
  void *a = NULL, *b = NULL, *d = NULL;
  CHECK_EQ(evl_queue_put_nowait(q, (void *)"a"), 0);
  t1 = start(loop, &w1, W_PUT, q);
  w1.item = (void *)"b";
  t2 = start(loop, &w2, W_PUT, q);
  w2.item = (void *)"c";
  t3 = start(loop, &w3, W_PUT, q);
  w3.item = (void *)"d";
  run_briefly(loop);
  CHECK_EQ(evl_task_cancel(t2), 1);
  run_briefly(loop);
  CHECK(w2.ended && w2.err == EVL_ECANCELED);
  CHECK_EQ(evl_queue_get_nowait(q, &a), 0);
  run_briefly(loop);
  CHECK_EQ(evl_queue_get_nowait(q, &b), 0);
  run_briefly(loop);
  CHECK_EQ(evl_queue_get_nowait(q, &d), 0);
  CHECK(!strcmp((char *)a, "a") && !strcmp((char *)b, "b") &&
        !strcmp((char *)d, "d"));
  CHECK(w1.ended && w1.err == 0 && w3.ended && w3.err == 0);
  finish(loop, W_GET, q, t1, t2, t3, NULL);
}

/* ---- test_timeouts.py ---- */

typedef struct scope {
  int mode; /* 0: cancel inside timeout(10); 1: not triggered; 2: none */
  int err, expired;
  evl_timeout *to;
} scope;

static void scope_task(evl_task *t, void *state) {
  scope *s = (scope *)state;
  EVL_ASYNC_BEGIN(t);
  s->to =
      s->mode == 2 ? evl_timeout_new(t, INFINITY) : evl_timeout_new(t, 10.0);
  if (s->mode == 0)
    (void)evl_task_cancel(t);
  EVL_AWAIT_TRY(t, evl_sleep(evl_task_loop(t), s->mode ? 0.01 : 10.0, NULL));
  s->err = evl_await_error(t);
  s->expired = evl_timeout_expired(s->to);
  EVL_ASYNC_END(t);
}

/* Runs scope_task in mode: its await must end with want_err, and its
   scope must not have expired in any mode. */
static void run_scope(int mode, int want_err) {
  evl_loop *loop = test_loop();
  scope s;
  evl_task *t;
  memset(&s, 0, sizeof s);
  s.mode = mode;
  t = evl_task_create(loop, scope_task, &s, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(s.err, want_err);
  CHECK_EQ(s.expired, 0);
  evl_future_release(t);
  evl_loop_free(loop);
}

/* a cancel, not a timeout */
TEST(timeouts_test_foreign_cancel_doesnt_timeout_if_not_expired) {
  run_scope(0, EVL_ECANCELED);
}
TEST(timeouts_test_timeout_not_triggered) {
  run_scope(1, 0);
}
TEST(timeouts_test_timeout_disabled) {
  run_scope(2, 0);
}

TESTS_BEGIN
T(lock_test_acquire_cancel)
T(lock_test_cancel_race)
T(lock_test_cancel_release_race)
T(lock_test_finished_waiter_cancelled)
T(event_test_wait_cancel)
T(condition_test_wait_cancel)
T(condition_test_wait_cancel_contested)
T(condition_test_wait_cancel_after_notify)
T(semaphore_test_acquire_cancel)
T(semaphore_test_acquire_cancel_before_awoken)
T(semaphore_test_acquire_hang)
T(queue_test_cancelled_getters_not_being_held_in_self_getters)
T(queue_test_cancelled_puts_not_being_held_in_self_putters)
T(queue_test_get_cancelled_race)
T(queue_test_put_cancelled_race)
T(timeouts_test_foreign_cancel_doesnt_timeout_if_not_expired)
T(timeouts_test_timeout_not_triggered)
T(timeouts_test_timeout_disabled)
TESTS_END
