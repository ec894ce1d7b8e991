/* echo.c - TCP echo server: messages per second and the server's CPU time
   per message.

   The same echo server (net.h: read into one buffer, write it back at once)
   on evloop.h, libuv, libev, libevent and a hand-written epoll loop, each
   in its own process pinned to one core; the load generator is this
   program on the other core, a raw epoll client that is the same for
   every server: CONNS connections (default 100), each sends a SIZE-byte
   message and waits for the whole echo before sending the next one
   (ping-pong), for SECS seconds (default 1.5) after a 0.3 s warm-up; 5
   runs per library by default (BENCH_REPS overrides it).

   On loopback the kernel does most of the work at 64 bytes (a message is a
   read and a write on each side), so the rate hardly separates the
   libraries: the figure that does is the server's CPU time per message,
   read from /proc/PID/schedstat (exact, ns) while the server is idle just
   before and just after the measured phase (both phases end by waiting for
   every outstanding echo). */
#include "net.h"

typedef struct client_conn {
  int fd;
  size_t got; /* bytes of the current echo received */
} client_conn;

static void send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        bench_die("client write");
      struct pollfd pfd = {fd, POLLOUT, 0};
      poll(&pfd, 1, 1000);
      continue;
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Connects nconn clients to the server on port, non-blocking, each one
   watched by ep for its echoes. */
static void connect_clients(int ep, client_conn *cs, int nconn, int port) {
  for (int i = 0; i < nconn; i++) {
    cs[i].fd = net_connect(port);
    fcntl(cs[i].fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.ptr = &cs[i];
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) != 0)
      bench_die("epoll_ctl");
  }
}

/* One phase of ping-pong on every connection for `secs` seconds, then
   until every echo is back; returns the number of round trips. */
static long ping_pong(int ep, client_conn *cs, int nconn, const char *msg,
                      size_t size, double secs, char *buf) {
  long msgs = 0;
  int outstanding = nconn, stopping = 0;
  struct epoll_event evs[256];
  for (int i = 0; i < nconn; i++) {
    cs[i].got = 0;
    send_all(cs[i].fd, msg, size);
  }
  double deadline = bench_now() + secs;
  while (outstanding > 0) {
    int n = epoll_wait(ep, evs, 256, 5000);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      bench_die("client: no echo for 5 s");
    for (int i = 0; i < n; i++) {
      client_conn *c = (client_conn *)evs[i].data.ptr;
      ssize_t r = read(c->fd, buf, size - c->got);
      if (r < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      if (r <= 0)
        bench_die("client read (the server closed the connection)");
      c->got += (size_t)r;
      if (c->got < size)
        continue;
      msgs++;
      c->got = 0;
      if (stopping)
        outstanding--;
      else
        send_all(c->fd, msg, size);
    }
    if (!stopping && bench_now() >= deadline)
      stopping = 1;
  }
  return msgs;
}

/* --client PORT SIZE SECS CONNS: load on a server started by hand (for
   profiling it: --server LIB echo PORT, then perf record -p). */
static int client_only(int argc, char **argv) {
  if (bench_usage(argc != 6, argv[0], "--client PORT SIZE SECS CONNS"))
    return 2;
  int port = atoi(argv[2]), nconn = atoi(argv[5]);
  size_t size = (size_t)atol(argv[3]);
  double secs = atof(argv[4]);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  client_conn *cs = (client_conn *)calloc((size_t)nconn, sizeof *cs);
  char *msg = (char *)calloc(1, size), *buf = (char *)malloc(size);
  if (ep < 0 || !cs || !msg || !buf || nconn < 1 || size < 1)
    bench_die("client setup");
  connect_clients(ep, cs, nconn, port);
  double t0 = bench_now();
  long msgs = ping_pong(ep, cs, nconn, msg, size, secs, buf);
  double t = bench_now() - t0;
  for (int i = 0; i < nconn; i++)
    net_close_reset(cs[i].fd);
  printf("%ld round trips of %zu bytes in %.3f s = %.0f msgs/s\n", msgs, size,
         t, (double)msgs / t);
  return 0;
}

/* --run LIB SIZE SECS CONNS */
static int child(int argc, char **argv) {
  if (bench_usage(argc != 6, argv[0],
                  "--run evloop|libuv|libev|libevent|epoll SIZE SECS CONNS"))
    return 2;
  size_t size = (size_t)atol(argv[3]);
  double secs = atof(argv[4]);
  int nconn = atoi(argv[5]);
  if (size < 1 || secs <= 0 || nconn < 1)
    bench_die("arguments");
  net_server srv;
  net_pick_cpus();
  net_server_start(&srv, argv[0], argv[2], "echo");
  net_pin(net_cpu_client);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  client_conn *cs = (client_conn *)calloc((size_t)nconn, sizeof *cs);
  char *msg = (char *)malloc(size), *buf = (char *)malloc(size);
  if (ep < 0 || !cs || !msg || !buf)
    bench_die("client setup");
  for (size_t i = 0; i < size; i++)
    msg[i] = (char)('a' + i % 26);
  connect_clients(ep, cs, nconn, srv.port);
  net_wait_conns(&srv, (uint64_t)nconn);
  ping_pong(ep, cs, nconn, msg, size, 0.3, buf); /* warm-up */
  usleep(20000);
  double u0, s0, u1, s1;
  double cpu0 = net_server_cpu(&srv, &u0, &s0);
  double t0 = bench_now(), ccpu = bench_cpu();
  long msgs = ping_pong(ep, cs, nconn, msg, size, secs, buf);
  double t = bench_now() - t0;
  ccpu = bench_cpu() - ccpu;
  usleep(20000); /* the server is idle again: its CPU time is exact */
  double cpu = net_server_cpu(&srv, &u1, &s1) - cpu0;
  double user = u1 - u0, sys = s1 - s0;
  for (int i = 0; i < nconn; i++)
    net_close_reset(cs[i].fd);
  net_server_stop(&srv);
  double ushare = user + sys > 0 ? user / (user + sys) : 0;
  printf("%s: %zu-byte messages, %d connections: %ld round trips in %.3f s "
         "= %.0f msgs/s; server CPU %.3f s (user %.2f, sys %.2f) = %.0f "
         "ns/msg; client CPU %.0f%%\n",
         argv[2], size, nconn, msgs, t, (double)msgs / t, cpu, user, sys,
         cpu / (double)msgs * 1e9, ccpu / t * 100);
  printf("RESULT %.3f %.12f %.4f\n", (double)msgs / t, cpu / (double)msgs,
         ushare);
  return 0;
}

static double vals[NET_NLIBS][BENCH_MAX_REPS][8];

static void measure(const char *self, long size, const char *secs,
                    const char *conns) {
  char ss[32];
  snprintf(ss, sizeof ss, "%ld", size);
  char *args[] = {ss, (char *)secs, (char *)conns, NULL};
  /* 5 short runs rather than 3 longer ones: the figures differ by a few
     per cent, less than a busy machine moves them for seconds at a time */
  int reps = bench_reps_default(5);
  net_measure(self, args, reps, 3, vals);
  printf("\n== echo: %s connections, ping-pong of %ld-byte messages, %s s\n",
         conns, size, secs);
  net_rate_cpu_table(reps, vals, "msgs/s", "message");
  printf("   one run: %s --run LIB %ld %s %s   (LIB: evloop libuv libev "
         "libevent epoll)\n",
         self, size, secs, conns);
}

static int driver(int argc, char **argv) {
  const char *secs = argc >= 2 ? argv[1] : "1.5";
  const char *conns = argc >= 3 ? argv[2] : "100";
  printf("# echo: TCP echo server, msgs/s and server CPU per message (%s "
         "[SECS [CONNS]] reproduces this)\n",
         argv[0]);
  net_print_libs();
  net_print_pinning();
  measure(argv[0], 64, secs, conns);
  measure(argv[0], 4096, secs, conns);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--client") == 0)
    return client_only(argc, argv);
  return net_main(argc, argv, child, driver);
}
