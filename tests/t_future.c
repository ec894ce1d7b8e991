/* Futures: states, results and errors, done callbacks, reference counting,
   unretrieved errors, run_until_complete. No threads. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------- */

static void count_cb(evl_future *fut, void *arg) {
  (void)fut;
  (*(int *)arg)++;
}

static void count10_cb(evl_future *fut, void *arg) {
  (void)fut;
  *(int *)arg += 10;
}

/* Records the order in which done callbacks run. */
typedef struct order_log {
  int n;
  int seen[8];
  evl_future *futs[8];
} order_log;
static order_log g_order;

static void order_cb(evl_future *fut, void *arg) {
  if (g_order.n < 8) {
    g_order.futs[g_order.n] = fut;
    g_order.seen[g_order.n++] = (int)(intptr_t)arg;
  }
}

static int g_freed;
static void *g_freed_ptr;
static void counting_free(void *p) {
  g_freed++;
  g_freed_ptr = p;
  free(p);
}

/* An exception handler that records what it got. */
typedef struct handler_rec {
  int calls;
  char message[256];
  int error;
  int had_future;
  evl_loop *loop;
} handler_rec;

static void rec_handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  handler_rec *r = (handler_rec *)arg;
  r->calls++;
  r->loop = loop;
  r->error = ctx->error;
  r->had_future = ctx->future != NULL;
  r->message[0] = '\0';
  if (ctx->message) {
    strncpy(r->message, ctx->message, sizeof r->message - 1);
    r->message[sizeof r->message - 1] = '\0';
  }
}

/* f's state as its getters tell it: done, cancelled, error code, result. */
static void check_state(evl_future *f, int done, int cancelled, int error,
                        const void *result) {
  CHECK_EQ(evl_future_done(f), done);
  CHECK_EQ(evl_future_cancelled(f), cancelled);
  CHECK_EQ(evl_future_error(f), error);
  CHECK(evl_future_result(f) == result);
}

/* ---- tests ------------------------------------------------------------ */

TEST(new_future_is_pending) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK(f != NULL);
  check_state(f, 0, 0, EVL_EINVALSTATE, NULL);
  CHECK(evl_future_loop(f) == loop);
  CHECK_EQ(evl_is_task(f), 0);
  evl_future_release(f);
  test_close(loop);
}

TEST(set_result) {
  int x = 7;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_set_result(f, &x), 0);
  check_state(f, 1, 0, 0, &x);
  CHECK(evl_future_error_message(f) == NULL);
  evl_future_release(f);
  test_close(loop);
}

TEST(set_result_twice) {
  int x = 1, y = 2;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_set_result(f, &x), 0);
  CHECK_EQ(evl_future_set_result(f, &y), EVL_EINVALSTATE);
  CHECK_EQ(evl_future_set_error(f, EVL_EIO, "late"), EVL_EINVALSTATE);
  CHECK(evl_future_result(f) == &x);
  CHECK_EQ(evl_future_error(f), 0);
  evl_future_release(f);
  test_close(loop);
}

TEST(set_error_copies_message) {
  char buf[32];
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  const char *msg;
  strcpy(buf, "disk on fire");
  CHECK_EQ(evl_future_set_error(f, EVL_EIO, buf), 0);
  memset(buf, 'X', sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  check_state(f, 1, 0, EVL_EIO, NULL);
  msg = evl_future_error_message(f);
  CHECK(msg != NULL);
  CHECK(msg != buf);
  CHECK(strcmp(msg, "disk on fire") == 0);
  /* A second completion is refused and changes nothing. */
  CHECK_EQ(evl_future_set_error(f, EVL_EPIPE, "other"), EVL_EINVALSTATE);
  CHECK_EQ(evl_future_error(f), EVL_EIO);
  evl_future_release(f);
  test_close(loop);
}

TEST(cancel_pending) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_cancel(f), 1);
  check_state(f, 1, 1, EVL_ECANCELED, NULL);
  CHECK_EQ(evl_future_cancel(f), 0); /* already cancelled */
  CHECK_EQ(evl_future_set_result(f, NULL), EVL_EINVALSTATE);
  CHECK_EQ(evl_future_cancelled(f), 1);
  evl_future_release(f);
  test_close(loop);
}

TEST(cancel_done) {
  int x = 3;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  evl_future *g = evl_future_new(loop);
  CHECK_EQ(evl_future_set_result(f, &x), 0);
  CHECK_EQ(evl_future_cancel(f), 0);
  check_state(f, 1, 0, 0, &x);
  CHECK_EQ(evl_future_set_error(g, EVL_EIO, NULL), 0);
  CHECK_EQ(evl_future_cancel(g), 0);
  check_state(g, 1, 0, EVL_EIO, NULL);
  evl_future_release(f);
  evl_future_release(g);
  test_close(loop);
}

TEST(done_callback_not_inline) {
  int n = 0, i;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &n), 0);
  CHECK_EQ(n, 0);
  CHECK_EQ(evl_future_set_result(f, NULL), 0);
  CHECK_EQ(n, 0); /* scheduled, not run inline */
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  for (i = 0; i < 3; i++)
    evl_run_once(loop, 0);
  CHECK_EQ(n, 1); /* exactly once */
  evl_future_release(f);
  test_close(loop);
}

TEST(done_callback_on_cancel) {
  int n = 0;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &n), 0);
  CHECK_EQ(evl_future_cancel(f), 1);
  CHECK_EQ(n, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  evl_future_release(f);
  test_close(loop);
}

TEST(done_callbacks_in_order) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  int i;
  memset(&g_order, 0, sizeof g_order);
  for (i = 1; i <= 5; i++)
    CHECK_EQ(evl_future_add_done_callback(f, order_cb, (void *)(intptr_t)i), 0);
  CHECK_EQ(evl_future_set_result(f, NULL), 0);
  CHECK_EQ(g_order.n, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_order.n, 5);
  for (i = 0; i < 5; i++) {
    CHECK_EQ(g_order.seen[i], i + 1);
    CHECK(g_order.futs[i] == f); /* the callback receives the future */
  }
  evl_future_release(f);
  test_close(loop);
}

TEST(done_callback_on_done_future_is_scheduled) {
  int n = 0;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_set_result(f, NULL), 0);
  evl_run_once(loop, 0);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &n), 0);
  CHECK_EQ(n, 0); /* not inline even though the future is done */
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  evl_future_release(f);
  test_close(loop);
}

TEST(remove_done_callback) {
  int a = 0, b = 0;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &a), 0);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &b), 0);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &a), 0);
  CHECK_EQ(evl_future_add_done_callback(f, count10_cb, &a), 0);
  CHECK_EQ(evl_future_remove_done_callback(f, count_cb, &a), 2);
  CHECK_EQ(evl_future_remove_done_callback(f, count_cb, &a), 0);
  CHECK_EQ(evl_future_remove_done_callback(f, count10_cb, &b), 0);
  CHECK_EQ(evl_future_set_result(f, NULL), 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(a, 10); /* only count10_cb(&a) was left for a */
  CHECK_EQ(b, 1);
  evl_future_release(f);
  test_close(loop);
}

TEST(refcount_keeps_future_alive) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  char *payload = (char *)malloc(16);
  CHECK(payload != NULL);
  g_freed = 0;
  CHECK(evl_future_ref(f) == f);
  CHECK(evl_future_ref(f) == f); /* three references now */
  CHECK_EQ(evl_future_set_result_free(f, payload, counting_free), 0);
  evl_future_release(f);
  CHECK_EQ(g_freed, 0);
  CHECK_EQ(evl_future_done(f), 1); /* still valid */
  CHECK(evl_future_result(f) == payload);
  evl_future_release(f);
  CHECK_EQ(g_freed, 0);
  CHECK(evl_future_result(f) == payload);
  evl_run_once(loop, 0);
  CHECK_EQ(g_freed, 0);
  evl_future_release(f); /* the last one */
  evl_run_once(loop, 0);
  CHECK_EQ(g_freed, 1);
  CHECK(g_freed_ptr == payload);
  test_close(loop);
  CHECK_EQ(g_freed, 1);
}

TEST(set_result_free_called_once) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  int n = 0;
  char *payload = (char *)malloc(32);
  CHECK(payload != NULL);
  g_freed = 0;
  g_freed_ptr = NULL;
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &n), 0);
  CHECK_EQ(evl_future_set_result_free(f, payload, counting_free), 0);
  CHECK(evl_future_result(f) == payload);
  evl_run_once(loop, 0);
  CHECK_EQ(n, 1);
  CHECK_EQ(g_freed, 0); /* still referenced by us */
  evl_future_release(f);
  CHECK_EQ(g_freed, 1);
  CHECK(g_freed_ptr == payload);
  evl_run_once(loop, 0);
  test_close(loop);
  CHECK_EQ(g_freed, 1);
}

TEST(unretrieved_error_is_reported) {
  handler_rec rec;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  memset(&rec, 0, sizeof rec);
  evl_set_exception_handler(loop, rec_handler, &rec);
  CHECK_EQ(evl_future_set_error(f, EVL_EIO, "never looked at"), 0);
  evl_run_once(loop, 0);
  CHECK_EQ(rec.calls, 0); /* not while the future lives */
  evl_future_release(f);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(rec.calls, 1);
  CHECK_EQ(rec.error, EVL_EIO);
  CHECK(rec.message[0] != '\0');
  CHECK_EQ(rec.had_future, 1);
  CHECK(rec.loop == loop);
  test_close(loop);
  CHECK_EQ(rec.calls, 1);
}

TEST(retrieved_error_not_reported) {
  handler_rec rec;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  evl_future *g = evl_future_new(loop);
  memset(&rec, 0, sizeof rec);
  evl_set_exception_handler(loop, rec_handler, &rec);
  CHECK_EQ(evl_future_set_error(f, EVL_EIO, "seen"), 0);
  CHECK_EQ(evl_future_error(f), EVL_EIO);
  CHECK_EQ(evl_future_set_error(g, EVL_EPIPE, "seen too"), 0);
  CHECK(evl_future_result(g) == NULL); /* also marks it retrieved */
  evl_future_release(f);
  evl_future_release(g);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(rec.calls, 0);
  test_close(loop);
  CHECK_EQ(rec.calls, 0);
}

static void set_error_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_set_error((evl_future *)arg, EVL_EPIPE, "from a callback");
}
static void set_result_cb(evl_loop *loop, void *arg) {
  static int value = 5;
  (void)loop;
  evl_future_set_result((evl_future *)arg, &value);
}
static void cancel_cb(evl_loop *loop, void *arg) {
  (void)loop;
  evl_future_cancel((evl_future *)arg);
}

TEST(run_until_complete_returns_error) {
  handler_rec rec;
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  evl_future *g = evl_future_new(loop);
  evl_future *h = evl_future_new(loop);
  memset(&rec, 0, sizeof rec);
  evl_set_exception_handler(loop, rec_handler, &rec);
  CHECK(evl_call_soon(loop, set_error_cb, f) > 0);
  CHECK_EQ(evl_run_until_complete(loop, f), EVL_EPIPE);
  CHECK_EQ(evl_future_done(f), 1);
  CHECK_EQ(evl_future_error(f), EVL_EPIPE);
  CHECK(evl_call_later(loop, 0.01, set_result_cb, g) > 0);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  CHECK(evl_future_result(g) != NULL);
  CHECK_EQ(*(int *)evl_future_result(g), 5);
  CHECK(evl_call_soon(loop, cancel_cb, h) > 0);
  CHECK_EQ(evl_run_until_complete(loop, h), EVL_ECANCELED);
  CHECK_EQ(evl_future_cancelled(h), 1);
  /* Already done: returns at once with the same code. */
  CHECK_EQ(evl_run_until_complete(loop, f), EVL_EPIPE);
  CHECK_EQ(evl_loop_is_running(loop), 0);
  evl_future_release(f);
  evl_future_release(g);
  evl_future_release(h);
  evl_run_once(loop, 0);
  CHECK_EQ(rec.calls, 0);
  test_close(loop);
}

TEST(set_error_needs_negative_code) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  CHECK(evl_future_set_error(f, 0, "not an error") < 0);
  CHECK(evl_future_set_error(f, 5, NULL) < 0);
  CHECK_EQ(evl_future_done(f), 0);
  CHECK_EQ(evl_future_set_error(f, EVL_EIO, NULL), 0);
  CHECK_EQ(evl_future_error(f), EVL_EIO);
  evl_future_release(f);
  test_close(loop);
}

static evl_future *g_added_in_cb_fut;
static int g_added_count;
static void late_cb(evl_future *fut, void *arg) {
  (void)fut;
  (void)arg;
  g_added_count++;
}
static void adding_cb(evl_future *fut, void *arg) {
  (void)arg;
  g_added_in_cb_fut = fut;
  evl_future_add_done_callback(fut, late_cb, NULL);
  CHECK_EQ(g_added_count, 0); /* not inline */
}

TEST(done_callback_added_from_done_callback) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  g_added_count = 0;
  CHECK_EQ(evl_future_add_done_callback(f, adding_cb, NULL), 0);
  CHECK_EQ(evl_future_set_result(f, NULL), 0);
  evl_run_once(loop, 0);
  CHECK(g_added_in_cb_fut == f);
  CHECK_EQ(g_added_count, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_added_count, 1);
  evl_run_once(loop, 0);
  CHECK_EQ(g_added_count, 1);
  evl_future_release(f);
  test_close(loop);
}

static void release_in_cb(evl_future *fut, void *arg) {
  (void)arg;
  evl_future_release(fut); /* the test's reference, given to us */
  g_added_count++;
}

TEST(last_reference_released_in_done_callback) {
  evl_loop *loop = test_open();
  evl_future *f = evl_future_new(loop);
  char *payload = (char *)malloc(8);
  g_added_count = 0;
  g_freed = 0;
  CHECK_EQ(evl_future_add_done_callback(f, release_in_cb, NULL), 0);
  CHECK_EQ(evl_future_add_done_callback(f, count_cb, &g_added_count), 0);
  CHECK_EQ(evl_future_set_result_free(f, payload, counting_free), 0);
  evl_run_once(loop, 0);
  CHECK_EQ(g_added_count, 2); /* the second callback still ran */
  evl_run_once(loop, 0);
  CHECK_EQ(g_freed, 1);
  test_close(loop);
}

TESTS_BEGIN
T(new_future_is_pending)
T(set_result)
T(set_result_twice)
T(set_error_copies_message)
T(cancel_pending)
T(cancel_done)
T(done_callback_not_inline)
T(done_callback_on_cancel)
T(done_callbacks_in_order)
T(done_callback_on_done_future_is_scheduled)
T(remove_done_callback)
T(refcount_keeps_future_alive)
T(set_result_free_called_once)
T(unretrieved_error_is_reported)
T(retrieved_error_not_reported)
T(run_until_complete_returns_error)
T(set_error_needs_negative_code)
T(done_callback_added_from_done_callback)
T(last_reference_released_in_done_callback)
TESTS_END
