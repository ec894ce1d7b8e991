/* Bad input never crashes and never breaks the loop: NULL callbacks, bad
   loop configurations, bogus handles, fds that were never watched. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

/* Proves the loop still works: a call_soon runs in the next iteration. */
static void check_loop_works(evl_loop *loop) {
  int ran = 0;
  CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran, 1);
}

/* Proves run_forever + stop still work. */
static void check_run_forever_works(evl_loop *loop) {
  int ran = 0, stops = 0;
  CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  CHECK(evl_call_soon(loop, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(ran, 1);
  CHECK_EQ(stops, 1);
}

TEST(null_callbacks_are_einval) {
  evl_loop *loop = test_open();
  int x = 0;
  CHECK_EQ(evl_call_soon(loop, NULL, &x), EVL_EINVAL);
  check_loop_works(loop);
  CHECK_EQ(evl_call_later(loop, 0.001, NULL, &x), EVL_EINVAL);
  check_loop_works(loop);
  CHECK_EQ(evl_call_at(loop, evl_time(loop), NULL, &x), EVL_EINVAL);
  check_loop_works(loop);
  /* The plain functions behind the call-site macros too. */
  CHECK_EQ((evl_call_soon)(loop, NULL, &x), EVL_EINVAL);
  CHECK_EQ((evl_call_later)(loop, 0.0, NULL, &x), EVL_EINVAL);
  CHECK_EQ((evl_call_at)(loop, evl_time(loop), NULL, &x), EVL_EINVAL);
  CHECK(evl_next_timeout(loop) == -1.0); /* nothing was scheduled */
  check_run_forever_works(loop);
  test_close(loop);
}

TEST(loop_new_without_out_pointer_is_einval) {
  evl_loop_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = test_backend();
  CHECK_EQ(evl_loop_new(NULL, &cfg), EVL_EINVAL);
  CHECK_EQ(evl_loop_new(NULL, NULL), EVL_EINVAL);
}

TEST(loop_new_with_null_config_uses_defaults) {
  evl_loop *loop = NULL;
  CHECK_EQ(evl_loop_new(&loop, NULL), 0);
  CHECK(loop != NULL);
  check_run_forever_works(loop);
  test_close(loop);
}

static void expect_backend_refused(int backend, int want) {
  evl_loop *loop = NULL;
  evl_loop_config cfg;
  int rc;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = (evl_backend)backend;
  rc = evl_loop_new(&loop, &cfg);
  if (rc == 0)
    fprintf(stderr, "  backend %d was accepted as %s\n", backend,
            loop ? evl_backend_name(loop) : "(null)");
  CHECK(rc < 0);
  if (want)
    CHECK_EQ(rc, want);
}

TEST(unknown_or_missing_backends_are_refused) {
  evl_loop *loop;
  expect_backend_refused(99, 0);
  expect_backend_refused(-1, 0);
#ifdef _WIN32
  expect_backend_refused(EVL_BACKEND_EPOLL, EVL_ENOTSUP);
  expect_backend_refused(EVL_BACKEND_POLL, EVL_ENOTSUP);
#else
  expect_backend_refused(EVL_BACKEND_IOCP, EVL_ENOTSUP);
#endif
#if (defined(__linux__) || defined(_WIN32)) && !defined(EVLOOP_BACKEND_KQUEUE)
  expect_backend_refused(EVL_BACKEND_KQUEUE, 0); /* not built in */
#else
  { /* macOS and the BSDs have it, libkqueue builds too: it is kqueue */
    evl_loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.backend = EVL_BACKEND_KQUEUE;
    loop = NULL;
    CHECK_EQ(evl_loop_new(&loop, &cfg), 0);
    CHECK(strcmp(evl_backend_name(loop), "kqueue") == 0);
    test_close(loop);
  }
#endif
  /* A good loop can still be made afterwards. */
  loop = test_open();
  check_run_forever_works(loop);
  test_close(loop);
}

TEST(bogus_handles_are_harmless) {
  static const evl_handle bogus[] = {0,
                                     -5,
                                     -1,
                                     1,
                                     2,
                                     12345,
                                     (evl_handle)0x7fff123456789abcLL,
                                     INT64_MAX,
                                     INT64_MIN,
                                     (evl_handle)0x100000000LL};
  evl_loop *loop = test_open();
  int ran = 0;
  size_t i;
  evl_handle real;
  /* A real pending callback must survive all of it. */
  real = evl_call_soon(loop, test_count_cb, &ran);
  CHECK(real > 0);
  for (i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
    if (bogus[i] == real)
      continue;
    CHECK_EQ(evl_handle_cancel(loop, bogus[i]), 0);
    CHECK_EQ(evl_handle_cancelled(loop, bogus[i]), 0);
    CHECK(evl_handle_when(loop, bogus[i]) == -1.0);
  }
  CHECK_EQ(evl_handle_cancelled(loop, real), 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(ran, 1);
  check_loop_works(loop);
  check_run_forever_works(loop);
  test_close(loop);
}

TEST(removing_unwatched_fds_is_harmless) {
  evl_loop *loop = test_open();
  int p[2];
  CHECK_EQ(test_pipe(p), 0);
  CHECK_EQ(evl_remove_reader(loop, p[0]), 0);
  CHECK_EQ(evl_remove_writer(loop, p[1]), 0);
  /* Out-of-range fds: no watcher, no crash (0 or an error code). */
  CHECK(evl_remove_reader(loop, -1) <= 0);
  CHECK(evl_remove_writer(loop, -1) <= 0);
  CHECK(evl_remove_reader(loop, 100000) <= 0);
  CHECK(evl_remove_writer(loop, 1 << 30) <= 0);
  check_loop_works(loop);
  check_run_forever_works(loop);
  test_close(loop);
  test_pipe_close(p[0]);
  test_pipe_close(p[1]);
}

TEST(run_until_complete_refuses_null_or_foreign_futures) {
  evl_loop *loop = test_open(), *other = test_open();
  evl_future *foreign = evl_future_new(other);
  CHECK(foreign != NULL);
  CHECK(evl_run_until_complete(loop, NULL) < 0);
  check_loop_works(loop);
  CHECK(evl_run_until_complete(loop, foreign) < 0);
  CHECK(!evl_future_done(foreign));
  check_loop_works(loop);
  check_run_forever_works(loop);
  check_run_forever_works(other);
  evl_future_release(foreign);
  test_close(other);
  test_close(loop);
}

TEST(stop_and_run_once_on_an_idle_loop) {
  evl_loop *loop = test_open();
  int chain = 0;
  /* Nothing scheduled: run_once(0) returns 0 at once. */
  CHECK_EQ(evl_run_once(loop, 0), 0);
  /* stop twice before running still means one iteration. */
  evl_stop(loop);
  evl_stop(loop);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK(!evl_loop_is_running(loop));
  /* The stop request was used up: the next run goes on until stopped. */
  CHECK(evl_call_soon(loop, test_chain_cb, &chain) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(chain, 3);
  check_loop_works(loop);
  test_close(loop);
}

TEST(freeing_a_fresh_or_closed_loop_is_fine) {
  evl_loop *loop = test_open();
  test_close(loop);
  loop = test_open();
  CHECK_EQ(evl_loop_close(loop), 0);
  test_close(loop);
}

TESTS_BEGIN
T(null_callbacks_are_einval)
T(loop_new_without_out_pointer_is_einval)
T(loop_new_with_null_config_uses_defaults)
T(unknown_or_missing_backends_are_refused)
T(bogus_handles_are_harmless)
T(removing_unwatched_fds_is_harmless)
T(run_until_complete_refuses_null_or_foreign_futures)
T(stop_and_run_once_on_an_idle_loop)
T(freeing_a_fresh_or_closed_loop_is_fine)
TESTS_END
