/* Streams (asyncio's StreamReader/StreamWriter): evl_start_server and
   evl_open_connection on 127.0.0.1, the unix variants; readline,
   readexactly, readuntil, read(n), read(-1), at_eof, write, drain,
   write_eof, close, wait_closed; the limit (EVL_ELIMIT, nothing lost),
   EVL_EINCOMPLETE; 1000 lines echoed through tasks. */
#include "test.h"

#include "net_test.h"

#include <errno.h>
#include <sys/stat.h>

/* The bytes the last await gave, checked against the n bytes at want. */
static void expect_bytes_n(evl_task *t, const char *want, size_t n) {
  evl_bytes *b = (evl_bytes *)evl_await_result(t);
  CHECK_EQ(evl_await_error(t), 0);
  CHECK(b != NULL);
  if (b->len != n || memcmp(b->data, want, n) != 0)
    fprintf(stderr, "  got %lu bytes \"%.*s\", want \"%.*s\"\n",
            (unsigned long)b->len, (int)(b->len > 200 ? 200 : b->len),
            (const char *)b->data, (int)(n > 200 ? 200 : n), want);
  CHECK_EQ(b->len, n);
  CHECK(memcmp(b->data, want, n) == 0);
  CHECK_EQ(b->data[n], 0);
}

/* The same for a string. */
static void expect_bytes(evl_task *t, const char *want) {
  expect_bytes_n(t, want, strlen(want));
}

/* ---- the server side ---------------------------------------------------- */

#define MAX_CONN 8
typedef struct srv_ctx {
  evl_stream *streams[MAX_CONN];
  evl_task *tasks[MAX_CONN];
  int n;
  const char *script; /* written to each new connection */
  size_t script_len;
  int eof_after_script;  /* then write_eof */
  evl_task_fn conn_task; /* run per connection: echo_task, sink_task */
  int echo_lines, echo_done;
  size_t sink_got; /* what sink_task read and found */
  int sink_bad, sink_done;
} srv_ctx;

/* The state of a conn_task. */
typedef struct conn_state {
  evl_stream *s;
  srv_ctx *c;
} conn_state;

/* Echoes lines until EOF, draining after each. */
static void echo_task(evl_task *t, void *state) {
  conn_state *e = (conn_state *)state;
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
  if (c->conn_task) {
    conn_state e;
    e.s = s;
    e.c = c;
    c->tasks[c->n] =
        evl_task_create(evl_transport_loop(evl_stream_transport(s)),
                        c->conn_task, &e, sizeof e);
    CHECK(c->tasks[c->n] != NULL);
  }
  c->n++;
}

/* A stream server on a unix socket at path, or on 127.0.0.1 (path NULL). */
static evl_server *stream_serve(evl_loop *loop, srv_ctx *c, const char *path) {
  evl_future *f =
      path ? evl_start_unix_server(loop, srv_cb, c, path, 0)
           : evl_start_server(loop, srv_cb, c, "127.0.0.1", 0, 0, NULL);
  return (evl_server *)wait_result(loop, f);
}

/* Waits for the connection tasks, frees the streams, closes the server. */
static void stream_server_done(evl_loop *loop, evl_server *s, srv_ctx *c) {
  int i;
  for (i = 0; i < c->n; i++)
    if (c->tasks[i]) {
      CHECK_EQ(wait_fut(loop, c->tasks[i]), 0);
      evl_future_release(c->tasks[i]);
    }
  for (i = 0; i < c->n; i++)
    evl_stream_free(c->streams[i]);
  test_server_done(loop, s);
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

/* What every client test here does around its client task: serves sc (on
   a unix socket at path, or on 127.0.0.1), runs fn on c to its end and
   checks the step it reached, then frees the client's stream, the
   connections and the server. */
static void run_client(srv_ctx *sc, client_state *c, const char *path,
                       evl_task_fn fn, int want_step) {
  evl_loop *loop = test_open();
  evl_server *srv = stream_serve(loop, sc, path);
  evl_task *t;
  c->path = path;
  if (!path)
    c->port = evl_server_port(srv);
  t = evl_task_create(loop, fn, c, 0);
  CHECK_EQ(wait_fut(loop, t), 0);
  CHECK_EQ(c->step, want_step);
  evl_future_release(t);
  evl_stream_free(c->s);
  stream_server_done(loop, srv, sc);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Runs fn against a server that writes script (len bytes) to the client,
   then EOF if eof_after; the client reads with the given limit. */
static void run_script_client(const char *script, size_t len, int eof_after,
                              size_t limit, const char *path, evl_task_fn fn,
                              int want_step) {
  srv_ctx sc;
  client_state c;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.script = script;
  sc.script_len = len;
  sc.eof_after_script = eof_after;
  c.limit = limit;
  run_client(&sc, &c, path, fn, want_step);
  CHECK_EQ(sc.n, 1); /* one connection served */
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
  run_script_client(script1, sizeof script1 - 1, 1, 0, NULL, reads_task, 2);
}

/* ---- write, drain, write_eof -------------------------------------------- */

#define BIG ((size_t)4 << 20)

/* Server side: reads everything until EOF, then answers with the count. */
static void sink_task(evl_task *t, void *state) {
  conn_state *k = (conn_state *)state;
  evl_bytes *b;
  size_t i;
  char line[32];
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_stream_read(k->s, -1));
  b = (evl_bytes *)evl_await_result(t);
  CHECK(b != NULL);
  k->c->sink_got = b->len;
  for (i = 0; i < b->len; i++)
    if (b->data[i] != test_pat(i)) {
      k->c->sink_bad = 1;
      break;
    }
  snprintf(line, sizeof line, "%lu\n", (unsigned long)b->len);
  CHECK_EQ(evl_stream_write(k->s, line, strlen(line)), 0);
  CHECK_EQ(evl_stream_write_eof(k->s), 0);
  EVL_AWAIT(t, evl_stream_drain(k->s));
  k->c->sink_done = 1;
  EVL_ASYNC_END(t);
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
  srv_ctx sc;
  client_state c;
  size_t i;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.conn_task = sink_task;
  c.big = (unsigned char *)malloc(BIG);
  CHECK(c.big != NULL);
  for (i = 0; i < BIG; i++)
    c.big[i] = test_pat(i);
  run_client(&sc, &c, NULL, writer_task, 1);
  CHECK_EQ(sc.n, 1);
  CHECK(sc.tasks[0] != NULL);
  CHECK_EQ(sc.sink_done, 1);
  CHECK_EQ(sc.sink_got, BIG);
  CHECK_EQ(sc.sink_bad, 0);
  free(c.big);
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
  memset(g_long_script, 'a', 150);
  strcpy(g_long_script + 150, "\nnext line\n");
  run_script_client(g_long_script, strlen(g_long_script), 1, 100, NULL,
                    limit_task, 1);
}

static void limit_nosep_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* 300 bytes and no separator, the connection stays open: the read fails
     once more than `limit` bytes are buffered */
  EVL_AWAIT_TRY(t, evl_stream_readuntil(c->s, "|", 1));
  CHECK_EQ(evl_await_error(t), EVL_ELIMIT);
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 50));
  expect_bytes_n(t, g_long_script, 50);
  EVL_AWAIT(t, evl_stream_readexactly(c->s, 250));
  expect_bytes_n(t, g_long_script + 50, 250);
  c->step = 1;
  EVL_ASYNC_END(t);
}

TEST(stream_limit_without_separator) {
  memset(g_long_script, 'b', 300);
  g_long_script[300] = 0;
  /* no EOF after it: the connection stays open */
  run_script_client(g_long_script, 300, 0, 100, NULL, limit_nosep_task, 1);
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
  run_script_client("abc", 3, 1, 0, NULL, incomplete_task, 1);
}

/* ---- 1000 lines echoed -------------------------------------------------- */

#define NLINES 1000

/* Puts line number c->i into c->line. */
static void line_i(client_state *c) {
  snprintf(c->line, sizeof c->line, "line %d of the echo test\n", c->i);
}

static void lines_task(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, client_open(t, c));
  c->s = (evl_stream *)evl_await_result(t);
  /* half of them one by one, the other half pipelined */
  for (c->i = 0; c->i < NLINES / 2; c->i++) {
    line_i(c);
    CHECK_EQ(evl_stream_write(c->s, c->line, strlen(c->line)), 0);
    EVL_AWAIT(t, evl_stream_readline(c->s));
    expect_bytes(t, c->line);
  }
  for (c->i = NLINES / 2; c->i < NLINES; c->i++) {
    line_i(c);
    CHECK_EQ(evl_stream_write(c->s, c->line, strlen(c->line)), 0);
  }
  EVL_AWAIT(t, evl_stream_drain(c->s));
  for (c->i = NLINES / 2; c->i < NLINES; c->i++) {
    EVL_AWAIT(t, evl_stream_readline(c->s));
    line_i(c);
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
  srv_ctx sc;
  client_state c;
  memset(&sc, 0, sizeof sc);
  memset(&c, 0, sizeof c);
  sc.conn_task = echo_task;
  run_client(&sc, &c, path, lines_task, 1);
  CHECK_EQ(c.k, NLINES / 2);
  /* stream_server_done waited for the echo task to end */
  CHECK_EQ(sc.echo_done, 1);
  CHECK_EQ(sc.echo_lines, NLINES);
}

TEST(stream_tcp_echo_1000_lines) {
  echo_lines_test(NULL);
}

/* ---- unix variants ------------------------------------------------------- */

/* A socket path in a fresh temporary directory, removed again by
   unix_path_done. */
typedef struct unix_path {
  char dir[200];
  char path[256];
} unix_path;

static void unix_path_make(unix_path *u) {
  need_af_unix();
  CHECK_EQ(test_mkdtemp(u->dir, sizeof u->dir), 0);
  snprintf(u->path, sizeof u->path, "%s/s", u->dir);
}

static void unix_path_done(unix_path *u) {
  test_unlink(u->path);
  CHECK_EQ(test_rmdir(u->dir), 0);
}

TEST(stream_unix_echo_lines) {
  unix_path u;
  unix_path_make(&u);
  echo_lines_test(u.path);
  unix_path_done(&u);
}

TEST(stream_unix_read_functions) {
  unix_path u;
  unix_path_make(&u);
  run_script_client(script1, sizeof script1 - 1, 1, 0, u.path, reads_task, 2);
  unix_path_done(&u);
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
  evl_stream *s;
  memset(&sc, 0, sizeof sc);
  sc.conn_task = echo_task;
  srv = stream_serve(loop, &sc, NULL);
  s = (evl_stream *)wait_result(
      loop,
      evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, NULL));
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
