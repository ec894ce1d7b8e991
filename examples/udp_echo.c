/* UDP echo server and client: the two datagram examples of the asyncio
   "Transports and Protocols" documentation, in C, in one program.

       udp_echo [--port N]     (default 9999; 0 picks a free port)

   The server endpoint is bound to 127.0.0.1:N and sends every datagram back
   to where it came from. The client endpoint is connected to the server's
   address: it sends "Hello World!", prints the echo, closes, and the
   program ends. A timer gives up after 5 s (datagrams may be lost, even if
   they are not on loopback).

   Build: cc -std=c99 udp_echo.c -o udp_echo -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* "host:port" of a socket address (numeric). */
static const char *addr_str(const void *addr, size_t addrlen, char *buf,
                            size_t size) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo((const struct sockaddr *)addr, (socklen_t)addrlen, host,
                  sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    snprintf(buf, size, "?");
  else
    snprintf(buf, size, "%s:%s", host, serv);
  return buf;
}

/* ---- Server: echo every datagram to its sender --------------------------- */
static void server_datagram_received(evl_transport *t, const void *data,
                                     size_t len, const void *addr,
                                     size_t addrlen, void *user) {
  char from[NI_MAXHOST + NI_MAXSERV + 2];
  (void)user;
  addr_str(addr, addrlen, from, sizeof from);
  printf("Received '%.*s' from %s\n", (int)len, (const char *)data, from);
  printf("Send '%.*s' to %s\n", (int)len, (const char *)data, from);
  evl_transport_sendto(t, data, len, addr, addrlen);
}

static void server_connection_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  evl_future_set_result((evl_future *)user, NULL); /* server_lost */
}

static const evl_protocol server_protocol = {
    .connection_lost = server_connection_lost,
    .datagram_received = server_datagram_received,
};

/* ---- Client: send one message, print the answer, close ------------------- */
typedef struct client {
  const char *message;
  evl_transport *transport; /* NULL once connection_lost has run */
  evl_future *on_con_lost;
  int answered;
} client;

static void client_connection_made(evl_transport *t, void *user) {
  client *c = (client *)user;
  c->transport = t;
  printf("Send: %s\n", c->message);
  /* The endpoint is connected: NULL sends to its remote address. */
  evl_transport_sendto(t, c->message, strlen(c->message), NULL, 0);
}

static void client_datagram_received(evl_transport *t, const void *data,
                                     size_t len, const void *addr,
                                     size_t addrlen, void *user) {
  client *c = (client *)user;
  (void)addr;
  (void)addrlen;
  printf("Received: %.*s\n", (int)len, (const char *)data);
  c->answered = 1;
  printf("Close the socket\n");
  evl_transport_close(t);
}

static void client_error_received(evl_transport *t, int err, void *user) {
  (void)t;
  (void)user;
  printf("Error received: %s\n", evl_strerror(err));
}

static void client_connection_lost(evl_transport *t, int err, void *user) {
  client *c = (client *)user;
  (void)t;
  (void)err;
  printf("Connection closed\n");
  c->transport = NULL;
  evl_future_set_result(c->on_con_lost, NULL);
}

static const evl_protocol client_protocol = {
    .connection_made = client_connection_made,
    .connection_lost = client_connection_lost,
    .datagram_received = client_datagram_received,
    .error_received = client_error_received,
};

static void on_timeout(evl_loop *loop, void *arg) {
  client *c = (client *)arg;
  (void)loop;
  if (c->transport) {
    printf("No answer within 5 s\n");
    evl_transport_close(c->transport);
  }
}

/* ---- main ------------------------------------------------------------- */
typedef struct app {
  int port, server_port;
  int err;   /* how making the client endpoint ended */
  client cl; /* the client endpoint's state */
  evl_transport *server;
  evl_future *server_lost; /* completed by the server's connection_lost */
  evl_handle timer;
} app;

static void main_task(evl_task *t, void *state) {
  app *a = (app *)state; /* passed through: it lives in main() */
  evl_loop *loop = evl_task_loop(t);
  struct sockaddr_storage ss;
  size_t sslen = sizeof ss;
  char where[NI_MAXHOST + NI_MAXSERV + 2];

  EVL_ASYNC_BEGIN(t);
  a->server_lost = evl_future_new(loop);
  a->cl.on_con_lost = evl_future_new(loop);
  if (!a->server_lost || !a->cl.on_con_lost)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "cannot make a future");

  printf("Starting UDP server\n");
  EVL_AWAIT(t,
            evl_create_datagram_endpoint(loop, &server_protocol, a->server_lost,
                                         "127.0.0.1", a->port, NULL, 0, NULL));
  a->server = (evl_transport *)evl_await_result(t);
  /* With port 0 the system chose the port: ask the socket. */
  if (evl_transport_get_sockname(a->server, &ss, &sslen) < 0) {
    evl_transport_close(a->server);
    EVL_ASYNC_FAIL(t, EVL_EINVAL, "no socket name");
  }
  a->server_port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                     : ((struct sockaddr_in *)&ss)->sin_port);
  printf("Server on %s\n", addr_str(&ss, sslen, where, sizeof where));

  EVL_AWAIT_TRY(t, evl_create_datagram_endpoint(loop, &client_protocol, &a->cl,
                                                NULL, 0, "127.0.0.1",
                                                a->server_port, NULL));
  a->err = evl_await_error(t);
  if (a->err == 0) {
    a->timer = evl_call_later(loop, 5.0, on_timeout, &a->cl);
    EVL_AWAIT(t, evl_future_ref(a->cl.on_con_lost));
    evl_handle_cancel(loop, a->timer);
  }

  /* Close the server and wait until it is gone. */
  evl_transport_close(a->server);
  EVL_AWAIT(t, evl_future_ref(a->server_lost));
  if (a->err < 0)
    EVL_ASYNC_FAIL(t, a->err, "cannot make the client endpoint");
  if (!a->cl.answered)
    EVL_ASYNC_FAIL(t, EVL_ETIMEDOUT, "no echo");
  EVL_ASYNC_END(t);
}

int main(int argc, char **argv) {
  app a;
  int err;

  memset(&a, 0, sizeof a);
  a.port = 9999;
  a.cl.message = "Hello World!";
  if (argc == 3 && strcmp(argv[1], "--port") == 0) {
    char *end;
    long v = strtol(argv[2], &end, 10);
    if (*argv[2] == '\0' || *end != '\0' || v < 0 || v > 65535)
      argc = 0;
    a.port = (int)v;
  } else if (argc != 1) {
    argc = 0;
  }
  if (argc == 0) {
    fprintf(stderr, "usage: udp_echo [--port N]\n");
    return 2;
  }

  err = evl_run(main_task, &a, 0, NULL, NULL);
  if (err < 0)
    fprintf(stderr, "udp_echo: %s\n", evl_strerror(err));
  evl_future_release(a.cl.on_con_lost);
  evl_future_release(a.server_lost);
  return err < 0 ? 1 : 0;
}
