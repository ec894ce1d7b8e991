/* Hello World with call_soon(): the first example of the asyncio event loop
   documentation, in C. A callback scheduled with evl_call_soon() prints
   "Hello World" and stops the loop that evl_run_forever() is running.

   Build: cc -std=c99 hello_world.c -o hello_world -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>

/* A callback to print "Hello World" and stop the event loop. */
static void hello_world(evl_loop *loop, void *arg) {
  (void)arg;
  printf("Hello World\n");
  evl_stop(loop);
}

int main(void) {
  evl_loop *loop;
  int err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    return 1;
  }

  /* Schedule a call to hello_world(). */
  evl_handle h = evl_call_soon(loop, hello_world, NULL);
  if (h < 0) {
    fprintf(stderr, "evl_call_soon: %s\n", evl_strerror((int)h));
    evl_loop_free(loop);
    return 1;
  }

  /* Blocks until hello_world() calls evl_stop(). */
  err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

  evl_loop_free(loop); /* closes the loop, then frees it */
  return err < 0 ? 1 : 0;
}
