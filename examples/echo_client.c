/* TCP echo client: the echo client protocol of the asyncio "Transports and
   Protocols" documentation, in C.

       echo_client [--host H] [--port N] [message]

   It connects (default 127.0.0.1:8888, where examples/echo_server.c
   listens), sends the message (default "Hello World!"), prints what comes
   back, closes the connection once the whole echo has arrived and exits
   with 0. The main task awaits a future that connection_lost completes, as
   asyncio's example awaits on_con_lost. A timer aborts the connection if
   the echo has not arrived within 10 s.

   Build: cc -std=c99 echo_client.c -o echo_client -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct client {
  const char *host;
  int port;
  const char *message;
  size_t len;
  char *received; /* len bytes: the echo so far */
  size_t got;
  evl_transport *transport; /* NULL once connection_lost has run */
  evl_future *on_con_lost;  /* completed by connection_lost */
  evl_handle timer;
  int timed_out;
} client;

static void connection_made(evl_transport *t, void *user) {
  client *c = (client *)user;
  c->transport = t;
  evl_transport_write(t, c->message, c->len);
  printf("Data sent: %s\n", c->message);
  if (c->len == 0) {
    printf("Data received: \n"); /* nothing to wait for */
    evl_transport_close(t);
  }
}

static void data_received(evl_transport *t, const void *data, size_t len,
                          void *user) {
  client *c = (client *)user;
  size_t room = c->len - c->got;
  size_t n = len < room ? len : room;
  memcpy(c->received + c->got, data, n);
  c->got += n;
  if (c->got == c->len) {
    printf("Data received: %.*s\n", (int)c->len, c->received);
    evl_transport_close(t); /* we have it all */
  }
}

static void connection_lost(evl_transport *t, int err, void *user) {
  client *c = (client *)user;
  (void)t;
  if (err < 0)
    printf("Connection lost: %s\n", evl_strerror(err));
  else if (c->got < c->len)
    printf("The server closed the connection\n");
  c->transport = NULL; /* the loop frees it after this callback */
  evl_future_set_result(c->on_con_lost, NULL);
}

static const evl_protocol client_protocol = {
    .connection_made = connection_made,
    .data_received = data_received,
    .connection_lost = connection_lost,
};

static void on_timeout(evl_loop *loop, void *arg) {
  client *c = (client *)arg;
  (void)loop;
  c->timed_out = 1;
  if (c->transport)
    evl_transport_abort(c->transport); /* connection_lost follows */
}

static void main_task(evl_task *t, void *state) {
  client *c = (client *)state; /* passed through: it lives in main() */
  evl_loop *loop = evl_task_loop(t);

  EVL_ASYNC_BEGIN(t);
  c->on_con_lost = evl_future_new(loop);
  if (!c->on_con_lost)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "cannot make a future");

  /* The result is the transport; connection_made has run (or runs before
     any other callback of it). If the connection fails, the task fails. */
  EVL_AWAIT(t, evl_create_connection(loop, &client_protocol, c, c->host,
                                     c->port, NULL));

  c->timer = evl_call_later(loop, 10.0, on_timeout, c);
  /* Wait until the protocol signals that the connection is lost. We keep
     our own reference: connection_lost uses the future too. */
  EVL_AWAIT(t, evl_future_ref(c->on_con_lost));
  evl_handle_cancel(loop, c->timer);
  if (c->timed_out)
    EVL_ASYNC_FAIL(t, EVL_ETIMEDOUT, "no echo within 10 s");
  if (c->got < c->len)
    EVL_ASYNC_FAIL(t, EVL_EINCOMPLETE, "the echo is incomplete");
  EVL_ASYNC_END(t);
}

int main(int argc, char **argv) {
  client c;
  int i, err;

  memset(&c, 0, sizeof c);
  c.host = "127.0.0.1";
  c.port = 8888;
  c.message = "Hello World!";
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      c.host = argv[++i];
    } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || v <= 0 || v > 65535)
        goto usage;
      c.port = (int)v;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      goto usage;
    } else {
      c.message = argv[i];
    }
  }
  c.len = strlen(c.message);
  c.received = (char *)malloc(c.len + 1);
  if (!c.received) {
    fprintf(stderr, "echo_client: out of memory\n");
    return 1;
  }

  /* asyncio.run(main()): a loop for one task, closed at the end. */
  err = evl_run(main_task, &c, 0, NULL, NULL);
  if (err < 0)
    fprintf(stderr, "echo_client: %s\n", evl_strerror(err));
  evl_future_release(c.on_con_lost);
  free(c.received);
  return err < 0 ? 1 : 0;

usage:
  fprintf(stderr, "usage: echo_client [--host H] [--port N] [message]\n");
  return 2;
}
