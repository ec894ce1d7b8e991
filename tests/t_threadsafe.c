/* evl_call_soon_threadsafe: exactly-once delivery in per-thread order from
   many threads, waking a blocked loop, running on the loop's thread. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <pthread.h>
#include <time.h>

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* 4 threads x 100,000 calls. The arg encodes (thread << 20) | sequence. */
#define NTHREADS 4
#define PER_THREAD 100000
typedef struct {
  evl_loop *loop;
  int id;
  int errors; /* calls that did not return 0 */
} producer;

static int g_next_seq[NTHREADS];
static int g_out_of_order, g_bad_arg;
static long g_total;

static void delivered_cb(evl_loop *loop, void *arg) {
  uintptr_t v = (uintptr_t)arg;
  int id = (int)(v >> 20), seq = (int)(v & 0xFFFFF);
  if (id < 0 || id >= NTHREADS) {
    g_bad_arg++;
    return;
  }
  if (seq != g_next_seq[id])
    g_out_of_order++;
  g_next_seq[id] = seq + 1;
  if (++g_total == (long)NTHREADS * PER_THREAD)
    evl_stop(loop);
}

static void *producer_main(void *arg) {
  producer *p = (producer *)arg;
  int seq;
  for (seq = 0; seq < PER_THREAD; seq++) {
    uintptr_t v = ((uintptr_t)p->id << 20) | (uintptr_t)seq;
    if (evl_call_soon_threadsafe(p->loop, delivered_cb, (void *)v) != 0)
      p->errors++;
  }
  return NULL;
}

static void guard_cb(evl_loop *loop, void *arg) {
  (*(int *)arg)++;
  evl_stop(loop);
}

TEST(threadsafe_calls_from_four_threads_arrive_once_in_order) {
  evl_loop *loop = test_open();
  pthread_t th[NTHREADS];
  producer prod[NTHREADS];
  int i, timed_out = 0;
  evl_handle guard;
  guard = evl_call_later(loop, 20.0, guard_cb, &timed_out);
  CHECK(guard > 0);
  for (i = 0; i < NTHREADS; i++) {
    prod[i].loop = loop;
    prod[i].id = i;
    prod[i].errors = 0;
    CHECK_EQ(pthread_create(&th[i], NULL, producer_main, &prod[i]), 0);
  }
  CHECK_EQ(evl_run_forever(loop), 0);
  for (i = 0; i < NTHREADS; i++)
    CHECK_EQ(pthread_join(th[i], NULL), 0);
  CHECK_EQ(timed_out, 0);
  for (i = 0; i < NTHREADS; i++)
    CHECK_EQ(prod[i].errors, 0);
  CHECK_EQ(g_bad_arg, 0);
  CHECK_EQ(g_out_of_order, 0);
  CHECK_EQ(g_total, (long)NTHREADS * PER_THREAD);
  for (i = 0; i < NTHREADS; i++)
    CHECK_EQ(g_next_seq[i], PER_THREAD);
  /* Nothing more arrives: every call was delivered exactly once. */
  CHECK_EQ(evl_run_once(loop, 0.01), 0);
  CHECK_EQ(g_total, (long)NTHREADS * PER_THREAD);
  CHECK_EQ(evl_handle_cancel(loop, guard), 1);
  test_close(loop);
}

typedef struct {
  evl_loop *loop;
  int rc;
  int stopped;
} waker;

static void *waker_main(void *arg) {
  waker *w = (waker *)arg;
  sleep_ms(100);
  w->rc = evl_call_soon_threadsafe(w->loop, test_stop_cb, &w->stopped);
  return NULL;
}

/* Runs the loop forever until another thread's evl_call_soon_threadsafe
   (100 ms in) stops it; returns how long that took. */
static double run_until_woken(evl_loop *loop) {
  pthread_t th;
  waker w;
  double t0, elapsed;
  w.loop = loop;
  w.rc = 1;
  w.stopped = 0;
  t0 = test_now();
  CHECK_EQ(pthread_create(&th, NULL, waker_main, &w), 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  elapsed = test_now() - t0;
  CHECK_EQ(pthread_join(th, NULL), 0);
  CHECK_EQ(w.rc, 0);
  CHECK_EQ(w.stopped, 1);
  return elapsed;
}

TEST(threadsafe_call_wakes_a_loop_blocked_on_a_far_timer) {
  evl_loop *loop = test_open();
  int far_fired = 0;
  double elapsed;
  CHECK(evl_call_later(loop, 30.0, test_count_cb, &far_fired) > 0);
  elapsed = run_until_woken(loop);
  CHECK_EQ(far_fired, 0);
  CHECK(elapsed >= 0.09);
  CHECK(elapsed < 5.0);
  test_close(loop);
}

TEST(threadsafe_call_wakes_a_loop_with_nothing_scheduled) {
  evl_loop *loop = test_open();
  double elapsed = run_until_woken(loop);
  CHECK(elapsed < 5.0);
  test_close(loop);
}

/* The loop runs in its own thread; callbacks must run there. */
typedef struct {
  evl_loop *loop;
  pthread_t ran_on;
  int ran;
  int rc;
} thread_check;

static void record_thread_cb(evl_loop *loop, void *arg) {
  thread_check *c = (thread_check *)arg;
  c->ran_on = pthread_self();
  c->ran++;
  evl_stop(loop);
}

static void *loop_thread_main(void *arg) {
  thread_check *c = (thread_check *)arg;
  c->rc = evl_run_forever(c->loop);
  return NULL;
}

TEST(threadsafe_callbacks_run_on_the_loop_thread) {
  evl_loop *loop = test_open();
  pthread_t th;
  thread_check c;
  memset(&c, 0, sizeof c);
  c.loop = loop;
  c.rc = 1;
  CHECK_EQ(pthread_create(&th, NULL, loop_thread_main, &c), 0);
  sleep_ms(20);
  CHECK_EQ(evl_call_soon_threadsafe(loop, record_thread_cb, &c), 0);
  CHECK_EQ(pthread_join(th, NULL), 0);
  CHECK_EQ(c.rc, 0);
  CHECK_EQ(c.ran, 1);
  CHECK(pthread_equal(c.ran_on, th));
  CHECK(!pthread_equal(c.ran_on, pthread_self()));
  /* And on this thread when this thread runs the loop. */
  c.ran = 0;
  CHECK_EQ(evl_call_soon_threadsafe(loop, record_thread_cb, &c), 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(c.ran, 1);
  CHECK(pthread_equal(c.ran_on, pthread_self()));
  test_close(loop);
}

TEST(threadsafe_call_refuses_closed_loop_and_null_callback) {
  evl_loop *loop = test_open();
  int ran = 0, stops = 0;
  CHECK_EQ(evl_call_soon_threadsafe(loop, NULL, &ran), EVL_EINVAL);
  /* The loop still works after the refused call. */
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ran), 0);
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_stop_cb, &stops), 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(ran, 1);
  CHECK_EQ(stops, 1);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ran), EVL_ECLOSED);
  CHECK_EQ(ran, 1);
  test_close(loop);
}

static void soon_threadsafe_from_loop_cb(evl_loop *loop, void *arg) {
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_stop_cb, arg), 0);
}

TEST(threadsafe_call_from_the_loop_thread_itself_works) {
  evl_loop *loop = test_open();
  int stops = 0;
  CHECK(evl_call_soon(loop, soon_threadsafe_from_loop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(stops, 1);
  test_close(loop);
}

TESTS_BEGIN
T(threadsafe_calls_from_four_threads_arrive_once_in_order)
T(threadsafe_call_wakes_a_loop_blocked_on_a_far_timer)
T(threadsafe_call_wakes_a_loop_with_nothing_scheduled)
T(threadsafe_callbacks_run_on_the_loop_thread)
T(threadsafe_call_refuses_closed_loop_and_null_callback)
T(threadsafe_call_from_the_loop_thread_itself_works)
TESTS_END
