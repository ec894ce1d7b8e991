/* Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier: FIFO
   fairness and the cancellation cases of CPython's test_locks.py that
   apply to C. No threads. */
#include "test.h"

#ifndef EVLOOP_NO_SYNC

#include <stdlib.h>
#include <string.h>

static void run_for(evl_loop *loop, double seconds) {
  evl_future *f = evl_sleep(loop, seconds, NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  evl_future_release(f);
}
static void spin(evl_loop *loop, int n) {
  while (n-- > 0)
    evl_run_once(loop, 0);
}

/* ---- a task that takes a lock or semaphore, holds it, gives it back ---- */

static int g_order[64], g_norder;
static int g_inside, g_max_inside;

typedef struct holder {
  evl_lock *lock;
  evl_semaphore *sem;
  int id, held, err;
  double hold; /* seconds to keep it (0: one yield) */
} holder;

static void holder_task(evl_task *t, void *state) {
  holder *h = (holder *)state;
  EVL_ASYNC_BEGIN(t);
  if (h->lock)
    EVL_AWAIT(t, evl_lock_acquire(h->lock));
  else
    EVL_AWAIT(t, evl_semaphore_acquire(h->sem));
  h->held = 1;
  if (g_norder < 64)
    g_order[g_norder++] = h->id;
  if (++g_inside > g_max_inside)
    g_max_inside = g_inside;
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), h->hold, NULL));
  EVL_FINALLY(t);
  h->err = evl_await_error(t);
  if (h->held) {
    g_inside--;
    h->held = 0;
    CHECK_EQ(
        h->lock ? evl_lock_release(h->lock) : evl_semaphore_release(h->sem), 0);
  }
  EVL_ASYNC_END(t);
}

static evl_task *start_holder(evl_loop *loop, holder *h, int id, evl_lock *lock,
                              evl_semaphore *sem, double hold) {
  memset(h, 0, sizeof *h);
  h->id = id;
  h->lock = lock;
  h->sem = sem;
  h->hold = hold;
  return evl_task_create(loop, holder_task, h, 0);
}

static void reset_counts(void) {
  g_norder = g_inside = g_max_inside = 0;
}

/* n holders, ids 0..n-1, in t[] (the counts reset first). */
static void start_holders(evl_loop *loop, holder *h, evl_task **t, int n,
                          evl_lock *lock, evl_semaphore *sem, double hold) {
  int i;
  reset_counts();
  for (i = 0; i < n; i++)
    t[i] = start_holder(loop, &h[i], i, lock, sem, hold);
}

/* Runs the n holders to their end: each held it, in FIFO order, at most
   max_inside at a time. */
static void finish_holders_in_order(evl_loop *loop, evl_task **t, int n,
                                    int max_inside) {
  int i;
  for (i = 0; i < n; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    evl_future_release(t[i]);
  }
  CHECK_EQ(g_norder, n);
  for (i = 0; i < n; i++)
    CHECK_EQ(g_order[i], i);
  CHECK_EQ(g_max_inside, max_inside);
}

/* n (at most 8) holders of 5 ms on a lock, or a semaphore (lock NULL) of
   value max_inside: taken while they run (the semaphore's value 0), held
   in FIFO order, at most max_inside at a time. */
static void check_holders_fifo(evl_loop *loop, evl_lock *lock,
                               evl_semaphore *sem, int n, int max_inside) {
  holder h[8];
  evl_task *t[8];
  CHECK(n <= 8);
  CHECK_EQ(lock ? evl_lock_locked(lock) : evl_semaphore_locked(sem), 0);
  start_holders(loop, h, t, n, lock, sem, 0.005);
  spin(loop, 2);
  CHECK_EQ(lock ? evl_lock_locked(lock) : evl_semaphore_locked(sem), 1);
  if (sem)
    CHECK_EQ(evl_semaphore_value(sem), 0);
  finish_holders_in_order(loop, t, n, max_inside);
}

TEST(lock_fifo_and_exclusive) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  check_holders_fifo(loop, lock, NULL, 5, 1);
  CHECK_EQ(evl_lock_locked(lock), 0);
  CHECK_EQ(evl_lock_release(lock), EVL_EINVALSTATE);
  CHECK_EQ(evl_lock_release(NULL), EVL_EINVAL);
  CHECK(evl_lock_acquire(NULL) == NULL);
  evl_lock_free(lock);
  test_close(loop);
}

/* test_acquire_cancel: a waiter cancelled while waiting leaves the queue;
   the lock goes to the next one. */
TEST(lock_cancel_pending_waiter) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  holder h[3];
  evl_task *t[3];
  int i;
  start_holders(loop, h, t, 3, lock, NULL, 0.03);
  spin(loop, 3);
  CHECK_EQ(evl_task_cancel(t[1]), 1); /* waiting behind 0 */
  CHECK_EQ(evl_run_until_complete(loop, t[1]), EVL_ECANCELED);
  CHECK_EQ(h[1].held, 0);
  CHECK_EQ(evl_run_until_complete(loop, t[2]), 0);
  CHECK_EQ(g_norder, 2);
  CHECK_EQ(g_order[0], 0);
  CHECK_EQ(g_order[1], 2);
  for (i = 0; i < 3; i++)
    evl_future_release(t[i]);
  CHECK_EQ(evl_lock_locked(lock), 0);
  evl_lock_free(lock);
  test_close(loop);
}

/* test_cancel_race / test_cancel_release_race: the lock is handed to a
   waiter and that waiter's task is cancelled before it resumes: it never
   holds the lock, the next waiter gets it. */
TEST(lock_cancel_after_grant_passes_it_on) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_future *first;
  holder h[2];
  evl_task *t[2];
  first = evl_lock_acquire(lock);
  CHECK_EQ(evl_future_done(first), 1);
  CHECK(evl_future_result(first) == lock);
  start_holders(loop, h, t, 2, lock, NULL, 0);
  spin(loop, 2);
  CHECK_EQ(evl_lock_release(lock), 0); /* granted to t[0] */
  CHECK_EQ(evl_lock_locked(lock), 1);
  CHECK_EQ(evl_task_cancel(t[0]), 1); /* before it resumes */
  CHECK_EQ(evl_run_until_complete(loop, t[0]), EVL_ECANCELED);
  CHECK_EQ(h[0].held, 0);
  CHECK_EQ(evl_run_until_complete(loop, t[1]), 0);
  CHECK_EQ(g_norder, 1);
  CHECK_EQ(g_order[0], 1);
  CHECK_EQ(evl_lock_locked(lock), 0);
  evl_future_release(first);
  evl_future_release(t[0]);
  evl_future_release(t[1]);
  evl_lock_free(lock);
  test_close(loop);
}

TEST(lock_grant_released_unread_goes_back) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_future *a = evl_lock_acquire(lock), *b, *c;
  CHECK_EQ(evl_future_error(a), 0); /* taken: a holds it */
  b = evl_lock_acquire(lock);
  c = evl_lock_acquire(lock);
  CHECK_EQ(evl_future_done(b), 0);
  CHECK_EQ(evl_lock_release(lock), 0);
  CHECK_EQ(evl_future_done(b), 1);
  evl_future_release(b); /* dropped unread: the grant moves on to c */
  CHECK_EQ(evl_future_done(c), 1);
  CHECK(evl_future_result(c) == lock);
  CHECK_EQ(evl_lock_release(lock), 0);
  CHECK_EQ(evl_lock_locked(lock), 0);
  /* an acquire made and dropped at once gives the lock straight back */
  evl_future_release(evl_lock_acquire(lock));
  CHECK_EQ(evl_lock_locked(lock), 0);
  evl_future_release(a);
  evl_future_release(c);
  evl_lock_free(lock);
  test_close(loop);
}

TEST(lock_free_fails_waiters) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_future *a = evl_lock_acquire(lock), *b = evl_lock_acquire(lock);
  CHECK_EQ(evl_future_error(a), 0);
  evl_lock_free(lock);
  CHECK_EQ(evl_future_error(b), EVL_ECLOSED);
  evl_future_release(a); /* detached: no use of the freed lock */
  evl_future_release(b);
  test_close(loop);
}

/* ---- Event ---- */

typedef struct ev_waiter {
  evl_event *ev;
  int woke, err;
} ev_waiter;
static void ev_wait_task(evl_task *t, void *state) {
  ev_waiter *w = (ev_waiter *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(t, evl_event_wait(w->ev));
  w->err = evl_await_error(t);
  w->woke = 1;
  EVL_ASYNC_END(t);
}

TEST(event_set_clear_wait_cancel) {
  evl_loop *loop = test_open();
  evl_event *ev = evl_event_new(loop);
  ev_waiter w[3];
  evl_task *t[3];
  evl_future *f;
  int i;
  for (i = 0; i < 3; i++) {
    memset(&w[i], 0, sizeof w[i]);
    w[i].ev = ev;
    t[i] = evl_task_create(loop, ev_wait_task, &w[i], 0);
  }
  run_for(loop, 0.01);
  CHECK_EQ(w[0].woke + w[1].woke + w[2].woke, 0);
  CHECK_EQ(evl_task_cancel(t[1]), 1);
  run_for(loop, 0.01);
  CHECK_EQ(w[1].err, EVL_ECANCELED);
  CHECK_EQ(evl_event_is_set(ev), 0);
  evl_event_set(ev);
  CHECK_EQ(evl_event_is_set(ev), 1);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    evl_future_release(t[i]);
  }
  CHECK_EQ(w[0].err, 0);
  CHECK_EQ(w[2].err, 0);
  f = evl_event_wait(ev); /* set: done at once */
  CHECK_EQ(evl_future_done(f), 1);
  evl_future_release(f);
  evl_event_clear(ev);
  f = evl_event_wait(ev);
  CHECK_EQ(evl_future_done(f), 0);
  evl_event_free(ev);
  CHECK_EQ(evl_future_error(f), EVL_ECLOSED);
  evl_future_release(f);
  test_close(loop);
}

/* ---- Condition ---- */

typedef struct cv_waiter {
  evl_condition *cond;
  int id, woke, err, held_after, use_pred;
  int *flag;
} cv_waiter;

static int flag_set(void *arg) {
  return *(int *)arg != 0;
}

static void cv_task(evl_task *t, void *state) {
  cv_waiter *w = (cv_waiter *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_lock_acquire(evl_condition_lock(w->cond)));
  if (w->use_pred)
    EVL_AWAIT_TRY(t, evl_condition_wait_for(w->cond, flag_set, w->flag));
  else
    EVL_AWAIT_TRY(t, evl_condition_wait(w->cond));
  w->err = evl_await_error(t);
  w->held_after = evl_lock_locked(evl_condition_lock(w->cond));
  if (!w->err && g_norder < 64)
    g_order[g_norder++] = w->id;
  w->woke = 1;
  CHECK_EQ(evl_lock_release(evl_condition_lock(w->cond)), 0);
  EVL_ASYNC_END(t);
}

static evl_task *start_cv(evl_loop *loop, cv_waiter *w, evl_condition *c,
                          int id) {
  memset(w, 0, sizeof *w);
  w->cond = c;
  w->id = id;
  return evl_task_create(loop, cv_task, w, 0);
}

static evl_future *locked_notify(evl_loop *loop, evl_condition *c, size_t n,
                                 int *woken) {
  evl_future *l = evl_lock_acquire(evl_condition_lock(c));
  CHECK_EQ(evl_run_until_complete(loop, l), 0);
  *woken = n ? evl_condition_notify(c, n) : evl_condition_notify_all(c);
  CHECK_EQ(evl_lock_release(evl_condition_lock(c)), 0);
  return l;
}

TEST(condition_notify_fifo_and_all) {
  evl_loop *loop = test_open();
  evl_condition *c = evl_condition_new(loop, NULL);
  cv_waiter w[4];
  evl_task *t[4];
  evl_future *f;
  int i, woken;
  reset_counts();
  for (i = 0; i < 4; i++)
    t[i] = start_cv(loop, &w[i], c, i);
  run_for(loop, 0.01);
  CHECK_EQ(evl_lock_locked(evl_condition_lock(c)), 0); /* wait released */
  f = locked_notify(loop, c, 1, &woken);
  CHECK_EQ(woken, 1);
  evl_future_release(f);
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  CHECK_EQ(w[1].woke, 0);
  f = locked_notify(loop, c, 0, &woken);
  CHECK_EQ(woken, 3);
  evl_future_release(f);
  for (i = 0; i < 4; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    CHECK_EQ(w[i].held_after, 1);
    CHECK_EQ(w[i].err, 0);
    evl_future_release(t[i]);
  }
  for (i = 0; i < 4; i++)
    CHECK_EQ(g_order[i], i);
  /* without the lock */
  CHECK_EQ(evl_condition_notify(c, 1), EVL_EINVALSTATE);
  f = evl_condition_wait(c);
  CHECK_EQ(evl_future_error(f), EVL_EINVALSTATE);
  evl_future_release(f);
  evl_condition_free(c);
  test_close(loop);
}

/* test_wait_cancel / test_wait_cancel_contested: a cancelled wait ends with
   the lock held again, and only once the lock is free. */
TEST(condition_cancelled_wait_retakes_lock) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_condition *c = evl_condition_new(loop, lock);
  cv_waiter w;
  evl_task *t = start_cv(loop, &w, c, 0);
  evl_future *mine;
  run_for(loop, 0.01);
  mine = evl_lock_acquire(lock); /* contested: we hold it now */
  CHECK_EQ(evl_future_error(mine), 0);
  CHECK_EQ(evl_task_cancel(t), 1);
  run_for(loop, 0.01);
  CHECK_EQ(w.woke, 0); /* still waiting for the lock */
  CHECK_EQ(evl_lock_release(lock), 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(w.err, EVL_ECANCELED);
  CHECK_EQ(w.held_after, 1);
  CHECK_EQ(evl_lock_locked(lock), 0);
  evl_future_release(mine);
  evl_future_release(t);
  evl_condition_free(c);
  evl_lock_free(lock);
  test_close(loop);
}

TEST(condition_wait_for_predicate) {
  evl_loop *loop = test_open();
  evl_condition *c = evl_condition_new(loop, NULL);
  cv_waiter w;
  evl_task *t;
  evl_future *f;
  int flag = 0, woken;
  t = start_cv(loop, &w, c, 0);
  w.use_pred = 1;
  w.flag = &flag;
  run_for(loop, 0.01);
  f = locked_notify(loop, c, 0, &woken); /* predicate false: waits again */
  CHECK_EQ(woken, 1);
  evl_future_release(f);
  run_for(loop, 0.01);
  CHECK_EQ(w.woke, 0);
  flag = 1;
  f = locked_notify(loop, c, 0, &woken);
  CHECK_EQ(woken, 1);
  evl_future_release(f);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(w.woke, 1);
  CHECK_EQ(w.held_after, 1);
  evl_future_release(t);
  f = evl_condition_wait_for(c, NULL, NULL);
  CHECK_EQ(evl_future_error(f), EVL_EINVAL);
  evl_future_release(f);
  evl_condition_free(c);
  test_close(loop);
}

/* test_cancelled_wakeup (asyncio 3.13): a waiter notified and then
   cancelled before it has the lock back passes the notification on; it
   still ends holding the lock. */
TEST(condition_notified_then_cancelled_passes_it_on) {
  evl_loop *loop = test_open();
  evl_condition *c = evl_condition_new(loop, NULL);
  cv_waiter w[3];
  evl_task *t[3];
  evl_future *mine;
  int i;
  reset_counts();
  for (i = 0; i < 3; i++)
    t[i] = start_cv(loop, &w[i], c, i);
  spin(loop, 4);
  mine = evl_lock_acquire(evl_condition_lock(c));
  CHECK_EQ(evl_future_error(mine), 0);
  CHECK_EQ(evl_condition_notify(c, 1), 1); /* w[0] */
  CHECK_EQ(evl_task_cancel(t[0]), 1);
  CHECK_EQ(evl_lock_release(evl_condition_lock(c)), 0);
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  CHECK_EQ(w[0].err, EVL_ECANCELED);
  CHECK_EQ(w[0].held_after, 1);
  CHECK_EQ(evl_run_until_complete(loop, t[1]), 0); /* woken in its place */
  CHECK_EQ(w[1].err, 0);
  spin(loop, 4);
  CHECK_EQ(w[2].woke, 0);
  CHECK_EQ(evl_lock_locked(evl_condition_lock(c)), 0);
  evl_future_release(mine);
  mine = locked_notify(loop, c, 1, &i);
  CHECK_EQ(i, 1);
  CHECK_EQ(evl_run_until_complete(loop, t[2]), 0);
  CHECK_EQ(w[2].err, 0);
  evl_future_release(mine);
  evl_condition_free(c);
  for (i = 0; i < 3; i++)
    evl_future_release(t[i]);
  test_close(loop);
}

/* ---- Semaphore ---- */

TEST(semaphore_limits_and_fifo) {
  evl_loop *loop = test_open();
  evl_semaphore *sem = evl_semaphore_new(loop, 2, 0);
  check_holders_fifo(loop, NULL, sem, 6, 2);
  CHECK_EQ(evl_semaphore_value(sem), 2);
  CHECK_EQ(evl_semaphore_release(sem), 0); /* unbounded: fine */
  CHECK_EQ(evl_semaphore_value(sem), 3);
  CHECK(evl_semaphore_new(loop, -1, 0) == NULL);
  evl_semaphore_free(sem);
  test_close(loop);
}

TEST(bounded_semaphore_refuses_extra_release) {
  evl_loop *loop = test_open();
  evl_semaphore *sem = evl_semaphore_new(loop, 1, 1);
  evl_future *a = evl_semaphore_acquire(sem);
  CHECK_EQ(evl_future_error(a), 0);
  CHECK_EQ(evl_semaphore_release(sem), 0);
  CHECK_EQ(evl_semaphore_release(sem), EVL_EINVALSTATE);
  CHECK_EQ(evl_semaphore_value(sem), 1);
  evl_future_release(a);
  evl_semaphore_free(sem);
  test_close(loop);
}

/* test_acquire_cancel_before_awoken / test_acquire_hang: a unit handed to
   a waiter whose task is then cancelled goes to the next waiter; the
   value never drifts. */
TEST(semaphore_cancel_after_grant_and_pending) {
  evl_loop *loop = test_open();
  evl_semaphore *sem = evl_semaphore_new(loop, 0, 0);
  holder h[4];
  evl_task *t[4];
  int i;
  start_holders(loop, h, t, 4, NULL, sem, 0);
  spin(loop, 2);
  CHECK_EQ(evl_semaphore_release(sem), 0); /* to t[0] */
  CHECK_EQ(evl_task_cancel(t[0]), 1);      /* granted, not resumed */
  CHECK_EQ(evl_task_cancel(t[1]), 1);      /* still pending */
  CHECK_EQ(evl_run_until_complete(loop, t[0]), EVL_ECANCELED);
  CHECK_EQ(evl_run_until_complete(loop, t[1]), EVL_ECANCELED);
  CHECK_EQ(evl_run_until_complete(loop, t[2]), 0);
  CHECK_EQ(evl_semaphore_value(sem), 0); /* t[2] handed it to t[3] */
  CHECK_EQ(evl_run_until_complete(loop, t[3]), 0);
  CHECK_EQ(g_norder, 2);
  CHECK_EQ(g_order[0], 2);
  CHECK_EQ(g_order[1], 3);
  CHECK_EQ(evl_semaphore_value(sem), 1);
  for (i = 0; i < 4; i++)
    evl_future_release(t[i]);
  evl_semaphore_free(sem);
  test_close(loop);
}

/* ---- 10,000 tasks on one lock and one semaphore ---- */

typedef struct contender {
  evl_lock *lock;
  evl_semaphore *sem;
  long *counter, *inside, *max_inside, *done, *locked_in;
  int have_lock, have_sem;
} contender;

static void contend(evl_task *t, void *state) {
  contender *c = (contender *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_semaphore_acquire(c->sem));
  c->have_sem = 1;
  if (++*c->inside > *c->max_inside)
    *c->max_inside = *c->inside;
  EVL_AWAIT(t, evl_lock_acquire(c->lock));
  c->have_lock = 1;
  CHECK_EQ(*c->locked_in, 0);
  (*c->locked_in)++;
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  (*c->counter)++;
  (*c->locked_in)--;
  c->have_lock = 0;
  CHECK_EQ(evl_lock_release(c->lock), 0);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  (*c->inside)--;
  (*c->done)++;
  EVL_FINALLY(t);
  if (c->have_lock)
    evl_lock_release(c->lock);
  if (c->have_sem)
    evl_semaphore_release(c->sem);
  EVL_ASYNC_END(t);
}

TEST(ten_thousand_tasks_on_lock_and_semaphore) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_semaphore *sem = evl_semaphore_new(loop, 10, 1);
  long counter = 0, inside = 0, max_inside = 0, done = 0, locked_in = 0;
  enum { N = 10000 };
  evl_future **t = (evl_future **)malloc(N * sizeof *t);
  evl_future *all;
  contender c;
  int i;
  c.lock = lock;
  c.sem = sem;
  c.counter = &counter;
  c.inside = &inside;
  c.max_inside = &max_inside;
  c.done = &done;
  c.locked_in = &locked_in;
  c.have_lock = c.have_sem = 0;
  for (i = 0; i < N; i++)
    t[i] = evl_task_create(loop, contend, &c, sizeof c);
  all = evl_gather(loop, t, N, 0);
  CHECK_EQ(evl_run_until_complete(loop, all), 0);
  CHECK_EQ(counter, N);
  CHECK_EQ(done, N);
  CHECK_EQ(max_inside, 10);
  CHECK_EQ(evl_lock_locked(lock), 0);
  CHECK_EQ(evl_semaphore_value(sem), 10);
  evl_future_release(all);
  for (i = 0; i < N; i++)
    evl_future_release(t[i]);
  free(t);
  evl_lock_free(lock);
  evl_semaphore_free(sem);
  test_close(loop);
}

/* ---- Barrier ---- */

typedef struct bparty {
  evl_barrier *b;
  int index, err, rounds;
} bparty;
static void party(evl_task *t, void *state) {
  bparty *p = (bparty *)state;
  EVL_ASYNC_BEGIN(t);
  for (; p->rounds > 0; p->rounds--) {
    EVL_AWAIT_TRY(t, evl_barrier_wait(p->b));
    p->err = evl_await_error(t);
    if (p->err)
      break;
    p->index = (int)(intptr_t)evl_await_result(t);
  }
  EVL_ASYNC_END(t);
}

static evl_task *start_party(evl_loop *loop, bparty *p, evl_barrier *b,
                             int rounds) {
  memset(p, 0, sizeof *p);
  p->b = b;
  p->rounds = rounds;
  p->index = -1;
  return evl_task_create(loop, party, p, 0);
}

TEST(barrier_passes_in_rounds) {
  evl_loop *loop = test_open();
  evl_barrier *b = evl_barrier_new(loop, 3);
  bparty p[3];
  evl_task *t[3];
  int i, seen = 0;
  for (i = 0; i < 3; i++)
    t[i] = start_party(loop, &p[i], b, 2);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    CHECK_EQ(p[i].err, 0);
    seen |= 1 << p[i].index;
    evl_future_release(t[i]);
  }
  CHECK_EQ(seen, 7); /* indices 0, 1, 2 */
  CHECK_EQ(evl_barrier_n_waiting(b), 0);
  CHECK_EQ(evl_barrier_parties(b), 3);
  CHECK(evl_barrier_new(loop, 0) == NULL);
  evl_barrier_free(b);
  test_close(loop);
}

TEST(barrier_abort_reset_and_cancel) {
  evl_loop *loop = test_open();
  evl_barrier *b = evl_barrier_new(loop, 3);
  bparty p[3];
  evl_task *t[3];
  evl_future *f;
  int i;
  for (i = 0; i < 2; i++)
    t[i] = start_party(loop, &p[i], b, 1);
  spin(loop, 2);
  CHECK_EQ(evl_barrier_n_waiting(b), 2);
  CHECK_EQ(evl_task_cancel(t[1]), 1); /* leaves; not broken */
  CHECK_EQ(evl_run_until_complete(loop, t[1]), 0);
  CHECK_EQ(p[1].err, EVL_ECANCELED);
  CHECK_EQ(evl_barrier_n_waiting(b), 1);
  CHECK_EQ(evl_barrier_broken(b), 0);
  CHECK_EQ(evl_barrier_reset(b), 0); /* the one waiting gets broken */
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  CHECK_EQ(p[0].err, EVL_EBROKEN);
  CHECK_EQ(evl_barrier_broken(b), 0);
  evl_future_release(t[0]);
  evl_future_release(t[1]);
  t[0] = start_party(loop, &p[0], b, 1);
  spin(loop, 2);
  CHECK_EQ(evl_barrier_abort(b), 0);
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  CHECK_EQ(p[0].err, EVL_EBROKEN);
  CHECK_EQ(evl_barrier_broken(b), 1);
  f = evl_barrier_wait(b);
  CHECK_EQ(evl_future_error(f), EVL_EBROKEN);
  evl_future_release(f);
  evl_future_release(t[0]);
  CHECK_EQ(evl_barrier_reset(b), 0);
  for (i = 0; i < 3; i++)
    t[i] = start_party(loop, &p[i], b, 1);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    CHECK_EQ(p[i].err, 0);
    evl_future_release(t[i]);
  }
  evl_barrier_free(b);
  test_close(loop);
}

/* ---- every allocation failing once in turn -------------------------------
   A workload over every primitive, a queue, a task group, timeouts and
   finally sections, with the loop freed while tasks still wait: each run
   fails one allocation; nothing may crash or leak (ASan, and the count of
   live blocks). */

typedef struct oom_alloc {
  long live, total, fail_at;
} oom_alloc;

static void *oom_realloc(void *ctx, void *ptr, size_t size) {
  oom_alloc *a = (oom_alloc *)ctx;
  if (size == 0) {
    if (ptr) {
      a->live--;
      free(ptr);
    }
    return NULL;
  }
  if (a->total++ == a->fail_at)
    return NULL;
  if (!ptr) {
    void *p = malloc(size);
    if (p)
      a->live++;
    return p;
  }
  return realloc(ptr, size);
}

typedef struct mix {
  evl_lock *l;
  evl_semaphore *s;
  evl_queue *q;
  evl_barrier *b;
  evl_event *e;
  int held_l, held_s;
} mix;

static void mixer(evl_task *t, void *state) {
  mix *m = (mix *)state;
  EVL_ASYNC_BEGIN(t);
  (void)evl_timeout_new(t, 5.0);
  EVL_AWAIT(t, evl_lock_acquire(m->l));
  m->held_l = 1;
  EVL_AWAIT(t, evl_semaphore_acquire(m->s));
  m->held_s = 1;
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  m->held_s = 0;
  evl_semaphore_release(m->s);
  m->held_l = 0;
  evl_lock_release(m->l);
  EVL_AWAIT(t, evl_queue_put_prio(m->q, m, 3));
  EVL_AWAIT(t, evl_queue_get(m->q));
  EVL_AWAIT(t, evl_barrier_wait(m->b));
  EVL_AWAIT(t, evl_event_wait(m->e)); /* never set: still waiting at free */
  EVL_FINALLY(t);
  if (m->held_s)
    evl_semaphore_release(m->s);
  if (m->held_l)
    evl_lock_release(m->l);
  EVL_ASYNC_END(t);
}

static void oom_quiet(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)ctx;
  (void)arg;
}

static void oom_workload(evl_loop *loop) {
  mix m;
#ifndef EVLOOP_NO_COMPOSE
  evl_task_group *g;
#endif
  evl_condition *c;
  evl_future *w = NULL;
  int i;
  m.l = evl_lock_new(loop);
  m.s = evl_semaphore_new(loop, 1, 1);
  m.q = evl_queue_new(loop, EVL_QUEUE_PRIORITY, 1, NULL);
  m.b = evl_barrier_new(loop, 2);
  m.e = evl_event_new(loop);
  m.held_l = m.held_s = 0;
  c = evl_condition_new(loop, m.l);
  for (i = 0; i < 2; i++)
    evl_future_release(evl_task_create(loop, mixer, &m, sizeof m));
#ifndef EVLOOP_NO_COMPOSE
  g = evl_task_group_new(loop, NULL);
  for (i = 0; i < 2; i++)
    evl_future_release(evl_task_group_create(g, mixer, &m, sizeof m));
  if (g)
    w = evl_task_group_wait(g);
#endif
  for (i = 0; i < 20; i++)
    evl_run_once(loop, 0.001);
  test_close(loop); /* tasks still waiting: run to their end */
  evl_future_release(w);
#ifndef EVLOOP_NO_COMPOSE
  evl_task_group_free(g);
#endif
  evl_condition_free(c);
  evl_lock_free(m.l);
  evl_semaphore_free(m.s);
  evl_queue_free(m.q);
  evl_barrier_free(m.b);
  evl_event_free(m.e);
}

TEST(every_allocation_failing_once) {
  long k, total = 0;
  for (k = -1; k == -1 || k < total; k++) {
    oom_alloc a = {0, 0, -1};
    evl_loop_config cfg;
    evl_loop *loop = NULL;
    memset(&cfg, 0, sizeof cfg);
    a.fail_at = k;
    cfg.alloc = oom_realloc;
    cfg.alloc_ctx = &a;
    cfg.backend = test_backend();
    if (evl_loop_new(&loop, &cfg) == 0) {
      evl_set_exception_handler(loop, oom_quiet, NULL);
      oom_workload(loop);
    }
    CHECK_EQ(a.live, 0);
    if (k == -1)
      total = a.total; /* the first run counts them */
  }
  CHECK(total > 30);
  printf("  note: %ld allocations, each failed once\n", total);
}

TESTS_BEGIN
T(lock_fifo_and_exclusive)
T(lock_cancel_pending_waiter)
T(lock_cancel_after_grant_passes_it_on)
T(lock_grant_released_unread_goes_back)
T(lock_free_fails_waiters)
T(event_set_clear_wait_cancel)
T(condition_notify_fifo_and_all)
T(condition_cancelled_wait_retakes_lock)
T(condition_wait_for_predicate)
T(condition_notified_then_cancelled_passes_it_on)
T(semaphore_limits_and_fifo)
T(bounded_semaphore_refuses_extra_release)
T(semaphore_cancel_after_grant_and_pending)
T(ten_thousand_tasks_on_lock_and_semaphore)
T(barrier_passes_in_rounds)
T(barrier_abort_reset_and_cancel)
T(every_allocation_failing_once)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_SYNC: no synchronisation primitives")
#endif
