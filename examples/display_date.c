/* Display the current date with call_later(): the second example of the
   asyncio event loop documentation, in C. A callback prints the date, then
   schedules itself again one second later with evl_call_later(), until five
   seconds (measured with the loop's clock, evl_time()) have passed.

   Build: cc -std=c99 display_date.c -o display_date -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <time.h>

static void display_date(evl_loop *loop, void *arg) {
  const double *end_time = (const double *)arg;

  /* The date is wall-clock time; the loop's clock is only for intervals. */
  char date[64];
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime(&now));
  printf("%s\n", date);
  fflush(stdout);

  if (evl_time(loop) + 1.0 < *end_time) {
    evl_handle h = evl_call_later(loop, 1.0, display_date, arg);
    if (h < 0) {
      /* Nothing else is scheduled: without this the loop would wait for
         ever. */
      fprintf(stderr, "evl_call_later: %s\n", evl_strerror((int)h));
      evl_stop(loop);
    }
  } else {
    evl_stop(loop);
  }
}

int main(void) {
  evl_loop *loop;
  int err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    return 1;
  }

  /* Schedule the first call to display_date(). end_time outlives the loop's
     run, so the callbacks may keep a pointer to it. */
  double end_time = evl_time(loop) + 5.0;
  evl_handle h = evl_call_soon(loop, display_date, &end_time);
  if (h < 0) {
    fprintf(stderr, "evl_call_soon: %s\n", evl_strerror((int)h));
    evl_loop_free(loop);
    return 1;
  }

  err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

  evl_loop_free(loop);
  return err < 0 ? 1 : 0;
}
