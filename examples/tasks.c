/* Tasks, async/await style: the say_after() example of the asyncio
   coroutines and tasks documentation, run concurrently with gather(), in C.
   main_task starts two tasks that sleep 0.3 s and 0.6 s before printing a
   word, awaits both with evl_gather(), and finishes after about 0.6 s, not
   0.9 s, because the tasks sleep at the same time. evl_run() plays
   asyncio.run(): it makes a loop, runs main_task to the end, and closes it.

   A task function is re-entered at its last await, so a C local does not
   survive an EVL_AWAIT: whatever is needed after one lives in the task's
   state struct.

   Build: cc -std=c99 tasks.c -o tasks -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <time.h>

/* Prints a label and the wall-clock time, as time.strftime('%X') would. */
static void print_time(const char *label) {
  char buf[32];
  time_t now = time(NULL);
  strftime(buf, sizeof buf, "%H:%M:%S", localtime(&now));
  printf("%s at %s\n", label, buf);
}

/* The arguments of say_after(delay, what), kept in the task's state. */
typedef struct {
  double delay;
  const char *what;
} say_after_state;

static void say_after(evl_task *t, void *state) {
  say_after_state *s = (say_after_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delay, NULL));
  printf("%s\n", s->what);
  EVL_ASYNC_END(t);
}

typedef struct {
  double started; /* evl_time() at the start: read again after the await */
} main_state;

static void main_task(evl_task *t, void *state) {
  main_state *m = (main_state *)state;
  evl_loop *loop = evl_task_loop(t);
  /* Locals that are only used before the await. */
  say_after_state hello = {0.3, "hello"}, world = {0.6, "world"};
  evl_task *tasks[2];
  evl_future *all;

  EVL_ASYNC_BEGIN(t);
  /* Each task keeps its own copy of its state (sizeof hello bytes). */
  tasks[0] = evl_task_create(loop, say_after, &hello, sizeof hello);
  tasks[1] = evl_task_create(loop, say_after, &world, sizeof world);
  all = tasks[0] && tasks[1] ? evl_gather(loop, tasks, 2, 0) : NULL;
  /* evl_gather holds references of its own, and a running task keeps itself
     alive: ours can go now. */
  if (tasks[0])
    evl_future_release(tasks[0]);
  if (tasks[1])
    evl_future_release(tasks[1]);
  if (!all)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "cannot start the tasks");

  m->started = evl_time(loop);
  print_time("started");
  /* Consumes the reference to `all`; if a task fails, main_task fails with
     the same error. */
  EVL_AWAIT(t, all);
  print_time("finished");
  printf("(%.1f s: the tasks slept concurrently)\n",
         evl_time(loop) - m->started);
  EVL_ASYNC_END(t);
}

int main(void) {
  main_state m = {0};
  int err = evl_run(main_task, &m, sizeof m, NULL, NULL);
  if (err < 0) {
    fprintf(stderr, "tasks: %s\n", evl_strerror(err));
    return 1;
  }
  return 0;
}
