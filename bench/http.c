/* http.c - minimal HTTP/1.1 keep-alive server under wrk: requests per
   second and the server's CPU time per request.

   The same server (net.h, mode http: count the requests ending in
   "\r\n\r\n", answer each with a fixed 51-byte "Hello, World!" response)
   on evloop.h, libuv, libev, libevent and a hand-written epoll loop, each
   in its own process pinned to one core, driven by
   `wrk -tTHREADS -cCONNS -dSECS` (default -t2 -c100 -d3s) on the other
   core. req/s is wrk's figure; the server's CPU time (/proc/PID/schedstat,
   read while it is idle just before wrk starts and just after it exits,
   so wrk's connection set-up and tear-down are inside) is divided by the
   number of requests the server counted. Needs wrk (Debian: apt-get
   install wrk); without it the benchmark says SKIPPED. */
#include "net.h"

/* Runs wrk with its stdout into out (NUL-terminated); returns its exit
   status, or -1 if it could not be started. */
static int run_wrk(char *const argv[], char *out, size_t size) {
  int fds[2], status;
  if (pipe2(fds, O_CLOEXEC) != 0)
    bench_die("pipe");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0)
    bench_die("fork");
  if (pid == 0) {
    dup2(fds[1], 1);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(fds[1]);
  size_t len = 0;
  for (;;) {
    ssize_t r = read(fds[0], out + len, size - 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += (size_t)r;
    if (len == size - 1)
      break;
  }
  out[len] = '\0';
  close(fds[0]);
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      bench_die("waitpid");
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int have_wrk(void) {
  return system("command -v wrk >/dev/null 2>&1") == 0;
}

/* --run LIB SECS CONNS THREADS */
static int child(int argc, char **argv) {
  if (bench_usage(argc != 6, argv[0],
                  "--run evloop|libuv|libev|libevent|epoll SECS CONNS THREADS"))
    return 2;
  char dur[32], conns[32], threads[32], url[64], out[8192];
  snprintf(dur, sizeof dur, "-d%ss", argv[3]);
  snprintf(conns, sizeof conns, "-c%s", argv[4]);
  snprintf(threads, sizeof threads, "-t%s", argv[5]);
  net_server srv;
  net_pick_cpus();
  net_server_start(&srv, argv[0], argv[2], "http");
  net_pin(net_cpu_client); /* wrk inherits it */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", srv.port);
  char *wrk[] = {(char *)"wrk", threads, conns, dur, url, NULL};
  usleep(20000);
  double u0, s0, u1, s1;
  double cpu0 = net_server_cpu(&srv, &u0, &s0);
  uint64_t reqs0 = srv.st->reqs;
  int rc = run_wrk(wrk, out, sizeof out);
  usleep(20000); /* the server is idle again: its CPU time is exact */
  double cpu = net_server_cpu(&srv, &u1, &s1) - cpu0;
  double reqs = (double)(srv.st->reqs - reqs0), user = u1 - u0, sys = s1 - s0;
  net_server_stop(&srv);
  const char *rps_line = strstr(out, "Requests/sec:");
  double rps = rps_line ? strtod(rps_line + 13, NULL) : 0;
  if (rc != 0 || rps <= 0 || reqs <= 0) {
    fprintf(stderr, "wrk failed (exit %d, %.0f requests answered):\n%s", rc,
            reqs, out);
    return 1;
  }
  const char *errs = strstr(out, "Socket errors:");
  const char *non2xx = strstr(out, "Non-2xx");
  if (errs || non2xx)
    printf("%s: wrk reports errors:\n%s", argv[2], out);
  double ushare = user + sys > 0 ? user / (user + sys) : 0;
  printf("%s: wrk %s %s %s: %.0f req/s; the server answered %.0f requests "
         "with %.3f s of CPU (user %.2f, sys %.2f) = %.0f ns/req\n",
         argv[2], threads, conns, dur, rps, reqs, cpu, user, sys,
         cpu / reqs * 1e9);
  printf("RESULT %.3f %.12f %.4f\n", rps, cpu / reqs, ushare);
  return 0;
}

static double vals[NET_NLIBS][BENCH_MAX_REPS][8];

static int driver(int argc, char **argv) {
  char *secs = argc >= 2 ? argv[1] : (char *)"3";
  char *conns = argc >= 3 ? argv[2] : (char *)"100";
  char *threads = argc >= 4 ? argv[3] : (char *)"2";
  printf("# http: HTTP/1.1 keep-alive server under wrk, req/s and server "
         "CPU per request (%s [SECS [CONNS [THREADS]]] reproduces this)\n",
         argv[0]);
  net_print_libs();
  if (!have_wrk()) {
    printf("\n== http: SKIPPED: wrk is not installed (Debian: apt-get "
           "install wrk)\n");
    return 0;
  }
  net_print_pinning();
  char *args[] = {secs, conns, threads, NULL};
  int reps = bench_reps();
  net_measure(argv[0], args, reps, 3, vals);
  printf("\n== http: wrk -t%s -c%s -d%ss, GET / answered with a fixed "
         "51-byte response\n",
         threads, conns, secs);
  net_rate_cpu_table(reps, vals, "req/s", "request");
  printf("   one run: %s --run LIB %s %s %s   (LIB: evloop libuv libev "
         "libevent epoll)\n",
         argv[0], secs, conns, threads);
  return 0;
}

int main(int argc, char **argv) {
  return net_main(argc, argv, child, driver);
}
