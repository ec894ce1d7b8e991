/* A small HTTPS client: GET PATH from HOST:PORT over TLS, verifying the
   server's certificate and host name against the system's CA store (or
   the CA file given), and print the status line and the headers.

       tls_client [--cafile F] HOST PORT [PATH]     (PATH default: /)

   It prints the negotiated protocol version, cipher and ALPN on stderr.
   A failing handshake prints why (an unknown CA, an expired certificate,
   a name that does not match...) and exits with 1.

   Build: cc -std=c99 -DEVLOOP_TLS_OPENSSL tls_client.c -o tls_client \
            -lssl -lcrypto -lpthread
   (or -DEVLOOP_TLS_MBEDTLS ... -lmbedtls -lmbedx509 -lmbedcrypto) */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Waits for fut; its error code, or 0 (the result then in *out). */
static int wait_for(evl_loop *loop, evl_future *fut, void **out) {
  int err;
  if (!fut)
    return EVL_ENOMEM;
  err = evl_run_until_complete(loop, fut);
  if (err == 0 && out)
    *out = evl_future_result(fut);
  else if (err)
    fprintf(stderr, "tls_client: %s%s%s\n", evl_strerror(err),
            evl_future_error_message(fut) ? ": " : "",
            evl_future_error_message(fut) ? evl_future_error_message(fut) : "");
  return err;
}

int main(int argc, char **argv) {
  static const char *const alpn[] = {"http/1.1", NULL};
  const char *cafile = NULL, *host, *path = "/";
  evl_loop *loop = NULL;
  evl_tls_config cfg;
  evl_net_options opts;
  evl_tls_info info;
  evl_stream *s = NULL;
  evl_future *f = NULL;
  char req[1024];
  int a = 1, port, err;

  if (argc > 2 && !strcmp(argv[1], "--cafile")) {
    cafile = argv[2];
    a = 3;
  }
  if (argc - a < 2 || argc - a > 3) {
    fprintf(stderr, "usage: tls_client [--cafile F] HOST PORT [PATH]\n");
    return 2;
  }
  host = argv[a];
  port = atoi(argv[a + 1]);
  if (argc - a == 3)
    path = argv[a + 2];
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_file = cafile; /* NULL: the system's store */
  cfg.alpn = alpn;
  memset(&opts, 0, sizeof opts);
  if ((err = evl_tls_context_new(&opts.tls, &cfg)) < 0) {
    fprintf(stderr, "tls_client: %s\n",
            err == EVL_ENOTSUP ? "built without a TLS engine"
                               : "cannot read the CA file");
    return 1;
  }
  if ((err = evl_loop_new(&loop, NULL)) < 0)
    goto done;
  /* The future completes after the handshake (and the verification). */
  f = evl_open_connection(loop, host, port, 0, &opts);
  if ((err = wait_for(loop, f, (void **)&s)) < 0)
    goto done;
  if (evl_transport_get_tls_info(evl_stream_transport(s), &info) == 0)
    fprintf(stderr, "%s, %s, ALPN %s, server %s\n", info.version, info.cipher,
            info.alpn[0] ? info.alpn : "-", info.peer_subject);
  snprintf(req, sizeof req,
           "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
           "User-Agent: evloop.h tls_client\r\n\r\n",
           path, host);
  evl_stream_write(s, req, strlen(req));
  for (;;) { /* the status line and the headers, to the empty line */
    evl_bytes *line = NULL;
    evl_future_release(f);
    f = evl_stream_readline(s);
    if ((err = wait_for(loop, f, (void **)&line)) < 0)
      goto done;
    if (line->len == 0) {
      fprintf(stderr, "tls_client: the server closed the connection\n");
      err = EVL_EINCOMPLETE;
      goto done;
    }
    fwrite(line->data, 1, line->len, stdout);
    if (line->data[0] == '\r' || line->data[0] == '\n')
      break;
  }
done:
  evl_future_release(f);
  if (s) {
    evl_stream_close(s);
    f = evl_stream_wait_closed(s);
    (void)evl_run_until_complete(loop, f);
    evl_future_release(f);
    evl_stream_free(s);
  }
  evl_loop_free(loop);
  evl_tls_context_release(opts.tls);
  return err < 0 ? 1 : 0;
}
