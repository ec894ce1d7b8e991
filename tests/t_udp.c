/* Datagram endpoints on loopback: bound and connected endpoints, sendto
   with and without an address, sender addresses, empty datagrams,
   ICMP errors through error_received, SO_BROADCAST, SO_REUSEPORT, close. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

static int endpoint_error(evl_loop *loop, dpeer *p, const char *lhost,
                          int lport, const char *rhost, int rport,
                          const evl_net_options *o) {
  evl_future *f = evl_create_datagram_endpoint(loop, &dpeer_proto, p, lhost,
                                               lport, rhost, rport, o);
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  CHECK_EQ(evl_future_error(f), rc);
  evl_future_release(f);
  CHECK_EQ(p->made, 0);
  return rc;
}

static void close_wait(evl_loop *loop, dpeer *p) {
  evl_transport_close(p->t);
  RUN_UNTIL(loop, p->lost == 1);
  CHECK_EQ(p->lost_err, 0);
}

/* a bound to 127.0.0.1 (a port of the kernel's choice), b connected to a. */
static void bound_and_connected(evl_loop *loop, dpeer *a, dpeer *b) {
  memset(a, 0, sizeof *a);
  memset(b, 0, sizeof *b);
  endpoint(loop, a, "127.0.0.1", 0, NULL, 0, NULL);
  endpoint(loop, b, NULL, 0, "127.0.0.1", sockname_port(a->t), NULL);
}

/* The end of a test: the endpoints given (NULL: none) closed, each with
   connection_lost(0), the loop closed, nothing reported. */
static void finish(evl_loop *loop, dpeer *a, dpeer *b, dpeer *c) {
  if (a)
    close_wait(loop, a);
  if (b)
    close_wait(loop, b);
  if (c)
    close_wait(loop, c);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The socket's SO_BROADCAST (0: off). */
static int so_broadcast(evl_transport *t) {
  int v = -1;
  socklen_t len = sizeof v;
  CHECK(evl_transport_fd(t) >= 0);
  CHECK_EQ(getsockopt((int)evl_transport_fd(t), SOL_SOCKET, SO_BROADCAST,
                      (void *)&v, &len),
           0);
  CHECK(v != -1);
  return v;
}

/* ---- tests -------------------------------------------------------------- */

TEST(udp_sendto_connected_and_explicit) {
  evl_loop *loop = test_open();
  dpeer a, b, c;
  struct sockaddr_in to;
  int pa, pb, pc;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  endpoint(loop, &a, "127.0.0.1", 0, NULL, 0, NULL);
  pa = sockname_port(a.t);
  CHECK(pa > 0);
  endpoint(loop, &b, NULL, 0, "127.0.0.1", pa, NULL);
  pb = sockname_port(b.t);
  CHECK(pb > 0);
  {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    CHECK_EQ(evl_transport_get_peername(b.t, &ss, &len), 0);
    CHECK_EQ(addr_port(&ss), pa);
  }
  /* connected: no address */
  CHECK_EQ(evl_transport_sendto(b.t, "from b", 6, NULL, 0), 0);
  RUN_UNTIL(loop, a.dgrams == 1);
  CHECK_EQ(a.len[0], 6);
  CHECK(memcmp(a.data[0], "from b", 6) == 0);
  CHECK_EQ(a.fromlen[0], sizeof(struct sockaddr_in));
  CHECK_EQ(addr_port(&a.from[0]), pb);
  CHECK_EQ(ntohl(((struct sockaddr_in *)(void *)&a.from[0])->sin_addr.s_addr),
           0x7f000001L);
  /* the reply goes to the address it came from */
  CHECK_EQ(evl_transport_sendto(a.t, "to b", 4, &a.from[0], a.fromlen[0]), 0);
  RUN_UNTIL(loop, b.dgrams == 1);
  CHECK_EQ(b.len[0], 4);
  CHECK(memcmp(b.data[0], "to b", 4) == 0);
  CHECK_EQ(addr_port(&b.from[0]), pa);
  /* an unconnected endpoint with an explicit address */
  endpoint(loop, &c, "127.0.0.1", 0, NULL, 0, NULL);
  pc = sockname_port(c.t);
  loopback_addr(&to, pa);
  CHECK_EQ(evl_transport_sendto(c.t, "from c", 6, &to, sizeof to), 0);
  RUN_UNTIL(loop, a.dgrams == 2);
  CHECK(memcmp(a.data[1], "from c", 6) == 0);
  CHECK_EQ(addr_port(&a.from[1]), pc);
  /* one datagram per sendto, boundaries kept */
  CHECK_EQ(evl_transport_sendto(b.t, "1", 1, NULL, 0), 0);
  CHECK_EQ(evl_transport_sendto(b.t, "22", 2, NULL, 0), 0);
  CHECK_EQ(evl_transport_sendto(b.t, "333", 3, NULL, 0), 0);
  RUN_UNTIL(loop, a.dgrams == 5);
  CHECK_EQ(a.len[2], 1);
  CHECK_EQ(a.len[3], 2);
  CHECK_EQ(a.len[4], 3);
  CHECK(memcmp(a.data[4], "333", 3) == 0);
  CHECK_EQ(evl_transport_get_write_buffer_size(b.t), 0);
  CHECK_EQ(a.errors + b.errors + c.errors, 0);
  CHECK_EQ(a.other_calls + b.other_calls + c.other_calls, 0);
  finish(loop, &a, &b, &c);
}

TEST(udp_zero_length_datagram) {
  evl_loop *loop = test_open();
  dpeer a, b;
  bound_and_connected(loop, &a, &b);
  CHECK_EQ(evl_transport_sendto(b.t, "", 0, NULL, 0), 0);
  CHECK_EQ(evl_transport_sendto(b.t, "x", 1, NULL, 0), 0);
  RUN_UNTIL(loop, a.dgrams == 2);
  CHECK_EQ(a.len[0], 0);
  CHECK_EQ(a.len[1], 1);
  CHECK_EQ(addr_port(&a.from[0]), sockname_port(b.t));
  run_for(loop, 0.02);
  CHECK_EQ(a.dgrams, 2);
  finish(loop, &a, &b, NULL);
}

TEST(udp_connection_refused_error_received) {
#if defined(__linux__) || defined(_WIN32)
  evl_loop *loop = test_open();
  dpeer b;
  int port;
#ifdef _WIN32
  if (strcmp(evl_backend_name(loop), "select") == 0)
    SKIP("wine 8's select shows a UDP socket's ICMP error in exceptfds only, "
         "and recv then says WSAEWOULDBLOCK");
#endif
  memset(&b, 0, sizeof b);
  port = unused_port(SOCK_DGRAM); /* a port nobody listens on */
  endpoint(loop, &b, NULL, 0, "127.0.0.1", port, NULL);
  await_refused_error(loop, &b);
  CHECK_EQ(b.dgrams, 0);
  finish(loop, &b, NULL, NULL);
#else
  SKIP("ICMP errors on connected UDP sockets are Linux- and Windows-specific");
#endif
}

TEST(udp_allow_broadcast) {
  evl_loop *loop = test_open();
  dpeer a, b;
  evl_net_options o;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&o, 0, sizeof o);
  o.allow_broadcast = 1;
  endpoint(loop, &a, "127.0.0.1", 0, NULL, 0, &o);
  CHECK(so_broadcast(a.t) != 0);
  endpoint(loop, &b, "127.0.0.1", 0, NULL, 0, NULL);
  CHECK_EQ(so_broadcast(b.t), 0);
  finish(loop, &a, &b, NULL);
}

TEST(udp_reuse_port) {
  evl_loop *loop = test_open();
  dpeer a, b, c, d;
  evl_net_options o;
  int port;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  memset(&d, 0, sizeof d);
  memset(&o, 0, sizeof o);
  o.reuse_port = 1;
#ifdef _WIN32 /* Winsock has no SO_REUSEPORT */
  CHECK_EQ(endpoint_error(loop, &a, "127.0.0.1", 0, NULL, 0, &o), EVL_ENOTSUP);
  CHECK_EQ(a.made, 0);
  (void)port;
  (void)b;
  (void)c;
  (void)d;
  finish(loop, NULL, NULL, NULL);
  return;
#endif
  endpoint(loop, &a, "127.0.0.1", 0, NULL, 0, &o);
  port = sockname_port(a.t);
  endpoint(loop, &b, "127.0.0.1", port, NULL, 0, &o);
  CHECK_EQ(sockname_port(b.t), port);
  /* without reuse_port the port is taken */
  CHECK_EQ(endpoint_error(loop, &c, "127.0.0.1", port, NULL, 0, NULL),
           EVL_EADDRINUSE);
  /* a datagram to the port reaches one of the two */
  endpoint(loop, &d, NULL, 0, "127.0.0.1", port, NULL);
  CHECK_EQ(evl_transport_sendto(d.t, "hi", 2, NULL, 0), 0);
  RUN_UNTIL(loop, a.dgrams + b.dgrams == 1);
  finish(loop, &a, &b, &d);
}

TEST(udp_close_connection_lost) {
  evl_loop *loop = test_open();
  dpeer a, b;
  bound_and_connected(loop, &a, &b);
  CHECK_EQ(evl_transport_is_closing(a.t), 0);
  evl_transport_close(a.t);
  CHECK_EQ(evl_transport_is_closing(a.t), 1);
  CHECK_EQ(evl_transport_sendto(a.t, "x", 1, NULL, 0), EVL_ECLOSING);
  evl_transport_close(a.t); /* idempotent */
  RUN_UNTIL(loop, a.lost == 1);
  CHECK_EQ(a.lost_err, 0);
  /* abort works the same way for datagrams */
  evl_transport_abort(b.t);
  RUN_UNTIL(loop, b.lost == 1);
  CHECK_EQ(b.lost_err, 0);
  run_for(loop, 0.02);
  CHECK_EQ(a.lost, 1);
  CHECK_EQ(b.lost, 1);
  finish(loop, NULL, NULL, NULL);
}

TEST(udp_ipv6) {
  evl_loop *loop;
  dpeer a, b;
  struct sockaddr_storage ss;
  size_t len = sizeof ss;
  int fd = (int)socket(AF_INET6, SOCK_DGRAM, 0);
  struct sockaddr_in6 sin6;
  int ok;
  if (fd < 0) {
    printf("  note: no IPv6; skipped\n");
    return;
  }
  memset(&sin6, 0, sizeof sin6);
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
  test_closesocket(fd);
  if (!ok) {
    printf("  note: no IPv6 loopback; skipped\n");
    return;
  }
  loop = test_open();
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  endpoint(loop, &a, "::1", 0, NULL, 0, NULL);
  CHECK_EQ(evl_transport_get_sockname(a.t, &ss, &len), 0);
  CHECK_EQ(ss.ss_family, AF_INET6);
  CHECK_EQ(len, sizeof(struct sockaddr_in6));
  endpoint(loop, &b, NULL, 0, "::1",
           ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port), NULL);
  CHECK_EQ(evl_transport_sendto(b.t, "six", 3, NULL, 0), 0);
  RUN_UNTIL(loop, a.dgrams == 1);
  CHECK_EQ(a.from[0].ss_family, AF_INET6);
  CHECK_EQ(a.fromlen[0], sizeof(struct sockaddr_in6));
  CHECK_EQ(evl_transport_sendto(a.t, "back", 4, &a.from[0], a.fromlen[0]), 0);
  RUN_UNTIL(loop, b.dgrams == 1);
  finish(loop, &a, &b, NULL);
}

TEST(udp_bad_ports) {
  evl_loop *loop = test_open();
  dpeer a;
  memset(&a, 0, sizeof a);
  CHECK_EQ(endpoint_error(loop, &a, "127.0.0.1", -1, NULL, 0, NULL),
           EVL_EINVAL);
  CHECK_EQ(endpoint_error(loop, &a, NULL, 0, "127.0.0.1", 70000, NULL),
           EVL_EINVAL);
  finish(loop, NULL, NULL, NULL);
}

/* Paused reading holds datagrams back (on IOCP the one already received
   is kept until reading resumes), and the pause/resume cycle repeats;
   datagram_received may pause and resume inside itself. */
static void on_dgram_pause_resume(evl_transport *t, const void *data,
                                  size_t len, const void *addr, size_t addrlen,
                                  void *user) {
  dpeer_dgram(t, data, len, addr, addrlen, user);
  CHECK_EQ(evl_transport_pause_reading(t), 0);
  CHECK_EQ(evl_transport_resume_reading(t), 0);
}
TEST(udp_pause_and_resume_reading) {
  evl_loop *loop = test_open();
  evl_protocol proto = dpeer_proto;
  dpeer a, b;
  int round, i;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  proto.datagram_received = on_dgram_pause_resume;
  endpoint(loop, &a, "127.0.0.1", 0, NULL, 0, NULL);
  {
    evl_future *f = evl_create_datagram_endpoint(
        loop, &proto, &b, NULL, 0, "127.0.0.1", sockname_port(a.t), NULL);
    CHECK_EQ(wait_fut(loop, f), 0);
    evl_future_release(f);
  }
  RUN_UNTIL(loop, b.made == 1);
  for (round = 0; round < 3; round++) {
    int base = a.dgrams;
    CHECK_EQ(evl_transport_pause_reading(a.t), 0);
    CHECK_EQ(evl_transport_is_reading(a.t), 0);
    for (i = 0; i < 4; i++) {
      char msg[8];
      snprintf(msg, sizeof msg, "d%d", round * 4 + i);
      CHECK_EQ(evl_transport_sendto(b.t, msg, strlen(msg), NULL, 0), 0);
    }
    run_for(loop, 0.05);
    CHECK_EQ(a.dgrams, base); /* nothing while paused */
    CHECK_EQ(evl_transport_resume_reading(a.t), 0);
    RUN_UNTIL(loop, a.dgrams == base + 4);
    for (i = 0; i < 4; i++) {
      char msg[8];
      snprintf(msg, sizeof msg, "d%d", round * 4 + i);
      CHECK_EQ(a.len[base + i], strlen(msg));
      CHECK(memcmp(a.data[base + i], msg, strlen(msg)) == 0);
    }
  }
  /* b pauses and resumes inside each datagram_received: it goes on */
  CHECK_EQ(evl_transport_sendto(a.t, "x", 1, &a.from[0], a.fromlen[0]), 0);
  CHECK_EQ(evl_transport_sendto(a.t, "yz", 2, &a.from[0], a.fromlen[0]), 0);
  RUN_UNTIL(loop, b.dgrams == 2);
  CHECK(b.len[0] == 1 && b.data[0][0] == 'x');
  CHECK(b.len[1] == 2 && memcmp(b.data[1], "yz", 2) == 0);
  finish(loop, &a, &b, NULL);
}

TESTS_BEGIN
T(udp_sendto_connected_and_explicit)
T(udp_zero_length_datagram)
T(udp_connection_refused_error_received)
T(udp_allow_broadcast)
T(udp_reuse_port)
T(udp_close_connection_lost)
T(udp_ipv6)
T(udp_bad_ports)
T(udp_pause_and_resume_reading)
TESTS_END
