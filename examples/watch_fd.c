/* Watch a file descriptor for read events: the add_reader() example of the
   asyncio event loop documentation, in C. The loop watches one end of a
   socket pair with evl_add_reader(); a callback scheduled with
   evl_call_soon() writes to the other end, as data from the network would
   arrive. The reader prints what it received, stops watching and stops the
   loop.

   Build: cc -std=c99 watch_fd.c -o watch_fd -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static void reader(evl_loop *loop, evl_fd fd, void *arg) {
  char data[100];
  ssize_t n = recv((int)fd, data, sizeof data - 1, 0);
  (void)arg;
  if (n < 0) {
    perror("recv");
  } else {
    data[n] = '\0';
    printf("Received: %s\n", data);
  }

  /* We are done: unregister the file descriptor and stop the loop. */
  evl_remove_reader(loop, fd);
  evl_stop(loop);
}

/* Simulates the reception of data from the network. */
static void send_data(evl_loop *loop, void *arg) {
  const int *wsock = (const int *)arg;
  if (send(*wsock, "abc", 3, 0) < 0) {
    perror("send");
    evl_stop(loop); /* the reader would wait for ever */
  }
}

int main(void) {
  int socks[2]; /* the loop reads socks[0]; send_data writes socks[1] */
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, socks) < 0) {
    perror("socketpair");
    return 1;
  }

  evl_loop *loop;
  evl_handle h;
  int err = evl_loop_new(&loop, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
    close(socks[0]);
    close(socks[1]);
    return 1;
  }

  /* Register the file descriptor for read events. */
  err = evl_add_reader(loop, socks[0], reader, NULL);
  if (err < 0) {
    fprintf(stderr, "evl_add_reader: %s\n", evl_strerror(err));
    goto done;
  }

  /* Send the data from a callback, once the loop runs. */
  h = evl_call_soon(loop, send_data, &socks[1]);
  if (h < 0) {
    err = (int)h;
    fprintf(stderr, "evl_call_soon: %s\n", evl_strerror(err));
    goto done;
  }

  err = evl_run_forever(loop);
  if (err < 0)
    fprintf(stderr, "evl_run_forever: %s\n", evl_strerror(err));

done:
  /* Free the loop before closing the sockets: a loop must not watch a
     closed fd, and on an error path the reader is still registered. */
  evl_loop_free(loop);
  close(socks[0]);
  close(socks[1]);
  return err < 0 ? 1 : 0;
}
