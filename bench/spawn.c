/* spawn.c - children spawned and reaped per second, and signal delivery
   latency.

   spawn: N children (default 2000) of /bin/true, INFLIGHT (default 8) at a
   time: INFLIGHT are started, and each time one has exited and been reaped
   the next is started, until N have run. The rate is N over the wall-clock
   time from the first spawn until the last child is reaped. Every child
   gets /dev/null as stdin, stdout and stderr, and must exit with 0.
   - evloop: evl_subprocess_exec with the three stdio modes
     EVL_STDIO_DEVNULL and a protocol whose connection_lost (the last
     callback: the child exited and was reaped) starts the next.
   - libuv: uv_spawn with the three stdio entries UV_IGNORE (libuv then
     opens /dev/null for fds 0-2 in the child) and an exit_cb that closes
     the handle and starts the next on another one (a handle may only be
     reused after its close callback).
   The same run with BALLAST MiB of touched heap in the parent (default
   128; with N / 10 children, as a fork then costs milliseconds) shows how the
   parent's size weighs on each way of spawning (see the README: libuv 1.44
   forks on Linux, evloop uses posix_spawn, i.e. clone(CLONE_VM|CLONE_VFORK)).
   The parent's CPU time (user + system; the children's own is not
   counted) per child is printed too.

   signal: time from kill(getpid(), SIGUSR1), made in a callback, to the
   signal callback running in the loop; M signals (default 10,000; the
   first 100 are a warm-up and not counted), one at a time.
   - evloop: evl_add_signal_handler; the kill is made in an evl_call_soon
     callback, which the signal callback schedules for the next signal.
   - libuv: uv_signal_start; the kill is made in a uv_idle_t callback (the
     idle handle is started by the signal callback and stops itself: the
     same "run this next iteration").
   Both take the signal with a process-wide handler that writes to a pipe
   the loop watches; the latency is that path: kill, the async handler and
   its write, the return to the loop, epoll_wait, the read of the pipe, the
   dispatch. */
#include "bench.h"

#include <signal.h>

static char true_path[] = "/bin/true";
static char *true_argv[] = {true_path, NULL};

typedef struct spawner {
  long total, started, done;
#if HAVE_EVL
  evl_loop *loop;
#endif
} spawner;

typedef struct siglat {
  long n, count; /* count includes the warm-up */
  int64_t t0;
  int64_t *lat;
} siglat;
enum { SIG_WARMUP = 100 };

/* BALLAST MiB of heap, every page touched, kept until the end. */
static char *make_ballast(long mib) {
  char *b;
  if (mib <= 0)
    return NULL;
  b = (char *)malloc((size_t)mib << 20);
  if (!b)
    bench_die("malloc (ballast)");
  for (size_t i = 0; i < ((size_t)mib << 20); i += 4096)
    b[i] = (char)i;
  return b;
}

/* ---- evloop ------------------------------------------------------------ */
#if HAVE_EVL
static void evl_start_one(spawner *s);

static void evl_child_lost(evl_subprocess *p, int err, void *user) {
  spawner *s = (spawner *)user;
  int code = -1;
  if (err < 0 || !evl_subprocess_get_returncode(p, &code) || code != 0)
    bench_die("evloop child (connection_lost error or exit status)");
  s->done++;
  if (s->started < s->total)
    evl_start_one(s);
  else if (s->done == s->total)
    evl_stop(s->loop);
}

static const evl_subprocess_protocol evl_child_proto = {NULL, NULL, NULL, NULL,
                                                        evl_child_lost};

static void evl_start_one(spawner *s) {
  evl_subprocess_options opts;
  evl_future *f;
  memset(&opts, 0, sizeof opts);
  opts.stdin_mode = EVL_STDIO_DEVNULL;
  opts.stdout_mode = EVL_STDIO_DEVNULL;
  opts.stderr_mode = EVL_STDIO_DEVNULL;
  f = evl_subprocess_exec(s->loop, &evl_child_proto, s,
                          (const char *const *)true_argv, &opts);
  /* Spawn errors fail the future at once; the loop keeps its own
     reference to a started one, so ours can go. */
  if (!f || (evl_future_done(f) && evl_future_error(f) < 0))
    bench_die("evl_subprocess_exec");
  evl_future_release(f);
  s->started++;
}

static double run_evl_spawn(spawner *s, int inflight) {
  s->loop = bench_evl_loop();
  double t0 = bench_now();
  for (int i = 0; i < inflight && s->started < s->total; i++)
    evl_start_one(s);
  if (evl_run_forever(s->loop) < 0)
    bench_die("evl_run_forever");
  double t = bench_now() - t0;
  evl_loop_free(s->loop);
  return t;
}

static void evl_sig_send(evl_loop *loop, void *arg) {
  siglat *s = (siglat *)arg;
  (void)loop;
  s->t0 = bench_now_ns();
  kill(getpid(), SIGUSR1);
}

static void evl_sig_cb(evl_loop *loop, int signum, void *arg) {
  siglat *s = (siglat *)arg;
  int64_t t = bench_now_ns();
  (void)signum;
  if (s->count >= SIG_WARMUP)
    s->lat[s->count - SIG_WARMUP] = t - s->t0;
  if (++s->count < s->n + SIG_WARMUP) {
    if (evl_call_soon(loop, evl_sig_send, s) < 0)
      bench_die("evl_call_soon");
  } else {
    evl_stop(loop);
  }
}

static void run_evl_signal(siglat *s) {
  evl_loop *loop = bench_evl_loop();
  if (evl_add_signal_handler(loop, SIGUSR1, evl_sig_cb, s) != 0)
    bench_die("evl_add_signal_handler");
  if (evl_call_soon(loop, evl_sig_send, s) < 0)
    bench_die("evl_call_soon");
  if (evl_run_forever(loop) < 0)
    bench_die("evl_run_forever");
  evl_remove_signal_handler(loop, SIGUSR1);
  evl_loop_free(loop);
}
#endif

/* ---- libuv ------------------------------------------------------------- */
#if HAVE_UV
typedef struct uv_slot {
  uv_process_t h;
  struct uv_slot *next_free, *next_all;
} uv_slot;

static spawner *g_uv_s;
static uv_slot *g_uv_free, *g_uv_all;
static uv_loop_t g_uv_loop;

static void uv_start_one(void);

static void uv_child_closed(uv_handle_t *h) {
  uv_slot *slot = (uv_slot *)h->data;
  slot->next_free = g_uv_free;
  g_uv_free = slot;
}

static void uv_child_exit(uv_process_t *h, int64_t status, int sig) {
  if (status != 0 || sig != 0)
    bench_die("libuv child (exit status)");
  g_uv_s->done++;
  uv_close((uv_handle_t *)h, uv_child_closed);
  if (g_uv_s->started < g_uv_s->total)
    uv_start_one();
}

static void uv_start_one(void) {
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  uv_slot *slot = g_uv_free;
  if (!slot) { /* a new handle: all others run or are being closed */
    slot = (uv_slot *)calloc(1, sizeof *slot);
    if (!slot)
      bench_die("calloc");
    slot->next_all = g_uv_all;
    g_uv_all = slot;
    g_uv_free = slot;
  }
  g_uv_free = slot->next_free;
  memset(&o, 0, sizeof o);
  memset(stdio, 0, sizeof stdio);
  for (int i = 0; i < 3; i++)
    stdio[i].flags = UV_IGNORE;
  o.file = true_argv[0];
  o.args = true_argv;
  o.exit_cb = uv_child_exit;
  o.stdio = stdio;
  o.stdio_count = 3;
  slot->h.data = slot;
  if (uv_spawn(&g_uv_loop, &slot->h, &o) != 0)
    bench_die("uv_spawn");
  g_uv_s->started++;
}

static double run_uv_spawn(spawner *s, int inflight) {
  g_uv_s = s;
  if (uv_loop_init(&g_uv_loop) != 0)
    bench_die("uv_loop_init");
  double t0 = bench_now();
  for (int i = 0; i < inflight && s->started < s->total; i++)
    uv_start_one();
  uv_run(&g_uv_loop, UV_RUN_DEFAULT); /* ends when no child is left */
  double t = bench_now() - t0;
  if (uv_loop_close(&g_uv_loop) != 0)
    bench_die("uv_loop_close");
  while (g_uv_all) {
    uv_slot *next = g_uv_all->next_all;
    free(g_uv_all);
    g_uv_all = next;
  }
  return t;
}

static siglat *g_uv_sig;
static uv_idle_t g_uv_idle;
static uv_signal_t g_uv_signal;

static void uv_sig_send(uv_idle_t *h) {
  uv_idle_stop(h);
  g_uv_sig->t0 = bench_now_ns();
  kill(getpid(), SIGUSR1);
}

static void uv_sig_cb(uv_signal_t *h, int signum) {
  siglat *s = g_uv_sig;
  int64_t t = bench_now_ns();
  (void)signum;
  if (s->count >= SIG_WARMUP)
    s->lat[s->count - SIG_WARMUP] = t - s->t0;
  if (++s->count < s->n + SIG_WARMUP) {
    uv_idle_start(&g_uv_idle, uv_sig_send);
  } else {
    uv_signal_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    uv_close((uv_handle_t *)&g_uv_idle, NULL);
  }
}

static void run_uv_signal(siglat *s) {
  g_uv_sig = s;
  if (uv_loop_init(&g_uv_loop) != 0)
    bench_die("uv_loop_init");
  uv_idle_init(&g_uv_loop, &g_uv_idle);
  uv_signal_init(&g_uv_loop, &g_uv_signal);
  if (uv_signal_start(&g_uv_signal, uv_sig_cb, SIGUSR1) != 0)
    bench_die("uv_signal_start");
  uv_idle_start(&g_uv_idle, uv_sig_send);
  uv_run(&g_uv_loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&g_uv_loop) != 0)
    bench_die("uv_loop_close");
}
#endif

/* ---- one run ----------------------------------------------------------- */
static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int child(int argc, char **argv) {
  const char *lib = argc >= 4 ? argv[2] : "";
  const char *what = argc >= 4 ? argv[3] : "";
  int ok = 0;
  (void)true_argv; /* unused when neither library is built in */
  if (argc == 7 && strcmp(what, "spawn") == 0) {
    spawner s = {
      atol(argv[4]),
      0,
      0
#if HAVE_EVL
      ,
      NULL
#endif
    };
    int inflight = atoi(argv[5]);
    char *ballast = make_ballast(atol(argv[6]));
    double t = -1;
    if (s.total < 1 || inflight < 1)
      bench_die("arguments");
    double cpu0 = bench_cpu();
#if HAVE_EVL
    if (strcmp(lib, "evloop") == 0)
      t = run_evl_spawn(&s, inflight);
#endif
#if HAVE_UV
    if (strcmp(lib, "libuv") == 0)
      t = run_uv_spawn(&s, inflight);
#endif
    double cpu = bench_cpu() - cpu0;
    free(ballast);
    if (t >= 0) {
      if (s.done != s.total)
        bench_die("count of children");
      printf("%s: %ld children (%d in flight, %s MiB ballast) in %.3f s = "
             "%.0f/s; parent CPU %.1f us/child\n",
             lib, s.done, inflight, argv[6], t, (double)s.done / t,
             cpu / (double)s.done * 1e6);
      printf("RESULT %ld %.9f %.9f\n", s.done, t, cpu);
      ok = 1;
    }
  } else if (argc == 5 && strcmp(what, "signal") == 0) {
    siglat s;
    memset(&s, 0, sizeof s);
    s.n = atol(argv[4]);
    if (s.n < 1)
      bench_die("arguments");
    s.lat = (int64_t *)calloc((size_t)s.n, sizeof *s.lat);
    if (!s.lat)
      bench_die("calloc");
#if HAVE_EVL
    if (strcmp(lib, "evloop") == 0) {
      run_evl_signal(&s);
      ok = 1;
    }
#endif
#if HAVE_UV
    if (strcmp(lib, "libuv") == 0) {
      run_uv_signal(&s);
      ok = 1;
    }
#endif
    if (ok) {
      if (s.count != s.n + SIG_WARMUP)
        bench_die("count of signals");
      qsort(s.lat, (size_t)s.n, sizeof *s.lat, cmp_i64);
      double med = (double)s.lat[s.n / 2] / 1e3;
      double p99 = (double)s.lat[(size_t)((double)(s.n - 1) * 0.99)] / 1e3;
      double mx = (double)s.lat[s.n - 1] / 1e3;
      printf("%s: %ld signals: latency median %.2f us, p99 %.2f us, max "
             "%.2f us\n",
             lib, s.n, med, p99, mx);
      printf("RESULT %.3f %.3f %.3f\n", med, p99, mx);
    }
    free(s.lat);
  } else {
    fprintf(stderr,
            "usage: %s --run evloop|libuv spawn N INFLIGHT BALLAST_MIB\n"
            "       %s --run evloop|libuv signal M\n",
            argv[0], argv[0]);
    return 2;
  }
  if (!ok) {
    fprintf(stderr, "%s: not built in\n", lib);
    return 2;
  }
  return 0;
}

/* ---- the driver -------------------------------------------------------- */
enum { NLIBS = 2 };
static const char *const lib_names[NLIBS] = {"evloop", "libuv"};
static const int lib_built[NLIBS] = {HAVE_EVL, HAVE_UV};

static void measure_spawn(const char *self, long n, int inflight,
                          long ballast) {
  char ns[32], is[32], bs[32];
  snprintf(ns, sizeof ns, "%ld", n);
  snprintf(is, sizeof is, "%d", inflight);
  snprintf(bs, sizeof bs, "%ld", ballast);
  int reps = bench_reps_default(5); /* the rates swing with other load */
  double rate[NLIBS][BENCH_MAX_REPS], cpu[NLIBS][BENCH_MAX_REPS];
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NLIBS; l++) {
      if (!lib_built[l])
        continue;
      char *args[] = {(char *)lib_names[l], (char *)"spawn", ns, is, bs, NULL};
      double v[3];
      bench_spawn(self, args, v, 3);
      rate[l][r] = v[0] / v[1];
      cpu[l][r] = v[2] / v[0] * 1e6;
    }
  printf("\n== spawn: %ld children of /bin/true, %d in flight, stdio "
         "/dev/null, %ld MiB of touched heap in the parent\n",
         n, inflight, ballast);
  bench_rate_table_n(NLIBS, reps, "children/s", "us/child", 1e6, lib_names,
                     lib_built, rate);
  printf("   parent CPU (user+sys) per child, median:");
  for (int l = 0; l < NLIBS; l++)
    if (lib_built[l])
      printf(" %s %.1f us", lib_names[l], bench_median(cpu[l], reps));
  printf("\n   one run: %s --run LIB spawn %ld %d %ld   (LIB: evloop libuv)\n",
         self, n, inflight, ballast);
}

static void measure_signal(const char *self, long m) {
  char ms[32];
  snprintf(ms, sizeof ms, "%ld", m);
  int reps = bench_reps();
  double med[NLIBS][BENCH_MAX_REPS], p99[NLIBS][BENCH_MAX_REPS],
      mx[NLIBS][BENCH_MAX_REPS];
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NLIBS; l++) {
      if (!lib_built[l])
        continue;
      char *args[] = {(char *)lib_names[l], (char *)"signal", ms, NULL};
      double v[3];
      bench_spawn(self, args, v, 3);
      med[l][r] = v[0];
      p99[l][r] = v[1];
      mx[l][r] = v[2];
    }
  printf("\n== signal latency: kill(getpid(), SIGUSR1) in a callback -> the "
         "signal callback, %ld signals one at a time\n",
         m);
  printf("   microseconds; each column is the median over %d runs (each in a "
         "new process)\n   of that run's median / 99th percentile / maximum;"
         " evl/x = evloop's / this one's\n   (< 1: evloop is faster)\n",
         reps);
  printf("   %-11s %9s %9s %9s %13s %10s\n", "library", "median", "p99", "max",
         "evl/x median", "evl/x p99");
  double m0 = 0, p0 = 0;
  for (int l = 0; l < NLIBS; l++) {
    if (!lib_built[l]) {
      printf("   %-11s %9s\n", lib_names[l], "(not built)");
      continue;
    }
    double a = bench_median(med[l], reps), b = bench_median(p99[l], reps);
    if (l == 0) {
      m0 = a;
      p0 = b;
    }
    printf("   %-11s %9.2f %9.2f %9.2f", lib_names[l], a, b,
           bench_median(mx[l], reps));
    if (lib_built[0])
      printf(" %13.2f %10.2f\n", m0 / a, p0 / b);
    else
      printf(" %13s %10s\n", "-", "-");
  }
  printf("   one run: %s --run LIB signal %ld   (LIB: evloop libuv)\n", self,
         m);
}

static int driver(int argc, char **argv) {
  long n = argc >= 2 ? atol(argv[1]) : 2000;
  int inflight = argc >= 3 ? atoi(argv[2]) : 8;
  long ballast = argc >= 4 ? atol(argv[3]) : 128;
  long m = argc >= 5 ? atol(argv[4]) : 10000;
  if (n < 1 || inflight < 1 || ballast < 0 || m < 1) {
    fprintf(stderr, "usage: %s [N [INFLIGHT [BALLAST_MIB [SIGNALS]]]]\n",
            argv[0]);
    return 2;
  }
  printf("# spawn: children spawned and reaped per second, signal latency "
         "(%s [N [INFLIGHT [BALLAST_MIB [SIGNALS]]]] reproduces this)\n",
         argv[0]);
  bench_print_libs();
  printf("(libev has no spawn function: it is not compared here)\n");
  measure_spawn(argv[0], n, inflight, 0);
  if (ballast > 0) /* a fork of the big parent takes ms: fewer children */
    measure_spawn(argv[0], n / 10 > 0 ? n / 10 : 1, inflight, ballast);
  measure_signal(argv[0], m);
  return 0;
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, child, driver);
}
