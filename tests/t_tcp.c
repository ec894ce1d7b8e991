/* TCP transports and servers on loopback: create_server/create_connection,
   data both ways, close and EOF, half-close, big writes, writev, flow
   control, pause/resume reading, close inside data_received, abort,
   buffered protocols, addresses, TCP_NODELAY, listening on all interfaces
   and on lists of hosts, address reuse, start_serving, server close,
   wait_closed, serve_forever, connect_accepted_socket and sendfile. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#endif

/* ---- helpers ------------------------------------------------------------ */

static int g_seq; /* orders callbacks across transports */

/* One end of a connection and what happened to it. */
typedef struct peer {
  evl_transport *t;
  int made, lost, lost_err, eofs, data_calls, after_lost;
  int made_seq, eof_seq, lost_seq;
  /* behaviour */
  int eof_keep;      /* eof_received's return value */
  int echo;          /* write back what arrives */
  int close_in_data; /* close from inside data_received */
  int pause_on_made; /* pause reading in connection_made */
  int check_pat;     /* check the bytes against test_pat() */
  int write_after_close_rc, closing_after_close;
  int abort_in_data, close_in_eof, lost_write_rc;
  /* received bytes: counted, the first `cap` kept in buf */
  size_t n;
  unsigned char *buf;
  size_t cap;
  int pat_bad;
  size_t pat_bad_at;
  /* flow control */
  int pauses, resumes;
  size_t size_at_pause, size_at_resume;
  /* buffered protocol */
  unsigned char small[1000];
  int get_buffer_calls;
} peer;

static void peer_reset(peer *p) {
  memset(p, 0, sizeof *p);
  p->write_after_close_rc = 1;
}

static void on_made(evl_transport *t, void *user) {
  peer *p = (peer *)user;
  p->t = t;
  p->made++;
  p->made_seq = ++g_seq;
  if (p->pause_on_made)
    CHECK_EQ(evl_transport_pause_reading(t), 0);
}

static void take_bytes(peer *p, const unsigned char *d, size_t len) {
  size_t i;
  if (p->check_pat && !p->pat_bad)
    for (i = 0; i < len; i++)
      if (d[i] != test_pat(p->n + i)) {
        p->pat_bad = 1;
        p->pat_bad_at = p->n + i;
        break;
      }
  if (p->buf && p->n < p->cap) {
    size_t k = p->cap - p->n < len ? p->cap - p->n : len;
    memcpy(p->buf + p->n, d, k);
  }
  p->n += len;
}

static void on_data(evl_transport *t, const void *data, size_t len,
                    void *user) {
  peer *p = (peer *)user;
  if (p->lost)
    p->after_lost++;
  CHECK(len > 0);
  p->data_calls++;
  take_bytes(p, (const unsigned char *)data, len);
  if (p->echo)
    CHECK_EQ(evl_transport_write(t, data, len), 0);
  if (p->abort_in_data) {
    evl_transport_abort(t);
    evl_transport_abort(t); /* idempotent */
    evl_transport_close(t);
  }
  if (p->close_in_data) {
    evl_transport_close(t);
    p->closing_after_close = evl_transport_is_closing(t);
    p->write_after_close_rc = evl_transport_write(t, "late", 4);
    evl_transport_close(t); /* idempotent */
  }
}

static int on_eof(evl_transport *t, void *user) {
  peer *p = (peer *)user;
  (void)t;
  if (p->lost)
    p->after_lost++;
  p->eofs++;
  p->eof_seq = ++g_seq;
  if (p->close_in_eof)
    evl_transport_close(t);
  return p->eof_keep;
}

static void on_lost(evl_transport *t, int err, void *user) {
  peer *p = (peer *)user;
  (void)t;
  if (p->lost)
    p->after_lost++;
  p->lost++;
  p->lost_err = err;
  p->lost_seq = ++g_seq;
  p->lost_write_rc = evl_transport_write(t, "x", 1);
  p->t = NULL; /* freed after this returns */
}

static void on_pause(evl_transport *t, void *user) {
  peer *p = (peer *)user;
  p->pauses++;
  p->size_at_pause = evl_transport_get_write_buffer_size(t);
}

static void on_resume(evl_transport *t, void *user) {
  peer *p = (peer *)user;
  p->resumes++;
  p->size_at_resume = evl_transport_get_write_buffer_size(t);
}

static void *on_get_buffer(evl_transport *t, size_t hint, size_t *len,
                           void *user) {
  peer *p = (peer *)user;
  (void)t;
  (void)hint;
  p->get_buffer_calls++;
  *len = sizeof p->small; /* smaller than what arrives: several reads */
  return p->small;
}

static void on_buffer_updated(evl_transport *t, size_t nbytes, void *user) {
  peer *p = (peer *)user;
  (void)t;
  CHECK(nbytes > 0 && nbytes <= sizeof p->small);
  p->data_calls++;
  take_bytes(p, p->small, nbytes);
}

static const evl_protocol client_proto = {on_made,  on_data,   on_eof, on_lost,
                                          on_pause, on_resume, NULL,   NULL,
                                          NULL,     NULL};

/* A server gives each connection a peer of its own, copied from tmpl. */
#define MAX_PEERS 16
typedef struct server_ctx {
  evl_server *free_in_made; /* evl_server_free from connection_made */
  peer tmpl;
  peer peers[MAX_PEERS];
  int n;
} server_ctx;

static void server_ctx_init(server_ctx *c) {
  memset(c, 0, sizeof *c);
  peer_reset(&c->tmpl);
}

static void server_made(evl_transport *t, void *user) {
  server_ctx *c = (server_ctx *)user;
  peer *p;
  CHECK(c->n < MAX_PEERS);
  CHECK(evl_transport_user(t) == c);
  p = &c->peers[c->n++];
  *p = c->tmpl;
  if (c->tmpl.cap) {
    p->buf = (unsigned char *)malloc(c->tmpl.cap);
    CHECK(p->buf != NULL);
  }
  evl_transport_set_user(t, p);
  CHECK(evl_transport_user(t) == p);
  on_made(t, p);
  if (c->free_in_made) {
    evl_server_free(c->free_in_made);
    c->free_in_made = NULL;
  }
}

static void server_ctx_free(server_ctx *c) {
  int i;
  for (i = 0; i < c->n; i++)
    free(c->peers[i].buf);
}

/* Ends a test: closes the server s, frees c's buffers and the loop. */
static void server_ctx_done(evl_loop *loop, evl_server *s, server_ctx *c) {
  test_server_done(loop, s);
  server_ctx_free(c);
  test_close(loop);
}

static const evl_protocol server_proto = {
    server_made, on_data, on_eof, on_lost, on_pause,
    on_resume,   NULL,    NULL,   NULL,    NULL};

static const evl_protocol buffered_server_proto = {
    server_made,   on_data,           on_eof, on_lost, on_pause, on_resume,
    on_get_buffer, on_buffer_updated, NULL,   NULL};

static evl_server *serve_proto(evl_loop *loop, const evl_protocol *proto,
                               server_ctx *c, const char *host, int port,
                               const evl_net_options *opts) {
  evl_future *f = evl_create_server(loop, proto, c, host, port, opts);
  evl_server *s;
  s = (evl_server *)wait_result(loop, f);
  return s;
}
static evl_server *serve(evl_loop *loop, server_ctx *c) {
  return serve_proto(loop, &server_proto, c, "127.0.0.1", 0, NULL);
}

/* Connects p to host:port (opts may be NULL) and waits for
   connection_made. */
static evl_transport *dial(evl_loop *loop, peer *p, const char *host, int port,
                           const evl_net_options *opts) {
  evl_future *f =
      evl_create_connection(loop, &client_proto, p, host, port, opts);
  evl_transport *t;
  t = (evl_transport *)wait_result(loop, f);
  RUN_UNTIL(loop, p->made == 1);
  CHECK(p->t == t);
  CHECK(evl_transport_loop(t) == loop);
  CHECK(evl_transport_user(t) == p);
  return t;
}

/* Connection attempt that must fail; returns the error. */
static int dial_error(evl_loop *loop, const char *host, int port) {
  peer p;
  int rc;
  peer_reset(&p);
  rc = test_connect_error(loop, &client_proto, &p, host, port);
  CHECK_EQ(p.made, 0);
  return rc;
}

/* Closes both transports (if open) and waits for both connection_lost. */
static void close_both(evl_loop *loop, peer *a, peer *b) {
  if (a->t)
    evl_transport_close(a->t);
  if (b->t)
    evl_transport_close(b->t);
  RUN_UNTIL(loop, a->lost == 1 && b->lost == 1);
}

static int fd_port(int fd, int *family) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  CHECK_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  if (family)
    *family = ss.ss_family;
  return sockaddr_port(&ss);
}

static int have_ipv6(void) {
  struct sockaddr_in6 sin6;
  int fd = (int)socket(AF_INET6, SOCK_STREAM, 0), ok;
  if (fd < 0)
    return 0;
  memset(&sin6, 0, sizeof sin6);
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
  test_closesocket(fd);
  return ok;
}

/* One echo round trip through a new connection to host:port. */
static void echo_once(evl_loop *loop, server_ctx *c, const char *host,
                      int port) {
  peer cl;
  unsigned char got[16];
  int before = c->n;
  peer *sp;
  peer_reset(&cl);
  cl.buf = got;
  cl.cap = sizeof got;
  c->tmpl.echo = 1;
  dial(loop, &cl, host, port, NULL);
  RUN_UNTIL(loop, c->n == before + 1);
  sp = &c->peers[before];
  CHECK_EQ(evl_transport_write(cl.t, "ping", 4), 0);
  RUN_UNTIL(loop, cl.n == 4);
  CHECK(memcmp(got, "ping", 4) == 0);
  close_both(loop, &cl, sp);
}

/* ---- the usual fixture: one server, one client connected to it --------- */

/* conn_init opens the loop and resets both sides; the test then sets what
   the server's ends do (c.tmpl) and what the client does (cl) before
   conn_open starts the server and connects the client to it. sp is the
   server's end of that connection. conn_done closes the server, frees the
   peers' buffers and closes the loop. */
typedef struct tcp_conn {
  evl_loop *loop;
  server_ctx c;
  evl_server *s;
  peer cl, *sp;
} tcp_conn;

static void conn_init(tcp_conn *tc) {
  tc->loop = test_open();
  server_ctx_init(&tc->c);
  peer_reset(&tc->cl);
  tc->s = NULL;
  tc->sp = NULL;
}

/* The client connects (opts may be NULL) to the server tc->s. */
static void conn_dial(tcp_conn *tc, const evl_net_options *opts) {
  dial(tc->loop, &tc->cl, "127.0.0.1", evl_server_port(tc->s), opts);
  RUN_UNTIL(tc->loop, tc->c.n == 1);
  tc->sp = &tc->c.peers[0];
}

static void conn_open(tcp_conn *tc) {
  tc->s = serve(tc->loop, &tc->c);
  conn_dial(tc, NULL);
}

static void conn_done(tcp_conn *tc) {
  server_ctx_done(tc->loop, tc->s, &tc->c);
}

/* Waits until both ends of tc's connection are lost, each without error. */
static void conn_lost_cleanly(tcp_conn *tc) {
  RUN_UNTIL(tc->loop, tc->cl.lost == 1 && tc->sp->lost == 1);
  CHECK_EQ(tc->cl.lost_err, 0);
  CHECK_EQ(tc->sp->lost_err, 0);
}

/* One write of total bytes of test_pat() to t; the buffer is wiped and
   freed at once: what could not be sent yet, the transport must have
   copied. */
static void write_pattern(evl_transport *t, size_t total) {
  unsigned char *data = test_pattern_buf(total, 0);
  CHECK_EQ(evl_transport_write(t, data, total), 0);
  memset(data, 0, total);
  free(data);
}

/* Writes data (room bytes at the most) chunk by chunk from tc's client,
   letting the loop run now and then, until it is told to pause writing;
   until then its buffer never holds more than high. Returns the bytes
   written. */
static size_t write_until_paused(tcp_conn *tc, const unsigned char *data,
                                 size_t room, size_t chunk, size_t high) {
  size_t sent = 0;
  int i;
  for (i = 0; tc->cl.pauses == 0; i++) {
    CHECK(sent + chunk <= room);
    CHECK(evl_transport_get_write_buffer_size(tc->cl.t) <= high);
    CHECK_EQ(evl_transport_write(tc->cl.t, data + sent, chunk), 0);
    sent += chunk;
    if (i % 16 == 0)
      evl_run_once(tc->loop, 0);
  }
  return sent;
}

/* ---- connection basics -------------------------------------------------- */

TEST(tcp_data_both_ways_and_close) {
  tcp_conn tc;
  unsigned char cbuf[64], sbuf[64];
  int port;
  conn_init(&tc);
  tc.cl.buf = cbuf;
  tc.cl.cap = sizeof cbuf;
  tc.c.tmpl.cap = sizeof sbuf;
  tc.s = serve(tc.loop, &tc.c);
  port = evl_server_port(tc.s);
  CHECK(port > 0 && port < 65536);
  CHECK_EQ(evl_server_is_serving(tc.s), 1);
  conn_dial(&tc, NULL);
  CHECK_EQ(tc.sp->made, 1);
  CHECK(tc.sp->t != NULL);
  CHECK(evl_transport_fd(tc.cl.t) >= 0);
  CHECK(evl_transport_fd(tc.sp->t) >= 0);
  CHECK_EQ(evl_transport_is_closing(tc.cl.t), 0);
  CHECK_EQ(evl_transport_is_reading(tc.cl.t), 1);
  CHECK_EQ(evl_transport_can_write_eof(tc.cl.t), 1);

  CHECK_EQ(evl_transport_write(tc.cl.t, "hello", 5), 0);
  RUN_UNTIL(tc.loop, tc.sp->n == 5);
  CHECK(memcmp(tc.sp->buf, "hello", 5) == 0);
  CHECK_EQ(evl_transport_write(tc.sp->t, "world!", 6), 0);
  RUN_UNTIL(tc.loop, tc.cl.n == 6);
  CHECK(memcmp(cbuf, "world!", 6) == 0);
  CHECK_EQ(evl_transport_get_write_buffer_size(tc.cl.t), 0);

  /* The client closes: lost(0) on it; the server sees EOF, then lost(0). */
  evl_transport_close(tc.cl.t);
  CHECK_EQ(evl_transport_is_closing(tc.cl.t), 1);
  CHECK_EQ(evl_transport_write(tc.cl.t, "x", 1), EVL_ECLOSING);
  CHECK_EQ(tc.cl.lost, 0); /* connection_lost is not called inline */
  conn_lost_cleanly(&tc);
  CHECK_EQ(tc.sp->eofs, 1);
  CHECK(tc.sp->eof_seq < tc.sp->lost_seq);
  CHECK_EQ(tc.cl.eofs, 0);
  run_for(tc.loop, 0.03);
  CHECK_EQ(tc.cl.lost, 1);
  CHECK_EQ(tc.sp->lost, 1);
  CHECK_EQ(tc.cl.after_lost + tc.sp->after_lost, 0);
  conn_done(&tc);
}

TEST(tcp_server_close_gives_client_eof) {
  tcp_conn tc;
  conn_init(&tc);
  conn_open(&tc);
  CHECK_EQ(evl_transport_write(tc.sp->t, "bye", 3), 0);
  evl_transport_close(tc.sp->t); /* queued data is sent first */
  conn_lost_cleanly(&tc);
  CHECK_EQ(tc.cl.n, 3);
  CHECK_EQ(tc.cl.eofs, 1);
  CHECK(tc.cl.eof_seq < tc.cl.lost_seq);
  conn_done(&tc);
}

TEST(tcp_half_close_eof_received_keeps_writing) {
  tcp_conn tc;
  unsigned char cbuf[64], sbuf[64];
  conn_init(&tc);
  tc.cl.buf = cbuf;
  tc.cl.cap = sizeof cbuf;
  tc.c.tmpl.cap = sizeof sbuf;
  tc.c.tmpl.eof_keep = 1;
  conn_open(&tc);
  CHECK_EQ(evl_transport_write(tc.cl.t, "request", 7), 0);
  CHECK_EQ(evl_transport_write_eof(tc.cl.t), 0);
  CHECK_EQ(evl_transport_is_closing(tc.cl.t), 0);
  RUN_UNTIL(tc.loop, tc.sp->eofs == 1);
  CHECK_EQ(tc.sp->n, 7);
  CHECK(memcmp(tc.sp->buf, "request", 7) == 0);
  run_for(tc.loop, 0.03);
  /* eof_received returned 1: the server side is still open for writing */
  CHECK_EQ(tc.sp->lost, 0);
  CHECK(tc.sp->t != NULL);
  CHECK_EQ(evl_transport_is_closing(tc.sp->t), 0);
  CHECK_EQ(evl_transport_write(tc.sp->t, "reply after eof", 15), 0);
  RUN_UNTIL(tc.loop, tc.cl.n == 15);
  CHECK(memcmp(cbuf, "reply after eof", 15) == 0);
  CHECK_EQ(tc.cl.lost, 0);
  evl_transport_close(tc.cl.t);
  evl_transport_close(tc.sp->t);
  conn_lost_cleanly(&tc);
  conn_done(&tc);
}

/* ---- big writes, writev ------------------------------------------------- */

TEST(tcp_write_64mib_in_one_call) {
  const size_t total = (size_t)64 << 20;
  tcp_conn tc;
  conn_init(&tc);
  tc.c.tmpl.check_pat = 1;
  conn_open(&tc);
  write_pattern(tc.cl.t, total);
  CHECK(evl_transport_get_write_buffer_size(tc.cl.t) > 0);
  RUN_UNTIL(tc.loop, tc.sp->n >= total || tc.sp->pat_bad || tc.sp->lost);
  CHECK_EQ(tc.sp->pat_bad, 0);
  CHECK_EQ(tc.sp->n, total);
  RUN_UNTIL(tc.loop, evl_transport_get_write_buffer_size(tc.cl.t) == 0);
  close_both(tc.loop, &tc.cl, tc.sp);
  CHECK_EQ(tc.sp->n, total);
  conn_done(&tc);
}

TEST(tcp_writev) {
  const size_t big = (size_t)3 << 20;
  tcp_conn tc;
  unsigned char *a, *b;
  evl_iovec iov[4];
  conn_init(&tc);
  tc.c.tmpl.check_pat = 1;
  conn_open(&tc);
  /* small pieces, an empty one, then two big ones that cannot all go at
     once: the order must hold across what is sent and what is queued */
  a = test_pattern_buf(big, 10);
  b = test_pattern_buf(big, 10 + big);
  {
    unsigned char head[10];
    size_t i;
    for (i = 0; i < 10; i++)
      head[i] = test_pat(i);
    iov[0].base = head;
    iov[0].len = 10;
    iov[1].base = "";
    iov[1].len = 0;
    iov[2].base = a;
    iov[2].len = big;
    iov[3].base = b;
    iov[3].len = big;
    CHECK_EQ(evl_transport_writev(tc.cl.t, iov, 4), 0);
  }
  free(a);
  free(b);
  CHECK_EQ(evl_transport_writev(tc.cl.t, iov, 0), 0); /* nothing to send */
  RUN_UNTIL(tc.loop, tc.sp->n >= 10 + 2 * big || tc.sp->pat_bad || tc.sp->lost);
  CHECK_EQ(tc.sp->pat_bad, 0);
  CHECK_EQ(tc.sp->n, 10 + 2 * big);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

/* ---- flow control ------------------------------------------------------- */

TEST(tcp_flow_control_pause_resume_writing) {
  const size_t high = 64 * 1024, low = 16 * 1024, chunk = 8 * 1024;
  const size_t size = (size_t)64 << 20;
  tcp_conn tc;
  unsigned char *data;
  size_t sent;
  int i;
  conn_init(&tc);
  tc.c.tmpl.check_pat = 1;
  tc.c.tmpl.pause_on_made = 1; /* the reader does not read at first */
  conn_open(&tc);
  CHECK_EQ(evl_transport_is_reading(tc.sp->t), 0);
  CHECK_EQ(evl_transport_set_write_buffer_limits(tc.cl.t, high, low), 0);
  CHECK_EQ(evl_transport_set_write_buffer_limits(tc.cl.t, 1000, 2000),
           EVL_EINVAL);
  data = test_pattern_buf(size, 0);
  /* Write 8 KiB at a time until the buffer passes the high mark (the
     kernel's buffers fill first), keeping 8 chunks for after */
  sent = write_until_paused(&tc, data, size - 8 * chunk, chunk, high);
  CHECK_EQ(tc.cl.pauses, 1);
  CHECK(tc.cl.size_at_pause > high);
  CHECK(evl_transport_get_write_buffer_size(tc.cl.t) > high);
  /* more writes while paused: no second pause_writing */
  for (i = 0; i < 8; i++) {
    CHECK_EQ(evl_transport_write(tc.cl.t, data + sent, chunk), 0);
    sent += chunk;
  }
  run_for(tc.loop, 0.05);
  CHECK_EQ(tc.cl.pauses, 1);
  CHECK_EQ(tc.cl.resumes, 0);
  CHECK_EQ(tc.sp->n, 0);
  CHECK_EQ(tc.sp->data_calls, 0);
  /* the reader resumes: the buffer drains, resume_writing once */
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0);
  CHECK_EQ(evl_transport_is_reading(tc.sp->t), 1);
  RUN_UNTIL(tc.loop, tc.sp->n >= sent || tc.sp->pat_bad || tc.sp->lost);
  CHECK_EQ(tc.sp->pat_bad, 0);
  CHECK_EQ(tc.sp->n, sent);
  RUN_UNTIL(tc.loop, evl_transport_get_write_buffer_size(tc.cl.t) == 0);
  CHECK_EQ(tc.cl.resumes, 1);
  CHECK(tc.cl.size_at_resume <= low);
  CHECK_EQ(tc.cl.pauses, 1);
  free(data);
  close_both(tc.loop, &tc.cl, tc.sp);
  CHECK_EQ(tc.cl.pauses, 1);
  CHECK_EQ(tc.cl.resumes, 1);
  conn_done(&tc);
}

TEST(tcp_default_write_limits) {
  tcp_conn tc;
  const size_t total = (size_t)64 << 20;
  conn_init(&tc);
  tc.c.tmpl.pause_on_made = 1;
  conn_open(&tc);
  /* one write far beyond what the kernel holds: pause_writing once,
     at once (asyncio calls it from inside write) */
  write_pattern(tc.cl.t, total);
  CHECK_EQ(tc.cl.pauses, 1);
  CHECK(tc.cl.size_at_pause > 64 * 1024);
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0);
  RUN_UNTIL(tc.loop, tc.sp->n == total);
  RUN_UNTIL(tc.loop, tc.cl.resumes == 1);
  CHECK(tc.cl.size_at_resume <= 16 * 1024);
  CHECK_EQ(tc.cl.pauses, 1);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

TEST(tcp_pause_resume_reading) {
  tcp_conn tc;
  unsigned char sbuf[64];
  conn_init(&tc);
  tc.c.tmpl.cap = sizeof sbuf;
  conn_open(&tc);
  CHECK_EQ(evl_transport_is_reading(tc.sp->t), 1);
  CHECK_EQ(evl_transport_pause_reading(tc.sp->t), 0);
  CHECK_EQ(evl_transport_is_reading(tc.sp->t), 0);
  CHECK_EQ(evl_transport_pause_reading(tc.sp->t), 0); /* no-op */
  CHECK_EQ(evl_transport_write(tc.cl.t, "abc", 3), 0);
  CHECK_EQ(evl_transport_write_eof(tc.cl.t), 0);
  run_for(tc.loop, 0.1);
  CHECK_EQ(tc.sp->data_calls, 0);
  CHECK_EQ(tc.sp->eofs, 0);
  CHECK_EQ(tc.sp->lost, 0);
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0);
  CHECK_EQ(evl_transport_is_reading(tc.sp->t), 1);
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0); /* no-op */
  RUN_UNTIL(tc.loop, tc.sp->n == 3 && tc.sp->lost == 1);
  CHECK(memcmp(tc.sp->buf, "abc", 3) == 0);
  CHECK_EQ(tc.sp->eofs, 1);
  CHECK_EQ(tc.sp->lost_err, 0);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

/* ---- close inside data_received, abort ---------------------------------- */

TEST(tcp_close_inside_data_received) {
  tcp_conn tc;
  char msg[200];
  conn_init(&tc);
  tc.c.tmpl.close_in_data = 1;
  tc.c.tmpl.echo = 1; /* writes, then closes: the echo is still sent */
  conn_open(&tc);
  /* one write, read at once: no unread data turns the close into a reset */
  memset(msg, 'm', sizeof msg);
  CHECK_EQ(evl_transport_write(tc.cl.t, msg, sizeof msg), 0);
  conn_lost_cleanly(&tc);
  CHECK_EQ(tc.sp->data_calls, 1); /* nothing after close */
  CHECK_EQ(tc.sp->n, sizeof msg);
  CHECK_EQ(tc.sp->closing_after_close, 1);
  CHECK_EQ(tc.sp->write_after_close_rc, EVL_ECLOSING);
  CHECK_EQ(tc.sp->after_lost, 0);
  CHECK_EQ(tc.cl.n, tc.sp->n); /* the echo written before close arrived */
  CHECK_EQ(tc.cl.eofs, 1);
  conn_done(&tc);
}

TEST(tcp_abort_drops_queued_data) {
  const size_t total = (size_t)32 << 20;
  tcp_conn tc;
  conn_init(&tc);
  tc.c.tmpl.pause_on_made = 1;
  tc.c.tmpl.check_pat = 1;
  conn_open(&tc);
  write_pattern(tc.cl.t, total);
  CHECK(evl_transport_get_write_buffer_size(tc.cl.t) > 0);
  evl_transport_abort(tc.cl.t);
  CHECK_EQ(evl_transport_is_closing(tc.cl.t), 1);
  CHECK_EQ(tc.cl.lost, 0);
  RUN_UNTIL(tc.loop, tc.cl.lost == 1);
  CHECK_EQ(tc.cl.lost_err, 0);
  /* the reader gets less than was written, in order, then the end */
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0);
  RUN_UNTIL(tc.loop, tc.sp->lost == 1);
  CHECK(tc.sp->n < total);
  CHECK_EQ(tc.sp->pat_bad, 0);
  CHECK(tc.sp->lost_err == 0 || tc.sp->lost_err == EVL_ECONNRESET);
  CHECK_EQ(tc.cl.after_lost, 0);
  conn_done(&tc);
}

/* ---- buffered protocol --------------------------------------------------- */

TEST(tcp_buffered_protocol) {
  const size_t total = (size_t)1 << 20;
  evl_loop *loop = test_open();
  server_ctx c, d;
  evl_server *s, *s2;
  peer cl, cl2, *sp, *sp2;
  unsigned char *data;
  server_ctx_init(&c);
  server_ctx_init(&d);
  peer_reset(&cl);
  peer_reset(&cl2);
  c.tmpl.check_pat = 1;
  c.tmpl.cap = total;
  d.tmpl.cap = total;
  s = serve_proto(loop, &buffered_server_proto, &c, "127.0.0.1", 0, NULL);
  s2 = serve(loop, &d); /* the same bytes through data_received */
  dial(loop, &cl, "127.0.0.1", evl_server_port(s), NULL);
  dial(loop, &cl2, "127.0.0.1", evl_server_port(s2), NULL);
  RUN_UNTIL(loop, c.n == 1 && d.n == 1);
  sp = &c.peers[0];
  sp2 = &d.peers[0];
  data = test_pattern_buf(total, 0);
  CHECK_EQ(evl_transport_write(cl.t, data, total), 0);
  CHECK_EQ(evl_transport_write(cl2.t, data, total), 0);
  evl_transport_close(cl.t);
  evl_transport_close(cl2.t);
  RUN_UNTIL(loop, sp->lost == 1 && sp2->lost == 1 && cl.lost && cl2.lost);
  CHECK_EQ(sp->n, total);
  CHECK_EQ(sp->pat_bad, 0);
  CHECK(sp->get_buffer_calls >= (int)(total / sizeof sp->small));
  CHECK_EQ(sp->eofs, 1);
  CHECK_EQ(sp->lost_err, 0);
  CHECK_EQ(sp2->n, total);
  CHECK(memcmp(sp->buf, sp2->buf, total) == 0);
  CHECK(memcmp(sp->buf, data, total) == 0);
  free(data);
  test_server_done(loop, s);
  test_server_done(loop, s2);
  server_ctx_free(&c);
  server_ctx_free(&d);
  test_close(loop);
}

/* ---- addresses and socket options --------------------------------------- */

TEST(tcp_peername_sockname_nodelay) {
  tcp_conn tc;
  struct sockaddr_storage a, b;
  size_t alen, blen;
  int port, one = 0;
  socklen_t olen;
  evl_fd sfd;
  conn_init(&tc);
  tc.s = serve(tc.loop, &tc.c);
  port = evl_server_port(tc.s);
  CHECK_EQ(evl_server_sockets(tc.s, &sfd, 1), 1);
  CHECK(sfd >= 0);
  CHECK_EQ(fd_port((int)sfd, NULL), port);
  conn_dial(&tc, NULL);

  alen = sizeof a;
  CHECK_EQ(evl_transport_get_peername(tc.cl.t, &a, &alen), 0);
  CHECK_EQ(alen, sizeof(struct sockaddr_in));
  CHECK_EQ(a.ss_family, AF_INET);
  CHECK_EQ(ntohl(((struct sockaddr_in *)(void *)&a)->sin_addr.s_addr),
           0x7f000001L);
  CHECK_EQ(sockaddr_port(&a), port);

  alen = sizeof a;
  CHECK_EQ(evl_transport_get_sockname(tc.cl.t, &a, &alen), 0);
  CHECK_EQ(alen, sizeof(struct sockaddr_in));
  blen = sizeof b;
  CHECK_EQ(evl_transport_get_peername(tc.sp->t, &b, &blen), 0);
  CHECK_EQ(blen, sizeof(struct sockaddr_in));
  CHECK_EQ(ntohl(((struct sockaddr_in *)(void *)&b)->sin_addr.s_addr),
           0x7f000001L);
  /* the client's port, seen by both */
  CHECK_EQ(sockaddr_port(&a), sockaddr_port(&b));
  CHECK(sockaddr_port(&a) != port);
  blen = sizeof b;
  CHECK_EQ(evl_transport_get_sockname(tc.sp->t, &b, &blen), 0);
  CHECK_EQ(sockaddr_port(&b), port);

  /* a short buffer: truncated copy, the real length reported */
  alen = 4;
  memset(&a, 0xee, sizeof a);
  CHECK_EQ(evl_transport_get_peername(tc.cl.t, &a, &alen), 0);
  CHECK_EQ(alen, sizeof(struct sockaddr_in));
  CHECK_EQ(((unsigned char *)&a)[4], 0xee);

  CHECK(evl_transport_fd(tc.cl.t) >= 0);
  CHECK(evl_transport_fd(tc.sp->t) >= 0);
  CHECK(evl_transport_fd(tc.cl.t) != evl_transport_fd(tc.sp->t));
  olen = sizeof one;
  CHECK_EQ(getsockopt((int)evl_transport_fd(tc.cl.t), IPPROTO_TCP, TCP_NODELAY,
                      (void *)&one, &olen),
           0);
  CHECK(one != 0);
  one = 0;
  olen = sizeof one;
  CHECK_EQ(getsockopt((int)evl_transport_fd(tc.sp->t), IPPROTO_TCP, TCP_NODELAY,
                      (void *)&one, &olen),
           0);
  CHECK(one != 0);
#ifndef _WIN32 /* Winsock cannot tell whether a socket is non-blocking */
  /* the loop's sockets are non-blocking */
  CHECK(fcntl((int)evl_transport_fd(tc.cl.t), F_GETFL) & O_NONBLOCK);
  CHECK(fcntl((int)evl_transport_fd(tc.sp->t), F_GETFL) & O_NONBLOCK);
#endif
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

TEST(tcp_no_delay_off) {
  tcp_conn tc;
  evl_net_options o;
  int one = 1;
  socklen_t olen = sizeof one;
  conn_init(&tc);
  tc.s = serve(tc.loop, &tc.c);
  memset(&o, 0, sizeof o);
  o.no_delay_off = 1;
  conn_dial(&tc, &o);
  CHECK_EQ(getsockopt((int)evl_transport_fd(tc.cl.t), IPPROTO_TCP, TCP_NODELAY,
                      (void *)&one, &olen),
           0);
  CHECK_EQ(one, 0);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

/* ---- listening addresses ------------------------------------------------- */

TEST(tcp_server_all_interfaces) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s;
  evl_fd fds[8];
  size_t n, i;
  int v4 = 0, v6 = 0, fam, port, v6only;
  socklen_t olen;
  server_ctx_init(&c);
  s = serve_proto(loop, &server_proto, &c, NULL, 0, NULL);
  n = evl_server_sockets(s, fds, 8);
  CHECK(n >= 1 && n <= 8);
  CHECK_EQ(evl_server_sockets(s, NULL, 0), n);
  for (i = 0; i < n; i++) {
    port = fd_port((int)fds[i], &fam);
    CHECK(port > 0);
    if (i == 0)
      CHECK_EQ(evl_server_port(s), port);
    if (fam == AF_INET) {
      v4++;
      echo_once(loop, &c, "127.0.0.1", port);
    } else {
      CHECK_EQ(fam, AF_INET6);
      v6++;
      echo_once(loop, &c, "::1", port);
      v6only = 0;
      olen = sizeof v6only;
      CHECK_EQ(getsockopt((int)fds[i], IPPROTO_IPV6, IPV6_V6ONLY,
                          (void *)&v6only, &olen),
               0);
      if (v6only == 0) /* a dual-stack socket takes IPv4 too */
        v4++;
    }
  }
  CHECK(v4 >= 1);
  if (have_ipv6())
    CHECK(v6 >= 1);
  else
    printf("  note: no IPv6 loopback; IPv6 part skipped\n");
  server_ctx_done(loop, s, &c);
}

TEST(tcp_server_empty_host_is_all_interfaces) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s;
  server_ctx_init(&c);
  s = serve_proto(loop, &server_proto, &c, "", 0, NULL);
  CHECK(evl_server_sockets(s, NULL, 0) >= 1);
  server_ctx_done(loop, s, &c);
}

TEST(tcp_server_host_list) {
  evl_loop *loop;
  server_ctx c;
  evl_server *s;
  evl_fd fds[4];
  int fam0, fam1, p0, p1;
  if (!have_ipv6()) {
    printf("  note: no IPv6 loopback; skipped\n");
    return;
  }
  loop = test_open();
  server_ctx_init(&c);
  s = serve_proto(loop, &server_proto, &c, "127.0.0.1,::1", 0, NULL);
  CHECK_EQ(evl_server_sockets(s, fds, 4), 2);
  p0 = fd_port((int)fds[0], &fam0);
  p1 = fd_port((int)fds[1], &fam1);
  CHECK(fam0 != fam1);
  CHECK(fam0 == AF_INET || fam0 == AF_INET6);
  CHECK(fam1 == AF_INET || fam1 == AF_INET6);
  echo_once(loop, &c, fam0 == AF_INET ? "127.0.0.1" : "::1", p0);
  echo_once(loop, &c, fam1 == AF_INET ? "127.0.0.1" : "::1", p1);
  server_ctx_done(loop, s, &c);
}

TEST(tcp_server_address_in_use_and_reuse_port) {
  evl_loop *loop = test_open();
  server_ctx c, d, e, g;
  evl_server *s, *s2, *s3;
  evl_net_options o;
  evl_future *f;
  int port;
  server_ctx_init(&c);
  server_ctx_init(&d);
  server_ctx_init(&e);
  server_ctx_init(&g);
  s = serve(loop, &c);
  port = evl_server_port(s);
  f = evl_create_server(loop, &server_proto, &d, "127.0.0.1", port, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EADDRINUSE);
  CHECK_EQ(evl_future_error(f), EVL_EADDRINUSE);
  evl_future_release(f);
  test_server_done(loop, s);

  memset(&o, 0, sizeof o);
  o.reuse_port = 1;
#ifdef _WIN32 /* Winsock has no SO_REUSEPORT */
  f = evl_create_server(loop, &server_proto, &e, "127.0.0.1", 0, &o);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  (void)s2;
  (void)s3;
#else
  /* both servers share one context: the kernel picks either of them */
  s2 = serve_proto(loop, &server_proto, &e, "127.0.0.1", 0, &o);
  port = evl_server_port(s2);
  s3 = serve_proto(loop, &server_proto, &e, "127.0.0.1", port, &o);
  CHECK_EQ(evl_server_port(s3), port);
  echo_once(loop, &e, "127.0.0.1", port);
  test_server_done(loop, s2);
  /* s3 still listens on the port */
  echo_once(loop, &e, "127.0.0.1", port);
  test_server_done(loop, s3);
#endif
  server_ctx_free(&c);
  server_ctx_free(&d);
  server_ctx_free(&e);
  server_ctx_free(&g);
  test_close(loop);
}

/* ---- serving ------------------------------------------------------------ */

/* A server on 127.0.0.1 made with no_start_serving: not serving yet. */
static evl_server *serve_not_started(evl_loop *loop, server_ctx *c) {
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.no_start_serving = 1;
  server_ctx_init(c);
  return serve_proto(loop, &server_proto, c, "127.0.0.1", 0, &o);
}

TEST(tcp_no_start_serving) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s = serve_not_started(loop, &c);
  CHECK_EQ(evl_server_is_serving(s), 0);
  CHECK(evl_server_port(s) > 0);
  CHECK_EQ(evl_server_sockets(s, NULL, 0), 1);
  run_for(loop, 0.02);
  CHECK_EQ(c.n, 0);
  CHECK_EQ(evl_server_start_serving(s), 0);
  CHECK_EQ(evl_server_is_serving(s), 1);
  CHECK_EQ(evl_server_start_serving(s), 0); /* again: no-op */
  echo_once(loop, &c, "127.0.0.1", evl_server_port(s));
  server_ctx_done(loop, s, &c);
}

TEST(tcp_server_close_keeps_connections) {
  tcp_conn tc;
  evl_future *w;
  unsigned char cbuf[16];
  int port;
  conn_init(&tc);
  tc.cl.buf = cbuf;
  tc.cl.cap = sizeof cbuf;
  tc.c.tmpl.echo = 1;
  tc.s = serve(tc.loop, &tc.c);
  port = evl_server_port(tc.s);
  conn_dial(&tc, NULL);
  w = evl_server_wait_closed(tc.s);
  CHECK(w != NULL);
  run_for(tc.loop, 0.02);
  CHECK_EQ(evl_future_done(w), 0); /* not closed yet */
  evl_server_close(tc.s);
  CHECK_EQ(evl_server_is_serving(tc.s), 0);
  evl_server_close(tc.s); /* idempotent */
  CHECK_EQ(dial_error(tc.loop, "127.0.0.1", port), EVL_ECONNREFUSED);
  /* the existing connection still echoes */
  CHECK_EQ(evl_transport_write(tc.cl.t, "still", 5), 0);
  RUN_UNTIL(tc.loop, tc.cl.n == 5);
  CHECK(memcmp(cbuf, "still", 5) == 0);
  run_for(tc.loop, 0.02);
  CHECK_EQ(evl_future_done(w), 0); /* a connection is still there */
  evl_transport_close(tc.cl.t);
  RUN_UNTIL(tc.loop, tc.sp->lost == 1 && tc.cl.lost == 1);
  RUN_UNTIL(tc.loop, evl_future_done(w));
  CHECK_EQ(evl_future_error(w), 0);
  evl_future_release(w);
  evl_server_free(tc.s);
  server_ctx_free(&tc.c);
  test_close(tc.loop);
}

TEST(tcp_wait_closed_waits_for_close) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s;
  evl_future *w;
  server_ctx_init(&c);
  s = serve(loop, &c);
  w = evl_server_wait_closed(s);
  CHECK(w != NULL);
  run_for(loop, 0.05);
  CHECK_EQ(evl_future_done(w), 0); /* no connections, but still open */
  evl_server_close(s);
  RUN_UNTIL(loop, evl_future_done(w));
  CHECK_EQ(evl_future_error(w), 0);
  evl_future_release(w);
  evl_server_free(s);
  server_ctx_free(&c);
  test_close(loop);
}

TEST(tcp_serve_forever_cancel_closes) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s;
  evl_future *f, *w;
  int port;
  s = serve_not_started(loop, &c);
  port = evl_server_port(s);
  f = evl_server_serve_forever(s);
  CHECK(f != NULL);
  run_for(loop, 0.02);
  CHECK_EQ(evl_future_done(f), 0);
  CHECK_EQ(evl_server_is_serving(s), 1); /* serve_forever starts serving */
  echo_once(loop, &c, "127.0.0.1", port);
  CHECK_EQ(evl_future_done(f), 0);
  CHECK_EQ(evl_future_cancel(f), 1);
  RUN_UNTIL(loop, evl_server_is_serving(s) == 0);
  CHECK_EQ(evl_future_cancelled(f), 1);
  CHECK_EQ(dial_error(loop, "127.0.0.1", port), EVL_ECONNREFUSED);
  w = evl_server_wait_closed(s);
  CHECK_EQ(wait_fut(loop, w), 0);
  evl_future_release(w);
  CHECK_EQ(evl_future_error(f), EVL_ECANCELED);
  evl_future_release(f);
  evl_server_free(s);
  server_ctx_free(&c);
  test_close(loop);
}

/* ---- connect_accepted_socket ------------------------------------------- */

TEST(tcp_connect_accepted_socket) {
  evl_loop *loop = test_open();
  int sv[2];
  peer a, b;
  unsigned char abuf[16], bbuf[16];
  evl_transport *ta, *tb;
  peer_reset(&a);
  peer_reset(&b);
  a.buf = abuf;
  a.cap = sizeof abuf;
  b.buf = bbuf;
  b.cap = sizeof bbuf;
  CHECK_EQ(test_socketpair(sv), 0);
  /* blocking fds: the loop makes them non-blocking */
  ta = evl_connect_accepted_socket(loop, &client_proto, &a, sv[0]);
  tb = evl_connect_accepted_socket(loop, &client_proto, &b, sv[1]);
  CHECK(ta != NULL && tb != NULL);
  RUN_UNTIL(loop, a.made == 1 && b.made == 1);
  CHECK(a.t == ta && b.t == tb);
  CHECK_EQ(evl_transport_fd(ta), sv[0]);
#ifndef _WIN32
  CHECK(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
#endif
  CHECK_EQ(evl_transport_write(ta, "to b", 4), 0);
  CHECK_EQ(evl_transport_write(tb, "to a!", 5), 0);
  RUN_UNTIL(loop, a.n == 5 && b.n == 4);
  CHECK(memcmp(abuf, "to a!", 5) == 0);
  CHECK(memcmp(bbuf, "to b", 4) == 0);
  evl_transport_close(ta);
  RUN_UNTIL(loop, a.lost == 1 && b.lost == 1);
  CHECK_EQ(b.eofs, 1);
  CHECK_EQ(a.lost_err, 0);
  CHECK_EQ(b.lost_err, 0);
  /* the loop closed both fds */
  CHECK(test_sock_is_closed(sv[0]));
  CHECK(test_sock_is_closed(sv[1]));
  test_close(loop);
}

TEST(tcp_connect_accepted_tcp_socket) {
  evl_loop *loop = test_open();
  struct sockaddr_in sin;
  int lfd, cfd, afd, one = 0;
  socklen_t olen = sizeof one;
  peer a, b;
  evl_transport *ta, *tb;
  peer_reset(&a);
  peer_reset(&b);
  b.echo = 1;
  lfd = loopback_listener(4, NULL, &sin);
  cfd = (int)socket(AF_INET, SOCK_STREAM, 0);
  CHECK(cfd >= 0);
  CHECK_EQ(connect(cfd, (struct sockaddr *)&sin, sizeof sin), 0);
  afd = (int)accept(lfd, NULL, NULL);
  CHECK(afd >= 0);
  test_closesocket(lfd);
  ta = evl_connect_accepted_socket(loop, &client_proto, &a, cfd);
  tb = evl_connect_accepted_socket(loop, &client_proto, &b, afd);
  CHECK(ta != NULL && tb != NULL);
  RUN_UNTIL(loop, a.made == 1 && b.made == 1);
  CHECK_EQ(getsockopt(afd, IPPROTO_TCP, TCP_NODELAY, (void *)&one, &olen), 0);
  CHECK(one != 0);
  CHECK_EQ(evl_transport_write(ta, "echo me", 7), 0);
  RUN_UNTIL(loop, a.n == 7);
  close_both(loop, &a, &b);
  test_close(loop);
}

/* ---- sendfile ------------------------------------------------------------ */

TEST(tcp_sendfile) {
  const size_t total = (size_t)1 << 20;
  tcp_conn tc;
  evl_future *f, *f2;
  int fd;
  size_t i;
  conn_init(&tc);
  tc.c.tmpl.cap = total + 4096;
  conn_open(&tc);
  fd = pattern_file(total);
  /* queued data first, then the file, then a part of it again */
  CHECK_EQ(evl_transport_write(tc.cl.t, "HDR", 3), 0);
  f = evl_sendfile(tc.cl.t, fd, 0, total);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(tc.loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), (intptr_t)total);
  f2 = evl_sendfile(tc.cl.t, fd, 1000, 100);
  CHECK(f2 != NULL);
  CHECK_EQ(wait_fut(tc.loop, f2), 0);
  CHECK_EQ(evl_future_result_int(f2), 100);
  CHECK_EQ(evl_transport_write(tc.cl.t, "TRL", 3), 0);
  RUN_UNTIL(tc.loop, tc.sp->n >= total + 106);
  CHECK_EQ(tc.sp->n, total + 106);
  CHECK(memcmp(tc.sp->buf, "HDR", 3) == 0);
  for (i = 0; i < total; i++)
    if (tc.sp->buf[3 + i] != test_pat(3 + i))
      break;
  CHECK_EQ(i, total);
  for (i = 0; i < 100; i++)
    CHECK_EQ(tc.sp->buf[3 + total + i], test_pat(3 + 1000 + i));
  CHECK(memcmp(tc.sp->buf + 3 + total + 100, "TRL", 3) == 0);
  evl_future_release(f);
  evl_future_release(f2);
  test_fd_close(fd);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

/* ---- re-entrant calls from callbacks ------------------------------------ */

TEST(tcp_server_freed_in_connection_made) {
  /* a one-shot server: evl_server_free from connection_made; the
     connection goes on, the server is freed once it is gone */
  tcp_conn tc;
  int port;
  conn_init(&tc);
  tc.c.tmpl.echo = 1;
  tc.s = serve(tc.loop, &tc.c);
  port = evl_server_port(tc.s);
  tc.c.free_in_made = tc.s;
  conn_dial(&tc, NULL);
  RUN_UNTIL(tc.loop, tc.c.free_in_made == NULL);
  CHECK_EQ(evl_transport_write(tc.cl.t, "after", 5), 0);
  RUN_UNTIL(tc.loop, tc.cl.n == 5);
  CHECK_EQ(dial_error(tc.loop, "127.0.0.1", port), EVL_ECONNREFUSED);
  close_both(tc.loop, &tc.cl, tc.sp);
  run_for(tc.loop, 0.02);
  server_ctx_free(&tc.c);
  test_close(tc.loop);
}

TEST(tcp_abort_inside_data_received_during_bulk) {
  const size_t total = (size_t)16 << 20;
  tcp_conn tc;
  conn_init(&tc);
  tc.cl.abort_in_data = 1;
  conn_open(&tc);
  write_pattern(tc.sp->t, total);
  RUN_UNTIL(tc.loop, tc.cl.lost == 1);
  CHECK_EQ(tc.cl.data_calls, 1);
  CHECK_EQ(tc.cl.lost_err, 0);
  CHECK_EQ(tc.cl.lost_write_rc, EVL_ECLOSING);
  CHECK_EQ(tc.cl.after_lost, 0);
  /* the sender finds out: reset or EOF, then connection_lost */
  RUN_UNTIL(tc.loop, tc.sp->lost == 1);
  conn_done(&tc);
}

TEST(tcp_close_inside_eof_received) {
  tcp_conn tc;
  conn_init(&tc);
  tc.c.tmpl.close_in_eof = 1;
  tc.c.tmpl.eof_keep = 1; /* keep open, but close anyway */
  conn_open(&tc);
  CHECK_EQ(evl_transport_write_eof(tc.cl.t), 0);
  CHECK_EQ(evl_transport_write_eof(tc.cl.t), 0);   /* twice is harmless */
  CHECK(evl_transport_write(tc.cl.t, "x", 1) < 0); /* no writes after EOF */
  conn_lost_cleanly(&tc);
  CHECK_EQ(tc.sp->eofs, 1);
  CHECK_EQ(tc.cl.eofs, 1);
  CHECK_EQ(tc.sp->after_lost + tc.cl.after_lost, 0);
  conn_done(&tc);
}

/* ---- options --------------------------------------------------------------
 */

TEST(tcp_connect_local_host_and_port) {
  tcp_conn tc;
  evl_net_options o;
  struct sockaddr_storage ss;
  size_t len = sizeof ss;
  int lport;
  conn_init(&tc);
  tc.s = serve(tc.loop, &tc.c);
  /* a free port to bind the client to: a server's, closed again */
  {
    server_ctx tmp;
    evl_server *s2;
    server_ctx_init(&tmp);
    s2 = serve(tc.loop, &tmp);
    lport = evl_server_port(s2);
    test_server_done(tc.loop, s2);
  }
  memset(&o, 0, sizeof o);
  o.local_host = "127.0.0.1";
  o.local_port = lport;
  conn_dial(&tc, &o);
  CHECK_EQ(evl_transport_get_sockname(tc.cl.t, &ss, &len), 0);
  CHECK_EQ(sockaddr_port(&ss), lport);
  len = sizeof ss;
  CHECK_EQ(evl_transport_get_peername(tc.sp->t, &ss, &len), 0);
  CHECK_EQ(sockaddr_port(&ss), lport);
  close_both(tc.loop, &tc.cl, tc.sp);
  /* SO_REUSEADDR is on by default on listening sockets; on Windows, where
     it would let another socket take the port, SO_EXCLUSIVEADDRUSE is */
  {
    int v = 0;
    socklen_t olen = sizeof v;
    evl_fd sfd;
#ifdef _WIN32
    CHECK_EQ(evl_server_sockets(tc.s, &sfd, 1), 1);
    CHECK_EQ(getsockopt((int)sfd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (void *)&v,
                        &olen),
             0);
    CHECK(v != 0);
    v = 1;
    olen = sizeof v;
    CHECK_EQ(getsockopt((int)sfd, SOL_SOCKET, SO_REUSEADDR, (void *)&v, &olen),
             0);
    CHECK_EQ(v, 0);
#else
    CHECK_EQ(evl_server_sockets(tc.s, &sfd, 1), 1);
    CHECK_EQ(getsockopt((int)sfd, SOL_SOCKET, SO_REUSEADDR, (void *)&v, &olen),
             0);
    CHECK(v != 0);
#endif
  }
  conn_done(&tc);
}

TEST(tcp_server_options_family_and_no_reuse_address) {
  evl_loop *loop = test_open();
  server_ctx c;
  evl_server *s;
  evl_net_options o;
  evl_fd fds[8];
  size_t n, i;
  int fam, v = 1;
  socklen_t olen = sizeof v;
  server_ctx_init(&c);
  memset(&o, 0, sizeof o);
  o.family = AF_INET;
  o.no_reuse_address = 1;
  s = serve_proto(loop, &server_proto, &c, NULL, 0, &o);
  n = evl_server_sockets(s, fds, 8);
  CHECK(n >= 1 && n <= 8);
  for (i = 0; i < n; i++) {
    fd_port((int)fds[i], &fam);
    CHECK_EQ(fam, AF_INET);
  }
  CHECK_EQ(getsockopt((int)fds[0], SOL_SOCKET, SO_REUSEADDR, (void *)&v, &olen),
           0);
  CHECK_EQ(v, 0);
  echo_once(loop, &c, "127.0.0.1", evl_server_port(s));
  server_ctx_done(loop, s, &c);
}

TEST(tcp_write_limits_low_default) {
  /* high given, low 0: low is high/4 */
  const size_t high = 40000, chunk = 4096, size = (size_t)32 << 20;
  tcp_conn tc;
  unsigned char *data;
  size_t sent;
  conn_init(&tc);
  tc.c.tmpl.pause_on_made = 1;
  conn_open(&tc);
  CHECK_EQ(evl_transport_set_write_buffer_limits(tc.cl.t, high, 0), 0);
  data = test_pattern_buf(size, 0);
  sent = write_until_paused(&tc, data, size, chunk, high);
  free(data);
  CHECK_EQ(tc.cl.pauses, 1);
  CHECK(tc.cl.size_at_pause > high);
  CHECK(tc.cl.size_at_pause <= high + chunk);
  CHECK_EQ(evl_transport_resume_reading(tc.sp->t), 0);
  RUN_UNTIL(tc.loop, tc.cl.resumes == 1);
  CHECK(tc.cl.size_at_resume <= high / 4);
  RUN_UNTIL(tc.loop, tc.sp->n == sent);
  close_both(tc.loop, &tc.cl, tc.sp);
  conn_done(&tc);
}

/* ---- loop close with a server and connections still open ---------------- */

static void loop_free_with_open_server_and_connections(void) {
  tcp_conn tc;
  conn_init(&tc);
  conn_open(&tc);
  CHECK_EQ(evl_transport_write(tc.cl.t, "unsent?", 7), 0);
  test_close(tc.loop);
  CHECK_EQ(tc.cl.lost, 1);
  CHECK_EQ(tc.sp->lost, 1);
  CHECK_EQ(tc.cl.after_lost + tc.sp->after_lost, 0);
  server_ctx_free(&tc.c);
}

TEST(tcp_loop_free_takes_open_server_and_connections) {
  /* "a server not freed is freed by loop close"; open transports are
     closed by it (connection_lost once); no fd and no memory is left
     (LeakSanitizer and valgrind check the memory) */
  int before;
#ifdef _WIN32
  /* Winsock (wine's at least) makes a handle of its own on first use,
     which stays: once first, then count. */
  loop_free_with_open_server_and_connections();
#endif
  test_settle_fds();
  before = test_count_fds();
  loop_free_with_open_server_and_connections();
  test_settle_fds(); /* libkqueue frees a closed kqueue's fds a bit later */
  if (before >= 0)
    CHECK_EQ(test_count_fds(), before);
}

#ifdef _WIN32
/* 1 if the socket is bound to an I/O completion port already: a socket
   takes one port for good, so binding it to a new one fails. */
static int bound_to_a_port(evl_fd fd) {
  HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
  HANDLE r;
  CHECK(port != NULL);
  r = CreateIoCompletionPort((HANDLE)(intptr_t)fd, port, 1, 0);
  CloseHandle(port);
  return r == NULL;
}

/* On IOCP, connections (ConnectEx), accepted sockets (AcceptEx) and
   listening sockets do their I/O through the loop's port; on select they
   do not. Data goes both ways either way, and a connection made with
   evl_connect_accepted_socket on a socket bound elsewhere still works
   (through readiness). */
TEST(tcp_iocp_completion_io) {
  tcp_conn tc;
  int iocp, i;
  evl_fd lfd;
  conn_init(&tc);
  iocp = strcmp(evl_backend_name(tc.loop), "iocp") == 0;
  tc.s = serve(tc.loop, &tc.c);
  CHECK_EQ(evl_server_sockets(tc.s, &lfd, 1), 1);
  CHECK_EQ(bound_to_a_port(lfd), iocp);
  conn_dial(&tc, NULL);
  CHECK_EQ(bound_to_a_port(evl_transport_fd(tc.cl.t)), iocp);
  CHECK_EQ(bound_to_a_port(evl_transport_fd(tc.sp->t)), iocp);
  for (i = 0; i < 100; i++) { /* many round trips through the port */
    CHECK_EQ(evl_transport_write(tc.cl.t, "ping", 4), 0);
    RUN_UNTIL(tc.loop, tc.sp->n == (size_t)(i + 1) * 4);
    CHECK_EQ(evl_transport_write(tc.sp->t, "pong", 4), 0);
    RUN_UNTIL(tc.loop, tc.cl.n == (size_t)(i + 1) * 4);
  }
  close_both(tc.loop, &tc.cl, tc.sp);
  { /* a socket bound to another port: readiness (AFD) instead */
    HANDLE other = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
    char got[3];
    peer a;
    int sv[2];
    peer_reset(&a);
    CHECK(other != NULL);
    CHECK_EQ(test_socketpair(sv), 0);
    CHECK(CreateIoCompletionPort((HANDLE)(intptr_t)sv[0], other, 1, 0));
    CHECK(evl_connect_accepted_socket(tc.loop, &client_proto, &a, sv[0]));
    RUN_UNTIL(tc.loop, a.made == 1);
    CHECK_EQ(test_send(sv[1], "abc", 3), 3);
    RUN_UNTIL(tc.loop, a.n == 3);
    CHECK_EQ(evl_transport_write(a.t, "xyz", 3), 0);
    CHECK_EQ(test_recv(sv[1], got, 3), 3);
    CHECK(memcmp(got, "xyz", 3) == 0);
    evl_transport_close(a.t);
    RUN_UNTIL(tc.loop, a.lost == 1);
    CHECK_EQ(a.lost_err, 0);
    test_closesocket(sv[1]);
    CloseHandle(other);
  }
  conn_done(&tc);
}
#endif

TESTS_BEGIN
T(tcp_data_both_ways_and_close)
T(tcp_server_close_gives_client_eof)
T(tcp_half_close_eof_received_keeps_writing)
T(tcp_write_64mib_in_one_call)
T(tcp_writev)
T(tcp_flow_control_pause_resume_writing)
T(tcp_default_write_limits)
T(tcp_pause_resume_reading)
T(tcp_close_inside_data_received)
T(tcp_abort_drops_queued_data)
T(tcp_buffered_protocol)
T(tcp_peername_sockname_nodelay)
T(tcp_no_delay_off)
T(tcp_server_all_interfaces)
T(tcp_server_empty_host_is_all_interfaces)
T(tcp_server_host_list)
T(tcp_server_address_in_use_and_reuse_port)
T(tcp_no_start_serving)
T(tcp_server_close_keeps_connections)
T(tcp_wait_closed_waits_for_close)
T(tcp_serve_forever_cancel_closes)
T(tcp_connect_accepted_socket)
T(tcp_connect_accepted_tcp_socket)
T(tcp_sendfile)
T(tcp_server_freed_in_connection_made)
T(tcp_abort_inside_data_received_during_bulk)
T(tcp_close_inside_eof_received)
T(tcp_connect_local_host_and_port)
T(tcp_server_options_family_and_no_reuse_address)
T(tcp_write_limits_low_default)
T(tcp_loop_free_takes_open_server_and_connections)
#ifdef _WIN32
T(tcp_iocp_completion_io)
#endif
TESTS_END
