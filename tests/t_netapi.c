/* Networking API contracts the other network tests do not pin down. */
#include "test.h"

#include "net_test.h"

/* Connections record through net_test.h's rec_proto (made and lost
   counted, the transport kept while open). */

static void run_until(evl_loop *loop, const int *flag, int value) {
  int i;
  for (i = 0; i < 2000 && *flag != value; i++)
    CHECK(evl_run_once(loop, 0.01) >= 0);
  CHECK_EQ(*flag, value);
}

/* Every wait_closed caller gets its own future: one that times out (and is
   cancelled by wait_for) leaves the others waiting. */
TEST(server_wait_closed_futures_are_per_caller) {
  evl_loop *loop = test_open();
  rec_peer srv, cli;
  evl_future *sf, *cf, *w1, *w2, *w3;
  evl_server *s;
  memset(&srv, 0, sizeof srv);
  memset(&cli, 0, sizeof cli);
  sf = evl_create_server(loop, &rec_proto, &srv, "127.0.0.1", 0, NULL);
  CHECK_EQ(evl_run_until_complete(loop, sf), 0);
  s = (evl_server *)evl_future_result(sf);
  cf = evl_create_connection(loop, &rec_proto, &cli, "127.0.0.1",
                             evl_server_port(s), NULL);
  CHECK_EQ(evl_run_until_complete(loop, cf), 0);
  run_until(loop, &srv.made, 1);

  w1 = evl_server_wait_closed(s);
  w2 = evl_wait_for(evl_server_wait_closed(s), 0.03);
  CHECK_EQ(evl_run_until_complete(loop, w2), EVL_ETIMEDOUT);
  CHECK(!evl_future_done(w1)); /* not cancelled by w2's timeout */

  evl_server_close(s);
  CHECK(evl_run_once(loop, 0) >= 0);
  CHECK(!evl_future_done(w1)); /* a connection is still open */
  evl_transport_close(cli.t);
  CHECK_EQ(evl_run_until_complete(loop, w1), 0);
  CHECK_EQ(srv.lost, 1);
  w3 = evl_server_wait_closed(s); /* closed and empty: done at once */
  CHECK(evl_future_done(w3));
  CHECK_EQ(evl_future_error(w3), 0);

  evl_future_release(w1);
  evl_future_release(w2);
  evl_future_release(w3);
  evl_future_release(cf);
  evl_future_release(sf);
  evl_server_free(s);
  test_close(loop);
}

/* Datagram endpoints resolve names like connections do. */
static int g_dgrams;
static void dgram_in(evl_transport *t, const void *data, size_t len,
                     const void *addr, size_t addrlen, void *user) {
  (void)t;
  (void)addr;
  (void)addrlen;
  (void)user;
  if (len == 5 && !memcmp(data, "hello", 5))
    g_dgrams++;
}
static const evl_protocol dgram_proto = {NULL, NULL, NULL, NULL,     NULL,
                                         NULL, NULL, NULL, dgram_in, NULL};

TEST(datagram_endpoint_resolves_names) {
  evl_loop *loop = test_open();
  evl_future *a, *b;
  evl_transport *ta, *tb;
  struct sockaddr_storage ss;
  size_t len = sizeof ss;
  int port;
  a = evl_create_datagram_endpoint(loop, &dgram_proto, NULL, "localhost", 0,
                                   NULL, 0, NULL);
  CHECK_EQ(evl_run_until_complete(loop, a), 0);
  ta = (evl_transport *)evl_future_result(a);
  CHECK_EQ(evl_transport_get_sockname(ta, &ss, &len), 0);
  port = sockaddr_port(&ss);
  CHECK(port > 0);
  b = evl_create_datagram_endpoint(loop, &dgram_proto, NULL, NULL, 0,
                                   "localhost", port, NULL);
  CHECK_EQ(evl_run_until_complete(loop, b), 0);
  tb = (evl_transport *)evl_future_result(b);
  g_dgrams = 0;
  CHECK_EQ(evl_transport_sendto(tb, "hello", 5, NULL, 0), 0);
  run_until(loop, &g_dgrams, 1);
  evl_transport_close(ta);
  evl_transport_close(tb);
  evl_future_release(a);
  evl_future_release(b);
  test_close(loop);
}

/* Closing the loop while a connection's name lookup runs on the executor
   fails the connection with EVL_ECLOSED and leaks nothing (LeakSanitizer
   and valgrind check this test). */
TEST(loop_close_during_name_lookup_leaks_nothing) {
  int round;
  for (round = 0; round < 20; round++) {
    evl_loop *loop = test_open();
    rec_peer c;
    evl_future *f, *d, *s;
    memset(&c, 0, sizeof c);
    f = evl_create_connection(loop, &rec_proto, &c, "localhost", 9, NULL);
    d = evl_create_datagram_endpoint(loop, &dgram_proto, NULL, NULL, 0,
                                     "localhost", 9, NULL);
    s = evl_create_server(loop, &rec_proto, &c, "localhost", 0, NULL);
    CHECK(f != NULL && d != NULL && s != NULL);
    if (round % 2) /* sometimes the lookups get a chance to finish */
      (void)evl_run_once(loop, 0);
    CHECK_EQ(evl_loop_close(loop), 0);
    CHECK(evl_future_done(f));
    (void)evl_future_error(f);
    (void)evl_future_error(d);
    (void)evl_future_error(s);
    if (evl_future_error(s) == 0)
      evl_server_free((evl_server *)evl_future_result(s));
    evl_future_release(f);
    evl_future_release(d);
    evl_future_release(s);
    test_close(loop);
  }
}

TESTS_BEGIN
T(server_wait_closed_futures_are_per_caller)
T(datagram_endpoint_resolves_names)
T(loop_close_during_name_lookup_leaks_nothing)
TESTS_END
