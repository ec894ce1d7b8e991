/* Handles that do not keep the loop alive (the *_set_ref functions),
   evl_loop_alive and evl_run_alive (libuv's UV_RUN_DEFAULT); evl_run_forever
   keeps asyncio's semantics. */
#include "test.h"

#include "core_test.h"
#include "net_test.h"

static int g_count; /* test_count_cb's */

TEST(empty_loop_is_not_alive) {
  evl_loop *loop = test_open();
  double t0 = test_now();
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK(test_now() - t0 < 1.0);
  CHECK_EQ(evl_loop_alive(NULL), 0);
  CHECK_EQ(evl_run_alive(NULL), EVL_EINVAL);
  test_close(loop);
}

/* A timer keeps the loop alive until it ran; an unreferenced one does not
   (and does not run); ref 1 counts it again. */
TEST(timers) {
  evl_loop *loop = test_open();
  evl_handle h;
  g_count = 0;
  CHECK(evl_call_later(loop, 0.05, test_count_cb, &g_count) > 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(g_count, 1);
  h = evl_call_later(loop, 10.0, test_count_cb, &g_count);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_handle_set_ref(loop, h, 0), 0);
  CHECK_EQ(evl_handle_set_ref(loop, h, 0), 0); /* idempotent */
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(g_count, 1);
  CHECK_EQ(evl_handle_set_ref(loop, h, 1), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_handle_set_ref(loop, h, 0), 0);
  /* cancelling an unreferenced timer keeps the count right */
  CHECK_EQ(evl_handle_cancel(loop, h), 1);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_handle_set_ref(loop, h, 1), EVL_EINVAL);
  CHECK(evl_call_later(loop, 10.0, test_count_cb, &g_count) > 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_handle_set_ref(loop, 12345, 0), EVL_EINVAL);
  CHECK_EQ(evl_handle_set_ref(NULL, h, 0), EVL_EINVAL);
  test_close(loop);
}

/* An unreferenced repeating timer (a heartbeat) runs while something else
   keeps the loop alive, and the loop returns once that is done. */
TEST(unreferenced_repeating_timer) {
  evl_loop *loop = test_open();
  evl_handle tick = evl_call_every(loop, 0.01, test_count_cb, &g_count);
  g_count = 0;
  CHECK(tick > 0);
  CHECK_EQ(evl_handle_set_ref(loop, tick, 0), 0);
  CHECK(evl_call_later(loop, 0.2, test_stop_cb, NULL) > 0);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK(g_count >= 2); /* (wine's IOCP waits are coarse) */
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK(evl_handle_when(loop, tick) > 0); /* still scheduled */
  test_close(loop);
}

/* evl_stop with referenced work left: evl_run_alive returns 1;
   evl_run_forever does not return when nothing is alive (asyncio). */
TEST(stop_and_run_forever) {
  evl_loop *loop = test_open();
  evl_handle h;
  double t0;
  CHECK(evl_call_later(loop, 10.0, test_count_cb, &g_count) > 0);
  CHECK(evl_call_soon(loop, test_stop_cb, NULL) > 0);
  CHECK_EQ(evl_run_alive(loop), 1);
  test_close(loop);
  loop = test_open();
  h = evl_call_later(loop, 0.1, test_stop_cb, NULL);
  CHECK_EQ(evl_handle_set_ref(loop, h, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  t0 = test_now();
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK(test_now() - t0 >= 0.09);
  test_close(loop);
}

TEST(fd_watchers) {
  evl_loop *loop = test_open();
  int sv[2];
  CHECK_EQ(test_socketpair(sv), 0);
  CHECK_EQ(evl_fd_set_ref(loop, sv[0], 0), EVL_EINVAL); /* no watcher */
  CHECK_EQ(evl_add_reader(loop, sv[0], nop_fd_cb, NULL), 0);
  CHECK_EQ(evl_add_writer(loop, sv[0], nop_fd_cb, NULL), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_fd_set_ref(loop, sv[0], 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), 1);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_fd_set_ref(loop, sv[0], 1), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_fd_set_ref(loop, sv[0], 0), 0);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  CHECK_EQ(evl_fd_set_ref(loop, sv[0], 1), EVL_EINVAL);
  /* a new watcher starts referenced */
  CHECK_EQ(evl_add_reader(loop, sv[0], nop_fd_cb, NULL), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_remove_reader(loop, sv[0]), 1);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_fd_set_ref(loop, -1, 0), EVL_EINVAL);
  test_closesocket(sv[0]);
  test_closesocket(sv[1]);
  test_close(loop);
}

#ifndef EVLOOP_NO_NET
static void t_made(evl_transport *t, void *user) {
  *(evl_transport **)user = t;
}
static const evl_protocol plain_proto = {t_made, NULL, NULL, NULL, NULL,
                                         NULL,   NULL, NULL, NULL, NULL};

/* A datagram endpoint and a listening server, each unreferenced. */
TEST(transports_and_servers) {
  evl_loop *loop = test_open();
  evl_transport *t = NULL;
  evl_server *srv;
  evl_future *f;
  f = evl_create_datagram_endpoint(loop, &plain_proto, &t, "127.0.0.1", 0, NULL,
                                   0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  CHECK(t != NULL);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_transport_set_ref(t, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(evl_transport_set_ref(NULL, 0), EVL_EINVAL);
  f = evl_create_server(loop, &plain_proto, NULL, "127.0.0.1", 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_server_set_ref(srv, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_server_set_ref(srv, 1), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  evl_server_close(srv); /* a closed server no longer counts */
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(evl_server_set_ref(NULL, 0), EVL_EINVAL);
  evl_transport_close(t);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

#endif

/* Hooks: an idle hook keeps the loop alive until it removes itself; an
   unreferenced one does not. */
static int g_hook;
static void idle_ten(evl_loop *loop, void *arg) {
  (void)arg;
  if (++g_count == 10)
    CHECK_EQ(evl_hook_remove(loop, g_hook), 1);
}
TEST(hooks) {
  evl_loop *loop = test_open();
  int id;
  g_count = 0;
  g_hook = evl_hook_add(loop, EVL_HOOK_IDLE, idle_ten, NULL);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(g_count, 10);
  id = evl_hook_add(loop, EVL_HOOK_CHECK, test_count_cb, &g_count);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_hook_set_ref(loop, id, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_hook_set_ref(loop, 999, 0), EVL_EINVAL);
  test_close(loop);
}

#ifndef EVLOOP_NO_EXECUTOR
/* An executor job keeps the loop alive until its result is delivered. */
static int slow_job(void *arg, void **result) {
  (void)arg;
  test_sleep_ms(50);
  *result = NULL;
  return 0;
}
TEST(executor_job) {
  evl_loop *loop = test_open();
  evl_future *f = evl_run_in_executor(loop, NULL, slow_job, NULL, NULL);
  CHECK(f != NULL);
#ifndef EVLOOP_NO_THREADS /* (without threads the job ran inline) */
  CHECK_EQ(evl_loop_alive(loop), 1);
#endif
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK(evl_future_done(f));
  evl_future_release(f);
  test_close(loop);
}
#endif

#if !defined(_WIN32) && !defined(EVLOOP_NO_PROCESS)
TEST(signal_handlers) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_signal_set_ref(loop, SIGUSR1, 0), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, nop_signal_cb, NULL), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_signal_set_ref(loop, SIGUSR1, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  CHECK_EQ(evl_signal_set_ref(loop, SIGUSR1, 1), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, nop_signal_cb, NULL), 0);
  CHECK_EQ(evl_loop_alive(loop), 1); /* added again: referenced */
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  CHECK_EQ(evl_signal_set_ref(loop, 0, 0), EVL_EINVAL);
  CHECK_EQ(evl_signal_set_ref(loop, 200, 0), EVL_EINVAL);
  test_close(loop);
}

/* A child with pipes, unreferenced: the loop does not wait for it. */
static void p_made(evl_subprocess *p, void *user) {
  *(evl_subprocess **)user = p;
}
static const evl_subprocess_protocol sub_proto = {p_made, NULL, NULL, NULL,
                                                  NULL};
TEST(subprocess) {
  evl_loop *loop = test_open();
  evl_subprocess *p = NULL;
  evl_future *f = evl_subprocess_shell(loop, &sub_proto, &p, "sleep 5", NULL);
  double t0;
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  CHECK(p != NULL);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_subprocess_set_ref(p, 0), 0);
  CHECK_EQ(evl_loop_alive(loop), 0);
  t0 = test_now();
  CHECK_EQ(evl_run_alive(loop), 0);
  CHECK(test_now() - t0 < 2.0);
  CHECK_EQ(evl_subprocess_set_ref(p, 1), 0);
  CHECK_EQ(evl_loop_alive(loop), 1);
  CHECK_EQ(evl_subprocess_set_ref(NULL, 0), EVL_EINVAL);
  CHECK_EQ(evl_subprocess_kill(p), 0);
  evl_subprocess_close(p);
  CHECK_EQ(evl_run_alive(loop), 0); /* until the child is reaped */
  test_close(loop);
}
#endif

TESTS_BEGIN
T(empty_loop_is_not_alive)
T(timers)
T(unreferenced_repeating_timer)
T(stop_and_run_forever)
T(fd_watchers)
#ifndef EVLOOP_NO_NET
T(transports_and_servers)
#else
T_SKIP(transports_and_servers, "built with EVLOOP_NO_NET")
#endif
T(hooks)
#ifndef EVLOOP_NO_EXECUTOR
T(executor_job)
#else
T_SKIP(executor_job, "built with EVLOOP_NO_EXECUTOR")
#endif
#ifndef EVLOOP_NO_PROCESS
T_POSIX(signal_handlers, "SIGUSR1")
T_POSIX(subprocess, "sleep(1) as a child")
#else
T_SKIP(signal_handlers, "built with EVLOOP_NO_PROCESS")
T_SKIP(subprocess, "built with EVLOOP_NO_PROCESS")
#endif
TESTS_END
