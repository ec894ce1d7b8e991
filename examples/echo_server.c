/* TCP echo server: the echo server protocol of the asyncio "Transports and
   Protocols" documentation, in C, serving until SIGINT or SIGTERM.

       echo_server [--port N]        (default 8888, on 127.0.0.1)

   A protocol is a table of callbacks. connection_made gives each new
   connection its own state (evl_transport_set_user), data_received writes
   every byte back, and flow control keeps memory bounded when a client
   sends faster than it reads: past the transport's high water mark the
   loop calls pause_writing and we stop reading from that client; once the
   write buffer has drained to the low mark, resume_writing starts reading
   again. EOF from the client closes the connection once the echo is sent.

   It prints "listening on 127.0.0.1:PORT" when it accepts connections. On
   SIGINT or SIGTERM it stops listening, closes every connection (flushing
   what is queued, for at most 2 s), closes the loop and exits with 0.

   Try it: echo_server & printf 'hello\n' | nc -N 127.0.0.1 8888

   Build: cc -std=c99 echo_server.c -o echo_server -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h" /* the connection list, signals, serving until one */

/* ---- The echo protocol ---------------------------------------------------
   The server keeps a list of its connections so that it can close them. */
typedef struct conn {
  conn_link link; /* in the server's list (server.h) */
  struct server_state *srv;
} conn;

typedef struct server_state {
  server_base base; /* the list and the stop (server.h) */
  size_t nconns;
  unsigned long resets; /* connections the client reset */
} server_state;

static void connection_made(evl_transport *t, void *user) {
  server_state *srv = (server_state *)user; /* the server's user pointer */
  conn *c = (conn *)conn_new(&srv->base, t, sizeof *c);
  if (!c)
    return;
  /* From now on the callbacks of this connection get c. */
  c->srv = srv;
  srv->nconns++;
}

static void data_received(evl_transport *t, const void *data, size_t len,
                          void *user) {
  (void)user;
  /* Sends at once what the socket takes and queues the rest. */
  evl_transport_write(t, data, len);
}

static int eof_received(evl_transport *t, void *user) {
  (void)t;
  (void)user;
  return 0; /* close once the queued echo is sent */
}

static void connection_lost(evl_transport *t, int err, void *user) {
  conn *c = (conn *)user;
  (void)t;
  if (!c)
    return;
  /* A client that resets is no news (a line for each would let any
     client flood the log): counted, and the count printed at the end. */
  if (err == EVL_ECONNRESET || err == EVL_EPIPE)
    c->srv->resets++;
  else if (err < 0)
    fprintf(stderr, "echo_server: connection lost: %s\n", evl_strerror(err));
  /* The loop frees the transport after this callback: forget it. */
  conn_remove(&c->srv->base, &c->link);
  c->srv->nconns--;
  free(c);
}

static const evl_protocol echo_protocol = {
    .connection_made = connection_made,
    .data_received = data_received,
    .eof_received = eof_received,
    .connection_lost = connection_lost,
    .pause_writing = pause_writing,
    .resume_writing = resume_writing,
};

static int parse_port(int argc, char **argv, int def, int *port) {
  int i;
  *port = def;
  for (i = 1; i < argc; i++) {
    char *end;
    long v;
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
  server_state srv = {{NULL, 0}, 0, 0};
  evl_loop *loop = NULL;
  int port, err;

  if (parse_port(argc, argv, 8888, &port) < 0) {
    fprintf(stderr, "usage: echo_server [--port N]\n");
    return 2;
  }
  err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    return 1;
  }
  err =
      serve_until_signal(loop, &echo_protocol, &srv, port, NULL, "echo_server");
  if (srv.resets)
    printf("%lu connections reset by their clients\n", srv.resets);
  evl_loop_free(loop);
  return err < 0 ? 1 : 0;
}
