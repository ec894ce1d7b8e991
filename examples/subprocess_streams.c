/* Get the current date from a child process, with the high-level API: the
   create_subprocess_exec example of the asyncio "Subprocesses"
   documentation, in C (running `date` instead of Python's
   `print(datetime.datetime.now())`).

   evl_create_subprocess_exec starts the child with its stdout on a pipe and
   gives an evl_process whose stdout is a stream; the task reads one line
   from it, waits for the exit (evl_process_wait gives the returncode) and
   returns. The process object is ours to free, on every path: so the awaits
   are EVL_AWAIT_TRY and the task ends at one place that frees it.

   Build: cc -std=c99 subprocess_streams.c -o subprocess_streams -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <string.h>

typedef struct get_date_state {
  evl_process *proc;
  char line[256]; /* the line, copied: the read's bytes go at the next await */
  int returncode, err;
} get_date_state;

static void get_date(evl_task *t, void *state) {
  get_date_state *s = (get_date_state *)state; /* lives in main() */
  evl_loop *loop = evl_task_loop(t);
  static const char *const argv[] = {"date", NULL};
  evl_subprocess_options opts;
  const evl_bytes *data;
  size_t n;

  EVL_ASYNC_BEGIN(t);
  memset(&opts, 0, sizeof opts);
  opts.stdin_mode = EVL_STDIO_INHERIT;
  opts.stdout_mode = EVL_STDIO_PIPE; /* stdout=asyncio.subprocess.PIPE */
  opts.stderr_mode = EVL_STDIO_INHERIT;
  /* proc = await asyncio.create_subprocess_exec(...) */
  EVL_AWAIT(t, evl_create_subprocess_exec(loop, argv, &opts, 0));
  s->proc = (evl_process *)evl_await_result(t);

  /* data = await proc.stdout.readline() */
  EVL_AWAIT_TRY(t, evl_stream_readline(evl_process_stdout(s->proc)));
  if ((s->err = evl_await_error(t)) < 0)
    goto out;
  /* line = data.decode('ascii').rstrip() */
  data = (const evl_bytes *)evl_await_result(t);
  n = data->len < sizeof s->line - 1 ? data->len : sizeof s->line - 1;
  while (n > 0 && (data->data[n - 1] == '\n' || data->data[n - 1] == ' '))
    n--;
  memcpy(s->line, data->data, n);
  s->line[n] = '\0';

  /* await proc.wait() */
  EVL_AWAIT_TRY(t, evl_process_wait(s->proc));
  if ((s->err = evl_await_error(t)) < 0)
    goto out;
  s->returncode = (int)evl_future_result_int(evl_await_future(t));

out:
  evl_process_free(s->proc);
  s->proc = NULL;
  if (s->err < 0)
    EVL_ASYNC_FAIL(t, s->err, "get_date");
  EVL_ASYNC_END(t);
}

int main(void) {
  get_date_state s;
  int err;
  memset(&s, 0, sizeof s);
  err = evl_run(get_date, &s, 0, NULL, NULL);
  if (err < 0) {
    fprintf(stderr, "subprocess_streams: %s\n", evl_strerror(err));
    return 1;
  }
  printf("Current date: %s\n", s.line);
  if (s.returncode != 0) {
    fprintf(stderr, "subprocess_streams: date exited with %d\n", s.returncode);
    return 1;
  }
  return 0;
}
