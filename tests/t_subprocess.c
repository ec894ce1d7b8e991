/* Subprocesses, low level: evl_subprocess_exec / evl_subprocess_shell with
   an evl_subprocess_protocol. Callback order, returncodes and signals,
   stdio modes, cwd and env, spawn errors, inherited fds, reaping (no
   zombie, a child reaped by other code), many children, loop close.
   Only /bin/sh and coreutils run as children; on Windows the test program
   itself (TEST_CHILD in test.h) and cmd.exe for the shell. */
#define _GNU_SOURCE 1 /* realpath, mkdtemp under -std=c99 */
#include "test.h"

#ifndef EVLOOP_NO_PROCESS
#include "net_test.h"
#include "proc_test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Open fds or handles now (the counts compared must be available). */
static int count_fds(void) {
  int n = test_count_fds();
  CHECK(n >= 0);
  return n;
}

/* What one child's protocol saw. Order violations are recorded in `why`
   (the first one) and checked by the test, not in the callback. */
typedef struct sp {
  evl_subprocess *p;      /* cleared by connection_lost */
  evl_subprocess *made_p; /* as connection_made saw it, never cleared */
  int pid, made, exited, lost, lost_err;
  int has_pipe[3], pipe_lost[3], pipe_err[3];
  int rc_known_at_exit, rc_at_exit; /* get_returncode in process_exited */
  int rc_known, rc;                 /* get_returncode in connection_lost */
  int signal_after;                 /* send_signal in connection_lost */
  int relaxed; /* loop close: connection_lost may skip process_exited */
  size_t n[3];
  char buf[3][512];
  char log[48];
  size_t nlog;
  char why[160];
} sp;

static void sp_init(sp *s) {
  memset(s, 0, sizeof *s);
  s->rc = s->rc_at_exit = 12345;
}

static void sp_log(sp *s, char c) {
  if (s->nlog + 1 < sizeof s->log)
    s->log[s->nlog++] = c;
}
static void sp_bad(sp *s, const char *what) {
  if (!s->why[0])
    snprintf(s->why, sizeof s->why, "%s (log so far: \"%s\")", what, s->log);
}

/* What both pipe callbacks (named cb) check: they run between
   connection_made and connection_lost, on an fd from lowest to 2 that has
   a pipe transport, and not after that pipe's pipe_connection_lost. 0:
   the fd is out of range (not to be used as an index). */
static int sp_pipe_callback_ok(sp *s, const char *cb, int fd, int lowest) {
  char what[88];
  const char *bad = NULL;
  if (!s->made || s->lost)
    bad = "outside made..lost";
  else if (fd < lowest || fd > 2)
    bad = "on an fd out of range";
  else if (!s->has_pipe[fd])
    bad = "on an fd that has no pipe transport";
  else if (s->pipe_lost[fd])
    bad = "after that pipe's pipe_connection_lost";
  if (bad) {
    snprintf(what, sizeof what, "%.24s %.40s (fd %d)", cb, bad, fd);
    sp_bad(s, what);
  }
  return fd >= lowest && fd <= 2;
}

static void s_made(evl_subprocess *p, void *user) {
  sp *s = (sp *)user;
  int fd;
  if (s->nlog)
    sp_bad(s, "connection_made is not the first callback");
  if (s->made)
    sp_bad(s, "connection_made twice");
  sp_log(s, 'M');
  s->made++;
  s->p = s->made_p = p;
  s->pid = evl_subprocess_get_pid(p);
  if (evl_subprocess_user(p) != user)
    sp_bad(s, "evl_subprocess_user is not the user pointer");
  for (fd = 0; fd < 3; fd++)
    s->has_pipe[fd] = evl_subprocess_get_pipe_transport(p, fd) != NULL;
}
static void s_data(evl_subprocess *p, int fd, const void *data, size_t len,
                   void *user) {
  sp *s = (sp *)user;
  size_t i;
  (void)p;
  sp_log(s, (char)('0' + fd));
  if (!sp_pipe_callback_ok(s, "pipe_data_received", fd, 1))
    return;
  if (len == 0)
    sp_bad(s, "pipe_data_received with 0 bytes");
  for (i = 0; i < len; i++)
    if (s->n[fd] + i < sizeof s->buf[fd] - 1)
      s->buf[fd][s->n[fd] + i] = ((const char *)data)[i];
  s->n[fd] += len;
}
static void s_pipe_lost(evl_subprocess *p, int fd, int err, void *user) {
  sp *s = (sp *)user;
  (void)p;
  sp_log(s, (char)('a' + fd)); /* a, b, c for fds 0, 1, 2 */
  if (!sp_pipe_callback_ok(s, "pipe_connection_lost", fd, 0))
    return;
  s->pipe_lost[fd]++;
  s->pipe_err[fd] = err;
}
static void s_exited(evl_subprocess *p, void *user) {
  sp *s = (sp *)user;
  sp_log(s, 'X');
  if (!s->made || s->lost)
    sp_bad(s, "process_exited outside made..lost");
  if (s->exited)
    sp_bad(s, "process_exited twice");
  s->exited++;
  s->rc_known_at_exit = evl_subprocess_get_returncode(p, &s->rc_at_exit);
}
static void s_lost(evl_subprocess *p, int err, void *user) {
  sp *s = (sp *)user;
  int fd;
  sp_log(s, 'L');
  if (!s->made)
    sp_bad(s, "connection_lost without connection_made");
  if (s->lost)
    sp_bad(s, "connection_lost twice");
  if (!s->relaxed) {
    if (!s->exited)
      sp_bad(s, "connection_lost before process_exited");
    for (fd = 0; fd < 3; fd++)
      if (s->has_pipe[fd] && !s->pipe_lost[fd])
        sp_bad(s, "connection_lost before a pipe's pipe_connection_lost");
  }
  s->lost++;
  s->lost_err = err;
  s->rc_known = evl_subprocess_get_returncode(p, &s->rc);
  s->signal_after = evl_subprocess_send_signal(p, SIGKILL);
  s->p = NULL; /* freed by the loop after this returns */
}
static const evl_subprocess_protocol sp_proto = {s_made, s_data, s_pipe_lost,
                                                 s_exited, s_lost};

#define CHECK_ORDER(s)                                                         \
  do {                                                                         \
    if ((s).why[0])                                                            \
      test_fail_(__FILE__, __LINE__, "callback order: %s", (s).why);           \
  } while (0)
#define CHECK_OUT(s, fd, str)                                                  \
  do {                                                                         \
    if ((s).n[fd] != strlen(str) || memcmp((s).buf[fd], str, strlen(str)))     \
      test_fail_(__FILE__, __LINE__,                                           \
                 "fd %d: got \"%.*s\" (%lu bytes), "                           \
                 "expected \"%s\"",                                            \
                 fd, (int)(s).n[fd], (s).buf[fd], (unsigned long)(s).n[fd],    \
                 str);                                                         \
  } while (0)

/* Starts argv (shell: argv[0] is the command), waits for the future;
   returns its error code (0: started, connection_made has run). */
static int start(evl_loop *loop, sp *s, const char *const *argv,
                 const char *shell, const evl_subprocess_options *opts) {
  evl_future *f = shell ? evl_subprocess_shell(loop, &sp_proto, s, shell, opts)
                        : evl_subprocess_exec(loop, &sp_proto, s, argv, opts);
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (rc == 0) {
    CHECK_EQ(s->made, 1);
    CHECK(evl_future_result(f) == s->made_p);
  } else {
    CHECK_EQ(s->made, 0);
  }
  evl_future_release(f);
  return rc;
}

/* Starts, runs until connection_lost, checks the order rules. */
static void run_child(evl_loop *loop, sp *s, const char *const *argv,
                      const char *shell, const evl_subprocess_options *opts) {
  CHECK_EQ(start(loop, s, argv, shell, opts), 0);
  RUN_UNTIL(loop, s->lost == 1);
  CHECK_ORDER(*s);
  CHECK_EQ(s->exited, 1);
  CHECK_EQ(s->rc_known, 1);
  CHECK_EQ(s->rc_known_at_exit, 1);
  CHECK_EQ(s->rc_at_exit, s->rc);
}

/* Initializers of the argv of two children: one that writes its word and
   a newline; one that writes "out\n" to stdout, then "err\n" to stderr. */
#ifdef _WIN32
#define ECHO_ARGV(word)                                                        \
  { TEST_CHILD("echo", word), NULL }
#define OUTERR_ARGV                                                            \
  { TEST_CHILD("outerr"), NULL }
#else
#define ECHO_ARGV(word)                                                        \
  { "/bin/echo", word, NULL }
#define OUTERR_ARGV                                                            \
  { "/bin/sh", "-c", "echo out; echo err 1>&2", NULL }
#endif

#ifdef _WIN32
/* Windows: kill and terminate are TerminateProcess with exit code 1 (as
   asyncio), and only SIGTERM and SIGKILL can be sent. */
#define RC_KILLED 1
#define RC_TERMINATED 1
/* That the loop closed the process handle shows in the handle counts of
   loop_free_with_a_running_child (gone() cannot tell under wine). */
static void check_reaped(int pid) {
  CHECK(pid > 0);
  CHECK(gone(pid));
}
static void read_file(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  size_t n;
  CHECK(f != NULL);
  n = fread(buf, 1, cap - 1, f);
  buf[n] = 0;
  fclose(f);
}

/* The temp files and directories of the stdio and cwd tests. */
#define TEMP_PATH_MAX MAX_PATH
#define FOO_OUT "bar\n" /* --child env FOO */
/* A new empty temp file open for writing, its path in path: its HANDLE,
   in an int as EVL_STDIO_FD takes it. */
static int temp_file(char *path, size_t cap) {
  char dir[MAX_PATH];
  HANDLE h;
  CHECK(cap >= MAX_PATH);
  CHECK(GetTempPathA(sizeof dir, dir) > 0);
  CHECK(GetTempFileNameA(dir, "evl", 0, path) != 0);
  h = CreateFileA(path, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                  CREATE_ALWAYS, 0, NULL);
  CHECK(h != INVALID_HANDLE_VALUE);
  return (int)(intptr_t)h;
}
/* Closes temp_file's handle, which must still be open (ours). */
static void close_temp_file(int fd) {
  HANDLE h = (HANDLE)(intptr_t)fd;
  DWORD flags;
  CHECK(GetHandleInformation(h, &flags));
  CHECK(CloseHandle(h));
}
/* Points our standard output at fd; returns what restore_stdout takes. */
static intptr_t stdout_to(int fd) {
  HANDLE saved = GetStdHandle(STD_OUTPUT_HANDLE);
  fflush(stdout);
  CHECK(SetStdHandle(STD_OUTPUT_HANDLE, (HANDLE)(intptr_t)fd));
  return (intptr_t)saved;
}
static void restore_stdout(intptr_t saved) {
  CHECK(SetStdHandle(STD_OUTPUT_HANDLE, (HANDLE)saved));
}
/* dir's full path, as the child prints its working directory. */
static void full_path(const char *dir, char *buf, size_t cap) {
  CHECK(GetFullPathNameA(dir, (DWORD)cap, buf, NULL) > 0);
}
#else
#define RC_KILLED (-SIGKILL)
#define RC_TERMINATED (-SIGTERM)
static void check_reaped(int pid) {
  CHECK(pid > 0);
  CHECK(gone(pid));
  errno = 0;
  CHECK_EQ(waitpid(pid, NULL, WNOHANG), -1);
  CHECK_EQ(errno, ECHILD);
}

static void read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY);
  ssize_t k;
  size_t n = 0;
  CHECK(fd >= 0);
  while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
    n += (size_t)k;
  buf[n] = 0;
  close(fd);
}

#define TEMP_PATH_MAX PATH_MAX
#define FOO_OUT "bar\nunset\n" /* echo $FOO; echo ${HOME-unset} */
static int temp_file(char *path, size_t cap) {
  int fd;
  snprintf(path, cap, "/tmp/evl-sp-XXXXXX");
  fd = mkstemp(path);
  CHECK(fd >= 0);
  return fd;
}
static void close_temp_file(int fd) {
  CHECK_EQ(close(fd), 0);
}
static intptr_t stdout_to(int fd) {
  int saved;
  fflush(stdout);
  saved = dup(1);
  CHECK(saved >= 0);
  CHECK_EQ(dup2(fd, 1), 1);
  return saved;
}
static void restore_stdout(intptr_t saved) {
  CHECK_EQ(dup2((int)saved, 1), 1);
  close((int)saved);
}
static void full_path(const char *dir, char *buf, size_t cap) {
  CHECK(cap >= PATH_MAX); /* what realpath may write */
  CHECK(realpath(dir, buf) != NULL);
}
#endif

/* The spawn fails with `want` and no callback runs; under valgrind or
   qemu-user, where glibc's posix_spawn cannot tell, a child that exits
   with want_exit. */
static void expect_spawn_error(evl_loop *loop, const char *const *argv,
                               const evl_subprocess_options *opts, int want,
                               int want_exit) {
  sp s;
  int rc;
  sp_init(&s);
  rc = start(loop, &s, argv, NULL, opts);
  if (rc == 0 && spawn_hides_exec_errors()) {
    RUN_UNTIL(loop, s.lost == 1);
    CHECK_EQ(s.rc, want_exit);
    return;
  }
  CHECK_EQ(rc, want);
  run_for(loop, 0.02);
  CHECK_EQ(s.nlog, 0); /* no callback at all */
}

/* Runs a child to its end (run_child) and checks what it wrote to stdout
   (NULL: not checked; "": nothing) and its returncode. */
static void run_expect(evl_loop *loop, sp *s, const char *const *argv,
                       const char *shell, const evl_subprocess_options *opts,
                       const char *out, int rc) {
  sp_init(s);
  run_child(loop, s, argv, shell, opts);
  if (out)
    CHECK_OUT(*s, 1, out);
  CHECK_EQ(s->rc, rc);
}

/* Starts a child that would run for 10 s, for the tests that end it. On
   Windows the child says "ready" first and this waits for it: wine under
   load, killing a child it is still starting, can leave the child's pipes
   open, and connection_lost then never comes (seen once in a CI run). */
static void start_sleeper(evl_loop *loop, sp *s) {
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("say", "ready", "10"), NULL};
#else
  const char *argv[] = {"/bin/sleep", "10", NULL};
#endif
  sp_init(s);
  CHECK_EQ(start(loop, s, argv, NULL, NULL), 0);
  CHECK(s->p != NULL);
#ifdef _WIN32
  RUN_UNTIL(loop, s->n[1] >= 6);
  CHECK_OUT(*s, 1, "ready\n");
#endif
}

/* Runs until connection_lost of a started child: the callbacks came in
   order, the returncode is rc and the child is reaped. */
static void expect_end(evl_loop *loop, sp *s, int rc) {
  RUN_UNTIL(loop, s->lost == 1);
  CHECK_ORDER(*s);
  CHECK_EQ(s->rc, rc);
  check_reaped(s->pid);
}

/* ---- callbacks, returncode ------------------------------------------- */

TEST(echo_hello_callbacks_in_order) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("echo", "hello"), NULL};
#else
  const char *argv[] = {"echo", "hello", NULL}; /* found in PATH */
#endif
  sp s;
  sp_init(&s);
  run_child(loop, &s, argv, NULL, NULL);
  CHECK(s.pid > 0);
  CHECK(s.has_pipe[0] && s.has_pipe[1] && s.has_pipe[2]); /* PIPE default */
  CHECK_OUT(s, 1, "hello\n");
  CHECK_EQ(s.n[2], 0);
  CHECK_EQ(s.pipe_lost[0], 1);
  CHECK_EQ(s.pipe_lost[1], 1);
  CHECK_EQ(s.pipe_lost[2], 1);
  CHECK_EQ(s.pipe_err[0], 0);
  CHECK_EQ(s.pipe_err[1], 0);
  CHECK_EQ(s.pipe_err[2], 0);
  CHECK_EQ(s.lost_err, 0);
  CHECK_EQ(s.rc, 0);
  CHECK(s.log[0] == 'M' && s.log[s.nlog - 1] == 'L');
  CHECK_EQ(s.signal_after, EVL_ESRCH); /* reaped before connection_lost */
  check_reaped(s.pid);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(exit_status_is_the_returncode) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *a3[] = {TEST_CHILD("exit", "3"), NULL};
  const char *afalse[] = {TEST_CHILD("exit", "1"), NULL};
#else
  const char *a3[] = {"/bin/sh", "-c", "exit 3", NULL};
  const char *afalse[] = {"/bin/false", NULL};
#endif
  sp s;
  run_expect(loop, &s, a3, NULL, NULL, NULL, 3);
  check_reaped(s.pid);
  run_expect(loop, &s, afalse, NULL, NULL, NULL, 1);
  check_reaped(s.pid);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* kill -> -9, terminate -> -15 (asyncio: minus the signal number; on
   Windows both are TerminateProcess, exit code 1). */
TEST(kill_and_terminate_give_minus_the_signal) {
  evl_loop *loop = test_open();
  sp s;
  double t0 = test_now();
  start_sleeper(loop, &s);
  CHECK_EQ(evl_subprocess_get_returncode(s.p, &s.rc), 0); /* still runs */
  CHECK_EQ(evl_subprocess_kill(s.p), 0);
  expect_end(loop, &s, RC_KILLED);

  start_sleeper(loop, &s);
#ifdef _WIN32 /* other numbers: no such signals there */
  CHECK_EQ(evl_subprocess_send_signal(s.p, SIGINT), EVL_EINVAL);
  CHECK_EQ(evl_subprocess_send_signal(s.p, 10), EVL_EINVAL);
  CHECK_EQ(evl_subprocess_get_returncode(s.p, &s.rc), 0); /* still runs */
#endif
  CHECK_EQ(evl_subprocess_terminate(s.p), 0);
  expect_end(loop, &s, RC_TERMINATED);
  CHECK(test_now() - t0 < 5.0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* send_signal reaches the child: its USR1 trap exits 7. It sends only once
   the trap is set ("ready" on stdout). */
#ifndef _WIN32
TEST(send_signal_reaches_the_child) {
  evl_loop *loop = test_open();
  const char *argv[] = {
      "/bin/sh", "-c",
      "trap 'exit 7' USR1; echo ready; while :; do sleep 0.01; done", NULL};
  sp s;
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, NULL), 0);
  RUN_UNTIL(loop, s.n[1] >= 6);
  CHECK_OUT(s, 1, "ready\n");
  CHECK(s.p != NULL);
  CHECK_EQ(evl_subprocess_send_signal(s.p, SIGUSR1), 0);
  expect_end(loop, &s, 7);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#endif

/* ---- stdio ------------------------------------------------------------ */

TEST(stdin_pipe_write_eof_and_close) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("cat"), NULL};
#else
  const char *argv[] = {"/bin/cat", NULL};
#endif
  evl_transport *in;
  sp s;
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, NULL), 0);
  in = evl_subprocess_get_pipe_transport(s.p, 0);
  CHECK(in != NULL);
  CHECK_EQ(evl_transport_write(in, "abc", 3), 0);
  CHECK_EQ(evl_transport_write_eof(in), 0);
  expect_end(loop, &s, 0);
  CHECK_OUT(s, 1, "abc");
  CHECK_EQ(s.pipe_err[0], 0);

  /* The same with transport_close: queued data is sent, then EOF. */
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, NULL), 0);
  in = evl_subprocess_get_pipe_transport(s.p, 0);
  CHECK(in != NULL);
  CHECK_EQ(evl_transport_write(in, "def", 3), 0);
  evl_transport_close(in);
  expect_end(loop, &s, 0);
  CHECK_OUT(s, 1, "def");
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The child exits without reading its stdin while 1 MiB is queued: no
   SIGPIPE, the stdin pipe ends (EVL_EPIPE or 0), and the rest follows. */
TEST(stdin_pipe_child_exits_without_reading) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("sleep", "0.2"), NULL}; /* never reads */
#else
  const char *argv[] = {"/bin/sleep", "0.2", NULL}; /* never reads */
#endif
  size_t big = (size_t)1 << 20;
  char *data = (char *)calloc(1, big);
  evl_transport *in;
  sp s;
  int rc;
  CHECK(data != NULL);
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_DFL); /* the runner ignores it: undo that */
#endif
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, NULL), 0);
  in = evl_subprocess_get_pipe_transport(s.p, 0);
  CHECK(in != NULL);
  rc = evl_transport_write(in, data, big);
  CHECK(rc == 0 || rc == EVL_EPIPE);
  free(data);
  expect_end(loop, &s, 0);
  CHECK(s.pipe_err[0] == 0 || s.pipe_err[0] == EVL_EPIPE);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(stdout_devnull) {
  evl_loop *loop = test_open();
  const char *argv[] = ECHO_ARGV("x");
  evl_subprocess_options o;
  sp s;
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_DEVNULL;
  run_expect(loop, &s, argv, NULL, &o, "", 0);
  CHECK(s.has_pipe[0] && !s.has_pipe[1] && s.has_pipe[2]);
  CHECK_EQ(s.n[2], 0);
  CHECK_EQ(s.pipe_lost[1], 0);

  /* all three DEVNULL: no pipe at all, still exited and lost */
  o.stdin_mode = o.stderr_mode = EVL_STDIO_DEVNULL;
  run_expect(loop, &s, argv, NULL, &o, NULL, 0);
  CHECK(!s.has_pipe[0] && !s.has_pipe[1] && !s.has_pipe[2]);
  CHECK_EQ(strlen(s.log), 3); /* "MXL" */
  CHECK(!strcmp(s.log, "MXL"));
  check_reaped(s.pid);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(stderr_to_stdout) {
  evl_loop *loop = test_open();
  const char *argv[] = OUTERR_ARGV;
  evl_subprocess_options o;
  sp s;
  memset(&o, 0, sizeof o);
  o.stderr_mode = EVL_STDIO_STDOUT;
  run_expect(loop, &s, argv, NULL, &o, "out\nerr\n", 0);
  CHECK(s.has_pipe[1] && !s.has_pipe[2]);
  CHECK_EQ(s.n[2], 0);

  /* and without the redirection, stderr has its own pipe */
  run_expect(loop, &s, argv, NULL, NULL, "out\n", 0);
  CHECK_OUT(s, 2, "err\n");
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* EVL_STDIO_FD: the child's stdout is a temp file (the caller keeps its
   fd, as with subprocess.Popen; on Windows the field holds a HANDLE). */
TEST(stdout_to_an_fd) {
  evl_loop *loop = test_open();
  const char *argv[] = OUTERR_ARGV;
  char path[TEMP_PATH_MAX], got[64];
  evl_subprocess_options o;
  sp s;
  int fd = temp_file(path, sizeof path);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_FD;
  o.stdout_fd = fd;
  run_expect(loop, &s, argv, NULL, &o, "", 0);
  CHECK(!s.has_pipe[1]);
  CHECK_OUT(s, 2, "err\n");
  close_temp_file(fd); /* still ours */
  read_file(path, got, sizeof got);
  CHECK(!strcmp(got, "out\n"));
  CHECK_EQ(test_unlink(path), 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* INHERIT: the child writes to our own stdout (pointed at a temp file for
   the test); there is no pipe transport for it. */
TEST(stdout_inherit) {
  const char *argv[] = ECHO_ARGV("inherited");
  evl_loop *loop = test_open();
  char path[TEMP_PATH_MAX], got[64];
  evl_subprocess_options o;
  sp s;
  int fd = temp_file(path, sizeof path);
  intptr_t saved = stdout_to(fd);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_INHERIT;
  o.stdin_mode = EVL_STDIO_DEVNULL;
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, &o), 0);
  RUN_UNTIL(loop, s.lost == 1);
  restore_stdout(saved);
  CHECK_ORDER(s);
  CHECK(!s.has_pipe[0] && !s.has_pipe[1] && s.has_pipe[2]);
  CHECK_EQ(s.n[1], 0);
  CHECK_EQ(s.rc, 0);
  close_temp_file(fd);
  read_file(path, got, sizeof got);
  CHECK(!strcmp(got, "inherited\n"));
  CHECK_EQ(test_unlink(path), 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- cwd, env, shell -------------------------------------------------- */

/* cwd: the child runs there; env: it replaces the environment (a variable
   of ours is not passed), without it ours is inherited; a cwd that does
   not exist fails the future, with no child. */
TEST(cwd_and_env) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *cwd[] = {TEST_CHILD("cwd"), NULL};
  const char *foo[] = {TEST_CHILD("env", "FOO"), NULL};
  const char *ours[] = {TEST_CHILD("env", "EVL_TEST_NOT_PASSED"), NULL};
  const char *no_dir = "C:\\nonexistent\\evl-no-such-dir";
#else
  const char *cwd[] = {"/bin/pwd", NULL};
  const char *foo[] = {"/bin/sh", "-c", "echo $FOO; echo ${HOME-unset}", NULL};
  const char *ours[] = {"/bin/sh", "-c", "echo ${EVL_TEST_NOT_PASSED-unset}",
                        NULL};
  const char *no_dir = "/nonexistent/evl-no-such-dir";
#endif
  const char *env[] = {"FOO=bar", NULL};
  char dir[200], want[TEMP_PATH_MAX + 2];
  evl_subprocess_options o;
  sp s;
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  full_path(dir, want, sizeof want - 1);
  strcat(want, "\n");
  memset(&o, 0, sizeof o);
  o.cwd = dir;
  run_expect(loop, &s, cwd, NULL, &o, want, 0);
  CHECK_EQ(test_rmdir(dir), 0);

  CHECK_EQ(test_setenv("EVL_TEST_NOT_PASSED", "ours"), 0);
  memset(&o, 0, sizeof o);
  o.env = env; /* replaces the environment (POSIX: HOME is not there) */
  run_expect(loop, &s, foo, NULL, &o, FOO_OUT, 0);
  run_expect(loop, &s, ours, NULL, &o, "unset\n", 0);
  run_expect(loop, &s, ours, NULL, NULL, "ours\n", 0); /* inherited */

  memset(&o, 0, sizeof o);
  o.cwd = no_dir;
  expect_spawn_error(loop, cwd, &o, EVL_ENOENT, 127);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* evl_subprocess_shell: sh -c (Windows: %COMSPEC% /c, and cmd.exe writes
   \r\n) runs the command line: what it writes, its exit status. */
TEST(shell_runs_sh_c) {
  static const struct {
    const char *cmd, *out;
    int rc;
  } cases[] = {
#ifdef _WIN32
      {"echo a b", "a b\r\n", 0},
      {"exit 4", "", 4},
#else
      {"echo $((1+2))", "3\n", 0},
      {"echo a b | cat; exit 4", "a b\n", 4},
#endif
  };
  evl_loop *loop = test_open();
  sp s;
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run_expect(loop, &s, NULL, cases[i].cmd, NULL, cases[i].out, cases[i].rc);
    check_reaped(s.pid);
  }
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- spawn errors ----------------------------------------------------- */

TEST(missing_program_is_enoent) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *abs[] = {"C:\\nonexistent\\evl-no-such-program.exe", NULL};
#else
  const char *abs[] = {"/nonexistent/evl-no-such-program", NULL};
#endif
  const char *rel[] = {"evl-no-such-program-in-path", NULL};
  int before;
  expect_spawn_error(loop, abs, NULL, EVL_ENOENT, 127);
  before = count_fds(); /* after the first: SIGCHLD pipes are for good */
  expect_spawn_error(loop, rel, NULL, EVL_ENOENT, 127);
  CHECK_EQ(count_fds(), before); /* the pipes were closed */
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

#ifdef _WIN32
/* A file that is no program: EVL_ENOEXEC (ERROR_BAD_EXE_FORMAT). */
TEST(non_executable_file_is_eacces) {
  evl_loop *loop = test_open();
  char dir[200], path[256];
  const char *argv[] = {path, NULL};
  FILE *f;
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s\\not-a-program.exe", dir);
  f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fputs("this is text, not a program\n", f) >= 0);
  CHECK_EQ(fclose(f), 0);
  expect_spawn_error(loop, argv, NULL, EVL_ENOEXEC, 127);
  CHECK_EQ(test_unlink(path), 0);
  CHECK_EQ(test_rmdir(dir), 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#else
TEST(non_executable_file_is_eacces) {
  evl_loop *loop = test_open();
  char path[] = "/tmp/evl-sp-noexec-XXXXXX";
  const char *argv[] = {path, NULL};
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK_EQ(write(fd, "#!/bin/sh\nexit 0\n", 17), 17);
  close(fd);
  CHECK_EQ(chmod(path, 0644), 0);
  expect_spawn_error(loop, argv, NULL, EVL_EACCES, 127);
  unlink(path);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#endif

/* Bad arguments: a future that fails with EVL_EINVAL, never a crash. */
TEST(bad_arguments_fail_the_future) {
  evl_loop *loop = test_open();
  const char *empty[] = {NULL};
  const char *ok[] = {"/bin/true", NULL};
  evl_subprocess_options o;
  evl_future *f;
  sp s;
  int rc;
  sp_init(&s);
  CHECK_EQ(start(loop, &s, NULL, NULL, NULL), EVL_EINVAL);
  CHECK_EQ(start(loop, &s, empty, NULL, NULL), EVL_EINVAL);
  f = evl_subprocess_shell(loop, &sp_proto, &s, NULL, NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  f = evl_subprocess_exec(loop, NULL, &s, ok, NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  memset(&o, 0, sizeof o);
  o.stdin_mode = EVL_STDIO_STDOUT; /* stderr only */
  CHECK_EQ(start(loop, &s, ok, NULL, &o), EVL_EINVAL);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_STDOUT;
  CHECK_EQ(start(loop, &s, ok, NULL, &o), EVL_EINVAL);
  memset(&o, 0, sizeof o);
  o.stdout_mode = (evl_stdio)42;
  CHECK_EQ(start(loop, &s, ok, NULL, &o), EVL_EINVAL);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_FD;
  o.stdout_fd = -1;
  rc = start(loop, &s, ok, NULL, &o);
  CHECK(rc == EVL_EINVAL || rc == EVL_EBADF);
  CHECK_EQ(s.nlog, 0);
  /* NULL objects */
  CHECK(evl_subprocess_get_pid(NULL) <= 0);
  CHECK_EQ(evl_subprocess_get_returncode(NULL, &rc), 0);
  CHECK(evl_subprocess_get_pipe_transport(NULL, 1) == NULL);
  CHECK(evl_subprocess_kill(NULL) < 0);
  CHECK(evl_subprocess_send_signal(NULL, SIGTERM) < 0);
  evl_subprocess_close(NULL);
  CHECK(evl_subprocess_user(NULL) == NULL);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- fds -------------------------------------------------------------- */

/* Parses `ls /proc/self/fd` output: fds 0, 1, 2 and the one ls opened for
   the directory (the lowest free one: 3) and nothing else. */
#ifdef _WIN32
/* An inheritable handle of ours is not in the child: only its stdio is
   (the explicit handle list), with or without an EVL_STDIO_FD handle. The
   child looks for a semaphore of count 37 at that handle's value. */
static int child_has_our_semaphore(HANDLE sem) {
  char cmd[MAX_PATH + 64];
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  DWORD code = 2;
  snprintf(cmd, sizeof cmd, "\"%s\" --child handle %lld", test_self(),
           (long long)(intptr_t)sem);
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  CHECK(CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi));
  CHECK_EQ(WaitForSingleObject(pi.hProcess, 20000), WAIT_OBJECT_0);
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  CloseHandle(pi.hThread);
  return (int)code;
}

TEST(child_inherits_only_stdio) {
  evl_loop *loop = test_open();
  SECURITY_ATTRIBUTES sa;
  HANDLE sem, file;
  char num[32], dir[MAX_PATH], path[MAX_PATH];
  const char *argv[] = {TEST_CHILD("handle", num), NULL};
  evl_subprocess_options o;
  sp s;
  sa.nLength = sizeof sa;
  sa.lpSecurityDescriptor = NULL;
  sa.bInheritHandle = TRUE;
  sem = CreateSemaphoreA(&sa, 37, 1000, NULL);
  CHECK(sem != NULL);
  snprintf(num, sizeof num, "%lld", (long long)(intptr_t)sem);
  /* the probe works: a plain CreateProcess that inherits all finds it */
  CHECK_EQ(child_has_our_semaphore(sem), 1);
  CHECK_EQ(WaitForSingleObject(sem, 0), WAIT_OBJECT_0); /* 38 -> 37 again */
  sp_init(&s);
  run_child(loop, &s, argv, NULL, NULL);
  CHECK_EQ(s.rc, 0);
  CHECK(GetTempPathA(sizeof dir, dir) > 0);
  CHECK(GetTempFileNameA(dir, "evl", 0, path) != 0);
  file = CreateFileA(path, GENERIC_WRITE, 0, &sa, CREATE_ALWAYS,
                     FILE_FLAG_DELETE_ON_CLOSE, NULL);
  CHECK(file != INVALID_HANDLE_VALUE);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_FD;
  o.stdout_fd = (int)(intptr_t)file;
  sp_init(&s);
  run_child(loop, &s, argv, NULL, &o);
  CHECK_EQ(s.rc, 0);
  CloseHandle(file);
  CloseHandle(sem);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#else
static void check_fd_list(const char *out) {
  int seen[4] = {0, 0, 0, 0}, n = 0;
  const char *q = out;
  while (*q) {
    char *end;
    long v = strtol(q, &end, 10);
    if (end == q || *end != '\n')
      test_fail_(__FILE__, __LINE__, "odd ls output: \"%s\"", out);
    if (v < 0 || v > 3)
      test_fail_(__FILE__, __LINE__, "the child inherited fd %ld: \"%s\"", v,
                 out);
    seen[v]++;
    n++;
    q = end + 1;
  }
  CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
  CHECK(n <= 4);
}

TEST(child_inherits_only_stdio) {
  evl_loop *loop = test_open();
  const char *argv[] = {"/bin/ls", "/proc/self/fd", NULL};
  char path[] = "/tmp/evl-sp-fds-XXXXXX", got[256];
  evl_subprocess_options o;
  sp s;
  int extra = open("/dev/null", O_RDONLY), high, pfd[2], tmp, tmp_high;
  CHECK(extra >= 0);
  high = dup2(extra, 77); /* without O_CLOEXEC, like extra */
  CHECK_EQ(high, 77);
  CHECK_EQ(pipe(pfd), 0);
  sp_init(&s);
  run_child(loop, &s, argv, NULL, NULL);
  CHECK_EQ(s.rc, 0);
  check_fd_list(s.buf[1]); /* sp_init zeroed it: a C string */

  /* an fd given with EVL_STDIO_FD is the child's fd 1, and only that */
  tmp = mkstemp(path);
  CHECK(tmp >= 0);
  tmp_high = dup2(tmp, 90);
  CHECK_EQ(tmp_high, 90);
  close(tmp);
  memset(&o, 0, sizeof o);
  o.stdout_mode = EVL_STDIO_FD;
  o.stdout_fd = tmp_high;
  sp_init(&s);
  run_child(loop, &s, argv, NULL, &o);
  CHECK_EQ(s.rc, 0);
  read_file(path, got, sizeof got);
  check_fd_list(got);
  close(tmp_high);
  unlink(path);
  close(extra);
  close(high);
  close(pfd[0]);
  close(pfd[1]);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}
#endif

/* ---- reaping ---------------------------------------------------------- */

#ifdef _WIN32
#define tr (test_child_argv("exit", "0"))
#define sh_exit_argv(n) (test_child_argv("exit", exit_arg[n]))
static const char *const exit_arg[7] = {"0", "1", "2", "3", "4", "5", "6"};
/* "SELF --child a b" in static storage (each call overwrites the last). */
static const char *const *test_child_argv(const char *a, const char *b) {
  static const char *argv[5];
  argv[0] = test_self();
  argv[1] = "--child";
  argv[2] = a;
  argv[3] = b;
  argv[4] = NULL;
  return argv;
}
#else
#define sh_exit_argv(n) (sh_exit[n])
static const char *const tr[] = {"/bin/true", NULL};
static const char *const sh_exit[7][4] = {
    {"/bin/sh", "-c", "exit 0", NULL}, {"/bin/sh", "-c", "exit 1", NULL},
    {"/bin/sh", "-c", "exit 2", NULL}, {"/bin/sh", "-c", "exit 3", NULL},
    {"/bin/sh", "-c", "exit 4", NULL}, {"/bin/sh", "-c", "exit 5", NULL},
    {"/bin/sh", "-c", "exit 6", NULL}};
#endif

/* 1,000 short children, at most 200 at a time: /bin/true and sh -c 'exit
   N', half of them with a stdout pipe, the rest all DEVNULL. */
TEST(a_thousand_children) {
  evl_loop *loop = test_open();
  enum { MAXRUN = 200 };
  int N = under_valgrind() ? 300 : 1000; /* valgrind: ~50x slower */
#ifdef _WIN32
  if (test_under_wine()) {
    N = 200; /* a process start costs wine tens of ms */
    printf("  note: wine: %d children\n", N);
  }
#endif
  sp *s = (sp *)calloc((size_t)N, sizeof *s);
  evl_future **f = (evl_future **)calloc((size_t)N, sizeof *f);
  evl_subprocess_options dn, half;
  int started = 0, lost = 0, i, peak = 0;
  double t0 = test_now(), dl = t0 + 45.0;
  CHECK(s && f);
  memset(&dn, 0, sizeof dn);
  dn.stdin_mode = dn.stdout_mode = dn.stderr_mode = EVL_STDIO_DEVNULL;
  half = dn;
  half.stdout_mode = EVL_STDIO_PIPE;
  while (lost < N && test_now() < dl) {
    while (started < N && started - lost < MAXRUN) {
      i = started++;
      sp_init(&s[i]);
      f[i] = evl_subprocess_exec(loop, &sp_proto, &s[i],
                                 i % 2 ? sh_exit_argv(i % 7) : tr,
                                 (i / 2) % 2 ? &half : &dn);
      CHECK(f[i] != NULL);
    }
    if (started - lost > peak)
      peak = started - lost;
    evl_run_once(loop, 0.01);
    lost = 0;
    for (i = 0; i < started; i++) {
      if (f[i] && evl_future_done(f[i])) {
        if (evl_future_error(f[i]) != 0)
          test_fail_(__FILE__, __LINE__, "child %d: %s", i,
                     evl_strerror(evl_future_error(f[i])));
        evl_future_release(f[i]);
        f[i] = NULL;
      }
      lost += s[i].lost;
    }
  }
  if (lost < N)
    test_fail_(__FILE__, __LINE__, "%d of %d children ended in %.1f s", lost, N,
               test_now() - t0);
  for (i = 0; i < N; i++) {
    CHECK(f[i] == NULL);
    CHECK_ORDER(s[i]);
    CHECK_EQ(s[i].exited, 1);
    CHECK_EQ(s[i].rc_known, 1);
    if (s[i].rc != (i % 2 ? i % 7 : 0))
      test_fail_(__FILE__, __LINE__, "child %d: returncode %d, expected %d", i,
                 s[i].rc, i % 2 ? i % 7 : 0);
    CHECK(gone(s[i].pid));
  }
  CHECK(peak <= MAXRUN);
  free(s);
  free(f);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Other code reaps the child (a blocking waitpid) before the loop sees it
   exit. The header does not say which returncode then: asyncio reports
   255 with a warning; the real status (0) is fine too. What matters: no
   hang, no crash, process_exited and connection_lost run. */
#ifndef _WIN32
TEST(child_reaped_by_other_code) {
  evl_loop *loop = test_open();
  const char *argv[] = {"/bin/sleep", "0.5", NULL};
  sp s;
  int st = -1;
  g_quiet = 1; /* a warning through the exception handler is allowed */
  sp_init(&s);
  CHECK_EQ(start(loop, &s, argv, NULL, NULL), 0);
  CHECK(s.pid > 0);
  CHECK_EQ(s.exited, 0);
  CHECK_EQ(waitpid(s.pid, &st, 0), s.pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  RUN_UNTIL(loop, s.lost == 1);
  CHECK_ORDER(s);
  CHECK_EQ(s.exited, 1);
  CHECK_EQ(s.rc_known, 1);
  if (s.rc != 255 && s.rc != 0)
    test_fail_(__FILE__, __LINE__, "returncode %d (expected 255 or 0)", s.rc);
  /* the loop still works for the next child */
  {
    const char *a2[] = {"/bin/sh", "-c", "exit 2", NULL};
    sp_init(&s);
    run_child(loop, &s, a2, NULL, NULL);
    CHECK_EQ(s.rc, 2);
  }
  test_close(loop);
}
#endif

/* evl_subprocess_close kills a running child (asyncio's close); the
   callbacks still end with connection_lost, and the child is reaped. */
TEST(close_kills_a_running_child) {
  evl_loop *loop = test_open();
  double t0 = test_now();
  sp s;
  start_sleeper(loop, &s);
  evl_subprocess_close(s.p);
  expect_end(loop, &s, RC_KILLED);
  CHECK(test_now() - t0 < 3.0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Freeing the loop with a child running returns promptly, leaves no
   zombie (the child is killed and reaped) and no fd behind; the protocol
   still gets its connection_lost. The first loop warms up whatever the
   process keeps for good (signal self-pipes). */
TEST(loop_free_with_a_running_child) {
  const char *echo[] = ECHO_ARGV("warm");
  evl_loop *loop = test_open();
  double t0;
  int fds;
  sp s;
  sp_init(&s);
  run_child(loop, &s, echo, NULL, NULL);
  test_close(loop);
  test_settle_fds();
  fds = count_fds();

  loop = test_open();
  start_sleeper(loop, &s);
  s.relaxed = 1; /* before the loop's close: its connection_lost */
  run_for(loop, 0.05);
  CHECK_EQ(s.lost, 0);
  t0 = test_now();
  test_close(loop);
  CHECK(test_now() - t0 < 2.0);
  CHECK_ORDER(s);
  CHECK_EQ(s.lost, 1);
  CHECK(s.lost_err == 0 || s.lost_err == EVL_ECLOSED);
  check_no_child_left(s.pid);
  test_settle_fds();
  CHECK_EQ(count_fds(), fds);
}

/* ---- the SIGCHLD path (no pidfd) ------------------------------------- */

#ifndef _WIN32
TEST(sigchld_path_basics) {
  if (!no_pidfd())
    return;
  echo_hello_callbacks_in_order();
  exit_status_is_the_returncode();
  kill_and_terminate_give_minus_the_signal();
  stdin_pipe_write_eof_and_close();
  stdout_devnull();
  missing_program_is_enoent();
  close_kills_a_running_child();
}

TEST(sigchld_path_many_children) {
  if (no_pidfd())
    a_thousand_children();
}

TEST(sigchld_path_child_reaped_by_other_code) {
  if (no_pidfd())
    child_reaped_by_other_code();
}

TEST(sigchld_path_loop_free_with_a_running_child) {
  if (no_pidfd())
    loop_free_with_a_running_child();
}
#endif

TESTS_BEGIN
T(echo_hello_callbacks_in_order)
T(exit_status_is_the_returncode)
T(kill_and_terminate_give_minus_the_signal)
T_POSIX(send_signal_reaches_the_child,
        "no signals to send but SIGTERM/SIGKILL (TerminateProcess)")
T(stdin_pipe_write_eof_and_close)
T(stdin_pipe_child_exits_without_reading)
T(stdout_devnull)
T(stderr_to_stdout)
T(stdout_to_an_fd)
T(stdout_inherit)
T(cwd_and_env)
T(shell_runs_sh_c)
T(missing_program_is_enoent)
T(non_executable_file_is_eacces)
T(bad_arguments_fail_the_future)
T(child_inherits_only_stdio)
T(a_thousand_children)
T_POSIX(child_reaped_by_other_code, "no waitpid: a process handle is ours")
T(close_kills_a_running_child)
T(loop_free_with_a_running_child)
#define NO_SIGCHLD "exits come through a wait registration, no SIGCHLD"
T_POSIX(sigchld_path_basics, NO_SIGCHLD)
T_POSIX(sigchld_path_many_children, NO_SIGCHLD)
T_POSIX(sigchld_path_child_reaped_by_other_code, NO_SIGCHLD)
T_POSIX(sigchld_path_loop_free_with_a_running_child, NO_SIGCHLD)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_PROCESS: no subprocesses")
#endif
