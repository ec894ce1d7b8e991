/* Soak: one loop under mixed load for SOAK_SECONDS (argv[1], default 60),
   built with ASan+UBSan by `make soak` (and with TSan, threaded part
   only: soak --threaded-only N). Not a t_*.c file: the normal suite does
   not run it.
     - 200 echo clients over TCP to an echo server on the same loop, each
       sending messages of random size (1 B to 64 KiB, random bytes) and
       checking every echoed byte; every 20 messages on average a client
       closes and connects again;
     - 10,000 timers a second armed (random delays up to 50 ms), half of
       them cancelled again;
     - subprocesses: 2 chains of `cat` through evl_process_communicate with
       random input (up to 256 KiB), the output checked;
     - SIGUSR2 sent to the process every 20 ms, through a signal handler;
     - evl_call_soon_threadsafe from 4 threads;
     - executor jobs (a checksum of a random buffer, checked on the loop).
   At the end everything stops and is freed, and it checks: every byte
   intact (no mismatch, nothing missing), every timer fired or cancelled,
   every threadsafe call run, every job and child accounted for, no child
   left (no zombie), the fd count back to its start and the RSS at most
   RSS_TOLERANCE_MB above what it was after a warm-up (the first tenth of
   the run, 5 s at least; ASan's allocator keeps freed memory in quarantine, so
   RSS is compared to a warm state, not to the empty start). Prints its totals;
   exits 0 only if every check holds. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NCLIENTS 200
#define MAXMSG 65536
#define TIMERS_PER_SEC 10000
#define NCHAINS 2
#define NTHREADS 4
#define MAXJOBS 8
#define RSS_TOLERANCE_MB 32

/* ASan keeps freed memory in a quarantine (256 MiB by default) that fills
   over the run: a smaller one lets the RSS check see real growth. */
#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif
#ifdef SOAK_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "quarantine_size_mb=32";
}
#endif

static evl_loop *loop;
static int stopping, threaded_only, failures;
static double t_end;

#define SOAK_CHECK(c)                                                          \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "soak: %s:%d: check failed: %s\n", __FILE__, __LINE__,   \
              #c);                                                             \
      failures++;                                                              \
    }                                                                          \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: each user its own state */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}
static void fill(unsigned char *p, size_t n, uint64_t *s) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (unsigned char)(rnd(s) >> 56);
}

static int not_dot(const struct dirent *e) {
  return e->d_name[0] != '.';
}

/* The open fds: the entries of /proc/self/fd but "." and "..", less the
   one scandir() read the directory through. */
static int count_fds(void) {
  struct dirent **list;
  int i, n = scandir("/proc/self/fd", &list, not_dot, NULL);
  if (n < 0)
    return -1;
  for (i = 0; i < n; i++)
    free(list[i]);
  free(list);
  return n - 1;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (!f)
    return -1;
  if (fscanf(f, "%ld %ld", &pages, &res) != 2)
    res = -1;
  fclose(f);
  return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- the echo server -------------------------------------------------- */

static unsigned long srv_conns;
static void s_made(evl_transport *t, void *u) {
  (void)t;
  (void)u;
  srv_conns++;
}
static void s_data(evl_transport *t, const void *d, size_t n, void *u) {
  (void)u;
  (void)evl_transport_write(t, d, n);
}
static void s_pause(evl_transport *t, void *u) {
  (void)u;
  evl_transport_pause_reading(t);
}
static void s_resume(evl_transport *t, void *u) {
  (void)u;
  evl_transport_resume_reading(t);
}
static const evl_protocol server_proto = {s_made,   s_data, NULL, NULL, s_pause,
                                          s_resume, NULL,   NULL, NULL, NULL};

/* ---- echo clients ----------------------------------------------------- */

typedef struct client {
  evl_transport *t;
  uint64_t seed;
  unsigned char *msg;
  size_t len, got;
  int connecting;
} client;

static client clients[NCLIENTS];
static int server_port, clients_live;
static unsigned long long bytes_echoed, msgs_echoed, mismatches, reconnects,
    conn_errors;

static void client_connect(client *c);

static void send_msg(client *c) {
  c->len = 1 + (size_t)(rnd(&c->seed) % MAXMSG);
  fill(c->msg, c->len, &c->seed);
  c->got = 0;
  if (evl_transport_write(c->t, c->msg, c->len) != 0)
    conn_errors++;
}

static void c_made(evl_transport *t, void *u) {
  client *c = (client *)u;
  c->t = t;
  c->connecting = 0;
  clients_live++;
  send_msg(c);
}
static void c_data(evl_transport *t, const void *d, size_t n, void *u) {
  client *c = (client *)u;
  if (c->got + n > c->len || memcmp(c->msg + c->got, d, n) != 0) {
    mismatches++;
    evl_transport_abort(t);
    return;
  }
  c->got += n;
  if (c->got < c->len)
    return;
  bytes_echoed += c->len;
  msgs_echoed++;
  if (stopping || rnd(&c->seed) % 20 == 0)
    evl_transport_close(t); /* connect again (unless stopping) */
  else
    send_msg(c);
}
static void c_lost(evl_transport *t, int err, void *u) {
  client *c = (client *)u;
  (void)t;
  c->t = NULL;
  clients_live--;
  if (err)
    conn_errors++;
  else if (c->got != c->len)
    mismatches++; /* closed with an echo missing */
  if (!stopping) {
    reconnects++;
    client_connect(c);
  }
}
static const evl_protocol client_proto = {c_made, c_data, NULL, c_lost, NULL,
                                          NULL,   NULL,   NULL, NULL,   NULL};

static void connect_done(evl_future *f, void *arg) {
  client *c = (client *)arg;
  if (evl_future_error(f)) {
    conn_errors++;
    c->connecting = 0;
  }
  evl_future_release(f);
}
static void client_connect(client *c) {
  evl_future *f = evl_create_connection(loop, &client_proto, c, "127.0.0.1",
                                        server_port, NULL);
  c->connecting = 1;
  if (!f || evl_future_add_done_callback(f, connect_done, c) != 0) {
    conn_errors++;
    c->connecting = 0;
    evl_future_release(f);
  }
}

/* ---- timers ----------------------------------------------------------- */

#define RING 4096
static evl_handle ring[RING];
static size_t ring_pos;
static unsigned long long timers_armed, timers_fired, timers_cancelled;
static double last_tick;
static uint64_t timer_seed = 0x9e3779b97f4a7c15ULL;

static void timer_fired(evl_loop *l, void *arg) {
  (void)l;
  (void)arg;
  timers_fired++;
}
static void timer_tick(evl_loop *l, void *arg) {
  double t = now();
  long n = (long)((t - last_tick) * TIMERS_PER_SEC), i;
  (void)arg;
  if (n > TIMERS_PER_SEC / 10)
    n = TIMERS_PER_SEC / 10;
  last_tick += (double)n / TIMERS_PER_SEC;
  for (i = 0; i < n; i++) {
    evl_handle h = evl_call_later(l, (double)(rnd(&timer_seed) % 50000) / 1e6,
                                  timer_fired, NULL);
    if (h < 0) {
      failures++;
      continue;
    }
    timers_armed++;
    ring[ring_pos++ % RING] = h;
    if (i % 2) { /* cancel one armed earlier (maybe fired already) */
      size_t k = (ring_pos - 1 - rnd(&timer_seed) % 64) % RING;
      if (evl_handle_cancel(l, ring[k]) == 1)
        timers_cancelled++;
    }
  }
  if (!stopping)
    evl_call_later(l, 0.005, timer_tick, NULL);
}

/* ---- subprocesses ----------------------------------------------------- */

typedef struct chain {
  evl_process *p;
  unsigned char *in;
  size_t len;
  uint64_t seed;
  int busy;
} chain;
static chain chains[NCHAINS];
static unsigned long long children, child_bytes, child_errors;

static void chain_start(chain *ch);
static void communicated(evl_future *f, void *arg) {
  chain *ch = (chain *)arg;
  if (evl_future_error(f)) {
    child_errors++;
  } else {
    evl_communicate *r = (evl_communicate *)evl_future_result(f);
    if (r->returncode != 0 || !r->out || r->out->len != ch->len ||
        (ch->len && memcmp(r->out->data, ch->in, ch->len) != 0))
      mismatches++;
    else
      child_bytes += ch->len;
    children++;
  }
  evl_future_release(f);
  evl_process_free(ch->p);
  ch->p = NULL;
  ch->busy = 0;
  if (!stopping)
    chain_start(ch);
}
static void spawned(evl_future *f, void *arg) {
  chain *ch = (chain *)arg;
  evl_future *c;
  if (evl_future_error(f)) {
    child_errors++;
    ch->busy = 0;
    evl_future_release(f);
    return;
  }
  ch->p = (evl_process *)evl_future_result(f);
  evl_future_release(f);
  c = evl_process_communicate(ch->p, ch->in, ch->len);
  if (!c || evl_future_add_done_callback(c, communicated, ch) != 0) {
    child_errors++;
    evl_future_release(c);
  }
}
static void chain_start(chain *ch) {
  static const char *const argv[] = {"cat", NULL};
  evl_future *f;
  ch->len = (size_t)(rnd(&ch->seed) % (256 * 1024));
  fill(ch->in, ch->len, &ch->seed);
  ch->busy = 1;
  f = evl_create_subprocess_exec(loop, argv, NULL, 0);
  if (!f || evl_future_add_done_callback(f, spawned, ch) != 0) {
    child_errors++;
    ch->busy = 0;
    evl_future_release(f);
  }
}

/* ---- signals ---------------------------------------------------------- */

static unsigned long long sigs_sent, sigs_seen;
static void on_sig(evl_loop *l, int signum, void *arg) {
  (void)l;
  (void)signum;
  (void)arg;
  sigs_seen++;
}
static void sig_tick(evl_loop *l, void *arg) {
  (void)arg;
  if (kill(getpid(), SIGUSR2) == 0)
    sigs_sent++;
  if (!stopping)
    evl_call_later(l, 0.02, sig_tick, NULL);
}

/* ---- call_soon_threadsafe from threads -------------------------------- */

static unsigned long long ts_sent[NTHREADS], ts_run;
static int threads_stop;
static void ts_cb(evl_loop *l, void *arg) {
  (void)l;
  (void)arg;
  ts_run++;
}
static void *ts_thread(void *arg) {
  unsigned long long *sent = (unsigned long long *)arg;
  struct timespec pause = {0, 200000};
  while (!__atomic_load_n(&threads_stop, __ATOMIC_ACQUIRE)) {
    int i;
    for (i = 0; i < 64; i++)
      if (evl_call_soon_threadsafe(loop, ts_cb, NULL) == 0)
        (*sent)++;
    nanosleep(&pause, NULL);
  }
  return NULL;
}

/* ---- executor jobs ---------------------------------------------------- */

typedef struct job {
  unsigned char buf[4096];
  uint64_t want;
} job;
static int jobs_in_flight;
static unsigned long long jobs_done, job_errors;
static uint64_t job_seed = 12345;

static uint64_t sum(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  size_t i;
  for (i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}
static int job_fn(void *arg, void **result) {
  job *j = (job *)arg;
  *result = (void *)(uintptr_t)(sum(j->buf, sizeof j->buf) & 0xffffffffu);
  return 0;
}
static void job_done(evl_future *f, void *arg) {
  job *j = (job *)arg;
  if (evl_future_error(f))
    job_errors++;
  else if ((uintptr_t)evl_future_result(f) != (j->want & 0xffffffffu))
    mismatches++;
  else
    jobs_done++;
  free(j);
  jobs_in_flight--;
  evl_future_release(f);
}
static void job_tick(evl_loop *l, void *arg) {
  (void)arg;
  while (!stopping && jobs_in_flight < MAXJOBS) {
    job *j = (job *)malloc(sizeof *j);
    evl_future *f;
    if (!j)
      break;
    fill(j->buf, sizeof j->buf, &job_seed);
    j->want = sum(j->buf, sizeof j->buf);
    f = evl_run_in_executor(l, NULL, job_fn, j, NULL);
    if (!f || evl_future_add_done_callback(f, job_done, j) != 0) {
      job_errors++;
      evl_future_release(f);
      free(j);
      break;
    }
    jobs_in_flight++;
  }
  if (!stopping)
    evl_call_later(l, 0.001, job_tick, NULL);
}

/* ---- the run ---------------------------------------------------------- */

static long rss_warm = -1;
static double t_warm;
static void warm_check(evl_loop *l, void *arg) {
  (void)l;
  (void)arg;
  rss_warm = rss_kb();
}

/* Runs the loop until cond() or the deadline; 1 if cond() holds. */
static int run_until(int (*cond)(void), double seconds) {
  double end = now() + seconds;
  while (!cond() && now() < end)
    evl_run_once(loop, 0.01);
  return cond();
}
static int all_quiet(void) {
  int i;
  for (i = 0; i < NCLIENTS; i++)
    if (clients[i].t || clients[i].connecting)
      return 0;
  for (i = 0; i < NCHAINS; i++)
    if (chains[i].busy)
      return 0;
  return jobs_in_flight == 0 && timers_fired + timers_cancelled == timers_armed;
}
static unsigned long long ts_total(void) {
  unsigned long long t = 0;
  int i;
  for (i = 0; i < NTHREADS; i++)
    t += ts_sent[i];
  return t;
}
static int ts_all_run(void) {
  return ts_run == ts_total();
}
static unsigned long long sigs_target;
static int sig_seen_last(void) {
  return sigs_seen > sigs_target;
}

static void stop_cb(evl_loop *l, void *arg) {
  (void)arg;
  evl_stop(l);
}

int main(int argc, char **argv) {
  double seconds = 60, t0;
  int i, fd0, fd1, zombies = 0, rc;
  long rss_end;
  pthread_t th[NTHREADS];
  evl_future *f;
  evl_server *srv = NULL;
  if (argc > 1 && strcmp(argv[1], "--threaded-only") == 0) {
    threaded_only = 1;
    argc--;
    argv++;
  }
  if (argc > 1)
    seconds = atof(argv[1]);
  if (!(seconds > 0))
    seconds = 60;
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would end the run: it must not */
  /* A loop that watched a signal leaves its slot's self-pipe open for the
     rest of the process (evloop.h says so): take the slot first, so that
     the fds counted are the ones that must come back. */
  if (evl_loop_new(&loop, NULL) != 0 ||
      evl_add_signal_handler(loop, SIGUSR2, on_sig, NULL) != 0)
    return 1;
  evl_loop_free(loop);
  fd0 = count_fds();
  t0 = now();
  if (evl_loop_new(&loop, NULL) != 0)
    return 1;
  printf("soak: %s%.0f s on %s\n", threaded_only ? "threaded part, " : "",
         seconds, evl_backend_name(loop));
  fflush(stdout);

  if (!threaded_only) {
    f = evl_create_server(loop, &server_proto, NULL, "127.0.0.1", 0, NULL);
    if (!f || evl_run_until_complete(loop, f) != 0)
      return 1;
    srv = (evl_server *)evl_future_result(f);
    evl_future_release(f);
    server_port = evl_server_port(srv);
    for (i = 0; i < NCLIENTS; i++) {
      clients[i].seed = 0x1234567ULL * (uint64_t)(i + 1);
      clients[i].msg = (unsigned char *)malloc(MAXMSG);
      client_connect(&clients[i]);
    }
    for (i = 0; i < NCHAINS; i++) {
      chains[i].seed = 777ULL * (uint64_t)(i + 1);
      chains[i].in = (unsigned char *)malloc(256 * 1024);
      chain_start(&chains[i]);
    }
    if (evl_add_signal_handler(loop, SIGUSR2, on_sig, NULL) != 0)
      return 1;
    evl_call_soon(loop, sig_tick, NULL);
  }
  last_tick = now();
  evl_call_soon(loop, timer_tick, NULL);
  evl_call_soon(loop, job_tick, NULL);
  for (i = 0; i < NTHREADS; i++)
    pthread_create(&th[i], NULL, ts_thread, &ts_sent[i]);

  t_warm = seconds / 10 < 5 ? (seconds < 10 ? seconds / 2 : 5) : seconds / 10;
  evl_call_later(loop, t_warm, warm_check, NULL);
  t_end = seconds;
  evl_call_later(loop, seconds, stop_cb, NULL);
  rc = evl_run_forever(loop);
  SOAK_CHECK(rc == 0 || rc == EVL_ESTOPPED);

  /* Stop: no new work; what runs finishes. */
  stopping = 1;
  __atomic_store_n(&threads_stop, 1, __ATOMIC_RELEASE);
  for (i = 0; i < NTHREADS; i++)
    pthread_join(th[i], NULL);
  SOAK_CHECK(run_until(ts_all_run, 20));
  for (i = 0; i < NCLIENTS; i++)
    if (clients[i].t && clients[i].got == clients[i].len)
      evl_transport_close(clients[i].t); /* between messages */
  SOAK_CHECK(run_until(all_quiet, 30));
  if (!threaded_only) {
    sigs_target = sigs_seen;
    kill(getpid(), SIGUSR2); /* the last one is delivered too */
    SOAK_CHECK(run_until(sig_seen_last, 10));
    evl_remove_signal_handler(loop, SIGUSR2);
    evl_server_free(srv);
    run_until(all_quiet, 1);
  }
  evl_loop_free(loop);
  while (waitpid(-1, NULL, WNOHANG) > 0)
    zombies++; /* a child nobody reaped */
  for (i = 0; i < NCLIENTS; i++)
    free(clients[i].msg);
  for (i = 0; i < NCHAINS; i++)
    free(chains[i].in);
  fd1 = count_fds();
  rss_end = rss_kb();

  printf("soak: %.1f s; echo: %llu messages, %llu bytes (%.1f MB/s), %llu "
         "reconnects, %lu server connections, %llu mismatches, %llu "
         "connection errors\n",
         now() - t0, msgs_echoed, bytes_echoed,
         (double)bytes_echoed / 1e6 / seconds, reconnects, srv_conns,
         mismatches, conn_errors);
  printf("soak: timers: %llu armed (%.0f/s), %llu fired, %llu cancelled\n",
         timers_armed, (double)timers_armed / seconds, timers_fired,
         timers_cancelled);
  printf("soak: children: %llu through communicate, %llu bytes, %llu errors; "
         "signals: %llu sent, %llu handler calls\n",
         children, child_bytes, child_errors, sigs_sent, sigs_seen);
  printf("soak: threadsafe calls: %llu sent from %d threads, %llu run; "
         "executor jobs: %llu, %llu errors\n",
         ts_total(), NTHREADS, ts_run, jobs_done, job_errors);
  printf("soak: fds %d -> %d; RSS %ld KiB after warm-up -> %ld KiB at the "
         "end (tolerance %d MiB); zombies %d\n",
         fd0, fd1, rss_warm, rss_end, RSS_TOLERANCE_MB, zombies);

  SOAK_CHECK(mismatches == 0);
  SOAK_CHECK(conn_errors == 0);
  SOAK_CHECK(timers_fired + timers_cancelled == timers_armed);
  SOAK_CHECK(timers_armed > 0 && jobs_done > 0 && ts_run > 0);
  SOAK_CHECK(job_errors == 0);
  SOAK_CHECK(ts_run == ts_total());
  if (!threaded_only) {
    SOAK_CHECK(msgs_echoed > 0 && children > 0 && sigs_seen > 0);
    SOAK_CHECK(child_errors == 0);
    SOAK_CHECK(sigs_seen <= sigs_sent + 1);
  }
  SOAK_CHECK(zombies == 0);
  SOAK_CHECK(fd1 == fd0);
  SOAK_CHECK(rss_warm > 0 && rss_end <= rss_warm + RSS_TOLERANCE_MB * 1024);
  printf("soak: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
