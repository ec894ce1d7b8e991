/* Streams (asyncio's StreamReader/StreamWriter): evl_start_server and
   evl_open_connection on 127.0.0.1, the unix variants; readline,
   readexactly, readuntil, read(n), read(-1), at_eof, write, drain,
   write_eof, close, wait_closed; the limit (EVL_ELIMIT, nothing lost),
   EVL_EINCOMPLETE; 1000 lines echoed through tasks. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <sys/stat.h>

/* The bytes the last await gave, checked against want. */
static void expect_bytes(evl_task *t, const char *want) {
  evl_bytes *b = (evl_bytes *)evl_await_result(t);
  size_t n = strlen(want);
  CHECK_EQ(evl_await_error(t), 0);
  CHECK(b != NULL);
  if (b->len != n || memcmp(b->data, want, n) != 0)
    fprintf(stderr, "  got %lu bytes \"%.*s\", want \"%s\"\n",
            (unsigned long)b->len, (int)(b->len > 200 ? 200 : b->len),
            (const char *)b->data, want);
  CHECK_EQ(b->len, n);
  CHECK(memcmp(b->data, want, n) == 0);
  CHECK_EQ(b->data[n], 0);
}

/* ---- the server side ---------------------------------------------------- */

#define MAX_CONN 8
typedef struct srv_ctx {
  evl_stream *streams[MAX_CONN];
  evl_task *tasks[MAX_CONN];
  int n;
  const char *script; /* written to each new connection */
  size_t script_len;
  int eof_after_script; /* then write_eof */
  int echo;             /* run an echo task per connection */
  int echo_lines, echo_done;
} srv_ctx;

typedef struct echo_state {
  evl_stream *s;
  srv_ctx *c;
} echo_state;

/* Echoes lines until EOF, draining after each. */
static void echo_task(evl_task *t, void *state) {
  echo_state *e = (echo_state *)state;
  evl_bytes *b;
  EVL_ASYNC_BEGIN(t);
  for (;;) {
    EVL_AWAIT(t, evl_stream_readline(e->s));
    b = (evl_bytes *)evl_await_result(t);
    CHECK(b != NULL);
    if (b->len == 0)
      break;
    CHECK_EQ(b->data[b->len - 1], '\n');
    CHECK_EQ(evl_stream_write(e->s, b->data, b->len), 0);
    e->c->echo_lines++;
    EVL_AWAIT(t, evl_stream_drain(e->s));
  }
  CHECK_EQ(evl_stream_at_eof(e->s), 1);
  e->c->echo_done++;
  evl_stream_close(e->s);
  EVL_AWAIT(t, evl_stream_wait_closed(e->s));
  EVL_ASYNC_END(t);
}

static void srv_cb(evl_stream *s, void *arg) {
  srv_ctx *c = (srv_ctx *)arg;
  CHECK(s != NULL);
  CHECK(c->n < MAX_CONN);
  CHECK(evl_stream_transport(s) != NULL);
  c->streams[c->n] = s;
  if (c->script) {
    CHECK_EQ(evl_stream_write(s, c->script, c->script_len), 0);
    if (c->eof_after_script)
      CHECK_EQ(evl_stream_write_eof(s), 0);
  }
  if (c->echo) {
    echo_state e;
    e.s = s;
    e.c = c;
    c->tasks[c->n] = evl_task_create(
        evl_transport_loop(evl_stream_transport(s)), echo_task, &e, sizeof e);
    CHECK(c->tasks[c->n] != NULL);
  }
  c->n++;
}

static evl_server *stream_serve(evl_loop *loop, srv_ctx *c, const char *path) {
  evl_future *f =
      path ? evl_start_unix_server(loop, srv_cb, c, path, 0)
           : evl_start_server(loop, srv_cb, c, "127.0.0.1", 0, 0, NULL);
  evl_server *s;
  s = (evl_server *)wait_result(loop, f);
  return s;
}

/* Waits for the echo tasks, frees the streams, closes the server. */
static void stream_server_done(evl_loop *loop, evl_server *s, srv_ctx *c) {
  evl_future *w;
  int i;
  for (i = 0; i < c->n; i++)
    if (c->tasks[i]) {
      CHECK_EQ(wait_fut(loop, c->tasks[i]), 0);
      evl_future_release(c->tasks[i]);
    }
  for (i = 0; i < c->n; i++)
    evl_stream_free(c->streams[i]);
  evl_server_close(s);
  w = evl_server_wait_closed(s);
  CHECK(w != NULL);
  CHECK_EQ(wait_fut(loop, w), 0);
  evl_future_release(w);
  evl_server_free(s);
}

/* ---- the read functions -------------------------------------------------- */

static const char script1[] = "first line\n"
                              "XYZ"
                              "abc--def"
                              "0123456789"
                              "tail to eof";

typedef struct client_state {
  int port;
  const char *path;
  size_t limit;
  evl_stream *s;
  int k, i, step, err;
  size_t got;
  char line[64];
  unsigned char *big;
} client_state;

static evl_future *client_open(evl_task *t, client_state *c) {
  if (c->path)
    return evl_open_unix_connection(evl_task_loop(t), c->path, c->limit);
  return evl_open_connection(evl_task_loop(t), "127.0.0.1", c->port, c->limit,
                             NULL);
}

static void reads_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  evl_bytes *b;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  CHECK(c->s != NULL);
  CHECK_EQ(evl_stream_at_eof(c->s), 0);
  EVL_AWAIT(t, evl_stream_readline(c->s));
  expect_bytes(t, "first line\n");
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 3));
  expect_bytes(t, "XYZ");
  EVL_AWAIT(t, evl_stream_readuntil(c->s, "--", 2));
  expect_bytes(t, "abc--");
  EVL_AWAIT(t, evl_stream_read(c->s, 0));
  expect_bytes(t, "");
  /* read(n): at least 1, at most n bytes */
  EVL_AWAIT(t, evl_stream_read(c->s, 3));
  b = (evl_bytes *)evl_await_result(t);
  CHECK(b != NULL && b->len >= 1 && b->len <= 3);
  CHECK(memcmp(b->data, "def", b->len) == 0);
  c->k = (int)b->len;
  if (c->k < 3) {
    EVL_AWAIT(t, evl_stream_readexactly(c->s, (size_t)(3 - c->k)));
    expect_bytes(t, &"def"[c->k]);
  }
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 10));
  expect_bytes(t, "0123456789");
  EVL_AWAIT(t, evl_stream_read(c->s, -1));
  expect_bytes(t, "tail to eof");
  CHECK_EQ(evl_stream_at_eof(c->s), 1);
  /* at EOF every read gives empty data */
  EVL_AWAIT(t, evl_stream_read(c->s, -1));
  expect_bytes(t, "");
  EVL_AWAIT(t, evl_stream_read(c->s, 10));
  expect_bytes(t, "");
  EVL_AWAIT(t, evl_stream_readline(c->s));
  expect_bytes(t, "");
  c->step = 1;
  evl_stream_close(c->s);
  EVL_AWAIT(t, evl_stream_wait_closed(c->s));
  c->step = 2;
  EVL_ASYNC_END(t);
}

TEST(stream_read_functions) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.script = script1;
  sc.script_len = sizeof script1 - 1;
  sc.eof_after_script = 1;
  srv = stream_serve(loop, &sc, NULL);
  c.port = evl_server_port(srv);
  t = evl_task_create(loop, reads_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 2);
  CHECK_EQ(sc.n, 1);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- write, drain, write_eof -------------------------------------------- */

#define BIG ((size_t)4 << 20)

typedef struct sink_state {
  evl_stream *s;
  size_t got;
  int bad, done;
} sink_state;

/* Server side: reads everything until EOF, then answers with the count. */
static void sink_task(evl_task *t, void *state) {
  sink_state *k = (sink_state *)state;
  evl_bytes *b;
  size_t i;
  char line[32];
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_stream_read(k->s, -1));
  b = (evl_bytes *)evl_await_result(t);
  CHECK(b != NULL);
  k->got = b->len;
  for (i = 0; i < b->len; i++)
    if (b->data[i] != test_pat(i)) {
      k->bad = 1;
      break;
    }
  snprintf(line, sizeof line, "%lu\n", (unsigned long)b->len);
  CHECK_EQ(evl_stream_write(k->s, line, strlen(line)), 0);
  CHECK_EQ(evl_stream_write_eof(k->s), 0);
  EVL_AWAIT(t, evl_stream_drain(k->s));
  k->done = 1;
  EVL_ASYNC_END(t);
}

static sink_state g_sink;
static evl_task *g_sink_task;
static void sink_cb(evl_stream *s, void *arg) {
  (void)arg;
  CHECK(g_sink.s == NULL);
  g_sink.s = s;
  g_sink_task = evl_task_create(evl_transport_loop(evl_stream_transport(s)),
                                sink_task, &g_sink, 0);
}

static void writer_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* write in pieces, draining now and then */
  for (c->i = 0; c->i < 64; c->i++) {
    CHECK_EQ(
        evl_stream_write(c->s, c->big + (size_t)c->i * (BIG / 64), BIG / 64),
        0);
    if (c->i % 8 == 7)
      EVL_AWAIT(t, evl_stream_drain(c->s));
  }
  EVL_AWAIT(t, evl_stream_drain(c->s));
  CHECK(evl_transport_get_write_buffer_size(evl_stream_transport(c->s)) <=
        64 * 1024);
  CHECK_EQ(evl_stream_write_eof(c->s), 0);
  EVL_AWAIT(t, evl_stream_readline(c->s));
  {
    char want[32];
    snprintf(want, sizeof want, "%lu\n", (unsigned long)BIG);
    expect_bytes(t, want);
  }
  EVL_AWAIT(t, evl_stream_read(c->s, -1));
  expect_bytes(t, "");
  evl_stream_close(c->s);
  EVL_AWAIT(t, evl_stream_wait_closed(c->s));
  c->step = 1;
  EVL_ASYNC_END(t);
}

TEST(stream_write_drain_write_eof) {
  evl_loop *loop = test_open();
  client_state c;
  evl_future *f;
  evl_server *srv;
  evl_task *t;
  size_t i;
  memset(&c, 0, sizeof c);
  memset(&g_sink, 0, sizeof g_sink);
  c.big = (unsigned char *)malloc(BIG);
  CHECK(c.big != NULL);
  for (i = 0; i < BIG; i++)
    c.big[i] = test_pat(i);
  f = evl_start_server(loop, sink_cb, NULL, "127.0.0.1", 0, 0, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  c.port = evl_server_port(srv);
  t = evl_task_create(loop, writer_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 1);
  CHECK(g_sink_task != NULL);
  CHECK_EQ(wait_fut(loop, g_sink_task), 0);
  CHECK_EQ(g_sink.done, 1);
  CHECK_EQ(g_sink.got, BIG);
  CHECK_EQ(g_sink.bad, 0);
  evl_future_release(t);
  evl_future_release(g_sink_task);
  evl_stream_free(c.s);
  evl_stream_free(g_sink.s);
  evl_server_close(srv);
  f = evl_server_wait_closed(srv);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  evl_server_free(srv);
  free(c.big);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- limit, incomplete -------------------------------------------------- */

static char g_long_script[400];

static void limit_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* a 150-byte line with limit 100 */
  EVL_AWAIT_TRY(t, evl_stream_readline(c->s));
  c->err = evl_await_error(t);
  CHECK_EQ(c->err, EVL_ELIMIT);
  CHECK(evl_await_result(t) == NULL);
  /* nothing was lost: the whole script is still there, in order */
  EVL_AWAIT(t, evl_stream_read(c->s, -1));
  expect_bytes(t, g_long_script);
  c->step = 1;
  EVL_ASYNC_END(t);
}

TEST(stream_limit_keeps_data) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  memset(g_long_script, 'a', 150);
  strcpy(g_long_script + 150, "\nnext line\n");
  sc.script = g_long_script;
  sc.script_len = strlen(g_long_script);
  sc.eof_after_script = 1;
  srv = stream_serve(loop, &sc, NULL);
  c.port = evl_server_port(srv);
  c.limit = 100;
  t = evl_task_create(loop, limit_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 1);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

static void limit_nosep_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  evl_bytes *b;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* 300 bytes and no separator, the connection stays open: the read fails
     once more than `limit` bytes are buffered */
  EVL_AWAIT_TRY(t, evl_stream_readuntil(c->s, "|", 1));
  CHECK_EQ(evl_await_error(t), EVL_ELIMIT);
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 50));
  b = (evl_bytes *)evl_await_result(t);
  CHECK(b != NULL && b->len == 50);
  CHECK(memcmp(b->data, g_long_script, 50) == 0);
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 250));
  b = (evl_bytes *)evl_await_result(t);
  CHECK(b != NULL && b->len == 250);
  CHECK(memcmp(b->data, g_long_script + 50, 250) == 0);
  c->step = 1;
  EVL_ASYNC_END(t);
}

TEST(stream_limit_without_separator) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  memset(g_long_script, 'b', 300);
  g_long_script[300] = 0;
  sc.script = g_long_script;
  sc.script_len = 300;
  srv = stream_serve(loop, &sc, NULL);
  c.port = evl_server_port(srv);
  c.limit = 100;
  t = evl_task_create(loop, limit_nosep_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 1);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

static void incomplete_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  EVL_AWAIT_TRY(t, evl_stream_readexactly(c->s, 10));
  c->err = evl_await_error(t);
  CHECK_EQ(c->err, EVL_EINCOMPLETE);
  /* the partial data stays readable */
  EVL_AWAIT(t, evl_stream_read(c->s, -1));
  expect_bytes(t, "abc");
  CHECK_EQ(evl_stream_at_eof(c->s), 1);
  /* readuntil at EOF without the separator: EVL_EINCOMPLETE too */
  EVL_AWAIT_TRY(t, evl_stream_readuntil(c->s, "\n", 1));
  CHECK(evl_await_error(t) == EVL_EINCOMPLETE || evl_await_error(t) == 0);
  c->step = 1;
  EVL_ASYNC_END(t);
}

TEST(stream_readexactly_past_eof) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.script = "abc";
  sc.script_len = 3;
  sc.eof_after_script = 1;
  srv = stream_serve(loop, &sc, NULL);
  c.port = evl_server_port(srv);
  t = evl_task_create(loop, incomplete_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 1);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- 1000 lines echoed -------------------------------------------------- */

#define NLINES 1000

static void lines_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* half of them one by one, the other half pipelined */
  for (c->i = 0; c->i < NLINES / 2; c->i++) {
    snprintf(c->line, sizeof c->line, "line %d of the echo test\n", c->i);
    CHECK_EQ(evl_stream_write(c->s, c->line, strlen(c->line)), 0);
    EVL_AWAIT(t, evl_stream_readline(c->s));
    expect_bytes(t, c->line);
  }
  for (c->i = NLINES / 2; c->i < NLINES; c->i++) {
    snprintf(c->line, sizeof c->line, "line %d of the echo test\n", c->i);
    CHECK_EQ(evl_stream_write(c->s, c->line, strlen(c->line)), 0);
  }
  EVL_AWAIT(t, evl_stream_drain(c->s));
  for (c->i = NLINES / 2; c->i < NLINES; c->i++) {
    EVL_AWAIT(t, evl_stream_readline(c->s));
    snprintf(c->line, sizeof c->line, "line %d of the echo test\n", c->i);
    expect_bytes(t, c->line);
    c->k++;
  }
  CHECK_EQ(evl_stream_write_eof(c->s), 0);
  EVL_AWAIT(t, evl_stream_read(c->s, -1)); /* the server closes after EOF */
  expect_bytes(t, "");
  CHECK_EQ(evl_stream_at_eof(c->s), 1);
  evl_stream_close(c->s);
  EVL_AWAIT(t, evl_stream_wait_closed(c->s));
  c->step = 1;
  EVL_ASYNC_END(t);
}

static void echo_lines_test(const char *path) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.echo = 1;
  srv = stream_serve(loop, &sc, path);
  c.port = path ? 0 : evl_server_port(srv);
  c.path = path;
  t = evl_task_create(loop, lines_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 1);
  CHECK_EQ(c.k, NLINES / 2);
  RUN_UNTIL(loop, sc.echo_done == 1);
  CHECK_EQ(sc.echo_lines, NLINES);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(stream_tcp_echo_1000_lines) {
  echo_lines_test(NULL);
}

/* ---- unix variants ------------------------------------------------------- */

TEST(stream_unix_echo_lines) {
  char dir[200];
  char path[256];
  need_af_unix();
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/s", dir);
  echo_lines_test(path);
  test_unlink(path);
  CHECK_EQ(test_rmdir(dir), 0);
}

TEST(stream_unix_read_functions) {
  char dir[200];
  char path[256];
  evl_loop *loop;
  srv_ctx sc;
  client_state c;
  evl_server *srv;
  evl_task *t;
  need_af_unix();
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/s", dir);
  loop = test_open();
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.script = script1;
  sc.script_len = sizeof script1 - 1;
  sc.eof_after_script = 1;
  srv = stream_serve(loop, &sc, path);
  c.path = path;
  t = evl_task_create(loop, reads_task, &c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c.step, 2);
  evl_future_release(t);
  evl_stream_free(c.s);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  test_unlink(path);
  CHECK_EQ(test_rmdir(dir), 0);
  CHECK_EQ(g_reports, 0);
}

/* ---- errors -------------------------------------------------------------- */

TEST(stream_open_connection_refused) {
  evl_loop *loop = test_open();
  srv_ctx sc;
  evl_server *srv;
  evl_future *f;
  int port;
  memset(&sc, 0, sizeof sc);
  srv = stream_serve(loop, &sc, NULL);
  port = evl_server_port(srv);
  stream_server_done(loop, srv, &sc);
  f = evl_open_connection(loop, "127.0.0.1", port, 0, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_ECONNREFUSED);
  CHECK_EQ(evl_future_error(f), EVL_ECONNREFUSED);
  evl_future_release(f);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(stream_free_without_close) {
  /* evl_stream_free on an open stream closes it; the peer sees EOF */
  evl_loop *loop = test_open();
  srv_ctx sc;
  evl_server *srv;
  evl_future *f;
  evl_stream *s;
  memset(&sc, 0, sizeof sc);
  sc.echo = 1;
  srv = stream_serve(loop, &sc, NULL);
  f = evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  s = (evl_stream *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_stream_write(s, "one\n", 4), 0);
  RUN_UNTIL(loop, sc.echo_lines == 1);
  evl_stream_free(s);
  RUN_UNTIL(loop, sc.echo_done == 1);
  stream_server_done(loop, srv, &sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TESTS_BEGIN
T(stream_read_functions)
T(stream_write_drain_write_eof)
T(stream_limit_keeps_data)
T(stream_limit_without_separator)
T(stream_readexactly_past_eof)
T(stream_tcp_echo_1000_lines)
T(stream_unix_echo_lines)
T(stream_unix_read_functions)
T(stream_open_connection_refused)
T(stream_free_without_close)
TESTS_END
