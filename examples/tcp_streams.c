/* TCP echo client and server with streams: the two examples of the asyncio
   "Streams" documentation, in C, in one program.

   main_task starts a server on 127.0.0.1 (port 0: any free port) with
   evl_start_server. Each connection gets a handle_echo task that reads a
   line, writes it back and closes. The tcp_echo_client task connects with
   evl_open_connection, sends "Hello World!\n", reads the echo line and
   closes. Then main_task closes the server and waits until it is gone.

   Each task frees its stream in its EVL_FINALLY section, which runs
   however the task ends: done, failed at an await, cancelled, or its loop
   closed.

   Build: cc -std=c99 tcp_streams.c -o tcp_streams -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <string.h>

/* Prints what a stream read gave, without its newline. */
static void print_line(const char *label, const evl_bytes *b) {
  size_t n = b->len;
  if (n > 0 && b->data[n - 1] == '\n')
    n--;
  printf("%s'%.*s'\n", label, (int)n, (const char *)b->data);
}

/* ---- Server side --------------------------------------------------------- */
typedef struct echo_state {
  evl_stream *stream;
} echo_state;

static void handle_echo(evl_task *t, void *state) {
  echo_state *e = (echo_state *)state;
  const evl_bytes *line;
  int err;

  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_stream_readline(e->stream));
  /* The bytes belong to the awaited future: valid until the next await. */
  line = (const evl_bytes *)evl_await_result(t);
  print_line("Server received: ", line);
  print_line("Server sends: ", line);
  if ((err = evl_stream_write(e->stream, line->data, line->len)) < 0)
    EVL_ASYNC_FAIL(t, err, "handle_echo");
  EVL_AWAIT(t, evl_stream_drain(e->stream));

  printf("Server closes the connection\n");
  evl_stream_close(e->stream);
  EVL_AWAIT(t, evl_stream_wait_closed(e->stream));
  EVL_FINALLY(t);
  evl_stream_free(e->stream);
  EVL_ASYNC_END(t);
}

typedef struct app {
  evl_server *server;
  evl_task *handler; /* the connection's handle_echo task */
  evl_task *client;
  int err;
} app;

/* evl_start_server calls this for each new connection, with the stream. */
static void client_connected(evl_stream *s, void *arg) {
  app *a = (app *)arg;
  echo_state e = {NULL};
  evl_task *task;
  e.stream = s;
  /* The task keeps its own copy of e. */
  task = evl_task_create(evl_transport_loop(evl_stream_transport(s)),
                         handle_echo, &e, sizeof e);
  if (!task) {
    evl_stream_free(s);
    return;
  }
  if (a->handler) /* only one connection is expected: let it run alone */
    evl_future_release(task);
  else
    a->handler = task; /* main_task waits for it */
}

/* ---- Client side --------------------------------------------------------- */
typedef struct client_state {
  int port;
  evl_stream *stream;
} client_state;

static void tcp_echo_client(evl_task *t, void *state) {
  client_state *c = (client_state *)state;
  static const char message[] = "Hello World!\n";
  evl_loop *loop = evl_task_loop(t);

  int err;

  EVL_ASYNC_BEGIN(t);
  /* The result is the evl_stream *; a failure ends the task. */
  EVL_AWAIT_AS(t, evl_stream *, c->stream,
               evl_open_connection(loop, "127.0.0.1", c->port, 0, NULL));

  printf("Client sends: 'Hello World!'\n");
  if ((err = evl_stream_write(c->stream, message, sizeof message - 1)) < 0)
    EVL_ASYNC_FAIL(t, err, "tcp_echo_client");
  EVL_AWAIT(t, evl_stream_drain(c->stream));

  EVL_AWAIT(t, evl_stream_readline(c->stream));
  print_line("Client received: ", (const evl_bytes *)evl_await_result(t));

  printf("Client closes the connection\n");
  evl_stream_close(c->stream);
  EVL_AWAIT(t, evl_stream_wait_closed(c->stream));
  EVL_FINALLY(t);
  if (c->stream) /* NULL when the connection failed */
    evl_stream_free(c->stream);
  EVL_ASYNC_END(t);
}

/* ---- main ------------------------------------------------------------- */
static void main_task(evl_task *t, void *state) {
  app *a = (app *)state; /* passed through: it lives in main() */
  evl_loop *loop = evl_task_loop(t);
  client_state c = {0, NULL};

  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(
      t, evl_start_server(loop, client_connected, a, "127.0.0.1", 0, 0, NULL));
  a->server = (evl_server *)evl_await_result(t);
  printf("Serving on 127.0.0.1:%d\n", evl_server_port(a->server));

  c.port = evl_server_port(a->server);
  a->client = evl_task_create(loop, tcp_echo_client, &c, sizeof c);
  if (!a->client) {
    a->err = EVL_ENOMEM;
  } else {
    EVL_AWAIT_TRY(t, evl_future_ref(a->client));
    a->err = evl_await_error(t);
  }
  /* The connection's handler ends on its own; wait for it. */
  if (a->handler) {
    EVL_AWAIT_TRY(t, evl_future_ref(a->handler));
    if (a->err == 0)
      a->err = evl_await_error(t);
  }

  evl_server_close(a->server);
  EVL_AWAIT_TRY(t, evl_server_wait_closed(a->server));
  evl_server_free(a->server);
  a->server = NULL;
  if (a->err < 0)
    EVL_ASYNC_FAIL(t, a->err, NULL);
  EVL_ASYNC_END(t);
}

int main(void) {
  app a = {NULL, NULL, NULL, 0};
  int err = evl_run(main_task, &a, 0, NULL, NULL);
  if (err < 0)
    fprintf(stderr, "tcp_streams: %s\n", evl_strerror(err));
  evl_future_release(a.handler);
  evl_future_release(a.client);
  return err < 0 ? 1 : 0;
}
