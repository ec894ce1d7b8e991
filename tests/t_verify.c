/* The loop's invariant checks (EVLOOP_VERIFY, evl__loop_verify): they
   hold on busy loops (timers scheduled, fired and cancelled every way,
   repeating timers, callbacks, fd watchers coming and going), and they
   catch a broken timer heap, ready ring, slot or watcher table. This file
   is its own implementation file (EVLOOP_STATIC: it does not use impl.o),
   so that it can reach into the loop; its EVLOOP_ASSERT counts failures
   instead of aborting, so that a test can see which check failed. */
#define _GNU_SOURCE 1 /* before any system header, as evloop.h asks */
#include <stdio.h>
#include <string.h>

static int g_broken;        /* invariant checks that failed */
static const char *g_first; /* the first one's expression */
static void check_failed(const char *what) {
  if (!g_broken++)
    g_first = what;
}
#define EVLOOP_ASSERT(x) ((x) ? (void)0 : check_failed(#x))
#ifndef EVLOOP_VERIFY
#define EVLOOP_VERIFY
#endif
#define EVLOOP_STATIC
#define EVLOOP_IMPLEMENTATION
#include "test.h"

/* ---- busy loops: the checks hold -------------------------------------- */

enum { NTIMERS = 3000, SPREAD_MS = 40 };

typedef struct tstate {
  evl_loop *loop;
  evl_handle h[NTIMERS];
  int ms[NTIMERS]; /* deadline: base + ms */
  char cancelled[NTIMERS], fired[NTIMERS];
  int order[NTIMERS]; /* indexes in firing order */
  int nfired, ticks, soon;
  uint32_t rng;
} tstate;

typedef struct tref {
  tstate *s;
  int i;
} tref;
static tref g_refs[NTIMERS];

static uint32_t next_rand(tstate *s) {
  s->rng = s->rng * 1103515245u + 12345u;
  return s->rng >> 8;
}

/* Cancels a random pending timer; 1 if it did. */
static int cancel_one(tstate *s) {
  int i = (int)(next_rand(s) % NTIMERS);
  if (s->cancelled[i] || s->fired[i])
    return 0;
  CHECK_EQ(evl_handle_cancel(s->loop, s->h[i]), 1);
  CHECK_EQ(evl_handle_cancelled(s->loop, s->h[i]), 1);
  s->cancelled[i] = 1;
  return 1;
}

static void soon_cb(evl_loop *loop, void *arg) {
  tstate *s = (tstate *)arg;
  (void)loop;
  s->soon++;
}

static void timer_cb(evl_loop *loop, void *arg) {
  tref *r = (tref *)arg;
  tstate *s = r->s;
  CHECK(!s->cancelled[r->i] && !s->fired[r->i]);
  s->fired[r->i] = 1;
  s->order[s->nfired++] = r->i;
  /* a few cancels from inside callbacks (removed one by one at the next
     iteration) and callbacks queued behind this one */
  if (next_rand(s) % 4 == 0)
    cancel_one(s);
  if (next_rand(s) % 8 == 0)
    CHECK(evl_call_soon(loop, soon_cb, s) > 0);
}

static void tick_cb(evl_loop *loop, void *arg) {
  (void)loop;
  ((tstate *)arg)->ticks++;
}

static void verify_holds_with_timers_fired_and_cancelled(void) {
  static tstate s;
  evl_loop *loop = test_loop();
  double base;
  evl_handle every, unref;
  int i, live = 0;
  memset(&s, 0, sizeof s);
  s.loop = loop;
  s.rng = 12345;
  base = evl_time(loop) + 0.01;
  for (i = 0; i < NTIMERS; i++) {
    s.ms[i] = (int)(next_rand(&s) % SPREAD_MS); /* many equal deadlines */
    g_refs[i].s = &s;
    g_refs[i].i = i;
    s.h[i] = evl_call_at(loop, base + s.ms[i] / 1000.0, timer_cb, &g_refs[i]);
    CHECK(s.h[i] > 0);
  }
  every = evl_call_every(loop, 0.002, tick_cb, &s);
  CHECK(every > 0);
  unref = evl_call_later(loop, 3600, tick_cb, &s); /* must not keep it */
  CHECK(unref > 0);
  CHECK_EQ(evl_handle_set_ref(loop, unref, 0), 0);
  /* over a quarter of the heap at once: rebuilt at the next iteration */
  for (i = 0; i < NTIMERS / 2;)
    i += cancel_one(&s);
  CHECK(evl_run_once(loop, 0) >= 0);
  CHECK_EQ(g_broken, 0);
  for (;;) {
    int pending = 0;
    for (i = 0; i < NTIMERS; i++)
      pending += !s.cancelled[i] && !s.fired[i];
    if (!pending)
      break;
    CHECK(evl_run_once(loop, 0.05) >= 0);
    CHECK_EQ(g_broken, 0);
  }
  CHECK_EQ(evl_handle_cancel(loop, every), 1);
  CHECK(evl_run_once(loop, 0) >= 0);
  CHECK_EQ(evl_loop_alive(loop), 0); /* the unreferenced timer is left */
  /* each live timer fired once, in deadline order, FIFO among equals */
  for (i = 0; i < NTIMERS; i++) {
    CHECK(s.fired[i] != s.cancelled[i]);
    live += s.fired[i];
    CHECK_EQ(evl_handle_cancelled(loop, s.h[i]), 0); /* all discarded */
  }
  CHECK_EQ(live, s.nfired);
  for (i = 1; i < s.nfired; i++) {
    int a = s.order[i - 1], b = s.order[i];
    CHECK(s.ms[a] < s.ms[b] || (s.ms[a] == s.ms[b] && a < b));
  }
  CHECK(s.ticks > 0 && s.soon > 0);
  CHECK_EQ(g_broken, 0);
  evl_loop_free(loop);
  CHECK_EQ(g_broken, 0);
}

/* fd watchers: readers and writers added, removed (also from their own
   callbacks), unreferenced, on socket pairs that carry data. */
enum { NPAIRS = 6 };
typedef struct fstate {
  evl_loop *loop;
  int fds[NPAIRS][2];
  int reads, writes;
} fstate;

static void on_read(evl_loop *loop, evl_fd fd, void *arg) {
  fstate *f = (fstate *)arg;
  char buf[64];
  if (test_recv((int)fd, buf, sizeof buf) > 0 && ++f->reads % 3 == 0)
    CHECK_EQ(evl_remove_reader(loop, fd), 1);
}
static void on_write(evl_loop *loop, evl_fd fd, void *arg) {
  fstate *f = (fstate *)arg;
  CHECK_EQ(test_send((int)fd, "x", 1), 1);
  f->writes++;
  CHECK_EQ(evl_remove_writer(loop, fd), 1);
}

static void verify_holds_with_fd_watchers_coming_and_going(void) {
  static fstate f;
  evl_loop *loop = test_loop();
  int round, p;
  memset(&f, 0, sizeof f);
  f.loop = loop;
  for (p = 0; p < NPAIRS; p++)
    CHECK_EQ(test_socketpair(f.fds[p]), 0);
  for (round = 0; round < 20; round++) {
    for (p = 0; p < NPAIRS; p++) {
      evl_fd a = f.fds[p][0], b = f.fds[p][1];
      CHECK_EQ(evl_add_reader(loop, a, on_read, &f), 0);
      CHECK_EQ(evl_add_writer(loop, b, on_write, &f), 0);
      if ((round + p) % 3 == 0)
        CHECK_EQ(evl_fd_set_ref(loop, a, 0), 0);
      if ((round + p) % 4 == 0)
        CHECK_EQ(evl_add_writer(loop, a, on_write, &f), 0);
    }
    CHECK(evl_run_once(loop, 0.05) >= 0);
    CHECK(evl_run_once(loop, 0.05) >= 0);
    CHECK_EQ(g_broken, 0);
    for (p = 0; p < NPAIRS; p++)
      if (round % 2)
        (void)evl_remove_reader(loop, f.fds[p][0]);
  }
  CHECK(f.reads > 0 && f.writes >= 20 * NPAIRS);
  for (p = 0; p < NPAIRS; p++) {
    (void)evl_remove_reader(loop, f.fds[p][0]);
    (void)evl_remove_writer(loop, f.fds[p][0]);
    (void)evl_remove_writer(loop, f.fds[p][1]);
  }
  CHECK(evl_run_once(loop, 0) >= 0);
  evl_loop_free(loop);
  for (p = 0; p < NPAIRS; p++) {
    test_closesocket(f.fds[p][0]);
    test_closesocket(f.fds[p][1]);
  }
  CHECK_EQ(g_broken, 0);
}

/* ---- broken loops: the checks catch them ------------------------------- */

static void io_nop(evl_loop *loop, evl_fd fd, void *arg) {
  (void)loop, (void)fd, (void)arg;
}

static int g_ran;
static void ran_cb(evl_loop *loop, void *arg) {
  (void)loop, (void)arg;
  g_ran++;
}

/* Runs one iteration, which ends with the whole-loop check; returns how
   many checks failed in it and prints the first. */
static int broken_after_iteration(evl_loop *loop) {
  g_broken = 0;
  g_first = NULL;
  CHECK(evl_run_once(loop, 0) >= 0);
  if (g_broken)
    printf("      caught: %s\n", g_first);
  return g_broken;
}

static void verify_catches_a_broken_heap(void) {
  evl_loop *loop = test_loop();
  evl__hent t;
  int64_t old;
  int i;
  uint32_t last;
  for (i = 0; i < 10; i++)
    CHECK(evl_call_later(loop, 100 + i, ran_cb, NULL) > 0);
  CHECK_EQ(broken_after_iteration(loop), 0);
  /* the top and the last entry trade places; their slots do not know */
  last = loop->heap_len - 1;
  t = loop->heap[0];
  loop->heap[0] = loop->heap[last];
  loop->heap[last] = t;
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "s->pos == (int32_t)i") != NULL);
  loop->heap[last] = loop->heap[0];
  loop->heap[0] = t;
  CHECK_EQ(broken_after_iteration(loop), 0);
  /* only the order broken: positions and deadlines agree */
  old = loop->heap[0].when;
  loop->heap[0].when = loop->heap[1].when + 1;
  loop->slots[loop->heap[0].slot].when = loop->heap[0].when;
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "evl__hless") != NULL);
  loop->heap[0].when = loop->slots[loop->heap[0].slot].when = old;
  CHECK_EQ(broken_after_iteration(loop), 0);
  evl_loop_free(loop);
  CHECK_EQ(g_broken, 0);
}

static void verify_catches_a_broken_ready_ring(void) {
  evl_loop *loop = test_loop();
  evl_handle h[3];
  int i;
  g_ran = 0;
  for (i = 0; i < 3; i++)
    CHECK((h[i] = evl_call_soon(loop, ran_cb, NULL)) > 0);
  loop->ring_len--; /* the ring loses the last one: its slot stays ready */
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "EVL__POS_SEEN") != NULL);
  CHECK_EQ(g_ran, 2);
  CHECK_EQ(evl__ring_push(loop, (uint64_t)(uint32_t)h[2] - 1), 0);
  CHECK_EQ(broken_after_iteration(loop), 0);
  CHECK_EQ(g_ran, 3);
  /* a head beyond the capacity */
  CHECK(evl_call_soon(loop, ran_cb, NULL) > 0);
  loop->ring_head += loop->ring_cap;
  g_broken = 0;
  evl__loop_verify(loop);
  CHECK(g_broken > 0);
  CHECK(strstr(g_first, "ring_head < loop->ring_cap") != NULL);
  loop->ring_head -= loop->ring_cap;
  CHECK_EQ(broken_after_iteration(loop), 0);
  evl_loop_free(loop);
  CHECK_EQ(g_broken, 0);
}

static void verify_catches_a_broken_slot_or_watcher_table(void) {
  evl_loop *loop = test_loop();
  evl_handle h;
  uint32_t i;
  int fds[2];
  /* a free slot that kept a flag of its last use */
  h = evl_call_soon(loop, ran_cb, NULL);
  CHECK(h > 0);
  CHECK_EQ(broken_after_iteration(loop), 0);
  i = (uint32_t)h - 1;
  CHECK_EQ(loop->slots[i].pos, EVL__POS_FREE);
  loop->slots[i].gen |= EVL__SLOT_INTERNAL;
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "EVL__GEN_MASK") != NULL);
  loop->slots[i].gen &= ~EVL__SLOT_INTERNAL;
  CHECK_EQ(broken_after_iteration(loop), 0);
  /* a watcher the count does not know */
  CHECK_EQ(test_socketpair(fds), 0);
  CHECK_EQ(evl_add_reader(loop, fds[0], io_nop, NULL), 0);
  CHECK_EQ(broken_after_iteration(loop), 0);
  loop->nwatchers--;
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "nwatchers") != NULL);
  loop->nwatchers++;
  /* a reader whose interest the backend does not have */
  loop->fds[fds[0]].kmask &= ~EVL__READ;
  CHECK(broken_after_iteration(loop) > 0);
  CHECK(strstr(g_first, "rfn") != NULL);
  loop->fds[fds[0]].kmask |= EVL__READ;
  CHECK_EQ(broken_after_iteration(loop), 0);
  CHECK_EQ(evl_remove_reader(loop, fds[0]), 1);
  evl_loop_free(loop);
  test_closesocket(fds[0]);
  test_closesocket(fds[1]);
  CHECK_EQ(g_broken, 0);
}

TESTS_BEGIN
T(verify_holds_with_timers_fired_and_cancelled)
T(verify_holds_with_fd_watchers_coming_and_going)
T(verify_catches_a_broken_heap)
T(verify_catches_a_broken_ready_ring)
T(verify_catches_a_broken_slot_or_watcher_table)
TESTS_END
