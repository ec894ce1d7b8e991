/* A small HTTP/1.1 server: "Hello, World!" for every GET, with keep-alive
   and pipelining, serving until SIGINT or SIGTERM.

       http_server [--port N]        (default 8080, on 127.0.0.1)

   The protocol parses requests incrementally from the bytes data_received
   gets: a request may arrive split over several reads, several may arrive
   in one read (pipelining), and the answers go out in order, one write per
   read. Per connection it keeps at most 8 KiB of an unfinished request
   head: a longer one gets 431 and the connection is closed.

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

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEAD_MAX 8192 /* longest request head (request line + headers) */

/* ---- Request parser ------------------------------------------------------
   parse_head() looks at the unconsumed bytes of a connection: it returns
   the length of a complete, valid request head (request line, headers and
   the empty line), 0 if the head is not complete yet, or minus the status
   code of the error to answer. Lines end with CRLF or a bare LF. */
typedef struct request {
  int head_only;  /* HEAD */
  int other;      /* neither GET nor HEAD */
  int minor;      /* HTTP/1.<minor> */
  int close;      /* Connection: close */
  int keep_alive; /* Connection: keep-alive */
  int hosts;      /* Host headers seen */
  int chunked;    /* Transfer-Encoding (of any kind) */
  int has_length;
  unsigned long long content_length;
} request;

static int is_tchar(unsigned char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
         (ch >= 'A' && ch <= 'Z') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Case-insensitive comparison of n bytes with a lower-case word. */
static int word_is(const char *p, size_t n, const char *word) {
  size_t i;
  if (strlen(word) != n)
    return 0;
  for (i = 0; i < n; i++) {
    char ch = p[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch - 'A' + 'a');
    if (ch != word[i])
      return 0;
  }
  return 1;
}

/* The request line: METHOD SP target SP HTTP/d.d */
static int parse_request_line(const char *p, size_t n, request *rq) {
  size_t i = 0, m;
  while (i < n && is_tchar((unsigned char)p[i]))
    i++;
  if (i == 0 || i >= n || p[i] != ' ')
    return -400;
  /* Methods are case-sensitive. */
  rq->head_only = i == 4 && memcmp(p, "HEAD", 4) == 0;
  rq->other = !rq->head_only && !(i == 3 && memcmp(p, "GET", 3) == 0);
  m = ++i;
  while (i < n && (unsigned char)p[i] > ' ' && p[i] != 0x7f)
    i++;
  if (i == m || i >= n || p[i] != ' ')
    return -400;
  p += i + 1;
  n -= i + 1;
  if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' ||
      p[6] != '.' || p[7] < '0' || p[7] > '9')
    return -400;
  if (p[5] != '1')
    return -505;
  rq->minor = p[7] - '0';
  return 0;
}

/* One header line: name ":" OWS value OWS */
static int parse_header(const char *p, size_t n, request *rq) {
  size_t i = 0, v, e, k;
  while (i < n && is_tchar((unsigned char)p[i]))
    i++;
  if (i == 0 || i >= n || p[i] != ':')
    return -400; /* also a space before the colon, or a folded line */
  for (v = i + 1; v < n && (p[v] == ' ' || p[v] == '\t');)
    v++;
  for (e = n; e > v && (p[e - 1] == ' ' || p[e - 1] == '\t');)
    e--;
  for (k = v; k < e; k++)
    if (((unsigned char)p[k] < ' ' && p[k] != '\t') || p[k] == 0x7f)
      return -400;
  if (word_is(p, i, "host")) {
    rq->hosts++;
  } else if (word_is(p, i, "connection")) {
    /* A comma-separated list of options. */
    size_t s = v;
    while (s < e) {
      size_t t = s, te;
      while (t < e && p[t] != ',')
        t++;
      te = t;
      while (s < te && (p[s] == ' ' || p[s] == '\t'))
        s++;
      while (te > s && (p[te - 1] == ' ' || p[te - 1] == '\t'))
        te--;
      if (word_is(p + s, te - s, "close"))
        rq->close = 1;
      else if (word_is(p + s, te - s, "keep-alive"))
        rq->keep_alive = 1;
      s = t + 1;
    }
  } else if (word_is(p, i, "content-length")) {
    unsigned long long len = 0;
    if (v == e)
      return -400;
    for (k = v; k < e; k++) {
      if (p[k] < '0' || p[k] > '9' || len > 1000000000000ULL)
        return -400;
      len = len * 10 + (unsigned)(p[k] - '0');
    }
    if (rq->has_length && rq->content_length != len)
      return -400;
    rq->has_length = 1;
    rq->content_length = len;
  } else if (word_is(p, i, "transfer-encoding")) {
    rq->chunked = 1;
  }
  return 0;
}

static long parse_head(const char *buf, size_t n, request *rq) {
  size_t pos = 0;
  int first = 1;
  memset(rq, 0, sizeof *rq);
  for (;;) {
    const char *line = buf + pos;
    const char *nl = (const char *)memchr(line, '\n', n - pos);
    size_t len;
    int err;
    if (!nl)
      return 0; /* not complete yet */
    len = (size_t)(nl - line);
    pos += len + 1;
    if (len > 0 && line[len - 1] == '\r')
      len--;
    if (first && len == 0)
      continue; /* empty lines before a request are ignored */
    if (len == 0)
      break; /* the end of the head */
    err =
        first ? parse_request_line(line, len, rq) : parse_header(line, len, rq);
    if (err < 0)
      return err;
    first = 0;
  }
  if (rq->chunked)
    return -501;
  if (rq->minor >= 1 && rq->hosts != 1)
    return -400;
  return (long)pos;
}

/* ---- Responses -----------------------------------------------------------
   Answers are collected in an out_buf and written once per data_received
   (several pipelined answers become one write). */
typedef struct out_buf {
  evl_transport *t;
  size_t len;
  char data[16384];
} out_buf;

static void out_flush(out_buf *o) {
  if (o->len > 0)
    evl_transport_write(o->t, o->data, o->len);
  o->len = 0;
}

static void out_add(out_buf *o, const char *s, size_t n) {
  if (o->len + n > sizeof o->data)
    out_flush(o);
  memcpy(o->data + o->len, s, n); /* n is always small here */
  o->len += n;
}

static void out_str(out_buf *o, const char *s) {
  out_add(o, s, strlen(s));
}

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

/* connection: "close", "keep-alive" or NULL (no Connection header). */
static void respond(out_buf *o, const char *status, const char *body,
                    int head_only, const char *connection, const char *extra) {
  char len[32];
  out_str(o, "HTTP/1.1 ");
  out_str(o, status);
  out_str(o, "\r\nDate: ");
  out_str(o, http_date());
  out_str(o, "\r\nContent-Type: text/plain\r\nContent-Length: ");
  snprintf(len, sizeof len, "%u", (unsigned)strlen(body));
  out_str(o, len);
  out_str(o, "\r\n");
  if (connection) {
    out_str(o, "Connection: ");
    out_str(o, connection);
    out_str(o, "\r\n");
  }
  if (extra)
    out_str(o, extra);
  out_str(o, "\r\n");
  if (!head_only)
    out_str(o, body);
}

static void respond_error(out_buf *o, int code) {
  const char *status = "400 Bad Request";
  if (code == 431)
    status = "431 Request Header Fields Too Large";
  else if (code == 501)
    status = "501 Not Implemented";
  else if (code == 505)
    status = "505 HTTP Version Not Supported";
  respond(o, status, status + 4, 0, "close", NULL);
}

/* ---- The protocol -------------------------------------------------------- */
typedef struct conn {
  struct conn *prev, *next;
  struct server_state *srv;
  evl_transport *t;
  int closing;                  /* answered for the last time */
  unsigned long long body_left; /* request body bytes still to skip */
  size_t len;                   /* bytes in buf */
  char buf[HEAD_MAX];           /* the unconsumed input */
} conn;

typedef struct server_state {
  conn *conns;  /* live connections */
  int stopping; /* SIGINT or SIGTERM came */
} server_state;

/* Answers one request at the start of p[0..n): returns the bytes consumed
   (0: the head is not complete yet). */
static size_t handle_request(conn *c, const char *p, size_t n, out_buf *o) {
  request rq;
  long r = parse_head(p, n, &rq);
  int keep;
  if (r == 0)
    return 0;
  if (r < 0) {
    respond_error(o, (int)-r);
    c->closing = 1;
    return n;
  }
  keep = !rq.close && (rq.minor >= 1 || rq.keep_alive);
  if (rq.other)
    respond(o, "405 Method Not Allowed", "Method Not Allowed", 0,
            keep ? NULL : "close", "Allow: GET, HEAD\r\n");
  else
    respond(o, "200 OK", "Hello, World!", rq.head_only,
            !keep           ? "close"
            : rq.minor == 0 ? "keep-alive"
                            : NULL,
            NULL);
  c->body_left = rq.has_length ? rq.content_length : 0;
  c->closing = !keep;
  return (size_t)r;
}

static void data_received(evl_transport *t, const void *data, size_t len,
                          void *user) {
  conn *c = (conn *)user;
  const char *in = (const char *)data;
  out_buf o;
  if (c->closing)
    return;
  o.t = t;
  o.len = 0;
  while (len > 0) {
    size_t start = 0, take = HEAD_MAX - c->len;
    if (take > len)
      take = len;
    memcpy(c->buf + c->len, in, take);
    c->len += take;
    in += take;
    len -= take;
    /* Answer every complete request in the buffer. */
    while (!c->closing && start < c->len) {
      size_t used;
      if (c->body_left > 0) {
        used = c->len - start;
        if (used > c->body_left)
          used = (size_t)c->body_left;
        c->body_left -= used;
      } else {
        used = handle_request(c, c->buf + start, c->len - start, &o);
        if (used == 0)
          break;
      }
      start += used;
    }
    if (c->closing)
      break;
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len == HEAD_MAX) { /* a head that does not fit */
      respond_error(&o, 431);
      c->closing = 1;
      break;
    }
  }
  out_flush(&o);
  if (c->closing)
    evl_transport_close(t); /* after the queued answers are sent */
}

static void connection_made(evl_transport *t, void *user) {
  server_state *srv = (server_state *)user; /* the server's user pointer */
  conn *c = (conn *)malloc(sizeof *c);
  if (!c) {
    /* connection_lost must not mistake the server state for a conn */
    evl_transport_set_user(t, NULL);
    evl_transport_abort(t);
    return;
  }
  c->srv = srv;
  c->t = t;
  c->closing = 0;
  c->body_left = 0;
  c->len = 0;
  c->prev = NULL;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  evl_transport_set_user(t, c); /* this connection's callbacks get c */
}

static void connection_lost(evl_transport *t, int err, void *user) {
  conn *c = (conn *)user;
  (void)t;
  (void)err; /* a reset by a client is no news for a web server */
  if (!c)
    return;
  if (c->prev)
    c->prev->next = c->next;
  else
    c->srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
}

/* Flow control: the client does not read its answers as fast as it sends
   requests. */
static void pause_writing(evl_transport *t, void *user) {
  (void)user;
  evl_transport_pause_reading(t);
}

static void resume_writing(evl_transport *t, void *user) {
  (void)user;
  evl_transport_resume_reading(t);
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
/* Shutdown: the connections that did not close in time. */
static void abort_connections(evl_loop *loop, void *arg) {
  server_state *srv = (server_state *)arg;
  conn *c, *next;
  (void)loop;
  for (c = srv->conns; c; c = next) {
    next = c->next; /* connection_lost may free c */
    evl_transport_abort(c->t);
  }
}

/* SIGINT or SIGTERM (run by the loop, not in signal context): the first
   one stops the loop; the handlers stay until the end, so that a second
   signal changes nothing while we shut down. */
static void on_signal(evl_loop *loop, int signum, void *arg) {
  server_state *srv = (server_state *)arg;
  (void)signum;
  if (!srv->stopping) {
    srv->stopping = 1;
    evl_stop(loop);
  }
}

/* examples/https_server.c is this file with HTTPS_SERVER defined: it also
   takes --cert F --key F and serves HTTPS (ALPN http/1.1). */
#ifdef HTTPS_SERVER
static const char *cert_file, *key_file;
#define SERVER_NAME "https_server"
#define USAGE "usage: https_server [--port N] --cert F --key F\n"
#else
#define SERVER_NAME "http_server"
#define USAGE "usage: http_server [--port N]\n"
#endif

static int parse_port(int argc, char **argv, int def, int *port) {
  int i;
  *port = def;
  for (i = 1; i < argc; i++) {
    char *end;
    long v;
#ifdef HTTPS_SERVER
    if (!strcmp(argv[i], "--cert") && i + 1 < argc) {
      cert_file = argv[++i];
      continue;
    }
    if (!strcmp(argv[i], "--key") && i + 1 < argc) {
      key_file = argv[++i];
      continue;
    }
#endif
    if (strcmp(argv[i], "--port") != 0 || i + 1 >= argc)
      return -1;
    v = strtol(argv[++i], &end, 10);
    if (*argv[i] == '\0' || *end != '\0' || v < 0 || v > 65535)
      return -1;
    *port = (int)v;
  }
  return 0;
}

int main(int argc, char **argv) {
  server_state srv = {NULL, 0};
  evl_loop *loop = NULL;
  evl_server *server = NULL;
  evl_net_options opts;
  evl_future *fut;
  int port, err;

  memset(&opts, 0, sizeof opts);
  if (parse_port(argc, argv, 8080, &port) < 0) {
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
  if ((err = evl_add_signal_handler(loop, SIGINT, on_signal, &srv)) < 0 ||
      (err = evl_add_signal_handler(loop, SIGTERM, on_signal, &srv)) < 0) {
    fprintf(stderr, "evl_add_signal_handler: %s\n", evl_strerror(err));
    goto done;
  }

  /* Listen; the future's result is the evl_server *. */
  fut = evl_create_server(loop, &http_protocol, &srv, "127.0.0.1", port, &opts);
  if (!fut) {
    err = EVL_ENOMEM;
    fprintf(stderr, "evl_create_server: %s\n", evl_strerror(err));
    goto done;
  }
  err = evl_run_until_complete(loop, fut);
  server = err == 0 ? (evl_server *)evl_future_result(fut) : NULL;
  evl_future_release(fut);
  if (err == EVL_ESTOPPED) { /* a signal came first */
    err = 0;
    goto done;
  }
  if (err < 0) {
    fprintf(stderr, SERVER_NAME ": cannot listen on 127.0.0.1:%d: %s\n", port,
            evl_strerror(err));
    goto done;
  }
  printf("listening on 127.0.0.1:%d\n", evl_server_port(server));
  fflush(stdout);

  /* Serve until a signal stops the loop (unless one came already). */
  if (!srv.stopping)
    err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

  /* Shut down: stop listening, close the connections (what is queued is
     sent first) and wait until they are gone. A timer aborts those still
     there after 2 s (a client that stopped reading). */
  evl_server_close(server);
  {
    conn *c;
    evl_handle timer;
    int werr;
    for (c = srv.conns; c; c = c->next)
      evl_transport_close(c->t);
    timer = evl_call_later(loop, 2.0, abort_connections, &srv);
    fut = evl_server_wait_closed(server);
    werr = evl_run_until_complete(loop, fut);
    evl_future_release(fut);
    evl_handle_cancel(loop, timer);
    if (werr < 0 && err == 0)
      err = werr;
  }
  evl_server_free(server);

done:
  evl_remove_signal_handler(loop, SIGINT);
  evl_remove_signal_handler(loop, SIGTERM);
  evl_loop_free(loop);
  evl_tls_context_release(opts.tls);
  return err < 0 ? 1 : 0;
}
