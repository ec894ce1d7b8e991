/* What a task's end carries for it (issue 15's ergonomics): deferred calls
   (evl_task_defer), `async with lock/sem:` (evl_lock_hold,
   evl_semaphore_hold), children nobody awaits (evl_task_group_spawn), the
   end of `async with TaskGroup()` (EVL_TASK_GROUP_END), and evl_run's
   zeroed state. Each however the task ends: returned, failed, cancelled
   (before it started, while waiting, after a grant it never took), its
   loop closed. */
#define _GNU_SOURCE 1 /* before any system header, as evloop.h asks */
#include "alloc_test.h"

#include <stdlib.h>
#include <string.h>

/* ---- evl_task_defer ---- */

typedef struct {
  char log[16];
  int n;
} defer_log;
typedef struct {
  defer_log *log;
  char c;
} defer_arg;
static void note(void *arg) {
  defer_arg *a = (defer_arg *)arg;
  a->log->log[a->log->n++] = a->c;
}

typedef struct {
  defer_log *log;
  defer_arg a, b;
  int fail;
  double sleep;
} deferring_state;
EVL_TASK(deferring, t, deferring_state, s)
  s->a.log = s->b.log = s->log;
  s->a.c = 'a';
  s->b.c = 'b';
  CHECK_EQ(evl_task_defer(t, note, &s->a), 0);
  CHECK_EQ(evl_task_defer(t, note, &s->b), 0);
  CHECK_EQ(evl_task_defer(t, free, malloc(32)), 0); /* ASan: freed */
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->sleep, NULL));
  if (s->fail)
    EVL_ASYNC_FAIL(t, EVL_EIO, "failed");
  EVL_FINALLY(t);
  s->log->log[s->log->n++] = 'f'; /* the finally section runs first */
EVL_TASK_END(t)

static int run_deferring(evl_loop *loop, int fail, int cancel_at,
                         defer_log *log) {
  deferring_state s;
  evl_task *t;
  int rc;
  memset(&s, 0, sizeof s);
  memset(log, 0, sizeof *log);
  s.log = log;
  s.fail = fail;
  s.sleep = cancel_at ? 1.0 : 0.001;
  t = evl_task_create(loop, deferring, &s, sizeof s);
  if (cancel_at == 1) { /* cancelled before it started: nothing deferred */
    evl_task_cancel(t);
  } else if (cancel_at == 2) { /* cancelled while it sleeps */
    evl_future *f = evl_sleep(loop, 0.02, NULL);
    evl_run_until_complete(loop, f);
    evl_future_release(f);
    evl_task_cancel(t);
  }
  rc = evl_run_until_complete(loop, t);
  CHECK_EQ(evl_task_defer(t, note, &s.a), EVL_EINVALSTATE); /* done */
  evl_future_release(t);
  return rc;
}

TEST(task_defer_runs_last_first_however_the_task_ends) {
  evl_loop *loop = test_open();
  defer_log log;
  CHECK_EQ(run_deferring(loop, 0, 0, &log), 0);
  CHECK(strcmp(log.log, "fba") == 0);
  CHECK_EQ(run_deferring(loop, 1, 0, &log), EVL_EIO);
  CHECK(strcmp(log.log, "fba") == 0);
  CHECK_EQ(run_deferring(loop, 0, 2, &log), EVL_ECANCELED);
  CHECK(strcmp(log.log, "fba") == 0);
  CHECK_EQ(run_deferring(loop, 0, 1, &log), EVL_ECANCELED);
  CHECK_EQ(log.n, 0); /* the body never ran: it deferred nothing */
  CHECK_EQ(evl_task_defer(NULL, note, NULL), EVL_EINVAL);
  test_close(loop);
}

TEST(task_defer_runs_when_the_loop_closes) {
  evl_loop *loop = test_loop();
  deferring_state s;
  defer_log log;
  evl_task *t;
  evl_future *f;
  memset(&s, 0, sizeof s);
  memset(&log, 0, sizeof log);
  s.log = &log;
  s.sleep = 5.0;
  t = evl_task_create(loop, deferring, &s, sizeof s);
  f = evl_sleep(loop, 0.01, NULL);
  evl_run_until_complete(loop, f);
  evl_future_release(f);
  CHECK_EQ(evl_task_defer(t, NULL, NULL), EVL_EINVAL);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK(strcmp(log.log, "fba") == 0); /* closing cancels it: it ends */
  evl_future_release(t);
  evl_loop_free(loop);
}

TEST(task_defer_without_memory_leaves_arg_to_the_caller) {
  evl_loop *loop = alloc_loop();
  defer_log log;
  defer_arg a;
  evl_task *t = evl_task_create(loop, deferring, NULL, sizeof(deferring_state));
  memset(&log, 0, sizeof log);
  a.log = &log;
  a.c = 'x';
  memory_runs_out();
  CHECK_EQ(evl_task_defer(t, note, &a), EVL_ENOMEM);
  memory_is_back();
  evl_task_cancel(t); /* before it started */
  CHECK_EQ(evl_run_until_complete(loop, t), EVL_ECANCELED);
  CHECK_EQ(log.n, 0); /* not run */
  evl_future_release(t);
  test_close(loop);
}

#ifndef EVLOOP_NO_SYNC
/* ---- evl_lock_hold, evl_semaphore_hold ---- */

typedef struct {
  evl_semaphore *sem;
  evl_lock *lock;
  int *active, *max_active, *ended;
  double sleep;
  int fail;
  int may_free; /* the test frees the lock while held: do not look at it */
  evl_task *cancel_after; /* cancelled right after this task lets go */
} holder_state;
static void cancel_it(void *arg) {
  evl_task_cancel((evl_task *)arg);
}
EVL_TASK(holder, t, holder_state, h)
  if (h->cancel_after) /* deferred first: runs after the release */
    CHECK_EQ(evl_task_defer(t, cancel_it, h->cancel_after), 0);
  if (h->sem)
    EVL_AWAIT(t, evl_semaphore_hold(h->sem, t));
  else
    EVL_AWAIT(t, evl_lock_hold(h->lock, t));
  if (++*h->active > *h->max_active)
    *h->max_active = *h->active;
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), h->sleep, NULL));
  if (h->fail)
    EVL_ASYNC_FAIL(t, EVL_EIO, "failed while holding");
  EVL_FINALLY(t);
  if (evl_task_finally_error(t) != EVL_ECANCELED || h->fail) {
    --*h->active; /* it got in (a cancelled waiter did not) */
    /* departure from asyncio: the block is the whole task, finally
       section included */
    if (!h->may_free)
      CHECK(h->sem ? evl_semaphore_value(h->sem) < 2
                   : evl_lock_locked(h->lock));
  }
  ++*h->ended;
EVL_TASK_END(t)

/* Five tasks on a semaphore of 2 (or a lock): A fails while holding, B
   and E hold and return, C is cancelled while it waits, D is cancelled
   right after A's end granted it, before it resumed. Every hold is given
   back once (unbounded: a second release would show), at most 2 (1) at a
   time, and E gets in after D. */
static void hold_scenario(int use_sem) {
  static const int sem_order[5] = {0, 1, 2, 3, 4},
                   lock_order[5] = {0, 2, 1, 3, 4};
  evl_loop *loop = test_open();
  evl_semaphore *sem = use_sem ? evl_semaphore_new(loop, 2, 0) : NULL;
  evl_lock *lock = use_sem ? NULL : evl_lock_new(loop);
  int active = 0, max_active = 0, ended = 0, i;
  holder_state h[5];
  evl_task *t[5];
  evl_future *f;
  memset(h, 0, sizeof h);
  for (i = 0; i < 5; i++) {
    h[i].sem = sem;
    h[i].lock = lock;
    h[i].active = &active;
    h[i].max_active = &max_active;
    h[i].ended = &ended;
    h[i].sleep = 0.03;
  }
  h[0].fail = 1;
  for (i = 0; i < 5; i++) { /* the state is passed through: h[0] sees t[2] */
    int k = use_sem ? sem_order[i] : lock_order[i];
    t[k] = evl_task_create(loop, holder, &h[k], 0);
  }
  h[0].cancel_after = t[2];
  f = evl_sleep(loop, 0.01, NULL);
  evl_run_until_complete(loop, f);
  evl_future_release(f);
  CHECK_EQ(evl_task_cancel(t[3]), 1); /* waiting */
  CHECK_EQ(evl_run_until_complete(loop, t[3]), EVL_ECANCELED);
  CHECK_EQ(evl_run_until_complete(loop, t[0]), EVL_EIO);
  CHECK_EQ(evl_run_until_complete(loop, t[1]), 0);
  CHECK_EQ(evl_run_until_complete(loop, t[2]), EVL_ECANCELED);
  CHECK_EQ(evl_run_until_complete(loop, t[4]), 0);
  CHECK_EQ(max_active, use_sem ? 2 : 1);
  CHECK_EQ(active, 0);
  CHECK_EQ(ended, 5);
  if (use_sem) {
    CHECK_EQ(evl_semaphore_value(sem), 2); /* all given back, once each */
  } else {
    CHECK_EQ(evl_lock_locked(lock), 0);
  }
  for (i = 0; i < 5; i++)
    evl_future_release(t[i]);
  evl_semaphore_free(sem);
  evl_lock_free(lock);
  test_close(loop);
}
TEST(semaphore_hold_gives_back_however_the_task_ends) {
  hold_scenario(1);
}
TEST(lock_hold_gives_back_however_the_task_ends) {
  hold_scenario(0);
}

TEST(hold_refuses_bad_arguments_and_survives_a_freed_lock) {
  evl_loop *loop = test_open();
  evl_lock *lock = evl_lock_new(loop);
  evl_semaphore *sem = evl_semaphore_new(loop, 1, 0);
  int active = 0, max_active = 0, ended = 0;
  holder_state h;
  evl_task *t, *done = evl_task_create(loop, holder, NULL, sizeof h);
  evl_future *plain = evl_future_new(loop);
  evl_task_cancel(done);
  evl_run_until_complete(loop, done);
  CHECK(evl_lock_hold(NULL, done) == NULL);
  CHECK(evl_lock_hold(lock, NULL) == NULL);
  CHECK(evl_lock_hold(lock, done) == NULL);      /* not pending */
  CHECK(evl_semaphore_hold(sem, plain) == NULL); /* not a task */
  CHECK(evl_semaphore_hold(NULL, done) == NULL);
  CHECK_EQ(evl_lock_locked(lock), 0); /* nothing was taken */
  CHECK_EQ(evl_semaphore_value(sem), 1);
  memset(&h, 0, sizeof h);
  h.lock = lock;
  h.active = &active;
  h.max_active = &max_active;
  h.ended = &ended;
  h.sleep = 0.05;
  h.may_free = 1;
  t = evl_task_create(loop, holder, &h, sizeof h);
  while (!active)
    evl_run_once(loop, 0.01);
  evl_lock_free(lock); /* freed while held: the task's end lets go of it */
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  evl_future_release(t);
  evl_future_release(done);
  evl_future_release(plain);
  evl_semaphore_free(sem);
  test_close(loop);
}

/* evl_semaphore_new_in / evl_lock_new_in / evl_queue_new_in: freed at the
   task's end (ASan and the fixture's leak count see it), also when the loop
   closes on it with a waiter queued; EVL_AWAIT_SET stores a result without its
   type. */
typedef struct {
  evl_semaphore *sem;
  evl_lock *lock;
  evl_queue *queue;
  evl_semaphore **got;
  int waiter_err;
  double sleep;
} owner_state;
EVL_TASK(sem_waiter, t, owner_state, o)
  EVL_AWAIT_TRY(t, evl_semaphore_acquire(o->sem));
  o->waiter_err = evl_await_error(t);
EVL_TASK_END(t)
EVL_TASK(owner, t, owner_state, o)
  o->sem = evl_semaphore_new_in(t, 1, 0);
  o->lock = evl_lock_new_in(t);
  o->queue = evl_queue_new_in(t, EVL_QUEUE_FIFO, 0, free);
  CHECK(o->sem != NULL && o->lock != NULL && o->queue != NULL);
  CHECK_EQ(evl_queue_put_nowait(o->queue, malloc(8)), 0); /* freed with it */
  EVL_AWAIT_SET(t, *o->got, evl_sleep(evl_task_loop(t), 0, o->sem));
  EVL_AWAIT(t, evl_semaphore_acquire(o->sem));
  EVL_AWAIT(t, evl_lock_acquire(o->lock)); /* freed while held: fine */
  evl_future_release(evl_task_create(evl_task_loop(t), sem_waiter, o, 0));
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), o->sleep, NULL));
EVL_TASK_END(t)

TEST(new_in_frees_with_the_task) {
  evl_loop *loop = test_open();
  evl_semaphore *got = NULL;
  owner_state o;
  evl_task *t;
  memset(&o, 0, sizeof o);
  o.got = &got;
  o.sleep = 0.01;
  t = evl_task_create(loop, owner, &o, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK(got == o.sem);                          /* EVL_AWAIT_SET */
  CHECK(evl_semaphore_new_in(t, 1, 0) == NULL); /* done */
  CHECK(evl_lock_new_in(NULL) == NULL);
  CHECK(evl_queue_new_in(t, EVL_QUEUE_FIFO, 0, NULL) == NULL);
  evl_future_release(t);
  evl_run_once(loop, 0); /* the waiter saw its semaphore freed */
  CHECK_EQ(o.waiter_err, EVL_ECLOSED);
  memset(&o, 0, sizeof o); /* the loop closes on the owner and waiter */
  o.got = &got;
  o.sleep = 10;
  t = evl_task_create(loop, owner, &o, 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  evl_future_release(t);
  test_close(loop);
}

#endif /* EVLOOP_NO_SYNC */

#ifndef EVLOOP_NO_COMPOSE
/* ---- evl_task_group_spawn, EVL_TASK_GROUP_END ---- */

typedef struct {
  double delay;
  int fail, *ended, *cancelled;
} kid_state;
EVL_TASK(kid, t, kid_state, k)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), k->delay, NULL));
  if (k->fail)
    EVL_ASYNC_FAIL(t, k->fail, "kid failed");
  EVL_FINALLY(t);
  ++*k->ended;
  if (evl_task_finally_error(t) == EVL_ECANCELED)
    ++*k->cancelled;
EVL_TASK_END(t)

typedef struct {
  evl_task_group *tg;
  kid_state kids[3];
  int nkids, body_fail, no_group, ended, cancelled, after, spawn_rc[3], i;
  double body_sleep;
} grouping_state;
EVL_TASK(grouping, t, grouping_state, g)
  if (!g->no_group)
    g->tg = evl_task_group_new(evl_task_loop(t), t);
  for (g->i = 0; g->i < g->nkids; g->i++) {
    g->kids[g->i].ended = &g->ended;
    g->kids[g->i].cancelled = &g->cancelled;
    g->spawn_rc[g->i] =
        evl_task_group_spawn(g->tg, kid, &g->kids[g->i], sizeof g->kids[g->i]);
  }
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), g->body_sleep, NULL));
  if (g->body_fail)
    EVL_ASYNC_FAIL(t, g->body_fail, "body failed");
  EVL_TASK_GROUP_END(t, g->tg);
  g->after = 1; /* only when the body and every child succeeded */
  EVL_ASYNC_RETURN(t, &g->after);
EVL_TASK_END(t)

static grouping_state *grouping_new(int nkids, double d0, int fail0) {
  grouping_state *g = (grouping_state *)calloc(1, sizeof *g);
  int i;
  g->nkids = nkids;
  for (i = 0; i < nkids; i++)
    g->kids[i].delay = 0.02 * (i + 1);
  g->kids[0].delay = d0;
  g->kids[0].fail = fail0;
  return g;
}
/* Runs g's task; cancel_after > 0: cancelled then. Returns its error. */
static int grouping_run(evl_loop *loop, grouping_state *g, double cancel_after,
                        char *msg) {
  evl_task *t = evl_task_create(loop, grouping, g, 0);
  int rc;
  if (cancel_after > 0) {
    evl_future *f = evl_sleep(loop, cancel_after, NULL);
    evl_run_until_complete(loop, f);
    evl_future_release(f);
    evl_task_cancel(t);
  }
  rc = evl_run_until_complete(loop, t);
  if (msg)
    snprintf(msg, 32, "%s",
             evl_future_error_message(t) ? evl_future_error_message(t) : "");
  if (!rc)
    CHECK(evl_future_result(t) == &g->after);
  evl_future_release(t);
  CHECK(g->tg == NULL); /* freed, however it ended */
  return rc;
}

TEST(task_group_end_waits_for_spawned_children) {
  evl_loop *loop = test_open();
  grouping_state *g = grouping_new(3, 0.01, 0);
  CHECK_EQ(grouping_run(loop, g, 0, NULL), 0);
  CHECK_EQ(g->ended, 3);
  CHECK_EQ(g->cancelled, 0);
  CHECK_EQ(g->after, 1);
  CHECK_EQ(g->spawn_rc[0] | g->spawn_rc[1] | g->spawn_rc[2], 0);
  free(g);
  test_close(loop);
}

/* A child fails while the body sleeps: the siblings and the body are
   cancelled, the task fails with the child's error and message. */
TEST(task_group_end_carries_a_child_failure_out) {
  evl_loop *loop = test_open();
  grouping_state *g = grouping_new(3, 0.01, EVL_ECONNRESET);
  char msg[32];
  g->body_sleep = 1.0;
  CHECK_EQ(grouping_run(loop, g, 0, msg), EVL_ECONNRESET);
  CHECK(strcmp(msg, "kid failed") == 0);
  CHECK_EQ(g->ended, 3);
  CHECK_EQ(g->cancelled, 2);
  CHECK_EQ(g->after, 0);
  free(g);
  test_close(loop);
}

/* The body fails, or the task is cancelled: the children are cancelled and
   waited for, the task ends as its body did. */
TEST(task_group_end_cancels_children_when_the_body_fails) {
  evl_loop *loop = test_open();
  grouping_state *g = grouping_new(2, 0.5, 0);
  g->body_fail = EVL_EPIPE;
  CHECK_EQ(grouping_run(loop, g, 0, NULL), EVL_EPIPE);
  CHECK_EQ(g->ended, 2);
  CHECK_EQ(g->cancelled, 2);
  CHECK_EQ(g->after, 0);
  free(g);
  g = grouping_new(2, 0.5, 0);
  g->body_sleep = 1.0;
  CHECK_EQ(grouping_run(loop, g, 0.02, NULL), EVL_ECANCELED);
  CHECK_EQ(g->ended, 2);
  CHECK_EQ(g->cancelled, 2);
  CHECK_EQ(g->after, 0);
  free(g);
  g = grouping_new(2, 0.5, 0); /* cancelled while the end waits */
  CHECK_EQ(grouping_run(loop, g, 0.02, NULL), EVL_ECANCELED);
  CHECK_EQ(g->ended, 2);
  CHECK_EQ(g->cancelled, 2);
  free(g);
  test_close(loop);
}

/* The crawler's pattern: children spawn more children into the group
   while the parent already waits at its end; the end waits for them all. */
typedef struct {
  evl_task_group **tg;
  int depth, *ended;
} spawner_state;
EVL_TASK(spawner, t, spawner_state, p)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
  if (p->depth < 3) {
    spawner_state next = {p->tg, p->depth + 1, p->ended};
    CHECK_EQ(evl_task_group_spawn(*p->tg, spawner, &next, sizeof next), 0);
    CHECK_EQ(evl_task_group_spawn(*p->tg, spawner, &next, sizeof next), 0);
  }
  ++*p->ended;
EVL_TASK_END(t)
typedef struct {
  evl_task_group *tg;
  int ended, after;
} spawning_state;
EVL_TASK(spawning, t, spawning_state, s)
  s->tg = evl_task_group_new(evl_task_loop(t), t);
  {
    spawner_state first = {&s->tg, 0, &s->ended};
    evl_task_group_spawn(s->tg, spawner, &first, sizeof first);
  }
  EVL_TASK_GROUP_END(t, s->tg);
  s->after = s->ended;
EVL_TASK_END(t)

TEST(task_group_end_waits_for_children_spawned_by_children) {
  spawning_state s;
  memset(&s, 0, sizeof s);
  CHECK_EQ(evl_run(spawning, &s, 0, NULL, NULL), 0);
  CHECK_EQ(s.after, 1 + 2 + 4 + 8);
}

TEST(task_group_spawn_refuses_and_reports) {
  evl_loop *loop = alloc_loop();
  evl_task_group *tg = evl_task_group_new(loop, NULL);
  grouping_state *g = grouping_new(3, 0.01, 0);
  kid_state k;
  evl_future *w;
  int ended = 0, cancelled = 0;
  memset(&k, 0, sizeof k);
  k.ended = &ended;
  k.cancelled = &cancelled;
  k.delay = 0.5;
  CHECK_EQ(evl_task_group_spawn(NULL, kid, &k, sizeof k), EVL_EINVAL);
  CHECK_EQ(evl_task_group_spawn(tg, NULL, &k, sizeof k), EVL_EINVAL);
  CHECK_EQ(evl_task_group_spawn(tg, kid, &k, (size_t)-1), EVL_EINVAL);
  CHECK_EQ(evl_task_group_spawn(tg, kid, &k, sizeof k), 0);
  w = evl_sleep(loop, 0.01, NULL); /* the child starts */
  evl_run_until_complete(loop, w);
  evl_future_release(w);
  memory_runs_out(); /* an unchecked spawn is not lost: the group fails */
  CHECK_EQ(evl_task_group_spawn(tg, kid, &k, sizeof k), EVL_ENOMEM);
  memory_is_back();
  CHECK_EQ(evl_task_group_spawn(tg, kid, &k, sizeof k), EVL_EINVALSTATE);
  w = evl_task_group_wait(tg);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_ENOMEM);
  CHECK_EQ(ended, 1);
  CHECK_EQ(cancelled, 1); /* the first child was cancelled */
  evl_future_release(w);
  evl_task_group_free(tg);
  g->no_group = 1; /* evl_task_group_new failed: the end says so */
  CHECK_EQ(grouping_run(loop, g, 0, NULL), EVL_ENOMEM);
  free(g);
  test_close(loop);
}

#endif /* EVLOOP_NO_COMPOSE */

/* ---- evl_run with a NULL state and a size ---- */

typedef struct {
  long zero[8];
} zero_state;
EVL_TASK(check_zeroed, t, zero_state, z)
  {
    int i;
    for (i = 0; i < 8; i++)
      if (z->zero[i])
        EVL_ASYNC_FAIL(t, EVL_EINVAL, "state not zeroed");
  }
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  EVL_ASYNC_RETURN(t, (void *)z);
EVL_TASK_END(t)

TEST(run_with_null_state_gives_a_zeroed_state) {
  void *result = NULL;
  CHECK_EQ(evl_run(check_zeroed, NULL, sizeof(zero_state), NULL, &result), 0);
  CHECK(result != NULL);
}

TESTS_BEGIN
T(task_defer_runs_last_first_however_the_task_ends)
T(task_defer_runs_when_the_loop_closes)
T(task_defer_without_memory_leaves_arg_to_the_caller)
#ifndef EVLOOP_NO_SYNC
T(semaphore_hold_gives_back_however_the_task_ends)
T(lock_hold_gives_back_however_the_task_ends)
T(hold_refuses_bad_arguments_and_survives_a_freed_lock)
T(new_in_frees_with_the_task)
#endif
#ifndef EVLOOP_NO_COMPOSE
T(task_group_end_waits_for_spawned_children)
T(task_group_end_carries_a_child_failure_out)
T(task_group_end_cancels_children_when_the_body_fails)
T(task_group_end_waits_for_children_spawned_by_children)
T(task_group_spawn_refuses_and_reports)
#endif
T(run_with_null_state_gives_a_zeroed_state)
TESTS_END
