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

/* Checks the bytes d[0..len), found at stream offset `at`, against
   test_pat, unless a wrong byte was seen before (*bad): the first wrong
   one sets *bad and its stream offset *bad_at. */
static inline void pat_check(const unsigned char *d, size_t len, size_t at,
                             int *bad, size_t *bad_at) {
  size_t i;
  for (i = 0; i < len && !*bad; i++)
    if (d[i] != test_pat(at + i)) {
      *bad = 1;
      *bad_at = at + i;
    }
}

/* A server on 127.0.0.1 (a port of the kernel's choice) with options o
   (NULL: none), serving once this returns. */
static inline evl_server *serve_loopback(evl_loop *loop,
                                         const evl_protocol *proto, void *user,
                                         const evl_net_options *o) {
  evl_future *f = evl_create_server(loop, proto, user, "127.0.0.1", 0, o);
  evl_server *s = (evl_server *)wait_result(loop, f);
  CHECK(evl_server_port(s) > 0);
  return s;
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

#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

/* A datagram endpoint's record (dpeer_proto's user data): made and lost
   (with the error) counted, error_received counted with its last error,
   calls of data_received (which a datagram endpoint must never make)
   counted; every datagram counted, the first DPEER_KEEP kept (length,
   first 64 bytes, sender). Without a `seen` hook each datagram must fit
   that record; with one, each is shown to it (its number i from 0), which
   checks longer or more datagrams itself (ctx: its state). */
#define DPEER_KEEP 16
typedef struct dpeer {
  evl_transport *t;
  int made, lost, lost_err, dgrams, errors, last_error, other_calls;
  size_t len[DPEER_KEEP];
  unsigned char data[DPEER_KEEP][64];
  struct sockaddr_storage from[DPEER_KEEP];
  size_t fromlen[DPEER_KEEP];
  void (*seen)(struct dpeer *p, int i, const unsigned char *data, size_t len,
               const void *addr);
  void *ctx;
} dpeer;

static inline void dpeer_made(evl_transport *t, void *user) {
  dpeer *p = (dpeer *)user;
  p->t = t;
  p->made++;
}
static inline void dpeer_lost(evl_transport *t, int err, void *user) {
  dpeer *p = (dpeer *)user;
  CHECK(p->t == t); /* the transport connection_made gave */
  p->lost++;
  p->lost_err = err;
  p->t = NULL;
}
static inline void dpeer_dgram(evl_transport *t, const void *data, size_t len,
                               const void *addr, size_t addrlen, void *user) {
  dpeer *p = (dpeer *)user;
  int i = p->dgrams++;
  (void)t;
  CHECK(len == 0 || data != NULL);
  CHECK(addr != NULL);
  CHECK(addrlen > 0 && addrlen <= sizeof p->from[0]);
  if (!p->seen) {
    CHECK(i < DPEER_KEEP);
    CHECK(len <= sizeof p->data[0]);
  }
  if (i < DPEER_KEEP) {
    if (len)
      memcpy(p->data[i], data,
             len < sizeof p->data[i] ? len : sizeof p->data[i]);
    p->len[i] = len;
    memcpy(&p->from[i], addr, addrlen);
    p->fromlen[i] = addrlen;
  }
  if (p->seen)
    p->seen(p, i, (const unsigned char *)data, len, addr);
}
static inline void dpeer_error(evl_transport *t, int err, void *user) {
  dpeer *p = (dpeer *)user;
  (void)t;
  p->errors++;
  p->last_error = err;
}
static inline void dpeer_other(evl_transport *t, const void *data, size_t len,
                               void *user) {
  (void)t;
  (void)data;
  (void)len;
  ((dpeer *)user)->other_calls++;
}
static const evl_protocol dpeer_proto = {
    dpeer_made, dpeer_other, NULL, dpeer_lost,  NULL,
    NULL,       NULL,        NULL, dpeer_dgram, dpeer_error};

/* A datagram endpoint recorded in p (local and remote address optional),
   once connection_made has come. */
static inline evl_transport *endpoint(evl_loop *loop, dpeer *p,
                                      const char *lhost, int lport,
                                      const char *rhost, int rport,
                                      const evl_net_options *o) {
  evl_future *f = evl_create_datagram_endpoint(loop, &dpeer_proto, p, lhost,
                                               lport, rhost, rport, o);
  evl_transport *t;
  t = (evl_transport *)wait_result(loop, f);
  RUN_UNTIL(loop, p->made == 1);
  CHECK(p->t == t);
  return t;
}

/* The port of an IPv4 address (-1 for another family: the datagram tests
   expect IPv4 senders). */
static inline int addr_port(const void *addr) {
  const struct sockaddr_storage *ss = (const struct sockaddr_storage *)addr;
  return ss->ss_family == AF_INET ? sockaddr_port(ss) : -1;
}

/* sin: 127.0.0.1, port. */
static inline void loopback_addr(struct sockaddr_in *sin, int port) {
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin->sin_port = htons((unsigned short)port);
}

/* The local port of a socket bound to an IPv4 address. */
static inline int sock_port(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  CHECK_EQ(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}

/* A port on 127.0.0.1 that nothing uses (TCP or UDP: type): the one the
   kernel gave a socket bound there, closed again. */
static inline int unused_port(int type) {
  struct sockaddr_in sin;
  int fd = (int)socket(AF_INET, type, 0), port;
  CHECK(fd >= 0);
  loopback_addr(&sin, 0);
  CHECK_EQ(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  port = sock_port(fd);
  test_closesocket(fd);
  return port;
}

/* p, connected to a port nobody listens on, sends there until the ICMP
   error comes back through error_received (on a later receive or send;
   at most 50 tries 20 ms apart); the endpoint stays open. */
static inline void await_refused_error(evl_loop *loop, dpeer *p) {
  int i;
  for (i = 0; i < 50 && p->errors == 0; i++) {
    int rc = evl_transport_sendto(p->t, "anyone?", 7, NULL, 0);
    CHECK(rc == 0 || rc == EVL_ECONNREFUSED);
    run_for(loop, 0.02);
  }
  CHECK(p->errors >= 1);
  CHECK_EQ(p->last_error, EVL_ECONNREFUSED);
  CHECK_EQ(p->lost, 0); /* an error_received does not close the endpoint */
}

/* A temporary file (its fd) of n bytes of test_pat(3 + i): what follows a
   3-byte header in the stream of a sendfile test. */
static inline int pattern_file(size_t n) {
  unsigned char *data = test_pattern_buf(n, 3);
  int fd = test_tmpfile_fd();
  size_t off = 0;
  CHECK(fd >= 0);
  while (off < n) {
    long w = test_fd_write(fd, data + off, n - off);
    CHECK(w > 0);
    off += (size_t)w;
  }
  free(data);
  return fd;
}

/* The local port of an IPv4 endpoint. */
static inline int sockname_port(evl_transport *t) {
  struct sockaddr_storage ss;
  size_t len = sizeof ss;
  CHECK_EQ(evl_transport_get_sockname(t, &ss, &len), 0);
  CHECK_EQ(ss.ss_family, AF_INET);
  CHECK_EQ(len, sizeof(struct sockaddr_in));
  return addr_port(&ss);
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
