/* The loop itself: callback order, iterations, stop, run_until_complete,
   running/closed state, re-entrance, evl_run, backends and error names. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "core_test.h"

#include <errno.h>
#include <stdarg.h>
#include <time.h>

/* A log of which callbacks ran, in order. */
static int g_log[256];
static int g_nlog;
static int g_ids[256];

static void reset_log(void) {
  int i;
  g_nlog = 0;
  for (i = 0; i < 256; i++)
    g_ids[i] = i;
}

static void log_cb(evl_loop *loop, void *arg) {
  (void)loop;
  if (g_nlog < 256)
    g_log[g_nlog++] = *(int *)arg;
}

/* The log holds exactly the n ids that follow. */
static void check_log(int n, ...) {
  va_list ap;
  int i;
  CHECK_EQ(g_nlog, n);
  va_start(ap, n);
  for (i = 0; i < n; i++)
    CHECK_EQ(g_log[i], va_arg(ap, int));
  va_end(ap);
}

/* evl_run_forever with a stop queued: it runs one iteration and returns. */
static void run_forever_to_a_stop(evl_loop *loop) {
  int stops = 0;
  CHECK(evl_call_soon(loop, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(stops, 1);
}

/* A run after a stop must go on until the next stop: the stop request was
   used up by the run it ended. */
static void check_runs_until_next_stop(evl_loop *loop) {
  int n = 0;
  CHECK(evl_call_soon(loop, test_chain_cb, &n) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(n, 3);
}

/* Logs its id, then schedules id + 100 with call_soon. */
static void log_and_schedule_cb(evl_loop *loop, void *arg) {
  int id = *(int *)arg;
  log_cb(loop, arg);
  CHECK(evl_call_soon(loop, log_cb, &g_ids[id + 100]) > 0);
}

/* Logs its id, stops the loop and schedules id + 100. */
static void log_stop_schedule_cb(evl_loop *loop, void *arg) {
  log_and_schedule_cb(loop, arg);
  evl_stop(loop);
}

/* Resets the log and schedules ids 1..n: each logs its id and schedules
   id + 100; the one numbered stopper (0: none) also stops the loop. */
static void schedule_ids(evl_loop *loop, int n, int stopper) {
  int id;
  reset_log();
  for (id = 1; id <= n; id++)
    CHECK(evl_call_soon(
              loop, id == stopper ? log_stop_schedule_cb : log_and_schedule_cb,
              &g_ids[id]) > 0);
}

TEST(callbacks_run_in_fifo_order) {
  evl_loop *loop = test_open();
  int i;
  reset_log();
  for (i = 0; i < 100; i++)
    CHECK(evl_call_soon(loop, log_cb, &g_ids[i]) > 0);
  run_forever_to_a_stop(loop);
  CHECK_EQ(g_nlog, 100);
  for (i = 0; i < 100; i++)
    CHECK_EQ(g_log[i], i);
  test_close(loop);
}

TEST(callback_scheduled_during_iteration_runs_next_iteration) {
  evl_loop *loop = test_open();
  schedule_ids(loop, 2, 0);
  CHECK_EQ(evl_run_once(loop, 0), 2);
  check_log(2, 1, 2);
  CHECK_EQ(evl_run_once(loop, 0), 2);
  check_log(4, 1, 2, 101, 102);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK_EQ(g_nlog, 4);
  test_close(loop);
}

TEST(stop_before_run_forever_runs_exactly_one_iteration) {
  evl_loop *loop = test_open();
  schedule_ids(loop, 2, 0);
  evl_stop(loop);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK(!evl_loop_is_running(loop));
  check_log(2, 1, 2);
  /* The callbacks they scheduled are still pending and run next time. */
  run_forever_to_a_stop(loop);
  check_log(4, 1, 2, 101, 102);
  check_runs_until_next_stop(loop);
  test_close(loop);
}

TEST(stop_inside_callback_finishes_the_iteration_then_returns) {
  evl_loop *loop = test_open();
  schedule_ids(loop, 3, 2);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK(!evl_loop_is_running(loop));
  check_log(3, 1, 2, 3);
  /* The loop runs again; what the last iteration scheduled is pending. */
  run_forever_to_a_stop(loop);
  check_log(6, 1, 2, 3, 101, 102, 103);
  check_runs_until_next_stop(loop);
  test_close(loop);
}

static void never_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (*(int *)arg)++;
}

TEST(run_until_complete_on_done_future_returns_at_once) {
  evl_loop *loop = test_open();
  evl_future *fut = evl_future_new(loop);
  static int value = 42;
  int fired = 0;
  double t0, elapsed;
  CHECK(fut != NULL);
  CHECK_EQ(evl_future_set_result(fut, &value), 0);
  CHECK(evl_call_later(loop, 10.0, never_cb, &fired) > 0);
  t0 = test_now();
  CHECK_EQ(evl_run_until_complete(loop, fut), 0);
  elapsed = test_now() - t0;
  CHECK(elapsed < 1.0);
  CHECK_EQ(fired, 0);
  CHECK(evl_future_result(fut) == &value);
  CHECK(!evl_loop_is_running(loop));
  evl_future_release(fut);
  test_close(loop);
}

static void complete_later_cb(evl_loop *loop, void *arg) {
  (void)loop;
  CHECK_EQ(evl_future_set_result((evl_future *)arg, NULL), 0);
}

static void fail_cb(evl_loop *loop, void *arg) {
  (void)loop;
  CHECK_EQ(evl_future_set_error((evl_future *)arg, EVL_ECONNRESET, "boom"), 0);
}

/* run_until_complete on a future that cb completes (after `later`
   seconds, 0: call_soon; cb NULL: a future cancelled before) returns its error
   code `want`, with the future done. */
static void check_run_until_complete(evl_callback cb, double later, int want) {
  evl_loop *loop = test_open();
  evl_future *fut = evl_future_new(loop);
  CHECK(fut != NULL);
  if (cb && later > 0)
    CHECK(evl_call_later(loop, later, cb, fut) > 0);
  else if (cb)
    CHECK(evl_call_soon(loop, cb, fut) > 0);
  else
    CHECK_EQ(evl_future_cancel(fut), 1);
  CHECK_EQ(evl_run_until_complete(loop, fut), want);
  CHECK(evl_future_done(fut));
  CHECK_EQ(evl_future_error(fut), want);
  evl_future_release(fut);
  test_close(loop);
}

TEST(run_until_complete_waits_for_the_future) {
  check_run_until_complete(complete_later_cb, 0.02, 0);
}

TEST(run_until_complete_on_failing_future_returns_its_error) {
  check_run_until_complete(fail_cb, 0, EVL_ECONNRESET);
}

TEST(run_until_complete_on_cancelled_future_returns_ecanceled) {
  check_run_until_complete(NULL, 0, EVL_ECANCELED);
}

TEST(run_until_complete_stopped_first_returns_estopped) {
  evl_loop *loop = test_open();
  evl_future *fut = evl_future_new(loop);
  int stops = 0;
  CHECK(fut != NULL);
  CHECK(evl_call_soon(loop, test_stop_cb, &stops) > 0);
  CHECK_EQ(evl_run_until_complete(loop, fut), EVL_ESTOPPED);
  CHECK_EQ(stops, 1);
  CHECK(!evl_future_done(fut));
  CHECK(!evl_loop_is_running(loop));
  /* The loop still works and the future can still complete. */
  CHECK(evl_call_soon(loop, complete_later_cb, fut) > 0);
  CHECK_EQ(evl_run_until_complete(loop, fut), 0);
  check_runs_until_next_stop(loop);
  evl_future_release(fut);
  test_close(loop);
}

static int g_running_inside = -1;
static void record_running_cb(evl_loop *loop, void *arg) {
  g_running_inside = evl_loop_is_running(loop);
  if (arg)
    evl_stop(loop);
}

TEST(is_running_is_true_only_inside_the_loop) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_loop_is_running(loop), 0);
  CHECK(evl_call_soon(loop, record_running_cb, loop) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_running_inside, 1);
  CHECK_EQ(evl_loop_is_running(loop), 0);
  /* evl_run_once runs the loop too. */
  g_running_inside = -1;
  CHECK(evl_call_soon(loop, record_running_cb, NULL) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  CHECK_EQ(g_running_inside, 1);
  CHECK_EQ(evl_loop_is_running(loop), 0);
  check_runs_until_next_stop(loop);
  test_close(loop);
}

TEST(close_is_idempotent_and_is_closed_reports_it) {
  evl_loop *loop = test_open();
  int fired = 0;
  CHECK_EQ(evl_loop_is_closed(loop), 0);
  CHECK(evl_call_soon(loop, never_cb, &fired) > 0);
  CHECK(evl_call_later(loop, 0.01, never_cb, &fired) > 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  CHECK_EQ(fired, 0); /* pending callbacks are discarded, not run */
  test_close(loop);
}

static int g_close_rc = 1;
static void close_while_running_cb(evl_loop *loop, void *arg) {
  (void)arg;
  g_close_rc = evl_loop_close(loop);
  CHECK_EQ(evl_loop_is_closed(loop), 0);
  evl_stop(loop);
}

TEST(close_while_running_returns_erunning) {
  evl_loop *loop = test_open();
  CHECK(evl_call_soon(loop, close_while_running_cb, NULL) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_close_rc, EVL_ERUNNING);
  CHECK_EQ(evl_loop_is_closed(loop), 0);
  /* It still runs after the refused close. */
  run_forever_to_a_stop(loop);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_loop_is_closed(loop), 1);
  test_close(loop);
}

static int g_nested_rc = 1;
static int g_after_nested = 0;
static void after_nested_cb(evl_loop *loop, void *arg) {
  (void)arg;
  g_after_nested++;
  evl_stop(loop);
}
static int g_nested_once_rc = 1;
static void nested_run_forever_cb(evl_loop *loop, void *arg) {
  (void)arg;
  g_nested_once_rc = evl_run_once(loop, 0);
  g_nested_rc = evl_run_forever(loop);
  CHECK(evl_loop_is_running(loop));
  CHECK(evl_call_soon(loop, after_nested_cb, NULL) > 0);
}

/* Runs the loop until nested_cb has tried to run it again: that nested
   run returned EVL_ERUNNING, and the loop went on (after_nested_cb). */
static void check_nested_run_refused(evl_loop *loop, evl_callback nested_cb) {
  CHECK(evl_call_soon(loop, nested_cb, NULL) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(g_nested_rc, EVL_ERUNNING);
  CHECK_EQ(g_after_nested, 1);
}

TEST(run_forever_or_run_once_reentered_return_erunning) {
  evl_loop *loop = test_open();
  check_nested_run_refused(loop, nested_run_forever_cb);
  CHECK_EQ(g_nested_once_rc, EVL_ERUNNING);
  CHECK(!evl_loop_is_running(loop));
  check_runs_until_next_stop(loop);
  test_close(loop);
}

static void nested_run_until_complete_cb(evl_loop *loop, void *arg) {
  evl_future *fut = evl_future_new(loop);
  (void)arg;
  CHECK(fut != NULL);
  g_nested_rc = evl_run_until_complete(loop, fut);
  CHECK(evl_loop_is_running(loop));
  evl_future_release(fut);
  CHECK(evl_call_soon(loop, after_nested_cb, NULL) > 0);
}

TEST(run_until_complete_reentered_returns_erunning) {
  evl_loop *loop = test_open();
  check_nested_run_refused(loop, nested_run_until_complete_cb);
  test_close(loop);
}

TEST(calls_on_a_closed_loop_return_eclosed) {
  evl_loop *loop = test_open();
  evl_future *fut = evl_future_new(loop);
  int fired = 0, p[2];
  CHECK(fut != NULL);
  CHECK_EQ(test_pipe(p), 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_call_soon(loop, never_cb, &fired), EVL_ECLOSED);
  CHECK_EQ(evl_call_later(loop, 0.01, never_cb, &fired), EVL_ECLOSED);
  CHECK_EQ(evl_call_at(loop, evl_time(loop) + 0.01, never_cb, &fired),
           EVL_ECLOSED);
  CHECK_EQ(evl_run_forever(loop), EVL_ECLOSED);
  CHECK_EQ(evl_run_until_complete(loop, fut), EVL_ECLOSED);
  CHECK_EQ(evl_run_once(loop, 0), EVL_ECLOSED);
  CHECK(evl_future_new(loop) == NULL);
  CHECK_EQ(evl_add_reader(loop, p[0], nop_fd_cb, NULL), EVL_ECLOSED);
  CHECK_EQ(evl_add_writer(loop, p[1], nop_fd_cb, NULL), EVL_ECLOSED);
  CHECK_EQ(fired, 0);
  evl_future_release(fut);
  test_close(loop);
  test_pipe_close(p[0]);
  test_pipe_close(p[1]);
}

typedef struct {
  int steps;
} run_state;
static int g_task_value = 7;

static void sleeping_task(evl_task *t, void *state) {
  run_state *s = (run_state *)state;
  EVL_ASYNC_BEGIN(t);
  for (s->steps = 0; s->steps < 3; s->steps++)
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.005, NULL));
  EVL_ASYNC_RETURN(t, &g_task_value);
  EVL_ASYNC_END(t);
}

static void failing_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
  EVL_ASYNC_FAIL(t, EVL_EINVAL, "x");
  EVL_ASYNC_END(t);
}

TEST(evl_run_returns_the_task_result) {
  run_state s = {0};
  void *result = NULL;
  evl_loop_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = test_backend();
  CHECK_EQ(evl_run(sleeping_task, &s, sizeof s, &cfg, &result), 0);
  CHECK(result == &g_task_value);
  CHECK_EQ(s.steps, 0); /* the task worked on its own copy */
  /* state_size 0: the state is passed through as is. */
  result = NULL;
  CHECK_EQ(evl_run(sleeping_task, &s, 0, &cfg, &result), 0);
  CHECK(result == &g_task_value);
  CHECK_EQ(s.steps, 3);
  /* cfg and result may be NULL. */
  CHECK_EQ(evl_run(sleeping_task, &s, sizeof s, NULL, NULL), 0);
}

TEST(evl_run_returns_the_task_error) {
  void *result = &g_task_value;
  CHECK_EQ(evl_run(failing_task, NULL, 0, NULL, &result), EVL_EINVAL);
  CHECK(result == NULL || result == &g_task_value);
}

static int backend_name_is(const char *name, const char *want) {
  return name != NULL && strcmp(name, want) == 0;
}

/* The same backend: names equal up to the first space ("poll (...)"). */
static int same_backend(const char *a, const char *b) {
  size_t la = strcspn(a, " "), lb = strcspn(b, " ");
  return la == lb && strncmp(a, b, la) == 0;
}

TEST(backend_name_matches_the_requested_backend) {
  static const struct {
    evl_backend backend;
    const char *name;
  } backends[] = {{EVL_BACKEND_SELECT, "select"},
                  {EVL_BACKEND_POLL, "poll"},
                  {EVL_BACKEND_EPOLL, "epoll"},
                  {EVL_BACKEND_KQUEUE, "kqueue"},
                  {EVL_BACKEND_IOCP, "iocp"}};
  evl_loop *loop = test_open();
  const char *def = evl_backend_name(loop);
  int i, ok = 0, default_seen = 0;
  CHECK(def != NULL);
  /* "poll" may say more after a fallback from epoll or kqueue. */
  CHECK(backend_name_is(def, "select") || !strncmp(def, "poll", 4) ||
        backend_name_is(def, "epoll") || backend_name_is(def, "kqueue") ||
        backend_name_is(def, "iocp"));
  test_close(loop);
  for (i = 0; i < (int)(sizeof backends / sizeof backends[0]); i++) {
    evl_loop *l = NULL;
    evl_loop_config cfg;
    const char *name;
    int rc;
    memset(&cfg, 0, sizeof cfg);
    cfg.backend = backends[i].backend;
    rc = evl_loop_new(&l, &cfg);
    if (rc != 0) {
      CHECK(rc < 0);
      CHECK(evl_err_name(rc) != NULL);
      continue;
    }
    CHECK(l != NULL);
    name = evl_backend_name(l);
    /* epoll and kqueue may fall back to poll, and then say so. */
    if (backends[i].backend == EVL_BACKEND_EPOLL ||
        backends[i].backend == EVL_BACKEND_KQUEUE)
      CHECK(backend_name_is(name, backends[i].name) ||
            (name != NULL && !strncmp(name, "poll", 4)));
    else
      CHECK(backend_name_is(name, backends[i].name));
    if (same_backend(name, def))
      default_seen = 1;
    ok++;
    test_close(l);
  }
  CHECK(ok >= 1);
  CHECK(default_seen);
  /* A select-only build (its default is select) has nothing else. */
  loop = NULL;
  CHECK_EQ(evl_loop_new(&loop, NULL), 0);
  if (backend_name_is(evl_backend_name(loop), "select"))
    CHECK_EQ(ok, 1);
  test_close(loop);
}

TEST(error_names_messages_and_errno_translation) {
  const char *unknown;
  CHECK(strcmp(evl_err_name(EVL_EINVAL), "EINVAL") == 0);
  CHECK(strcmp(evl_err_name(EVL_ECLOSED), "ECLOSED") == 0);
  CHECK(strcmp(evl_err_name(EVL_EAI_NONAME), "EAI_NONAME") == 0);
  CHECK(evl_strerror(EVL_EINVAL) != NULL);
  CHECK(strlen(evl_strerror(EVL_EINVAL)) > 0);
  CHECK(strcmp(evl_strerror(EVL_EINVAL), "invalid argument") == 0);
  CHECK(strcmp(evl_strerror(EVL_ECLOSED), "event loop is closed") == 0);
  CHECK(strcmp(evl_strerror(EVL_ESTOPPED), evl_strerror(EVL_ERUNNING)) != 0);
  unknown = evl_strerror(-12345);
  CHECK(unknown != NULL);
  CHECK(evl_err_name(-12345) != NULL);
  CHECK(evl_strerror(12345) != NULL);
  CHECK(evl_strerror(0) != NULL);
  CHECK(evl_err_name(0) != NULL);
  CHECK_EQ(evl_translate_sys_error(EBADF), EVL_EBADF);
  CHECK_EQ(evl_translate_sys_error(ECONNRESET), EVL_ECONNRESET);
  CHECK_EQ(evl_translate_sys_error(EINVAL), EVL_EINVAL);
  CHECK_EQ(evl_translate_sys_error(ETIMEDOUT), EVL_ETIMEDOUT);
  CHECK_EQ(evl_translate_sys_error(9999), EVL_EUNKNOWN);
}

TESTS_BEGIN
T(callbacks_run_in_fifo_order)
T(callback_scheduled_during_iteration_runs_next_iteration)
T(stop_before_run_forever_runs_exactly_one_iteration)
T(stop_inside_callback_finishes_the_iteration_then_returns)
T(run_until_complete_on_done_future_returns_at_once)
T(run_until_complete_waits_for_the_future)
T(run_until_complete_on_failing_future_returns_its_error)
T(run_until_complete_on_cancelled_future_returns_ecanceled)
T(run_until_complete_stopped_first_returns_estopped)
T(is_running_is_true_only_inside_the_loop)
T(close_is_idempotent_and_is_closed_reports_it)
T(close_while_running_returns_erunning)
T(run_forever_or_run_once_reentered_return_erunning)
T(run_until_complete_reentered_returns_erunning)
T(calls_on_a_closed_loop_return_eclosed)
T(evl_run_returns_the_task_result)
T(evl_run_returns_the_task_error)
T(backend_name_matches_the_requested_backend)
T(error_names_messages_and_errno_translation)
TESTS_END
