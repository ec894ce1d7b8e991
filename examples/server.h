/* What the echo and HTTP example servers share (echo_server.c and
   http_server.c include it): the list of live connections, SIGINT and
   SIGTERM stopping the loop, and serving on 127.0.0.1 until then with a
   clean shutdown. A server's state begins with a server_base, and each of
   its connections' states with a conn_link. */
#ifndef EXAMPLES_SERVER_H
#define EXAMPLES_SERVER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct conn_link {
  struct conn_link *prev, *next;
  evl_transport *t;
} conn_link;

typedef struct server_base {
  conn_link *conns; /* live connections */
  int stopping;     /* SIGINT or SIGTERM came */
} server_base;

/* connection_made: a new connection's state of size bytes (beginning with
   a conn_link), in the list; the connection's callbacks get it from now
   on. NULL, the connection aborted, if there is no memory for it. */
static void *conn_new(server_base *srv, evl_transport *t, size_t size) {
  conn_link *c = (conn_link *)malloc(size);
  if (!c) {
    /* connection_lost must not mistake the server state for a conn */
    evl_transport_set_user(t, NULL);
    evl_transport_abort(t);
    return NULL;
  }
  c->t = t;
  c->prev = NULL;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  evl_transport_set_user(t, c);
  return c;
}

/* connection_lost: c leaves the list (the loop frees the transport after
   this callback). */
static void conn_remove(server_base *srv, conn_link *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
}

/* Flow control: the client does not read what we send as fast as it
   writes. Past the transport's high water mark we stop reading from it;
   once the write buffer has drained to the low mark, we read again. */
static void pause_writing(evl_transport *t, void *user) {
  (void)user;
  evl_transport_pause_reading(t);
}

static void resume_writing(evl_transport *t, void *user) {
  (void)user;
  evl_transport_resume_reading(t);
}

/* Shutdown: the connections that did not close in time. */
static void abort_connections(evl_loop *loop, void *arg) {
  server_base *srv = (server_base *)arg;
  conn_link *c, *next;
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
  server_base *srv = (server_base *)arg;
  (void)signum;
  if (!srv->stopping) {
    srv->stopping = 1;
    evl_stop(loop);
  }
}

/* Listens on 127.0.0.1:port (srv, whose state begins with a server_base,
   is the server's user pointer), prints "listening on 127.0.0.1:PORT" and
   serves until SIGINT or SIGTERM. Then it stops listening, closes the
   connections (what is queued is sent first) and waits until they are
   gone; a timer aborts those still there after 2 s (a client that stopped
   reading). Returns 0 or the first error (printed, after name). */
static int serve_until_signal(evl_loop *loop, const evl_protocol *proto,
                              void *srv, int port, const evl_net_options *opts,
                              const char *name) {
  server_base *base = (server_base *)srv;
  evl_server *server = NULL;
  evl_future *fut;
  int err;
  if ((err = evl_add_signal_handler(loop, SIGINT, on_signal, base)) < 0 ||
      (err = evl_add_signal_handler(loop, SIGTERM, on_signal, base)) < 0) {
    fprintf(stderr, "evl_add_signal_handler: %s\n", evl_strerror(err));
    goto done;
  }

  /* Listen; the future's result is the evl_server *. */
  fut = evl_create_server(loop, proto, srv, "127.0.0.1", port, opts);
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
    fprintf(stderr, "%s: cannot listen on 127.0.0.1:%d: %s\n", name, port,
            evl_strerror(err));
    goto done;
  }
  printf("listening on 127.0.0.1:%d\n", evl_server_port(server));
  fflush(stdout);

  /* Serve until a signal stops the loop (unless one came already). */
  if (!base->stopping)
    err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

  /* Shut down. */
  evl_server_close(server);
  {
    conn_link *c;
    evl_handle timer;
    int werr;
    for (c = base->conns; c; c = c->next)
      evl_transport_close(c->t);
    timer = evl_call_later(loop, 2.0, abort_connections, base);
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
  return err;
}

#endif
