/* callbacks.c - callbacks per second through call_soon.

   `batch` callbacks are pending at any time; each one, when it runs, counts
   itself and schedules itself again, until `total` calls have been made
   (the callbacks still pending at that point run once more and stop, so the
   count can exceed `total` by batch - 1; the rate uses the real count).
   batch 1 (10M calls) measures a full loop iteration per callback, batch
   1000 (100M calls, so that the run lasts long enough to time) the cost of
   a callback when the iteration overhead is shared by 1000.

   The peers have no call_soon. The closest fair equivalents, chosen to
   favour them:
   - libuv: one uv_idle_t per pending callback, left started. An idle
     handle's callback runs once per loop iteration and the loop does not
     block while one is active, which is exactly "run this in the next
     iteration, again and again"; leaving it started saves libuv the
     stop/start (queue unlink/link) that a re-scheduled one-shot would need,
     while evloop has to call evl_call_soon every time. Rejected:
     uv_timer_start(0) (a heap insert and removal per call, so slower),
     uv_async_send to itself (an atomic and an eventfd write per call),
     uv_check/uv_prepare (they do not keep the loop from blocking).
   - libev: one ev_idle per pending callback, left started, for the same
     reasons. Rejected: ev_feed_event (libev invokes watchers fed during the
     pending pass in the same pass, without polling for I/O, so it does not
     do what call_soon does, and a self-feeding watcher would never let the
     loop poll at all), ev_prepare/ev_check (they do not keep the loop from
     blocking), a 0-second ev_timer (a heap insert and removal per call).
   The rows "libuv rearm" and "libev rearm" do the same work as call_soon
   instead: each callback stops and starts its idle watcher again (the
   one-shot "run this next iteration" that call_soon is). The plain rows are
   the peer-favourable bound; the rearm rows compare like with like.
   Time is wall-clock time of the run call only (setup and teardown are
   outside it). */
#include "bench.h"

typedef struct counter {
  long calls;
  long target;
} counter;

#if HAVE_EVL
static void cb_evl(evl_loop *loop, void *arg) {
  counter *c = (counter *)arg;
  if (++c->calls < c->target) {
    if (evl_call_soon(loop, cb_evl, c) < 0)
      bench_die("evl_call_soon");
  } else if (c->calls == c->target) {
    evl_stop(loop);
  }
}

static double run_evl(counter *c, long batch) {
  evl_loop *loop = bench_evl_loop();
  for (long i = 0; i < batch; i++)
    if (evl_call_soon(loop, cb_evl, c) < 0)
      bench_die("evl_call_soon");
  double t0 = bench_now();
  if (evl_run_forever(loop) < 0)
    bench_die("evl_run_forever");
  double t = bench_now() - t0;
  evl_loop_free(loop);
  return t;
}
#endif

#if HAVE_UV
static int g_rearm; /* the "rearm" rows: stop and start each time */
static void cb_uv(uv_idle_t *h) {
  counter *c = (counter *)h->data;
  if (++c->calls >= c->target) {
    uv_idle_stop(h);
  } else if (g_rearm) {
    uv_idle_stop(h);
    uv_idle_start(h, cb_uv);
  }
}

static double run_uv(counter *c, long batch) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    bench_die("uv_loop_init");
  uv_idle_t *h = (uv_idle_t *)calloc((size_t)batch, sizeof *h);
  if (!h)
    bench_die("calloc");
  for (long i = 0; i < batch; i++) {
    uv_idle_init(&loop, &h[i]);
    h[i].data = c;
    uv_idle_start(&h[i], cb_uv);
  }
  double t0 = bench_now();
  uv_run(&loop, UV_RUN_DEFAULT);
  double t = bench_now() - t0;
  for (long i = 0; i < batch; i++)
    uv_close((uv_handle_t *)&h[i], NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    bench_die("uv_loop_close");
  free(h);
  return t;
}
#endif

#if HAVE_EV
static int g_ev_rearm;
static void cb_ev(struct ev_loop *loop, ev_idle *w, int revents) {
  counter *c = (counter *)w->data;
  (void)revents;
  if (++c->calls >= c->target) {
    ev_idle_stop(loop, w);
  } else if (g_ev_rearm) {
    ev_idle_stop(loop, w);
    ev_idle_start(loop, w);
  }
}

static double run_ev(counter *c, long batch) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  if (!loop)
    bench_die("ev_loop_new");
  ev_idle *w = (ev_idle *)calloc((size_t)batch, sizeof *w);
  if (!w)
    bench_die("calloc");
  for (long i = 0; i < batch; i++) {
    ev_idle_init(&w[i], cb_ev);
    w[i].data = c;
    ev_idle_start(loop, &w[i]);
  }
  double t0 = bench_now();
  ev_run(loop, 0);
  double t = bench_now() - t0;
  ev_loop_destroy(loop);
  free(w);
  return t;
}
#endif

static int child(int argc, char **argv) {
  if (bench_usage(
          argc != 5, argv[0],
          "--run evloop|libuv|libev|libuv-rearm|libev-rearm BATCH TOTAL"))
    return 2;
  const char *lib = argv[2];
  long batch = atol(argv[3]);
  counter c = {0, atol(argv[4])};
  double t = -1;
  if (batch < 1 || c.target < batch)
    bench_die("arguments");
#if HAVE_EVL
  if (strcmp(lib, "evloop") == 0)
    t = run_evl(&c, batch);
#endif
#if HAVE_UV
  if (strcmp(lib, "libuv") == 0 || strcmp(lib, "libuv-rearm") == 0) {
    g_rearm = lib[5] != 0;
    t = run_uv(&c, batch);
  }
#endif
#if HAVE_EV
  if (strcmp(lib, "libev") == 0 || strcmp(lib, "libev-rearm") == 0) {
    g_ev_rearm = lib[5] != 0;
    t = run_ev(&c, batch);
  }
#endif
  if (t < 0) {
    fprintf(stderr, "%s: not built in\n", lib);
    return 2;
  }
  printf("%s: batch %ld: %ld calls in %.3f s = %.2f M calls/s\n", lib, batch,
         c.calls, t, (double)c.calls / t / 1e6);
  printf("RESULT %ld %.9f\n", c.calls, t);
  return 0;
}

enum { NLIBS = 5 };
static const char *const lib_names[NLIBS] = {"evloop", "libuv", "libev",
                                             "libuv-rearm", "libev-rearm"};
static const int lib_built[NLIBS] = {HAVE_EVL, HAVE_UV, HAVE_EV, HAVE_UV,
                                     HAVE_EV};

static void measure(const char *self, long batch, long total) {
  char bs[32], ts[32];
  snprintf(bs, sizeof bs, "%ld", batch);
  snprintf(ts, sizeof ts, "%ld", total);
  int reps = bench_reps();
  double rate[NLIBS][BENCH_MAX_REPS];
  /* Interleave the libraries so that a noisy moment hits all of them. */
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NLIBS; l++) {
      if (!lib_built[l])
        continue;
      char *args[] = {(char *)lib_names[l], bs, ts, NULL};
      double v[2];
      bench_spawn(self, args, v, 2);
      rate[l][r] = v[0] / v[1];
    }
  printf("\n== call_soon: %ld pending callback%s, each re-scheduling itself, "
         "%ld calls\n",
         batch, batch == 1 ? "" : "s", total);
  bench_rate_table_n(NLIBS, reps, "calls/s", "ns/call", 1e9, lib_names,
                     lib_built, rate);
  printf("   one run: %s --run LIB %ld %ld   (LIB: evloop libuv libev "
         "libuv-rearm libev-rearm)\n",
         self, batch, total);
}

static int driver(int argc, char **argv) {
  long chain = argc >= 2 ? atol(argv[1]) : 10000000;
  long batch = argc >= 3 ? atol(argv[2]) : 100000000;
  printf("# callbacks: call_soon throughput (%s [TOTAL1 [TOTAL1000]] "
         "reproduces this)\n",
         argv[0]);
  bench_print_libs();
  measure(argv[0], 1, chain);
  measure(argv[0], 1000, batch);
  return 0;
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, child, driver);
}
