/* Tasks run from other threads (evl_run_task_threadsafe, asyncio's
   run_coroutine_threadsafe) and evl_to_thread. Threads: also under TSan. */
#include "test.h"

#include <pthread.h>
#include <string.h>

static int g_answer = 42;

typedef struct slow_state {
  double delay;
  int fail;
} slow_state;

static void slow_task(evl_task *t, void *state) {
  slow_state *s = (slow_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delay, NULL));
  if (s->fail)
    EVL_ASYNC_FAIL(t, EVL_ECONNRESET, "remote said no");
  EVL_ASYNC_RETURN(t, &g_answer);
  EVL_ASYNC_END(t);
}

static void stop_cb(evl_loop *loop, void *arg) {
  (void)arg;
  evl_stop(loop);
}

typedef struct client {
  evl_loop *loop;
  int mode; /* 0: result, 1: failure, 2: cancel */
  int early_wait, wait_rc, rc, cancel_rc;
  void *result;
  char msg[64];
} client;

static void *client_thread(void *arg) {
  client *c = (client *)arg;
  slow_state s;
  evl_threadsafe *h;
  const char *m;
  s.delay = c->mode == 2 ? 10.0 : 0.3; /* the 1 ms wait comes first */
  s.fail = c->mode == 1;
  h = evl_run_task_threadsafe(c->loop, slow_task, &s, sizeof s);
  if (h) {
    c->early_wait = evl_threadsafe_wait(h, 0.001);
    if (c->mode == 2)
      c->cancel_rc = evl_threadsafe_cancel(h);
    c->wait_rc = evl_threadsafe_wait(h, 5.0);
    c->rc = evl_threadsafe_result(h, &c->result);
    m = evl_threadsafe_error_message(h);
    if (m)
      snprintf(c->msg, sizeof c->msg, "%s", m);
    evl_threadsafe_free(h);
  } else {
    c->rc = -1;
  }
  evl_call_soon_threadsafe(c->loop, stop_cb, NULL);
  return NULL;
}

static void run_client(client *c, int mode) {
  pthread_t th;
  memset(c, 0, sizeof *c);
  c->loop = test_open();
  c->mode = mode;
  CHECK_EQ(pthread_create(&th, NULL, client_thread, c), 0);
  CHECK_EQ(evl_run_forever(c->loop), 0);
  pthread_join(th, NULL);
  evl_loop_free(c->loop);
  CHECK_EQ(c->early_wait, EVL_ETIMEDOUT);
  CHECK_EQ(c->wait_rc, 0);
}

TEST(threadsafe_task_result) {
  client c;
  run_client(&c, 0);
  CHECK_EQ(c.rc, 0);
  CHECK(c.result == &g_answer);
}

TEST(threadsafe_task_failure) {
  client c;
  run_client(&c, 1);
  CHECK_EQ(c.rc, EVL_ECONNRESET);
  CHECK(strcmp(c.msg, "remote said no") == 0);
}

TEST(threadsafe_task_cancel) {
  client c;
  run_client(&c, 2);
  CHECK_EQ(c.cancel_rc, 1);
  CHECK_EQ(c.rc, EVL_ECANCELED);
}

/* The loop goes away before running the task: the handle completes with
   EVL_ECLOSED, and a closed loop takes no more. */
TEST(threadsafe_task_loop_closed) {
  evl_loop *loop = test_open();
  slow_state s = {0.01, 0};
  evl_threadsafe *h = evl_run_task_threadsafe(loop, slow_task, &s, sizeof s);
  void *r;
  CHECK(h != NULL);
  CHECK_EQ(evl_threadsafe_result(h, &r), EVL_EINVALSTATE);
  evl_loop_close(loop);
  CHECK_EQ(evl_threadsafe_wait(h, 1.0), 0);
  CHECK_EQ(evl_threadsafe_result(h, &r), EVL_ECLOSED);
  CHECK_EQ(evl_threadsafe_cancel(h), 0);
  evl_threadsafe_free(h);
  CHECK(evl_run_task_threadsafe(loop, slow_task, &s, sizeof s) == NULL);
  CHECK(evl_run_task_threadsafe(NULL, slow_task, &s, sizeof s) == NULL);
  CHECK_EQ(evl_threadsafe_wait(NULL, 1.0), EVL_EINVAL);
  test_close(loop);
}

static int square(void *arg, void **result) {
  intptr_t v = (intptr_t)arg;
  *result = (void *)(v * v);
  return 0;
}

TEST(to_thread_runs_on_executor) {
  evl_loop *loop = test_open();
  evl_future *f = evl_to_thread(loop, square, (void *)(intptr_t)12, NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK_EQ((intptr_t)evl_future_result(f), 144);
  evl_future_release(f);
  test_close(loop);
}

TESTS_BEGIN
T(threadsafe_task_result)
T(threadsafe_task_failure)
T(threadsafe_task_cancel)
T(threadsafe_task_loop_closed)
T(to_thread_runs_on_executor)
TESTS_END
