/* evl_call_soon_threadsafe's wake-up: no write while the target loop is
   busy (between its wait and the end of the iteration), and no wake-up
   lost for it: calls made while busy run in the next iteration, calls
   made while it waits (or while a host loop polls evl_backend_fd) wake it.
   Threads: also under TSan. */
#include "test.h"

#include <pthread.h>
#include <string.h>
#ifndef _WIN32
#include <poll.h>
#endif

typedef struct busy {
  evl_loop *loop;
  int ran, readable;
} busy;

/* A new loop, and b zeroed for calls to it. */
static evl_loop *busy_loop(busy *b) {
  memset(b, 0, sizeof *b);
  b->loop = test_loop();
  return b->loop;
}

static void mark(evl_loop *loop, void *arg) {
  (void)loop;
  ((busy *)arg)->ran++;
}

static void *call_mark(void *arg) {
  busy *b = (busy *)arg;
  CHECK_EQ(evl_call_soon_threadsafe(b->loop, mark, b), 0);
  return NULL;
}

/* Whether the loop's epoll fd is readable now (-1: not on epoll). */
static int epoll_fd_readable(evl_loop *loop, int ms) {
#ifndef _WIN32
  struct pollfd p;
  if (strcmp(evl_backend_name(loop), "epoll") != 0)
    return -1;
  memset(&p, 0, sizeof p);
  p.fd = (int)evl_backend_fd(loop);
  p.events = POLLIN;
  return poll(&p, 1, ms);
#else
  (void)loop, (void)ms;
  return -1;
#endif
}

/* A callback of the loop: another thread's call is made (and over) while
   the loop is busy running it. */
static void call_from_thread_now(evl_loop *loop, void *arg) {
  busy *b = (busy *)arg;
  pthread_t th;
  CHECK_EQ(pthread_create(&th, NULL, call_mark, b), 0);
  pthread_join(th, NULL);
  b->readable = epoll_fd_readable(loop, 0);
}

TEST(call_while_busy_runs_next_iteration) {
  busy b;
  evl_loop *loop = busy_loop(&b);
  double t0;
  evl_call_soon(loop, call_from_thread_now, &b);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(b.ran, 0);
  /* the iteration's end took the call: ready, so nothing may sleep now */
  CHECK(evl_next_timeout(loop) == 0.0);
  t0 = evl_time(loop);
  CHECK_EQ(evl_run_once(loop, 5.0), 1);
  CHECK_EQ(b.ran, 1);
  CHECK(evl_time(loop) - t0 < 2.0);
  /* and the call wrote no wake-up: the loop was busy (epoll only: the
     other backends have no fd to look at; builds with gcc's or clang's
     atomics and threads only: the others always write, as evloop.h says) */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(EVLOOP_NO_THREADS)
  if (b.readable >= 0)
    CHECK_EQ(b.readable, 0);
#endif
  CHECK_EQ(epoll_fd_readable(loop, 0) > 0, 0);
  evl_loop_free(loop);
}

/* Between iterations the loop is not busy: a host loop polling
   evl_backend_fd sees a call from another thread. */
TEST(call_between_iterations_wakes_host_poll) {
  busy b;
  evl_loop *loop = busy_loop(&b);
  pthread_t th;
  if (epoll_fd_readable(loop, 0) < 0) {
    evl_loop_free(loop);
    SKIP("the backend has no pollable fd (epoll only)");
  }
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(pthread_create(&th, NULL, call_mark, &b), 0);
  pthread_join(th, NULL);
  CHECK_EQ(epoll_fd_readable(loop, 5000), 1);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(b.ran, 1);
  evl_loop_free(loop);
}

/* Two loops, one message in flight (bench/threadsafe.c's round trip): each
   call finds the other loop waiting, about to wait, or still busy. A lost
   wake-up hangs (the test's alarm). */
enum { TRIPS = 3000 };

typedef struct pingpong {
  evl_loop *l1, *l2;
  long count;
} pingpong;

static void pp_pong(evl_loop *loop, void *arg);

static void pp_stop(evl_loop *loop, void *arg) {
  (void)arg;
  evl_stop(loop);
}

static void pp_ping(evl_loop *loop, void *arg) { /* on loop 2 */
  pingpong *p = (pingpong *)arg;
  (void)loop;
  CHECK_EQ(evl_call_soon_threadsafe(p->l1, pp_pong, p), 0);
}

static void pp_pong(evl_loop *loop, void *arg) { /* on loop 1 */
  pingpong *p = (pingpong *)arg;
  if (++p->count < TRIPS) {
    CHECK_EQ(evl_call_soon_threadsafe(p->l2, pp_ping, p), 0);
    return;
  }
  evl_stop(loop);
  CHECK_EQ(evl_call_soon_threadsafe(p->l2, pp_stop, NULL), 0);
}

static void *pp_thread(void *arg) {
  pingpong *p = (pingpong *)arg;
  CHECK_EQ(evl_run_forever(p->l2), 0);
  return NULL;
}

TEST(round_trips_between_two_loops) {
  pingpong p;
  pthread_t th;
  memset(&p, 0, sizeof p);
  p.l1 = test_loop();
  p.l2 = test_loop();
  CHECK_EQ(pthread_create(&th, NULL, pp_thread, &p), 0);
  CHECK_EQ(evl_call_soon_threadsafe(p.l2, pp_ping, &p), 0);
  CHECK_EQ(evl_run_forever(p.l1), 0);
  pthread_join(th, NULL);
  CHECK_EQ(p.count, TRIPS);
  evl_loop_free(p.l1);
  evl_loop_free(p.l2);
}

/* Several threads call at once while the loop alternates between running
   their callbacks and waiting; every call runs, the last one stops it. */
enum { CALLERS = 4, CALLS = 2000 };

typedef struct burst {
  evl_loop *loop;
  long ran;
} burst;

static void burst_cb(evl_loop *loop, void *arg) {
  burst *b = (burst *)arg;
  if (++b->ran == (long)CALLERS * CALLS)
    evl_stop(loop);
}

static void *burst_thread(void *arg) {
  burst *b = (burst *)arg;
  int i;
  for (i = 0; i < CALLS; i++)
    CHECK_EQ(evl_call_soon_threadsafe(b->loop, burst_cb, b), 0);
  return NULL;
}

TEST(bursts_from_threads_all_run) {
  burst b;
  pthread_t th[CALLERS];
  int i;
  memset(&b, 0, sizeof b);
  b.loop = test_loop();
  for (i = 0; i < CALLERS; i++)
    CHECK_EQ(pthread_create(&th[i], NULL, burst_thread, &b), 0);
  CHECK_EQ(evl_run_forever(b.loop), 0);
  for (i = 0; i < CALLERS; i++)
    pthread_join(th[i], NULL);
  CHECK_EQ(b.ran, (long)CALLERS * CALLS);
  evl_loop_free(b.loop);
}

TESTS_BEGIN
T(call_while_busy_runs_next_iteration)
T(call_between_iterations_wakes_host_poll)
T(round_trips_between_two_loops)
T(bursts_from_threads_all_run)
TESTS_END
