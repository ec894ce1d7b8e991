/* net.h - what the networking benchmarks (echo.c, http.c, idle.c) share:
   the same server written on each library, and the driver's helpers to
   start one, pin it to a core and read its CPU time and memory.

   Every program runs "self --server LIB MODE PORT [STATS_FD]" as the
   server: LIB is evloop, libuv, libev, libevent or epoll (a hand-written
   level-triggered epoll loop, the limit), MODE echo or http. The server
   listens on 127.0.0.1:PORT (0: any free port), writes "PORT n" on its
   stdout and serves until killed. STATS_FD is a memfd the driver mapped
   too: the server counts accepted connections and answered HTTP requests in
   it, and on SIGUSR1 stores its heap use (mallinfo2) there. Run by hand,
   e.g. `bench/build/echo --server evloop echo 5555`, it serves port 5555
   for `perf record -p`.

   The behaviour is the same in every library:
   - echo: read into one buffer (64 KiB, shared by all connections), write
     it back at once; only what the socket does not take is copied and
     queued (libuv: uv_try_write, then uv_write for the rest; libev and
     epoll: a write watcher until the rest is sent, not reading meanwhile;
     evloop: evl_transport_write does exactly that inside). libevent is used
     its usual way, a bufferevent whose read callback moves the input
     buffer to the output buffer (bufferevent_write_buffer); libevent then
     writes from its next loop iteration, after enabling and later
     disabling EPOLLOUT (two epoll_ctl calls and an extra epoll_wait wake-up
     per message that the others do not make).
   - http: count the requests in the input (each ends in "\r\n\r\n"; the
     matcher keeps its state across reads, so pipelined or split requests
     are counted right) and answer each with the same fixed 51-byte
     response, all the answers to one read in one write (of up to 32
     responses at a time).
   - every accepted socket gets TCP_NODELAY (evloop sets it itself), the
     listening socket SO_REUSEADDR and a backlog of 1024. */
#ifndef NET_H_INCLUDED
#define NET_H_INCLUDED

#include "bench.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#if HAVE_EV
/* libev's EV_READ and EV_WRITE (enum values) are hidden by libevent's
   macros of the same names, with other values: keep libev's here. */
enum { NET_EV_READ = EV_READ, NET_EV_WRITE = EV_WRITE };
#endif
#ifndef HAVE_EVENT
#define HAVE_EVENT 0
#endif
#if HAVE_EVENT
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#endif

#define NET_BACKLOG 1024
#define NET_RBUF 65536

enum { NET_EVL, NET_UV, NET_EV, NET_EVENT, NET_RAW, NET_NLIBS };
static const char *const net_lib_names[NET_NLIBS] = {"evloop", "libuv", "libev",
                                                     "libevent", "epoll"};
static const int net_lib_built[NET_NLIBS] = {HAVE_EVL, HAVE_UV, HAVE_EV,
                                             HAVE_EVENT, 1};

enum { NET_ECHO, NET_HTTP };

/* Shared between the server and the driver (a memfd both map). Only the
   server's loop thread writes conns and reqs. */
typedef struct net_stats {
  volatile uint64_t conns;    /* connections accepted */
  volatile uint64_t reqs;     /* HTTP requests answered */
  volatile uint64_t heap;     /* mallinfo2 in use, stored on SIGUSR1 */
  volatile uint64_t heap_seq; /* incremented after each store of heap */
} net_stats;

static net_stats net_local_stats;
static net_stats *net_st = &net_local_stats;
static int net_mode;
static char net_rbuf[NET_RBUF];

/* ---- HTTP: the request counter and the responses ---------------------- */

#define NET_HTTP_RESP                                                          \
  "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!"
#define NET_HTTP_RESP_LEN (sizeof NET_HTTP_RESP - 1)
#define NET_HTTP_BATCH 32
static char net_http_resps[NET_HTTP_BATCH * NET_HTTP_RESP_LEN];

/* Counts the ends of requests ("\r\n\r\n") in p[0..n); *state is how much
   of that ending the input seen so far ends with (0..3). */
static inline size_t net_http_feed(unsigned char *state, const char *p,
                                   size_t n) {
  const char *end = p + n;
  unsigned s = *state;
  size_t reqs = 0;
  while (p < end) {
    if (s == 0) {
      p = (const char *)memchr(p, '\r', (size_t)(end - p));
      if (!p)
        break;
      s = 1;
      p++;
      continue;
    }
    char c = *p++;
    if (c == '\r')
      s = s == 2 ? 3 : 1;
    else if (c == '\n' && (s == 1 || s == 3)) {
      if (s == 3) {
        reqs++;
        s = 0;
      } else {
        s = 2;
      }
    } else {
      s = 0;
    }
  }
  *state = (unsigned char)s;
  return reqs;
}

/* How many bytes of responses go in the next write for `reqs` requests. */
static inline size_t net_http_chunk(size_t reqs) {
  return (reqs < NET_HTTP_BATCH ? reqs : NET_HTTP_BATCH) * NET_HTTP_RESP_LEN;
}

/* ---- Output that the socket did not take (libev and epoll servers) ---- */

typedef struct net_pend {
  size_t len, off;
  char data[];
} net_pend;

/* Sends p[0..n) on fd after whatever *pend holds: 0 when all of it went,
   1 when some is queued in *pend, -1 on an error. */
static inline int net_send(int fd, net_pend **pend, const char *p, size_t n) {
  if (!*pend) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR)
        return -1;
      w = 0;
    }
    if ((size_t)w == n)
      return 0;
    p += w;
    n -= (size_t)w;
    net_pend *q = (net_pend *)malloc(sizeof *q + n);
    if (!q)
      bench_die("malloc");
    q->len = n;
    q->off = 0;
    memcpy(q->data, p, n);
    *pend = q;
    return 1;
  }
  net_pend *q = (net_pend *)realloc(*pend, sizeof **pend + (*pend)->len + n);
  if (!q)
    bench_die("realloc");
  memcpy(q->data + q->len, p, n);
  q->len += n;
  *pend = q;
  return 1;
}

/* Writes what *pend holds: 0 when all is sent (and *pend freed), 1 if some
   remains, -1 on an error. */
static inline int net_flush(int fd, net_pend **pend) {
  net_pend *q = *pend;
  ssize_t w = write(fd, q->data + q->off, q->len - q->off);
  if (w < 0)
    return errno == EAGAIN || errno == EINTR ? 1 : -1;
  q->off += (size_t)w;
  if (q->off < q->len)
    return 1;
  free(q);
  *pend = NULL;
  return 0;
}

/* The answer of an fd-based server (libev, epoll) to n bytes of input. */
static inline int net_fd_reply(int fd, net_pend **pend, unsigned char *hs,
                               const char *p, size_t n) {
  if (net_mode == NET_ECHO)
    return net_send(fd, pend, p, n);
  size_t reqs = net_http_feed(hs, p, n);
  net_st->reqs += reqs;
  int r = 0;
  while (reqs) {
    size_t len = net_http_chunk(reqs);
    r = net_send(fd, pend, net_http_resps, len);
    if (r < 0)
      return r;
    reqs -= len / NET_HTTP_RESP_LEN;
  }
  return r;
}

static inline void net_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static inline struct sockaddr_in net_addr(int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

static inline int net_fd_port(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
    bench_die("getsockname");
  return ntohs(sa.sin_port);
}

/* The server is listening: tell the driver on which port. */
static inline void net_ready(int port) {
  printf("PORT %d\n", port);
  fflush(stdout);
}

/* ---- evloop.h ----------------------------------------------------------- */
#if HAVE_EVL
static inline void srv_evl_made(evl_transport *t, void *user) {
  (void)t;
  (void)user;
  net_st->conns++;
}

static inline void srv_evl_echo(evl_transport *t, const void *data, size_t len,
                                void *user) {
  (void)user;
  evl_transport_write(t, data, len);
}

/* The matcher's state (one byte) lives in the transport's user pointer. */
static inline void srv_evl_http(evl_transport *t, const void *data, size_t len,
                                void *user) {
  unsigned char hs = (unsigned char)(uintptr_t)user;
  size_t reqs = net_http_feed(&hs, (const char *)data, len);
  if (hs != (unsigned char)(uintptr_t)user)
    evl_transport_set_user(t, (void *)(uintptr_t)hs);
  net_st->reqs += reqs;
  while (reqs) {
    size_t n = net_http_chunk(reqs);
    evl_transport_write(t, net_http_resps, n);
    reqs -= n / NET_HTTP_RESP_LEN;
  }
}

static inline void srv_evl(int port) {
  static evl_protocol proto;
  proto.connection_made = srv_evl_made;
  proto.data_received = net_mode == NET_ECHO ? srv_evl_echo : srv_evl_http;
  evl_loop *loop = bench_evl_loop();
  evl_net_options o;
  memset(&o, 0, sizeof o);
  o.backlog = NET_BACKLOG;
  evl_future *f = evl_create_server(loop, &proto, NULL, "127.0.0.1", port, &o);
  if (!f || evl_run_until_complete(loop, f) != 0)
    bench_die("evl_create_server");
  evl_server *s = (evl_server *)evl_future_result(f);
  net_ready(evl_server_port(s));
  evl_run_forever(loop);
  evl_future_release(f);
  evl_loop_free(loop);
}
#endif

/* ---- libuv ----------------------------------------------------------------
 */
#if HAVE_UV
typedef struct srv_uv_conn {
  uv_tcp_t tcp;
  unsigned char hs;
} srv_uv_conn;

typedef struct srv_uv_wreq {
  uv_write_t req;
  char data[];
} srv_uv_wreq;

static inline void srv_uv_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  (void)size;
  *buf = uv_buf_init(net_rbuf, sizeof net_rbuf);
}

static inline void srv_uv_closed(uv_handle_t *h) {
  free(h);
}

static inline void srv_uv_close(uv_stream_t *s) {
  if (!uv_is_closing((uv_handle_t *)s))
    uv_close((uv_handle_t *)s, srv_uv_closed);
}

static inline void srv_uv_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* uv_try_write; uv_write for what it did not take (or when libuv already
   has writes queued: then uv_try_write refuses with UV_EAGAIN). */
static inline void srv_uv_send(uv_stream_t *s, const char *p, size_t n) {
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int w = uv_try_write(s, &b, 1);
  if (w == (int)n)
    return;
  if (w < 0) {
    if (w != UV_EAGAIN) {
      srv_uv_close(s);
      return;
    }
    w = 0;
  }
  n -= (size_t)w;
  srv_uv_wreq *r = (srv_uv_wreq *)malloc(sizeof *r + n);
  if (!r)
    bench_die("malloc");
  memcpy(r->data, p + w, n);
  b = uv_buf_init(r->data, (unsigned)n);
  if (uv_write(&r->req, s, &b, 1, srv_uv_written) != 0) {
    free(r);
    srv_uv_close(s);
  }
}

static inline void srv_uv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    srv_uv_close(s);
    return;
  }
  if (n == 0)
    return;
  if (net_mode == NET_ECHO) {
    srv_uv_send(s, buf->base, (size_t)n);
    return;
  }
  srv_uv_conn *c = (srv_uv_conn *)s;
  size_t reqs = net_http_feed(&c->hs, buf->base, (size_t)n);
  net_st->reqs += reqs;
  while (reqs) {
    size_t len = net_http_chunk(reqs);
    srv_uv_send(s, net_http_resps, len);
    reqs -= len / NET_HTTP_RESP_LEN;
  }
}

static inline void srv_uv_conn_cb(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  srv_uv_conn *c = (srv_uv_conn *)malloc(sizeof *c);
  if (!c)
    bench_die("malloc");
  uv_tcp_init(server->loop, &c->tcp);
  c->hs = 0;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, srv_uv_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, srv_uv_alloc, srv_uv_read);
  net_st->conns++;
}

static inline void srv_uv(int port) {
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in sa = net_addr(port);
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&sa, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, NET_BACKLOG, srv_uv_conn_cb) != 0)
    bench_die("uv_listen");
  uv_os_fd_t fd;
  uv_fileno((uv_handle_t *)&server, &fd);
  net_ready(net_fd_port(fd));
  uv_run(loop, UV_RUN_DEFAULT);
}
#endif

/* ---- libev ----------------------------------------------------------------
 */
#if HAVE_EV
typedef struct srv_ev_conn {
  ev_io io;
  net_pend *pend;
  unsigned char hs;
} srv_ev_conn;

static inline void srv_ev_close(struct ev_loop *loop, srv_ev_conn *c) {
  ev_io_stop(loop, &c->io);
  close(c->io.fd);
  free(c->pend);
  free(c);
}

/* Switches the watcher between reading and writing the rest. */
static inline void srv_ev_set(struct ev_loop *loop, srv_ev_conn *c,
                              int events) {
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_io_start(loop, &c->io);
}

static inline void srv_ev_conn_cb(struct ev_loop *loop, ev_io *w, int revents) {
  srv_ev_conn *c = (srv_ev_conn *)w;
  int r;
  if (revents & NET_EV_WRITE) {
    r = net_flush(w->fd, &c->pend);
    if (r < 0)
      srv_ev_close(loop, c);
    else if (r == 0)
      srv_ev_set(loop, c, NET_EV_READ);
    return;
  }
  ssize_t n = read(w->fd, net_rbuf, sizeof net_rbuf);
  if (n > 0) {
    r = net_fd_reply(w->fd, &c->pend, &c->hs, net_rbuf, (size_t)n);
    if (r < 0)
      srv_ev_close(loop, c);
    else if (r > 0)
      srv_ev_set(loop, c, NET_EV_WRITE);
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    srv_ev_close(loop, c);
  }
}

static inline void srv_ev_accept_cb(struct ev_loop *loop, ev_io *w,
                                    int revents) {
  (void)revents;
  for (;;) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    net_nodelay(fd);
    srv_ev_conn *c = (srv_ev_conn *)malloc(sizeof *c);
    if (!c)
      bench_die("malloc");
    c->pend = NULL;
    c->hs = 0;
    ev_io_init(&c->io, srv_ev_conn_cb, fd, NET_EV_READ);
    ev_io_start(loop, &c->io);
    net_st->conns++;
  }
}
#endif

/* A listening socket for the servers that make their own (libev, epoll). */
static inline int net_listen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in sa = net_addr(port);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
      listen(fd, NET_BACKLOG) != 0)
    bench_die("listen");
  return fd;
}

#if HAVE_EV
static inline void srv_ev(int port) {
  struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
  ev_io acc;
  int fd = net_listen(port);
  ev_io_init(&acc, srv_ev_accept_cb, fd, NET_EV_READ);
  ev_io_start(loop, &acc);
  net_ready(net_fd_port(fd));
  ev_run(loop, 0);
}
#endif

/* ---- libevent --------------------------------------------------------- */
#if HAVE_EVENT
static inline void srv_event_read(struct bufferevent *bev, void *arg) {
  struct evbuffer *in = bufferevent_get_input(bev);
  if (net_mode == NET_ECHO) {
    bufferevent_write_buffer(bev, in);
    return;
  }
  size_t len = evbuffer_get_length(in);
  const char *p = (const char *)evbuffer_pullup(in, -1);
  size_t reqs = net_http_feed((unsigned char *)arg, p, len);
  evbuffer_drain(in, len);
  net_st->reqs += reqs;
  while (reqs) {
    size_t n = net_http_chunk(reqs);
    bufferevent_write(bev, net_http_resps, n);
    reqs -= n / NET_HTTP_RESP_LEN;
  }
}

static inline void srv_event_event(struct bufferevent *bev, short what,
                                   void *arg) {
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    free(arg);
    bufferevent_free(bev);
  }
}

static inline void srv_event_accept(struct evconnlistener *l,
                                    evutil_socket_t fd, struct sockaddr *sa,
                                    int salen, void *arg) {
  (void)sa;
  (void)salen;
  (void)arg;
  net_nodelay(fd);
  struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l),
                                                   fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev)
    bench_die("bufferevent_socket_new");
  void *state = NULL; /* the HTTP matcher's state */
  if (net_mode == NET_HTTP && !(state = calloc(1, 1)))
    bench_die("calloc");
  bufferevent_setcb(bev, srv_event_read, NULL, srv_event_event, state);
  bufferevent_enable(bev, EV_READ);
  net_st->conns++;
}

static inline void srv_event(int port) {
  struct event_base *base = event_base_new();
  struct sockaddr_in sa = net_addr(port);
  if (!base)
    bench_die("event_base_new");
  if (strncmp(event_get_version(), "2.", 2) != 0) {
    /* libev's compatibility functions of the same names were linked */
    fprintf(stderr,
            "libevent: event_get_version() is \"%s\": link "
            "-levent before -lev\n",
            event_get_version());
    exit(2);
  }
  struct evconnlistener *l = evconnlistener_new_bind(
      base, srv_event_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
      NET_BACKLOG, (struct sockaddr *)&sa, sizeof sa);
  if (!l)
    bench_die("evconnlistener_new_bind");
  net_ready(net_fd_port(evconnlistener_get_fd(l)));
  event_base_dispatch(base);
}
#endif

/* ---- hand-written epoll (level-triggered), the limit -------------------- */
typedef struct srv_raw_conn {
  net_pend *pend;
  unsigned char hs;
} srv_raw_conn;

static inline void srv_raw(int port) {
  int lfd = net_listen(port), ep = epoll_create1(EPOLL_CLOEXEC);
  srv_raw_conn *conns = NULL; /* indexed by fd */
  size_t cap = 0;
  struct epoll_event ev, evs[1024];
  if (ep < 0)
    bench_die("epoll_create1");
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
    bench_die("epoll_ctl");
  net_ready(net_fd_port(lfd));
  for (;;) {
    int n = epoll_wait(ep, evs, 1024, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      bench_die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd, r;
      if (fd == lfd) {
        int cfd;
        while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
               0) {
          if ((size_t)cfd >= cap) {
            size_t ncap = cap ? cap : 64;
            while (ncap <= (size_t)cfd)
              ncap *= 2;
            conns = (srv_raw_conn *)realloc(conns, ncap * sizeof *conns);
            if (!conns)
              bench_die("realloc");
            memset(conns + cap, 0, (ncap - cap) * sizeof *conns);
            cap = ncap;
          }
          net_nodelay(cfd);
          ev.events = EPOLLIN;
          ev.data.fd = cfd;
          if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev) != 0)
            bench_die("epoll_ctl");
          net_st->conns++;
        }
        continue;
      }
      srv_raw_conn *c = &conns[fd];
      if (c->pend) { /* waiting for EPOLLOUT */
        r = net_flush(fd, &c->pend);
        if (r == 0) {
          ev.events = EPOLLIN;
          ev.data.fd = fd;
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
      } else {
        ssize_t got = read(fd, net_rbuf, sizeof net_rbuf);
        if (got > 0) {
          r = net_fd_reply(fd, &c->pend, &c->hs, net_rbuf, (size_t)got);
          if (r > 0) {
            ev.events = EPOLLOUT;
            ev.data.fd = fd;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
          }
        } else {
          r = got == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
        }
      }
      if (r < 0) { /* closing removes it from the epoll set */
        close(fd);
        free(c->pend);
        memset(c, 0, sizeof *c);
      }
    }
  }
}

/* ---- the server process ------------------------------------------------- */

static inline void net_on_sigusr1(int sig) {
  (void)sig;
  /* Only sent while the server is idle (in epoll_wait), so no malloc lock
     is held. */
  struct mallinfo2 mi = mallinfo2();
  net_st->heap = mi.uordblks + mi.hblkhd;
  net_st->heap_seq++;
}

/* argv: self --server LIB MODE PORT [STATS_FD] */
static inline int net_server_main(int argc, char **argv) {
  if (bench_usage(argc < 5, argv[0],
                  "--server evloop|libuv|libev|libevent|epoll echo|http PORT "
                  "[STATS_FD]"))
    return 2;
  const char *lib = argv[2];
  net_mode = strcmp(argv[3], "http") == 0 ? NET_HTTP : NET_ECHO;
  int port = atoi(argv[4]);
  if (argc >= 6) {
    void *p = mmap(NULL, sizeof(net_stats), PROT_READ | PROT_WRITE, MAP_SHARED,
                   atoi(argv[5]), 0);
    if (p == MAP_FAILED)
      bench_die("mmap");
    net_st = (net_stats *)p;
  }
  for (int i = 0; i < NET_HTTP_BATCH; i++)
    memcpy(net_http_resps + i * NET_HTTP_RESP_LEN, NET_HTTP_RESP,
           NET_HTTP_RESP_LEN);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = net_on_sigusr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
#if HAVE_EVL
  if (strcmp(lib, "evloop") == 0)
    srv_evl(port);
#endif
#if HAVE_UV
  if (strcmp(lib, "libuv") == 0)
    srv_uv(port);
#endif
#if HAVE_EV
  if (strcmp(lib, "libev") == 0)
    srv_ev(port);
#endif
#if HAVE_EVENT
  if (strcmp(lib, "libevent") == 0)
    srv_event(port);
#endif
  if (strcmp(lib, "epoll") == 0)
    srv_raw(port);
  fprintf(stderr, "%s: not built in (or its loop returned)\n", lib);
  return 2;
}

/* main() of a networking program: "--server ..." runs the server of this
   header, the rest is bench_main()'s (a measurement or the driver). */
static inline int net_main(int argc, char **argv, bench_mode_fn *run,
                           bench_mode_fn *driver) {
  if (argc >= 2 && strcmp(argv[1], "--server") == 0)
    return net_server_main(argc, argv);
  return bench_main(argc, argv, run, driver);
}

/* ---- the driver's side ------------------------------------------------- */

/* The two cores the server and the client are pinned to (the first two this
   process may use); -1 when there are fewer than 2 (no pinning). */
static int net_cpu_server = -1, net_cpu_client = -1;

static inline void net_pick_cpus(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) {
      if (net_cpu_server < 0)
        net_cpu_server = c;
      else if (net_cpu_client < 0)
        net_cpu_client = c;
    }
  if (net_cpu_client < 0)
    net_cpu_server = -1;
}

/* Pins the calling process to one core; 0, or -1 (then it runs unpinned). */
static inline int net_pin(int cpu) {
  if (cpu < 0)
    return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set);
}

/* The note the driver prints about pinning (it tries, then undoes it: the
   runs pin themselves). */
static inline void net_print_pinning(void) {
  cpu_set_t saved;
  int ok = 0;
  net_pick_cpus();
  if (net_cpu_client >= 0 && sched_getaffinity(0, sizeof saved, &saved) == 0) {
    ok = net_pin(net_cpu_client) == 0;
    sched_setaffinity(0, sizeof saved, &saved);
  }
  if (!ok)
    printf("pinning: SKIPPED (fewer than 2 usable cores, or "
           "sched_setaffinity failed): server and client share the cores\n");
  else
    printf("pinning: server on core %d, client on core %d\n", net_cpu_server,
           net_cpu_client);
}

static inline void net_print_libs(void) {
  bench_print_libs();
#if HAVE_EVENT
  printf("           libevent %s, epoll (hand-written)\n", event_get_version());
#else
  printf("           libevent SKIPPED (event2/event.h or -levent not found at "
         "build time), epoll (hand-written)\n");
#endif
}

typedef struct net_server {
  pid_t pid;
  int port;
  net_stats *st;
} net_server;

/* Starts "self --server lib mode 0 fd" on the server core, waits for its
   port. */
static inline void net_server_start(net_server *s, const char *self,
                                    const char *lib, const char *mode) {
  int mfd = memfd_create("net_stats", 0), fds[2];
  if (mfd < 0 || ftruncate(mfd, 4096) != 0)
    bench_die("memfd_create");
  void *p =
      mmap(NULL, sizeof(net_stats), PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (p == MAP_FAILED)
    bench_die("mmap");
  s->st = (net_stats *)p;
  if (pipe2(fds, O_CLOEXEC) != 0)
    bench_die("pipe");
  fflush(stdout);
  s->pid = fork();
  if (s->pid < 0)
    bench_die("fork");
  if (s->pid == 0) {
    char fdstr[16];
    snprintf(fdstr, sizeof fdstr, "%d", mfd);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the run failed: no stray server */
    net_pin(net_cpu_server);
    dup2(fds[1], 1);
    char *argv[] = {(char *)self, (char *)"--server", (char *)lib,
                    (char *)mode, (char *)"0",        fdstr,
                    NULL};
    execv("/proc/self/exe", argv);
    execv(self, argv);
    _exit(127);
  }
  close(mfd);
  close(fds[1]);
  char buf[64];
  size_t len = 0;
  struct pollfd pfd = {fds[0], POLLIN, 0};
  while (len < sizeof buf - 1 && !memchr(buf, '\n', len)) {
    if (poll(&pfd, 1, 10000) <= 0)
      bench_die("waiting for the server's port");
    ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
    if (r <= 0)
      bench_die("the server (it exited before listening)");
    len += (size_t)r;
  }
  buf[len] = '\0';
  close(fds[0]);
  if (sscanf(buf, "PORT %d", &s->port) != 1)
    bench_die("reading the server's port");
}

static inline void net_server_stop(net_server *s) {
  int status;
  kill(s->pid, SIGKILL);
  while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {
  }
  munmap((void *)s->st, sizeof(net_stats));
}

/* The server's CPU time in seconds: total from /proc/PID/schedstat (in
   nanoseconds, exact for a process that is not running at the moment) and
   the user/system split from /proc/PID/stat (in clock ticks). Read it only
   while the server is idle: the total of a running task may lag by up to a
   scheduler tick. The server has one thread that does anything (evloop's
   executor threads, if started, sleep). */
static inline double net_server_cpu(const net_server *s, double *user,
                                    double *sys) {
  char path[64], buf[1024];
  double total = -1;
  snprintf(path, sizeof path, "/proc/%d/schedstat", (int)s->pid);
  FILE *f = fopen(path, "r");
  if (f) {
    unsigned long long ns;
    if (fscanf(f, "%llu", &ns) == 1)
      total = (double)ns * 1e-9;
    fclose(f);
  }
  snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
  f = fopen(path, "r");
  *user = *sys = 0;
  if (f) {
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    const char *p = strrchr(buf, ')'); /* after the command name */
    unsigned long ut = 0, st = 0;
    if (p &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) == 2) {
      double hz = (double)sysconf(_SC_CLK_TCK);
      *user = (double)ut / hz;
      *sys = (double)st / hz;
    }
  }
  if (total < 0) /* no schedstat: ticks only */
    total = *user + *sys;
  return total;
}

/* The server's heap in use (mallinfo2 inside it, asked by SIGUSR1); the
   server must be idle. */
static inline double net_server_heap(const net_server *s) {
  uint64_t seq = s->st->heap_seq;
  kill(s->pid, SIGUSR1);
  double t0 = bench_now();
  while (s->st->heap_seq == seq) {
    if (bench_now() - t0 > 5)
      bench_die("waiting for the server's heap figure");
    usleep(1000);
  }
  return (double)s->st->heap;
}

/* A field of /proc/PID/status in bytes (e.g. "RssAnon:"), -1 if absent. */
static inline double net_server_status(const net_server *s, const char *field) {
  char path[64], line[256];
  double v = -1;
  snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t flen = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, flen) == 0) {
      v = strtod(line + flen, NULL) * 1024;
      break;
    }
  fclose(f);
  return v;
}

/* Waits until the server has accepted n connections (10 s at most). */
static inline void net_wait_conns(const net_server *s, uint64_t n) {
  double t0 = bench_now();
  while (s->st->conns < n) {
    if (bench_now() - t0 > 10) {
      fprintf(stderr, "bench: the server accepted only %llu of %llu\n",
              (unsigned long long)s->st->conns, (unsigned long long)n);
      exit(1);
    }
    usleep(200);
  }
}

/* A blocking client connection to the server, TCP_NODELAY. */
static inline int net_connect(int port) {
  struct sockaddr_in sa = net_addr(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    bench_die("socket");
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
    if (errno != EINTR)
      bench_die("connect");
  net_nodelay(fd);
  return fd;
}

/* Closes with a reset, so that no TIME_WAIT is left behind. */
static inline void net_close_reset(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

/* Runs every measurement `reps` times, interleaving the libraries; each run
   is "self --run LIB args..." in a new process and gives nvals values. */
static inline void net_measure(const char *self, char *const args[], int reps,
                               int nvals, double vals[][BENCH_MAX_REPS][8]) {
  for (int r = 0; r < reps; r++)
    for (int l = 0; l < NET_NLIBS; l++) {
      if (!net_lib_built[l])
        continue;
      char *a[12];
      int n = 0;
      a[n++] = (char *)net_lib_names[l];
      for (int i = 0; args[i] && n < 11; i++)
        a[n++] = args[i];
      a[n] = NULL;
      double v[8];
      bench_spawn(self, a, v, nvals);
      for (int i = 0; i < nvals; i++)
        vals[l][r][i] = v[i];
    }
}

static inline double net_med(double vals[][BENCH_MAX_REPS][8], int l, int reps,
                             int i) {
  double v[BENCH_MAX_REPS];
  for (int r = 0; r < reps; r++)
    v[r] = vals[l][r][i];
  return bench_median(v, reps);
}

/* The table of a server benchmark. The values of each run: [0] rate
   (ops/s, client side), [1] the server's CPU seconds per op, [2] the user
   share of that CPU time. */
static inline void net_rate_cpu_table(int reps,
                                      double vals[][BENCH_MAX_REPS][8],
                                      const char *rate_name, const char *op) {
  double mrate[NET_NLIBS], mcpu[NET_NLIBS];
  printf("   median and best of %d runs, each in new processes; rate on the "
         "client side,\n"
         "   CPU = the server's user+sys CPU time per %s (the key figure);\n"
         "   evl/x: evloop's rate / x's (> 1: evloop faster) and evloop's "
         "CPU / x's\n"
         "   (< 1: evloop uses less)\n",
         reps, op);
  printf("   %-9s %10s %10s %7s | %9s %9s %6s %7s | %5s\n", "library",
         rate_name, "best", "evl/x", "CPU ns", "best", "user%", "evl/x",
         "load%");
  for (int l = 0; l < NET_NLIBS; l++) {
    if (!net_lib_built[l]) {
      printf("   %-9s (not built)\n", net_lib_names[l]);
      continue;
    }
    double best = 0, bcpu = 1e30;
    for (int r = 0; r < reps; r++) {
      if (vals[l][r][0] > best)
        best = vals[l][r][0];
      if (vals[l][r][1] < bcpu)
        bcpu = vals[l][r][1];
    }
    mrate[l] = net_med(vals, l, reps, 0);
    mcpu[l] = net_med(vals, l, reps, 1);
    printf("   %-9s %10.0f %10.0f", net_lib_names[l], mrate[l], best);
    if (net_lib_built[0])
      printf(" %7.2f", mrate[0] / mrate[l]);
    else
      printf(" %7s", "-");
    printf(" | %9.0f %9.0f %5.0f%%", mcpu[l] * 1e9, bcpu * 1e9,
           net_med(vals, l, reps, 2) * 100);
    if (net_lib_built[0])
      printf(" %7.2f", mcpu[0] / mcpu[l]);
    else
      printf(" %7s", "-");
    /* the server's CPU use: CPU per op * ops per second */
    printf(" | %4.0f%%\n", mcpu[l] * mrate[l] * 100);
  }
}

#endif /* NET_H_INCLUDED */
