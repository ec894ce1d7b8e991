/* Task groups: the say_after example of the asyncio "Task Groups"
   documentation, in C. Two children sleep 0.3 s and 0.6 s before printing
   a word; the group's end waits for both (about 0.6 s in all). The group's
   wait sits in the finally section: if a child fails, or main_task is
   cancelled, the other children are cancelled and still waited for, as
   `async with asyncio.TaskGroup()` does.

   The Python it mirrors (the documentation's, delays of 0.3 s and 0.6 s
   instead of 1 s and 2 s), and the line count tests/ergonomics_check.sh
   makes of both:
   [python]
     import asyncio, time

     async def say_after(delay, what):
         await asyncio.sleep(delay)
         print(what)

     async def main():
         async with asyncio.TaskGroup() as tg:
             task1 = tg.create_task(
                 say_after(0.3, 'hello'))

             task2 = tg.create_task(
                 say_after(0.6, 'world'))

             print(f"started at {time.strftime('%X')}")

         # The await is implicit when the context manager exits.

         print(f"finished at {time.strftime('%X')}")

     asyncio.run(main())
   [end]

   Build: cc -std=c99 task_group.c -o task_group -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <time.h>

static void print_time(const char *label) {
  char buf[32];
  time_t now = time(NULL);
  strftime(buf, sizeof buf, "%H:%M:%S", localtime(&now));
  printf("%s at %s\n", label, buf);
}

typedef struct {
  double delay;
  const char *what;
} say_after_state;

EVL_TASK(say_after, t, say_after_state, s)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delay, NULL));
  printf("%s\n", s->what);
EVL_TASK_END(t)

static const say_after_state hello = {0.3, "hello"}, world = {0.6, "world"};

EVL_TASK(main_task, t, evl_task_group *, tg)
  *tg = evl_task_group_new(evl_task_loop(t), t);
  evl_future_release(
      evl_task_group_create(*tg, say_after, &hello, sizeof hello));
  evl_future_release(
      evl_task_group_create(*tg, say_after, &world, sizeof world));
  print_time("started");
  EVL_FINALLY(t); /* the end of the `async with` block */
  EVL_AWAIT_TRY(t, evl_task_group_wait(*tg));
  evl_task_group_free(*tg);
  if (evl_await_error(t))
    EVL_ASYNC_FAIL(t, evl_await_error(t), "a child failed");
  print_time("finished");
EVL_TASK_END(t)

int main(void) {
  evl_task_group *tg = NULL;
  return evl_run(main_task, &tg, sizeof tg, NULL, NULL) == 0 ? 0 : 1;
}
