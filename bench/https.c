/* https.c - HTTPS keep-alive under wrk, and memory per idle TLS
   connection: evloop.h (EVLOOP_TLS_OPENSSL) beside libevent's
   bufferevent_openssl and Python asyncio (uvloop too when installed), the
   same server in each: count the requests ending in "\r\n\r\n", answer
   each with a fixed 51-byte "Hello, World!" response.

       https [SECS [CONNS]]     (default 3 s, 50 connections, wrk -t1)

   Each server runs in its own process pinned to the first core, wrk on the
   second. The certificate (EC P-256, made with the openssl command) and
   the TLS version (1.3, wrk's default with OpenSSL 3) are the same for
   all. req/s is wrk's figure; CPU per request is the server's user+system
   time (/proc/PID/stat, read just before wrk starts and after it ends)
   over the requests wrk counted. Idle memory: IDLE (default 500)
   connections opened and handshaken by this program with blocking OpenSSL
   clients, then the server's VmRSS growth divided by IDLE.
   Build: see bench/Makefile (make https). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#if HAVE_EVENT
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#endif

#define RESP "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!"
#define RESP_LEN (sizeof RESP - 1)

static char cert[128], key[128];

/* Requests end with "\r\n\r\n": *st is how much of it was seen last. */
static size_t count_reqs(unsigned char *st, const char *p, size_t n) {
  static const char end[] = "\r\n\r\n";
  size_t reqs = 0, i;
  for (i = 0; i < n; i++) {
    if (p[i] == end[*st])
      (*st)++;
    else
      *st = p[i] == '\r' ? 1 : 0;
    if (*st == 4) {
      reqs++;
      *st = 0;
    }
  }
  return reqs;
}

static void say_port(int port) {
  printf("PORT %d\n", port);
  fflush(stdout);
}

/* ---- evloop.h ---- */
typedef struct evl_conn {
  unsigned char st;
} evl_conn;
static void e_made(evl_transport *t, void *user) {
  (void)user;
  evl_transport_set_user(t, calloc(1, sizeof(evl_conn)));
}
static void e_data(evl_transport *t, const void *data, size_t len, void *user) {
  static char out[64 * RESP_LEN];
  size_t n = count_reqs(&((evl_conn *)user)->st, (const char *)data, len), k;
  while (n) {
    k = n < 64 ? n : 64;
    if (out[0] != 'H')
      for (size_t i = 0; i < 64; i++)
        memcpy(out + i * RESP_LEN, RESP, RESP_LEN);
    evl_transport_write(t, out, k * RESP_LEN);
    n -= k;
  }
}
static void e_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  free(user);
}
static const evl_protocol e_proto = {e_made, e_data, NULL, e_lost, NULL,
                                     NULL,   NULL,   NULL, NULL,   NULL};
static int srv_evloop(void) {
  evl_loop *loop;
  evl_tls_config cfg;
  evl_net_options o;
  evl_future *f;
  memset(&cfg, 0, sizeof cfg);
  cfg.server = 1;
  cfg.cert_file = cert;
  cfg.key_file = key;
  memset(&o, 0, sizeof o);
  o.backlog = 1024;
  if (evl_loop_new(&loop, NULL) || evl_tls_context_new(&o.tls, &cfg))
    return 1;
  f = evl_create_server(loop, &e_proto, NULL, "127.0.0.1", 0, &o);
  if (evl_run_until_complete(loop, f))
    return 1;
  say_port(evl_server_port((evl_server *)evl_future_result(f)));
  evl_run_forever(loop);
  return 0;
}

/* ---- libevent's bufferevent_openssl ---- */
#if HAVE_EVENT
static SSL_CTX *ev_ctx;
static void ev_read(struct bufferevent *bev, void *arg) {
  struct evbuffer *in = bufferevent_get_input(bev);
  size_t len = evbuffer_get_length(in);
  size_t n = count_reqs((unsigned char *)arg,
                        (const char *)evbuffer_pullup(in, -1), len);
  evbuffer_drain(in, len);
  while (n--)
    bufferevent_write(bev, RESP, RESP_LEN);
}
static void ev_event(struct bufferevent *bev, short what, void *arg) {
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    free(arg);
    bufferevent_free(bev);
  }
}
static void ev_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  int one = 1;
  struct bufferevent *bev;
  (void)sa;
  (void)salen;
  (void)arg;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bev = bufferevent_openssl_socket_new(
      evconnlistener_get_base(l), fd, SSL_new(ev_ctx),
      BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(bev, ev_read, NULL, ev_event, calloc(1, 1));
  bufferevent_enable(bev, EV_READ);
}
static int srv_libevent(void) {
  struct event_base *base = event_base_new();
  struct sockaddr_in sa;
  struct evconnlistener *l;
  socklen_t len = sizeof sa;
  ev_ctx = SSL_CTX_new(TLS_server_method());
  if (!base || !ev_ctx ||
      SSL_CTX_use_certificate_chain_file(ev_ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ev_ctx, key, SSL_FILETYPE_PEM) != 1)
    return 1;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  l = evconnlistener_new_bind(base, ev_accept, NULL,
                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                              (struct sockaddr *)&sa, sizeof sa);
  if (!l)
    return 1;
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sa, &len);
  say_port(ntohs(sa.sin_port));
  event_base_dispatch(base);
  return 0;
}
#endif

/* ---- Python asyncio (and uvloop) ---- */
static const char py_server[] =
    "import asyncio, ssl, sys\n"
    "R = b'HTTP/1.1 200 OK\\r\\nContent-Length: 13\\r\\n\\r\\nHello, World!'\n"
    "class P(asyncio.Protocol):\n"
    "    def connection_made(self, t): self.t = t; self.b = b''\n"
    "    def data_received(self, d):\n"
    "        d = self.b + d; n = d.count(b'\\r\\n\\r\\n')\n"
    "        self.b = d[d.rfind(b'\\r\\n\\r\\n') + 4:] if n else d\n"
    "        if n: self.t.write(R * n)\n"
    "async def main():\n"
    "    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "    c.load_cert_chain(sys.argv[1], sys.argv[2])\n"
    "    s = await asyncio.get_running_loop().create_server(P, '127.0.0.1', 0,"
    " ssl=c, backlog=1024)\n"
    "    print('PORT', s.sockets[0].getsockname()[1], flush=True)\n"
    "    await s.serve_forever()\n"
    "if sys.argv[3] == 'uvloop':\n"
    "    import uvloop; uvloop.install()\n"
    "asyncio.run(main())\n";

/* ---- the driver ---- */
typedef struct server {
  pid_t pid;
  int port;
} server;

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  (void)sched_setaffinity(0, sizeof s, &s);
}

static int start(server *s, const char *self, const char *lib) {
  int fds[2];
  char buf[256], *p;
  size_t len;
  ssize_t n;
  if (pipe(fds))
    return -1;
  fflush(stdout);
  s->pid = fork();
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pin(0);
    dup2(fds[1], 1);
    close(fds[0]);
    if (!strcmp(lib, "asyncio") || !strcmp(lib, "uvloop"))
      execlp("python3", "python3", "-c", py_server, cert, key, lib,
             (char *)NULL);
    else
      execl(self, self, "--server", lib, cert, key, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  len = 0; /* up to the line with the port (python may say more first) */
  while (len < sizeof buf - 1 &&
         (n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) {
    len += (size_t)n;
    buf[len] = 0;
    if ((p = strstr(buf, "PORT ")) && strchr(p, '\n'))
      break;
  }
  buf[len] = 0;
  p = strstr(buf, "PORT ");
  if (!p || sscanf(p, "PORT %d", &s->port) != 1) {
    fprintf(stderr, "%s: no port (%s)\n", lib, buf);
    close(fds[0]);
    return -1;
  }
  close(fds[0]);
  return 0;
}

static void stop(server *s) {
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
}

/* user+system seconds of pid */
static double cpu_of(pid_t pid) {
  char path[64], buf[1024], *p;
  unsigned long ut = 0, st = 0;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (!(f = fopen(path, "r")))
    return 0;
  if (!fgets(buf, sizeof buf, f))
    buf[0] = 0;
  fclose(f);
  p = strrchr(buf, ')');
  if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                  &ut, &st) == 2)
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
  return 0;
}

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  long kib = -1;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!(f = fopen(path, "r")))
    return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

/* wrk's requests and req/s; 0 on failure. */
static int run_wrk(int port, const char *secs, const char *conns, double *reqs,
                   double *rps) {
  char cmd[256], out[8192], *p;
  size_t len;
  FILE *f;
  snprintf(cmd, sizeof cmd,
           "taskset -c 1 wrk -t1 -c%s -d%ss https://127.0.0.1:%d/ 2>&1", conns,
           secs, port);
  if (!(f = popen(cmd, "r")))
    return 0;
  len = fread(out, 1, sizeof out - 1, f);
  out[len] = 0;
  pclose(f);
  p = strstr(out, "requests in");
  *reqs = 0;
  if (p) {
    while (p > out && p[-1] != '\n')
      p--;
    *reqs = strtod(p, NULL);
  }
  p = strstr(out, "Requests/sec:");
  *rps = p ? strtod(p + 13, NULL) : 0;
  if (strstr(out, "Socket errors") || strstr(out, "Non-2xx"))
    fprintf(stderr, "wrk reports errors:\n%s", out);
  return *reqs > 0 && *rps > 0;
}

/* Opens n TLS connections (handshake done, idle); returns how many. */
static int open_idle(int port, int n, SSL **ssl, int *fds) {
  SSL_CTX *c = SSL_CTX_new(TLS_client_method());
  struct sockaddr_in sa;
  int i;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof sa))
      break;
    ssl[i] = SSL_new(c);
    SSL_set_fd(ssl[i], fds[i]);
    if (SSL_connect(ssl[i]) != 1)
      break;
  }
  SSL_CTX_free(c);
  return i;
}

int main(int argc, char **argv) {
  static const char *const libs[] = {"evloop", "libevent", "asyncio", "uvloop"};
  const char *secs = argc > 1 ? argv[1] : "3",
             *conns = argc > 2 ? argv[2] : "50";
  int idle = getenv("IDLE") ? atoi(getenv("IDLE")) : 500;
  char dir[] = "/tmp/https_bench.XXXXXX", cmd[512];
  size_t l;
  if (argc == 5 && !strcmp(argv[1], "--server")) {
    snprintf(cert, sizeof cert, "%s", argv[3]);
    snprintf(key, sizeof key, "%s", argv[4]);
    if (!strcmp(argv[2], "evloop"))
      return srv_evloop();
#if HAVE_EVENT
    if (!strcmp(argv[2], "libevent"))
      return srv_libevent();
#endif
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(dir))
    return 1;
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
           "-nodes -days 1 -subj /CN=localhost -keyout %s -out %s 2>/dev/null",
           key, cert);
  if (system(cmd) != 0 || system("command -v wrk >/dev/null") != 0) {
    printf("== https: SKIPPED: needs the openssl command and wrk\n");
    return 0;
  }
  printf("# https: HTTPS/1.1 keep-alive (TLS 1.3, EC P-256) under wrk -t1 "
         "-c%s -d%ss, server pinned to core 0, wrk to core 1;\n"
         "# idle memory: %d idle TLS connections (IDLE=N %s %s %s "
         "reproduces this)\n",
         conns, secs, idle, argv[0], secs, conns);
  printf("%-10s %12s %14s %16s\n", "server", "req/s", "CPU/request",
         "KiB/idle conn");
  for (l = 0; l < sizeof libs / sizeof *libs; l++) {
    server s;
    double c0, c1, reqs, rps;
    long r0, r1;
    SSL **ssl = (SSL **)calloc((size_t)idle, sizeof *ssl);
    int *fds = (int *)calloc((size_t)idle, sizeof *fds), k, i;
#if !HAVE_EVENT
    if (!strcmp(libs[l], "libevent")) {
      printf("%-10s SKIPPED (libevent_openssl not found at build time)\n",
             libs[l]);
      continue;
    }
#endif
    if (!strcmp(libs[l], "uvloop") &&
        system("python3 -c 'import uvloop' 2>/dev/null") != 0) {
      printf("%-10s SKIPPED (not installed)\n", libs[l]);
      continue;
    }
    if (start(&s, argv[0], libs[l])) {
      printf("%-10s FAILED to start\n", libs[l]);
      continue;
    }
    usleep(100000);
    c0 = cpu_of(s.pid);
    if (!run_wrk(s.port, secs, conns, &reqs, &rps)) {
      printf("%-10s FAILED under wrk\n", libs[l]);
      stop(&s);
      continue;
    }
    usleep(100000);
    c1 = cpu_of(s.pid);
    stop(&s); /* a fresh server for the idle connections */
    if (start(&s, argv[0], libs[l])) {
      printf("%-10s FAILED to start again\n", libs[l]);
      continue;
    }
    usleep(100000);
    r0 = rss_kib(s.pid);
    k = open_idle(s.port, idle, ssl, fds);
    usleep(300000);
    r1 = rss_kib(s.pid);
    printf("%-10s %12.0f %11.1f us %16.1f%s\n", libs[l], rps,
           (c1 - c0) / reqs * 1e6, k ? (double)(r1 - r0) / k : 0.0,
           k < idle ? " (fewer connections opened)" : "");
    for (i = 0; i < k; i++) {
      SSL_free(ssl[i]);
      close(fds[i]);
    }
    free(ssl);
    free(fds);
    stop(&s);
  }
  unlink(cert);
  unlink(key);
  rmdir(dir);
  return 0;
}
