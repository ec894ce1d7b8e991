/* Subprocesses, high level: evl_create_subprocess_exec / _shell and the
   evl_process API: wait, stdout/stderr/stdin streams, communicate (64 MiB
   both ways without deadlock), signals, tasks that await a process, and
   freeing a process before its child ended. Only /bin/sh and coreutils run
   as children; on Windows the test program itself (TEST_CHILD). */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#ifndef EVLOOP_NO_PROCESS
#include "net_test.h"
#include "proc_test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#ifdef _WIN32
#define cat_argv (child_argv("cat", NULL, NULL, NULL))
#define sleep10 (child_argv("sleep", "10", NULL, NULL))
/* "SELF --child a [b [c [d]]]" in static storage (each call overwrites
   it: spawn at once). */
static const char *const *child_argv(const char *a, const char *b,
                                     const char *c, const char *d) {
  static const char *argv[7];
  argv[0] = test_self();
  argv[1] = "--child";
  argv[2] = a;
  argv[3] = b;
  argv[4] = b ? c : NULL;
  argv[5] = b && c ? d : NULL;
  argv[6] = NULL;
  return argv;
}
/* TerminateProcess, exit code 1 (as asyncio) */
#define RC_KILLED 1
#define RC_TERMINATED 1
#else
static const char *const cat_argv[] = {"/bin/cat", NULL};
static const char *const sleep10[] = {"/bin/sleep", "10", NULL};
#define RC_KILLED (-SIGKILL)
#define RC_TERMINATED (-SIGTERM)
#endif

static evl_process *spawn(evl_loop *loop, const char *const *argv,
                          const char *shell,
                          const evl_subprocess_options *opts) {
  evl_future *f = shell ? evl_create_subprocess_shell(loop, shell, opts, 0)
                        : evl_create_subprocess_exec(loop, argv, opts, 0);
  evl_process *p;
  p = (evl_process *)wait_result(loop, f);
  CHECK(evl_process_pid(p) > 0);
  return p;
}

/* Waits for the exit; returns the returncode. */
static int wait_rc(evl_loop *loop, evl_process *p) {
  evl_future *w = evl_process_wait(p);
  int rc;
  CHECK(w != NULL);
  CHECK_EQ(wait_fut(loop, w), 0);
  rc = (int)evl_future_result_int(w);
  evl_future_release(w);
  return rc;
}

/* One readline; *line gets a copy (C string); returns its length. */
static size_t read_line(evl_loop *loop, evl_stream *s, char *line, size_t cap) {
  evl_future *f = evl_stream_readline(s);
  evl_bytes *b;
  size_t n;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  b = (evl_bytes *)evl_future_result(f);
  CHECK(b != NULL);
  n = b->len < cap - 1 ? b->len : cap - 1;
  memcpy(line, b->data, n);
  line[n] = 0;
  n = b->len;
  evl_future_release(f);
  return n;
}

TEST(wait_gives_the_exit_status) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("exit", "5"), NULL};
#else
  const char *argv[] = {"/bin/sh", "-c", "exit 5", NULL};
#endif
  evl_process *p = spawn(loop, argv, NULL, NULL);
  int pid = evl_process_pid(p);
  CHECK(evl_process_stdin(p) && evl_process_stdout(p) && evl_process_stderr(p));
  CHECK_EQ(wait_rc(loop, p), 5);
  CHECK(gone(pid));
  /* waiting again after the exit completes, with the same code */
  CHECK_EQ(wait_rc(loop, p), 5);
  CHECK_EQ(evl_process_send_signal(p, SIGTERM), EVL_ESRCH); /* reaped */
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Two waiters on one process both get the code. */
TEST(two_waiters) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  evl_process *p =
      spawn(loop, child_argv("sleep", "0.05", "9", NULL), NULL, NULL);
#else
  evl_process *p = spawn(loop, NULL, "sleep 0.05; exit 9", NULL);
#endif
  evl_future *a = evl_process_wait(p), *b = evl_process_wait(p);
  CHECK(a && b);
  CHECK_EQ(wait_fut(loop, a), 0);
  CHECK_EQ(wait_fut(loop, b), 0);
  CHECK_EQ(evl_future_result_int(a), 9);
  CHECK_EQ(evl_future_result_int(b), 9);
  evl_future_release(a);
  evl_future_release(b);
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(stdout_readline_then_eof) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  evl_process *p = spawn(loop, child_argv("lines", "a", "b", NULL), NULL, NULL);
#else
  evl_process *p = spawn(loop, NULL, "printf 'a\\nb\\n'", NULL);
#endif
  evl_stream *out = evl_process_stdout(p);
  char line[64];
  CHECK(out != NULL);
  CHECK_EQ(read_line(loop, out, line, sizeof line), 2);
  CHECK(!strcmp(line, "a\n"));
  CHECK_EQ(read_line(loop, out, line, sizeof line), 2);
  CHECK(!strcmp(line, "b\n"));
  CHECK_EQ(read_line(loop, out, line, sizeof line), 0); /* EOF: empty */
  CHECK(evl_stream_at_eof(out));
  CHECK_EQ(wait_rc(loop, p), 0);
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The deadlock test: 64 MiB in through cat's stdin and out of its stdout
   at once. The input buffer is freed right after the call (it is copied). */
TEST(communicate_64_mib_through_cat) {
  evl_loop *loop = test_open();
  /* valgrind is ~50x slower: 4 MiB still fills every pipe many times */
  size_t total = (size_t)(under_valgrind() ? 4 : 64) << 20, i, bad = 0;
  unsigned char *big = (unsigned char *)malloc(total);
  evl_process *p;
  evl_future *c;
  evl_communicate *r;
  double t0 = test_now(), dt;
#ifdef _WIN32
  if (test_under_wine() && strcmp(evl_backend_name(loop), "iocp") != 0) {
    /* wine 8: the child's blocking ReadFile/WriteFile on its socket stdio
       (select loops; IOCP loops use named pipes) can hang for good after
       10-20 MiB both ways (a plain Win32 program shows it too); 2 MiB
       still fills the socket buffers many times */
    total = (size_t)2 << 20;
    printf("  note: wine: 2 MiB\n");
  }
#endif
  CHECK(big != NULL);
  for (i = 0; i < total; i++)
    big[i] = test_pat(i);
  p = spawn(loop, cat_argv, NULL, NULL);
  c = evl_process_communicate(p, big, total);
  CHECK(c != NULL);
  free(big);
  CHECK_EQ(wait_fut(loop, c), 0);
  dt = test_now() - t0;
  r = (evl_communicate *)evl_future_result(c);
  CHECK(r != NULL);
  CHECK_EQ(r->returncode, 0);
  CHECK(r->out != NULL && r->err != NULL);
  CHECK_EQ(r->out->len, total);
  CHECK_EQ(r->err->len, 0);
  for (i = 0; i < total; i++)
    bad += r->out->data[i] != test_pat(i);
  CHECK_EQ(bad, 0);
  CHECK_EQ(r->out->data[total], 0); /* the 0 byte after the data */
  if (dt > 5.0)
    printf("  (communicate took %.1f s)\n", dt);
  evl_future_release(c);
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(communicate_devnull_stdin_and_stderr_pipe) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {TEST_CHILD("outerr"), NULL};
#define OUT1 "out\n"
#define ERR1 "err\n"
#else
  const char *argv[] = {"/bin/sh", "-c", "echo e 1>&2; echo o", NULL};
#define OUT1 "o\n"
#define ERR1 "e\n"
#endif
  evl_subprocess_options o;
  evl_process *p;
  evl_future *c;
  evl_communicate *r;
  memset(&o, 0, sizeof o);
  o.stdin_mode = EVL_STDIO_DEVNULL;
  p = spawn(loop, argv, NULL, &o);
  CHECK(evl_process_stdin(p) == NULL);
  CHECK(evl_process_stdout(p) != NULL && evl_process_stderr(p) != NULL);
  c = evl_process_communicate(p, NULL, 0);
  CHECK_EQ(wait_fut(loop, c), 0);
  r = (evl_communicate *)evl_future_result(c);
  CHECK(r && r->out && r->err);
  CHECK(r->out->len == strlen(OUT1) && !strcmp((char *)r->out->data, OUT1));
  CHECK(r->err->len == strlen(ERR1) && !strcmp((char *)r->err->data, ERR1));
  CHECK_EQ(r->returncode, 0);
  evl_future_release(c);
  evl_process_free(p);

  /* stdout DEVNULL: out is NULL; stderr still captured; exit code kept */
  o.stdout_mode = EVL_STDIO_DEVNULL;
#ifdef _WIN32
  p = spawn(loop, child_argv("outerr", "3", NULL, NULL), NULL, &o);
#else
  p = spawn(loop, NULL, "echo o; echo err 1>&2; exit 3", &o);
#endif
  CHECK(evl_process_stdout(p) == NULL);
  c = evl_process_communicate(p, NULL, 0);
  CHECK_EQ(wait_fut(loop, c), 0);
  r = (evl_communicate *)evl_future_result(c);
  CHECK(r != NULL);
  CHECK(r->out == NULL);
  CHECK(r->err && r->err->len == 4 && !memcmp(r->err->data, "err\n", 4));
  CHECK_EQ(r->returncode, 3);
  evl_future_release(c);
  evl_process_free(p);

  /* stdin a pipe, no input: cat sees EOF at once */
  p = spawn(loop, cat_argv, NULL, NULL);
  c = evl_process_communicate(p, NULL, 0);
  CHECK_EQ(wait_fut(loop, c), 0);
  r = (evl_communicate *)evl_future_result(c);
  CHECK(r && r->out && r->err);
  CHECK_EQ(r->out->len, 0);
  CHECK_EQ(r->returncode, 0);
  evl_future_release(c);
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The child exits without reading its input: communicate still completes
   (asyncio ignores the broken pipe), no SIGPIPE. */
TEST(communicate_child_ignores_its_input) {
  evl_loop *loop = test_open();
  size_t big = (size_t)1 << 20;
  char *data = (char *)calloc(1, big);
  evl_process *p;
  evl_future *c;
  evl_communicate *r;
  CHECK(data != NULL);
#ifdef _WIN32
  p = spawn(loop, child_argv("say", "bye", "0", "6"), NULL, NULL);
#else
  signal(SIGPIPE, SIG_DFL); /* the runner ignores it: undo that */
  p = spawn(loop, NULL, "echo bye; exit 6", NULL);
#endif
  c = evl_process_communicate(p, data, big);
  CHECK(c != NULL);
  free(data);
  CHECK_EQ(wait_fut(loop, c), 0);
  r = (evl_communicate *)evl_future_result(c);
  CHECK(r && r->out && r->err);
  CHECK(r->out->len == 4 && !memcmp(r->out->data, "bye\n", 4));
  CHECK_EQ(r->returncode, 6);
  evl_future_release(c);
  evl_process_free(p);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* A task drives cat: create (await), write, readline (await) twice, EOF,
   wait (await). */
typedef struct ptask {
  evl_process *p;
  char l1[16], l2[16];
  size_t eof_len;
  int rc, pid;
} ptask;

static void copy_line(char *dst, size_t cap, const evl_bytes *b) {
  size_t n = b->len < cap - 1 ? b->len : cap - 1;
  memcpy(dst, b->data, n);
  dst[n] = 0;
}

static void cat_task(evl_task *t, void *state) {
  ptask *s = (ptask *)state;
  evl_stream *in;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_create_subprocess_exec(evl_task_loop(t), cat_argv, NULL, 0));
  s->p = (evl_process *)evl_await_result(t);
  s->pid = evl_process_pid(s->p);
  in = evl_process_stdin(s->p);
  if (evl_stream_write(in, "one\ntwo\n", 8) != 0 ||
      evl_stream_write_eof(in) != 0)
    EVL_ASYNC_FAIL(t, EVL_EUNKNOWN, "write to stdin");
  EVL_AWAIT(t, evl_stream_readline(evl_process_stdout(s->p)));
  copy_line(s->l1, sizeof s->l1, (evl_bytes *)evl_await_result(t));
  EVL_AWAIT(t, evl_stream_readline(evl_process_stdout(s->p)));
  copy_line(s->l2, sizeof s->l2, (evl_bytes *)evl_await_result(t));
  EVL_AWAIT(t, evl_stream_readline(evl_process_stdout(s->p)));
  s->eof_len = ((evl_bytes *)evl_await_result(t))->len;
  EVL_AWAIT(t, evl_process_wait(s->p));
  s->rc = (int)evl_future_result_int(evl_await_future(t));
  evl_process_free(s->p);
  s->p = NULL;
  EVL_ASYNC_RETURN(t, NULL);
  EVL_ASYNC_END(t);
}

TEST(task_awaits_readline_and_wait) {
  evl_loop *loop = test_open();
  ptask s;
  evl_task *t;
  memset(&s, 0, sizeof s);
  s.rc = -1000;
  s.eof_len = 99;
  t = evl_task_create(loop, cat_task, &s, 0);
  CHECK(t != NULL);
  CHECK_EQ(wait_fut(loop, t), 0);
  evl_future_release(t);
  CHECK(!strcmp(s.l1, "one\n"));
  CHECK(!strcmp(s.l2, "two\n"));
  CHECK_EQ(s.eof_len, 0);
  CHECK_EQ(s.rc, 0);
  CHECK(s.p == NULL);
  CHECK(gone(s.pid));
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(kill_terminate_send_signal) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char **trap = NULL;
#else
  const char *trap[] = {
      "/bin/sh", "-c",
      "trap 'exit 7' USR1; echo ready; while :; do sleep 0.01; done", NULL};
#endif
  evl_process *p;
  char line[16];
  int pid;
  double t0 = test_now();

  p = spawn(loop, sleep10, NULL, NULL);
  pid = evl_process_pid(p);
  CHECK_EQ(evl_process_kill(p), 0);
  CHECK_EQ(wait_rc(loop, p), RC_KILLED);
  CHECK(gone(pid));
  CHECK_EQ(evl_process_kill(p), EVL_ESRCH);
  evl_process_free(p);

  p = spawn(loop, sleep10, NULL, NULL);
#ifdef _WIN32 /* no other signals there */
  CHECK_EQ(evl_process_send_signal(p, SIGINT), EVL_EINVAL);
#endif
  CHECK_EQ(evl_process_terminate(p), 0);
  CHECK_EQ(wait_rc(loop, p), RC_TERMINATED);
  CHECK_EQ(evl_process_terminate(p), EVL_ESRCH);
  evl_process_free(p);
#ifdef _WIN32
  (void)trap;
  (void)line;
#else

  p = spawn(loop, trap, NULL, NULL);
  CHECK_EQ(read_line(loop, evl_process_stdout(p), line, sizeof line), 6);
  CHECK(!strcmp(line, "ready\n"));
  CHECK_EQ(evl_process_send_signal(p, SIGUSR1), 0);
  CHECK_EQ(wait_rc(loop, p), 7);
  evl_process_free(p);
#endif
  CHECK(test_now() - t0 < 5.0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Freeing the process while its child runs: the child goes on and is
   reaped by the loop; nothing leaks (ASan/valgrind). With unread output
   and a pending readline too. */
TEST(free_before_the_child_ends) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  evl_process *p =
      spawn(loop, child_argv("say", "lots-more", "0.2", NULL), NULL, NULL);
#else
  const char *argv[] = {"/bin/sh", "-c", "echo lots; echo more; sleep 0.2",
                        NULL};
  evl_process *p = spawn(loop, argv, NULL, NULL);
#endif
  int pid = evl_process_pid(p), pid2;
  double t0;
  evl_future *rl;
  run_for(loop, 0.05); /* the output is buffered in the stream by now */
  evl_process_free(p);
  t0 = test_now();
  RUN_UNTIL(loop, gone(pid));
  CHECK(test_now() - t0 > 0.05); /* it went on: not killed */

  /* the same while a readline is pending on its stdout. The child says
     "ready" before it sleeps, so that it is surely running when it is
     killed: wine under load, killing a child it is still starting, could
     leave the pipe's write end open and the readline waiting for good. */
#ifdef _WIN32
  p = spawn(loop, child_argv("say", "ready", "10", NULL), NULL, NULL);
#else
  p = spawn(loop, NULL, "echo ready; exec sleep 10", NULL);
#endif
  pid2 = evl_process_pid(p);
  {
    char line[16];
    CHECK_EQ(read_line(loop, evl_process_stdout(p), line, sizeof line), 6);
    CHECK(!strcmp(line, "ready\n"));
  }
  rl = evl_stream_readline(evl_process_stdout(p)); /* nothing more comes */
  CHECK(rl != NULL);
  run_for(loop, 0.02);
  evl_process_free(p);
  run_for(loop, 0.02);
  CHECK(!gone(pid2)); /* still running */
  CHECK(kill_pid(pid2) == 0);
  RUN_UNTIL(loop, gone(pid2));
  RUN_UNTIL(loop, evl_future_done(rl)); /* EOF or an error: it ends */
  (void)evl_future_error(rl);
  evl_future_release(rl);
  test_close(loop);
}

/* A process freed with its child still running, then the loop freed: the
   free is prompt and the child does not stay behind (killed, reaped). */
TEST(loop_free_with_a_freed_running_process) {
  evl_loop *loop = test_open();
  evl_process *p = spawn(loop, sleep10, NULL, NULL);
  int pid = evl_process_pid(p);
  double t0;
  run_for(loop, 0.02);
  evl_process_free(p);
  t0 = test_now();
  test_close(loop);
  CHECK(test_now() - t0 < 2.0);
  check_no_child_left(pid);
}

TEST(missing_program_fails_the_future) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {"C:\\nonexistent\\evl-no-such-program.exe", NULL};
#else
  const char *argv[] = {"/nonexistent/evl-no-such-program", NULL};
#endif
  evl_future *f = evl_create_subprocess_exec(loop, argv, NULL, 0);
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (rc == 0 && spawn_hides_exec_errors()) {
    evl_process *p = (evl_process *)evl_future_result(f);
    CHECK_EQ(wait_rc(loop, p), 127);
    evl_process_free(p);
  } else {
    CHECK_EQ(rc, EVL_ENOENT);
    CHECK(evl_future_result(f) == NULL);
  }
  evl_future_release(f);
  f = evl_create_subprocess_shell(loop, NULL, NULL, 0);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* The same through SIGCHLD (pidfd_open made to fail). */
#ifndef _WIN32
TEST(sigchld_path) {
  if (!no_pidfd())
    return;
  wait_gives_the_exit_status();
  stdout_readline_then_eof();
  communicate_64_mib_through_cat();
  task_awaits_readline_and_wait();
  kill_terminate_send_signal();
  free_before_the_child_ends();
  loop_free_with_a_freed_running_process();
}
#endif

TESTS_BEGIN
T(wait_gives_the_exit_status)
T(two_waiters)
T(stdout_readline_then_eof)
T(communicate_64_mib_through_cat)
T(communicate_devnull_stdin_and_stderr_pipe)
T(communicate_child_ignores_its_input)
T(task_awaits_readline_and_wait)
T(kill_terminate_send_signal)
T(free_before_the_child_ends)
T(loop_free_with_a_freed_running_process)
T(missing_program_fails_the_future)
T_POSIX(sigchld_path, "exits come through a wait registration, no SIGCHLD")
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_PROCESS: no subprocesses")
#endif
