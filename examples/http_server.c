/* A small HTTP/1.1 server: "Hello, World!" for every GET, with keep-alive
   and pipelining, serving until SIGINT or SIGTERM.

       http_server [--port N] [--request-timeout S] [--idle-timeout S]

   It listens on 127.0.0.1, port 8080 by default. Slow clients cannot hold
   connections: a request head must arrive whole within the request
   timeout (default 10 s, counted from its first byte; else 408 and close),
   and a keep-alive connection idle for the idle timeout (default 30 s)
   is closed.

   The protocol parses requests incrementally (http_request.h, shared
   with the fuzzer) from the bytes data_received gets: a request may arrive
   split over several reads, several may arrive in one read (pipelining), and
   the answers go out in order, one write per read. Per connection it keeps at
   most 8 KiB of an unfinished request head: a longer one gets 431 and the
   connection is closed.

     GET            200 OK, Content-Type: text/plain, the 13-byte body
                    "Hello, World!"
     HEAD           the same without the body
     other methods  405 Method Not Allowed (a Content-Length body is
                    skipped; Transfer-Encoding gets 501 and a close)
     malformed      400 Bad Request, then the connection is closed (also an
                    HTTP/1.1 request without exactly one Host header)
     HTTP/2.0 ...   505, then close

   The connection stays open unless the client sends "Connection: close",
   or speaks HTTP/1.0 without "Connection: keep-alive". Flow control: when
   a client does not read its answers, the transport's write buffer grows
   past its high water mark and we stop reading from that client until it
   has drained (pause_writing/resume_writing).

   It prints "listening on 127.0.0.1:PORT" when it accepts connections. On
   SIGINT or SIGTERM it stops listening, closes every connection, closes
   the loop and exits with 0.

   Try it: http_server & curl -i http://127.0.0.1:8080/
           wrk -t2 -c100 -d3s http://127.0.0.1:8080/

   Build: cc -std=c99 http_server.c -o http_server -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_request.h" /* the request parser and the answers */
#include "server.h"       /* the connection list, signals, serving until one */

#define REQUEST_TIMEOUT 10.0 /* seconds to send a whole request head */
#define IDLE_TIMEOUT 30.0    /* seconds a keep-alive connection may idle */

/* The Date header's value, made again when the second changes. */
static const char *http_date(void) {
  static char date[64];
  static time_t last = (time_t)-1;
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return date;
}

/* ---- The protocol --------------------------------------------------------
   Slow clients: each connection has one timer. A request (or the first
   one, from the connection on) must arrive whole within the request
   timeout, counted from its first byte however slowly the rest trickles
   in (slowloris): else 408 and close. Between requests a keep-alive
   connection may stay idle for the idle timeout, then it is closed. */
typedef struct conn {
  conn_link link; /* in the server's list (server.h); link.t: transport */
  struct server_state *srv;
  evl_handle timer; /* the request or the idle timeout */
  int in_request;   /* the timer is the request timeout */
  http_conn http;   /* the request parser's state */
} conn;

typedef struct server_state {
  server_base base; /* the list and the stop (server.h) */
  double request_timeout, idle_timeout;
  evl_loop *loop;
} server_state;

static void on_timeout(evl_loop *loop, void *arg);

/* (Re)arms c's timer: the request timeout while a request is under way,
   the idle timeout between requests. */
static void arm_timer(conn *c, int in_request) {
  server_state *srv = c->srv;
  evl_handle_cancel(srv->loop, c->timer);
  c->in_request = in_request;
  c->timer = evl_call_later(
      srv->loop, in_request ? srv->request_timeout : srv->idle_timeout,
      on_timeout, c);
}

static void transport_write(void *ctx, const char *data, size_t len) {
  evl_transport_write((evl_transport *)ctx, data, len);
}

static void out_init(out_buf *o, evl_transport *t) {
  o->write = transport_write;
  o->ctx = t;
  o->date = http_date();
  o->len = 0;
}

static void on_timeout(evl_loop *loop, void *arg) {
  conn *c = (conn *)arg;
  (void)loop;
  c->timer = -1;
  if (c->http.closing)
    return;
  c->http.closing = 1;
  /* A client that does not even read its answers: no goodbye. */
  if (evl_transport_get_write_buffer_size(c->link.t) > 0) {
    evl_transport_abort(c->link.t);
    return;
  }
  if (c->in_request && !http_idle(&c->http)) {
    out_buf o;
    out_init(&o, c->link.t);
    respond(&o, "408 Request Timeout", "Request Timeout", 0, "close", NULL);
    out_flush(&o);
  }
  evl_transport_close(c->link.t);
}

static void data_received(evl_transport *t, const void *data, size_t len,
                          void *user) {
  conn *c = (conn *)user;
  int was_idle = !c->in_request, answered;
  out_buf o;
  if (c->http.closing)
    return;
  out_init(&o, t);
  answered = http_input(&c->http, (const char *)data, len, &o);
  out_flush(&o);
  if (c->http.closing) {
    evl_transport_close(t); /* after the queued answers are sent */
    return;
  }
  /* The request timeout counts from a request's first byte: rearmed when
     a request was answered or a new one began, not for every byte. */
  if (http_idle(&c->http)) {
    if (answered || c->in_request)
      arm_timer(c, 0);
  } else if (answered || was_idle) {
    arm_timer(c, 1);
  }
}

static void connection_made(evl_transport *t, void *user) {
  server_state *srv = (server_state *)user; /* the server's user pointer */
  conn *c = (conn *)conn_new(&srv->base, t, sizeof *c);
  if (!c)
    return;
  c->srv = srv; /* this connection's callbacks get c */
  c->http.closing = 0;
  c->http.body_left = 0;
  c->http.len = 0;
  c->http.parsed = 0;
  c->timer = -1;
  arm_timer(c, 1); /* the first request must come in time too */
}

static void connection_lost(evl_transport *t, int err, void *user) {
  conn *c = (conn *)user;
  (void)t;
  (void)err; /* a reset by a client is no news for a web server */
  if (!c)
    return;
  evl_handle_cancel(c->srv->loop, c->timer);
  conn_remove(&c->srv->base, &c->link);
  free(c);
}

static const evl_protocol http_protocol = {
    .connection_made = connection_made,
    .data_received = data_received,
    .connection_lost = connection_lost,
    .pause_writing = pause_writing,
    .resume_writing = resume_writing,
    /* no eof_received: EOF closes the connection once its answers are
       sent */
};

/* ---- main ---------------------------------------------------------------- */
/* examples/https_server.c is this file with HTTPS_SERVER defined: it also
   takes --cert F --key F and serves HTTPS (ALPN http/1.1). */
#ifdef HTTPS_SERVER
static const char *cert_file, *key_file;
#define SERVER_NAME "https_server"
#define USAGE_TLS " --cert F --key F"
#else
#define SERVER_NAME "http_server"
#define USAGE_TLS ""
#endif
#define USAGE                                                                  \
  "usage: " SERVER_NAME " [--port N] [--request-timeout SECONDS]"              \
  " [--idle-timeout SECONDS]" USAGE_TLS "\n"

/* --port N, --request-timeout S, --idle-timeout S (seconds, > 0), and for
   HTTPS --cert F --key F. */
static int parse_args(int argc, char **argv, int *port, server_state *srv) {
  int i;
  *port = 8080;
  srv->request_timeout = REQUEST_TIMEOUT;
  srv->idle_timeout = IDLE_TIMEOUT;
  for (i = 1; i + 1 < argc; i += 2) {
    const char *v = argv[i + 1];
    char *end;
#ifdef HTTPS_SERVER
    if (strcmp(argv[i], "--cert") == 0) {
      cert_file = v;
      continue;
    }
    if (strcmp(argv[i], "--key") == 0) {
      key_file = v;
      continue;
    }
#endif
    if (strcmp(argv[i], "--port") == 0) {
      long p = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || p < 0 || p > 65535)
        return -1;
      *port = (int)p;
    } else {
      double s = strtod(v, &end);
      if (*v == '\0' || *end != '\0' || !(s > 0 && s < 1e6))
        return -1;
      if (strcmp(argv[i], "--request-timeout") == 0)
        srv->request_timeout = s;
      else if (strcmp(argv[i], "--idle-timeout") == 0)
        srv->idle_timeout = s;
      else
        return -1;
    }
  }
  return i == argc ? 0 : -1;
}

int main(int argc, char **argv) {
  server_state srv;
  evl_loop *loop = NULL;
  evl_net_options opts;
  int port, err;

  memset(&srv, 0, sizeof srv);
  memset(&opts, 0, sizeof opts);
  if (parse_args(argc, argv, &port, &srv) < 0) {
    fprintf(stderr, USAGE);
    return 2;
  }
#ifdef HTTPS_SERVER
  {
    static const char *const alpn[] = {"http/1.1", NULL};
    evl_tls_config cfg;
    if (!cert_file || !key_file) {
      fprintf(stderr, USAGE);
      return 2;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.server = 1;
    cfg.cert_file = cert_file;
    cfg.key_file = key_file;
    cfg.alpn = alpn;
    err = evl_tls_context_new(&opts.tls, &cfg);
    if (err < 0) {
      fprintf(stderr, "https_server: %s: %s\n",
              err == EVL_ENOTSUP ? "built without a TLS engine"
                                 : "cannot use the certificate and key",
              evl_strerror(err));
      return 1;
    }
  }
#endif
  err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    return 1;
  }
  srv.loop = loop;
  err =
      serve_until_signal(loop, &http_protocol, &srv, port, &opts, SERVER_NAME);
  evl_loop_free(loop);
  evl_tls_context_release(opts.tls);
  return err < 0 ? 1 : 0;
}
