/* Helpers the network tests share (include after test.h). */
#ifndef EVL_NET_TEST_H
#define EVL_NET_TEST_H

/* Exception handler calls are counted (and printed unless g_quiet): the
   tests expect none unless they say otherwise. */
static int g_reports, g_quiet;
static inline void count_handler(evl_loop *loop, const evl_context *ctx,
                                 void *arg) {
  (void)loop;
  (void)arg;
  if (!g_quiet)
    fprintf(stderr, "  exception handler: %s (%s)\n", ctx->message,
            ctx->error ? evl_err_name(ctx->error) : "-");
  g_reports++;
}
static inline evl_loop *quiet_loop(void) {
  evl_loop *loop = test_loop();
  g_reports = 0;
  evl_set_exception_handler(loop, count_handler, NULL);
  return loop;
}

/* Runs the loop until cond holds (at most 10 s), then checks it. */
#define RUN_UNTIL(loop, cond)                                                  \
  do {                                                                         \
    double dl_ = test_now() + 10.0;                                            \
    while (!(cond) && test_now() < dl_)                                        \
      evl_run_once((loop), 0.01);                                              \
    CHECK(cond);                                                               \
  } while (0)

static inline void run_for(evl_loop *loop, double secs) {
  double end = test_now() + secs;
  while (test_now() < end)
    evl_run_once(loop, 0.005);
}

/* Waits (at most 20 s) for f; returns its error code (0: a result). */
static inline int wait_fut(evl_loop *loop, evl_future *f) {
  evl_future *w = evl_wait_for(evl_future_ref(f), 20.0);
  int rc;
  CHECK(w != NULL);
  rc = evl_run_until_complete(loop, w);
  (void)evl_future_error(w);
  evl_future_release(w);
  return rc;
}

/* Unix stream sockets: Windows has them since Windows 10 1803, wine 8 has
   none (WSAEAFNOSUPPORT): the test is skipped there. */
static inline void need_af_unix(void) {
#ifdef _WIN32
  SOCKET s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (s == INVALID_SOCKET)
    SKIP("no AF_UNIX sockets here (wine 8: WSAEAFNOSUPPORT)");
  closesocket(s);
#endif
}

#endif
