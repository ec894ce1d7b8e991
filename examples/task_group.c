/* Task groups: the say_after example of the asyncio "Task Groups"
   documentation, in C. Two children sleep 0.3 s and 0.6 s before printing
   a word; the group's end waits for both (about 0.6 s in all). The
   group's end (EVL_TASK_GROUP_END) is the task's finally section: if a
   child fails, or main_task is cancelled, the other children are
   cancelled and still waited for, as `async with asyncio.TaskGroup()`
   does, and what follows it runs only when all went well.

   The count (tests/ergonomics_check.sh, run by make test): the Python's
   non-blank lines less comments and imports, against this file's
   non-blank lines less comments and preprocessor lines, its state structs
   counted apart; the C may not take more than the Python plus the state.

   The Python it mirrors (the documentation's, delays of 0.3 s and 0.6 s
   instead of 1 s and 2 s):
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

         print(f"finished at {time.strftime('%X')}")

     asyncio.run(main())
   [end]

   Build: cc -std=c99 task_group.c -o task_group -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <time.h>

typedef struct {
  double delay;
  const char *what;
} say_after_state;

EVL_TASK(say_after, t, say_after_state, s)
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), s->delay, NULL));
  printf("%s\n", s->what);
EVL_TASK_END(t)

static const say_after_state hello = {0.3, "hello"}, world = {0.6, "world"};

typedef struct {
  evl_task_group *tg;
  time_t now;
} main_state;

EVL_TASK(main_task, t, main_state, m)
  m->tg = evl_task_group_new(evl_task_loop(t), t);
  evl_task_group_spawn(m->tg, say_after, &hello, sizeof hello);
  evl_task_group_spawn(m->tg, say_after, &world, sizeof world);
  m->now = time(NULL); /* ctime's hh:mm:ss: time.strftime('%X') */
  printf("started at %.8s\n", ctime(&m->now) + 11);
  EVL_TASK_GROUP_END(t, m->tg);
  m->now = time(NULL);
  printf("finished at %.8s\n", ctime(&m->now) + 11);
EVL_TASK_END(t)

int main(void) {
  return evl_run(main_task, NULL, sizeof(main_state), NULL, NULL) == 0 ? 0 : 1;
}
