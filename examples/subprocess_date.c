/* Get the current date from a child process, with the transport/protocol
   API: the subprocess_exec example of the asyncio "Subprocesses" and
   "Protocols" documentation, in C. Where the Python example runs
   `python -c "import datetime; print(datetime.datetime.now())"`, this one
   runs `date`.

   The child's stdout is a pipe (stdin and stderr are inherited, as with
   asyncio's stdin=None, stderr=None). The protocol collects what
   pipe_data_received gives; process_exited and pipe_connection_lost may come
   in either order, and connection_lost comes once both happened. Python's
   DateProtocol completes exit_future when it has seen both; here
   connection_lost completes it. The loop frees the evl_subprocess right
   after connection_lost, so there is no transport.close() to call (and the
   pointer must not be used after it).

   Build: cc -std=c99 subprocess_date.c -o subprocess_date -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DateProtocol's fields: the collected output and the exit future. */
typedef struct date_protocol {
  evl_future *exit_future;
  char *output;
  size_t len;
  int pipe_closed, exited, returncode, err;
} date_protocol;

static void pipe_data_received(evl_subprocess *p, int fd, const void *data,
                               size_t len, void *user) {
  date_protocol *d = (date_protocol *)user;
  char *grown;
  (void)p;
  if (fd != 1)
    return;
  grown = (char *)realloc(d->output, d->len + len + 1);
  if (!grown) {
    d->err = EVL_ENOMEM;
    return;
  }
  memcpy(grown + d->len, data, len);
  d->output = grown;
  d->len += len;
  d->output[d->len] = '\0';
}

static void pipe_connection_lost(evl_subprocess *p, int fd, int err,
                                 void *user) {
  date_protocol *d = (date_protocol *)user;
  (void)p;
  (void)err;
  if (fd == 1)
    d->pipe_closed = 1;
}

static void process_exited(evl_subprocess *p, void *user) {
  date_protocol *d = (date_protocol *)user;
  d->exited = 1;
  (void)evl_subprocess_get_returncode(p, &d->returncode);
}

/* The last callback: the child exited and its pipe is closed. */
static void connection_lost(evl_subprocess *p, int err, void *user) {
  date_protocol *d = (date_protocol *)user;
  (void)p;
  if (err < 0)
    (void)evl_future_set_error(d->exit_future, err, "connection_lost");
  else
    (void)evl_future_set_result(d->exit_future, NULL);
}

static const evl_subprocess_protocol date_proto = {
    NULL, /* connection_made: nothing to do */
    pipe_data_received, pipe_connection_lost, process_exited, connection_lost};

static void get_date(evl_task *t, void *state) {
  date_protocol *d = (date_protocol *)state; /* lives in main() */
  evl_loop *loop = evl_task_loop(t);
  static const char *const argv[] = {"date", NULL};
  evl_subprocess_options opts;

  EVL_ASYNC_BEGIN(t);
  d->exit_future = evl_future_new(loop);
  if (!d->exit_future)
    EVL_ASYNC_FAIL(t, EVL_ENOMEM, NULL);

  /* stdout to a pipe; stdin and stderr inherited. */
  memset(&opts, 0, sizeof opts);
  opts.stdin_mode = EVL_STDIO_INHERIT;
  opts.stdout_mode = EVL_STDIO_PIPE;
  opts.stderr_mode = EVL_STDIO_INHERIT;
  /* The result is the evl_subprocess * (the transport); it is not needed
     here: the protocol gets it in every callback. */
  EVL_AWAIT(t, evl_subprocess_exec(loop, &date_proto, d, argv, &opts));

  /* Wait until connection_lost: exited and pipe closed. */
  EVL_AWAIT(t, evl_future_ref(d->exit_future));
  if (d->err < 0)
    EVL_ASYNC_FAIL(t, d->err, "collecting the output");
  EVL_ASYNC_END(t);
}

int main(void) {
  date_protocol d;
  int err;
  memset(&d, 0, sizeof d);
  err = evl_run(get_date, &d, 0, NULL, NULL);
  evl_future_release(d.exit_future);
  if (err < 0) {
    fprintf(stderr, "subprocess_date: %s\n", evl_strerror(err));
    free(d.output);
    return 1;
  }
  /* data.decode('ascii').rstrip() */
  while (d.len > 0 &&
         (d.output[d.len - 1] == '\n' || d.output[d.len - 1] == ' '))
    d.output[--d.len] = '\0';
  printf("Current date: %s\n", d.output ? d.output : "");
  if (!d.pipe_closed || !d.exited || d.returncode != 0) {
    fprintf(stderr, "subprocess_date: date exited with %d\n", d.returncode);
    free(d.output);
    return 1;
  }
  free(d.output);
  return 0;
}
