/* Host lists ("a,b,c": create_server, create_connection, open_connection,
   start_server, datagram endpoints): an empty element ("127.0.0.1,",
   ",127.0.0.1", "a,,b", " ") is EVL_EINVAL before any resolving (issue 11,
   bug 8: a trailing comma passed the numeric check and then asked
   getaddrinfo for "" on the loop thread); leading spaces are still
   skipped. */
#include "test.h"

#include "net_test.h"

static const evl_protocol nop_proto = {NULL, NULL, NULL, NULL, NULL,
                                       NULL, NULL, NULL, NULL, NULL};

static const char *const bad_lists[] = {
    "127.0.0.1,",  ",127.0.0.1", "127.0.0.1,,127.0.0.1", " ",
    "127.0.0.1, ", "::1,",       "localhost,",           ","};
#define NBAD (sizeof bad_lists / sizeof bad_lists[0])

/* f fails with EVL_EINVAL (the future is released). */
static void fails_einval(evl_loop *loop, evl_future *f, const char *what,
                         const char *host) {
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (rc != EVL_EINVAL)
    fprintf(stderr, "  %s(\"%s\"): %s\n", what, host, evl_err_name(rc));
  CHECK_EQ(rc, EVL_EINVAL);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
}

TEST(hostlist_empty_element_is_einval) {
  evl_loop *loop = test_open();
  size_t i;
  for (i = 0; i < NBAD; i++) {
    const char *h = bad_lists[i];
    fails_einval(loop,
                 evl_create_connection(loop, &nop_proto, NULL, h, 80, NULL),
                 "create_connection", h);
    fails_einval(loop, evl_create_server(loop, &nop_proto, NULL, h, 0, NULL),
                 "create_server", h);
    fails_einval(loop, evl_open_connection(loop, h, 80, 0, NULL),
                 "open_connection", h);
    fails_einval(loop,
                 evl_create_datagram_endpoint(loop, &nop_proto, NULL, h, 0,
                                              NULL, 0, NULL),
                 "datagram local", h);
    fails_einval(loop,
                 evl_create_datagram_endpoint(loop, &nop_proto, NULL, NULL, 0,
                                              h, 9, NULL),
                 "datagram remote", h);
  }
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

static void on_stream(evl_stream *s, void *arg) {
  (void)arg;
  evl_stream_free(s);
}

TEST(hostlist_start_server_empty_element) {
  evl_loop *loop = test_open();
  size_t i;
  for (i = 0; i < NBAD; i++)
    fails_einval(
        loop, evl_start_server(loop, on_stream, NULL, bad_lists[i], 0, 0, NULL),
        "start_server", bad_lists[i]);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(hostlist_valid_lists_still_work) {
  /* a leading space is skipped; NULL and "" still mean all interfaces */
  evl_loop *loop = test_open();
  const char *ok[] = {" 127.0.0.1", "127.0.0.1", NULL, ""};
  size_t i;
  for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    evl_future *f = evl_create_server(loop, &nop_proto, NULL, ok[i], 0, NULL);
    evl_server *s;
    CHECK(f != NULL);
    CHECK_EQ(wait_fut(loop, f), 0);
    s = (evl_server *)evl_future_result(f);
    CHECK(evl_server_port(s) > 0);
    evl_future_release(f);
    evl_server_free(s);
  }
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TESTS_BEGIN
T(hostlist_empty_element_is_einval)
T(hostlist_start_server_empty_element)
T(hostlist_valid_lists_still_work)
TESTS_END
