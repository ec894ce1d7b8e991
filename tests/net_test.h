/* Helpers the network tests share (include after test.h). */
#ifndef EVL_NET_TEST_H
#define EVL_NET_TEST_H

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

/* Waits (at most 20 s) for f, which must succeed; releases it and
   returns its result (a server, a transport...). */
static inline void *wait_result(evl_loop *loop, evl_future *f) {
  void *r;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  r = evl_future_result(f);
  CHECK(r != NULL);
  evl_future_release(f);
  return r;
}

#ifndef EVLOOP_NO_NET /* (t_ref includes this header in every build) */
/* Closes a server, waits until it is closed, frees it. */
static inline void test_server_done(evl_loop *loop, evl_server *srv) {
  evl_future *w;
  evl_server_close(srv);
  w = evl_server_wait_closed(srv);
  CHECK(w != NULL);
  CHECK_EQ(wait_fut(loop, w), 0);
  evl_future_release(w);
  evl_server_free(srv);
}

/* ---- A recording protocol ------------------------------------------------
   rec_proto's callbacks record what a connection hears into the rec_peer
   given as its user data: made and lost (with the error) counted, the
   first bytes kept, end of file counted (its return value: eof_keep); with
   echo set, each chunk is written back. */
typedef struct rec_peer {
  evl_transport *t;
  int made, lost, lost_err, eofs, eof_keep, echo;
  size_t n;
  unsigned char buf[256];
} rec_peer;
static inline void rec_made(evl_transport *t, void *user) {
  rec_peer *p = (rec_peer *)user;
  p->t = t;
  p->made++;
}
static inline void rec_data(evl_transport *t, const void *data, size_t len,
                            void *user) {
  rec_peer *p = (rec_peer *)user;
  if (p->n + len <= sizeof p->buf)
    memcpy(p->buf + p->n, data, len);
  p->n += len;
  if (p->echo)
    CHECK_EQ(evl_transport_write(t, data, len), 0);
}
static inline int rec_eof(evl_transport *t, void *user) {
  rec_peer *p = (rec_peer *)user;
  (void)t;
  p->eofs++;
  return p->eof_keep;
}
static inline void rec_lost(evl_transport *t, int err, void *user) {
  rec_peer *p = (rec_peer *)user;
  (void)t;
  p->lost++;
  p->lost_err = err;
  p->t = NULL;
}
static const evl_protocol rec_proto = {
    rec_made, rec_data, rec_eof, rec_lost, NULL, NULL, NULL, NULL, NULL, NULL};

/* A connection attempt that must fail: returns its error, after checking
   that the future carries it and no transport. */
static inline int test_connect_error(evl_loop *loop, const evl_protocol *proto,
                                     void *user, const char *host, int port) {
  evl_future *f = evl_create_connection(loop, proto, user, host, port, NULL);
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  CHECK_EQ(evl_future_error(f), rc);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
  return rc;
}

/* ---- Shared by the stream-socket tests (t_tcp, t_sock, t_sigpipe) ---- */

#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

/* The port of an IPv4 or IPv6 address (host order); -1 for another
   family. */
static inline int sockaddr_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)(const void *)ss)->sin_port);
  if (ss->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)(const void *)ss)->sin6_port);
  return -1;
}

/* A plain blocking listening TCP socket on 127.0.0.1, on a port of its
   own, outside any loop (Windows too): connects to it complete (the
   backlog) whether or not anyone accepts. *port and *addr (either may be
   NULL) get its port and its address. */
static inline int loopback_listener(int backlog, int *port,
                                    struct sockaddr_in *addr) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int fd = (int)socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_EQ(listen(fd, backlog), 0);
  CHECK_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  if (port)
    *port = ntohs(sa.sin_port);
  if (addr)
    *addr = sa;
  return fd;
}

/* ---- Shared by the datagram and completion tests (t_udp, t_iocp) ---- */

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

#ifndef _WIN32
#include <netinet/in.h>
#include <sys/socket.h>
/* A plain listening TCP socket on 127.0.0.1 (port out), outside any loop:
   connects to it complete (the backlog) whether or not anyone accepts. */
static inline int raw_tcp_listener(int *port, int backlog) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(0x7f000001);
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(listen(fd, backlog) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
  *port = ntohs(sa.sin_port);
  return fd;
}
#endif

#endif /* EVLOOP_NO_NET */

#endif
