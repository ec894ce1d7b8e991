/* EVL_TASK / EVL_TASK_END: a task function declared in one line, its
   state cast for it, awaits resuming where they left off, finally and
   return as with EVL_ASYNC_BEGIN. */
#include "test.h"

typedef struct counter {
  int i, ran_finally;
} counter;

EVL_TASK(count_task, t, counter, c)
  for (c->i = 0; c->i < 3; c->i++)
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
  EVL_FINALLY(t);
  c->ran_finally++;
  EVL_ASYNC_RETURN(t, &c->i);
EVL_TASK_END(t)

EVL_TASK(stateless_task, t, void, unused)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
EVL_TASK_END(t)

TEST(task_macro_declares_a_resumable_task) {
  evl_loop *loop = test_loop();
  counter c = {0, 0};
  evl_task *t = evl_task_create(loop, count_task, &c, 0);
  evl_task *u = evl_task_create(loop, stateless_task, NULL, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(c.i, 3);
  CHECK_EQ(c.ran_finally, 1);
  CHECK(evl_future_result(t) == &c.i);
  CHECK_EQ(evl_run_until_complete(loop, u), 0);
  evl_future_release(t);
  evl_future_release(u);
  evl_loop_free(loop);
}

TESTS_BEGIN
T(task_macro_declares_a_resumable_task)
TESTS_END
