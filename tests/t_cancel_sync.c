/* Cancellation matrix (issue 11) for issue 15's futures: the lock,
   semaphore and condition waits, event and barrier waits, queue
   get/put/join, evl_wait, as_completed, shield, a TaskGroup's wait, a task
   under an evl_timeout, to_thread, and run_task_threadsafe's handle.

   Each case makes its objects on a fresh loop and starts the wait under
   test; 30 ms later the event that completes it happens (the lock is
   released, the item put, the second party arrives...). The wait is then
   ended at every stage it has, three ways:
   - the future itself cancelled before the loop ran, while waiting (after
     10 ms), just after the completing event, after completion; or, after
     the completing event, released unread;
   - a task awaiting it (EVL_AWAIT_TRY) cancelled at the same stages (also
     before the task ran: the wait is then never started);
   - evl_wait_for around it, its timeout firing at once, while waiting, at
     the same time as the completing event, or after completion.
   Whatever the outcome (result, EVL_ECANCELED or EVL_ETIMEDOUT), the
   object's state must be the one that outcome says: a waiter that did not
   get the lock (unit, item, space) never holds it, and the next waiter
   gets it; one that did holds it and gives it back; nothing the wait took
   is lost or counted twice; the inputs of evl_wait/as_completed/shield are
   never cancelled. Then the loop is freed: no crash, no leak
   (LeakSanitizer in the ASan builds), no fd left. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRIGGER_AT 0.03  /* when the completing event happens */
#define WAITING_AT 0.01  /* a stage while waiting */
#define UNREAD (-100000) /* settle: the future was released unread */

typedef struct sc sc;
typedef struct scase {
  const char *name;
  void (*setup)(sc *c);     /* objects, and waits ahead of the test */
  evl_future *(*op)(sc *c); /* the wait under test (a new reference) */
  void (*trigger)(sc *c);   /* what completes it */
  void (*settle)(sc *c,
                 int err); /* its outcome (c->result): check, give back */
  void (*finish)(sc *c);   /* the rest: check the state, free */
} scase;

struct sc {
  evl_loop *loop;
  const scase *cs;
  int op_called, triggered, err;
  int done_unread;    /* stage 4: the future was done when released */
  evl_future *opf;    /* the wait a task awaits (borrowed, while it awaits) */
  int done_at_cancel; /* the task was cancelled after its wait completed */
  void *result;
  /* the cases' objects */
  evl_lock *lock;
  evl_semaphore *sem;
  evl_condition *cond;
  evl_event *ev;
  evl_barrier *bar;
  evl_queue *q;
  evl_as_completed *ac;
  evl_task_group *group;
  evl_future *in, *other, *third;
  evl_task *task;
  int items[2], got;
};

static void quiet(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)ctx;
  (void)arg;
}

static void run_for(evl_loop *loop, double seconds) {
  double end = test_now() + seconds;
  while (test_now() < end)
    (void)evl_run_once(loop, 0.005);
}
static char g_where[96]; /* the run going on, for the messages */
/* Runs the loop until f is done (bounded); returns its error. */
#define run_until_done(loop, f) run_until_done_(loop, f, __LINE__)
static int run_until_done_(evl_loop *loop, evl_future *f, int line) {
  double end = test_now() + 5.0;
  while (!evl_future_done(f) && test_now() < end)
    (void)evl_run_once(loop, 0.005);
  if (!evl_future_done(f))
    test_fail_(__FILE__, line, "%s: pending forever", g_where);
  return evl_future_error(f);
}
static evl_future *op_call(sc *c) {
  c->op_called = 1;
  return c->opf = c->cs->op(c);
}
static void trigger_cb(evl_loop *loop, void *arg) {
  sc *c = (sc *)arg;
  (void)loop;
  c->triggered = 1;
  c->cs->trigger(c);
}

/* The task flavour: awaits the wait under test, keeps its outcome. */
static void awaiter(evl_task *t, void *state) {
  sc *c = *(sc **)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(t, op_call(c));
  c->err = evl_await_error(t);
  c->result = evl_await_result(t);
  EVL_ASYNC_END(t);
}

enum { FLAVOUR_FUTURE, FLAVOUR_TASK, FLAVOUR_WAIT_FOR };
/* Stages: 0 before the loop ran, 1 while waiting, 2 just after the
   completing event, 3 after completion, 4 (the future itself) released
   unread after the completing event. For evl_wait_for: the timeout. */
static const double wait_for_timeouts[] = {-1.0, WAITING_AT, TRIGGER_AT, 0.08};

static void one_run(const scase *cs, int flavour, int stage) {
  sc c;
  evl_future *f = NULL;
  evl_task *t = NULL;
  sc *cp = &c;
  int fds = test_count_fds();
  snprintf(g_where, sizeof g_where, "%s, %s, %s %d", cs->name,
           flavour == FLAVOUR_TASK       ? "awaited by a task"
           : flavour == FLAVOUR_WAIT_FOR ? "in evl_wait_for"
                                         : "the future",
           flavour == FLAVOUR_WAIT_FOR ? "timeout" : "stage", stage);
  memset(&c, 0, sizeof c);
  c.loop = test_loop();
  c.cs = cs;
  /* a task dropped unread that then fails is reported: expected here */
  evl_set_exception_handler(c.loop, quiet, NULL);
  cs->setup(&c);
  CHECK(evl_call_later(c.loop, TRIGGER_AT, trigger_cb, &c) > 0);
  if (flavour == FLAVOUR_TASK) {
    t = evl_task_create(c.loop, awaiter, &cp, sizeof cp);
    CHECK(t != NULL);
    f = (evl_future *)t; /* (a task is a future: ours to release) */
  } else if (flavour == FLAVOUR_WAIT_FOR) {
    f = evl_wait_for(op_call(&c), wait_for_timeouts[stage]);
    CHECK(f != NULL);
  } else {
    f = op_call(&c);
    CHECK(f != NULL);
  }
  if (flavour != FLAVOUR_WAIT_FOR) {
    if (stage >= 1)
      run_for(c.loop, WAITING_AT);
    if (stage >= 2)
      while (!c.triggered)
        (void)evl_run_once(c.loop, 0.005);
    if (stage == 3)
      (void)run_until_done(c.loop, f);
    if (stage == 4) {
      c.done_unread = evl_future_done(f);
      evl_future_release(f); /* unread: whatever it got goes back */
      f = NULL;
    } else {
      int rc;
      if (t && !evl_future_done(f) && c.opf) /* the task still awaits it */
        c.done_at_cancel = evl_future_done(c.opf);
      rc = t ? evl_task_cancel(t) : evl_future_cancel(f);
      CHECK(rc == 0 || rc == 1);
    }
  }
  if (f) {
    int err = run_until_done(c.loop, f);
    if (t) { /* what the awaiting task saw (a task cancelled before it ran
                never started the wait) */
      if (c.op_called)
        err = c.err;
      else
        CHECK_EQ(err, EVL_ECANCELED);
    } else {
      c.result = err ? NULL : evl_future_result(f);
    }
    if (err != 0 && err != EVL_ECANCELED && err != EVL_ETIMEDOUT)
      test_fail_(__FILE__, __LINE__, "%s: %s", g_where, evl_err_name(err));
    cs->settle(&c, err);
    evl_future_release(f);
  } else {
    cs->settle(&c, UNREAD);
  }
  while (!c.triggered)
    (void)evl_run_once(c.loop, 0.005);
  run_for(c.loop, 0.02);
  cs->finish(&c);
  evl_loop_free(c.loop);
  test_settle_fds();
  CHECK_EQ(test_count_fds(), fds);
}

static void matrix(const scase *cs) {
  int stage;
  for (stage = 0; stage <= 4; stage++)
    one_run(cs, FLAVOUR_FUTURE, stage);
  for (stage = 0; stage <= 3; stage++)
    one_run(cs, FLAVOUR_TASK, stage);
  for (stage = 0; stage < 4; stage++)
    one_run(cs, FLAVOUR_WAIT_FOR, stage);
}

/* Takes a wait that must complete at once with a result. */
static void *take_now(evl_future *f) {
  void *r;
  CHECK(f != NULL);
  CHECK(evl_future_done(f));
  CHECK_EQ(evl_future_error(f), 0);
  r = evl_future_result(f);
  evl_future_release(f);
  return r;
}
/* The second waiter must get what the first did not: runs it to done. */
static void *other_gets_it(sc *c) {
  void *r;
  CHECK_EQ(run_until_done(c->loop, c->other), 0);
  r = evl_future_result(c->other);
  evl_future_release(c->other);
  c->other = NULL;
  return r;
}

/* ---- lock: held by us, the wait under test, a second waiter behind ---- */

static void lock_setup(sc *c) {
  c->lock = evl_lock_new(c->loop);
  (void)take_now(evl_lock_acquire(c->lock));
}
static evl_future *lock_op(sc *c) {
  evl_future *f = evl_lock_acquire(c->lock);
  c->other = evl_lock_acquire(c->lock); /* behind the one under test */
  return f;
}
static void lock_trigger(sc *c) {
  CHECK_EQ(evl_lock_release(c->lock), 0);
}
static void lock_settle(sc *c, int err) {
  if (err == 0) { /* ours: held until we give it back */
    CHECK(c->result == c->lock);
    CHECK(evl_lock_locked(c->lock));
    CHECK(c->triggered); /* we held it until then */
    CHECK_EQ(evl_lock_release(c->lock), 0);
  }
}
static void lock_finish(sc *c) {
  /* whatever the first waiter's fate, the second gets the lock */
  if (!c->other) /* (the first never came) */
    c->other = evl_lock_acquire(c->lock);
  CHECK(other_gets_it(c) == c->lock);
  CHECK(evl_lock_locked(c->lock));
  CHECK_EQ(evl_lock_release(c->lock), 0);
  CHECK(!evl_lock_locked(c->lock));
  evl_lock_free(c->lock);
}
static const scase lock_case = {"lock acquire", lock_setup,  lock_op,
                                lock_trigger,   lock_settle, lock_finish};

/* ---- bounded semaphore of 1: the same, and its value is conserved ----- */

static void sem_setup(sc *c) {
  c->sem = evl_semaphore_new(c->loop, 1, 1);
  (void)take_now(evl_semaphore_acquire(c->sem));
}
static evl_future *sem_op(sc *c) {
  evl_future *f = evl_semaphore_acquire(c->sem);
  c->other = evl_semaphore_acquire(c->sem); /* behind the one under test */
  return f;
}
static void sem_trigger(sc *c) {
  CHECK_EQ(evl_semaphore_release(c->sem), 0);
}
static void sem_settle(sc *c, int err) {
  if (err == 0) {
    CHECK(c->triggered);
    CHECK_EQ(evl_semaphore_value(c->sem), 0);
    CHECK_EQ(evl_semaphore_release(c->sem), 0);
  }
}
static void sem_finish(sc *c) {
  if (!c->other)
    c->other = evl_semaphore_acquire(c->sem);
  (void)other_gets_it(c);
  CHECK_EQ(evl_semaphore_value(c->sem), 0);
  CHECK_EQ(evl_semaphore_release(c->sem), 0);
  CHECK_EQ(evl_semaphore_value(c->sem), 1);
  /* bounded: one more release would be a unit made from nothing */
  CHECK_EQ(evl_semaphore_release(c->sem), EVL_EINVALSTATE);
  evl_semaphore_free(c->sem);
}
static const scase sem_case = {"semaphore acquire", sem_setup,  sem_op,
                               sem_trigger,         sem_settle, sem_finish};

/* ---- condition: waits with the lock held; a task notifies ------------- */

typedef struct notifier {
  evl_condition *cond;
} notifier;
static void notify_task(evl_task *t, void *state) {
  notifier *n = (notifier *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_lock_acquire(evl_condition_lock(n->cond)));
  CHECK(evl_condition_notify(n->cond, 1) >= 0);
  CHECK_EQ(evl_lock_release(evl_condition_lock(n->cond)), 0);
  EVL_ASYNC_END(t);
}
static void cond_setup(sc *c) {
  c->cond = evl_condition_new(c->loop, NULL);
  CHECK(c->cond != NULL);
  (void)take_now(evl_lock_acquire(evl_condition_lock(c->cond)));
}
static evl_future *cond_op(sc *c) {
  return evl_condition_wait(c->cond);
}
static void cond_trigger(sc *c) {
  notifier n;
  n.cond = c->cond;
  c->task = evl_task_create(c->loop, notify_task, &n, sizeof n);
  CHECK(c->task != NULL);
}
static void cond_settle(sc *c, int err) {
  /* Done, however: the lock is held again (also when cancelled or timed
     out, as asyncio), or the wait never started and we still hold it. */
  if (err != UNREAD) {
    CHECK(evl_lock_locked(evl_condition_lock(c->cond)));
    CHECK_EQ(evl_lock_release(evl_condition_lock(c->cond)), 0);
  }
}
static void cond_finish(sc *c) {
  CHECK_EQ(run_until_done(c->loop, (evl_future *)c->task), 0);
  evl_future_release((evl_future *)c->task);
  CHECK(!evl_lock_locked(evl_condition_lock(c->cond)));
  evl_condition_free(c->cond);
}
static const scase cond_case = {"condition wait", cond_setup,  cond_op,
                                cond_trigger,     cond_settle, cond_finish};

/* ---- event: the wait under test and a second waiter; set later -------- */

static void event_setup(sc *c) {
  c->ev = evl_event_new(c->loop);
  c->other = evl_event_wait(c->ev);
  CHECK(c->other != NULL);
}
static evl_future *event_op(sc *c) {
  return evl_event_wait(c->ev);
}
static void event_trigger(sc *c) {
  evl_event_set(c->ev);
}
static void event_settle(sc *c, int err) {
  if (err == 0)
    CHECK(evl_event_is_set(c->ev));
}
static void event_finish(sc *c) {
  (void)other_gets_it(c);
  CHECK(evl_event_is_set(c->ev));
  evl_event_free(c->ev);
}
static const scase event_case = {"event wait",  event_setup,  event_op,
                                 event_trigger, event_settle, event_finish};

/* ---- barrier of two: the second party arrives later ------------------- */

static void bar_setup(sc *c) {
  c->bar = evl_barrier_new(c->loop, 2);
}
static evl_future *bar_op(sc *c) {
  return evl_barrier_wait(c->bar);
}
static void bar_trigger(sc *c) {
  c->other = evl_barrier_wait(c->bar);
  CHECK(c->other != NULL);
}
static void bar_settle(sc *c, int err) {
  if (err == 0)
    CHECK((intptr_t)c->result == 0 || (intptr_t)c->result == 1);
}
static void bar_finish(sc *c) {
  if (!evl_future_done(c->other)) {
    /* the first party left (cancelled) without breaking it: the second
       waits alone until a third comes */
    CHECK_EQ(evl_barrier_n_waiting(c->bar), 1);
    c->third = evl_barrier_wait(c->bar);
    CHECK_EQ(run_until_done(c->loop, c->third), 0);
    evl_future_release(c->third);
  }
  (void)other_gets_it(c);
  CHECK(!evl_barrier_broken(c->bar));
  CHECK_EQ(evl_barrier_n_waiting(c->bar), 0);
  evl_barrier_free(c->bar);
}
static const scase bar_case = {"barrier wait", bar_setup,  bar_op,
                               bar_trigger,    bar_settle, bar_finish};

/* ---- queue get: an item put later; a second getter behind ------------- */

static void get_setup(sc *c) {
  c->q = evl_queue_new(c->loop, EVL_QUEUE_FIFO, 0, NULL);
  c->other = NULL;
}
static evl_future *get_op(sc *c) {
  evl_future *f = evl_queue_get(c->q);
  if (!c->other) /* behind the one under test */
    c->other = evl_queue_get(c->q);
  return f;
}
static void get_trigger(sc *c) {
  CHECK_EQ(evl_queue_put_nowait(c->q, &c->items[0]), 0);
}
static void get_settle(sc *c, int err) {
  if (err == 0) {
    CHECK(c->result == &c->items[0]);
    c->got++;
  }
}
static void get_finish(sc *c) {
  /* one item put, one more now: each is somewhere, once */
  void *r;
  int n;
  CHECK_EQ(evl_queue_put_nowait(c->q, &c->items[1]), 0);
  if (c->other) {
    r = other_gets_it(c);
    CHECK(r == &c->items[0] || r == &c->items[1]);
    c->got++;
  }
  n = (int)evl_queue_qsize(c->q);
  CHECK_EQ(c->got + n, 2);
  while (evl_queue_get_nowait(c->q, &r) == 0)
    CHECK(r == &c->items[0] || r == &c->items[1]);
  evl_queue_free(c->q);
}
static const scase get_case = {"queue get", get_setup,  get_op,
                               get_trigger, get_settle, get_finish};

/* ---- queue put: the queue (maxsize 1) is full until an item is taken -- */

static void put_setup(sc *c) {
  c->q = evl_queue_new(c->loop, EVL_QUEUE_FIFO, 1, NULL);
  CHECK_EQ(evl_queue_put_nowait(c->q, &c->items[0]), 0);
}
static evl_future *put_op(sc *c) {
  return evl_queue_put(c->q, &c->items[1]);
}
static void put_trigger(sc *c) {
  void *r;
  CHECK_EQ(evl_queue_get_nowait(c->q, &r), 0);
  CHECK(r == &c->items[0]);
}
static void put_settle(sc *c, int err) {
  if (err == UNREAD) /* done before it was dropped: the item went in */
    c->got = c->done_unread;
  /* A task cancelled after its put completed, before it resumed: it sees
     EVL_ECANCELED, but the item went in at the grant (asyncio puts after
     the wake-up, so there it would not be): the header says so. */
  if (err == EVL_ECANCELED && c->done_at_cancel)
    c->got = 1;
  if (err == 0) {
    CHECK(c->result == &c->items[1]);
    c->got = 1; /* it is in the queue */
  }
}
static void put_finish(sc *c) {
  void *r;
  /* in the queue exactly when the put said so: else the item is still
     the caller's (it may free it) */
  if (!c->got && evl_queue_qsize(c->q) != 0)
    test_fail_(__FILE__, __LINE__, "%s: the put failed, its item is queued",
               g_where);
  if (c->got) {
    CHECK_EQ(evl_queue_qsize(c->q), 1);
    CHECK_EQ(evl_queue_get_nowait(c->q, &r), 0);
    CHECK(r == &c->items[1]);
  }
  CHECK_EQ(evl_queue_qsize(c->q), 0);
  evl_queue_free(c->q);
}
static const scase put_case = {"queue put", put_setup,  put_op,
                               put_trigger, put_settle, put_finish};

/* ---- queue join: one item not yet done -------------------------------- */

static void join_setup(sc *c) {
  c->q = evl_queue_new(c->loop, EVL_QUEUE_FIFO, 0, NULL);
  CHECK_EQ(evl_queue_put_nowait(c->q, &c->items[0]), 0);
}
static evl_future *join_op(sc *c) {
  return evl_queue_join(c->q);
}
static void join_trigger(sc *c) {
  void *r;
  CHECK_EQ(evl_queue_get_nowait(c->q, &r), 0);
  CHECK_EQ(evl_queue_task_done(c->q), 0);
}
static void join_settle(sc *c, int err) {
  (void)c;
  (void)err;
}
static void join_finish(sc *c) {
  /* the queue is unaffected: a new join completes (all done) */
  evl_future *f = evl_queue_join(c->q);
  CHECK_EQ(run_until_done(c->loop, f), 0);
  evl_future_release(f);
  CHECK_EQ(evl_queue_task_done(c->q), EVL_EINVALSTATE);
  evl_queue_free(c->q);
}
static const scase join_case = {"queue join", join_setup,  join_op,
                                join_trigger, join_settle, join_finish};

/* ---- evl_wait, as_completed, shield: an input completed later; it is
   never cancelled by what happens to the wait ---------------------------- */

static void in_setup(sc *c) {
  c->in = evl_future_new(c->loop);
  CHECK(c->in != NULL);
}
static void in_trigger(sc *c) {
  CHECK_EQ(evl_future_set_result(c->in, &c->items[0]), 0);
}
static void in_finish(sc *c) {
  CHECK(evl_future_done(c->in));
  CHECK_EQ(evl_future_error(c->in), 0); /* not cancelled */
  CHECK(evl_future_result(c->in) == &c->items[0]);
  if (c->ac)
    evl_as_completed_free(c->ac);
  evl_future_release(c->in);
}

static evl_future *wait_op(sc *c) {
  return evl_wait(c->loop, &c->in, 1, EVL_FIRST_COMPLETED, INFINITY);
}
static void wait_settle(sc *c, int err) {
  if (err == 0)
    CHECK_EQ((intptr_t)c->result, 1);
}
static const scase wait_case = {"evl_wait", in_setup,    wait_op,
                                in_trigger, wait_settle, in_finish};

static void ac_setup(sc *c) {
  in_setup(c);
  c->ac = evl_as_completed_new(c->loop, &c->in, 1, INFINITY);
  CHECK(c->ac != NULL);
}
static evl_future *ac_op(sc *c) {
  return evl_as_completed_next(c->ac);
}
static void in_result_settle(sc *c, int err) {
  if (err == 0)
    CHECK(c->result == c->in || c->result == &c->items[0]);
}
static const scase ac_case = {"as_completed next", ac_setup,         ac_op,
                              in_trigger,          in_result_settle, in_finish};

static evl_future *shield_op(sc *c) {
  return evl_shield(c->in);
}
static const scase shield_case = {"shield",   in_setup,         shield_op,
                                  in_trigger, in_result_settle, in_finish};

/* ---- TaskGroup wait: one child awaiting an input ---------------------- */

static void child_task(evl_task *t, void *state) {
  evl_future *in = *(evl_future **)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_future_ref(in));
  EVL_ASYNC_END(t);
}
static void group_setup(sc *c) {
  in_setup(c);
  c->group = evl_task_group_new(c->loop, NULL);
  c->task = evl_task_group_create(c->group, child_task, &c->in, sizeof c->in);
  CHECK(c->group && c->task);
}
static evl_future *group_op(sc *c) {
  return evl_task_group_wait(c->group);
}
static void group_trigger(sc *c) {
  if (!evl_future_done(c->in))
    (void)evl_future_set_result(c->in, &c->items[0]);
}
static void group_settle(sc *c, int err) {
  /* the wait completes once the child ended: with it, or cancelling it */
  if (err != UNREAD && c->op_called)
    CHECK(evl_future_done((evl_future *)c->task));
  if (err == 0)
    CHECK_EQ(evl_future_error((evl_future *)c->task), 0);
}
static void group_finish(sc *c) {
  int err = run_until_done(c->loop, (evl_future *)c->task);
  CHECK(err == 0 || err == EVL_ECANCELED);
  evl_future_release((evl_future *)c->task);
  evl_task_group_free(c->group);
  CHECK(evl_future_done(c->in));
  evl_future_release(c->in);
}
static const scase group_case = {"task group wait", group_setup,  group_op,
                                 group_trigger,     group_settle, group_finish};

/* ---- a task under an evl_timeout that expires with the completion ----- */

typedef struct timed {
  evl_future *in;
  evl_timeout *to; /* (in the state: locals do not live across awaits) */
} timed;
static void timed_task(evl_task *t, void *state) {
  timed *s = (timed *)state;
  EVL_ASYNC_BEGIN(t);
  s->to = evl_timeout_new(t, TRIGGER_AT);
  CHECK(s->to != NULL);
  EVL_AWAIT(t, evl_future_ref(s->in));
  (void)evl_timeout_end(s->to);
  EVL_ASYNC_END(t);
}
static evl_future *timeout_op(sc *c) {
  timed s;
  s.in = c->in;
  s.to = NULL;
  return (evl_future *)evl_task_create(c->loop, timed_task, &s, sizeof s);
}
static void timeout_settle(sc *c, int err) {
  (void)c;
  (void)err; /* result, cancelled or timed out: each is right here */
}
static void timeout_finish(sc *c) {
  evl_future_release(c->in);
}
static const scase timeout_case = {"timeout scope", in_setup,
                                   timeout_op,      group_trigger,
                                   timeout_settle,  timeout_finish};

/* ---- to_thread: a job of 20 ms whose result must not leak ------------- */

static int g_jobs_made, g_jobs_freed; /* (a job's count: read after the join) */
static int job(void *arg, void **result) {
  (void)arg;
  test_sleep_ms(20);
  *result = malloc(16);
  g_jobs_made += *result != NULL;
  return *result ? 0 : EVL_ENOMEM;
}
static void job_free(void *p) {
  free(p);
  g_jobs_freed++;
}
static void thread_setup(sc *c) {
  (void)c;
}
static evl_future *thread_op(sc *c) {
  return evl_to_thread(c->loop, job, NULL, job_free);
}
static void thread_trigger(sc *c) {
  (void)c; /* the job ends by itself */
}
static void thread_settle(sc *c, int err) {
  if (err == 0)
    CHECK(c->result != NULL); /* the future's: freed with it */
}
static void thread_finish(sc *c) {
  (void)c;
}
static const scase thread_case = {"to_thread",    thread_setup,  thread_op,
                                  thread_trigger, thread_settle, thread_finish};

/* ---- run_task_threadsafe: its handle cancelled at each stage ---------- */

static evl_future *g_ts_in;
static void ts_task(evl_task *t, void *state) {
  double timeout = *(double *)state;
  EVL_ASYNC_BEGIN(t);
  if (timeout > 0)
    EVL_AWAIT(t, evl_wait_for(evl_future_ref(g_ts_in), timeout));
  else
    EVL_AWAIT(t, evl_future_ref(g_ts_in));
  EVL_ASYNC_RETURN(t, &g_ts_in);
  EVL_ASYNC_END(t);
}
static void ts_trigger(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  if (!evl_future_done(g_ts_in))
    (void)evl_future_set_result(g_ts_in, NULL);
}
/* stage: 0 cancelled before the loop ran (the task is not made yet), 1
   while waiting, 2 after it ended, 3 never (an evl_wait_for inside races
   the completion instead). */
static void ts_run(int stage, double timeout) {
  evl_loop *loop = test_loop();
  evl_threadsafe *h;
  void *result = NULL;
  double end;
  int err;
  g_ts_in = evl_future_new(loop);
  CHECK(evl_call_later(loop, TRIGGER_AT, ts_trigger, NULL) > 0);
  h = evl_run_task_threadsafe(loop, ts_task, &timeout, sizeof timeout);
  CHECK(h != NULL);
  if (stage >= 1)
    run_for(loop, WAITING_AT);
  if (stage == 2) {
    end = test_now() + 5.0;
    while (!evl_threadsafe_done(h) && test_now() < end)
      (void)evl_run_once(loop, 0.005);
  }
  if (stage <= 2)
    CHECK_EQ(evl_threadsafe_cancel(h), stage == 2 ? 0 : 1);
  end = test_now() + 5.0;
  while (!evl_threadsafe_done(h) && test_now() < end)
    (void)evl_run_once(loop, 0.005);
  CHECK_EQ(evl_threadsafe_wait(h, 0), 0);
  err = evl_threadsafe_result(h, &result);
  if (stage == 2 || (stage == 3 && timeout > TRIGGER_AT)) {
    CHECK_EQ(err, 0);
  } else if (stage == 3) {
    CHECK(err == 0 || err == EVL_ETIMEDOUT);
  } else {
    CHECK_EQ(err, EVL_ECANCELED);
  }
  if (err == 0)
    CHECK(result == &g_ts_in);
  evl_threadsafe_free(h);
  run_for(loop, 0.04);
  evl_future_release(g_ts_in);
  evl_loop_free(loop);
}

#ifndef EVLOOP_NO_THREADS
TEST(cancel_lock_acquire) {
  matrix(&lock_case);
}
TEST(cancel_semaphore_acquire) {
  matrix(&sem_case);
}
TEST(cancel_condition_wait) {
  matrix(&cond_case);
}
TEST(cancel_event_wait) {
  matrix(&event_case);
}
TEST(cancel_barrier_wait) {
  matrix(&bar_case);
}
TEST(cancel_queue_get) {
  matrix(&get_case);
}
TEST(cancel_queue_put) {
  matrix(&put_case);
}
TEST(cancel_queue_join) {
  matrix(&join_case);
}
TEST(cancel_evl_wait) {
  matrix(&wait_case);
}
TEST(cancel_as_completed) {
  matrix(&ac_case);
}
TEST(cancel_shield) {
  matrix(&shield_case);
}
TEST(cancel_task_group_wait) {
  matrix(&group_case);
}
TEST(cancel_timeout_scope) {
  matrix(&timeout_case);
}
TEST(cancel_to_thread) {
  matrix(&thread_case);
  /* every result made was freed: delivered with its future, else by the
     executor (the jobs that ran were joined with their loops) */
  CHECK(g_jobs_made > 0);
  CHECK_EQ(g_jobs_freed, g_jobs_made);
}
TEST(cancel_run_task_threadsafe) {
  int stage;
  for (stage = 0; stage <= 2; stage++)
    ts_run(stage, 0);
  ts_run(3, WAITING_AT);
  ts_run(3, TRIGGER_AT);
  ts_run(3, 0.08);
}
TESTS_BEGIN
T(cancel_lock_acquire)
T(cancel_semaphore_acquire)
T(cancel_condition_wait)
T(cancel_event_wait)
T(cancel_barrier_wait)
T(cancel_queue_get)
T(cancel_queue_put)
T(cancel_queue_join)
T(cancel_evl_wait)
T(cancel_as_completed)
T(cancel_shield)
T(cancel_task_group_wait)
T(cancel_timeout_scope)
T(cancel_to_thread)
T(cancel_run_task_threadsafe)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_THREADS: to_thread and "
               "run_task_threadsafe need threads")
#endif
