/* Configuration: this file is its own implementation file, built with
   EVLOOP_STATIC (every function static: it does not use impl.o) and a
   counting compile-time allocator (EVLOOP_MALLOC & co.). It also checks the
   run-time allocator of evl_loop_config (every byte given back, and any
   allocation failing gives an error code, never a crash or a leak), and
   that the call-site macros still work after the implementation. */
#define _GNU_SOURCE 1 /* before any system header, as evloop.h asks */
#include <pthread.h>
#include <stdlib.h>

/* Compile-time allocator: live blocks, counted under a lock since executor
   threads allocate too. */
static long g_malloc_live;
static pthread_mutex_t g_malloc_mu = PTHREAD_MUTEX_INITIALIZER;
static void count_live(long d) {
  pthread_mutex_lock(&g_malloc_mu);
  g_malloc_live += d;
  pthread_mutex_unlock(&g_malloc_mu);
}
static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p)
    count_live(1);
  return p;
}
static void *count_realloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!p && q)
    count_live(1);
  return q;
}
static void count_free(void *p) {
  if (p)
    count_live(-1);
  free(p);
}
#define EVLOOP_MALLOC(ctx, n) count_malloc(n)
#define EVLOOP_REALLOC(ctx, p, n) count_realloc((p), (n))
#define EVLOOP_FREE(ctx, p) count_free(p)
#define EVLOOP_STATIC
#define EVLOOP_IMPLEMENTATION
#include "alloc_test.h" /* the failing allocator: stat_alloc, alloc_sweep */

static void reader(evl_loop *loop, evl_fd fd, void *arg) {
  char c;
  (void)loop;
  if (test_recv((int)fd, &c, 1) == 1)
    (*(int *)arg)++;
}

static void count_done(evl_future *fut, void *arg) {
  (void)fut;
  (*(int *)arg)++;
}

typedef struct sleeper {
  int done;
} sleeper;
static void sleepy(evl_task *t, void *state) {
  sleeper *s = (sleeper *)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.001, NULL));
  s->done = 1;
  EVL_ASYNC_END(t);
}

/* A workload touching every allocation site that does not need threads:
   slots and ring (callbacks), the heap (timers), the fd table, futures and
   their callback lists, tasks, sleep, gather, wait_for. Each step may fail
   with an error code when memory runs out; nothing may crash or leak. */
static int workload(evl_loop *loop) {
  int fds[2], got = 0, hits = 0, i;
  evl_future *f, *g, *w, *kids[2];
  evl_task *t;
  sleeper st = {0};
  if (test_socketpair(fds) != 0)
    return -1;
  for (i = 0; i < 300; i++) {
    if (evl_call_soon(loop, test_count_cb, &hits) > 0)
      got++;
    if (evl_call_later(loop, 0.0001 * (i % 7), test_count_cb, &hits) > 0)
      got++;
  }
  if (evl_add_reader(loop, fds[0], reader, &hits) == 0)
    got++;
  if (test_send(fds[1], "x", 1) != 1)
    got--;
  f = evl_future_new(loop);
  if (f) {
    (void)evl_future_add_done_callback(f, count_done, &hits);
  }
  t = evl_task_create(loop, sleepy, &st, 0);
  kids[0] = evl_sleep(loop, 0.001, NULL);
  kids[1] = evl_sleep(loop, 0.002, NULL);
  g = kids[0] && kids[1] ? evl_gather(loop, kids, 2, 0) : NULL;
  w = evl_wait_for(evl_sleep(loop, 10.0, NULL), 0.002);
  if (f)
    (void)evl_future_set_result(f, NULL);
  for (i = 0; i < 10; i++)
    (void)evl_run_once(loop, 0.001);
  evl_remove_reader(loop, fds[0]);
  /* Retrieve the errors (ETIMEDOUT, ENOMEM...): they are expected here. */
  (void)evl_future_error(t);
  (void)evl_future_error(g);
  (void)evl_future_error(w);
  evl_future_release(f);
  evl_future_release(t);
  evl_future_release(kids[0]);
  evl_future_release(kids[1]);
  evl_future_release(g);
  evl_future_release(w);
  test_closesocket(fds[0]);
  test_closesocket(fds[1]);
  return got + hits;
}

TEST(runtime_allocator_gets_every_byte_back) {
  alloc_stats st = {0, 0, -1, 0};
  evl_loop_config cfg;
  evl_loop *loop;
  memset(&cfg, 0, sizeof cfg);
  cfg.alloc = stat_alloc;
  cfg.alloc_ctx = &st;
  loop = test_open_with(&cfg);
  CHECK(workload(loop) > 1000);
  CHECK(st.total > 5);
  test_close(loop);
  CHECK_EQ(st.live, 0);
}

/* Runs work once to count its allocations (it must reach at least
   min_result), then once per allocation with that one failing: every run
   must give every byte back. Returns the count. */
static long fail_each_allocation(int (*work)(evl_loop *, void *), void *arg,
                                 int min_result) {
  long total = 0;
  (void)alloc_sweep(work, arg, min_result, SWEEP_ONE, &total);
  return total;
}

static int plain_workload(evl_loop *loop, void *arg) {
  (void)arg;
  return workload(loop);
}

TEST(every_failing_allocation_is_an_error_not_a_crash_or_leak) {
  (void)fail_each_allocation(plain_workload, NULL, 1000);
}

/* The same for the network paths (on IOCP the completion requests too):
   a server, a connection echoing 256 KiB, a datagram pair, each step
   allowed to fail for want of memory, the loop freed with whatever is
   still open or in flight. */
typedef struct netload {
  int made, lost;
  size_t got;
  evl_transport *client;
} netload;
static void nl_made(evl_transport *t, void *user) {
  ((netload *)user)->made++;
  (void)t;
}
static void nl_lost(evl_transport *t, int err, void *user) {
  netload *n = (netload *)user;
  (void)err;
  n->lost++;
  if (t == n->client)
    n->client = NULL;
}
static void nl_echo(evl_transport *t, const void *d, size_t len, void *user) {
  (void)user;
  (void)evl_transport_write(t, d, len);
}
static void nl_count(evl_transport *t, const void *d, size_t len, void *user) {
  (void)t;
  (void)d;
  ((netload *)user)->got += len;
}
static void nl_dgram(evl_transport *t, const void *d, size_t len,
                     const void *addr, size_t addrlen, void *user) {
  (void)t;
  (void)d;
  (void)addr;
  (void)addrlen;
  ((netload *)user)->got += len + 1;
}
static const evl_protocol nl_server = {nl_made, nl_echo, NULL, nl_lost,  NULL,
                                       NULL,    NULL,    NULL, nl_dgram, NULL};
static const evl_protocol nl_client = {nl_made, nl_count, NULL, nl_lost, NULL,
                                       NULL,    NULL,     NULL, NULL,    NULL};

static evl_future *nl_wait(evl_loop *loop, evl_future *f) {
  int i;
  for (i = 0; f && !evl_future_done(f) && i < 200; i++)
    (void)evl_run_once(loop, 0.002);
  return f;
}

/* nl[0] the server side, nl[1] the client side: they outlive the workload
   (the transports left open are closed by evl_loop_free). */
#define srv nl[0]
#define cl nl[1]
static int net_workload(evl_loop *loop, netload nl[2]) {
  static unsigned char big[256 * 1024];
  evl_future *fs, *fc = NULL, *fu = NULL, *fv = NULL;
  evl_server *s = NULL;
  evl_transport *u = NULL, *v = NULL;
  int i, port;
  memset(nl, 0, 2 * sizeof *nl);
  fs = nl_wait(loop,
               evl_create_server(loop, &nl_server, &srv, "127.0.0.1", 0, NULL));
  if (fs && evl_future_done(fs) && !evl_future_error(fs))
    s = (evl_server *)evl_future_result(fs);
  port = s ? evl_server_port(s) : 0;
  if (port > 0)
    fc = nl_wait(loop, evl_create_connection(loop, &nl_client, &cl, "127.0.0.1",
                                             port, NULL));
  if (fc && evl_future_done(fc) && !evl_future_error(fc)) {
    cl.client = (evl_transport *)evl_future_result(fc);
    (void)evl_transport_write(cl.client, big, sizeof big);
  }
  fu =
      nl_wait(loop, evl_create_datagram_endpoint(
                        loop, &nl_server, &srv, "127.0.0.1", 0, NULL, 0, NULL));
  if (fu && evl_future_done(fu) && !evl_future_error(fu)) {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    u = (evl_transport *)evl_future_result(fu);
    if (evl_transport_get_sockname(u, &ss, &len) == 0)
      fv = nl_wait(loop,
                   evl_create_datagram_endpoint(
                       loop, &nl_client, &cl, NULL, 0, "127.0.0.1",
                       ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port),
                       NULL));
  }
  if (fv && evl_future_done(fv) && !evl_future_error(fv)) {
    v = (evl_transport *)evl_future_result(fv);
    for (i = 0; i < 8; i++)
      (void)evl_transport_sendto(v, big, 100 + (size_t)i, NULL, 0);
  }
  for (i = 0; i < 300 && cl.client && cl.got < sizeof big; i++)
    (void)evl_run_once(loop, 0.002);
  if (cl.client && i % 2) /* half the time: closed, else left to the loop */
    evl_transport_close(cl.client);
  for (i = 0; i < 5; i++)
    (void)evl_run_once(loop, 0.001);
  evl_future_release(fs);
  evl_future_release(fc);
  evl_future_release(fu);
  evl_future_release(fv);
  return (int)(cl.got + srv.got);
}
#undef srv
#undef cl

static int net_workload_arg(evl_loop *loop, void *arg) {
  return net_workload(loop, (netload *)arg);
}

TEST(every_failing_allocation_in_networking_is_an_error) {
  netload nl[2];
  long live0 = g_malloc_live, total;
  total = fail_each_allocation(net_workload_arg, nl, 256 * 1024);
  CHECK_EQ(g_malloc_live, live0); /* servers come from EVLOOP_MALLOC */
  printf("  note: %ld allocations, each failed once\n", total);
}

/* ---- the compile-time allocator and EVLOOP_STATIC --------------------- */

static int twice(void *arg, void **result) {
  *result = (void *)((intptr_t)arg * 2);
  return 0;
}

TEST(compile_time_allocator_balances_with_threads) {
  /* The executor, its jobs and the cross-thread queue use EVLOOP_MALLOC. */
  evl_loop *loop = test_loop();
  evl_future *f = evl_run_in_executor(loop, NULL, twice, (void *)21, NULL);
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  CHECK_EQ((intptr_t)evl_future_result(f), 42);
  evl_future_release(f);
  CHECK(g_malloc_live > 0);
  evl_loop_free(loop);
  CHECK_EQ(g_malloc_live, 0);
}

/* ---- call sites in the implementation file ---------------------------- */

static char g_logged[512];
static void keep_log(evl_loop *loop, const char *msg, void *ctx) {
  (void)loop;
  (void)ctx;
  snprintf(g_logged, sizeof g_logged, "%s", msg);
}
static void slow_callback_here(evl_loop *loop, void *arg) {
  double end = test_now() + 0.03;
  (void)loop;
  (void)arg;
  while (test_now() < end) {
  }
}

TEST(call_sites_are_recorded_after_the_implementation) {
  evl_loop_config cfg;
  evl_loop *loop;
  char where[64];
  int line;
  memset(&cfg, 0, sizeof cfg);
  cfg.debug = 1;
  cfg.log = keep_log;
  loop = test_open_with(&cfg);
  evl_set_slow_callback_duration(loop, 0.01);
  line = __LINE__ + 1;
  CHECK(evl_call_soon(loop, slow_callback_here, NULL) > 0);
  CHECK_EQ(evl_run_once(loop, 0), 1);
  snprintf(where, sizeof where, "t_config.c:%d", line);
  if (!strstr(g_logged, "slow_callback_here") || !strstr(g_logged, where)) {
    fprintf(stderr, "  logged: %s\n", g_logged);
    CHECK(0);
  }
  test_close(loop);
}

TESTS_BEGIN
T(runtime_allocator_gets_every_byte_back)
T(every_failing_allocation_is_an_error_not_a_crash_or_leak)
T(every_failing_allocation_in_networking_is_an_error)
T(compile_time_allocator_balances_with_threads)
T(call_sites_are_recorded_after_the_implementation)
TESTS_END
