/* Embedding the loop in a host's loop: evl_next_timeout, evl_run_once with
   a bounded wait, and driving the loop from an outer poll(). */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <time.h>
#ifndef _WIN32
#include <poll.h>
#include <sys/socket.h>
#endif

/* The host's wait: poll on the backend fd (if any) or just sleep. An IOCP
   port cannot be waited on without taking its packets: a Windows host
   sleeps for evl_next_timeout at most. */
static int host_wait(evl_fd bfd, int ms) {
#ifdef _WIN32
  (void)bfd;
  test_sleep_ms(ms);
  return 0;
#else
  struct pollfd pfd;
  pfd.fd = (int)bfd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  return poll(bfd >= 0 ? &pfd : NULL, bfd >= 0 ? 1 : 0, ms);
#endif
}

TEST(next_timeout_reflects_what_is_scheduled) {
  evl_loop *loop = test_open();
  int ran = 0, fired = 0;
  double t;
  evl_handle h;
  CHECK(evl_next_timeout(loop) == -1.0);
  CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  CHECK(evl_next_timeout(loop) == 0.0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran, 1);
  CHECK(evl_next_timeout(loop) == -1.0);
  h = evl_call_later(loop, 0.5, test_count_cb, &fired);
  CHECK(h > 0);
  t = evl_next_timeout(loop);
  CHECK(t > 0.3);
  CHECK(t <= 0.5);
  /* A nearer timer lowers it; a ready callback makes it 0. */
  CHECK(evl_call_later(loop, 0.2, test_count_cb, &fired) > 0);
  t = evl_next_timeout(loop);
  CHECK(t > 0.0);
  CHECK(t <= 0.2);
  CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  CHECK(evl_next_timeout(loop) == 0.0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran, 2);
  CHECK(evl_next_timeout(loop) > 0.0);
  CHECK_EQ(fired, 0);
  test_close(loop);
}

TEST(next_timeout_is_zero_for_an_expired_timer) {
  evl_loop *loop = test_open();
  int fired = 0, i;
  CHECK(evl_call_later(loop, 0.02, test_count_cb, &fired) > 0);
  /* Let it expire without running the loop. */
  for (i = 0; i < 100 && evl_next_timeout(loop) > 0.0; i++)
    test_sleep_ms(10);
  CHECK(evl_next_timeout(loop) == 0.0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(fired, 1);
  CHECK(evl_next_timeout(loop) == -1.0);
  test_close(loop);
}

TEST(run_once_zero_does_not_block) {
  evl_loop *loop = test_open();
  int fired = 0;
  double t0;
  CHECK(evl_call_later(loop, 10.0, test_count_cb, &fired) > 0);
  t0 = test_now();
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK(test_now() - t0 < 1.0);
  CHECK_EQ(fired, 0);
  test_close(loop);
}

TEST(run_once_with_max_wait_waits_when_nothing_is_ready) {
  evl_loop *loop = test_open();
  int fired = 0;
  double t0, elapsed;
  /* Nothing scheduled at all. */
  t0 = test_now();
  CHECK_EQ(evl_run_once(loop, 0.05), 0);
  elapsed = test_now() - t0;
  CHECK(elapsed >= 0.045);
  CHECK(elapsed < 5.0);
  /* Only a far timer. */
  CHECK(evl_call_later(loop, 10.0, test_count_cb, &fired) > 0);
  t0 = test_now();
  CHECK_EQ(evl_run_once(loop, 0.05), 0);
  elapsed = test_now() - t0;
  CHECK(elapsed >= 0.045);
  CHECK(elapsed < 5.0);
  CHECK_EQ(fired, 0);
  test_close(loop);
}

TEST(run_once_max_wait_is_cut_short_by_a_nearer_timer) {
  evl_loop *loop = test_open();
  int fired = 0, i;
  double t0 = test_now(), elapsed;
  CHECK(evl_call_later(loop, 0.05, test_count_cb, &fired) > 0);
  /* A wait longer than the timer returns with the timer run. */
  for (i = 0; i < 10 && fired == 0; i++)
    evl_run_once(loop, 3.0);
  elapsed = test_now() - t0;
  CHECK_EQ(fired, 1);
  CHECK(elapsed >= 0.05 - 1e-6);
  CHECK(elapsed < 2.5);
  test_close(loop);
}

typedef struct {
  int read_calls;
  int timer_calls;
  double timer_sched, timer_fire;
} embed_state;

static void embed_reader(evl_loop *loop, evl_fd fd, void *arg) {
  embed_state *s = (embed_state *)arg;
  char c;
  CHECK_EQ(test_recv((int)fd, &c, 1), 1);
  s->read_calls++;
  CHECK_EQ(evl_remove_reader(loop, fd), 1);
}

static void embed_timer(evl_loop *loop, void *arg) {
  embed_state *s = (embed_state *)arg;
  (void)loop;
  s->timer_fire = test_now();
  s->timer_calls++;
}

TEST(loop_driven_from_an_outer_poll) {
  evl_loop *loop = test_open();
  const char *name = evl_backend_name(loop);
  evl_fd bfd = evl_backend_fd(loop);
  embed_state s;
  int sv[2], iterations;
  memset(&s, 0, sizeof s);
  CHECK(name != NULL);
  if (strcmp(name, "epoll") == 0 || strcmp(name, "kqueue") == 0) {
    CHECK(bfd >= 0);
#ifdef EVFILT_LIBKQUEUE
    printf("note: libkqueue's kqueue fd cannot be polled; checking only the "
           "timeout path\n");
    bfd = -1;
#endif
  } else if (strcmp(name, "iocp") == 0) {
    CHECK(bfd != -1); /* the port's HANDLE */
    printf("note: iocp's port cannot be polled; checking the timeout path\n");
  } else {
    CHECK(bfd == -1);
    printf("note: %s has no backend fd; checking only the timeout path\n",
           name);
  }
  CHECK_EQ(test_socketpair(sv), 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], embed_reader, &s), 0);
  s.timer_sched = test_now();
  CHECK(evl_call_later(loop, 0.03, embed_timer, &s) > 0);
  CHECK_EQ(test_send(sv[1], "x", 1), 1);
  for (iterations = 0; iterations < 500; iterations++) {
    double to;
    int ms;
    if (s.read_calls && s.timer_calls)
      break;
    to = evl_next_timeout(loop);
    ms = to < 0 ? 1000 : (int)(to * 1000.0) + 1;
    if (ms > 1000)
      ms = 1000;
    CHECK(host_wait(strcmp(name, "iocp") != 0 ? bfd : -1, ms) >= 0);
    CHECK(evl_run_once(loop, 0) >= 0);
  }
  CHECK_EQ(s.read_calls, 1);
  CHECK_EQ(s.timer_calls, 1);
  CHECK(s.timer_fire - s.timer_sched >= 0.03 - 1e-6);
  /* Nothing left: the host would sleep forever. */
  CHECK(evl_next_timeout(loop) == -1.0);
  test_close(loop);
  test_closesocket(sv[0]);
  test_closesocket(sv[1]);
}

#ifndef _WIN32
/* The loop's backend fd when a host can poll it; else (none, or
   libkqueue's) says why, closes the loop and returns -1. */
static int pollable_backend_fd(evl_loop *loop) {
  evl_fd bfd = evl_backend_fd(loop);
  if (bfd < 0) {
    printf("note: %s has no backend fd; nothing to check\n",
           evl_backend_name(loop));
    CHECK(bfd == -1);
    test_close(loop);
    return -1;
  }
#ifdef EVFILT_LIBKQUEUE
  printf("skipped: libkqueue's kqueue fd cannot be polled\n");
  test_close(loop);
  return -1;
#else
  return (int)bfd;
#endif
}

TEST(backend_fd_becomes_readable_when_io_is_ready) {
  evl_loop *loop = test_open();
  int bfd = pollable_backend_fd(loop);
  embed_state s;
  struct pollfd pfd;
  int sv[2];
  if (bfd < 0)
    return;
  memset(&s, 0, sizeof s);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  CHECK_EQ(evl_add_reader(loop, sv[0], embed_reader, &s), 0);
  pfd.fd = bfd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  CHECK_EQ(poll(&pfd, 1, 0), 0); /* nothing to do yet */
  CHECK_EQ(write(sv[1], "x", 1), 1);
  CHECK_EQ(poll(&pfd, 1, 2000), 1);
  CHECK(pfd.revents & POLLIN);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(s.read_calls, 1);
  pfd.revents = 0;
  CHECK_EQ(poll(&pfd, 1, 0), 0); /* handled: quiet again */
  test_close(loop);
  close(sv[0]);
  close(sv[1]);
}

TEST(backend_fd_becomes_readable_on_a_threadsafe_call) {
  evl_loop *loop = test_open();
  int bfd = pollable_backend_fd(loop);
  struct pollfd pfd;
  int ran = 0;
  if (bfd < 0)
    return;
  pfd.fd = bfd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  CHECK_EQ(poll(&pfd, 1, 0), 0);
  /* A host sleeping on the fd must wake for a cross-thread callback. */
  CHECK_EQ(evl_call_soon_threadsafe(loop, test_count_cb, &ran), 0);
  CHECK_EQ(poll(&pfd, 1, 2000), 1);
  CHECK(pfd.revents & POLLIN);
  /* The wake-up is consumed by one iteration; the callback runs then or at
     the next one. */
  evl_run_once(loop, 0);
  if (!ran)
    evl_run_once(loop, 0);
  CHECK_EQ(ran, 1);
  pfd.revents = 0;
  CHECK_EQ(poll(&pfd, 1, 0), 0);
  test_close(loop);
}
#else
/* Windows: iocp's backend fd is its completion port (a HANDLE that
   GetQueuedCompletionStatus accepts: an empty port times out instead of
   failing with ERROR_INVALID_HANDLE); select has none. */
TEST(backend_fd_is_the_completion_port_on_iocp) {
  evl_loop *loop = test_open();
  evl_fd bfd = evl_backend_fd(loop);
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  OVERLAPPED *ov = NULL;
  if (strcmp(evl_backend_name(loop), "iocp") != 0) {
    CHECK(bfd == -1);
    test_close(loop);
    return;
  }
  CHECK(bfd != -1);
  CHECK(
      !GetQueuedCompletionStatus((HANDLE)(intptr_t)bfd, &bytes, &key, &ov, 0));
  CHECK_EQ(GetLastError(), WAIT_TIMEOUT);
  CHECK(ov == NULL);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK(evl_backend_fd(loop) == -1); /* closed: no port any more */
  test_close(loop);
}
#endif

TESTS_BEGIN
T(next_timeout_reflects_what_is_scheduled)
T(next_timeout_is_zero_for_an_expired_timer)
T(run_once_zero_does_not_block)
T(run_once_with_max_wait_waits_when_nothing_is_ready)
T(run_once_max_wait_is_cut_short_by_a_nearer_timer)
T(loop_driven_from_an_outer_poll)
T_POSIX(backend_fd_becomes_readable_when_io_is_ready,
        "an IOCP port cannot be polled without taking its packets")
T_POSIX(backend_fd_becomes_readable_on_a_threadsafe_call,
        "an IOCP port cannot be polled without taking its packets")
#ifdef _WIN32
T(backend_fd_is_the_completion_port_on_iocp)
#endif
TESTS_END
