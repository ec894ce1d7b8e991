/* A game's frame loop that owns the thread and calls evl_run_once(loop, 0)
   once a frame, 60 times a second: UDP input arrives between frames and
   all of it is handled in the next frame (the loop reads every queued
   datagram, up to evl_loop_config.read_budget per socket and frame), a
   repeating timer ticks the game state at 10 Hz without drift, and the
   loop's metrics are printed at exit.

       game_loop [SECONDS [PORT]]   (default 3 s; port 0: a free port)

   Input: any UDP datagram to 127.0.0.1:PORT, e.g. from another terminal
       examples/udp_echo --port PORT   or   echo hi | nc -u -q0 127.0.0.1 PORT
   Without PORT the program feeds itself: a "remote player" socket sends
   2,000 datagrams a second (10 per 5 ms, from a second repeating timer),
   and at exit it checks that every one arrived.

   Build: cc -std=c99 game_loop.c -o game_loop -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#endif

typedef struct game {
  evl_transport *input;
  long received, sent, ticks, frames;
  int bot;               /* the self-feeding socket, or -1 */
  struct sockaddr_in to; /* where the bot sends */
  double start;
  long bursts; /* bot bursts sent */
} game;

static void input_made(evl_transport *t, void *user) {
  ((game *)user)->input = t;
}
static void input_datagram(evl_transport *t, const void *data, size_t len,
                           const void *addr, size_t addrlen, void *user) {
  (void)t;
  (void)data;
  (void)len;
  (void)addr;
  (void)addrlen;
  ((game *)user)->received++; /* a real game would apply the input here */
}
static const evl_protocol input_proto = {
    input_made, NULL, NULL, NULL, NULL, NULL, NULL, NULL, input_datagram, NULL};

/* 10 Hz: the game state's tick, on a schedule that does not drift. */
static void game_tick(evl_loop *loop, void *arg) {
  game *g = (game *)arg;
  g->ticks++;
  if (g->ticks % 10 == 0)
    printf("t=%.1f s: frame %ld, %ld datagrams so far\n",
           evl_time(loop) - g->start, g->frames, g->received);
}

/* The remote player: 10 datagrams for every 5 ms that passed. Its timer
   runs at most once a frame here (evl_run_once once a frame), so it sends
   what the bursts since the last frame would have sent. */
static void bot_send(evl_loop *loop, void *arg) {
  game *g = (game *)arg;
  long due = (long)((evl_time(loop) - g->start) / 0.005), i;
  for (i = 0; i < 10 * (due - g->bursts); i++) {
    char msg[32];
    int n = snprintf(msg, sizeof msg, "move %ld", g->sent);
    if (sendto(g->bot, msg, n, 0, (const struct sockaddr *)&g->to,
               (int)sizeof g->to) == n)
      g->sent++;
  }
  g->bursts = due;
}

static void sleep_until(double t, evl_loop *loop) {
  double d = t - evl_time(loop);
  if (d <= 0)
    return;
#ifdef _WIN32
  Sleep((DWORD)(d * 1000));
#else
  {
    struct timespec ts;
    ts.tv_sec = (time_t)d;
    ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
  }
#endif
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 3.0, start, next;
  int port = argc > 2 ? atoi(argv[2]) : 0;
  evl_loop *loop;
  evl_future *f;
  evl_loop_metrics m;
  game g;
  struct sockaddr_in sa;
  size_t salen = sizeof sa;
  evl_handle tick, bot = 0;
  memset(&g, 0, sizeof g);
  memset(&m, 0, sizeof m);
  g.bot = -1;
  if (secs <= 0)
    secs = 3.0;
  if (evl_loop_new(&loop, NULL) != 0)
    return 1;
  f = evl_create_datagram_endpoint(loop, &input_proto, &g, "127.0.0.1", port,
                                   NULL, 0, NULL);
  if (!f || evl_run_until_complete(loop, f) != 0) {
    fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  evl_future_release(f);
  evl_transport_get_sockname(g.input, &sa, &salen);
  printf("listening for input on 127.0.0.1:%d for %.1f s\n", ntohs(sa.sin_port),
         secs);
  g.start = evl_time(loop);
  tick = evl_call_every(loop, 0.1, game_tick, &g);
  if (argc <= 2) { /* feed ourselves */
    g.bot = (int)socket(AF_INET, SOCK_DGRAM, 0);
    g.to = sa;
    bot = evl_call_every(loop, 0.005, bot_send, &g);
    evl_every_set_missed(loop, bot, EVL_MISSED_SKIP);
  }
  start = next = evl_time(loop);
  while (evl_time(loop) < start + secs) {
    evl_run_once(loop, 0); /* everything that came since the last frame */
    g.frames++;
    /* ... update and render the frame here ... */
    next += 1.0 / 60;
    sleep_until(next, loop);
  }
  evl_handle_cancel(loop, bot);
  evl_run_once(loop, 0.05); /* the last datagrams in flight */
  evl_handle_cancel(loop, tick);
  evl_loop_metrics_get(loop, &m);
  printf("%ld frames, %ld game ticks, %ld datagrams received", g.frames,
         g.ticks, g.received);
  if (g.bot >= 0)
    printf(" of %ld sent", g.sent);
  printf("\nloop: %llu iterations, %llu events, %llu callbacks; idle %.3f s, "
         "in callbacks %.3f s, longest callback %.3f ms\n",
         (unsigned long long)m.iterations, (unsigned long long)m.events,
         (unsigned long long)m.callbacks, (double)m.idle_ns / 1e9,
         (double)m.callback_ns / 1e9, (double)m.longest_ns / 1e6);
  evl_transport_close(g.input);
  evl_run_once(loop, 0);
  evl_loop_free(loop);
  if (g.bot >= 0) {
#ifdef _WIN32
    closesocket((SOCKET)g.bot);
#else
    close(g.bot);
#endif
    if (g.received != g.sent) {
      fprintf(stderr, "lost %ld datagrams\n", g.sent - g.received);
      return 1;
    }
  }
  return 0;
}
