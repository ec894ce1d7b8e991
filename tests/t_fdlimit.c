/* The fd-exhaustion sweep: each scenario of sweep_test.h runs under
   RLIMIT_NOFILE from "no fd free at all" up to enough, in a child process
   per limit (the limit stays there). The loop is made under the limit too,
   so every fd the library opens is reached in turn: the backend's (epoll,
   its wake-up eventfd or self-pipe), sockets, accepted connections and the
   spare fd kept for EMFILE on accept, pipes, pidfds, the signal
   self-pipes. Each run must end cleanly: errors are EVL_EMFILE (or what a
   peer's failure looks like), no future pending forever, no hang; then,
   the limit raised back, the same scenario on the same loop succeeds in
   full; and after evl_loop_free no fd is left open and no child is left
   unreaped. Plus the regression test of issue 11's bug 4. */
#include "test.h"

#ifdef _WIN32
/* Windows has no RLIMIT_NOFILE (handles are not numbered from 0 up to a
   limit): what can be checked is that a loop gives its handles back. */
TEST(loop_gives_its_handles_back) {
  int before;
  evl_loop *loop = test_open();
  test_close(loop); /* the process-wide set-up (Winsock) stays */
  before = test_count_fds();
  loop = test_open();
  test_close(loop);
  CHECK_EQ(test_count_fds(), before);
}

TESTS_BEGIN
T(loop_gives_its_handles_back)
T_SKIP(fd_exhaustion_sweep, "Windows: no RLIMIT_NOFILE, fork or fd numbers")
TESTS_END
#else
#include "proc_test.h"
#include <sys/resource.h>

static char g_sweep_where[96];
static int g_sweep_failing;

#include "sweep_test.h"

static void quiet_handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)loop;
  (void)ctx;
  (void)arg;
}

static int sweep_fault_err(int err) {
  /* A name lookup that cannot open its files says so in its own terms. */
  return err == EVL_EMFILE || err == EVL_ENFILE || err == EVL_EAI_FAIL ||
         err == EVL_EAI_AGAIN || err == EVL_EAI_NONAME || err == EVL_EAI_MEMORY;
}

/* The limit that leaves exactly `free` fd numbers open to new fds: the
   number of the free-th fd not open now (fds inherited from the runner
   may sit anywhere). */
static int limit_for(int free) {
  int fd;
  for (fd = 0; fd < 4096; fd++)
    if (fcntl(fd, F_GETFD) < 0 && free-- == 0)
      return fd;
  return 4096;
}

/* Signals: each loop's slot keeps its self-pipe for the rest of the
   process once used (documented). The runs do not make it beforehand (its
   making must meet the limit too); after a run the slot is used once more,
   and the count must be what it was plus that pipe (g_slot_fds).
   A kqueue loop takes no slot, but libkqueue's kqueue() needs three fds
   (an epoll fd and a pipe that tells it the kqueue fd was closed) where
   poll needs one: with two free, kqueue() fails with EMFILE and the loop
   falls back to poll (documented), which does take a slot for signals.
   So a run whose loop fell back warms a poll loop's slot too, and counts
   its pipe (g_fallback_slot_fds). */
static int g_slot_fds = -1, g_fallback_slot_fds = -1;
static void warm_signal_slot(evl_backend backend) {
  evl_loop_config cfg;
  evl_loop *loop;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = backend;
  if (evl_loop_new(&loop, &cfg) == EVL_ENOTSUP)
    return; /* a backend this build leaves out keeps no slot */
  evl_loop_free(loop);
  loop = test_open_with(&cfg);
#ifndef EVLOOP_NO_PROCESS
  {
    static int hits;
    if (evl_add_signal_handler(loop, SIGUSR2, sc_sig, &hits) == 0)
      (void)evl_remove_signal_handler(loop, SIGUSR2);
  }
#endif
  test_close(loop);
}
/* 1 if the loop runs on poll because its backend could not start. */
static int fell_back(evl_loop *loop) {
  return strstr(evl_backend_name(loop), "unavailable") != NULL;
}

/* One run, in this (child) process: the loop and the scenario under a
   limit of `limit` fds, then the limit back and the scenario again. Exits
   0 if all held, and writes the failing part's score to `out`. */
static void fd_run(int (*work)(evl_loop *, void *), void *arg, int full,
                   int limit, int out) {
  struct rlimit old, lim;
  evl_loop_config cfg;
  evl_loop *loop = NULL;
  int before, rc, got = -1, w, fell = 0;
  pid_t z;
  alarm(30); /* a hang is a failure */
  before = test_count_fds();
  CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
  lim = old;
  lim.rlim_cur = (rlim_t)limit;
  CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  g_sweep_failing = 1;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = test_backend();
  rc = evl_loop_new(&loop, &cfg);
  if (rc != 0) {
    if (!sweep_fault_err(rc))
      sweep_fail("evl_loop_new", rc, "failed");
    CHECK(loop == NULL);
  } else {
    evl_set_exception_handler(loop, quiet_handler, NULL);
    fell = fell_back(loop);
    got = work(loop, arg);
  }
  CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
  g_sweep_failing = 0;
  if (loop) {
    int again = work(loop, arg);
    if (again < full) {
      fprintf(stderr, "  %s: with fds back the work reached %d of %d\n",
              g_sweep_where, again, full);
      CHECK(again >= full);
    }
    test_close(loop);
  }
  warm_signal_slot(test_backend());
  if (fell)
    warm_signal_slot(EVL_BACKEND_POLL);
  if (test_count_fds() != before + g_slot_fds + fell * g_fallback_slot_fds) {
    fprintf(stderr, "  %s: %d fds open after, %d before (+%d%s)\n",
            g_sweep_where, test_count_fds(), before, g_slot_fds,
            fell ? ", fell back to poll" : "");
    CHECK(0);
  }
  z = waitpid(-1, &w, WNOHANG);
  if (z != -1 || errno != ECHILD) {
    fprintf(stderr, "  %s: a child left unreaped (%d)\n", g_sweep_where,
            (int)z);
    CHECK(0);
  }
  CHECK(write(out, &got, sizeof got) == (ssize_t)sizeof got);
  exit(0);
}

/* The sweep: limits from the lowest (not one fd free) up, each in a child,
   until the scenario succeeds under the limit twice in a row. Returns the
   number of runs. */
static int fd_sweep(const char *name, int (*work)(evl_loop *, void *),
                    void *arg, int full) {
  int nfree, runs = 0, ok_in_a_row = 0;
  double t0 = test_now();
  if (g_slot_fds < 0) { /* what the signal slots keep: in a child */
    int p[2], st, n[2];
    pid_t pid;
    CHECK(pipe(p) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      n[0] = test_count_fds();
      warm_signal_slot(test_backend());
      n[1] = test_count_fds();
      warm_signal_slot(EVL_BACKEND_POLL);
      n[1] = test_count_fds() - n[1];
      n[0] = test_count_fds() - n[0] - n[1];
      _exit(write(p[1], n, sizeof n) == (ssize_t)sizeof n ? 0 : 1);
    }
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(read(p[0], n, sizeof n) == (ssize_t)sizeof n);
    g_slot_fds = n[0];
    g_fallback_slot_fds = n[1];
    close(p[0]);
    close(p[1]);
  }
  for (nfree = 0; nfree < 96 && ok_in_a_row < 2; nfree++) {
    int p[2], st = 0, got = -1, limit = limit_for(nfree);
    pid_t pid;
    snprintf(g_sweep_where, sizeof g_sweep_where, "%s, limit %d (%d free)",
             name, limit, nfree);
    CHECK(pipe(p) == 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      /* the pipe's end moves out of the way of the numbers under test */
      if (p[1] < 900) {
        CHECK(dup2(p[1], 900) == 900);
        close(p[1]);
        p[1] = 900;
      }
      fd_run(work, arg, full, limit, p[1]);
    }
    close(p[1]);
    CHECK(waitpid(pid, &st, 0) == pid);
    if (read(p[0], &got, sizeof got) != (ssize_t)sizeof got)
      got = -1;
    close(p[0]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "  %s: the run %s %d\n", g_sweep_where,
              WIFSIGNALED(st) ? "was killed by signal" : "exited with",
              WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      CHECK(0);
    }
    runs++;
    ok_in_a_row = got >= full ? ok_in_a_row + 1 : 0;
  }
  CHECK(ok_in_a_row == 2); /* enough fds were reached */
  printf("  note: %s: 0..%d fds free, %d runs, %.1f s\n", name, nfree - 1, runs,
         test_now() - t0);
  return runs;
}

static sc_net g_net;

#ifndef EVLOOP_NO_PROCESS
/* ---- regression test (issue 11, bug 4) ---------------------------------- */

/* A child spawned while the fd table is full: pidfd_open fails with
   EMFILE, and so does the pipe of the SIGCHLD fallback. It used to be
   never reaped (process_exited never ran, even once fds were free); now
   a timer watches it until a pidfd or SIGCHLD can. Its stdio is
   inherited, so that the spawn itself needs no fd. */
TEST(child_spawned_with_a_full_fd_table_is_reaped) {
  static const char *const argv[] = {"sleep", "0.05", NULL};
  evl_subprocess_options opts;
  struct rlimit lim;
  evl_loop *loop = test_open();
  evl_future *f;
  evl_subprocess *p;
  sc_sub st;
  int fill[64], n = 0, pid, err;
  double end;
  evl_set_exception_handler(loop, quiet_handler, NULL);
  memset(&opts, 0, sizeof opts);
  opts.stdin_mode = opts.stdout_mode = opts.stderr_mode = EVL_STDIO_INHERIT;
  memset(&st, 0, sizeof st);
  /* No fd free: the limit at the lowest free number, the rest filled. */
  CHECK(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  lim.rlim_cur = (rlim_t)limit_for(0);
  CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  while (n < 64 && (fill[n] = dup(0)) >= 0)
    n++;
  CHECK(dup(0) < 0 && errno == EMFILE);
  f = evl_subprocess_exec(loop, &sc_sub_proto, &st, argv, &opts);
  CHECK(f != NULL);
  end = test_now() + 5.0;
  while (!evl_future_done(f) && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  err = evl_future_error(f);
  if (err == EVL_EMFILE) /* a spawn that needs an fd (fork+exec): clean */
    SKIP("this build's spawn needs an fd of its own");
  CHECK_EQ(err, 0);
  p = (evl_subprocess *)evl_future_result(f);
  pid = evl_subprocess_get_pid(p);
  evl_future_release(f);
  /* fds free again: the exit must be seen, the child reaped */
  while (n > 0)
    close(fill[--n]);
  end = test_now() + 5.0;
  while (!st.lost && test_now() < end)
    (void)evl_run_once(loop, 0.01);
  CHECK_EQ(st.exited, 1);
  CHECK_EQ(st.lost, 1);
  CHECK(gone(pid));
  test_close(loop);
}
#else
TEST(child_spawned_with_a_full_fd_table_is_reaped) {
  SKIP("built with EVLOOP_NO_PROCESS: no subprocesses");
}
#endif

SWEEP_TESTS(fdlimit, fd_sweep)
TESTS_BEGIN
T(child_spawned_with_a_full_fd_table_is_reaped)
T(fdlimit_core)
T(fdlimit_streams)
T(fdlimit_protocols_sendfile)
T(fdlimit_udp)
T(fdlimit_local)
T(fdlimit_subprocess)
T(fdlimit_signals)
T(fdlimit_compose)
TESTS_END
#endif /* _WIN32 */
