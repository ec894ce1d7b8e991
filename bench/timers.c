/* timers.c - 1,000,000 timers with random deadlines: (a) scheduled and all
   fired, (b) scheduled and then all cancelled, (c) "half": scheduled, every
   odd one (in scheduling order) cancelled, the rest fired.

   Deadlines are whole milliseconds in [0, SPREAD) (default 1000), drawn from
   the same seeded splitmix64 sequence for every library, and scheduled
   relative to the loop's time: evl_call_later(d / 1000.0),
   uv_timer_start(d), ev_timer_init(d / 1000.0) after ev_now_update(), and
   base + d ms for the plain heap. Whole milliseconds give every library the
   same number of distinct deadlines (libuv's clock has 1 ms resolution).

   Each callback only counts. Cancellation goes through the timers in the
   order they were scheduled, then the loop runs one non-blocking iteration
   so that a library that removes cancelled timers lazily (as asyncio does)
   pays for it inside the measurement. The half mode cancels the odd ones
   the same way, then runs the loop until the even ones have fired: a
   library that leaves cancelled timers in its heap pays for them there.

   Libraries:
   - heap: the lower limit. A hand-written binary min-heap of (deadline,
     callback, arg) structs (24 bytes) in one array that grows by doubling,
     driven by clock_gettime and poll() with a millisecond timeout, as an
     event loop waits. For cancellation it also keeps two uint32_t arrays
     (heap slot -> id, id -> heap slot), so that remove is O(log n) and the
     id is the handle; only the cancel and half modes allocate them. It
     keeps no FIFO order among equal deadlines (evloop must).
   - evloop: evl_call_later / evl_handle_cancel; the loop stores the
     callbacks. Only the cancel and half modes keep the evl_handle values
     (8 bytes a timer, in one user array), since only they need them.
   - libuv / libev: the user owns the watchers; they are allocated as one
     array of uv_timer_t / ev_timer, as a user with 1M timers would do, and
     count towards memory. libuv requires uv_close on every handle before
     its memory is freed: that is part of libuv's teardown.

   Measured in a process of its own per run: CPU time (getrusage user+sys)
   from just before the loop is created to just after it is destroyed and
   the arrays are freed, split into schedule / run / teardown, and the
   process's peak RSS (ru_maxrss, which includes the ~2 MB the process had
   before starting: the same binary for every library). */
#include "bench.h"
#include <math.h>
#include <poll.h>

#define SEED 0x5eed1234abcdULL

enum { FIRE, CANCEL, HALF };

typedef struct tstate {
  long fired;
  long n;
  long expect; /* timers that fire: n, 0, or the even ones */
} tstate;

/* Is timer i (in scheduling order) cancelled in this mode? */
static int cancelled(int mode, long i) {
  return mode == CANCEL || (mode == HALF && (i & 1));
}

typedef struct phases {
  double sched, run, teardown; /* CPU seconds */
} phases;

/* Called when the teardown is done: c0, c1 and c2 are the CPU times at
   which scheduling, running and teardown began. */
static void phases_end(phases *ph, double c0, double c1, double c2) {
  double c3 = bench_cpu();
  ph->sched = c1 - c0, ph->run = c2 - c1, ph->teardown = c3 - c2;
}

/* ---- The plain binary heap ---------------------------------------------- */

typedef void (*heap_cb)(void *arg);
typedef struct hnode {
  int64_t when; /* CLOCK_MONOTONIC ns */
  heap_cb cb;
  void *arg;
} hnode;

typedef struct pheap {
  hnode *a;
  size_t n, cap;
  uint32_t *ids; /* heap slot -> id; NULL unless cancellation is wanted */
  uint32_t *pos; /* id -> heap slot */
  uint32_t next_id;
} pheap;

static void heap_put(pheap *h, size_t i, hnode nd, uint32_t id) {
  h->a[i] = nd;
  if (h->ids) {
    h->ids[i] = id;
    h->pos[id] = (uint32_t)i;
  }
}

static void heap_sift_up(pheap *h, size_t i, hnode nd, uint32_t id) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h->a[p].when <= nd.when)
      break;
    heap_put(h, i, h->a[p], h->ids ? h->ids[p] : 0);
    i = p;
  }
  heap_put(h, i, nd, id);
}

static void heap_sift_down(pheap *h, size_t i, hnode nd, uint32_t id) {
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && h->a[c + 1].when < h->a[c].when)
      c++;
    if (nd.when <= h->a[c].when)
      break;
    heap_put(h, i, h->a[c], h->ids ? h->ids[c] : 0);
    i = c;
  }
  heap_put(h, i, nd, id);
}

/* Returns the new timer's id. */
static uint32_t heap_push(pheap *h, int64_t when, heap_cb cb, void *arg) {
  if (h->n == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 64;
    h->a = (hnode *)realloc(h->a, h->cap * sizeof *h->a);
    if (!h->a)
      bench_die("realloc");
    if (h->ids) {
      h->ids = (uint32_t *)realloc(h->ids, h->cap * sizeof *h->ids);
      h->pos = (uint32_t *)realloc(h->pos, h->cap * sizeof *h->pos);
      if (!h->ids || !h->pos)
        bench_die("realloc");
    }
  }
  hnode nd = {when, cb, arg};
  uint32_t id = h->next_id++;
  h->n++;
  heap_sift_up(h, h->n - 1, nd, id);
  return id;
}

static hnode heap_pop(pheap *h) {
  hnode top = h->a[0];
  if (--h->n > 0)
    heap_sift_down(h, 0, h->a[h->n], h->ids ? h->ids[h->n] : 0);
  return top;
}

static void heap_remove(pheap *h, uint32_t id) {
  size_t i = h->pos[id];
  if (--h->n == i)
    return;
  hnode last = h->a[h->n];
  uint32_t last_id = h->ids[h->n];
  if (i > 0 && last.when < h->a[(i - 1) / 2].when)
    heap_sift_up(h, i, last, last_id);
  else
    heap_sift_down(h, i, last, last_id);
}

static void heap_timer_cb(void *arg) {
  ((tstate *)arg)->fired++;
}

static void run_heap(tstate *s, int mode, long spread, phases *ph) {
  double c0 = bench_cpu();
  pheap h;
  memset(&h, 0, sizeof h);
  if (mode != FIRE) {
    h.ids = (uint32_t *)malloc(64 * sizeof *h.ids);
    h.pos = (uint32_t *)malloc(64 * sizeof *h.pos);
  }
  uint64_t rng = SEED;
  int64_t base = bench_now_ns();
  for (long i = 0; i < s->n; i++) {
    int64_t d = (int64_t)(bench_rand(&rng) % (uint64_t)spread);
    heap_push(&h, base + d * 1000000, heap_timer_cb, s);
  }
  double c1 = bench_cpu();
  for (long i = 0; i < s->n; i++)
    if (cancelled(mode, i))
      heap_remove(&h, (uint32_t)i);
  while (h.n > 0) {
    int64_t now = bench_now_ns();
    while (h.n > 0 && h.a[0].when <= now) {
      hnode t = heap_pop(&h);
      t.cb(t.arg);
    }
    if (h.n > 0)
      poll(NULL, 0, (int)((h.a[0].when - now + 999999) / 1000000));
  }
  double c2 = bench_cpu();
  free(h.a);
  free(h.ids);
  free(h.pos);
  phases_end(ph, c0, c1, c2);
}

/* ---- evloop.h ----------------------------------------------------------- */

#if HAVE_EVL
static void evl_timer_cb(evl_loop *loop, void *arg) {
  tstate *s = (tstate *)arg;
  if (++s->fired == s->expect)
    evl_stop(loop);
}

static void run_evl(tstate *s, int mode, long spread, phases *ph) {
  double c0 = bench_cpu();
  evl_loop *loop = bench_evl_loop();
  evl_handle *hs = NULL;
  if (mode != FIRE && !(hs = (evl_handle *)malloc((size_t)s->n * sizeof *hs)))
    bench_die("malloc");
  uint64_t rng = SEED;
  for (long i = 0; i < s->n; i++) {
    long d = (long)(bench_rand(&rng) % (uint64_t)spread);
    evl_handle h = evl_call_later(loop, (double)d / 1000.0, evl_timer_cb, s);
    if (h < 0)
      bench_die("evl_call_later");
    if (hs)
      hs[i] = h;
  }
  double c1 = bench_cpu();
  for (long i = 0; i < s->n; i++)
    if (cancelled(mode, i) && evl_handle_cancel(loop, hs[i]) != 1)
      bench_die("evl_handle_cancel");
  if (mode == CANCEL) {
    evl_run_once(loop, 0);
  } else {
    if (evl_run_forever(loop) < 0)
      bench_die("evl_run_forever");
  }
  double c2 = bench_cpu();
  evl_loop_free(loop);
  free(hs);
  phases_end(ph, c0, c1, c2);
}
#endif

/* ---- libuv -------------------------------------------------------------- */

#if HAVE_UV
static void uv_timer_fn(uv_timer_t *t) {
  ((tstate *)t->data)->fired++;
}

static void run_uv(tstate *s, int mode, long spread, phases *ph) {
  double c0 = bench_cpu();
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    bench_die("uv_loop_init");
  uv_timer_t *t = (uv_timer_t *)malloc((size_t)s->n * sizeof *t);
  if (!t)
    bench_die("malloc");
  uv_update_time(&loop);
  uint64_t rng = SEED;
  for (long i = 0; i < s->n; i++) {
    uint64_t d = bench_rand(&rng) % (uint64_t)spread;
    uv_timer_init(&loop, &t[i]);
    t[i].data = s;
    if (uv_timer_start(&t[i], uv_timer_fn, d, 0) != 0)
      bench_die("uv_timer_start");
  }
  double c1 = bench_cpu();
  for (long i = 0; i < s->n; i++)
    if (cancelled(mode, i))
      uv_timer_stop(&t[i]);
  uv_run(&loop, mode == CANCEL ? UV_RUN_NOWAIT : UV_RUN_DEFAULT);
  double c2 = bench_cpu();
  for (long i = 0; i < s->n; i++)
    uv_close((uv_handle_t *)&t[i], NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    bench_die("uv_loop_close");
  free(t);
  phases_end(ph, c0, c1, c2);
}
#endif

/* ---- libev -------------------------------------------------------------- */

#if HAVE_EV
static void ev_timer_fn(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  ((tstate *)w->data)->fired++;
}

static void run_ev(tstate *s, int mode, long spread, phases *ph) {
  double c0 = bench_cpu();
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  if (!loop)
    bench_die("ev_loop_new");
  ev_timer *t = (ev_timer *)malloc((size_t)s->n * sizeof *t);
  if (!t)
    bench_die("malloc");
  ev_now_update(loop);
  uint64_t rng = SEED;
  for (long i = 0; i < s->n; i++) {
    long d = (long)(bench_rand(&rng) % (uint64_t)spread);
    ev_timer_init(&t[i], ev_timer_fn, (double)d / 1000.0, 0.);
    t[i].data = s;
    ev_timer_start(loop, &t[i]);
  }
  double c1 = bench_cpu();
  for (long i = 0; i < s->n; i++)
    if (cancelled(mode, i))
      ev_timer_stop(loop, &t[i]);
  ev_run(loop, mode == CANCEL ? EVRUN_NOWAIT : 0);
  double c2 = bench_cpu();
  ev_loop_destroy(loop);
  free(t);
  phases_end(ph, c0, c1, c2);
}
#endif

/* ---- Driver ------------------------------------------------------------- */

enum { NLIBS = 4 };
static const char *const lib_names[NLIBS] = {"heap", "evloop", "libuv",
                                             "libev"};
static const int lib_built[NLIBS] = {1, HAVE_EVL, HAVE_UV, HAVE_EV};
typedef void (*run_fn)(tstate *s, int mode, long spread, phases *ph);
static const char *const mode_names[] = {"fire", "cancel", "half"};

static int child(int argc, char **argv) {
  if (bench_usage(argc != 6, argv[0],
                  "--run heap|evloop|libuv|libev fire|cancel|half N SPREAD_MS"))
    return 2;
  const char *lib = argv[2];
  int mode = -1;
  for (int m = FIRE; m <= HALF; m++)
    if (strcmp(argv[3], mode_names[m]) == 0)
      mode = m;
  tstate s = {0, atol(argv[4]), 0};
  long spread = atol(argv[5]);
  if (mode < 0 || s.n < 1 || s.n > 100000000 || spread < 1)
    bench_die("arguments");
  s.expect = mode == FIRE ? s.n : mode == CANCEL ? 0 : (s.n + 1) / 2;
  run_fn fns[NLIBS] = {run_heap, NULL, NULL, NULL};
#if HAVE_EVL
  fns[1] = run_evl;
#endif
#if HAVE_UV
  fns[2] = run_uv;
#endif
#if HAVE_EV
  fns[3] = run_ev;
#endif
  run_fn fn = NULL;
  for (int l = 0; l < NLIBS; l++)
    if (strcmp(lib, lib_names[l]) == 0)
      fn = fns[l];
  if (!fn) {
    fprintf(stderr, "%s: not built in\n", lib);
    return 2;
  }
  long rss0 = bench_maxrss_kb();
  double w0 = bench_now();
  phases ph;
  fn(&s, mode, spread, &ph);
  double wall = bench_now() - w0;
  long rss = bench_maxrss_kb();
  if (s.fired != s.expect) {
    fprintf(stderr, "%s: %ld timers fired, expected %ld\n", lib, s.fired,
            s.expect);
    return 1;
  }
  double cpu = ph.sched + ph.run + ph.teardown;
  printf("%s %s: %ld timers: CPU %.1f ms (schedule %.1f, %s %.1f, teardown "
         "%.1f), wall %.1f ms, peak RSS %.1f MiB (%.1f MiB at start)\n",
         lib, argv[3], s.n, cpu * 1e3, ph.sched * 1e3,
         mode == FIRE ? "fire" : "cancel+fire", ph.run * 1e3, ph.teardown * 1e3,
         wall * 1e3, (double)rss / 1024, (double)rss0 / 1024);
  printf("RESULT %.6f %.6f %.6f %.6f %ld %ld %.6f\n", cpu, ph.sched, ph.run,
         ph.teardown, rss, rss0, wall);
  return 0;
}

static void measure(const char *self, const char *mode, long n, long spread) {
  char ns[32], ss[32];
  snprintf(ns, sizeof ns, "%ld", n);
  snprintf(ss, sizeof ss, "%ld", spread);
  int reps = bench_reps();
  double v[NLIBS][BENCH_MAX_REPS][7];
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NLIBS; l++) {
      if (!lib_built[l])
        continue;
      char *args[] = {(char *)lib_names[l], (char *)mode, ns, ss, NULL};
      bench_spawn(self, args, v[l][r], 7);
    }
  /* Per library: the run with the median CPU time (its phases are shown),
     and the median peak RSS. */
  double cpu[NLIBS], rss[NLIBS], rss0 = 0;
  int mid[NLIBS];
  for (int l = 0; l < NLIBS; l++) {
    if (!lib_built[l])
      continue;
    double c[BENCH_MAX_REPS], m[BENCH_MAX_REPS];
    for (int r = 0; r < reps; r++)
      c[r] = v[l][r][0], m[r] = v[l][r][4];
    cpu[l] = bench_median(c, reps);
    rss[l] = bench_median(m, reps);
    mid[l] = 0; /* the run closest to the median */
    for (int r = 1; r < reps; r++)
      if (fabs(c[r] - cpu[l]) < fabs(c[mid[l]] - cpu[l]))
        mid[l] = r;
    rss0 = v[l][0][5];
  }
  printf("\n== %ld timers, random deadlines in [0, %ld) ms, %s\n", n, spread,
         strcmp(mode, "fire") == 0     ? "scheduled and all fired"
         : strcmp(mode, "cancel") == 0 ? "scheduled, then all cancelled"
                                       : "scheduled, every odd one cancelled, "
                                         "the rest fired");
  printf("   CPU = user+sys time, median of %d runs, each in a new process "
         "(phases: of\n   the median run); RSS = peak RSS of the process, "
         "median (%.1f MiB of it\n   was there before the benchmark "
         "started)\n",
         reps, rss0 / 1024);
  printf("   %-7s %7s %15s %7s %13s %13s\n", "", "", "", "", "x/heap", "evl/x");
  printf("   %-7s %7s %15s %7s %6s %6s %6s %6s\n", "library", "CPU ms",
         "sched/run/free", "RSS MiB", "CPU", "RSS", "CPU", "RSS");
  for (int l = 0; l < NLIBS; l++) {
    if (!lib_built[l]) {
      printf("   %-7s (not built)\n", lib_names[l]);
      continue;
    }
    const double *p = v[l][mid[l]];
    char ph[64];
    snprintf(ph, sizeof ph, "%.0f/%.0f/%.0f", p[1] * 1e3, p[2] * 1e3,
             p[3] * 1e3);
    printf("   %-7s %7.1f %15s %7.1f %6.2f %6.2f", lib_names[l], cpu[l] * 1e3,
           ph, rss[l] / 1024, cpu[l] / cpu[0], rss[l] / rss[0]);
    if (lib_built[1])
      printf(" %6.2f %6.2f\n", cpu[1] / cpu[l], rss[1] / rss[l]);
    else
      printf(" %6s %6s\n", "-", "-");
  }
  printf("   x/heap: this library over the plain heap; evl/x: evloop over this "
         "library\n   (< 1: evloop uses less)\n");
  printf("   one run: %s --run LIB %s %ld %ld   (LIB: heap evloop libuv "
         "libev)\n",
         self, mode, n, spread);
}

static int driver(int argc, char **argv) {
  long n = argc >= 2 ? atol(argv[1]) : 1000000;
  long spread = argc >= 3 ? atol(argv[2]) : 1000;
  printf("# timers: %ld timers, CPU time and peak memory (%s [N [SPREAD_MS]] "
         "reproduces this)\n",
         n, argv[0]);
  bench_print_libs();
  measure(argv[0], "fire", n, spread);
  measure(argv[0], "cancel", n, spread);
  measure(argv[0], "half", n, spread);
  return 0;
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, child, driver);
}
