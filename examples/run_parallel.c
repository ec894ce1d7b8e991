/* Run shell commands in parallel, at most N at a time, and print each one's
   output in the order given (a small `xargs -P` / GNU parallel --group):

       run_parallel [-j N] [--] CMD...

   Each CMD is one shell command line, run with `/bin/sh -c CMD` through
   evl_create_subprocess_shell, with stdin from /dev/null. Its stdout and
   stderr are captured with evl_process_communicate (read to their ends
   while the child runs, so no pipe fills up) and, once it and every
   command before it have finished, printed as

       == CMD (exit CODE)
       <its stdout, on stdout>
       <its stderr, on stderr>

   CODE is the exit status, or minus the signal number that killed the
   command. N is at least 1 (default: the number of online CPUs). The exit
   status is 0 if every command exited with 0, 1 otherwise, 2 for a usage
   error.

   Without commands it runs a built-in demo list with -j 2 (unless -j says
   otherwise): one command prints to stderr and exits 3, one fails, so the
   output shows both; the demo always exits 0 (`make demo` runs it).

   How: N worker tasks share a counter of the next command to start; each
   one runs a command, stores its output, prints every finished command at
   the head of the queue, and takes the next, until none is left. The main
   task awaits the workers with evl_gather.

   Build: cc -std=c99 run_parallel.c -o run_parallel -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const demo_cmds[] = {"echo one", "sleep 0.2; echo two",
                                        "echo three 1>&2; exit 3",
                                        "ls /nonexistent"};

typedef struct job {
  const char *cmd;
  char *out, *err; /* copies of the captured output (NUL-terminated) */
  size_t out_len, err_len;
  int returncode;
  int start_error; /* < 0: could not run it (EVL_E* code) */
  int done;
} job;

typedef struct app {
  job *jobs;
  size_t njobs;
  size_t next;    /* the next job to start */
  size_t printed; /* jobs[0..printed) have been printed */
  int running, max_running;
  int failed; /* how many did not exit with 0 */
} app;

/* Copies an evl_bytes (NULL: no output) into *dst. */
static int copy_bytes(const evl_bytes *b, char **dst, size_t *len) {
  size_t n = b ? b->len : 0;
  *dst = (char *)malloc(n + 1);
  if (!*dst)
    return EVL_ENOMEM;
  if (n)
    memcpy(*dst, b->data, n);
  (*dst)[n] = '\0';
  *len = n;
  return 0;
}

/* Prints every finished job at the head of the queue, in order. */
static void print_ready(app *a) {
  while (a->printed < a->njobs && a->jobs[a->printed].done) {
    job *j = &a->jobs[a->printed++];
    if (j->start_error < 0)
      printf("== %s (failed to start: %s)\n", j->cmd,
             evl_strerror(j->start_error));
    else
      printf("== %s (exit %d)\n", j->cmd, j->returncode);
    fwrite(j->out, 1, j->out_len, stdout);
    fflush(stdout);
    fwrite(j->err, 1, j->err_len, stderr);
    fflush(stderr);
    free(j->out);
    free(j->err);
    j->out = j->err = NULL;
  }
}

/* A worker's own state: which job it runs, and the process. */
typedef struct worker {
  app *a;
  size_t i;
  evl_process *proc;
} worker;

static void worker_task(evl_task *t, void *state) {
  worker *w = (worker *)state;
  app *a = w->a;
  evl_subprocess_options opts;
  const evl_communicate *c;
  job *j;
  int err;

  EVL_ASYNC_BEGIN(t);
  while (a->next < a->njobs) {
    w->i = a->next++;
    memset(&opts, 0, sizeof opts);
    opts.stdin_mode = EVL_STDIO_DEVNULL; /* not the terminal: N at a time */
    opts.stdout_mode = EVL_STDIO_PIPE;
    opts.stderr_mode = EVL_STDIO_PIPE;
    a->running++;
    if (a->running > a->max_running)
      a->max_running = a->running;
    EVL_AWAIT_TRY(t, evl_create_subprocess_shell(evl_task_loop(t),
                                                 a->jobs[w->i].cmd, &opts, 0));
    j = &a->jobs[w->i];
    if ((err = evl_await_error(t)) < 0) {
      j->start_error = err;
      goto finished;
    }
    w->proc = (evl_process *)evl_await_result(t);

    /* stdout and stderr to their ends, and the exit status. */
    EVL_AWAIT_TRY(t, evl_process_communicate(w->proc, NULL, 0));
    j = &a->jobs[w->i];
    evl_process_free(w->proc);
    w->proc = NULL;
    if ((err = evl_await_error(t)) < 0) {
      j->start_error = err;
      goto finished;
    }
    /* The result belongs to the awaited future: copy it before the next
       await. */
    c = (const evl_communicate *)evl_await_result(t);
    j->returncode = c->returncode;
    if ((err = copy_bytes(c->out, &j->out, &j->out_len)) < 0 ||
        (err = copy_bytes(c->err, &j->err, &j->err_len)) < 0)
      j->start_error = err;

  finished:
    a->running--;
    j->done = 1;
    if (j->start_error < 0 || j->returncode != 0)
      a->failed++;
    print_ready(a);
  }
  EVL_ASYNC_END(t);
}

static void main_task(evl_task *t, void *state) {
  app *a = (app *)state; /* lives in main() */
  evl_loop *loop = evl_task_loop(t);
  evl_task **tasks;
  evl_future *all = NULL;
  size_t i, n;
  worker w;

  EVL_ASYNC_BEGIN(t);
  n = (size_t)a->max_running < a->njobs ? (size_t)a->max_running : a->njobs;
  a->max_running = 0; /* from now on: the most seen running at once */
  tasks = (evl_task **)calloc(n ? n : 1, sizeof *tasks);
  if (!tasks)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, NULL);
  for (i = 0; i < n; i++) {
    w.a = a;
    w.i = 0;
    w.proc = NULL;
    tasks[i] = evl_task_create(loop, worker_task, &w, sizeof w);
    if (!tasks[i])
      break;
  }
  if (i == n)
    all = evl_gather(loop, tasks, n, 0);
  /* gather holds its own references; running tasks keep themselves. */
  n = i;
  for (i = 0; i < n; i++)
    evl_future_release(tasks[i]);
  free(tasks);
  if (!all)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, "cannot start the workers");
  EVL_AWAIT(t, all);
  EVL_ASYNC_END(t);
}

static void usage(FILE *f) {
  fprintf(f, "usage: run_parallel [-j N] [--] CMD...\n"
             "  Runs each CMD with /bin/sh -c, at most N at a time (N >= 1,\n"
             "  default: the number of CPUs), and prints for each, in the\n"
             "  order given, '== CMD (exit CODE)' and its output (stdout on\n"
             "  stdout, stderr on stderr). CODE < 0: killed by signal -CODE.\n"
             "  Exit status: 0 if every CMD exited with 0, else 1.\n"
             "  Without CMD: runs a built-in demo list with -j 2 and exits 0\n"
             "  whatever the commands do.\n");
}

/* -j's value: an integer >= 1, else -1. */
static int parse_jobs(const char *s) {
  char *end;
  long v;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < 1 || v > 1000000)
    return -1;
  return (int)v;
}

int main(int argc, char **argv) {
  app a;
  int i = 1, jobs = 0, demo, err;
  long cpus;

  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *val = NULL;
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "-j") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "run_parallel: -j needs a number\n");
        usage(stderr);
        return 2;
      }
      val = argv[++i];
    } else if (strncmp(argv[i], "-j", 2) == 0) {
      val = argv[i] + 2; /* -jN */
    } else {
      fprintf(stderr, "run_parallel: unknown option %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
    if ((jobs = parse_jobs(val)) < 0) {
      fprintf(stderr, "run_parallel: -j wants an integer >= 1, not '%s'\n",
              val);
      usage(stderr);
      return 2;
    }
  }

  memset(&a, 0, sizeof a);
  demo = i == argc;
  a.njobs = demo ? sizeof demo_cmds / sizeof demo_cmds[0] : (size_t)(argc - i);
  a.jobs = (job *)calloc(a.njobs, sizeof *a.jobs);
  if (!a.jobs) {
    fprintf(stderr, "run_parallel: out of memory\n");
    return 1;
  }
  for (size_t k = 0; k < a.njobs; k++)
    a.jobs[k].cmd = demo ? demo_cmds[k] : argv[i + (int)k];
  if (jobs == 0) {
    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    jobs = demo ? 2 : cpus > 0 ? (int)cpus : 1;
  }
  a.max_running = jobs;
  if (demo)
    printf("(demo: %u commands, -j %d; run_parallel -h for the usage)\n",
           (unsigned)a.njobs, jobs);
  fflush(stdout);

  err = evl_run(main_task, &a, 0, NULL, NULL);
  if (err < 0)
    fprintf(stderr, "run_parallel: %s\n", evl_strerror(err));
  for (size_t k = 0; k < a.njobs; k++) { /* left over after an error */
    free(a.jobs[k].out);
    free(a.jobs[k].err);
  }
  free(a.jobs);
  if (demo) {
    printf("(%d of %u failed, at most %d ran at once; the demo exits 0)\n",
           a.failed, (unsigned)a.njobs, a.max_running);
    return err < 0 ? 1 : 0;
  }
  return err < 0 || a.failed ? 1 : 0;
}
