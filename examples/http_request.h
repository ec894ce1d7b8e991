/* The request handling of http_server.c: an incremental HTTP/1.1 request
   parser and the answers, with no I/O, so that the example and the fuzzer
   (tests/fuzz/fuzz_http.c) run the same code. http_input() takes the bytes
   of one connection as they come, in pieces of any size, and writes the
   answers to an out_buf; the answers are the same however the bytes are
   split. */
#ifndef HTTP_REQUEST_H
#define HTTP_REQUEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
   Answers are collected in an out_buf and handed to its write function
   once per input (several pipelined answers become one write). */
typedef struct out_buf {
  void (*write)(void *ctx, const char *data, size_t len);
  void *ctx;
  const char *date; /* the Date header's value */
  size_t len;
  char data[16384];
} out_buf;

static void out_flush(out_buf *o) {
  if (o->len > 0)
    o->write(o->ctx, o->data, o->len);
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

/* connection: "close", "keep-alive" or NULL (no Connection header). */
static void respond(out_buf *o, const char *status, const char *body,
                    int head_only, const char *connection, const char *extra) {
  char len[32];
  out_str(o, "HTTP/1.1 ");
  out_str(o, status);
  out_str(o, "\r\nDate: ");
  out_str(o, o->date);
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

/* ---- One connection's input ---------------------------------------------- */
typedef struct http_conn {
  int closing;                  /* answered for the last time */
  unsigned long long body_left; /* request body bytes still to skip */
  size_t len;                   /* bytes in buf */
  size_t parsed; /* of an unfinished head at buf[0]: bytes parsed already */
  char buf[HEAD_MAX]; /* the unconsumed input */
} http_conn;

/* Answers one request at the start of p[0..n): returns the bytes consumed
   (0: the head is not complete yet). */
static size_t handle_request(http_conn *c, const char *p, size_t n,
                             out_buf *o) {
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

/* Takes len more bytes of the connection; answers every request they
   complete into o (not flushed). Returns how many requests were answered.
   Once c->closing is set the connection is to be closed after the answers
   and takes no more input. */
static int http_input(http_conn *c, const char *in, size_t len, out_buf *o) {
  int answered = 0;
  if (c->closing)
    return 0;
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
        /* An unfinished head is parsed again only once a new line ends:
           a client sending a byte at a time costs one scan per line, not
           one per byte. */
        if (start == 0 && c->parsed &&
            !memchr(c->buf + c->parsed, '\n', c->len - c->parsed))
          break;
        used = handle_request(c, c->buf + start, c->len - start, o);
        if (used == 0) {
          c->parsed = c->len - start; /* at buf[0] after the memmove */
          break;
        }
        answered++;
      }
      c->parsed = 0;
      start += used;
    }
    if (c->closing)
      break;
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len == HEAD_MAX) { /* a head that does not fit */
      respond_error(o, 431);
      c->closing = 1;
      answered++;
      break;
    }
  }
  return answered;
}

/* Nothing of a request is buffered or pending (between requests). */
static int http_idle(const http_conn *c) {
  return c->len == 0 && c->body_left == 0;
}

#endif
