/* Reads per iteration (evl_loop_config.read_budget): a readable datagram
   endpoint delivers what is queued up to the budget, a stream transport
   reads until drained; a once-a-frame caller of evl_run_once is not
   capped at one datagram per frame. */
#include "test.h"

#ifndef EVLOOP_NO_NET

#include "net_test.h"

#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#ifdef _WIN32
typedef SOCKET test_sock_t;
#else
typedef int test_sock_t;
#endif

/* Datagrams carry a sequence number and the sender's test_now(). */
typedef struct dgram_msg {
  uint32_t seq;
  double sent;
} dgram_msg;

typedef struct rx {
  evl_transport *t;
  int count, bad_order, pause_at;
  uint32_t next_seq;
  double frame_prev; /* start of the previous frame's evl_run_once */
  int prev_on_time;  /* the previous frame came within 3 frame times */
  double *prev_at;   /* per sequence number: frame_prev at its receipt */
  int nprev;
  double worst; /* longest send-to-receipt time */
  size_t bytes;
} rx;

static void rx_made(evl_transport *t, void *user) {
  ((rx *)user)->t = t;
}
static void rx_lost(evl_transport *t, int err, void *user) {
  (void)t;
  (void)err;
  ((rx *)user)->t = NULL;
}
static void rx_data(evl_transport *t, const void *data, size_t len,
                    void *user) {
  rx *r = (rx *)user;
  (void)data;
  r->bytes += len;
  r->count++;
  if (r->pause_at && r->count == r->pause_at)
    CHECK_EQ(evl_transport_pause_reading(t), 0);
}
static void rx_dgram(evl_transport *t, const void *data, size_t len,
                     const void *addr, size_t addrlen, void *user) {
  rx *r = (rx *)user;
  dgram_msg m;
  double now = test_now();
  (void)addr;
  (void)addrlen;
  CHECK_EQ(len, sizeof m);
  memcpy(&m, data, sizeof m);
  if (m.seq != r->next_seq)
    r->bad_order++;
  r->next_seq = m.seq + 1;
  r->count++;
  if (r->prev_at && m.seq < (uint32_t)r->nprev) /* < 0: not judged */
    r->prev_at[m.seq] = r->prev_on_time ? r->frame_prev : -1.0;
  if (now - m.sent > r->worst)
    r->worst = now - m.sent;
  if (r->pause_at && r->count == r->pause_at)
    CHECK_EQ(evl_transport_pause_reading(t), 0);
}
static const evl_protocol rx_proto = {rx_made, rx_data, NULL, rx_lost,  NULL,
                                      NULL,    NULL,    NULL, rx_dgram, NULL};

/* A datagram endpoint on 127.0.0.1 and a plain socket sending to it. */
static int open_pair(evl_loop *loop, rx *r, int *sender) {
  evl_future *f = evl_create_datagram_endpoint(loop, &rx_proto, r, "127.0.0.1",
                                               0, NULL, 0, NULL);
  struct sockaddr_in sa;
  size_t len = sizeof sa;
  int s;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  CHECK(r->t != NULL);
  CHECK_EQ(evl_transport_get_sockname(r->t, &sa, &len), 0);
  s = (int)socket(AF_INET, SOCK_DGRAM, 0);
  CHECK(s >= 0);
  CHECK_EQ(connect(s, (struct sockaddr *)&sa, (int)sizeof sa), 0);
  *sender = s;
  return ntohs(sa.sin_port);
}

/* Closes what open_pair made, and the loop; no exception was reported. */
static void close_pair(evl_loop *loop, rx *r, int sender) {
  test_closesocket(sender);
  evl_transport_close(r->t);
  evl_run_once(loop, 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

static void send_seq(int s, uint32_t seq) {
  dgram_msg m;
  memset(&m, 0, sizeof m); /* no uninitialised padding on the wire */
  m.seq = seq;
  m.sent = test_now();
  CHECK_EQ(test_send(s, &m, sizeof m), (long)sizeof m);
}

/* n datagrams (numbered from 0), then one iteration. */
static void send_burst(evl_loop *loop, int s, int n) {
  int i;
  for (i = 0; i < n; i++)
    send_seq(s, (uint32_t)i);
  test_sleep_ms(20);
  evl_run_once(loop, 1.0);
}

/* The datagrams queued before an iteration all arrive in it. */
TEST(udp_drained_per_iteration) {
  evl_loop *loop = test_open();
  rx r;
  int s, frame, i;
  memset(&r, 0, sizeof r);
  open_pair(loop, &r, &s);
  for (frame = 0; frame < 20; frame++) {
    int before = r.count;
    for (i = 0; i < 100; i++)
      send_seq(s, (uint32_t)(frame * 100 + i));
    test_sleep_ms(2); /* loopback delivery is synchronous on Linux */
    evl_run_once(loop, 1.0);
    CHECK_EQ(r.count - before, 100);
  }
  CHECK_EQ(r.bad_order, 0);
  close_pair(loop, &r, s);
}

/* The budget is per loop: read_budget 10 delivers 10 a time; bad values
   are refused. */
TEST(udp_budget_configured) {
  evl_loop_config cfg;
  evl_loop *loop, *bad = NULL;
  rx r;
  int s;
  memset(&cfg, 0, sizeof cfg);
  cfg.read_budget = -1;
  CHECK_EQ(evl_loop_new(&bad, &cfg), EVL_EINVAL);
  CHECK(bad == NULL);
  cfg.read_budget = 10;
  loop = test_open_with(&cfg);
  memset(&r, 0, sizeof r);
  open_pair(loop, &r, &s);
  send_burst(loop, s, 25);
  CHECK_EQ(r.count, 10);
  evl_run_once(loop, 1.0);
  CHECK_EQ(r.count, 20);
  evl_run_once(loop, 1.0);
  CHECK_EQ(r.count, 25);
  CHECK_EQ(r.bad_order, 0);
  close_pair(loop, &r, s);
}

/* A pair whose receiver pauses its reading at the pause_at-th datagram,
   and a burst of n: the iteration delivers pause_at of them. */
static void open_and_pause_burst(evl_loop *loop, rx *r, int *sender,
                                 int pause_at, int n) {
  memset(r, 0, sizeof *r);
  r->pause_at = pause_at;
  open_pair(loop, r, sender);
  send_burst(loop, *sender, n);
  CHECK_EQ(r->count, pause_at);
}

/* pause_reading inside datagram_received stops the batch; the rest stays
   queued in the socket until resume_reading. */
TEST(udp_pause_stops_batch) {
  evl_loop *loop = test_open();
  rx r;
  int s;
  open_and_pause_burst(loop, &r, &s, 5, 30);
  evl_run_once(loop, 0.05);
  CHECK_EQ(r.count, 5);
  CHECK_EQ(evl_transport_resume_reading(r.t), 0);
  RUN_UNTIL(loop, r.count == 30);
  CHECK_EQ(r.bad_order, 0);
  close_pair(loop, &r, s);
}

/* Paused mid-batch (recvmmsg took more than the protocol wanted: those
   are held), resumed from a later callback: the held ones come first, in
   order; paused again and closed: what is held goes with the transport. */
static void resume_cb(evl_loop *loop, void *arg) {
  (void)loop;
  CHECK_EQ(evl_transport_resume_reading(((rx *)arg)->t), 0);
}
TEST(udp_pause_resume_close_mid_batch) {
  evl_loop *loop = test_open();
  rx r;
  int s;
  open_and_pause_burst(loop, &r, &s, 2, 40);
  CHECK(evl_call_soon(loop, resume_cb, &r) > 0);
  r.pause_at = 0;
  RUN_UNTIL(loop, r.count == 40);
  CHECK_EQ(r.bad_order, 0);
  r.pause_at = 43;
  r.next_seq = 0;
  send_burst(loop, s, 40); /* seqs 0..39 again: 3 delivered, more held */
  CHECK_EQ(r.count, 43);
  evl_run_once(loop, 0.02);
  CHECK_EQ(r.count, 43);
  close_pair(loop, &r, s); /* (the sanitizers check the held ones go) */
}

/* A stream transport reads until the socket is drained: everything the
   peer wrote (several 64 KiB reads) arrives in one iteration. */
TEST(stream_drained_per_iteration) {
  evl_loop *loop = test_open();
  static unsigned char chunk[16384];
  rx r;
  int sv[2];
  size_t wrote = 0;
  memset(&r, 0, sizeof r);
  CHECK_EQ(test_socketpair(sv), 0);
  CHECK_EQ(test_set_nonblocking(sv[1]), 0);
  CHECK(evl_connect_accepted_socket(loop, &rx_proto, &r, sv[0]) != NULL);
  evl_run_once(loop, 0); /* connection_made */
  CHECK(r.t != NULL);
  while (wrote < 1024 * 1024) {
    long n = test_send(sv[1], chunk, sizeof chunk);
    if (n <= 0)
      break;
    wrote += (size_t)n;
  }
  if (wrote <= 65536)
    SKIP("the socket buffers hold no more than one read");
  test_sleep_ms(20);
#ifndef _WIN32
  /* an AF_UNIX socketpair holds everything written by now */
  evl_run_once(loop, 1.0);
  CHECK_EQ(r.bytes, wrote);
  CHECK(r.count >= 2);
#else
  { /* loopback TCP may still have bytes in flight: some iteration reads
       several times (one read an iteration would take > 16 of them) */
    int iterations = 0;
    while (r.bytes < wrote && iterations < 100) {
      evl_run_once(loop, 1.0);
      iterations++;
    }
    CHECK_EQ(r.bytes, wrote);
    CHECK(r.count > iterations);
  }
#endif
  test_closesocket(sv[1]);
  evl_transport_close(r.t);
  evl_run_once(loop, 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* ---- A 60 Hz frame loop fed by another thread at 2,000 datagrams/s ---- */

typedef struct sender_job {
  int sock;
  double secs;
  int sent, cap;
  double *done_at; /* per sequence number: when its sendto returned */
} sender_job;

/* Sends 10 datagrams every 5 ms (2,000/s) on an absolute schedule. */
static int sender(void *arg, void **result) {
  sender_job *j = (sender_job *)arg;
  double start = test_now(), next = start;
  (void)result;
  while (next < start + j->secs && j->sent + 10 <= j->cap) {
    int i;
    double wait;
    for (i = 0; i < 10; i++) {
      send_seq(j->sock, (uint32_t)j->sent);
      j->done_at[j->sent++] = test_now();
    }
    next += 0.005;
    wait = next - test_now();
    if (wait > 0)
      test_sleep_ms((int)(wait * 1000 + 0.5));
  }
  return 0;
}

/* The case: a 60 Hz frame loop calling evl_run_once(loop, 0) once
   a frame, another thread sending 2,000 datagrams/s (T_BUDGET_SECS
   seconds, default 3). None is lost, and none waits past one frame: a
   datagram received in frame f was sent after frame f-1 began (its sendto
   returned after that), else frame f-1 should have had it. Where the
   system kept the frame loop itself from running for over 3 frame times
   (a loaded machine), the frame after is not judged: the datagrams of
   those frames may exceed one frame's budget. */
TEST(frame_loop_2000_per_second) {
  evl_loop *loop = test_open();
  const char *env = getenv("T_BUDGET_SECS");
  sender_job job;
  evl_future *f;
  rx r;
  int s, frames = 0, late = 0, unjudged = 0, i;
  double start, next, prev_start = 0;
  memset(&r, 0, sizeof r);
  memset(&job, 0, sizeof job);
  open_pair(loop, &r, &s);
  { /* room for a loaded machine's late frames: what is lost in the kernel
       is not what this test is about */
    int big = 4 << 20;
    setsockopt((test_sock_t)evl_transport_fd(r.t), SOL_SOCKET, SO_RCVBUF,
               (const char *)&big, (int)sizeof big);
  }
  job.sock = s;
  job.secs = env && *env ? atof(env) : 3.0;
  if (job.secs <= 0 || job.secs > 30)
    job.secs = 3.0;
  job.cap = (int)(job.secs * 2000) + 20;
  job.done_at = (double *)calloc((size_t)job.cap, sizeof(double));
  r.prev_at = (double *)calloc((size_t)job.cap, sizeof(double));
  r.nprev = job.cap;
  CHECK(job.done_at && r.prev_at);
  f = evl_run_in_executor(loop, NULL, sender, &job, NULL);
  CHECK(f != NULL);
  start = next = test_now();
  while (!evl_future_done(f) || r.count < job.sent) {
    double frame_start = test_now(), wait;
    if (frame_start > start + job.secs + 10.0)
      break; /* (the counts below say what is missing) */
    evl_run_once(loop, 0);
    r.prev_on_time = prev_start > 0 && frame_start - prev_start < 3.0 / 60;
    prev_start = r.frame_prev = frame_start;
    frames++;
    next += 1.0 / 60;
    wait = next - test_now();
    if (wait > 0)
      test_sleep_ms((int)(wait * 1000));
  }
  CHECK_EQ(evl_future_error(f), 0);
  evl_future_release(f);
  for (i = 0; i < job.sent; i++) {
    if (r.prev_at[i] < 0)
      unjudged++;
    else if (r.prev_at[i] > 0 && job.done_at[i] < r.prev_at[i])
      late++;
  }
  printf("  %d datagrams in %.1f s over %d frames: %d received, %d out of "
         "order, %d delayed past one frame (%d after a late frame, not "
         "judged), longest %.1f ms\n",
         job.sent, job.secs, frames, r.count, r.bad_order, late, unjudged,
         r.worst * 1e3);
  CHECK_EQ(r.count, job.sent);
  CHECK_EQ(r.bad_order, 0);
  if (late && test_under_wine()) /* wine's select lags the kernel's
                                     queue on a loaded machine (seen once) */
    printf("  note: under wine, not failed for it\n");
  else
    CHECK_EQ(late, 0);
  free(job.done_at);
  free(r.prev_at);
  close_pair(loop, &r, s);
}

TESTS_BEGIN
T(udp_drained_per_iteration)
T(udp_budget_configured)
T(udp_pause_stops_batch)
T(udp_pause_resume_close_mid_batch)
T(stream_drained_per_iteration)
T(frame_loop_2000_per_second)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_NET: no transports")
#endif
