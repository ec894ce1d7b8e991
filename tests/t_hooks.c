/* Loop hooks (evl_hook_add): idle and prepare before the wait, check after
   the iteration's callbacks; an idle hook keeps the loop from blocking;
   hooks removed and added from inside hooks. */
#include "test.h"

static char g_log[64];
static int g_n;
static void logc(char c) {
  if (g_n < (int)sizeof g_log - 1)
    g_log[g_n++] = c;
  g_log[g_n] = 0;
}
static void log_cb(evl_loop *loop, void *arg) {
  (void)loop;
  logc(*(const char *)arg);
}
static void reset(void) {
  g_n = 0;
  g_log[0] = 0;
}

/* One iteration: idle, prepare, the ready callbacks, check. */
TEST(hooks_order) {
  evl_loop *loop = test_open();
  static const char I = 'I', P = 'P', C = 'C', X = 'X', T = 'T';
  reset();
  CHECK(evl_hook_add(loop, EVL_HOOK_CHECK, log_cb, (void *)&C) > 0);
  CHECK(evl_hook_add(loop, EVL_HOOK_PREPARE, log_cb, (void *)&P) > 0);
  CHECK(evl_hook_add(loop, EVL_HOOK_IDLE, log_cb, (void *)&I) > 0);
  CHECK(evl_call_soon(loop, log_cb, (void *)&X) > 0);
  CHECK(evl_call_later(loop, 0, log_cb, (void *)&T) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 2); /* hooks are not counted */
  CHECK(strcmp(g_log, "IPXTC") == 0);
  CHECK_EQ(evl_run_once(loop, 0), 0);
  CHECK(strcmp(g_log, "IPXTCIPC") == 0);
  test_close(loop);
}

/* prepare runs before the wait (what it writes is found by the same
   wait), check after the fd callback of that wait. */
static int g_sv[2];
static void prepare_write(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  logc('P');
  CHECK_EQ(test_send(g_sv[1], "x", 1), 1);
}
static void on_readable(evl_loop *loop, evl_fd fd, void *arg) {
  char b[8];
  (void)loop;
  (void)arg;
  CHECK(test_recv((int)fd, b, sizeof b) >= 1);
  logc('R');
}
TEST(hooks_around_the_wait) {
  evl_loop *loop = test_open();
  static const char C = 'C';
  int id;
  reset();
  CHECK_EQ(test_socketpair(g_sv), 0);
  CHECK_EQ(evl_add_reader(loop, g_sv[0], on_readable, NULL), 0);
  id = evl_hook_add(loop, EVL_HOOK_PREPARE, prepare_write, NULL);
  CHECK(id > 0);
  CHECK(evl_hook_add(loop, EVL_HOOK_CHECK, log_cb, (void *)&C) > 0);
  CHECK_EQ(evl_run_once(loop, 5.0), 1);
  CHECK(strcmp(g_log, "PRC") == 0);
  CHECK_EQ(evl_hook_remove(loop, id), 1);
  CHECK_EQ(evl_hook_remove(loop, id), 0);
  CHECK_EQ(evl_remove_reader(loop, g_sv[0]), 1);
  test_closesocket(g_sv[0]);
  test_closesocket(g_sv[1]);
  test_close(loop);
}

/* An active idle hook: the loop polls without blocking, and
   evl_next_timeout says 0; without it, the wait blocks. */
static int g_idles; /* test_count_cb's */
TEST(idle_does_not_block) {
  evl_loop *loop = test_open();
  double t0;
  int id, i;
  g_idles = 0;
  CHECK(evl_call_later(loop, 30.0, test_count_cb, &g_idles) > 0);
  CHECK(evl_next_timeout(loop) > 20.0);
  id = evl_hook_add(loop, EVL_HOOK_IDLE, test_count_cb, &g_idles);
  CHECK(evl_next_timeout(loop) == 0.0);
  t0 = test_now();
  for (i = 0; i < 100; i++)
    evl_run_once(loop, -1);
  CHECK(test_now() - t0 < 5.0);
  CHECK_EQ(g_idles, 100);
  CHECK_EQ(evl_hook_remove(loop, id), 1);
  CHECK(evl_next_timeout(loop) > 20.0);
  t0 = test_now();
  evl_run_once(loop, 0.2);
  CHECK(test_now() - t0 >= 0.19);
  CHECK_EQ(g_idles, 100);
  test_close(loop);
}

/* A hook removes itself and another; a hook added from a hook runs from
   the next round. */
static int g_self, g_other;
static void remover(evl_loop *loop, void *arg) {
  (void)arg;
  logc('A');
  CHECK_EQ(evl_hook_remove(loop, g_self), 1);
  CHECK_EQ(evl_hook_remove(loop, g_other), 1);
  CHECK(evl_hook_add(loop, EVL_HOOK_PREPARE, log_cb, (void *)"N") > 0);
}
TEST(hooks_change_while_running) {
  evl_loop *loop = test_open();
  reset();
  g_self = evl_hook_add(loop, EVL_HOOK_PREPARE, remover, NULL);
  g_other = evl_hook_add(loop, EVL_HOOK_PREPARE, log_cb, (void *)"B");
  CHECK(evl_hook_add(loop, EVL_HOOK_PREPARE, log_cb, (void *)"C") > 0);
  CHECK(g_self > 0 && g_other > 0 && g_self != g_other);
  evl_run_once(loop, 0);
  CHECK(strcmp(g_log, "AC") == 0);
  evl_run_once(loop, 0);
  CHECK(strcmp(g_log, "ACCN") == 0);
  test_close(loop);
}

TEST(hooks_bad_input) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_hook_add(NULL, EVL_HOOK_IDLE, test_count_cb, &g_idles),
           EVL_EINVAL);
  CHECK_EQ(evl_hook_add(loop, EVL_HOOK_IDLE, NULL, NULL), EVL_EINVAL);
  CHECK_EQ(evl_hook_add(loop, (evl_hook_kind)9, test_count_cb, &g_idles),
           EVL_EINVAL);
  CHECK_EQ(evl_hook_add(loop, (evl_hook_kind)-1, test_count_cb, &g_idles),
           EVL_EINVAL);
  CHECK_EQ(evl_hook_remove(loop, 0), 0);
  CHECK_EQ(evl_hook_remove(loop, 12345), 0);
  CHECK_EQ(evl_hook_remove(NULL, 1), 0);
  CHECK(evl_hook_add(loop, EVL_HOOK_IDLE, test_count_cb, &g_idles) > 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(evl_hook_add(loop, EVL_HOOK_CHECK, test_count_cb, &g_idles),
           EVL_ECLOSED);
  CHECK(evl_next_timeout(loop) < 0);
  test_close(loop);
}

TESTS_BEGIN
T(hooks_order)
T(hooks_around_the_wait)
T(idle_does_not_block)
T(hooks_change_while_running)
T(hooks_bad_input)
TESTS_END
