/* STARTTLS, both sides in one program: an SMTP-style exchange that starts
   in plain text and upgrades the same connection to TLS
   (evl_stream_start_tls, asyncio's StreamWriter.start_tls).

       server: 220 ready                client: EHLO me
       server: 250 STARTTLS             client: STARTTLS
       server: 220 go ahead             -- both sides start TLS --
       client: EHLO me                  server: 250 hello, secretly
       client: QUIT                     server: 221 bye

   The certificate: --cert F --key F (and the client trusts F), or else a
   throw-away one made with the `openssl` command in a temporary directory.

   Build: cc -std=c99 -DEVLOOP_TLS_OPENSSL starttls.c -o starttls \
            -lssl -lcrypto -lpthread
   (or -DEVLOOP_TLS_MBEDTLS ... -lmbedtls -lmbedx509 -lmbedcrypto) */
#define _POSIX_C_SOURCE 200809L
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static evl_tls_context *server_ctx, *client_ctx;

/* Prints a line (without its newline) with who got it. */
static void show(const char *who, const evl_bytes *b) {
  size_t n = b->len;
  while (n > 0 && (b->data[n - 1] == '\n' || b->data[n - 1] == '\r'))
    n--;
  printf("%s got: %.*s\n", who, (int)n, (const char *)b->data);
}

/* Writes a line; 0 or the error. */
static int say(evl_stream *s, const char *line) {
  return evl_stream_write(s, line, strlen(line));
}

/* ---- the server: one task per connection ---- */
typedef struct server_state {
  evl_stream *s;
  int err;
} server_state;

static void serve(evl_task *t, void *state) {
  server_state *st = (server_state *)state;
  const evl_bytes *line;
  EVL_ASYNC_BEGIN(t);
  say(st->s, "220 ready\r\n");
  EVL_AWAIT_TRY(t, evl_stream_readline(st->s)); /* EHLO */
  if ((st->err = evl_await_error(t)) < 0)
    goto out;
  show("server", (const evl_bytes *)evl_await_result(t));
  say(st->s, "250 STARTTLS\r\n");
  EVL_AWAIT_TRY(t, evl_stream_readline(st->s)); /* STARTTLS */
  if ((st->err = evl_await_error(t)) < 0)
    goto out;
  show("server", (const evl_bytes *)evl_await_result(t));
  say(st->s, "220 go ahead\r\n");
  EVL_AWAIT_TRY(t, evl_stream_start_tls(st->s, server_ctx, 1, NULL, 0, 0));
  if ((st->err = evl_await_error(t)) < 0)
    goto out;
  for (;;) { /* the rest is encrypted */
    EVL_AWAIT_TRY(t, evl_stream_readline(st->s));
    if ((st->err = evl_await_error(t)) < 0)
      goto out;
    line = (const evl_bytes *)evl_await_result(t);
    if (line->len == 0)
      break;
    show("server (TLS)", line);
    if (!strncmp((const char *)line->data, "QUIT", 4)) {
      say(st->s, "221 bye\r\n");
      break;
    }
    say(st->s, "250 hello, secretly\r\n");
  }
  evl_stream_close(st->s);
  EVL_AWAIT_TRY(t, evl_stream_wait_closed(st->s));
out:
  if (st->err < 0)
    fprintf(stderr, "server: %s\n", evl_strerror(st->err));
  evl_stream_free(st->s);
  EVL_ASYNC_END(t);
}

static void on_connection(evl_stream *s, void *arg) {
  server_state st;
  evl_task *t;
  (void)arg;
  st.s = s;
  st.err = 0;
  t = evl_task_create(evl_stream_loop(s), serve, &st, sizeof st);
  if (!t)
    evl_stream_free(s);
  evl_future_release(t); /* it runs on by itself */
}

/* ---- the client, and main ---- */
typedef struct main_state {
  evl_server *server;
  evl_stream *c;
  int err;
} main_state;

/* The client's step: send a line, print the answer; 0 or the error. */
#define CLIENT_SAYS(t, m, text)                                                \
  do {                                                                         \
    say((m)->c, text);                                                         \
    EVL_AWAIT_TRY(t, evl_stream_readline((m)->c));                             \
    if (((m)->err = evl_await_error(t)) < 0)                                   \
      goto out;                                                                \
    show(evl_transport_is_tls(evl_stream_transport((m)->c)) ? "client (TLS)"   \
                                                            : "client",        \
         (const evl_bytes *)evl_await_result(t));                              \
  } while (0)

static void main_task(evl_task *t, void *state) {
  main_state *m = (main_state *)state;
  evl_tls_info info;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT_TRY(t, evl_start_server(evl_task_loop(t), on_connection, NULL,
                                    "127.0.0.1", 0, 0, NULL));
  if ((m->err = evl_await_error(t)) < 0)
    goto out;
  m->server = (evl_server *)evl_await_result(t);
  EVL_AWAIT_TRY(t, evl_open_connection(evl_task_loop(t), "127.0.0.1",
                                       evl_server_port(m->server), 0, NULL));
  if ((m->err = evl_await_error(t)) < 0)
    goto out;
  m->c = (evl_stream *)evl_await_result(t);
  EVL_AWAIT_TRY(t, evl_stream_readline(m->c)); /* 220 ready */
  if ((m->err = evl_await_error(t)) < 0)
    goto out;
  show("client", (const evl_bytes *)evl_await_result(t));
  CLIENT_SAYS(t, m, "EHLO me\r\n");
  CLIENT_SAYS(t, m, "STARTTLS\r\n");
  EVL_AWAIT_TRY(t,
                evl_stream_start_tls(m->c, client_ctx, 0, "localhost", 0, 0));
  if ((m->err = evl_await_error(t)) < 0)
    goto out;
  if (evl_transport_get_tls_info(evl_stream_transport(m->c), &info) == 0)
    printf("client: now %s, %s, server %s\n", info.version, info.cipher,
           info.peer_subject);
  CLIENT_SAYS(t, m, "EHLO me\r\n");
  CLIENT_SAYS(t, m, "QUIT\r\n");
out:
  if (m->err < 0)
    fprintf(stderr, "client: %s\n", evl_strerror(m->err));
  if (m->c) {
    evl_stream_free(m->c);
    m->c = NULL;
  }
  if (m->server) {
    evl_server_close(m->server);
    EVL_AWAIT_TRY(t, evl_server_wait_closed(m->server));
  }
  EVL_ASYNC_RETURN(t, NULL);
  EVL_ASYNC_END(t);
}

int main(int argc, char **argv) {
  char dir[] = "/tmp/starttls.XXXXXX", cert[64], key[64], cmd[512];
  const char *certf = NULL, *keyf = NULL;
  evl_tls_config cfg;
  main_state m;
  int made = 0, err;
  if (argc == 5 && !strcmp(argv[1], "--cert") && !strcmp(argv[3], "--key")) {
    certf = argv[2];
    keyf = argv[4];
  } else if (argc != 1) {
    fprintf(stderr, "usage: starttls [--cert F --key F]\n");
    return 2;
  } else { /* a throw-away certificate for localhost */
    if (!mkdtemp(dir))
      return 1;
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
             "-nodes -days 1 -subj /CN=localhost -addext "
             "subjectAltName=DNS:localhost -keyout %s -out %s 2>/dev/null",
             key, cert);
    if (system(cmd) != 0) {
      fprintf(stderr, "starttls: the openssl command could not make a "
                      "certificate (give --cert and --key)\n");
      rmdir(dir);
      return 1;
    }
    certf = cert;
    keyf = key;
    made = 1;
  }
  memset(&cfg, 0, sizeof cfg);
  cfg.server = 1;
  cfg.cert_file = certf;
  cfg.key_file = keyf;
  err = evl_tls_context_new(&server_ctx, &cfg);
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_file = certf; /* the self-signed certificate is its own CA */
  if (err == 0)
    err = evl_tls_context_new(&client_ctx, &cfg);
  if (err == 0) {
    memset(&m, 0, sizeof m);
    err = evl_run(main_task, &m, sizeof m, NULL, NULL);
    if (err == 0)
      err = m.err;
  } else {
    fprintf(stderr, "starttls: %s\n",
            err == EVL_ENOTSUP ? "built without a TLS engine"
                               : evl_strerror(err));
  }
  evl_tls_context_release(server_ctx);
  evl_tls_context_release(client_ctx);
  if (made) {
    unlink(cert);
    unlink(key);
    rmdir(dir);
  }
  return err < 0 ? 1 : 0;
}
