// The header must compile as C++, implementation included, and so must a
// task written with its macros (awaits, EVL_AWAIT_AS, a finally section).
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

struct cpp_state {
  evl_lock *lock;
  int *value;
  int held;
};

static int cpp_value = 3;

static void cpp_task(evl_task *t, void *state) {
  cpp_state *s = static_cast<cpp_state *>(state);
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_lock_acquire(s->lock));
  s->held = 1;
  EVL_AWAIT_AS(t, int *, s->value, evl_sleep(evl_task_loop(t), 0, &cpp_value));
  EVL_FINALLY(t);
  if (s->held)
    evl_lock_release(s->lock);
  EVL_ASYNC_END(t);
}

// The one-line task header and its end (EVL_TASK, EVL_TASK_END).
EVL_TASK(cpp_short_task, t, cpp_state, s)
  EVL_AWAIT_AS(t, int *, s->value, evl_sleep(evl_task_loop(t), 0, &cpp_value));
  EVL_ASYNC_RETURN(t, s->value);
EVL_TASK_END(t)

// What a task's end carries (EVL_AWAIT_SET, a hold, a spawned child, a
// deferred call, an owned semaphore, EVL_TASK_GROUP_END).
struct cpp_group_state {
  evl_task_group *tg;
  evl_semaphore *sem;
  int *value, ran;
};
static void cpp_count(void *arg) {
  ++*static_cast<int *>(arg);
}
EVL_TASK(cpp_child, t, cpp_group_state, s)
  EVL_AWAIT(t, evl_semaphore_hold(s->sem, t));
  EVL_AWAIT_SET(t, s->value, evl_sleep(evl_task_loop(t), 0, &cpp_value));
EVL_TASK_END(t)
EVL_TASK(cpp_group_task, t, cpp_group_state, s)
  s->sem = evl_semaphore_new_in(t, 1, 0);
  evl_task_defer(t, cpp_count, &s->ran);
  s->tg = evl_task_group_new(evl_task_loop(t), t);
  evl_task_group_spawn(s->tg, cpp_child, s, sizeof *s);
  EVL_TASK_GROUP_END(t, s->tg);
  EVL_ASYNC_RETURN(t, &cpp_value);
EVL_TASK_END(t)

int evl_cpp_check(void);
int evl_cpp_check(void) {
  evl_loop *loop = 0;
  cpp_state s = {0, 0, 0};
  evl_task *t;
  int rc;
  if (evl_loop_new(&loop, 0) != 0)
    return 1;
  s.lock = evl_lock_new(loop);
  t = evl_task_create(loop, cpp_task, &s, 0);
  rc = evl_run_until_complete(loop, t) != 0 || s.value != &cpp_value;
  evl_future_release(t);
  s.value = 0;
  t = evl_task_create(loop, cpp_short_task, &s, 0);
  rc |= evl_run_until_complete(loop, t) != 0 ||
        evl_future_result(t) != &cpp_value;
  evl_future_release(t);
  evl_lock_free(s.lock);
  evl_loop_free(loop);
  cpp_group_state g = {0, 0, 0, 0};
  void *res = 0;
  rc |= evl_run(cpp_group_task, &g, 0, 0, &res) != 0 || res != &cpp_value ||
        g.ran != 1;
  return rc;
}
