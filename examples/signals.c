/* Set signal handlers for SIGINT and SIGTERM: the example of the asyncio
   event loop documentation, in C. evl_add_signal_handler() registers a
   callback that the loop runs (not in signal context, so it may print and
   call any evl_ function); here it prints the signal's name, given as the
   callback's argument as functools.partial gives it in Python, and stops
   the loop.

       signals [--wait]

   The asyncio example waits one hour for Ctrl+C. So that it finishes by
   itself (in `make demo` and the tests), this one sends itself SIGTERM
   after 0.5 s; with --wait it waits for a real signal, up to one hour:

       signals --wait & sleep 1; kill -INT $!

   Either way it removes its handlers (the dispositions the process had
   before come back), closes the loop and exits with 0.

   Build: cc -std=c99 signals.c -o signals -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void ask_exit(evl_loop *loop, int signum, void *arg) {
  const char *signame = (const char *)arg;
  (void)signum;
  printf("got signal %s: exit\n", signame);
  fflush(stdout);
  evl_stop(loop);
}

/* The hour of asyncio.sleep(3600) has passed. */
static void hour_over(evl_loop *loop, void *arg) {
  (void)arg;
  evl_stop(loop);
}

/* Without --wait: the signal a user would send. */
static void send_sigterm(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  printf("sending SIGTERM to myself (--wait waits for a real signal)\n");
  fflush(stdout);
  kill(getpid(), SIGTERM);
}

int main(int argc, char **argv) {
  evl_loop *loop;
  evl_handle h;
  int wait_real = argc == 2 && strcmp(argv[1], "--wait") == 0;
  int err;

  if (argc > 1 && !wait_real) {
    fprintf(stderr, "usage: signals [--wait]\n");
    return 2;
  }
  err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    return 1;
  }
  if ((err = evl_add_signal_handler(loop, SIGINT, ask_exit, "SIGINT")) < 0 ||
      (err = evl_add_signal_handler(loop, SIGTERM, ask_exit, "SIGTERM")) < 0) {
    fprintf(stderr, "evl_add_signal_handler: %s\n", evl_strerror(err));
    goto done;
  }
  h = evl_call_later(loop, 3600.0, hour_over, NULL);
  if (h >= 0 && !wait_real)
    h = evl_call_later(loop, 0.5, send_sigterm, NULL);
  if (h < 0) {
    err = (int)h;
    fprintf(stderr, "evl_call_later: %s\n", evl_strerror(err));
    goto done;
  }

  printf("Event loop running for 1 hour, press Ctrl+C to interrupt.\n");
  printf("pid %ld: send SIGINT or SIGTERM to exit.\n", (long)getpid());
  fflush(stdout);

  err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

done:
  evl_remove_signal_handler(loop, SIGINT);
  evl_remove_signal_handler(loop, SIGTERM);
  evl_loop_free(loop);
  return err < 0 ? 1 : 0;
}
