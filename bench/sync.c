/* sync.c - Lock and Queue round trips between two tasks per second, beside
   Python's asyncio (and uvloop when it is installed), in one run.

   lock:  two tasks, each N times: acquire the lock, sleep(0) holding it,
          release. Every acquire after the first waits for the other task,
          so each one is a hand-over between the two tasks. Rate: acquires
          per second.
   queue: ping puts a number in q1 and gets from q2; pong gets from q1 and
          puts it in q2. Rate: ping-pong round trips per second (each one
          two puts and two gets, awaited).
   The Python side runs the same two programs (python3 -c, written below),
   best of BENCH_REPS runs each, like the C side. */
#include "bench.h"

#define LOCK_N 200000
#define QUEUE_N 200000

static const char py_prog[] =
    "import asyncio, sys, time\n"
    "n, mode = int(sys.argv[1]), sys.argv[2]\n"
    "if sys.argv[3] == 'uvloop':\n"
    "    import uvloop; uvloop.install()\n"
    "async def lock_bench():\n"
    "    lock = asyncio.Lock()\n"
    "    async def user():\n"
    "        for _ in range(n):\n"
    "            async with lock:\n"
    "                await asyncio.sleep(0)\n"
    "    t0 = time.perf_counter()\n"
    "    await asyncio.gather(user(), user())\n"
    "    return 2 * n / (time.perf_counter() - t0)\n"
    "async def queue_bench():\n"
    "    q1, q2 = asyncio.Queue(), asyncio.Queue()\n"
    "    async def ping():\n"
    "        for i in range(n):\n"
    "            await q1.put(i)\n"
    "            await q2.get()\n"
    "    async def pong():\n"
    "        for _ in range(n):\n"
    "            await q2.put(await q1.get())\n"
    "    t0 = time.perf_counter()\n"
    "    await asyncio.gather(ping(), pong())\n"
    "    return n / (time.perf_counter() - t0)\n"
    "f = lock_bench if mode == 'lock' else queue_bench\n"
    "print('RESULT', asyncio.run(f()))\n";

/* Runs the Python program; 0 if Python (or uvloop) is missing. */
static double py_rate(const char *mode, const char *flavour, long n) {
  char cmd[256], line[256];
  double rate = 0;
  FILE *p;
  snprintf(cmd, sizeof cmd,
           "python3 /tmp/evl_bench_sync.py %ld %s %s 2>/dev/null", n, mode,
           flavour);
  p = popen(cmd, "r");
  if (!p)
    return 0;
  while (fgets(line, sizeof line, p))
    if (!strncmp(line, "RESULT ", 7))
      rate = atof(line + 7);
  pclose(p);
  return rate;
}

#if HAVE_EVL
/* The state of the two tasks of either benchmark; each task gets its own
   copy (i counts its own rounds), the lock and queues are shared. */
typedef struct duo {
  evl_lock *lock;     /* lock: both tasks take it */
  evl_queue *q1, *q2; /* queue: ping -> q1 -> pong -> q2 -> ping */
  long i, n;
} duo;

static void lock_user_task(evl_task *t, void *state) {
  duo *d = (duo *)state;
  EVL_ASYNC_BEGIN(t);
  for (d->i = 0; d->i < d->n; d->i++) {
    EVL_AWAIT(t, evl_lock_acquire(d->lock));
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0, NULL));
    evl_lock_release(d->lock);
  }
  EVL_ASYNC_END(t);
}

static void ping_task(evl_task *t, void *state) {
  duo *d = (duo *)state;
  EVL_ASYNC_BEGIN(t);
  for (d->i = 0; d->i < d->n; d->i++) {
    EVL_AWAIT(t, evl_queue_put(d->q1, (void *)(intptr_t)(d->i + 1)));
    EVL_AWAIT(t, evl_queue_get(d->q2));
  }
  EVL_ASYNC_END(t);
}
static void pong_task(evl_task *t, void *state) {
  duo *d = (duo *)state;
  EVL_ASYNC_BEGIN(t);
  for (d->i = 0; d->i < d->n; d->i++) {
    EVL_AWAIT(t, evl_queue_get(d->q1));
    EVL_AWAIT(t, evl_queue_put(d->q2, evl_await_result(t)));
  }
  EVL_ASYNC_END(t);
}

/* Runs the tasks a and b (each with its copy of d) to their end; returns
   the wall-clock seconds that took. what names the run if it fails. */
static double run_duo(evl_loop *loop, evl_task_fn a, evl_task_fn b,
                      const duo *d, const char *what) {
  evl_future *kids[2], *all;
  kids[0] = evl_task_create(loop, a, d, sizeof *d);
  kids[1] = evl_task_create(loop, b, d, sizeof *d);
  all = evl_gather(loop, kids, 2, 0);
  double t0 = bench_now();
  if (evl_run_until_complete(loop, all))
    bench_die(what);
  double dt = bench_now() - t0;
  evl_future_release(all);
  evl_future_release(kids[0]);
  evl_future_release(kids[1]);
  return dt;
}

static double evl_rate(int queue, long n) {
  evl_loop *loop;
  duo d = {NULL, NULL, NULL, 0, n};
  double dt;
  if (evl_loop_new(&loop, NULL))
    bench_die("evl_loop_new");
  if (!queue) {
    d.lock = evl_lock_new(loop);
    dt = run_duo(loop, lock_user_task, lock_user_task, &d, "lock run");
    evl_lock_free(d.lock);
  } else {
    d.q1 = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
    d.q2 = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
    dt = run_duo(loop, ping_task, pong_task, &d, "queue run");
    evl_queue_free(d.q1);
    evl_queue_free(d.q2);
  }
  evl_loop_free(loop);
  return (queue ? n : 2 * n) / dt;
}
#endif

int main(void) {
  int reps = bench_reps(), r, m, f;
  static const char *modes[2] = {"lock", "queue"};
  static const char *flavours[2] = {"asyncio", "uvloop"};
  double best[2][3];
  FILE *py = fopen("/tmp/evl_bench_sync.py", "w");
  if (!py || fputs(py_prog, py) < 0 || fclose(py))
    bench_die("writing the Python program");
  memset(best, 0, sizeof best);
  for (m = 0; m < 2; m++) {
    long n = m ? QUEUE_N : LOCK_N;
    for (r = 0; r < reps; r++) {
      double v;
#if HAVE_EVL
      v = evl_rate(m, n);
      if (v > best[m][0])
        best[m][0] = v;
#endif
      for (f = 0; f < 2; f++) {
        v = py_rate(modes[m], flavours[f], n / 10);
        if (v > best[m][f + 1])
          best[m][f + 1] = v;
      }
    }
  }
  printf("sync: round trips between two tasks per second (best of %d; "
         "bench/build/sync, BENCH_REPS=%d)\n",
         reps, reps);
  printf("%-8s %14s %14s %14s %10s\n", "", "evloop.h", "asyncio", "uvloop",
         "vs asyncio");
  for (m = 0; m < 2; m++) {
    char uv[32];
    if (best[m][2] > 0)
      snprintf(uv, sizeof uv, "%.0f", best[m][2]);
    else
      snprintf(uv, sizeof uv, "(not installed)");
    printf("%-8s %14.0f %14.0f %14s %9.1fx\n", modes[m], best[m][0], best[m][1],
           uv, best[m][1] > 0 ? best[m][0] / best[m][1] : 0.0);
  }
  remove("/tmp/evl_bench_sync.py");
  return 0;
}
