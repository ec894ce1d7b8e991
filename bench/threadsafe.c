/* threadsafe.c - cross-thread round trips per second.

   Two loops, each run by its own thread: loop 1 by the main thread, loop 2
   by a second one. A round trip: a callback on loop 1 sends a message to
   loop 2, whose callback sends one back to loop 1. Exactly one message is
   in flight at any time, so no library can coalesce wake-ups; every
   message wakes a loop that is (or is about to be) asleep in epoll_wait.

   - evloop: evl_call_soon_threadsafe(other loop, cb, arg) each way.
   - libuv: one uv_async_t per direction (uv_async_init on the receiving
     loop), uv_async_send from the sending thread.
   - libev: one ev_async per direction, ev_async_send.
   - epoll: the floor, hand-written: each loop an epoll fd watching its own
     eventfd; a message is an 8-byte write to the other loop's eventfd, and
     the woken loop reads its eventfd back to zero (what any epoll loop must
     do at least to be woken from another thread).

   Each run is pinned to one core (both threads on it; unpinned when that
   fails): a round trip is then two thread switches plus what each library
   does around its wake-up, not the scheduler's cross-core wake-up latency,
   which varies far more than the libraries do.

   Time is wall-clock time from the first send (made by the main thread
   once the second thread is started) to the callback on loop 1 that
   receives the Nth reply; CPU is the process's user+system time (both
   threads) over the same span, the figure that stays put on a busy
   machine, where the wall clock also counts other processes' turns. */
#include "bench.h"
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

typedef struct rt {
  long n, count;
  double t0, t1, c0, c1; /* wall clock, and the process's CPU time */
  int done;              /* accessed with __atomic builtins */
#if HAVE_EVL
  evl_loop *el1, *el2;
#endif
#if HAVE_UV
  uv_loop_t ul1, ul2;
  uv_async_t ua1, ua2; /* ua1 wakes loop 1, ua2 wakes loop 2 */
#endif
#if HAVE_EV
  struct ev_loop *vl1, *vl2;
  ev_async va1, va2;
#endif
  int ep1, ep2, efd1, efd2; /* epoll: loop N's epoll fd and eventfd */
} rt;

/* ---- evloop.h ----------------------------------------------------------- */

#if HAVE_EVL
static void evl_pong(evl_loop *loop, void *arg);

static void evl_stop_cb(evl_loop *loop, void *arg) {
  (void)arg;
  evl_stop(loop);
}

static void evl_ping(evl_loop *loop, void *arg) { /* on loop 2 */
  rt *r = (rt *)arg;
  (void)loop;
  if (evl_call_soon_threadsafe(r->el1, evl_pong, r) != 0)
    bench_die("evl_call_soon_threadsafe");
}

static void evl_pong(evl_loop *loop, void *arg) { /* on loop 1 */
  rt *r = (rt *)arg;
  if (++r->count < r->n) {
    if (evl_call_soon_threadsafe(r->el2, evl_ping, r) != 0)
      bench_die("evl_call_soon_threadsafe");
    return;
  }
  r->t1 = bench_now(), r->c1 = bench_cpu();
  evl_stop(loop);
  if (evl_call_soon_threadsafe(r->el2, evl_stop_cb, NULL) != 0)
    bench_die("evl_call_soon_threadsafe");
}

static void *evl_thread(void *arg) {
  rt *r = (rt *)arg;
  if (evl_run_forever(r->el2) < 0)
    bench_die("evl_run_forever");
  return NULL;
}

static void run_evl(rt *r) {
  r->el1 = bench_evl_loop();
  r->el2 = bench_evl_loop();
  pthread_t th;
  if (pthread_create(&th, NULL, evl_thread, r) != 0)
    bench_die("pthread_create");
  r->t0 = bench_now(), r->c0 = bench_cpu();
  if (evl_call_soon_threadsafe(r->el2, evl_ping, r) != 0)
    bench_die("evl_call_soon_threadsafe");
  if (evl_run_forever(r->el1) < 0)
    bench_die("evl_run_forever");
  pthread_join(th, NULL);
  evl_loop_free(r->el1);
  evl_loop_free(r->el2);
}
#endif

/* ---- libuv -------------------------------------------------------------- */

#if HAVE_UV
static void uv_ping(uv_async_t *a) { /* on loop 2 */
  rt *r = (rt *)a->data;
  if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
    uv_close((uv_handle_t *)a, NULL);
  else if (uv_async_send(&r->ua1) != 0)
    bench_die("uv_async_send");
}

static void uv_pong(uv_async_t *a) { /* on loop 1 */
  rt *r = (rt *)a->data;
  if (++r->count < r->n) {
    if (uv_async_send(&r->ua2) != 0)
      bench_die("uv_async_send");
    return;
  }
  r->t1 = bench_now(), r->c1 = bench_cpu();
  uv_close((uv_handle_t *)a, NULL);
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
  if (uv_async_send(&r->ua2) != 0)
    bench_die("uv_async_send");
}

static void *uv_thread(void *arg) {
  rt *r = (rt *)arg;
  uv_run(&r->ul2, UV_RUN_DEFAULT);
  return NULL;
}

static void run_uv(rt *r) {
  if (uv_loop_init(&r->ul1) != 0 || uv_loop_init(&r->ul2) != 0 ||
      uv_async_init(&r->ul1, &r->ua1, uv_pong) != 0 ||
      uv_async_init(&r->ul2, &r->ua2, uv_ping) != 0)
    bench_die("uv init");
  r->ua1.data = r->ua2.data = r;
  pthread_t th;
  if (pthread_create(&th, NULL, uv_thread, r) != 0)
    bench_die("pthread_create");
  r->t0 = bench_now(), r->c0 = bench_cpu();
  if (uv_async_send(&r->ua2) != 0)
    bench_die("uv_async_send");
  uv_run(&r->ul1, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  if (uv_loop_close(&r->ul1) != 0 || uv_loop_close(&r->ul2) != 0)
    bench_die("uv_loop_close");
}
#endif

/* ---- libev -------------------------------------------------------------- */

#if HAVE_EV
static void ev_ping(struct ev_loop *loop, ev_async *w, int revents) {
  rt *r = (rt *)w->data;
  (void)revents;
  if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
    ev_async_stop(loop, w);
  else
    ev_async_send(r->vl1, &r->va1);
}

static void ev_pong(struct ev_loop *loop, ev_async *w, int revents) {
  rt *r = (rt *)w->data;
  (void)revents;
  if (++r->count < r->n) {
    ev_async_send(r->vl2, &r->va2);
    return;
  }
  r->t1 = bench_now(), r->c1 = bench_cpu();
  ev_async_stop(loop, w);
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
  ev_async_send(r->vl2, &r->va2);
}

static void *ev_thread(void *arg) {
  rt *r = (rt *)arg;
  ev_run(r->vl2, 0);
  return NULL;
}

static void run_ev(rt *r) {
  r->vl1 = ev_loop_new(EVFLAG_AUTO);
  r->vl2 = ev_loop_new(EVFLAG_AUTO);
  if (!r->vl1 || !r->vl2)
    bench_die("ev_loop_new");
  ev_async_init(&r->va1, ev_pong);
  ev_async_init(&r->va2, ev_ping);
  r->va1.data = r->va2.data = r;
  ev_async_start(r->vl1, &r->va1);
  ev_async_start(r->vl2, &r->va2);
  pthread_t th;
  if (pthread_create(&th, NULL, ev_thread, r) != 0)
    bench_die("pthread_create");
  r->t0 = bench_now(), r->c0 = bench_cpu();
  ev_async_send(r->vl2, &r->va2);
  ev_run(r->vl1, 0);
  pthread_join(th, NULL);
  ev_loop_destroy(r->vl1);
  ev_loop_destroy(r->vl2);
}
#endif

/* ---- epoll + eventfd (hand-written) -------------------------------------- */

static void ep_send(int efd) {
  uint64_t one = 1;
  if (write(efd, &one, sizeof one) != (ssize_t)sizeof one)
    bench_die("eventfd write");
}

/* Waits until efd (watched by ep) is readable and reads it back to zero. */
static void ep_wait(int ep, int efd) {
  struct epoll_event ev;
  uint64_t v;
  int n;
  while ((n = epoll_wait(ep, &ev, 1, -1)) < 0)
    if (errno != EINTR)
      bench_die("epoll_wait");
  if (read(efd, &v, sizeof v) != (ssize_t)sizeof v)
    bench_die("eventfd read");
}

static void *ep_thread(void *arg) { /* loop 2 */
  rt *r = (rt *)arg;
  for (;;) {
    ep_wait(r->ep2, r->efd2);
    if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
      return NULL;
    ep_send(r->efd1);
  }
}

static int ep_open(int *ep, int *efd) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  *ep = epoll_create1(EPOLL_CLOEXEC);
  *efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return *ep < 0 || *efd < 0 || epoll_ctl(*ep, EPOLL_CTL_ADD, *efd, &ev) != 0;
}

static void run_ep(rt *r) {
  if (ep_open(&r->ep1, &r->efd1) || ep_open(&r->ep2, &r->efd2))
    bench_die("epoll/eventfd");
  pthread_t th;
  if (pthread_create(&th, NULL, ep_thread, r) != 0)
    bench_die("pthread_create");
  r->t0 = bench_now(), r->c0 = bench_cpu();
  ep_send(r->efd2);
  for (;;) { /* loop 1 */
    ep_wait(r->ep1, r->efd1);
    if (++r->count < r->n) {
      ep_send(r->efd2);
      continue;
    }
    r->t1 = bench_now(), r->c1 = bench_cpu();
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    ep_send(r->efd2);
    break;
  }
  pthread_join(th, NULL);
  close(r->ep1), close(r->ep2), close(r->efd1), close(r->efd2);
}

/* ---- Driver ------------------------------------------------------------- */

enum { NLIBS = 4 };
static const char *const lib_names[NLIBS] = {"evloop", "libuv", "libev",
                                             "epoll"};
static const int lib_built[NLIBS] = {HAVE_EVL, HAVE_UV, HAVE_EV, 1};

/* The lowest of v[0..n). */
static double lowest_of(const double *v, int n) {
  double b = v[0];
  for (int i = 1; i < n; i++)
    if (v[i] < b)
      b = v[i];
  return b;
}

/* The first core this process may use, or -1. */
static int first_cpu(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return -1;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set))
      return c;
  return -1;
}

/* Pins this process (and the threads it starts) to cpu; 0 or -1. */
static int pin_to(int cpu) {
  cpu_set_t set;
  if (cpu < 0)
    return -1;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set);
}

static int child(int argc, char **argv) {
  if (bench_usage(argc != 4, argv[0], "--run evloop|libuv|libev|epoll N"))
    return 2;
  const char *lib = argv[2];
  static rt r; /* zeroed */
  r.n = atol(argv[3]);
  if (r.n < 1)
    bench_die("arguments");
  int ran = 0;
  (void)pin_to(first_cpu());
  if (strcmp(lib, "epoll") == 0)
    run_ep(&r), ran = 1;
#if HAVE_EVL
  if (strcmp(lib, "evloop") == 0)
    run_evl(&r), ran = 1;
#endif
#if HAVE_UV
  if (strcmp(lib, "libuv") == 0)
    run_uv(&r), ran = 1;
#endif
#if HAVE_EV
  if (strcmp(lib, "libev") == 0)
    run_ev(&r), ran = 1;
#endif
  if (!ran) {
    fprintf(stderr, "%s: not built in\n", lib);
    return 2;
  }
  if (r.count != r.n)
    bench_die("round trip count");
  double t = r.t1 - r.t0, c = r.c1 - r.c0;
  printf("%s: %ld round trips in %.3f s = %.0f round trips/s (%.2f us "
         "each, %.2f us of CPU)\n",
         lib, r.count, t, (double)r.count / t, t / (double)r.count * 1e6,
         c / (double)r.count * 1e6);
  printf("RESULT %ld %.9f %.9f\n", r.count, t, c);
  return 0;
}

static int driver(int argc, char **argv) {
  long n = argc >= 2 ? atol(argv[1]) : 50000;
  char ns[32];
  snprintf(ns, sizeof ns, "%ld", n);
  printf("# threadsafe: call_soon_threadsafe round trips (%s [N] "
         "reproduces this)\n",
         argv[0]);
  bench_print_libs();
  printf("           epoll + eventfd (hand-written)\n");
  int cpu = first_cpu();
  if (pin_to(cpu) == 0)
    printf("pinning: each run's two threads share core %d\n", cpu);
  else
    printf("pinning: SKIPPED (sched_setaffinity failed): the threads share "
           "the cores\n");
  int reps = bench_reps();
  double rate[NLIBS][BENCH_MAX_REPS], cpu_us[NLIBS][BENCH_MAX_REPS];
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NLIBS; l++) {
      if (!lib_built[l])
        continue;
      char *args[] = {(char *)lib_names[l], ns, NULL};
      double v[3];
      bench_spawn(argv[0], args, v, 3);
      rate[l][r] = v[0] / v[1];
      cpu_us[l][r] = v[2] / v[0] * 1e6;
    }
  printf("\n== %ld round trips between two loops in two threads, one "
         "message in flight\n",
         n);
  bench_rate_table_n(NLIBS, reps, "round trips/s", "us/trip", 1e6, lib_names,
                     lib_built, rate);
  printf("   CPU (both threads, user+system) per round trip, median and best;"
         "\n   evl/x = evloop's median CPU / this one's (< 1: evloop uses "
         "less)\n");
  printf("   %-11s %14s %14s %12s\n", "library", "CPU us/trip", "best",
         "evl/x");
  for (int l = 0; l < NLIBS; l++) {
    if (!lib_built[l])
      continue;
    double m = bench_median(cpu_us[l], reps);
    printf("   %-11s %14.2f %14.2f", lib_names[l], m,
           lowest_of(cpu_us[l], reps));
    if (lib_built[0])
      printf(" %12.2f\n", bench_median(cpu_us[0], reps) / m);
    else
      printf(" %12s\n", "-");
  }
  printf("   one run: %s --run LIB %ld   (LIB: evloop libuv libev epoll)\n",
         argv[0], n);
  return 0;
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, child, driver);
}
