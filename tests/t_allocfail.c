/* The allocation-failure sweep: each scenario of sweep_test.h runs on a
   loop whose every allocation, the loop's own (evl_loop_config.alloc) and
   the library's process-wide ones (EVLOOP_MALLOC & co., routed to the same
   failing allocator here), goes through stat_alloc. For each N: the Nth
   allocation alone fails, and separately every allocation from the Nth on;
   the run must end with each future done (result or EVL_ENOMEM), nothing
   leaked (the count here, LeakSanitizer under ASan), no hang; then, memory
   back, the same scenario on the same loop must succeed in full. This
   file is its own implementation (EVLOOP_STATIC), as t_config. Plus the
   regression tests of the bugs the sweep and issue 11 found. */
#define _GNU_SOURCE 1 /* before any system header, as evloop.h asks */
#include <stddef.h>
static void *stat_alloc(void *ctx, void *ptr, size_t size);
#define EVLOOP_MALLOC(ctx, n) stat_alloc(NULL, NULL, (n))
#define EVLOOP_REALLOC(ctx, p, n) stat_alloc(NULL, (p), (n))
#define EVLOOP_FREE(ctx, p) ((void)stat_alloc(NULL, (p), 0))
#define EVLOOP_STATIC
#define EVLOOP_IMPLEMENTATION
#include "alloc_test.h"
#include "net_test.h"
#include "proc_test.h"
#include "sweep_test.h"

#ifndef _WIN32
static int sweep_fault_err(int err) {
  return err == EVL_ENOMEM;
}

static sc_net g_net;

/* One scenario swept both ways, its figures printed. */
static void sweep(const char *name, int (*work)(evl_loop *, void *), void *arg,
                  int full) {
  long allocs = 0, runs;
  double t0 = test_now();
  runs = alloc_sweep(work, arg, full,
                     SWEEP_ONE | SWEEP_FROM | SWEEP_RECOVER | SWEEP_CLOSE |
                         SWEEP_WARM_ONE | SWEEP_WARM_FROM,
                     &allocs);
  printf("  note: %s: %ld allocations, %ld runs (stride %ld), %.1f s\n", name,
         allocs, runs, sweep_stride(), test_now() - t0);
}

/* ---- regression tests (issue 11, bug 7) -------------------------------- */

/* evl_open_connection with each of its allocations failing (and every one
   from each on): it used its future after releasing it when
   evl_create_connection returned NULL, and freed the stream while the
   connect went on when the done callback could not be added. The server
   is a plain socket, so that only the call under test allocates. */
static int g_listen_port;
static int open_only(evl_loop *loop, void *arg) {
  evl_future *f =
      evl_open_connection(loop, "127.0.0.1", g_listen_port, 0, NULL);
  int ok;
  (void)arg;
  if (f)
    evl_future_ref(f);
  ok = sweep_wait(loop, f, "open_connection", 0);
  if (ok)
    evl_stream_free((evl_stream *)evl_future_result(f));
  evl_future_release(f);
  return ok;
}
TEST(open_connection_survives_each_failing_allocation) {
  int l = loopback_listener(1024, &g_listen_port, NULL);
  long runs, allocs = 0;
  runs = alloc_sweep(open_only, NULL, 1, SWEEP_ONE | SWEEP_FROM | SWEEP_RECOVER,
                     &allocs);
  printf("  note: %ld allocations, %ld runs\n", allocs, runs);
  close(l);
}

#endif

/* A future completed while the ready ring is full and cannot grow: its
   done callbacks (here a task's wake-up) must still run once memory is
   back; set_result said 0, so the wake-up may not be lost. */
typedef struct waiter {
  evl_future *f;
  int resumed;
} waiter;
static void await_it(evl_task *t, void *state) {
  waiter *w = *(waiter **)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_future_ref(w->f));
  w->resumed = 1;
  EVL_ASYNC_END(t);
}
TEST(completion_with_a_full_ready_ring_still_wakes) {
  evl_loop *loop;
  waiter w = {NULL, 0}, *wp = &w;
  evl_task *t;
  int hits = 0, n = 0, i;
  double end;
  loop = alloc_loop();
  w.f = evl_future_new(loop);
  t = evl_task_create(loop, await_it, &wp, sizeof wp);
  CHECK(w.f && t);
  CHECK(evl_run_once(loop, 0) >= 1); /* the task awaits w.f */
  CHECK_EQ(w.resumed, 0);
  /* Fill the ring to its capacity: the next push must grow it. */
  while (loop->ring_len < loop->ring_cap) {
    CHECK(evl_call_soon(loop, test_count_cb, &hits) > 0);
    n++;
  }
  memory_runs_out();
  CHECK_EQ(evl_future_set_result(w.f, NULL), 0);
  for (i = 0; i < 3; i++)
    (void)evl_run_once(loop, 0);
  memory_is_back();
  end = test_now() + 2.0;
  while (!w.resumed && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  CHECK_EQ(hits, n);
  CHECK_EQ(w.resumed, 1);
  CHECK(evl_future_done(t) && evl_future_error(t) == 0);
  evl_future_release(t);
  evl_future_release(w.f);
  test_close(loop);
  CHECK_EQ(g_fail.live, 0);
}

/* A call_soon_threadsafe callback that the drain cannot schedule (no slot
   left, no memory for more) runs all the same: the call said 0.
   It used to be dropped (only the exception handler heard of it). */
TEST(threadsafe_callback_survives_no_memory_for_its_slot) {
  evl_loop *loop;
  int hits = 0, ts = 0, n = 0, i;
  loop = alloc_loop();
  CHECK(evl_call_soon(loop, test_count_cb, &hits) > 0); /* the ring exists */
  CHECK_EQ(evl_run_once(loop, 0), 1);
  hits = 0;
  /* Every slot taken (the next callback needs the slot array to grow),
     the ring still with room (so that the backend's poll goes on and the
     drain runs): the drain is what cannot schedule. */
  while (loop->free_head != EVL__NONE || loop->nslots < loop->capslots) {
    CHECK(evl_call_soon(loop, test_count_cb, &hits) > 0);
    n++;
  }
  CHECK(loop->ring_len + 8 < loop->ring_cap);
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ts), 0);
  memory_runs_out();
  for (i = 0; i < 3; i++)
    (void)evl_run_once(loop, 0);
  memory_is_back();
  for (i = 0; i < 3; i++)
    (void)evl_run_once(loop, 0);
  CHECK_EQ(hits, n);
  CHECK_EQ(ts, 1);
  test_close(loop);
  CHECK_EQ(g_fail.live, 0);
}

/* Closing a loop with no memory left still lets go of every pending
   future: it used to need an array of them, and with none closed only
   the first (the rest leaked). */
static void sleeper_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 30.0, NULL));
  EVL_ASYNC_END(t);
}
TEST(close_with_no_memory_lets_go_of_every_future) {
  evl_loop *loop = alloc_loop();
  int i;
  for (i = 0; i < 4; i++) {
    evl_task *t = evl_task_create(loop, sleeper_task, NULL, 0);
    evl_future *w = evl_wait_for(evl_sleep(loop, 30.0, NULL), 20.0);
    CHECK(t != NULL && w != NULL);
    evl_future_release(t); /* the loop holds them while they run */
    evl_future_release(w);
  }
  (void)evl_run_once(loop, 0); /* the tasks await their sleeps */
  memory_runs_out();
  test_close(loop);
  memory_is_back();
  CHECK_EQ(g_fail.live, 0);
}

/* More timers than the ready ring holds, the loop closed with no memory:
   the timers' references to their futures still go (they were dropped
   when the ring could not take them all). */
TEST(close_with_no_memory_lets_go_of_every_timer) {
  evl_loop *loop = alloc_loop();
  int i;
  for (i = 0; i < 600; i++) {
    evl_future *f = evl_sleep(loop, 30.0, NULL);
    CHECK(f != NULL);
    evl_future_release(f); /* its timer holds it */
  }
  (void)evl_run_once(loop, 0);
  CHECK(loop->ring_cap < 600);
  memory_runs_out();
  test_close(loop);
  memory_is_back();
  CHECK_EQ(g_fail.live, 0);
}

#ifndef EVLOOP_NO_SYNC
/* A condition wait gets its lock back even when memory runs out after it
   gave the lock up: notified, or cancelled, it needs no allocation then
   (asyncio always retakes the lock). It failed with EVL_ENOMEM without the
   lock before (found by allocfail_compose). */
typedef struct cond_waiter {
  evl_condition *cond;
  int err, locked, done;
} cond_waiter;
static void cond_wait_task(evl_task *t, void *state) {
  cond_waiter *c = *(cond_waiter **)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_lock_acquire(evl_condition_lock(c->cond)));
  EVL_AWAIT_TRY(t, evl_condition_wait(c->cond));
  c->err = evl_await_error(t);
  c->locked = evl_lock_locked(evl_condition_lock(c->cond));
  c->done = 1;
  if (c->locked)
    (void)evl_lock_release(evl_condition_lock(c->cond));
  EVL_ASYNC_END(t);
}
/* Starts cond_wait_task and runs until it waits, the lock given up. */
static evl_task *cond_waiting(evl_loop *loop, cond_waiter *c,
                              cond_waiter **cp) {
  evl_task *t;
  int i;
  c->cond = evl_condition_new(loop, NULL);
  t = evl_task_create(loop, cond_wait_task, cp, sizeof *cp);
  CHECK(c->cond && t);
  for (i = 0; i < 3; i++)
    (void)evl_run_once(loop, 0);
  CHECK_EQ(evl_lock_locked(evl_condition_lock(c->cond)), 0); /* it waits */
  return t;
}
static void cond_finish(evl_loop *loop, cond_waiter *c, evl_task *t, int err) {
  int i;
  for (i = 0; i < 10 && !c->done; i++)
    (void)evl_run_once(loop, 0.01);
  memory_is_back();
  CHECK_EQ(c->done, 1);
  CHECK_EQ(c->err, err);
  CHECK_EQ(c->locked, 1);
  CHECK_EQ(evl_lock_locked(evl_condition_lock(c->cond)), 0);
  CHECK(evl_future_done(t));
  evl_future_release(t);
  evl_condition_free(c->cond);
  test_close(loop);
  CHECK_EQ(g_fail.live, 0);
}
TEST(condition_wait_notified_without_memory_retakes_the_lock) {
  evl_loop *loop = alloc_loop();
  cond_waiter c = {NULL, 0, 0, 0}, *cp = &c;
  evl_task *t = cond_waiting(loop, &c, &cp);
  evl_future *f = evl_lock_acquire(evl_condition_lock(c.cond));
  CHECK(f && evl_future_error(f) == 0); /* taken: the lock is ours */
  evl_future_release(f);
  memory_runs_out();
  CHECK_EQ(evl_condition_notify(c.cond, 1), 1);
  CHECK_EQ(evl_lock_release(evl_condition_lock(c.cond)), 0);
  cond_finish(loop, &c, t, 0);
}
TEST(condition_wait_cancelled_without_memory_retakes_the_lock) {
  evl_loop *loop = alloc_loop();
  cond_waiter c = {NULL, 0, 0, 0}, *cp = &c;
  evl_task *t = cond_waiting(loop, &c, &cp);
  memory_runs_out();
  CHECK_EQ(evl_future_cancel(t), 1);
  cond_finish(loop, &c, t, EVL_ECANCELED);
}
/* With no memory, the wait is not made and the lock stays held. */
TEST(condition_wait_without_memory_keeps_the_lock) {
  evl_loop *loop = alloc_loop();
  evl_condition *cond = evl_condition_new(loop, NULL);
  evl_future *f = evl_lock_acquire(evl_condition_lock(cond));
  CHECK(f && evl_future_error(f) == 0);
  evl_future_release(f);
  memory_runs_out();
  CHECK(evl_condition_wait(cond) == NULL);
  memory_is_back();
  CHECK_EQ(evl_lock_locked(evl_condition_lock(cond)), 1);
  CHECK_EQ(evl_lock_release(evl_condition_lock(cond)), 0);
  evl_condition_free(cond);
  test_close(loop);
  CHECK_EQ(g_fail.live, 0);
}
#endif

#ifndef _WIN32
/* ---- the sweep ---------------------------------------------------------- */

/* Every scenario succeeds in full on a plain loop, twice over (what the
   sweep's recovery runs rely on), and gives back what it took. */
TEST(scenarios_succeed_with_no_fault) {
  evl_loop *loop = test_open();
  int round;
  for (round = 0; round < 2; round++) {
    CHECK_EQ(sc_core(loop, NULL), FULL_CORE);
    CHECK_EQ(sc_streams(loop, &g_net), FULL_STREAMS);
    CHECK_EQ(sc_proto(loop, &g_net), FULL_PROTO);
    CHECK_EQ(sc_udp(loop, &g_net), FULL_UDP);
    CHECK_EQ(sc_local(loop, &g_net), FULL_LOCAL);
#ifndef EVLOOP_NO_PROCESS
    CHECK_EQ(sc_subprocess(loop, NULL), FULL_SUBPROCESS);
    CHECK_EQ(sc_signals(loop, NULL), FULL_SIGNALS);
#endif
#if !defined(EVLOOP_NO_SYNC) && !defined(EVLOOP_NO_COMPOSE)
    CHECK_EQ(sc_compose(loop, &g_sc_cmp), FULL_COMPOSE);
#endif
  }
  test_close(loop);
  CHECK_EQ(g_fail.live, 0);
}

SWEEP_TESTS(allocfail, sweep)
#endif

TESTS_BEGIN
T_POSIX(open_connection_survives_each_failing_allocation, "POSIX sockets")
T(completion_with_a_full_ready_ring_still_wakes)
T(threadsafe_callback_survives_no_memory_for_its_slot)
T(close_with_no_memory_lets_go_of_every_future)
T(close_with_no_memory_lets_go_of_every_timer)
#ifndef EVLOOP_NO_SYNC
T(condition_wait_notified_without_memory_retakes_the_lock)
T(condition_wait_cancelled_without_memory_retakes_the_lock)
T(condition_wait_without_memory_keeps_the_lock)
#endif
T_POSIX(scenarios_succeed_with_no_fault, "the sweep scenarios are POSIX")
T_POSIX(allocfail_core, "the sweep scenarios are POSIX")
T_POSIX(allocfail_streams, "the sweep scenarios are POSIX")
T_POSIX(allocfail_protocols_sendfile, "the sweep scenarios are POSIX")
T_POSIX(allocfail_udp, "the sweep scenarios are POSIX")
T_POSIX(allocfail_local, "the sweep scenarios are POSIX")
T_POSIX(allocfail_subprocess, "the sweep scenarios are POSIX")
T_POSIX(allocfail_signals, "the sweep scenarios are POSIX")
T_POSIX(allocfail_compose, "the sweep scenarios are POSIX")
TESTS_END
