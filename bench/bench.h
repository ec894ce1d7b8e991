/* bench.h - helpers shared by the benchmark programs in bench/.

   Every program is both a driver and a worker. Without arguments it runs
   each measurement BENCH_REPS times (default 3), every run in a fresh
   process (fork + exec of itself with "--run ..."), takes the median and
   prints a table. With "--run ..." it does one measurement and prints it,
   ending with a line "RESULT <numbers>" that the driver parses. */
#ifndef BENCH_H_INCLUDED
#define BENCH_H_INCLUDED

/* Every program includes this header (or net.h) first: _GNU_SOURCE has to
   come before any system header, and evloop.h's implementation is compiled
   into each program (with BENCH_DECLS_ONLY, `make check`, only its
   declarations). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifndef HAVE_EVL
#define HAVE_EVL 0
#endif
#if HAVE_EVL
#ifndef BENCH_DECLS_ONLY
#define EVLOOP_IMPLEMENTATION
#endif
#include "../evloop.h"
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HAVE_UV
#define HAVE_UV 0
#endif
#ifndef HAVE_EV
#define HAVE_EV 0
#endif
#if HAVE_UV
#include <uv.h>
#endif
#if HAVE_EV
#include <ev.h>
#endif

#define BENCH_MAX_VALUES 8
#define BENCH_MAX_REPS 15

static inline void bench_die(const char *what) {
  fprintf(stderr, "bench: %s failed\n", what);
  exit(2);
}

/* Monotonic wall clock, seconds. */
static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time of this process (user + system), seconds. */
static inline double bench_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Peak resident set size of this process so far, KiB. */
static inline long bench_maxrss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* splitmix64: the same seeded sequence in every program and library. */
static inline uint64_t bench_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Runs per measurement: BENCH_REPS, else def. */
static inline int bench_reps_default(int def) {
  const char *s = getenv("BENCH_REPS");
  int n = s ? atoi(s) : def;
  if (n < 1)
    n = 1;
  if (n > BENCH_MAX_REPS)
    n = BENCH_MAX_REPS;
  return n;
}

static inline int bench_reps(void) {
  return bench_reps_default(3);
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline double bench_median(const double *v, int n) {
  double tmp[BENCH_MAX_REPS];
  memcpy(tmp, v, (size_t)n * sizeof *tmp);
  qsort(tmp, (size_t)n, sizeof *tmp, bench_cmp_double);
  return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

/* The command line that reproduces one run, for the tables. */
static inline void bench_cmdline(char *buf, size_t size, const char *self,
                                 char *const args[]) {
  size_t len = (size_t)snprintf(buf, size, "%s --run", self);
  for (int i = 0; args[i] && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, " %s", args[i]);
}

/* Runs "self --run args..." in a new process (exec, so nothing, not even
   the peak RSS, is shared with this one) and parses its RESULT line into
   vals[0..nvals). Exits if the run fails. */
static inline void bench_spawn(const char *self, char *const args[],
                               double *vals, int nvals) {
  char *argv[16];
  int argc = 0, fds[2];
  argv[argc++] = (char *)self;
  argv[argc++] = (char *)"--run";
  for (int i = 0; args[i] && argc < 15; i++)
    argv[argc++] = args[i];
  argv[argc] = NULL;
  fflush(stdout);
  if (pipe(fds) != 0)
    bench_die("pipe");
  pid_t pid = fork();
  if (pid < 0)
    bench_die("fork");
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 1);
    close(fds[1]);
    execv("/proc/self/exe", argv);
    execv(self, argv);
    _exit(127);
  }
  close(fds[1]);
  char out[8192];
  size_t len = 0;
  for (;;) {
    ssize_t r = read(fds[0], out + len, sizeof out - 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += (size_t)r;
    if (len == sizeof out - 1)
      break;
  }
  out[len] = '\0';
  close(fds[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      bench_die("waitpid");
  char cmd[512];
  bench_cmdline(cmd, sizeof cmd, self, args);
  const char *res = strstr(out, "RESULT ");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !res) {
    fprintf(stderr, "bench: run failed: %s\n%s", cmd, out);
    exit(1);
  }
  char *p = (char *)res + 7, *end;
  for (int i = 0; i < nvals; i++) {
    vals[i] = strtod(p, &end);
    if (end == p) {
      fprintf(stderr, "bench: bad output from %s:\n%s", cmd, out);
      exit(1);
    }
    p = end;
  }
}

static inline double bench_best(const double *v, int n) {
  double best = v[0];
  for (int i = 1; i < n; i++)
    if (v[i] > best)
      best = v[i];
  return best;
}

/* The table of a throughput benchmark: rate[lib][rep] for the 3 libraries
   evloop, libuv, libev (in that order); unit_scale turns 1/rate into the
   per-operation unit. Ratios are evloop's rate over each library's. */
#define BENCH_MAX_LIBS 8
static inline void
bench_rate_table_n(int nlibs, int reps, const char *rate_name,
                   const char *per_op_name, double unit_scale,
                   const char *const *names, const int *built,
                   double rate[][BENCH_MAX_REPS]) {
  double med[BENCH_MAX_LIBS], best[BENCH_MAX_LIBS];
  printf("   wall clock; median and best of %d runs, each in a new process;\n"
         "   %s and %s are medians; evl/x = evloop's rate / this one's\n"
         "   (> 1: evloop is faster)\n",
         reps, rate_name, per_op_name);
  printf("   %-11s %14s %14s %9s %12s %10s\n", "library", rate_name, "best",
         per_op_name, "evl/x median", "evl/x best");
  for (int l = 0; l < nlibs && l < BENCH_MAX_LIBS; l++) {
    if (!built[l]) {
      printf("   %-11s %14s\n", names[l], "(not built)");
      continue;
    }
    med[l] = bench_median(rate[l], reps);
    best[l] = bench_best(rate[l], reps);
    printf("   %-11s %14.0f %14.0f %9.2f", names[l], med[l], best[l],
           unit_scale / med[l]);
    if (built[0])
      printf(" %12.2f %10.2f\n", med[0] / med[l], best[0] / best[l]);
    else
      printf(" %12s %10s\n", "-", "-");
  }
}

static inline void bench_rate_table(int reps, const char *rate_name,
                                    const char *per_op_name, double unit_scale,
                                    const char *const names[3],
                                    const int built[3],
                                    double rate[3][BENCH_MAX_REPS]) {
  bench_rate_table_n(3, reps, rate_name, per_op_name, unit_scale, names, built,
                     rate);
}

#if HAVE_EVL
/* A new evloop.h loop, or exit. Its debug checks are off (debug = -1) even
   when EVLOOP_DEBUG is set: the figures are those of a production loop. */
static inline evl_loop *bench_evl_loop(void) {
  evl_loop *loop;
  evl_loop_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.debug = -1;
  if (evl_loop_new(&loop, &cfg) != 0)
    bench_die("evl_loop_new");
  return loop;
}
#endif

/* A mode's arguments ("--run ...", "--server ..."): when they are wrong
   (bad), prints "usage: SELF USAGE" and returns 1, else returns 0. */
static inline int bench_usage(int bad, const char *self, const char *usage) {
  if (bad)
    fprintf(stderr, "usage: %s %s\n", self, usage);
  return bad;
}

/* main() of every program: "--run ..." does one measurement (run), without
   it the driver runs the measurements and prints the tables. */
typedef int bench_mode_fn(int argc, char **argv);
static inline int bench_main(int argc, char **argv, bench_mode_fn *run,
                             bench_mode_fn *driver) {
  if (argc >= 2 && strcmp(argv[1], "--run") == 0)
    return run(argc, argv);
  return driver(argc, argv);
}

/* One line telling which libraries this binary was built with. */
static inline void bench_print_libs(void) {
#if HAVE_EVL
  printf("libraries: evloop.h %d.%d.%d (backend: default)",
         EVLOOP_VERSION_MAJOR, EVLOOP_VERSION_MINOR, EVLOOP_VERSION_PATCH);
#else
  printf("libraries: evloop.h SKIPPED (built with EVL=0)");
#endif
#if HAVE_UV
  printf(", libuv %s", uv_version_string());
#else
  printf(", libuv SKIPPED (uv.h or -luv not found at build time)");
#endif
#if HAVE_EV
  printf(", libev %d.%d", ev_version_major(), ev_version_minor());
#else
  printf(", libev SKIPPED (ev.h or -lev not found at build time)");
#endif
  printf("\n");
}

#endif /* BENCH_H_INCLUDED */
