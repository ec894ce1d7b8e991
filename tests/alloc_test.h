/* A failing allocator, and the sweep that fails each allocation of a piece
   of work in turn (t_config, t_allocfail). Include it instead of test.h;
   a file that routes evloop.h's own allocations here too defines
   EVLOOP_MALLOC & co. as stat_alloc(NULL, ...) before including it (and
   declares stat_alloc first).

   stat_alloc has evl_loop_config.alloc's shape (realloc-like; size 0
   frees). Its state is ctx, or g_fail when ctx is NULL: allocation number
   fail_at fails, or with `from` set, every allocation from fail_at on.
   Executor threads allocate too: the state is kept under a lock. */
#ifndef EVL_ALLOC_TEST_H
#define EVL_ALLOC_TEST_H

#include <pthread.h>
#include <stdlib.h>

typedef struct alloc_stats {
  long live, total;
  long fail_at; /* the allocation number that fails; -1: none */
  int from;     /* 1: every allocation from fail_at on fails */
} alloc_stats;

static alloc_stats g_fail = {0, 0, -1, 0};
static pthread_mutex_t g_fail_mu = PTHREAD_MUTEX_INITIALIZER;

/* Called for each failing allocation: a place for a debugger's breakpoint
   (gdb -ex 'break alloc_failed' ...) to see who asked. */
static volatile long g_alloc_failures;
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void
alloc_failed(void) {
  g_alloc_failures++;
}

static void *stat_alloc(void *ctx, void *ptr, size_t size) {
  alloc_stats *st = ctx ? (alloc_stats *)ctx : &g_fail;
  void *q = NULL;
  int fail;
  pthread_mutex_lock(&g_fail_mu);
  if (size == 0) {
    if (ptr) {
      st->live--;
      free(ptr);
    }
    pthread_mutex_unlock(&g_fail_mu);
    return NULL;
  }
  fail = st->fail_at >= 0 &&
         (st->from ? st->total >= st->fail_at : st->total == st->fail_at);
  st->total++;
  if (!fail) {
    q = ptr ? realloc(ptr, size) : malloc(size);
    if (q && !ptr)
      st->live++;
  }
  pthread_mutex_unlock(&g_fail_mu);
  if (fail)
    alloc_failed();
  return q;
}

#include "test.h"

/* Failures are reported through the handler: expected here. */
static void quiet(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)ctx;
  (void)arg;
}

/* For the tests that drive g_fail by hand: a loop on it, every allocation
   failing from now on, memory back. */
static inline evl_loop *alloc_loop(void) {
  evl_loop_config cfg;
  evl_loop *loop;
  memset(&cfg, 0, sizeof cfg);
  cfg.alloc = stat_alloc;
  loop = test_open_with(&cfg);
  evl_set_exception_handler(loop, quiet, NULL);
  return loop;
}
static inline void memory_runs_out(void) {
  pthread_mutex_lock(&g_fail_mu);
  g_fail.fail_at = g_fail.total;
  g_fail.from = 1;
  pthread_mutex_unlock(&g_fail_mu);
}
static inline void memory_is_back(void) {
  pthread_mutex_lock(&g_fail_mu);
  g_fail.fail_at = -1;
  pthread_mutex_unlock(&g_fail_mu);
}

/* Which run of a sweep is going on (printed when one fails). */
static char g_sweep_where[96];
/* 1 while the allocator fails: the work may then see errors. */
static int g_sweep_failing;

/* A stride over the allocations: EVL_SWEEP_STRIDE, or 4 under valgrind
   (where spawning a child costs a hundred times more: the subprocess
   sweep would take minutes); 1 elsewhere, every one (ASan included). */
static inline long sweep_stride(void) {
  const char *s = getenv("EVL_SWEEP_STRIDE"), *p = getenv("LD_PRELOAD");
  if (s && atol(s) > 0)
    return atol(s);
  return p && strstr(p, "vgpreload") ? 4 : 1;
}

enum {
  SWEEP_ONE = 1,       /* each allocation failing alone */
  SWEEP_FROM = 2,      /* every allocation failing from the nth on */
  SWEEP_RECOVER = 4,   /* after the failing run, memory comes back and the
                          work runs again on the same loop: it must reach
                          min_result */
  SWEEP_CLOSE = 8,     /* every allocation from the nth on failing, through
                          evl_loop_free too (no recovery) */
  SWEEP_WARM_ONE = 16, /* as ONE and FROM, on a loop that ran the work once
                          first (its arrays grown: other paths fail) */
  SWEEP_WARM_FROM = 32
};

static const char *sweep_mode_name(int mode) {
  switch (mode) {
  case SWEEP_ONE:
    return "";
  case SWEEP_FROM:
    return " and every one after it";
  case SWEEP_CLOSE:
    return " and every one after it, through the close";
  case SWEEP_WARM_ONE:
    return " (warm loop)";
  default:
    return " and every one after it (warm loop)";
  }
}

/* One run: a loop allocating through g_fail (allocation k failing as mode
   says; k < 0: none), work on it, then (recover) work again with memory
   back; every block must come back with the loop. Returns how many
   allocations the failing part made. */
static inline long sweep_run(int (*work)(evl_loop *, void *), void *arg,
                             int min_result, long k, int mode, int recover) {
  evl_loop_config cfg;
  evl_loop *loop = NULL;
  long made;
  int rc, warm = mode == SWEEP_WARM_ONE || mode == SWEEP_WARM_FROM;
  int close_failing = mode == SWEEP_CLOSE;
  memset(&cfg, 0, sizeof cfg);
  cfg.alloc = stat_alloc; /* ctx NULL: g_fail */
  cfg.backend = test_backend();
  pthread_mutex_lock(&g_fail_mu);
  g_fail.live = g_fail.total = 0;
  g_fail.fail_at = warm ? -1 : k;
  g_fail.from = mode != SWEEP_ONE && mode != SWEEP_WARM_ONE;
  pthread_mutex_unlock(&g_fail_mu);
  snprintf(g_sweep_where, sizeof g_sweep_where, "allocation %ld failing%s", k,
           sweep_mode_name(mode));
  if (getenv("EVL_SWEEP_VERBOSE"))
    fprintf(stderr, "  run: %s\n", g_sweep_where);
  rc = evl_loop_new(&loop, &cfg);
  if (warm) { /* the first run with memory: it must succeed */
    CHECK_EQ(rc, 0);
    evl_set_exception_handler(loop, quiet, NULL);
    CHECK(work(loop, arg) >= min_result);
    pthread_mutex_lock(&g_fail_mu);
    g_fail.total = 0;
    g_fail.fail_at = k;
    pthread_mutex_unlock(&g_fail_mu);
  }
  g_sweep_failing = k >= 0;
  if (warm) {
    (void)work(loop, arg);
  } else if (rc != 0) {
    CHECK_EQ(rc, EVL_ENOMEM);
    CHECK(loop == NULL);
  } else {
    evl_set_exception_handler(loop, quiet, NULL);
    (void)work(loop, arg);
  }
  pthread_mutex_lock(&g_fail_mu);
  made = g_fail.total;
  if (!close_failing)
    g_fail.fail_at = -1; /* memory is back */
  pthread_mutex_unlock(&g_fail_mu);
  g_sweep_failing = close_failing;
  if (loop && recover && !close_failing) {
    int got = work(loop, arg);
    if (got < min_result) {
      fprintf(stderr, "  %s: with memory back the work reached %d of %d\n",
              g_sweep_where, got, min_result);
      CHECK(got >= min_result);
    }
  }
  evl_loop_free(loop);
  g_fail.fail_at = -1;
  g_sweep_failing = 0;
  if (g_fail.live != 0) {
    fprintf(stderr, "  %s: %ld blocks leaked\n", g_sweep_where, g_fail.live);
    CHECK(0);
  }
  return made;
}

/* Runs work once with no failure to count its allocations (it must reach
   min_result), then for each allocation k (every stride-th), in each of
   the modes asked (SWEEP_ONE, _FROM, _CLOSE, _WARM_ONE, _WARM_FROM),
   until k is past what a run allocates. Returns the number of failing
   runs; *allocs (if given) gets the count. */
static inline long alloc_sweep(int (*work)(evl_loop *, void *), void *arg,
                               int min_result, int modes, long *allocs) {
  long total, k, runs = 0, stride = sweep_stride(), made;
  int m;
  total = sweep_run(work, arg, min_result, -1, SWEEP_ONE, 1);
  CHECK(total > 0);
  if (allocs)
    *allocs = total;
  for (m = SWEEP_ONE; m <= SWEEP_WARM_FROM; m <<= 1) {
    if (!(modes & m) || m == SWEEP_RECOVER)
      continue;
    /* Counts vary a little from run to run (reads, threads): go on until
       a run allocates no more than k, within a bound. */
    for (k = 0; k < 2 * total + 64; k += stride) {
      made =
          sweep_run(work, arg, min_result, k, m, (modes & SWEEP_RECOVER) != 0);
      runs++;
      if (made <= k)
        break;
    }
  }
  return runs;
}

#endif
