/* TLS: the layer over transports, with each engine (the Makefile builds
   this file once per engine: EVLOOP_TLS_OPENSSL, EVLOOP_TLS_MBEDTLS) and
   without one (every entry point is EVL_ENOTSUP). The certificates are
   made at run time with OpenSSL's API (a throw-away CA, server, expired,
   wrong-name and client certificates); peers that do what evloop.h's
   own engine will not (key updates, renegotiation) are OpenSSL too. */
#include "test.h"
#include "net_test.h"

#if defined(EVLOOP_TLS_OPENSSL) || defined(EVLOOP_TLS_MBEDTLS)
#define HAVE_TLS 1
#endif

/* ---- without an engine ---- */

static void nop_made(evl_transport *t, void *user) {
  (void)t;
  (void)user;
}
static const evl_protocol nop_proto = {nop_made, NULL, NULL, NULL, NULL,
                                       NULL,     NULL, NULL, NULL, NULL};

#ifndef HAVE_TLS
TEST(tls_notsup) {
  evl_loop *loop = test_open();
  evl_tls_context *ctx = (evl_tls_context *)1;
  evl_tls_config cfg;
  evl_net_options o;
  evl_tls_info info;
  evl_future *f;
  memset(&cfg, 0, sizeof cfg);
  CHECK_EQ(evl_tls_context_new(&ctx, &cfg), EVL_ENOTSUP);
  CHECK(ctx == NULL);
  CHECK(evl_tls_engine() == NULL);
  memset(&o, 0, sizeof o);
  o.tls = (evl_tls_context *)&cfg; /* never looked at */
  f = evl_create_connection(loop, &nop_proto, NULL, "127.0.0.1", 1, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  f = evl_create_server(loop, &nop_proto, NULL, "127.0.0.1", 0, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  f = evl_open_connection(loop, "127.0.0.1", 1, 0, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  f = evl_connect_accepted_socket_opts(loop, &nop_proto, NULL, 0, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  CHECK_EQ(evl_transport_get_tls_info(NULL, &info), EVL_ENOTSUP);
  CHECK_EQ(evl_transport_is_tls(NULL), 0);
  {
    int sv[2];
    evl_transport *t;
    CHECK_EQ(test_socketpair(sv), 0);
    t = evl_connect_accepted_socket(loop, &nop_proto, NULL, sv[0]);
    CHECK(t != NULL);
    run_for(loop, 0.02);
    f = evl_start_tls(t, &nop_proto, NULL, NULL, 0, "x", 0, 0);
    CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
    evl_future_release(f);
    evl_transport_close(t);
    test_closesocket(sv[1]);
  }
  test_close(loop);
}

TESTS_BEGIN
T(tls_notsup)
TESTS_END

#else /* HAVE_TLS */

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#ifdef EVLOOP_TLS_MBEDTLS
#define ENGINE_HAS_TLS13 0    /* mbedTLS 2.28: TLS 1.2 only */
#define ENGINE_RENEGOTIATES 0 /* evloop.h leaves it off in mbedTLS */
#else
#define ENGINE_HAS_TLS13 1
#define ENGINE_RENEGOTIATES 1
#endif

/* ---- certificates, made now ---- */

typedef struct pki {
  char *ca, *ca2, *srv_cert, *srv_key, *expired, *wrong, *cli_cert, *cli_key;
} pki;
static pki P;

static char *bio_string(BIO *b) {
  char *d = NULL, *s;
  long n = BIO_get_mem_data(b, &d);
  s = (char *)malloc((size_t)n + 1);
  CHECK(s != NULL);
  memcpy(s, d, (size_t)n);
  s[n] = 0;
  BIO_free(b);
  return s;
}
static char *pem_cert(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  CHECK(PEM_write_bio_X509(b, x) == 1);
  return bio_string(b);
}
static char *pem_key(EVP_PKEY *k) {
  BIO *b = BIO_new(BIO_s_mem());
  CHECK(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1);
  return bio_string(b);
}
static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX c;
  X509_EXTENSION *ex;
  X509V3_set_ctx_nodb(&c);
  X509V3_set_ctx(&c, issuer, x, NULL, NULL, 0);
  ex = X509V3_EXT_conf_nid(NULL, &c, nid, value);
  CHECK(ex != NULL);
  CHECK(X509_add_ext(x, ex, -1) == 1);
  X509_EXTENSION_free(ex);
}
/* A certificate for key, valid from..to (seconds from now), signed by
   issuer (NULL: self-signed CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
                       EVP_PKEY *ikey, long from, long to, const char *san) {
  static long serial = 1;
  X509 *x = X509_new();
  X509_NAME *n;
  CHECK(x != NULL);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++ + 1000L * getpid());
  X509_gmtime_adj(X509_getm_notBefore(x), from);
  X509_gmtime_adj(X509_getm_notAfter(x), to);
  X509_set_pubkey(x, key);
  n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
                             (const unsigned char *)"evloop test", -1, -1, 0);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                             -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
  if (!issuer) {
    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    add_ext(x, issuer, NID_authority_key_identifier, "keyid");
    add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
  }
  if (san)
    add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
  CHECK(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
  return x;
}
static void make_pki(void) {
  EVP_PKEY *cak = EVP_EC_gen("P-256"), *ca2k = EVP_EC_gen("P-256");
  EVP_PKEY *sk = EVP_EC_gen("P-256"), *ck = EVP_EC_gen("P-256");
  X509 *ca, *ca2, *x;
  const long day = 86400;
  CHECK(cak && ca2k && sk && ck);
  ca = make_cert(cak, "evloop test CA", NULL, NULL, -day, 30 * day, NULL);
  ca2 = make_cert(ca2k, "another CA", NULL, NULL, -day, 30 * day, NULL);
  P.ca = pem_cert(ca);
  P.ca2 = pem_cert(ca2);
  x = make_cert(sk, "localhost", ca, cak, -day, 30 * day,
                "DNS:localhost,IP:127.0.0.1");
  P.srv_cert = pem_cert(x);
  X509_free(x);
  x = make_cert(sk, "localhost", ca, cak, -30 * day, -day,
                "DNS:localhost,IP:127.0.0.1");
  P.expired = pem_cert(x);
  X509_free(x);
  x = make_cert(sk, "wrong.example", ca, cak, -day, 30 * day,
                "DNS:wrong.example");
  P.wrong = pem_cert(x);
  X509_free(x);
  x = make_cert(ck, "test client", ca, cak, -day, 30 * day, NULL);
  P.cli_cert = pem_cert(x);
  X509_free(x);
  P.srv_key = pem_key(sk);
  P.cli_key = pem_key(ck);
  X509_free(ca);
  X509_free(ca2);
  EVP_PKEY_free(cak);
  EVP_PKEY_free(ca2k);
  EVP_PKEY_free(sk);
  EVP_PKEY_free(ck);
}

static const char *const alpn_http[] = {"http/1.1", NULL};

static evl_tls_context *srv_ctx_with(const char *cert, int max_version) {
  evl_tls_context *c = NULL;
  evl_tls_config cfg;
  if (!P.ca)
    make_pki();
  memset(&cfg, 0, sizeof cfg);
  cfg.server = 1;
  cfg.cert_pem = cert ? cert : P.srv_cert;
  cfg.key_pem = P.srv_key;
  cfg.alpn = alpn_http;
  cfg.max_version = max_version;
  CHECK_EQ(evl_tls_context_new(&c, &cfg), 0);
  return c;
}
static evl_tls_context *srv_ctx(void) {
  return srv_ctx_with(NULL, 0);
}
static evl_tls_context *cli_ctx_with(const char *ca) {
  evl_tls_context *c = NULL;
  evl_tls_config cfg;
  if (!P.ca)
    make_pki();
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_pem = ca ? ca : P.ca;
  cfg.alpn = alpn_http;
  CHECK_EQ(evl_tls_context_new(&c, &cfg), 0);
  return c;
}
static evl_tls_context *cli_ctx(void) {
  return cli_ctx_with(NULL);
}

/* ---- a recording protocol for both ends ---- */

/* What one end heard: net_test.h's rec_peer (made, EOF answered with
   eof_keep, lost; echo writes back what arrives, and pausing reads
   meanwhile), every byte kept in rx, and the flow-control calls. */
typedef struct side {
  rec_peer rec; /* first: rec_made & co. take a side as a rec_peer */
  unsigned char *rx;
  size_t rxlen, rxcap;
  int pauses, resumes;
  size_t size_at_pause, size_at_resume;
} side;

static void s_data(evl_transport *t, const void *data, size_t len, void *user) {
  side *s = (side *)user;
  if (s->rxlen + len > s->rxcap) {
    s->rxcap = (s->rxlen + len) * 2;
    s->rx = (unsigned char *)realloc(s->rx, s->rxcap);
    CHECK(s->rx != NULL);
  }
  memcpy(s->rx + s->rxlen, data, len);
  s->rxlen += len;
  rec_data(t, data, len, &s->rec);
}
static void s_pause(evl_transport *t, void *user) {
  side *s = (side *)user;
  s->pauses++;
  s->size_at_pause = evl_transport_get_write_buffer_size(t);
  if (s->rec.echo)
    CHECK_EQ(evl_transport_pause_reading(t), 0);
}
static void s_resume(evl_transport *t, void *user) {
  side *s = (side *)user;
  s->resumes++;
  s->size_at_resume = evl_transport_get_write_buffer_size(t);
  if (s->rec.echo && !evl_transport_is_closing(t))
    CHECK_EQ(evl_transport_resume_reading(t), 0);
}
static const evl_protocol side_proto = {rec_made, s_data,   rec_eof, rec_lost,
                                        s_pause,  s_resume, NULL,    NULL,
                                        NULL,     NULL};

static void fill(unsigned char *b, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++)
    b[i] = (unsigned char)((i * 131u + seed + (i >> 11)) & 0xff);
}

/* A TLS server on 127.0.0.1 (port 0) whose connection is *srv. */
static evl_server *tls_server(evl_loop *loop, evl_tls_context *ctx, side *srv,
                              int *port) {
  evl_net_options o;
  evl_server *s;
  memset(&o, 0, sizeof o);
  o.tls = ctx;
  s = serve_loopback(loop, &side_proto, srv, &o);
  *port = evl_server_port(s);
  return s;
}

/* Connects a TLS client to port; returns the future's error code. */
static int tls_connect(evl_loop *loop, evl_tls_context *ctx, side *cli,
                       const char *host, int port, const char *name,
                       double hs_timeout) {
  evl_net_options o;
  evl_future *f;
  int rc;
  memset(&o, 0, sizeof o);
  o.tls = ctx;
  o.server_hostname = name;
  o.tls_handshake_timeout = hs_timeout;
  f = evl_create_connection(loop, &side_proto, cli, host, port, &o);
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (rc == 0)
    CHECK(evl_future_result(f) == cli->rec.t);
  else
    CHECK_EQ(cli->rec.made, 0);
  evl_future_release(f);
  return rc;
}

/* A TLS server (context sc) recorded in srv, and a client (context cc)
   recorded in cli connected to it through host (the host checked in the
   certificate, no other name given); both records start empty. */
static evl_server *tls_connected(evl_loop *loop, evl_tls_context *sc,
                                 evl_tls_context *cc, side *srv, side *cli,
                                 const char *host) {
  int port;
  evl_server *s;
  memset(srv, 0, sizeof *srv);
  memset(cli, 0, sizeof *cli);
  s = tls_server(loop, sc, srv, &port);
  CHECK_EQ(tls_connect(loop, cc, cli, host, port, NULL, 0), 0);
  return s;
}

/* One client and one server connected over TLS on loop. */
typedef struct pair {
  evl_loop *loop;
  evl_tls_context *sctx, *cctx;
  evl_server *server;
  side s, c;
  int port;
} pair;

/* The pair's loop, contexts and server; no client yet. */
static void pair_serve(pair *p) {
  memset(p, 0, sizeof *p);
  p->loop = test_open();
  p->sctx = srv_ctx();
  p->cctx = cli_ctx();
  p->server = tls_server(p->loop, p->sctx, &p->s, &p->port);
}

static void pair_open(pair *p) {
  pair_serve(p);
  CHECK_EQ(tls_connect(p->loop, p->cctx, &p->c, "localhost", p->port, NULL, 0),
           0);
  RUN_UNTIL(p->loop, p->s.rec.made == 1);
}
static void pair_close(pair *p) {
  evl_server_close(p->server);
  if (p->c.rec.t)
    evl_transport_abort(p->c.rec.t);
  if (p->s.rec.t)
    evl_transport_abort(p->s.rec.t);
  RUN_UNTIL(p->loop, !p->c.rec.t && !p->s.rec.t);
  evl_tls_context_release(p->sctx);
  evl_tls_context_release(p->cctx);
  CHECK_EQ(g_reports, 0);
  evl_loop_free(p->loop);
  free(p->s.rx);
  free(p->c.rx);
}

/* ---- tests ---- */

TEST(tls_context_config) {
  evl_tls_context *c = NULL;
  evl_tls_config cfg;
  if (!P.ca)
    make_pki();
  CHECK(evl_tls_engine() != NULL);
  memset(&cfg, 0, sizeof cfg);
  CHECK_EQ(evl_tls_context_new(NULL, &cfg), EVL_EINVAL);
  CHECK_EQ(evl_tls_context_new(&c, NULL), EVL_EINVAL);
  cfg.server = 1; /* no certificate */
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  cfg.cert_pem = P.srv_cert;
  cfg.key_pem = P.cli_key; /* not the certificate's key */
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  cfg.key_pem = "not a key";
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  cfg.key_pem = P.srv_key;
  cfg.min_version = EVL_TLS_1_3;
  cfg.max_version = EVL_TLS_1_2;
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  cfg.min_version = 0x0301; /* TLS 1.0 is not offered */
  cfg.max_version = 0;
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  cfg.min_version = 0;
  cfg.cert_pem = NULL;
  cfg.key_pem = NULL;
  cfg.cert_file = "/nonexistent/cert.pem";
  cfg.key_file = "/nonexistent/key.pem";
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  CHECK(c == NULL);
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_file = "/nonexistent/ca.pem";
  CHECK_EQ(evl_tls_context_new(&c, &cfg), EVL_EINVAL);
  /* the system store (no CA given), and reference counting */
  memset(&cfg, 0, sizeof cfg);
  CHECK_EQ(evl_tls_context_new(&c, &cfg), 0);
  CHECK(evl_tls_context_ref(c) == c);
  evl_tls_context_release(c);
  evl_tls_context_release(c);
  evl_tls_context_release(NULL);
}

/* 16 MiB client -> server -> client through TLS, with flow control on
   both sides; then what was negotiated. */
TEST(tls_echo_16mib) {
  const size_t n = 16u << 20;
  unsigned char *data = (unsigned char *)malloc(n);
  evl_tls_info ci, si;
  size_t off = 0;
  pair p;
  CHECK(data != NULL);
  fill(data, n, 7);
  pair_open(&p);
  p.s.rec.echo = 1;
  while (off < n) { /* writes of 1 MiB, waiting while paused */
    size_t k = n - off < (1u << 20) ? n - off : (1u << 20);
    CHECK_EQ(evl_transport_write(p.c.rec.t, data + off, k), 0);
    off += k;
    RUN_UNTIL(p.loop, p.c.pauses == p.c.resumes);
  }
  RUN_UNTIL(p.loop, p.c.rxlen == n);
  CHECK(memcmp(p.c.rx, data, n) == 0);
  CHECK_EQ(p.s.rxlen, n);
  CHECK(p.c.pauses > 0);
  CHECK_EQ(evl_transport_get_tls_info(p.c.rec.t, &ci), 0);
  CHECK_EQ(evl_transport_get_tls_info(p.s.rec.t, &si), 0);
  CHECK(strcmp(ci.version, ENGINE_HAS_TLS13 ? "TLSv1.3" : "TLSv1.2") == 0);
  CHECK(strcmp(ci.version, si.version) == 0);
  CHECK(ci.cipher[0] != 0);
  CHECK(strcmp(ci.alpn, "http/1.1") == 0);
  CHECK(strcmp(si.alpn, "http/1.1") == 0);
  CHECK(strstr(ci.peer_subject, "localhost") != NULL);
  CHECK_EQ(ci.peer_cert, 1);
  CHECK_EQ(ci.peer_verified, 1);
  CHECK_EQ(si.peer_cert, 0);
  CHECK_EQ(evl_transport_is_tls(p.c.rec.t), 1);
  CHECK(evl_transport_fd(p.c.rec.t) >= 0);
  {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    CHECK_EQ(evl_transport_get_peername(p.c.rec.t, &ss, &len), 0);
    CHECK_EQ(ss.ss_family, AF_INET);
  }
  free(data);
  pair_close(&p);
}

/* ---- a relay between client and server that reads the TLS records ---- */

typedef struct relay {
  evl_transport *down, *up; /* client side, server side */
  side dummy;
  unsigned char hdr[5];
  size_t hdr_have, body_left;
  int records, small_records, garbage_after, cut_after;
  size_t c2s_bytes;
  unsigned char *held; /* up not connected yet */
  size_t held_len;
} relay;
static relay R;

static void relay_count(const unsigned char *d, size_t len) {
  while (len) {
    if (R.body_left) {
      size_t k = len < R.body_left ? len : R.body_left;
      R.body_left -= k;
      d += k;
      len -= k;
      continue;
    }
    R.hdr[R.hdr_have++] = *d++;
    len--;
    if (R.hdr_have == 5) {
      R.body_left = (size_t)R.hdr[3] << 8 | R.hdr[4];
      R.hdr_have = 0;
      R.records++;
      if (R.hdr[0] == 23 && R.body_left < 64)
        R.small_records++;
    }
  }
}
static void up_data(evl_transport *t, const void *data, size_t len,
                    void *user) {
  (void)t;
  (void)user;
  if (R.down)
    evl_transport_write(R.down, data, len);
}
/* One side of the relay is gone (*gone): the other goes too. */
static void relay_side_lost(evl_transport **gone, evl_transport *other) {
  *gone = NULL;
  if (other)
    evl_transport_close(other);
}
static void up_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  (void)user;
  relay_side_lost(&R.up, R.down);
}
static void up_made(evl_transport *t, void *user) {
  (void)user;
  R.up = t;
  if (R.held_len)
    evl_transport_write(t, R.held, R.held_len);
  free(R.held);
  R.held = NULL;
  R.held_len = 0;
}
static const evl_protocol up_proto = {up_made, up_data, NULL, up_lost, NULL,
                                      NULL,    NULL,    NULL, NULL,    NULL};
static void down_data(evl_transport *t, const void *data, size_t len,
                      void *user) {
  (void)t;
  (void)user;
  relay_count((const unsigned char *)data, len);
  R.c2s_bytes += len;
  if (R.cut_after && R.c2s_bytes > (size_t)R.cut_after) {
    size_t keep = len - (R.c2s_bytes - (size_t)R.cut_after);
    if (R.up) {
      evl_transport_write(R.up, data, keep);
      evl_transport_close(R.up); /* a FIN inside a record */
    }
    return;
  }
  if (!R.up) {
    R.held = (unsigned char *)realloc(R.held, R.held_len + len);
    memcpy(R.held + R.held_len, data, len);
    R.held_len += len;
    return;
  }
  evl_transport_write(R.up, data, len);
  if (R.garbage_after && R.c2s_bytes > (size_t)R.garbage_after) {
    static const unsigned char junk[] = {23, 3, 3, 0, 19, 1, 2, 3, 4, 5, 6, 7,
                                         8,  9, 0, 1, 2,  3, 4, 5, 6, 7, 8, 9};
    evl_transport_write(R.up, junk, sizeof junk);
    R.garbage_after = 0;
  }
}
static void down_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  (void)user;
  relay_side_lost(&R.down, R.up);
}
static int relay_port;
static void down_made(evl_transport *t, void *user) {
  evl_future *f;
  (void)user;
  R.down = t;
  f = evl_create_connection(evl_transport_loop(t), &up_proto, NULL, "127.0.0.1",
                            relay_port, NULL);
  evl_future_release(f);
}
static const evl_protocol down_proto = {
    down_made, down_data, NULL, down_lost, NULL, NULL, NULL, NULL, NULL, NULL};

/* A relay to port; returns its own port. */
static int relay_open(evl_loop *loop, int port, evl_server **out) {
  memset(&R, 0, sizeof R);
  relay_port = port;
  *out = serve_loopback(loop, &down_proto, NULL, NULL);
  return evl_server_port(*out);
}

/* A relayed pair: the client connects through the relay. */
static void relayed_open(pair *p, evl_server **rs) {
  int rport;
  pair_serve(p);
  rport = relay_open(p->loop, p->port, rs);
  CHECK_EQ(tls_connect(p->loop, p->cctx, &p->c, "localhost", rport, NULL, 0),
           0);
  RUN_UNTIL(p->loop, p->s.rec.made == 1);
  run_for(p->loop, 0.05); /* the handshake's last records pass the relay */
}

/* Small writes made in one callback share records; a writev is one. */
TEST(tls_small_writes_coalesce) {
  evl_server *rs;
  evl_iovec iov[100];
  char bytes[100];
  pair p;
  int i, before;
  relayed_open(&p, &rs);
  before = R.records;
  for (i = 0; i < 1000; i++)
    CHECK_EQ(evl_transport_write(p.c.rec.t, "x", 1), 0);
  for (i = 0; i < 100; i++) {
    bytes[i] = (char)('a' + i % 26);
    iov[i].base = &bytes[i];
    iov[i].len = 1;
  }
  CHECK_EQ(evl_transport_writev(p.c.rec.t, iov, 100), 0);
  RUN_UNTIL(p.loop, p.s.rxlen == 1100);
  CHECK_EQ(R.records - before, 1); /* 1100 bytes: one record */
  CHECK_EQ(R.small_records, 0);
  /* 40 000 bytes in 1-byte writes: full records (16 KiB) and one tail */
  before = R.records;
  for (i = 0; i < 40000; i++)
    CHECK_EQ(evl_transport_write(p.c.rec.t, "y", 1), 0);
  RUN_UNTIL(p.loop, p.s.rxlen == 41100);
  CHECK_EQ(R.records - before, 3);
  CHECK_EQ(R.small_records, 0);
  evl_server_close(rs);
  pair_close(&p);
}

/* The server does not read: the client's TLS transport pauses past its
   high mark with what waits in its own buffer and below it; pause_reading
   on the server stops the reads below (the client's buffer fills). */
TEST(tls_flow_control) {
  pair p;
  unsigned char *chunk = (unsigned char *)malloc(65536);
  size_t sent = 0;
  CHECK(chunk != NULL);
  fill(chunk, 65536, 3);
  pair_open(&p);
  CHECK_EQ(evl_transport_pause_reading(p.s.rec.t), 0);
  CHECK_EQ(evl_transport_is_reading(p.s.rec.t), 0);
  CHECK_EQ(evl_transport_set_write_buffer_limits(p.c.rec.t, 256 * 1024, 0), 0);
  while (!p.c.pauses && sent < (64u << 20)) {
    CHECK_EQ(evl_transport_write(p.c.rec.t, chunk, 65536), 0);
    sent += 65536;
    run_for(p.loop, 0.005);
  }
  CHECK_EQ(p.c.pauses, 1);
  CHECK(p.c.size_at_pause > 256 * 1024);
  run_for(p.loop, 0.1);
  CHECK_EQ(p.s.rxlen, 0); /* nothing was read while paused */
  CHECK(evl_transport_get_write_buffer_size(p.c.rec.t) > 64 * 1024);
  CHECK_EQ(evl_transport_resume_reading(p.s.rec.t), 0);
  RUN_UNTIL(p.loop, p.s.rxlen == sent);
  CHECK_EQ(p.c.resumes, 1);
  CHECK(p.c.size_at_resume <= 64 * 1024);
  CHECK_EQ(evl_transport_get_write_buffer_size(p.c.rec.t), 0);
  free(chunk);
  pair_close(&p);
}

/* close() sends close_notify after the data: the peer sees the data, then
   eof_received, then connection_lost(0). */
TEST(tls_close_notify) {
  pair p;
  pair_open(&p);
  CHECK_EQ(evl_transport_write(p.c.rec.t, "bye", 3), 0);
  evl_transport_close(p.c.rec.t);
  CHECK_EQ(evl_transport_is_closing(p.c.rec.t), 1);
  CHECK_EQ(evl_transport_write(p.c.rec.t, "x", 1), EVL_ECLOSING);
  RUN_UNTIL(p.loop, p.s.rec.lost == 1 && p.c.rec.lost == 1);
  CHECK_EQ(p.s.rxlen, 3);
  CHECK_EQ(p.s.rec.eofs, 1);
  CHECK_EQ(p.s.rec.lost_err, 0);
  CHECK_EQ(p.c.rec.lost_err, 0);
  CHECK_EQ(p.c.rec.eofs, 0);
  pair_close(&p);
}

/* eof_received returning 1 keeps the transport open for writing. */
TEST(tls_eof_keep_open) {
  pair p;
  pair_open(&p);
  p.s.rec.eof_keep = 1;
  evl_transport_close(p.c.rec.t);
  RUN_UNTIL(p.loop, p.s.rec.eofs == 1);
  run_for(p.loop, 0.05);
  CHECK_EQ(p.s.rec.lost, 0);
  CHECK_EQ(evl_transport_is_reading(p.s.rec.t), 0);
  CHECK_EQ(evl_transport_write_eof(p.s.rec.t), EVL_ENOTSUP);
  CHECK_EQ(evl_transport_can_write_eof(p.s.rec.t), 0);
  evl_transport_close(p.s.rec.t);
  RUN_UNTIL(p.loop, p.s.rec.lost == 1 && p.c.rec.lost == 1);
  CHECK_EQ(p.s.rec.lost_err, 0);
  pair_close(&p);
}

/* abort() sends no close_notify: the peer's connection_lost says so. */
TEST(tls_abort_no_close_notify) {
  pair p;
  pair_open(&p);
  CHECK_EQ(evl_transport_write(p.c.rec.t, "data", 4), 0);
  run_for(p.loop, 0.05);
  evl_transport_abort(p.c.rec.t);
  RUN_UNTIL(p.loop, p.s.rec.lost == 1 && p.c.rec.lost == 1);
  CHECK_EQ(p.c.rec.lost_err, 0);
  CHECK_EQ(p.s.rec.lost_err, EVL_ETLSEOF);
  CHECK_EQ(p.s.rec.eofs, 0);
  CHECK_EQ(p.s.rxlen, 4);
  pair_close(&p);
}

/* The connection ends inside a record. */
TEST(tls_truncated_record) {
  evl_server *rs;
  pair p;
  static unsigned char big[10000];
  relayed_open(&p, &rs);
  R.cut_after = (int)R.c2s_bytes + 3000;
  CHECK_EQ(evl_transport_write(p.c.rec.t, big, sizeof big), 0);
  RUN_UNTIL(p.loop, p.s.rec.lost == 1);
  CHECK_EQ(p.s.rec.lost_err, EVL_ETLSTRUNC);
  CHECK_EQ(p.s.rxlen, 0);
  evl_server_close(rs);
  pair_close(&p);
}

/* Garbage in the stream after the handshake. */
TEST(tls_garbage_midstream) {
  evl_server *rs;
  pair p;
  relayed_open(&p, &rs);
  R.garbage_after = (int)R.c2s_bytes;
  CHECK_EQ(evl_transport_write(p.c.rec.t, "hello", 5), 0);
  RUN_UNTIL(p.loop, p.s.rec.lost == 1);
  CHECK_EQ(p.s.rxlen, 5);
  CHECK_EQ(p.s.rec.lost_err, EVL_ETLS);
  RUN_UNTIL(p.loop, p.c.rec.lost == 1); /* told by an alert, or the close */
  CHECK(p.c.rec.lost_err == EVL_ETLSALERT || p.c.rec.lost_err == EVL_ETLSEOF ||
        p.c.rec.lost_err == 0);
  evl_server_close(rs);
  pair_close(&p);
}

/* ---- plain-text servers for the failure cases ---- */

typedef struct plain {
  evl_transport *t;
  int mode; /* 0: silent, 1: answer HTTP, 2: close on the first bytes */
  size_t got;
} plain;
static plain PL;
static void pl_made(evl_transport *t, void *user) {
  (void)user;
  PL.t = t;
}
static void pl_data(evl_transport *t, const void *data, size_t len,
                    void *user) {
  static const char resp[] = "HTTP/1.1 400 Bad Request\r\n"
                             "Content-Length: 0\r\n\r\n";
  (void)data;
  (void)user;
  PL.got += len;
  if (PL.mode == 1)
    evl_transport_write(t, resp, sizeof resp - 1);
  if (PL.mode == 2)
    evl_transport_close(t);
}
static void pl_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  (void)user;
  PL.t = NULL;
}
static const evl_protocol pl_proto = {pl_made, pl_data, NULL, pl_lost, NULL,
                                      NULL,    NULL,    NULL, NULL,    NULL};

static int plain_server(evl_loop *loop, int mode, evl_server **out) {
  memset(&PL, 0, sizeof PL);
  PL.mode = mode;
  *out = serve_loopback(loop, &pl_proto, NULL, NULL);
  return evl_server_port(*out);
}

static int connect_to_plain(int mode, double hs_timeout, double *took) {
  evl_loop *loop = test_open();
  evl_tls_context *c = cli_ctx();
  evl_server *s;
  side cli;
  double t0;
  int port = plain_server(loop, mode, &s), rc;
  memset(&cli, 0, sizeof cli);
  t0 = test_now();
  rc = tls_connect(loop, c, &cli, "127.0.0.1", port, NULL, hs_timeout);
  if (took)
    *took = test_now() - t0;
  evl_server_close(s);
  if (PL.t)
    evl_transport_abort(PL.t);
  RUN_UNTIL(loop, PL.t == NULL);
  evl_tls_context_release(c);
  test_close(loop);
  return rc;
}

TEST(tls_handshake_timeout) {
  double took;
  CHECK_EQ(connect_to_plain(0, 0.2, &took), EVL_ETIMEDOUT);
  CHECK(took >= 0.19);
  CHECK(took < 5);
}

TEST(tls_peer_speaks_http) {
  CHECK_EQ(connect_to_plain(1, 0, NULL), EVL_ENOTTLS);
}

TEST(tls_peer_vanishes_mid_handshake) {
  CHECK_EQ(connect_to_plain(2, 0, NULL), EVL_ECONNRESET);
}

/* A plain HTTP client of a TLS server: the server reports it (debug). */
static int g_last_err;
static void last_err_handler(evl_loop *loop, const evl_context *ctx,
                             void *arg) {
  (void)loop;
  (void)arg;
  g_last_err = ctx->error;
  g_reports++;
}
TEST(tls_server_gets_plain_http) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx();
  evl_server *s;
  side srv;
  int port;
  memset(&srv, 0, sizeof srv);
  evl_set_debug(loop, 1);
  evl_set_exception_handler(loop, last_err_handler, NULL);
  s = tls_server(loop, sc, &srv, &port);
  memset(&PL, 0, sizeof PL);
  {
    evl_future *f =
        evl_create_connection(loop, &pl_proto, NULL, "127.0.0.1", port, NULL);
    CHECK_EQ(wait_fut(loop, f), 0);
    evl_future_release(f);
  }
  RUN_UNTIL(loop, PL.t != NULL);
  CHECK_EQ(evl_transport_write(PL.t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27),
           0);
  RUN_UNTIL(loop, PL.t == NULL); /* the server closed it */
  RUN_UNTIL(loop, g_reports == 1);
  CHECK_EQ(g_last_err, EVL_ENOTTLS);
  CHECK_EQ(srv.rec.made, 0);
  evl_server_close(s);
  evl_tls_context_release(sc);
  test_close_reported(loop, 1);
}

static int connect_with_cert(const char *cert, const char *ca,
                             const char *name) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx_with(cert, 0), *cc = cli_ctx_with(ca);
  evl_server *s;
  side srv, cli;
  int port, rc;
  memset(&srv, 0, sizeof srv);
  memset(&cli, 0, sizeof cli);
  s = tls_server(loop, sc, &srv, &port);
  rc = tls_connect(loop, cc, &cli, "127.0.0.1", port, name, 0);
  run_for(loop, 0.05);
  CHECK_EQ(srv.rec.made, 0); /* the server's handshake failed too */
  evl_server_close(s);
  if (cli.rec.t)
    evl_transport_abort(cli.rec.t);
  RUN_UNTIL(loop, !cli.rec.t);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  return rc;
}

TEST(tls_unknown_ca) {
  if (!P.ca)
    make_pki();
  CHECK_EQ(connect_with_cert(P.srv_cert, P.ca2, "localhost"),
           EVL_ECERTUNKNOWNCA);
}
TEST(tls_expired_cert) {
  if (!P.ca)
    make_pki();
  CHECK_EQ(connect_with_cert(P.expired, P.ca, "localhost"), EVL_ECERTEXPIRED);
}
TEST(tls_wrong_host_name) {
  if (!P.ca)
    make_pki();
  CHECK_EQ(connect_with_cert(P.wrong, P.ca, "localhost"), EVL_ECERTNAME);
  /* and the IP address the connection used, when no name is given */
  CHECK_EQ(connect_with_cert(P.wrong, P.ca, NULL), EVL_ECERTNAME);
}
TEST(tls_ip_address_checked) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  side srv, cli;
  evl_tls_info info;
  evl_server *s = tls_connected(loop, sc, cc, &srv, &cli, "127.0.0.1");
  CHECK_EQ(evl_transport_get_tls_info(cli.rec.t, &info), 0);
  CHECK_EQ(info.peer_verified, 1);
  evl_transport_close(cli.rec.t);
  RUN_UNTIL(loop, cli.rec.lost && srv.rec.lost);
  evl_server_close(s);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  free(srv.rx);
}

/* A server limited to TLS 1.2 gets TLS 1.2; TLS 1.3 only is refused by
   the engine that has no TLS 1.3. */
TEST(tls_versions) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx_with(NULL, EVL_TLS_1_2), *cc = cli_ctx(), *c13;
  evl_tls_config cfg;
  evl_tls_info info;
  side srv, cli;
  int port;
  evl_server *s = tls_connected(loop, sc, cc, &srv, &cli, "localhost");
  CHECK_EQ(evl_transport_get_tls_info(cli.rec.t, &info), 0);
  CHECK(strcmp(info.version, "TLSv1.2") == 0);
  evl_transport_close(cli.rec.t);
  RUN_UNTIL(loop, cli.rec.lost && srv.rec.lost);
  evl_server_close(s);
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_pem = P.ca;
  cfg.min_version = EVL_TLS_1_3;
  CHECK_EQ(evl_tls_context_new(&c13, &cfg), ENGINE_HAS_TLS13 ? 0 : EVL_ENOTSUP);
  if (ENGINE_HAS_TLS13) { /* a 1.3-only client and a 1.2-only server */
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    s = tls_server(loop, sc, &srv, &port);
    CHECK_EQ(tls_connect(loop, c13, &cli, "localhost", port, NULL, 0),
             EVL_ETLSALERT); /* protocol_version */
    evl_server_close(s);
    evl_tls_context_release(c13);
  }
  run_for(loop, 0.05);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  free(srv.rx);
}

/* ---- STARTTLS on streams: plain lines, then both sides upgrade ---- */

static evl_stream *g_srv_stream;
static void on_stream(evl_stream *s, void *arg) {
  (void)arg;
  g_srv_stream = s;
}
static char *read_line(evl_loop *loop, evl_stream *s) {
  evl_future *f = evl_stream_readline(s);
  evl_bytes *b;
  char *out;
  CHECK_EQ(wait_fut(loop, f), 0);
  b = (evl_bytes *)evl_future_result(f);
  out = (char *)malloc(b->len + 1);
  memcpy(out, b->data, b->len + 1);
  evl_future_release(f);
  return out;
}
static void expect_line(evl_loop *loop, evl_stream *s, const char *want) {
  char *l = read_line(loop, s);
  if (strcmp(l, want) != 0)
    fprintf(stderr, "  got %s", l);
  CHECK(strcmp(l, want) == 0);
  free(l);
}

TEST(tls_starttls_streams) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_future *f, *fs, *fc, *both[2], *g;
  evl_server *srv;
  evl_stream *cs;
  g_srv_stream = NULL;
  f = evl_start_server(loop, on_stream, NULL, "127.0.0.1", 0, 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  f = evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  cs = (evl_stream *)evl_future_result(f);
  evl_future_release(f);
  RUN_UNTIL(loop, g_srv_stream != NULL);
  CHECK_EQ(evl_stream_write(g_srv_stream, "220 ready\r\n", 11), 0);
  expect_line(loop, cs, "220 ready\r\n");
  CHECK_EQ(evl_stream_write(cs, "STARTTLS\r\n", 10), 0);
  expect_line(loop, g_srv_stream, "STARTTLS\r\n");
  CHECK_EQ(evl_stream_write(g_srv_stream, "220 go ahead\r\n", 14), 0);
  expect_line(loop, cs, "220 go ahead\r\n");
  CHECK_EQ(evl_transport_is_tls(evl_stream_transport(cs)), 0);
  fs = evl_stream_start_tls(g_srv_stream, sc, 1, NULL, 0, 0);
  fc = evl_stream_start_tls(cs, cc, 0, "localhost", 0, 0);
  both[0] = fs;
  both[1] = fc;
  g = evl_gather(loop, both, 2, 0);
  CHECK_EQ(wait_fut(loop, g), 0);
  evl_future_release(g);
  CHECK(evl_future_result(fs) == g_srv_stream);
  CHECK(evl_future_result(fc) == cs);
  evl_future_release(fs);
  evl_future_release(fc);
  CHECK_EQ(evl_transport_is_tls(evl_stream_transport(cs)), 1);
  CHECK_EQ(evl_transport_is_tls(evl_stream_transport(g_srv_stream)), 1);
  CHECK_EQ(evl_stream_write(cs, "EHLO secret\r\n", 13), 0);
  expect_line(loop, g_srv_stream, "EHLO secret\r\n");
  CHECK_EQ(evl_stream_write(g_srv_stream, "250 ok\r\n", 8), 0);
  expect_line(loop, cs, "250 ok\r\n");
  evl_stream_close(cs);
  f = evl_stream_read(g_srv_stream, -1); /* to the close_notify */
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(((evl_bytes *)evl_future_result(f))->len, 0);
  evl_future_release(f);
  evl_stream_free(cs);
  evl_stream_free(g_srv_stream);
  evl_server_close(srv);
  run_for(loop, 0.05);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
}

/* Streams with TLS from the start, over TCP and a Unix socket. */
static void stream_roundtrip(evl_loop *loop, evl_stream *cs) {
  RUN_UNTIL(loop, g_srv_stream != NULL);
  CHECK_EQ(evl_stream_write(cs, "ping\n", 5), 0);
  expect_line(loop, g_srv_stream, "ping\n");
  CHECK_EQ(evl_stream_write(g_srv_stream, "pong\n", 5), 0);
  expect_line(loop, cs, "pong\n");
  CHECK_EQ(evl_transport_is_tls(evl_stream_transport(cs)), 1);
  evl_stream_free(cs);
  evl_stream_free(g_srv_stream);
}
TEST(tls_streams_tcp_and_unix) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_net_options so, co;
  evl_future *f;
  evl_server *srv;
  char dir[64], path[128];
  memset(&so, 0, sizeof so);
  memset(&co, 0, sizeof co);
  so.tls = sc;
  co.tls = cc;
  co.server_hostname = "localhost";
  g_srv_stream = NULL;
  f = evl_start_server(loop, on_stream, NULL, "127.0.0.1", 0, 0, &so);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  f = evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, &co);
  CHECK_EQ(wait_fut(loop, f), 0);
  stream_roundtrip(loop, (evl_stream *)evl_future_result(f));
  evl_future_release(f);
  evl_server_close(srv);
  /* Unix */
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/s", dir);
  g_srv_stream = NULL;
  f = evl_start_unix_server_opts(loop, on_stream, NULL, path, 0, &so);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  f = evl_open_unix_connection_opts(loop, path, 0, &co);
  CHECK_EQ(wait_fut(loop, f), 0);
  stream_roundtrip(loop, (evl_stream *)evl_future_result(f));
  evl_future_release(f);
  evl_server_close(srv);
  run_for(loop, 0.05);
  test_rmdir(dir);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
}

/* Options for TLS: so for a server with context sc, co for a client with
   cc that checks the name "localhost" (the test certificate's). */
static void tls_opts(evl_net_options *so, evl_net_options *co,
                     evl_tls_context *sc, evl_tls_context *cc) {
  memset(so, 0, sizeof *so);
  memset(co, 0, sizeof *co);
  so->tls = sc;
  co->tls = cc;
  co->server_hostname = "localhost";
}

/* Both ends of a new socket pair as TLS transports (through
   connect_accepted_socket): the server end speaks sproto to su, the client
   end side_proto to cli; returns once both handshakes are done. */
static void tls_socketpair(evl_loop *loop, const evl_net_options *so,
                           const evl_net_options *co,
                           const evl_protocol *sproto, void *su, side *cli) {
  evl_future *fs, *fc;
  int sv[2];
  CHECK_EQ(test_socketpair(sv), 0);
  fs = evl_connect_accepted_socket_opts(loop, sproto, su, sv[0], so);
  fc = evl_connect_accepted_socket_opts(loop, &side_proto, cli, sv[1], co);
  CHECK_EQ(wait_fut(loop, fs), 0);
  CHECK_EQ(wait_fut(loop, fc), 0);
  evl_future_release(fs);
  evl_future_release(fc);
}

/* Protocol transports over a socket pair, through connect_accepted_socket
   (both ends) and a Unix server with create_unix_connection_opts. */
TEST(tls_socketpair_and_unix) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_net_options so, co;
  side a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  tls_opts(&so, &co, sc, cc);
  tls_socketpair(loop, &so, &co, &side_proto, &a, &b);
  CHECK_EQ(evl_transport_write(b.rec.t, "over a pair", 11), 0);
  RUN_UNTIL(loop, a.rxlen == 11);
  CHECK(memcmp(a.rx, "over a pair", 11) == 0);
  evl_transport_close(b.rec.t);
  RUN_UNTIL(loop, a.rec.lost && b.rec.lost);
  CHECK_EQ(a.rec.eofs, 1);
  {
    char dir[64], path[128];
    side s2, c2;
    evl_future *f;
    evl_server *srv;
    memset(&s2, 0, sizeof s2);
    memset(&c2, 0, sizeof c2);
    CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/u", dir);
    f = evl_create_unix_server(loop, &side_proto, &s2, path, &so);
    CHECK_EQ(wait_fut(loop, f), 0);
    srv = (evl_server *)evl_future_result(f);
    evl_future_release(f);
    f = evl_create_unix_connection_opts(loop, &side_proto, &c2, path, &co);
    CHECK_EQ(wait_fut(loop, f), 0);
    evl_future_release(f);
    CHECK_EQ(evl_transport_write(c2.rec.t, "unix", 4), 0);
    RUN_UNTIL(loop, s2.rxlen == 4);
    evl_transport_close(c2.rec.t);
    RUN_UNTIL(loop, s2.rec.lost && c2.rec.lost);
    evl_server_close(srv);
    run_for(loop, 0.02);
    test_rmdir(dir);
    free(s2.rx);
  }
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  free(a.rx);
}

/* A client context on a server and the reverse, bad timeouts. */
TEST(tls_bad_arguments) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_net_options o;
  evl_future *f;
  memset(&o, 0, sizeof o);
  o.tls = cc;
  f = evl_create_server(loop, &nop_proto, NULL, "127.0.0.1", 0, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  o.tls = sc;
  f = evl_create_connection(loop, &nop_proto, NULL, "127.0.0.1", 1, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  o.tls = cc;
  o.tls_handshake_timeout = -1;
  f = evl_create_connection(loop, &nop_proto, NULL, "127.0.0.1", 1, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  o.tls_handshake_timeout = 0;
  f = evl_connect_accepted_socket_opts(loop, &nop_proto, NULL, -1, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  f = evl_create_connection(loop, NULL, NULL, "127.0.0.1", 1, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
}

/* Cancelling the connection future mid-handshake, and closing the loop
   with TLS connections open. */
TEST(tls_cancel_and_loop_close) {
  evl_loop *loop = test_open();
  evl_tls_context *cc = cli_ctx();
  evl_server *s;
  evl_net_options o;
  evl_future *f;
  side cli;
  pair p;
  int port = plain_server(loop, 0, &s);
  memset(&cli, 0, sizeof cli);
  memset(&o, 0, sizeof o);
  o.tls = cc;
  f = evl_create_connection(loop, &side_proto, &cli, "127.0.0.1", port, &o);
  RUN_UNTIL(loop, PL.got > 0); /* the ClientHello arrived */
  CHECK_EQ(evl_future_cancel(f), 1);
  RUN_UNTIL(loop, PL.t == NULL); /* the connection went */
  CHECK_EQ(cli.rec.made, 0);
  evl_future_release(f);
  evl_server_close(s);
  evl_tls_context_release(cc);
  test_close(loop);
  /* loop close */
  pair_open(&p);
  CHECK_EQ(evl_transport_write(p.c.rec.t, "x", 1), 0);
  evl_loop_free(p.loop);
  CHECK_EQ(p.c.rec.lost, 1);
  CHECK_EQ(p.c.rec.lost_err, EVL_ECLOSED);
  CHECK_EQ(p.s.rec.lost, 1);
  evl_tls_context_release(p.sctx);
  evl_tls_context_release(p.cctx);
  free(p.s.rx);
}

/* A buffered protocol (get_buffer/buffer_updated) over TLS, with a small
   buffer; and a protocol that closes in data_received gets no more. */
typedef struct bufp {
  evl_transport *t;
  unsigned char buf[100], *all;
  size_t got, calls;
  int lost;
} bufp;
static void b_made(evl_transport *t, void *user) {
  ((bufp *)user)->t = t;
}
static void *b_get(evl_transport *t, size_t hint, size_t *len, void *user) {
  (void)t;
  CHECK(hint > 0);
  *len = sizeof((bufp *)user)->buf;
  return ((bufp *)user)->buf;
}
static void b_updated(evl_transport *t, size_t n, void *user) {
  bufp *b = (bufp *)user;
  (void)t;
  CHECK(n <= sizeof b->buf);
  memcpy(b->all + b->got, b->buf, n);
  b->got += n;
  b->calls++;
}
static void b_lost(evl_transport *t, int err, void *user) {
  (void)t;
  CHECK_EQ(err, 0);
  ((bufp *)user)->lost = 1;
}
static const evl_protocol bufp_proto = {b_made, NULL,  NULL,      b_lost, NULL,
                                        NULL,   b_get, b_updated, NULL,   NULL};
static void close_on_data(evl_transport *t, const void *data, size_t len,
                          void *user) {
  side *s = (side *)user;
  s_data(t, data, len, user);
  evl_transport_close(t);
  CHECK_EQ(evl_transport_is_closing(s->rec.t), 1);
}
static const evl_protocol close_proto = {
    rec_made, close_on_data, rec_eof, rec_lost, NULL,
    NULL,     NULL,          NULL,    NULL,     NULL};
TEST(tls_buffered_protocol_and_close_in_data) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_net_options so, co;
  static unsigned char data[50000];
  bufp b;
  side a, c;
  memset(&b, 0, sizeof b);
  memset(&a, 0, sizeof a);
  memset(&c, 0, sizeof c);
  b.all = (unsigned char *)malloc(sizeof data);
  fill(data, sizeof data, 1);
  tls_opts(&so, &co, sc, cc);
  tls_socketpair(loop, &so, &co, &bufp_proto, &b, &c);
  CHECK_EQ(evl_transport_write(c.rec.t, data, sizeof data), 0);
  RUN_UNTIL(loop, b.got == sizeof data);
  CHECK(memcmp(b.all, data, sizeof data) == 0);
  CHECK(b.calls >= sizeof data / sizeof b.buf);
  evl_transport_close(c.rec.t);
  RUN_UNTIL(loop, b.lost && c.rec.lost);
  /* close inside data_received: the rest of what came is not delivered */
  memset(&a, 0, sizeof a);
  memset(&c, 0, sizeof c);
  tls_socketpair(loop, &so, &co, &close_proto, &a, &c);
  CHECK_EQ(evl_transport_write(c.rec.t, data, sizeof data), 0); /* 4 records */
  RUN_UNTIL(loop, a.rec.lost && c.rec.lost);
  CHECK(a.rxlen > 0);
  CHECK(a.rxlen <= 16384); /* one record, then nothing */
  CHECK_EQ(a.rec.lost_err, 0);
  CHECK_EQ(c.rec.eofs, 1); /* the close_notify reached the peer */
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  free(b.all);
  free(a.rx);
  free(c.rx);
}

/* sendfile over TLS: read and encrypt. */
TEST(tls_sendfile) {
  const size_t n = 3u << 20;
  unsigned char *data = (unsigned char *)malloc(n);
  evl_future *f;
  pair p;
  int fd = test_tmpfile_fd();
  CHECK(data && fd >= 0);
  fill(data, n, 11);
  CHECK_EQ(test_fd_write(fd, data, n), (long)n);
  pair_open(&p);
  CHECK_EQ(evl_transport_write(p.c.rec.t, "head", 4), 0);
  f = evl_sendfile(p.c.rec.t, fd, 100, n - 100);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(p.loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), (long)(n - 100));
  evl_future_release(f);
  RUN_UNTIL(p.loop, p.s.rxlen == n - 96);
  CHECK(memcmp(p.s.rx, "head", 4) == 0);
  CHECK(memcmp(p.s.rx + 4, data + 100, n - 100) == 0);
  test_fd_close(fd);
  free(data);
  pair_close(&p);
}

/* The second connection resumes the first one's session. */
TEST(tls_session_resumption) {
  evl_loop *loop = test_open();
  evl_tls_context *sc = srv_ctx(), *cc = cli_ctx();
  evl_server *s;
  evl_tls_info info;
  int port, i;
  side srv;
  memset(&srv, 0, sizeof srv);
  srv.rec.echo = 1;
  s = tls_server(loop, sc, &srv, &port);
  for (i = 0; i < 2; i++) {
    side cli;
    memset(&cli, 0, sizeof cli);
    CHECK_EQ(tls_connect(loop, cc, &cli, "localhost", port, NULL, 0), 0);
    CHECK_EQ(evl_transport_write(cli.rec.t, "hi", 2), 0);
    RUN_UNTIL(loop, cli.rxlen == 2); /* the session ticket came before */
    CHECK_EQ(evl_transport_get_tls_info(cli.rec.t, &info), 0);
    CHECK_EQ(info.resumed, i);
    evl_transport_close(cli.rec.t);
    RUN_UNTIL(loop, cli.rec.lost);
    free(cli.rx);
  }
  evl_server_close(s);
  run_for(loop, 0.05);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  test_close(loop);
  free(srv.rx);
}

/* A server that asks for client certificates. */
TEST(tls_client_certificate) {
  evl_loop *loop = test_open();
  evl_tls_context *sc, *cc, *cc_nocert = cli_ctx();
  evl_tls_config cfg;
  evl_tls_info info;
  evl_server *s;
  side srv, cli;
  int port;
  memset(&cfg, 0, sizeof cfg);
  cfg.server = 1;
  cfg.cert_pem = P.srv_cert;
  cfg.key_pem = P.srv_key;
  cfg.ca_pem = P.ca;
  cfg.verify_client = 1;
  CHECK_EQ(evl_tls_context_new(&sc, &cfg), 0);
  memset(&cfg, 0, sizeof cfg);
  cfg.cert_pem = P.cli_cert;
  cfg.key_pem = P.cli_key;
  cfg.ca_pem = P.ca;
  CHECK_EQ(evl_tls_context_new(&cc, &cfg), 0);
  memset(&srv, 0, sizeof srv);
  memset(&cli, 0, sizeof cli);
  s = tls_server(loop, sc, &srv, &port);
  CHECK_EQ(tls_connect(loop, cc, &cli, "localhost", port, NULL, 0), 0);
  RUN_UNTIL(loop, srv.rec.made == 1);
  CHECK_EQ(evl_transport_get_tls_info(srv.rec.t, &info), 0);
  CHECK_EQ(info.peer_cert, 1);
  CHECK_EQ(info.peer_verified, 1);
  CHECK(strstr(info.peer_subject, "test client") != NULL);
  evl_transport_close(cli.rec.t);
  RUN_UNTIL(loop, srv.rec.lost && cli.rec.lost);
  /* without a certificate: the server refuses (debug reports it) */
  memset(&srv, 0, sizeof srv);
  memset(&cli, 0, sizeof cli);
  evl_set_debug(loop, 1);
  evl_set_exception_handler(loop, last_err_handler, NULL);
  g_reports = 0;
  {
    int rc = tls_connect(loop, cc_nocert, &cli, "localhost", port, NULL, 0);
    if (rc == 0) /* TLS 1.3: the client finished first; then the alert */
      RUN_UNTIL(loop, cli.rec.lost == 1);
    CHECK(rc == EVL_ETLSALERT || cli.rec.lost_err == EVL_ETLSALERT);
  }
  RUN_UNTIL(loop, g_reports == 1);
  CHECK_EQ(g_last_err, EVL_ENOCERT);
  CHECK_EQ(srv.rec.made, 0);
  evl_server_close(s);
  run_for(loop, 0.05);
  evl_tls_context_release(sc);
  evl_tls_context_release(cc);
  evl_tls_context_release(cc_nocert);
  test_close_reported(loop, 1);
}

/* ---- an OpenSSL peer in a child process, on one end of a socket pair:
   it sends n bytes in 16 KiB writes with a key update (TLS 1.3) or a
   renegotiation (TLS 1.2) every 64 KiB, reads n bytes and checks them,
   then sends close_notify. Its exit status is its verdict. ---- */

static int peer_child(int fd, int renegotiate, size_t n) {
  SSL_CTX *c = SSL_CTX_new(TLS_server_method());
  BIO *cb = BIO_new_mem_buf(P.srv_cert, -1),
      *kb = BIO_new_mem_buf(P.srv_key, -1);
  X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
  EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
  unsigned char *out = (unsigned char *)malloc(n),
                *in = (unsigned char *)malloc(n);
  size_t off = 0, got = 0;
  SSL *s;
  if (!c || !x || !k || !out || !in)
    return 10;
  SSL_CTX_use_certificate(c, x);
  SSL_CTX_use_PrivateKey(c, k);
  if (renegotiate) {
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  }
  s = SSL_new(c);
  SSL_set_fd(s, fd);
  if (SSL_accept(s) != 1)
    return 11;
  fill(out, n, 5);
  while (off < n) {
    size_t k2 = n - off < 16384 ? n - off : 16384;
    int w = SSL_write(s, out + off, (int)k2);
    if (w <= 0)
      return 12;
    off += (size_t)w;
    if (off % 65536 == 0) {
      if (renegotiate) {
        if (SSL_renegotiate(s) != 1)
          return 13;
      } else if (SSL_key_update(s, SSL_KEY_UPDATE_REQUESTED) != 1) {
        return 14;
      }
    }
  }
  while (got < n) {
    int r = SSL_read(s, in + got, (int)(n - got));
    if (r <= 0)
      return 15;
    got += (size_t)r;
  }
  fill(out, n, 9);
  if (memcmp(in, out, n) != 0)
    return 16;
  SSL_shutdown(s);
  {
    char b;
    while (SSL_read(s, &b, 1) > 0) /* to the client's close_notify or EOF */
      ;
  }
  return 0;
}

static void peer_test(int renegotiate) {
  const size_t n = 1u << 20;
  evl_loop *loop;
  evl_tls_context *cc;
  evl_net_options o;
  evl_future *f;
  unsigned char *want = (unsigned char *)malloc(n),
                *mine = (unsigned char *)malloc(n);
  side cli;
  int sv[2], status = -1, rc;
  pid_t pid;
  if (!P.ca)
    make_pki();
  CHECK_EQ(test_socketpair(sv), 0);
  fflush(stdout);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(sv[0]);
    _exit(peer_child(sv[1], renegotiate, n));
  }
  close(sv[1]);
  loop = test_open();
  cc = cli_ctx();
  memset(&cli, 0, sizeof cli);
  memset(&o, 0, sizeof o);
  o.tls = cc;
  o.server_hostname = "localhost";
  f = evl_connect_accepted_socket_opts(loop, &side_proto, &cli, sv[0], &o);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  fill(mine, n, 9);
  /* An engine that refuses the peer's renegotiation may have ended the
     connection already (the peer asks right after the handshake). */
  rc = cli.rec.t ? evl_transport_write(cli.rec.t, mine, n) : EVL_ECLOSING;
  if (renegotiate && !ENGINE_RENEGOTIATES)
    CHECK(rc == 0 || cli.rec.lost);
  else
    CHECK_EQ(rc, 0);
  RUN_UNTIL(loop, cli.rec.eofs == 1 || cli.rec.lost);
  fill(want, n, 5);
  CHECK(cli.rxlen <= n);
  CHECK(memcmp(cli.rx, want, cli.rxlen) == 0); /* nothing lost or mangled */
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status));
  if (renegotiate && !ENGINE_RENEGOTIATES) {
    /* refused (a no_renegotiation alert): OpenSSL then gives up on the
       connection, which ends in an error here, not a hang */
    RUN_UNTIL(loop, cli.rec.lost == 1);
    CHECK(cli.rec.lost_err != 0);
    CHECK(WEXITSTATUS(status) != 0);
  } else {
    if (cli.rec.lost)
      fprintf(stderr, "  lost: %s\n", evl_strerror(cli.rec.lost_err));
    CHECK_EQ(cli.rxlen, n);
    RUN_UNTIL(loop, cli.rec.lost == 1);
    CHECK_EQ(cli.rec.lost_err, 0);
    CHECK_EQ(WEXITSTATUS(status), 0);
  }
  evl_tls_context_release(cc);
  test_close(loop);
  free(cli.rx);
  free(want);
  free(mine);
}

TEST(tls_peer_key_update) {
  if (!ENGINE_HAS_TLS13)
    SKIP("this engine has no TLS 1.3 (mbedTLS 2.28), so no key update");
  peer_test(0);
}
TEST(tls_peer_renegotiation) {
  peer_test(1);
}

/* ---- openssl s_server as the server of evloop.h's client ---- */

static int write_file(const char *dir, const char *name, const char *text,
                      char *path, size_t n) {
  FILE *f;
  snprintf(path, n, "%s/%s", dir, name);
  f = fopen(path, "w");
  if (!f)
    return -1;
  fputs(text, f);
  fclose(f);
  return 0;
}

static int free_port(void) {
  evl_loop *loop = test_open();
  int port = evl_server_port(serve_loopback(loop, &nop_proto, NULL, NULL));
  test_close(loop);
  return port;
}

TEST(tls_interop_openssl_s_server) {
  char dir[64], cert[128], key[128], ca[128], portstr[16];
  evl_loop *loop;
  evl_tls_context *cc;
  evl_tls_config cfg;
  side cli;
  pid_t pid;
  int port, rc = -1, i, status;
  if (system("openssl version >/dev/null 2>&1") != 0)
    SKIP("no openssl command (package openssl)");
  if (!P.ca)
    make_pki();
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  CHECK_EQ(write_file(dir, "cert.pem", P.srv_cert, cert, sizeof cert), 0);
  CHECK_EQ(write_file(dir, "key.pem", P.srv_key, key, sizeof key), 0);
  CHECK_EQ(write_file(dir, "ca.pem", P.ca, ca, sizeof ca), 0);
  port = free_port();
  snprintf(portstr, sizeof portstr, "%d", port);
  fflush(stdout);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int nul = open("/dev/null", O_RDWR);
    dup2(nul, 0);
    dup2(nul, 1);
    dup2(nul, 2);
    execlp("openssl", "openssl", "s_server", "-accept", portstr, "-cert", cert,
           "-key", key, "-www", "-naccept", "1", (char *)NULL);
    _exit(127);
  }
  loop = test_open();
  memset(&cfg, 0, sizeof cfg);
  cfg.ca_file = ca; /* from a file this time */
  CHECK_EQ(evl_tls_context_new(&cc, &cfg), 0);
  for (i = 0; i < 100; i++) { /* until s_server listens */
    memset(&cli, 0, sizeof cli);
    rc = tls_connect(loop, cc, &cli, "localhost", port, NULL, 0);
    if (rc != EVL_ECONNREFUSED)
      break;
    run_for(loop, 0.05);
  }
  CHECK_EQ(rc, 0);
  CHECK_EQ(evl_transport_write(cli.rec.t, "GET / HTTP/1.0\r\n\r\n", 18), 0);
  RUN_UNTIL(loop, cli.rec.lost == 1);
  CHECK(cli.rxlen > 20);
  CHECK(memcmp(cli.rx, "HTTP/1.0 200 ok", 15) == 0);
  CHECK(cli.rec.lost_err == 0 || cli.rec.lost_err == EVL_ETLSEOF);
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  evl_tls_context_release(cc);
  test_close(loop);
  free(cli.rx);
  test_unlink(cert);
  test_unlink(key);
  test_unlink(ca);
  test_rmdir(dir);
}

TESTS_BEGIN
T(tls_context_config)
T(tls_echo_16mib)
T(tls_small_writes_coalesce)
T(tls_flow_control)
T(tls_close_notify)
T(tls_eof_keep_open)
T(tls_abort_no_close_notify)
T(tls_truncated_record)
T(tls_garbage_midstream)
T(tls_handshake_timeout)
T(tls_peer_speaks_http)
T(tls_peer_vanishes_mid_handshake)
T(tls_server_gets_plain_http)
T(tls_unknown_ca)
T(tls_expired_cert)
T(tls_wrong_host_name)
T(tls_ip_address_checked)
T(tls_versions)
T(tls_starttls_streams)
T(tls_streams_tcp_and_unix)
T(tls_socketpair_and_unix)
T(tls_bad_arguments)
T(tls_cancel_and_loop_close)
T(tls_sendfile)
T(tls_buffered_protocol_and_close_in_data)
T(tls_session_resumption)
T(tls_client_certificate)
T(tls_peer_key_update)
T(tls_peer_renegotiation)
T(tls_interop_openssl_s_server)
TESTS_END

#endif /* HAVE_TLS */
