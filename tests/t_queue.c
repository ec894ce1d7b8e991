/* Queue, LifoQueue, PriorityQueue: order, maxsize, nowait errors,
   task_done/join, shutdown (immediate and draining), and the cancellation
   cases of CPython's test_queues.py that apply to C. No threads. */
#include "test.h"

#ifndef EVLOOP_NO_SYNC

#include <stdlib.h>
#include <string.h>

static int v[16];
#define ITEM(i) ((void *)&v[i])
#define INDEX(p) ((int)((int *)(p)-v))

static void spin(evl_loop *loop, int n) {
  while (n-- > 0)
    evl_run_once(loop, 0);
}

TEST(queue_orders_fifo_lifo_priority) {
  evl_loop *loop = test_open();
  evl_queue *f = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  evl_queue *l = evl_queue_new(loop, EVL_QUEUE_LIFO, 0, NULL);
  evl_queue *p = evl_queue_new(loop, EVL_QUEUE_PRIORITY, 0, NULL);
  static const int prio[12] = {5, 1, 9, 1, 3, 7, 0, 5, 2, 8, 1, 4};
  int i, last, lastp, lasti;
  void *it;
  for (i = 0; i < 12; i++) {
    CHECK_EQ(evl_queue_put_nowait(f, ITEM(i)), 0);
    CHECK_EQ(evl_queue_put_nowait(l, ITEM(i)), 0);
    CHECK_EQ(evl_queue_put_nowait_prio(p, ITEM(i), prio[i]), 0);
  }
  CHECK_EQ(evl_queue_qsize(f), 12);
  for (i = 0; i < 12; i++) {
    CHECK_EQ(evl_queue_get_nowait(f, &it), 0);
    CHECK_EQ(INDEX(it), i);
    CHECK_EQ(evl_queue_get_nowait(l, &it), 0);
    CHECK_EQ(INDEX(it), 11 - i);
  }
  lastp = -1;
  lasti = -1;
  for (i = 0; i < 12; i++) {
    CHECK_EQ(evl_queue_get_nowait(p, &it), 0);
    last = INDEX(it);
    CHECK(prio[last] >= lastp);
    if (prio[last] == lastp)
      CHECK(last > lasti); /* equal priorities in arrival order */
    lastp = prio[last];
    lasti = last;
  }
  CHECK_EQ(evl_queue_get_nowait(f, &it), EVL_EQUEUEEMPTY);
  CHECK(it == NULL);
  CHECK_EQ(evl_queue_empty(p), 1);
  CHECK(evl_queue_new(loop, 7, 0, NULL) == NULL);
  CHECK_EQ(evl_queue_get_nowait(NULL, &it), EVL_EINVAL);
  CHECK_EQ(evl_queue_get_nowait(f, NULL), EVL_EINVAL);
  evl_queue_free(f);
  evl_queue_free(l);
  evl_queue_free(p);
  test_close(loop);
}

TEST(queue_maxsize_full_empty) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 2, NULL);
  evl_future *p1, *p2, *g;
  void *it;
  CHECK_EQ(evl_queue_full(q), 0);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(1)), 0);
  CHECK_EQ(evl_queue_full(q), 1);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(2)), EVL_EQUEUEFULL);
  p1 = evl_queue_put(q, ITEM(2)); /* waits, in order */
  p2 = evl_queue_put(q, ITEM(3));
  CHECK_EQ(evl_future_done(p1), 0);
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(INDEX(it), 0);
  CHECK_EQ(evl_future_done(p1), 1); /* room: the first putter goes in */
  CHECK_EQ(evl_future_done(p2), 0);
  g = evl_queue_get(q);
  CHECK_EQ(evl_future_done(g), 1);
  CHECK_EQ(INDEX(evl_future_result(g)), 1);
  CHECK_EQ(evl_future_done(p2), 1);
  CHECK_EQ(evl_queue_qsize(q), 2);
  evl_future_release(p1);
  evl_future_release(p2);
  evl_future_release(g);
  evl_queue_free(q);
  test_close(loop);
}

/* getters wait in FIFO order and get items in put order */
typedef struct getter {
  evl_queue *q;
  int got, err, id;
} getter;
static int g_seq[16], g_nseq;
static void get_task(evl_task *t, void *state) {
  getter *g = (getter *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(t, evl_queue_get(g->q));
  g->err = evl_await_error(t);
  if (!g->err) {
    g->got = INDEX(evl_await_result(t));
    g_seq[g_nseq++] = g->id;
  }
  EVL_ASYNC_END(t);
}
static evl_task *start_getter(evl_loop *loop, getter *g, evl_queue *q, int id) {
  memset(g, 0, sizeof *g);
  g->q = q;
  g->id = id;
  g->got = -1;
  return evl_task_create(loop, get_task, g, 0);
}

TEST(queue_getters_fifo) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  getter g[3];
  evl_task *t[3];
  int i;
  g_nseq = 0;
  for (i = 0; i < 3; i++)
    t[i] = start_getter(loop, &g[i], q, i);
  spin(loop, 2);
  for (i = 0; i < 3; i++)
    CHECK_EQ(evl_queue_put_nowait(q, ITEM(i + 5)), 0);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(evl_run_until_complete(loop, t[i]), 0);
    CHECK_EQ(g[i].got, i + 5);
    CHECK_EQ(g_seq[i], i);
    evl_future_release(t[i]);
  }
  evl_queue_free(q);
  test_close(loop);
}

/* test_cancelled_getters_not_being_held_in_self_getters and
   test_get_cancelled_race: a getter cancelled while waiting leaves; one
   cancelled after an item was handed to it gives the item back to the
   front, and the next getter gets it. */
TEST(queue_cancelled_getters) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  getter g[3];
  evl_task *t[3];
  void *it;
  int i;
  g_nseq = 0;
  for (i = 0; i < 3; i++)
    t[i] = start_getter(loop, &g[i], q, i);
  spin(loop, 2);
  CHECK_EQ(evl_task_cancel(t[1]), 1); /* pending: leaves */
  spin(loop, 2);
  CHECK_EQ(g[1].err, EVL_ECANCELED);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(1)), 0); /* handed to t[0] */
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(2)), 0); /* handed to t[2] */
  CHECK_EQ(evl_queue_qsize(q), 0);
  CHECK_EQ(evl_task_cancel(t[0]), 1); /* before it resumes */
  CHECK_EQ(evl_run_until_complete(loop, t[0]), 0);
  CHECK_EQ(g[0].err, EVL_ECANCELED);
  CHECK_EQ(g[0].got, -1);
  CHECK_EQ(evl_run_until_complete(loop, t[2]), 0);
  CHECK_EQ(g[2].got, 2);
  CHECK_EQ(evl_queue_qsize(q), 1); /* item 1 came back */
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(INDEX(it), 1);
  for (i = 0; i < 3; i++)
    evl_future_release(t[i]);
  evl_queue_free(q);
  test_close(loop);
}

/* test_cancelled_puts_not_being_held_in_self_putters / put_cancelled: a
   putter cancelled while waiting does not add its item. */
TEST(queue_cancelled_putter_adds_nothing) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 1, NULL);
  evl_future *p1, *p2;
  void *it;
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  p1 = evl_queue_put(q, ITEM(1));
  p2 = evl_queue_put(q, ITEM(2));
  CHECK_EQ(evl_future_cancel(p1), 1);
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(INDEX(it), 0);
  CHECK_EQ(evl_future_done(p2), 1); /* p1 left: p2 went in */
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(INDEX(it), 2);
  CHECK_EQ(evl_queue_get_nowait(q, &it), EVL_EQUEUEEMPTY);
  evl_future_release(p1);
  evl_future_release(p2);
  evl_queue_free(q);
  test_close(loop);
}

TEST(queue_task_done_and_join) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  evl_future *j;
  void *it;
  j = evl_queue_join(q);
  CHECK_EQ(evl_future_done(j), 1); /* nothing unfinished */
  evl_future_release(j);
  CHECK_EQ(evl_queue_task_done(q), EVL_EINVALSTATE);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(1)), 0);
  j = evl_queue_join(q);
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(evl_queue_task_done(q), 0);
  CHECK_EQ(evl_future_done(j), 0);
  CHECK_EQ(evl_queue_get_nowait(q, &it), 0);
  CHECK_EQ(evl_queue_task_done(q), 0);
  CHECK_EQ(evl_future_done(j), 1);
  CHECK_EQ(evl_queue_task_done(q), EVL_EINVALSTATE);
  evl_future_release(j);
  evl_queue_free(q);
  test_close(loop);
}

static int g_freed;
static void count_free(void *p) {
  (void)p;
  g_freed++;
}

/* asyncio 3.13: shutdown() lets gets drain, then fail; puts fail. */
TEST(queue_shutdown_draining) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 1, count_free);
  evl_future *p, *g;
  void *it;
  g_freed = 0;
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  p = evl_queue_put(q, ITEM(1)); /* waiting for room */
  CHECK_EQ(evl_queue_shutdown(q, 0), 0);
  CHECK_EQ(evl_queue_is_shutdown(q), 1);
  CHECK_EQ(evl_future_error(p), EVL_ESHUTDOWN); /* item 1 stays ours */
  evl_future_release(p);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(2)), EVL_ESHUTDOWN);
  p = evl_queue_put(q, ITEM(2));
  CHECK_EQ(evl_future_error(p), EVL_ESHUTDOWN);
  evl_future_release(p);
  g = evl_queue_get(q); /* drains */
  CHECK_EQ(INDEX(evl_future_result(g)), 0);
  evl_future_release(g);
  CHECK_EQ(evl_queue_get_nowait(q, &it), EVL_ESHUTDOWN);
  g = evl_queue_get(q);
  CHECK_EQ(evl_future_error(g), EVL_ESHUTDOWN);
  evl_future_release(g);
  evl_queue_free(q);
  CHECK_EQ(g_freed, 0);
  test_close(loop);
}

TEST(queue_shutdown_immediate) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, count_free);
  evl_queue *q2 = evl_queue_new(loop, EVL_QUEUE_LIFO, 0, NULL);
  evl_future *j, *g;
  g_freed = 0;
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(1)), 0);
  j = evl_queue_join(q);
  g = evl_queue_get(q2); /* a waiting getter */
  CHECK_EQ(evl_queue_shutdown(q, 1), 0);
  CHECK_EQ(g_freed, 2); /* the dropped items went to item_free */
  CHECK_EQ(evl_queue_qsize(q), 0);
  CHECK_EQ(evl_future_done(j), 1); /* they count as done */
  CHECK_EQ(evl_queue_shutdown(q2, 1), 0);
  CHECK_EQ(evl_future_error(g), EVL_ESHUTDOWN);
  evl_future_release(j);
  evl_future_release(g);
  evl_queue_free(q);
  evl_queue_free(q2);
  test_close(loop);
}

/* An item handed to a get released unread after an immediate shutdown is
   dropped, and counts as done for join as the others dropped: join used
   to wait for it forever (found by the allocation sweep, allocfail_compose:
   a consumer cancelled when its producer failed). */
TEST(queue_item_dropped_after_shutdown_counts_as_done) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, count_free);
  evl_future *g, *j;
  g_freed = 0;
  CHECK_EQ(evl_queue_put_nowait(q, ITEM(0)), 0);
  g = evl_queue_get(q); /* handed the item, not read yet */
  CHECK_EQ(evl_queue_qsize(q), 0);
  CHECK_EQ(evl_queue_shutdown(q, 1), 0);
  j = evl_queue_join(q);
  CHECK_EQ(evl_future_done(j), 0); /* the item is the getter's */
  evl_future_release(g);           /* unread: it comes back, dropped */
  CHECK_EQ(g_freed, 1);
  spin(loop, 2);
  CHECK_EQ(evl_future_done(j), 1);
  CHECK_EQ(evl_future_error(j), 0);
  CHECK_EQ(evl_queue_task_done(q), EVL_EINVALSTATE);
  evl_future_release(j);
  evl_queue_free(q);
  test_close(loop);
}

TEST(queue_free_gives_items_to_item_free) {
  evl_loop *loop = test_open();
  evl_queue *q = evl_queue_new(loop, EVL_QUEUE_PRIORITY, 0, free);
  evl_queue *e = evl_queue_new(loop, EVL_QUEUE_FIFO, 0, NULL);
  evl_future *g = evl_queue_get(e);
  int i;
  for (i = 0; i < 5; i++) /* ASan: freed by the queue, no leak */
    CHECK_EQ(evl_queue_put_nowait_prio(q, malloc(32), 5 - i), 0);
  evl_queue_free(q);
  evl_queue_free(e);
  CHECK_EQ(evl_future_error(g), EVL_ECLOSED);
  evl_future_release(g);
  test_close(loop);
}

TESTS_BEGIN
T(queue_orders_fifo_lifo_priority)
T(queue_maxsize_full_empty)
T(queue_getters_fifo)
T(queue_cancelled_getters)
T(queue_cancelled_putter_adds_nothing)
T(queue_task_done_and_join)
T(queue_shutdown_draining)
T(queue_shutdown_immediate)
T(queue_item_dropped_after_shutdown_counts_as_done)
T(queue_free_gives_items_to_item_free)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_SYNC: no queues")
#endif
