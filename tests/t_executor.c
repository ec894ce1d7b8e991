/* The executor: evl_run_in_executor on the default and on custom executors,
   cancellation of queued jobs, undeliverable results, shutdown, close.
   Runs under ThreadSanitizer. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#ifndef EVLOOP_NO_EXECUTOR

#include "gate_test.h"
#include <string.h>

static pthread_t g_main;

/* ---- jobs (the gate's are in gate_test.h) ------------------------------- */

static int failing_job(void *arg, void **result) {
  (void)arg;
  *result = NULL;
  return EVL_EIO;
}

static int record_thread_job(void *arg, void **result) {
  *(pthread_t *)arg = pthread_self();
  *result = arg;
  return 0;
}

/* Two of these can only both succeed if they run at the same time. */
static int rendezvous_job(void *arg, void **result) {
  struct timespec ts;
  int ok;
  ts.tv_sec = time(NULL) + 5;
  ts.tv_nsec = 0;
  pthread_mutex_lock(&g_gate.mu);
  g_gate.arrived++;
  pthread_cond_broadcast(&g_gate.cv);
  while (g_gate.arrived < 2 && time(NULL) < ts.tv_sec)
    pthread_cond_timedwait(&g_gate.cv, &g_gate.mu, &ts);
  ok = g_gate.arrived >= 2;
  pthread_mutex_unlock(&g_gate.mu);
  *result = arg;
  return ok ? 0 : EVL_ETIMEDOUT;
}

/* ---- 10,000 jobs --------------------------------------------------------- */

#define NJOBS 10000

typedef struct slot {
  int in;
  int on_main;   /* written by the job */
  int completed; /* written by the done callback */
  int wrong;     /* wrong result or wrong thread in the done callback */
} slot;

static int g_done_calls;

static int double_job(void *arg, void **result) {
  slot *s = (slot *)arg;
  s->on_main = pthread_equal(pthread_self(), g_main) ? 1 : 0;
  *result = (void *)(intptr_t)(s->in * 2);
  return 0;
}

static void slot_done(evl_future *fut, void *arg) {
  slot *s = (slot *)arg;
  g_done_calls++;
  s->completed++;
  if (!pthread_equal(pthread_self(), g_main))
    s->wrong |= 1;
  if (evl_future_error(fut) != 0 ||
      evl_future_result(fut) != (void *)(intptr_t)(s->in * 2))
    s->wrong |= 2;
}

TEST(many_jobs_default_executor) {
  evl_loop *loop = test_open();
  slot *slots = (slot *)calloc(NJOBS, sizeof *slots);
  evl_future **futs = (evl_future **)calloc(NJOBS, sizeof *futs);
  evl_future *g;
  int i, on_main = 0, wrong = 0, bad_count = 0;
  CHECK(slots != NULL && futs != NULL);
  g_main = pthread_self();
  g_done_calls = 0;
  for (i = 0; i < NJOBS; i++) {
    slots[i].in = i + 1;
    futs[i] = evl_run_in_executor(loop, NULL, double_job, &slots[i], NULL);
    CHECK(futs[i] != NULL);
    CHECK_EQ(evl_future_add_done_callback(futs[i], slot_done, &slots[i]), 0);
  }
  g = evl_gather(loop, futs, NJOBS, 0);
  CHECK(g != NULL);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  for (i = 0; i < 100 && g_done_calls < NJOBS; i++)
    evl_run_once(loop, 0.01);
  CHECK_EQ(g_done_calls, NJOBS);
  for (i = 0; i < NJOBS; i++) {
    on_main += slots[i].on_main;
    wrong += slots[i].wrong != 0;
    bad_count += slots[i].completed != 1;
    CHECK(evl_future_result(futs[i]) == (void *)(intptr_t)((i + 1) * 2));
  }
  CHECK_EQ(on_main, 0);
  CHECK_EQ(wrong, 0);
  CHECK_EQ(bad_count, 0);
  evl_future_release(g);
  for (i = 0; i < NJOBS; i++)
    evl_future_release(futs[i]);
  test_close(loop);
  free(futs);
  free(slots);
}

TEST(job_error_fails_future) {
  evl_loop *loop = test_open();
  evl_future *f = evl_run_in_executor(loop, NULL, failing_job, NULL, NULL);
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), EVL_EIO);
  CHECK_EQ(evl_future_error(f), EVL_EIO);
  CHECK_EQ(evl_future_cancelled(f), 0);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
  test_close(loop);
}

TEST(job_runs_on_other_thread) {
  pthread_t tid;
  evl_loop *loop = test_open();
  evl_future *f;
  g_main = pthread_self();
  tid = g_main;
  f = evl_run_in_executor(loop, NULL, record_thread_job, &tid, NULL);
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK(evl_future_result(f) == &tid);
  CHECK(!pthread_equal(tid, g_main));
  evl_future_release(f);
  test_close(loop);
}

TEST(custom_executor) {
  evl_executor *ex = evl_executor_new(2);
  evl_loop *loop = test_open();
  evl_future *futs[2];
  evl_future *g;
  int a = 1, b = 2;
  gate_reset();
  CHECK(ex != NULL);
  /* Both rendezvous jobs succeed only if the executor has two threads. */
  futs[0] = evl_run_in_executor(loop, ex, rendezvous_job, &a, NULL);
  futs[1] = evl_run_in_executor(loop, ex, rendezvous_job, &b, NULL);
  CHECK(futs[0] != NULL && futs[1] != NULL);
  g = evl_gather(loop, futs, 2, EVL_GATHER_RETURN_ERRORS);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  CHECK_EQ(evl_future_error(futs[0]), 0);
  CHECK_EQ(evl_future_error(futs[1]), 0);
  CHECK(evl_future_result(futs[0]) == &a);
  CHECK(evl_future_result(futs[1]) == &b);
  evl_future_release(g);
  evl_future_release(futs[0]);
  evl_future_release(futs[1]);
  test_close(loop);
  evl_executor_free(ex);
}

TEST(set_default_executor) {
  evl_executor *ex = evl_executor_new(1);
  evl_loop *loop = test_open();
  evl_loop *loop2;
  pthread_t t1, t2, t3;
  evl_future *f1, *f2, *f3;
  CHECK(ex != NULL);
  g_main = pthread_self();
  t1 = t2 = t3 = g_main;
  CHECK_EQ(evl_set_default_executor(loop, ex), 0);
  f1 = evl_run_in_executor(loop, NULL, record_thread_job, &t1, NULL);
  f2 = evl_run_in_executor(loop, ex, record_thread_job, &t2, NULL);
  CHECK(f1 != NULL && f2 != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f1), 0);
  CHECK_EQ(evl_run_until_complete(loop, f2), 0);
  /* ex has one thread: both jobs ran on it. */
  CHECK(!pthread_equal(t1, g_main));
  CHECK(pthread_equal(t1, t2));
  evl_future_release(f1);
  evl_future_release(f2);
  test_close(loop); /* does not free ex */
  loop2 = test_open();
  f3 = evl_run_in_executor(loop2, ex, record_thread_job, &t3, NULL);
  CHECK(f3 != NULL);
  CHECK_EQ(evl_run_until_complete(loop2, f3), 0);
  CHECK(pthread_equal(t3, t1));
  evl_future_release(f3);
  test_close(loop2);
  evl_executor_free(ex);
}

TEST(cancel_queued_job) {
  evl_executor *ex = evl_executor_new(1);
  evl_loop *loop = test_open();
  evl_future *f1, *f2, *f3;
  int x = 1;
  gate_reset();
  f1 = evl_run_in_executor(loop, ex, blocker_job, &x, NULL);
  CHECK(f1 != NULL);
  CHECK_EQ(gate_wait(&g_gate.started, 1), 1);
  f2 = evl_run_in_executor(loop, ex, marker_job, &x, NULL);
  CHECK(f2 != NULL);
  CHECK_EQ(evl_future_cancel(f2), 1);
  CHECK_EQ(evl_future_cancelled(f2), 1);
  gate_release();
  CHECK_EQ(evl_run_until_complete(loop, f1), 0);
  CHECK(evl_future_result(f1) == &x);
  /* One thread, FIFO: once f3 ran, f2 would have run before it. */
  f3 = evl_run_in_executor(loop, ex, marker_job, &x, NULL);
  CHECK_EQ(evl_run_until_complete(loop, f3), 0);
  CHECK_EQ(gate_get(&g_gate.markers), 1);
  CHECK_EQ(evl_future_error(f2), EVL_ECANCELED);
  evl_future_release(f1);
  evl_future_release(f2);
  evl_future_release(f3);
  test_close(loop);
  evl_executor_free(ex);
  CHECK_EQ(gate_get(&g_gate.markers), 1);
}

/* Runs the loop (at most ~5 s) until one result went to gate_free. */
static void run_until_freed(evl_loop *loop) {
  int i;
  for (i = 0; i < 500 && gate_get(&g_gate.freed) == 0; i++)
    evl_run_once(loop, 0.01);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
}

TEST(result_freed_when_cancelled_while_running) {
  evl_executor *ex = evl_executor_new(1);
  evl_loop *loop = test_open();
  evl_future *f = gate_run_and_queue(loop, ex, NULL, 0, NULL, NULL);
  CHECK_EQ(evl_future_cancel(f), 1); /* the job goes on */
  CHECK_EQ(evl_future_cancelled(f), 1);
  gate_release();
  CHECK_EQ(gate_wait(&g_gate.finished, 1), 1);
  run_until_freed(loop);
  CHECK_EQ(evl_future_cancelled(f), 1);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
  test_close(loop);
  evl_executor_free(ex);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
}

TEST(shutdown_default_executor) {
  evl_loop *loop = test_open();
  evl_future *futs[20];
  evl_future *sd, *g, *late;
  int i, x = 1;
  gate_reset();
  for (i = 0; i < 20; i++) {
    futs[i] = evl_run_in_executor(loop, NULL, marker_job, &x, NULL);
    CHECK(futs[i] != NULL);
  }
  sd = evl_shutdown_default_executor(loop);
  CHECK(sd != NULL);
  CHECK_EQ(evl_run_until_complete(loop, sd), 0);
  /* It waited for the jobs already queued. */
  CHECK_EQ(gate_get(&g_gate.markers), 20);
  g = evl_gather(loop, futs, 20, 0);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  late = evl_run_in_executor(loop, NULL, marker_job, &x, NULL);
  CHECK(late != NULL); /* a future that fails, not NULL */
  CHECK_EQ(evl_run_until_complete(loop, late), EVL_ECLOSED);
  CHECK_EQ(gate_get(&g_gate.markers), 20);
  evl_future_release(late);
  evl_future_release(g);
  evl_future_release(sd);
  for (i = 0; i < 20; i++)
    evl_future_release(futs[i]);
  test_close(loop);
}

TEST(shutdown_unused_default_executor) {
  evl_loop *loop = test_open();
  evl_future *sd, *late;
  int x = 1;
  gate_reset();
  sd = evl_shutdown_default_executor(loop);
  CHECK(sd != NULL);
  CHECK_EQ(evl_run_until_complete(loop, sd), 0);
  late = evl_run_in_executor(loop, NULL, marker_job, &x, NULL);
  CHECK(late != NULL);
  CHECK_EQ(evl_run_until_complete(loop, late), EVL_ECLOSED);
  CHECK_EQ(gate_get(&g_gate.markers), 0);
  evl_future_release(late);
  evl_future_release(sd);
  test_close(loop);
}

TEST(close_with_queued_and_running_jobs) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_future *running, *queued[3];
  int i, x = 1;
  memset(&cfg, 0, sizeof cfg);
  cfg.executor_threads = 1;
  loop = test_open_with(&cfg);
  running = gate_run_and_queue(loop, NULL, queued, 3, &x, NULL);
  /* close waits for the running job and cancels the queued ones */
  gate_close_while_released(loop);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  evl_future_release(running);
  for (i = 0; i < 3; i++)
    evl_future_release(queued[i]);
  test_close(loop);
  CHECK_EQ(gate_get(&g_gate.markers), 0);
  CHECK_EQ(gate_get(&g_gate.freed), 1); /* the undelivered result */
}

TEST(close_with_jobs_on_custom_executor) {
  /* The loop does not own ex: close must still cancel this loop's queued
     jobs and wait for its running one before it returns. */
  evl_executor *ex = evl_executor_new(1);
  evl_loop *loop = test_open();
  evl_future *running, *queued[2];
  int i, x = 1;
  running = gate_run_and_queue(loop, ex, queued, 2, &x, NULL);
  gate_close_while_released(loop);
  evl_future_release(running);
  for (i = 0; i < 2; i++)
    evl_future_release(queued[i]);
  test_close(loop);
  evl_executor_free(ex); /* would run jobs still queued */
  CHECK_EQ(gate_get(&g_gate.markers), 0);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
}

static int alloc_job(void *arg, void **result) {
  (void)arg;
  *result = malloc(32);
  return *result ? 0 : EVL_ENOMEM;
}

TEST(future_released_before_job_ends) {
  /* Fire and forget: the future owns the delivered result and frees it
     with result_free once the job's reference is gone too. */
  evl_loop *loop = test_open();
  evl_future *f;
  gate_reset();
  f = evl_run_in_executor(loop, NULL, alloc_job, NULL, gate_free);
  CHECK(f != NULL);
  evl_future_release(f);
  run_until_freed(loop);
  test_close(loop);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
}

TEST(delivered_result_freed_with_future) {
  evl_loop *loop = test_open();
  evl_future *f;
  gate_reset();
  f = evl_run_in_executor(loop, NULL, alloc_job, NULL, gate_free);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK(evl_future_result(f) != NULL);
  CHECK_EQ(gate_get(&g_gate.freed), 0); /* still ours to read */
  evl_future_release(f);
  evl_run_once(loop, 0);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
  test_close(loop);
  CHECK_EQ(gate_get(&g_gate.freed), 1);
}

TESTS_BEGIN
T(many_jobs_default_executor)
T(job_error_fails_future)
T(job_runs_on_other_thread)
T(custom_executor)
T(set_default_executor)
T(cancel_queued_job)
T(result_freed_when_cancelled_while_running)
T(shutdown_default_executor)
T(shutdown_unused_default_executor)
T(close_with_queued_and_running_jobs)
T(close_with_jobs_on_custom_executor)
T(future_released_before_job_ends)
T(delivered_result_freed_with_future)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_EXECUTOR: no executor")
#endif
