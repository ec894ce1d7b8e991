/* Three workers over a queue of random sleeps: the example of the asyncio
   "Queues" documentation, in C. main_task puts 20 random durations in an
   evl_queue, starts three worker tasks, waits with evl_queue_join until
   every item is marked done, cancels the workers and waits for them. The
   sleeps here are 0.01-0.2 s (the documentation's 0.05-1.0 s, scaled down
   so that `make demo` stays quick).

   Items are void *: the durations live in main's state and the queue
   holds pointers to them. A worker is named by its number.

   The count (tests/ergonomics_check.sh, run by make test): the Python's
   non-blank lines less comments and imports, against this file's
   non-blank lines less comments and preprocessor lines, its state structs
   counted apart; the C may not take more than the Python plus the state.

   The Python it mirrors (the documentation's, sleeps scaled down):
   [python]
     import asyncio, random, time

     async def worker(name, queue):
         while True:
             sleep_for = await queue.get()
             await asyncio.sleep(sleep_for)
             queue.task_done()
             print(f'{name} has slept for {sleep_for:.2f} seconds')

     async def main():
         queue = asyncio.Queue()
         total_sleep_time = 0
         for _ in range(20):
             sleep_for = random.uniform(0.01, 0.2)
             total_sleep_time += sleep_for
             queue.put_nowait(sleep_for)
         tasks = []
         for i in range(3):
             task = asyncio.create_task(worker(f'worker-{i}', queue))
             tasks.append(task)
         started_at = time.monotonic()
         await queue.join()
         total_slept_for = time.monotonic() - started_at
         for task in tasks:
             task.cancel()
         await asyncio.gather(*tasks, return_exceptions=True)
         print('====')
         print(f'3 workers slept in parallel for {total_slept_for:.2f} seconds')
         print(f'total expected sleep time: {total_sleep_time:.2f} seconds')

     asyncio.run(main())
   [end]

   Build: cc -std=c99 queue_workers.c -o queue_workers -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  int id;
  evl_queue *queue;
  double *sleep_for;
} worker_state;

EVL_TASK(worker, t, worker_state, w)
  for (;;) {
    EVL_AWAIT_AS(t, double *, w->sleep_for, evl_queue_get(w->queue));
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), *w->sleep_for, NULL));
    evl_queue_task_done(w->queue);
    printf("worker-%d has slept for %.2f seconds\n", w->id, *w->sleep_for);
  }
EVL_TASK_END(t)

typedef struct {
  evl_queue *queue;
  double timings[20], total_sleep_time, started_at, total_slept_for;
  evl_task *tasks[3];
  int i;
} main_state;

EVL_TASK(main_task, t, main_state, m)
  m->queue = evl_queue_new_in(t, EVL_QUEUE_FIFO, 0, NULL); /* freed at end */
  for (m->i = 0; m->i < 20; m->i++) {
    m->timings[m->i] = 0.01 + 0.19 * (double)rand() / RAND_MAX;
    m->total_sleep_time += m->timings[m->i];
    evl_queue_put_nowait(m->queue, &m->timings[m->i]);
  }
  for (m->i = 0; m->i < 3; m->i++) {
    worker_state w = {m->i, m->queue, NULL};
    m->tasks[m->i] = evl_task_create(evl_task_loop(t), worker, &w, sizeof w);
  }
  m->started_at = evl_time(evl_task_loop(t));
  EVL_AWAIT(t, evl_queue_join(m->queue));
  m->total_slept_for = evl_time(evl_task_loop(t)) - m->started_at;
  for (m->i = 0; m->i < 3; m->i++)
    evl_task_cancel(m->tasks[m->i]);
  EVL_AWAIT(
      t, evl_gather(evl_task_loop(t), m->tasks, 3, EVL_GATHER_RETURN_ERRORS));
  printf("====\n");
  printf("3 workers slept in parallel for %.2f seconds\n", m->total_slept_for);
  printf("total expected sleep time: %.2f seconds\n", m->total_sleep_time);
  EVL_FINALLY(t); /* however main_task ends: let go of the workers */
  for (m->i = 0; m->i < 3; m->i++)
    evl_future_release(m->tasks[m->i]);
EVL_TASK_END(t)

int main(void) {
  srand((unsigned)time(NULL));
  return evl_run(main_task, NULL, sizeof(main_state), NULL, NULL) == 0 ? 0 : 1;
}
