/* asyncio's behaviour to the letter (issue 12): ordering, fd reuse,
   ownership and the places where evloop.h says it departs. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "net_test.h"

#ifndef EVLOOP_NO_THREADS
#ifdef _WIN32
#include <process.h>
#else
#include <pthread.h>
#endif
#endif

/* ---- call_soon and call_soon_threadsafe feed one FIFO ---------------- */

static char g_order[16];
static int g_norder;
static void note_cb(evl_loop *loop, void *arg) {
  (void)loop;
  if (g_norder < 15)
    g_order[g_norder++] = (char)(uintptr_t)arg;
}

static void schedule_both_cb(evl_loop *loop, void *arg) {
  (void)arg;
  CHECK_EQ(evl_call_soon_threadsafe(loop, note_cb, (void *)(uintptr_t)'A'), 0);
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'B') > 0);
  CHECK_EQ(evl_call_soon_threadsafe(loop, note_cb, (void *)(uintptr_t)'C'), 0);
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'D') > 0);
}

TEST(threadsafe_then_soon_from_loop_thread_run_in_order) {
  evl_loop *loop = test_loop();
  g_norder = 0;
  CHECK(evl_call_soon(loop, schedule_both_cb, NULL) > 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  g_order[g_norder] = 0;
  CHECK(strcmp(g_order, "ABCD") == 0);
  evl_loop_close(loop);
}

#ifndef EVLOOP_NO_THREADS
#ifdef _WIN32
static unsigned __stdcall post_a_main(void *arg) {
  evl_call_soon_threadsafe((evl_loop *)arg, note_cb, (void *)(uintptr_t)'A');
  return 0;
}
#else
static void *post_a_main(void *arg) {
  evl_call_soon_threadsafe((evl_loop *)arg, note_cb, (void *)(uintptr_t)'A');
  return NULL;
}
#endif

/* The other thread's call_soon_threadsafe happens before the join, the
   join before this call_soon: A must run first. */
static void join_then_soon_cb(evl_loop *loop, void *arg) {
#ifdef _WIN32
  HANDLE th = (HANDLE)_beginthreadex(NULL, 0, post_a_main, loop, 0, NULL);
  (void)arg;
  CHECK(th != NULL);
  WaitForSingleObject(th, INFINITE);
  CloseHandle(th);
#else
  pthread_t th;
  (void)arg;
  CHECK_EQ(pthread_create(&th, NULL, post_a_main, loop), 0);
  CHECK_EQ(pthread_join(th, NULL), 0);
#endif
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'B') > 0);
}

TEST(threadsafe_from_other_thread_runs_before_later_soon) {
  evl_loop *loop = test_loop();
  int i;
  g_norder = 0;
  CHECK(evl_call_soon(loop, join_then_soon_cb, NULL) > 0);
  for (i = 0; i < 5 && g_norder < 2; i++)
    evl_run_once(loop, 0.05);
  g_order[g_norder] = 0;
  CHECK(strcmp(g_order, "AB") == 0);
  evl_loop_close(loop);
}
#endif

TESTS_BEGIN
T(threadsafe_then_soon_from_loop_thread_run_in_order)
#ifndef EVLOOP_NO_THREADS
T(threadsafe_from_other_thread_runs_before_later_soon)
#endif
TESTS_END
