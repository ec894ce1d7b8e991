/* The exception handler and debug mode: slow callbacks, EVLOOP_DEBUG, the
   log hook. No threads. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------ */

typedef struct handler_rec {
  int calls;
  evl_loop *loop;
  void *arg;
  evl_context ctx;
  const evl_context *ctx_ptr;
} handler_rec;

static handler_rec g_rec;

static void rec_handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  g_rec.calls++;
  g_rec.loop = loop;
  g_rec.arg = arg;
  g_rec.ctx = *ctx;
  g_rec.ctx_ptr = ctx;
}

static void other_handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)ctx;
  (void)arg;
}

/* The log hook: keeps every message. */
#define MAX_LOG 16
typedef struct log_rec {
  int n;
  char msgs[MAX_LOG][512];
  evl_loop *loop;
} log_rec;

static void rec_log(evl_loop *loop, const char *message, void *ctx) {
  log_rec *r = (log_rec *)ctx;
  r->loop = loop;
  if (r->n < MAX_LOG) {
    strncpy(r->msgs[r->n], message ? message : "(null)", 511);
    r->msgs[r->n][511] = '\0';
  }
  r->n++;
}

/* How many logged messages contain both needles (b may be NULL). */
static int log_count(const log_rec *r, const char *a, const char *b) {
  int i, n = 0;
  for (i = 0; i < r->n && i < MAX_LOG; i++)
    if (strstr(r->msgs[i], a) && (!b || strstr(r->msgs[i], b)))
      n++;
  return n;
}

static void dump_log(const log_rec *r) {
  int i;
  for (i = 0; i < r->n && i < MAX_LOG; i++)
    fprintf(stderr, "  log[%d]: %s\n", i, r->msgs[i]);
}

static evl_loop *loop_with_log(int debug, log_rec *r) {
  evl_loop_config cfg;
  memset(&cfg, 0, sizeof cfg);
  memset(r, 0, sizeof *r);
  cfg.debug = debug;
  cfg.log = rec_log;
  cfg.log_ctx = r;
  return test_open_with(&cfg);
}

static int g_ran;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Busy-waits 100 ms. */
static void slow_busy_callback(evl_loop *loop, void *arg) {
  double t0 = now_s();
  (void)loop;
  (void)arg;
  while (now_s() - t0 < 0.1) {
  }
  g_ran++;
}

static void fast_quiet_callback(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  g_ran++;
}

/* ---- exception handler -------------------------------------------------- */

TEST(exception_handler_round_trip) {
  evl_loop *loop = test_loop();
  int a = 1;
  void *arg = &a;
  CHECK(evl_get_exception_handler(loop, &arg) == NULL); /* the default */
  evl_set_exception_handler(loop, rec_handler, &a);
  arg = NULL;
  CHECK(evl_get_exception_handler(loop, &arg) == rec_handler);
  CHECK(arg == &a);
  evl_set_exception_handler(loop, other_handler, NULL);
  arg = &a;
  CHECK(evl_get_exception_handler(loop, &arg) == other_handler);
  CHECK(arg == NULL);
  evl_set_exception_handler(loop, NULL, NULL);
  CHECK(evl_get_exception_handler(loop, &arg) == NULL);
  evl_loop_free(loop);
}

TEST(call_exception_handler_custom) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  int obj = 0, harg = 0;
  evl_context ctx;
  memset(&g_rec, 0, sizeof g_rec);
  memset(&ctx, 0, sizeof ctx);
  ctx.message = "something odd happened";
  ctx.error = EVL_ECONNRESET;
  ctx.error_message = "peer reset";
  ctx.future = f;
  ctx.handle = 42;
  ctx.object = &obj;
  evl_set_exception_handler(loop, rec_handler, &harg);
  evl_call_exception_handler(loop, &ctx);
  CHECK_EQ(g_rec.calls, 1);
  CHECK(g_rec.loop == loop);
  CHECK(g_rec.arg == &harg);
  CHECK(g_rec.ctx.message != NULL);
  CHECK(strcmp(g_rec.ctx.message, "something odd happened") == 0);
  CHECK_EQ(g_rec.ctx.error, EVL_ECONNRESET);
  CHECK(g_rec.ctx.error_message != NULL);
  CHECK(strcmp(g_rec.ctx.error_message, "peer reset") == 0);
  CHECK(g_rec.ctx.future == f);
  CHECK_EQ(g_rec.ctx.handle, 42);
  CHECK(g_rec.ctx.object == &obj);
  evl_future_release(f);
  test_close(loop);
}

/* Runs fn(loop, ctx) with stderr sent to a temporary file; returns what was
   written (static buffer). */
static char g_captured[4096];
static const char *capture_stderr(void (*fn)(evl_loop *, const evl_context *),
                                  evl_loop *loop, const evl_context *ctx) {
  FILE *tmp = tmpfile();
  int saved, n;
  CHECK(tmp != NULL);
  fflush(stderr);
  saved = dup(2);
  CHECK(saved >= 0);
  CHECK(dup2(fileno(tmp), 2) >= 0); /* MS: 0, POSIX: 2 */
  fn(loop, ctx);
  fflush(stderr);
  CHECK(dup2(saved, 2) >= 0);
  close(saved);
  rewind(tmp);
  n = (int)fread(g_captured, 1, sizeof g_captured - 1, tmp);
  g_captured[n < 0 ? 0 : n] = '\0';
  fclose(tmp);
  return g_captured;
}

TEST(default_handler_writes_stderr) {
  evl_loop *loop = test_loop();
  evl_context ctx;
  const char *out;
  memset(&ctx, 0, sizeof ctx);
  ctx.message = "unique-message-1234";
  ctx.error = EVL_EPIPE;
  out = capture_stderr(evl_call_exception_handler, loop, &ctx);
  CHECK(strstr(out, "unique-message-1234") != NULL);
  CHECK(strchr(out, '\n') != NULL);
  /* Called directly, the default handler does the same. */
  ctx.message = "another-message-5678";
  out = capture_stderr(evl_default_exception_handler, loop, &ctx);
  CHECK(strstr(out, "another-message-5678") != NULL);
  /* With a custom handler, nothing goes to stderr. */
  memset(&g_rec, 0, sizeof g_rec);
  evl_set_exception_handler(loop, rec_handler, NULL);
  ctx.message = "should-not-appear";
  out = capture_stderr(evl_call_exception_handler, loop, &ctx);
  CHECK(strstr(out, "should-not-appear") == NULL);
  CHECK_EQ(g_rec.calls, 1);
  evl_loop_free(loop);
}

/* ---- debug flag -----------------------------------------------------------
 */

TEST(get_set_debug) {
  evl_loop_config cfg;
  evl_loop *loop;
  test_unsetenv("EVLOOP_DEBUG");
  loop = test_open();
  CHECK_EQ(evl_get_debug(loop), 0);
  evl_set_debug(loop, 1);
  CHECK(evl_get_debug(loop) != 0);
  evl_set_debug(loop, 0);
  CHECK_EQ(evl_get_debug(loop), 0);
  test_close(loop);
  memset(&cfg, 0, sizeof cfg);
  cfg.debug = 1;
  loop = test_open_with(&cfg);
  CHECK(evl_get_debug(loop) != 0);
  test_close(loop);
  memset(&cfg, 0, sizeof cfg);
  cfg.debug = -1;
  loop = test_open_with(&cfg);
  CHECK_EQ(evl_get_debug(loop), 0);
  test_close(loop);
}

TEST(debug_from_environment) {
  evl_loop_config cfg;
  evl_loop *loop;
  CHECK_EQ(test_setenv("EVLOOP_DEBUG", "1"), 0);
  loop = test_open(); /* cfg.debug 0: from the environment */
  CHECK(evl_get_debug(loop) != 0);
  test_close(loop);
  memset(&cfg, 0, sizeof cfg);
  cfg.debug = -1; /* forced off */
  loop = test_open_with(&cfg);
  CHECK_EQ(evl_get_debug(loop), 0);
  test_close(loop);
  CHECK_EQ(test_unsetenv("EVLOOP_DEBUG"), 0);
  loop = test_open();
  CHECK_EQ(evl_get_debug(loop), 0);
  test_close(loop);
}

TEST(slow_callback_duration) {
  evl_loop *loop = test_open();
  double d = evl_get_slow_callback_duration(loop);
  CHECK(d > 0.0999999 && d < 0.1000001);
  evl_set_slow_callback_duration(loop, 0.05);
  d = evl_get_slow_callback_duration(loop);
  CHECK(d > 0.0499999 && d < 0.0500001);
  test_close(loop);
}

/* ---- slow callbacks ----------------------------------------------------- */

TEST(slow_callback_logged) {
  log_rec r;
  char where[64];
  int line;
  evl_loop *loop = loop_with_log(1, &r);
  g_ran = 0;
  CHECK(evl_get_debug(loop) != 0);
  evl_set_slow_callback_duration(loop, 0.05);
  line = __LINE__ + 1;
  CHECK(evl_call_soon(loop, slow_busy_callback, NULL) > 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_ran, 1);
  sprintf(where, "t_debug.c:%d", line);
  if (log_count(&r, "slow_busy_callback", where) < 1) {
    fprintf(stderr, "  wanted slow_busy_callback and %s\n", where);
    dump_log(&r);
  }
  CHECK_EQ(log_count(&r, "slow_busy_callback", where), 1);
  CHECK(r.loop == loop);
  test_close(loop);
}

TEST(slow_timer_callback_logged) {
  log_rec r;
  char where[64];
  int line, i;
  evl_loop *loop = loop_with_log(1, &r);
  g_ran = 0;
  evl_set_slow_callback_duration(loop, 0.05);
  line = __LINE__ + 1;
  CHECK(evl_call_later(loop, 0.01, slow_busy_callback, NULL) > 0);
  for (i = 0; i < 100 && !g_ran; i++)
    evl_run_once(loop, 0.05);
  CHECK_EQ(g_ran, 1);
  sprintf(where, "t_debug.c:%d", line);
  if (log_count(&r, "slow_busy_callback", where) < 1)
    dump_log(&r);
  CHECK_EQ(log_count(&r, "slow_busy_callback", where), 1);
  test_close(loop);
}

TEST(set_debug_at_run_time) {
  log_rec r;
  evl_loop *loop = loop_with_log(-1, &r);
  g_ran = 0;
  evl_set_slow_callback_duration(loop, 0.05);
  evl_set_debug(loop, 1);
  CHECK(evl_call_soon(loop, slow_busy_callback, NULL) > 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_ran, 1);
  CHECK(log_count(&r, "slow_busy_callback", NULL) >= 1);
  test_close(loop);
}

TEST(fast_callback_not_logged) {
  log_rec r;
  evl_loop *loop = loop_with_log(1, &r);
  int i;
  g_ran = 0;
  evl_set_slow_callback_duration(loop, 0.05);
  for (i = 0; i < 10; i++)
    CHECK(evl_call_soon(loop, fast_quiet_callback, NULL) > 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_ran, 10);
  if (log_count(&r, "fast_quiet_callback", NULL) != 0)
    dump_log(&r);
  CHECK_EQ(log_count(&r, "fast_quiet_callback", NULL), 0);
  test_close(loop);
}

TEST(debug_off_logs_nothing) {
  log_rec r;
  evl_loop *loop;
  test_unsetenv("EVLOOP_DEBUG");
  loop = loop_with_log(0, &r);
  g_ran = 0;
  CHECK_EQ(evl_get_debug(loop), 0);
  evl_set_slow_callback_duration(loop, 0.05);
  CHECK(evl_call_soon(loop, slow_busy_callback, NULL) > 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_ran, 1);
  if (r.n != 0)
    dump_log(&r);
  CHECK_EQ(r.n, 0);
  test_close(loop);
  CHECK_EQ(r.n, 0);
}

static void slow_task_fn(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  slow_busy_callback(evl_task_loop(t), NULL);
  EVL_ASYNC_END(t);
}

TEST(slow_task_step_logged) {
  log_rec r;
  char where[64];
  int line;
  evl_loop *loop = loop_with_log(1, &r);
  evl_task *t;
  g_ran = 0;
  evl_set_slow_callback_duration(loop, 0.05);
  line = __LINE__ + 1;
  t = evl_task_create(loop, slow_task_fn, NULL, 0);
  CHECK_EQ(evl_run_until_complete(loop, t), 0);
  CHECK_EQ(g_ran, 1);
  sprintf(where, "t_debug.c:%d", line);
  if (log_count(&r, "slow_task_fn", where) < 1)
    dump_log(&r);
  CHECK(log_count(&r, "slow_task_fn", where) >= 1);
  evl_future_release(t);
  test_close(loop);
}

TESTS_BEGIN
T(exception_handler_round_trip)
T(call_exception_handler_custom)
T(default_handler_writes_stderr)
T(get_set_debug)
T(debug_from_environment)
T(slow_callback_duration)
T(slow_callback_logged)
T(slow_timer_callback_logged)
T(set_debug_at_run_time)
T(slow_task_step_logged)
T(fast_callback_not_logged)
T(debug_off_logs_nothing)
TESTS_END
