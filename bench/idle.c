/* idle.c - the server's memory per idle connection.

   The echo server of net.h (evloop.h, libuv, libev, libevent, hand-written
   epoll) accepts CONNS connections (default 10,000) that then stay idle.
   Its memory is read before (after one warm-up connection has exchanged a
   message and gone, so that buffers allocated on first use are already
   there) and after they are all accepted, and once more after each of them
   has exchanged one 64-byte message (buffers a library keeps per
   connection once it has been used show there):
   - heap: bytes in use by malloc (mallinfo2 uordblks + hblkhd, taken
     inside the server on SIGUSR1 while it is idle), chunk headers included;
   - RssAnon from /proc/PID/status (pages touched, so it also sees memory a
     library would map itself; a coarser figure).
   The figures are the increase divided by CONNS: what the library and the
   server's own per-connection struct cost (libuv: uv_tcp_t inside a
   malloc'd struct; libev: an ev_io plus a pointer in one; libevent: a
   bufferevent; evloop: its transport; epoll: one 16-byte slot per fd in an
   array grown by doubling). Kernel socket memory is not counted.
   Both processes need CONNS + some file descriptors: the driver raises
   RLIMIT_NOFILE (soft, and hard when it may) and skips the benchmark with
   a note if it cannot. */
#include "net.h"

/* Raises RLIMIT_NOFILE to at least n; 0 or -1. */
static int raise_nofile(rlim_t n) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  if (rl.rlim_cur >= n)
    return 0;
  if (rl.rlim_max < n)
    rl.rlim_max = n;
  rl.rlim_cur = n;
  return setrlimit(RLIMIT_NOFILE, &rl);
}

static void echo_once(int fd) {
  char msg[64], buf[64];
  size_t got = 0;
  memset(msg, 'x', sizeof msg);
  if (write(fd, msg, sizeof msg) != (ssize_t)sizeof msg)
    bench_die("client write");
  while (got < sizeof buf) {
    ssize_t r = read(fd, buf + got, sizeof buf - got);
    if (r <= 0)
      bench_die("client read");
    got += (size_t)r;
  }
}

typedef struct snapshot {
  double heap, rss;
} snapshot;

static snapshot take(const net_server *s) {
  snapshot v;
  usleep(50000); /* let the server finish what it was doing */
  v.heap = net_server_heap(s);
  v.rss = net_server_status(s, "RssAnon:");
  return v;
}

/* --run LIB CONNS */
static int child(int argc, char **argv) {
  if (bench_usage(argc != 4, argv[0],
                  "--run evloop|libuv|libev|libevent|epoll CONNS"))
    return 2;
  int nconn = atoi(argv[3]);
  if (nconn < 1)
    bench_die("arguments");
  if (raise_nofile((rlim_t)nconn + 64) != 0)
    bench_die("raising RLIMIT_NOFILE");
  int *fds = (int *)malloc((size_t)nconn * sizeof *fds);
  if (!fds)
    bench_die("malloc");
  net_server srv;
  net_pick_cpus();
  net_server_start(&srv, argv[0], argv[2], "echo");
  net_pin(net_cpu_client);

  int warm = net_connect(srv.port);
  echo_once(warm);
  net_close_reset(warm);
  net_wait_conns(&srv, 1);
  snapshot a = take(&srv);
  for (int i = 0; i < nconn; i++) {
    fds[i] = net_connect(srv.port);
    if (i % 256 == 255) /* keep the accept queue short */
      net_wait_conns(&srv, (uint64_t)i + 2);
  }
  net_wait_conns(&srv, (uint64_t)nconn + 1);
  snapshot b = take(&srv);
  for (int i = 0; i < nconn; i++)
    echo_once(fds[i]);
  snapshot c = take(&srv);
  for (int i = 0; i < nconn; i++)
    net_close_reset(fds[i]);
  net_server_stop(&srv);
  double n = nconn;
  printf("%s: %d idle connections: heap +%.0f B (%.1f B/conn), RssAnon "
         "+%.0f KiB (%.1f B/conn); after one echo each: heap %.1f B/conn, "
         "RssAnon %.1f B/conn\n",
         argv[2], nconn, b.heap - a.heap, (b.heap - a.heap) / n,
         (b.rss - a.rss) / 1024, (b.rss - a.rss) / n, (c.heap - a.heap) / n,
         (c.rss - a.rss) / n);
  printf("RESULT %.2f %.2f %.2f %.2f\n", (b.heap - a.heap) / n,
         (b.rss - a.rss) / n, (c.heap - a.heap) / n, (c.rss - a.rss) / n);
  return 0;
}

static double vals[NET_NLIBS][BENCH_MAX_REPS][8];

static int driver(int argc, char **argv) {
  char *conns = argc >= 2 ? argv[1] : (char *)"10000";
  printf("# idle: server memory per idle connection (%s [CONNS] reproduces "
         "this)\n",
         argv[0]);
  net_print_libs();
  if (raise_nofile((rlim_t)atoi(conns) + 64) != 0) {
    printf("\n== idle: SKIPPED: cannot raise RLIMIT_NOFILE to %d (raise the "
           "hard limit: ulimit -Hn)\n",
           atoi(conns) + 64);
    return 0;
  }
  net_print_pinning();
  char *args[] = {conns, NULL};
  int reps = bench_reps();
  net_measure(argv[0], args, reps, 4, vals);
  printf("\n== idle: %s connections accepted by the echo server, idle\n",
         conns);
  printf("   median of %d runs, each in new processes; the server's memory "
         "increase per\n"
         "   connection: heap = malloc'd bytes in use (mallinfo2), RssAnon "
         "from\n"
         "   /proc/PID/status; 'after echo': once each connection has "
         "exchanged 64 bytes;\n"
         "   evl/x = evloop's heap figure / x's (< 1: evloop uses less)\n",
         reps);
  printf("   %-9s %11s %11s %7s | %11s %11s\n", "library", "heap B/conn",
         "RssAnon B", "evl/x", "after echo", "RssAnon B");
  for (int l = 0; l < NET_NLIBS; l++) {
    if (!net_lib_built[l]) {
      printf("   %-9s (not built)\n", net_lib_names[l]);
      continue;
    }
    double h = net_med(vals, l, reps, 0);
    printf("   %-9s %11.1f %11.1f", net_lib_names[l], h,
           net_med(vals, l, reps, 1));
    if (net_lib_built[0])
      printf(" %7.2f", net_med(vals, 0, reps, 0) / h);
    else
      printf(" %7s", "-");
    printf(" | %11.1f %11.1f\n", net_med(vals, l, reps, 2),
           net_med(vals, l, reps, 3));
  }
  printf("   one run: %s --run LIB %s   (LIB: evloop libuv libev libevent "
         "epoll)\n",
         argv[0], conns);
  return 0;
}

int main(int argc, char **argv) {
  return net_main(argc, argv, child, driver);
}
