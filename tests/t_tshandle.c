/* The thread-safe task handle (evl_run_task_threadsafe) when the loop
   closes with its task not reported: the handle must still complete (the
   other thread may be waiting on it) and be freed once both sides let go.
   Regression tests for the leak where the handle's loop side was dropped:
   a finished task whose done callbacks were still queued at close, and a
   pending task that close dropped without running it to its end (out of
   memory there, or after close's 16 rounds). */
#define _GNU_SOURCE 1 /* before any system header, as evloop.h asks */
#include "alloc_test.h"

static int g_ran, g_answer = 7;

static void quick_task(evl_task *t, void *state) {
  (void)state;
  g_ran = 1;
  evl_task_return(t, &g_answer);
}

static void forever_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  g_ran = 1;
  EVL_AWAIT(t, evl_future_new(evl_task_loop(t))); /* never completed */
  EVL_ASYNC_END(t);
}

/* Starts fn as a thread-safe task and runs the loop until it ran; its
   handle is not done yet (a finished task is reported in the next
   iteration). */
static evl_threadsafe *start_threadsafe(evl_loop *loop, evl_task_fn fn) {
  evl_threadsafe *h = evl_run_task_threadsafe(loop, fn, NULL, 0);
  int i;
  CHECK(h != NULL);
  for (i = 0; i < 100 && !g_ran; i++)
    CHECK(evl_run_once(loop, 0.05) >= 0);
  CHECK(g_ran);
  CHECK_EQ(evl_threadsafe_done(h), 0);
  return h;
}

/* The task ends in one iteration; its done callbacks (the handle's among
   them) would run in the next, but the loop is closed first. */
TEST(tshandle_completes_when_close_drops_its_done_callbacks) {
  evl_loop *loop = test_loop();
  evl_threadsafe *h = start_threadsafe(loop, quick_task);
  void *r = NULL;
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_threadsafe_wait(h, 0.5), 0);
  CHECK_EQ(evl_threadsafe_result(h, &r), 0);
  CHECK(r == &g_answer);
  evl_threadsafe_free(h);
  evl_loop_free(loop);
}

/* Memory runs out as the loop closes: close cannot run the cancelled
   task to its end and drops it. The handle completes with the task's
   cancellation. */
TEST(tshandle_completes_when_close_drops_its_task_out_of_memory) {
  evl_loop *loop = alloc_loop();
  evl_threadsafe *h = start_threadsafe(loop, forever_task);
  void *r = NULL;
  memory_runs_out();
  CHECK_EQ(evl_loop_close(loop), 0);
  memory_is_back();
  CHECK_EQ(evl_threadsafe_wait(h, 0.5), 0);
  CHECK_EQ(evl_threadsafe_result(h, &r), EVL_ECANCELED);
  CHECK(r == NULL);
  evl_threadsafe_free(h);
  evl_loop_free(loop);
}

/* Close runs cancelled tasks to their end in at most 16 rounds: each
   task of this chain starts the next from its cleanup, and the 16th also
   starts the thread-safe task, which close then drops pending. */
static evl_threadsafe *g_chain_h;

static void chain_cleanup(evl_task *t, void *state) {
  int next = *(int *)state + 1;
  evl_task *n;
  if (next == 17)
    g_chain_h =
        evl_run_task_threadsafe(evl_task_loop(t), forever_task, NULL, 0);
  n = evl_task_create(evl_task_loop(t), forever_task, &next, sizeof next);
  if (n) /* NULL once close is past its rounds */
    (void)evl_task_set_cleanup(n, chain_cleanup);
  evl_future_release(n);
}

TEST(tshandle_completes_when_close_drops_its_task_after_16_rounds) {
  evl_loop *loop = test_loop();
  int first = 1;
  void *r = NULL;
  evl_task *t = evl_task_create(loop, forever_task, &first, sizeof first);
  CHECK(t != NULL);
  CHECK_EQ(evl_task_set_cleanup(t, chain_cleanup), 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK(g_chain_h != NULL);
  CHECK_EQ(evl_threadsafe_wait(g_chain_h, 0.5), 0);
  CHECK_EQ(evl_threadsafe_result(g_chain_h, &r), EVL_ECANCELED);
  evl_threadsafe_free(g_chain_h);
  evl_future_release(t);
  evl_loop_free(loop);
}

TESTS_BEGIN
T(tshandle_completes_when_close_drops_its_done_callbacks)
T(tshandle_completes_when_close_drops_its_task_out_of_memory)
T(tshandle_completes_when_close_drops_its_task_after_16_rounds)
TESTS_END
