/* Closing and freeing the loop from inside its own callbacks (issue 11):
   evl_loop_close and evl_loop_free called from every kind of callback,
   while other objects of the loop sit at different stages of their life.

   The contract (evloop.h, "Ownership and lifetimes"):
   - while the loop runs (any callback of evl_run_*: call_soon, timers,
     readers, writers, done callbacks, tasks, protocol and subprocess
     callbacks, signal handlers, the exception handler), evl_loop_close
     returns EVL_ERUNNING and evl_loop_free does nothing but report
     EVL_ERUNNING to the exception handler: the loop goes on, its owner
     frees it once the run returned;
   - inside evl_loop_close (connection_lost(EVL_ECLOSED), the subprocess
     callbacks of a close, the exception handler for a future freed by the
     close), evl_loop_close is a no-op returning 0 and evl_loop_free is
     deferred: the loop is freed as that close returns, so the code that
     called evl_loop_close must not use it after;
   - a transport closed from inside a connection_lost of the close (the
     proxy pattern) gets its own connection_lost(EVL_ECLOSED) once, after
     the first one returned, never nested in it.
   Each scenario counts the loop's allocations (a counting allocator in
   the config: every one is given back once the loop is freed), the fds
   and the children (none left); the ASan build checks the rest.
   POSIX only (socketpair, fork, kill). */
#define _GNU_SOURCE 1
#include "test.h"

#ifndef EVLOOP_NO_PROCESS /* (else: see the end) */
#include "net_test.h"
#include "proc_test.h"

#ifndef _WIN32
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- what the callbacks do ---- */

enum { ACT_CLOSE, ACT_FREE };

/* Callback kinds: those that run while the loop runs, then those that run
   inside evl_loop_close. */
enum {
  K_SOON,
  K_TIMER,
  K_READER,
  K_WRITER,
  K_DONE,
  K_TASK,
  K_EXECUTOR,
  K_MADE,
  K_DATA,
  K_EOF,
  K_LOST,
  K_DGRAM,
  K_ERROR_RECEIVED,
  K_PAUSE_WRITING,
  K_STREAM_SERVER,
  K_SUB_MADE,
  K_SUB_DATA,
  K_SUB_PIPE_LOST,
  K_SUB_EXITED,
  K_SUB_LOST,
  K_SIGNAL,
  K_EXCEPTION,
  K_RUNNING_END, /* the ones below run inside evl_loop_close */
  KC_LOST,
  KC_SUB_PIPE_LOST,
  KC_SUB_LOST,
  KC_SUB_EXITED,
  KC_EXCEPTION,
  KC_LOG, /* the debug-mode log callback, reporting what the close finds */
  KC_TASK_FINALLY,     /* a task the close runs to its end: EVL_FINALLY */
  KC_TASK_CLEANUP,     /* ... and its evl_task_set_cleanup function */
  K_OUTSIDE_EXCEPTION, /* the handler, from a release outside any run */
  K_END
};
static const char *const kind_names[] = {"call_soon",
                                         "timer",
                                         "reader",
                                         "writer",
                                         "done callback",
                                         "task body",
                                         "executor done",
                                         "connection_made",
                                         "data_received",
                                         "eof_received",
                                         "connection_lost",
                                         "datagram_received",
                                         "error_received",
                                         "pause_writing",
                                         "start_server cb",
                                         "subprocess connection_made",
                                         "pipe_data_received",
                                         "pipe_connection_lost",
                                         "process_exited",
                                         "subprocess connection_lost",
                                         "signal handler",
                                         "exception handler",
                                         "-",
                                         "connection_lost at close",
                                         "pipe_connection_lost at close",
                                         "subprocess connection_lost at close",
                                         "process_exited at close",
                                         "exception handler at close",
                                         "debug log at close",
                                         "task finally section at close",
                                         "task cleanup at close",
                                         "exception handler outside the run"};

static int g_kind, g_action, g_acted, g_rc, g_was_running, g_run_rc;
static int g_handler_calls, g_refused; /* exception handler: all, ERUNNING */
static evl_loop *g_loop;
static int g_outer; /* the test's own evl_loop_close/free is under way */

static void act(evl_loop *loop, int kind) {
  if (kind != g_kind || g_acted)
    return;
  g_acted = 1;
  g_was_running = evl_loop_is_running(loop);
  g_run_rc = evl_run_once(loop, 0); /* never a run nested in its own */
  if (g_action == ACT_CLOSE)
    g_rc = evl_loop_close(loop);
  else
    evl_loop_free(loop);
}

static void handler(evl_loop *loop, const evl_context *ctx, void *arg) {
  (void)arg;
  g_handler_calls++;
  if (ctx->error == EVL_ERUNNING) {
    g_refused++;
    return;
  }
  if (ctx->future && ctx->error == EVL_EIO)
    act(loop, evl_loop_is_running(loop)       ? K_EXCEPTION
              : g_kind == K_OUTSIDE_EXCEPTION ? K_OUTSIDE_EXCEPTION
                                              : KC_EXCEPTION);
}
static void log_cb(evl_loop *loop, const char *message, void *ctx) {
  (void)message;
  (void)ctx;
  if (!evl_loop_is_running(loop)) /* (not a slow callback's line) */
    act(loop, KC_LOG);
}

/* ---- triggers ---- */

static void soon_cb(evl_loop *loop, void *arg) {
  act(loop, (int)(intptr_t)arg);
}
static void io_cb(evl_loop *loop, evl_fd fd, void *arg) {
  int kind = (int)(intptr_t)arg;
  act(loop, kind);
  if (kind == K_READER)
    evl_remove_reader(loop, fd);
  else
    evl_remove_writer(loop, fd);
}
static void done_cb(evl_future *f, void *arg) {
  act(evl_future_loop(f), (int)(intptr_t)arg);
}
static void task_fn(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  act(evl_task_loop(t), K_TASK);
  EVL_ASYNC_END(t);
}
/* A task the close cancels and runs to its end. */
static void close_task(evl_task *t, void *state) {
  (void)state;
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 30.0, NULL));
  EVL_FINALLY(t);
  act(evl_task_loop(t), KC_TASK_FINALLY);
  EVL_ASYNC_END(t);
}
static void close_task_cleanup(evl_task *t, void *state) {
  (void)state;
  act(evl_task_loop(t), KC_TASK_CLEANUP);
}
static int job(void *arg, void **result) {
  (void)arg;
  *result = NULL;
  return 0;
}
static void sig_cb(evl_loop *loop, int signum, void *arg) {
  (void)signum;
  (void)arg;
  act(loop, K_SIGNAL);
}
static void fail_soon(evl_loop *loop, void *arg) {
  evl_future *f = evl_future_new(loop);
  (void)arg;
  (void)evl_future_set_error(f, EVL_EIO, NULL);
  evl_future_release(f); /* never retrieved: the handler hears of it */
}

/* Transports: the proxy pair A/B at close, and the single-kind triggers. */
static evl_transport *g_a, *g_b;
static int g_pv1 = -1; /* B's peer */
static int g_depth, g_b_lost, g_b_err, g_b_nested;
static void p_made(evl_transport *t, void *user) {
  (void)user;
  act(evl_transport_loop(t), K_MADE);
}
static void p_data(evl_transport *t, const void *d, size_t n, void *user) {
  (void)d;
  (void)n;
  (void)user;
  act(evl_transport_loop(t), K_DATA);
}
static int p_eof(evl_transport *t, void *user) {
  (void)user;
  act(evl_transport_loop(t), K_EOF);
  return 0;
}
static void p_lost(evl_transport *t, int err, void *user) {
  evl_loop *loop = g_loop;
  (void)user;
  if (t == g_b) {
    g_b_lost++;
    g_b_err = err;
    g_b_nested = g_depth > 0;
    g_b = NULL;
    return;
  }
  g_depth++;
  if (t == g_a) {
    g_a = NULL;
    if (g_b) /* the proxy pattern: close the peer */
      evl_transport_close(g_b);
  }
  act(loop, err == EVL_ECLOSED ? KC_LOST : K_LOST);
  g_depth--;
}
static void p_dgram(evl_transport *t, const void *d, size_t n, const void *a,
                    size_t al, void *user) {
  (void)d;
  (void)n;
  (void)a;
  (void)al;
  (void)user;
  act(evl_transport_loop(t), K_DGRAM);
}
static void p_error(evl_transport *t, int err, void *user) {
  (void)err;
  (void)user;
  act(evl_transport_loop(t), K_ERROR_RECEIVED);
}
static void p_pause(evl_transport *t, void *user) {
  (void)user;
  act(evl_transport_loop(t), K_PAUSE_WRITING);
}
static const evl_protocol proto = {p_made, p_data, p_eof, p_lost,  p_pause,
                                   NULL,   NULL,   NULL,  p_dgram, p_error};

/* Writes past the high-water mark from a loop callback: pause_writing. */
static evl_transport *g_writer;
static void write_big(evl_loop *loop, void *arg) {
  static char big[1024 * 1024];
  (void)loop;
  (void)arg;
  (void)evl_transport_write(g_writer, big, sizeof big);
}

static evl_stream *g_srv_stream;
static void stream_cb(evl_stream *s, void *arg) {
  (void)arg;
  g_srv_stream = s;
  act(evl_stream_loop(s), K_STREAM_SERVER);
}

static void s_made(evl_subprocess *p, void *user) {
  (void)user;
  act(g_loop, K_SUB_MADE);
  (void)p;
}
static void s_data(evl_subprocess *p, int fd, const void *d, size_t n,
                   void *user) {
  (void)p;
  (void)fd;
  (void)d;
  (void)n;
  (void)user;
  act(g_loop, K_SUB_DATA);
}
static void s_pipe_lost(evl_subprocess *p, int fd, int err, void *user) {
  (void)p;
  (void)fd;
  (void)user;
  act(g_loop, err == EVL_ECLOSED ? KC_SUB_PIPE_LOST : K_SUB_PIPE_LOST);
}
static void s_exited(evl_subprocess *p, void *user) {
  (void)p;
  (void)user;
  act(g_loop, g_outer ? KC_SUB_EXITED : K_SUB_EXITED);
}
static void s_lost(evl_subprocess *p, int err, void *user) {
  (void)p;
  (void)user;
  act(g_loop, err == EVL_ECLOSED ? KC_SUB_LOST : K_SUB_LOST);
}
static const evl_subprocess_protocol sproto = {s_made, s_data, s_pipe_lost,
                                               s_exited, s_lost};

/* ---- the zoo: objects of the loop at different stages ---- */

typedef struct zoo {
  evl_future *f[12];
  int nf;
  int sv[2], qv[2], lfd;
} zoo;

static int tcp_listener(int *port) {
  return raw_tcp_listener(port, 16);
}

static int slow_job(void *arg, void **result) {
  (void)arg;
  test_sleep_ms(30);
  *result = NULL;
  return 0;
}

static const char *const sleep_argv[] = {"sleep", "30", NULL};

static void zoo_make(evl_loop *loop, zoo *z) {
  static char big[256 * 1024];
  evl_transport *t;
  int port = 0;
  memset(z, 0, sizeof *z);
  z->lfd = tcp_listener(&port);
  z->f[z->nf++] = evl_create_server(loop, &proto, NULL, "127.0.0.1", 0, NULL);
  z->f[z->nf++] =
      evl_create_connection(loop, &proto, NULL, "127.0.0.1", port, NULL);
  z->f[z->nf++] = evl_open_connection(loop, "127.0.0.1", port, 0, NULL);
  z->f[z->nf++] = evl_create_subprocess_exec(loop, sleep_argv, NULL, 0);
  z->f[z->nf++] = evl_sleep(loop, 30.0, NULL);
  z->f[z->nf++] = evl_run_in_executor(loop, NULL, slow_job, NULL, NULL);
  z->f[z->nf++] = evl_getaddrinfo(loop, "localhost", "80", 0, 0, 0, 0);
  z->f[z->nf++] = evl_create_datagram_endpoint(loop, &proto, NULL, "127.0.0.1",
                                               0, NULL, 0, NULL);
  /* A connection with bytes queued (its peer never reads). */
  CHECK(test_socketpair(z->sv) == 0);
  CHECK(test_set_nonblocking(z->sv[0]) == 0);
  t = evl_connect_accepted_socket(loop, &proto, NULL, z->sv[0]);
  CHECK(t != NULL);
  CHECK_EQ(evl_transport_write(t, big, sizeof big), 0);
  CHECK(test_socketpair(z->qv) == 0);
  CHECK_EQ(evl_add_reader(loop, z->qv[0], io_cb, (void *)(intptr_t)K_END), 0);
}

/* After the loop is gone: what the zoo's futures delivered is the
   caller's to free (streams, processes, servers were the loop's). */
static void zoo_free(zoo *z) {
  int i;
  for (i = 0; i < z->nf; i++) {
    evl_future *f = z->f[i];
    if (!f)
      continue;
    if (evl_future_error(f) == 0 && i == 2)
      evl_stream_free((evl_stream *)evl_future_result(f));
    if (evl_future_error(f) == 0 && i == 3)
      evl_process_free((evl_process *)evl_future_result(f));
    evl_future_release(f);
  }
  close(z->sv[1]);
  close(z->qv[0]);
  close(z->qv[1]);
  close(z->lfd);
}

/* ---- one scenario ---- */

static void check_no_children(void) {
  int st;
  pid_t r = waitpid(-1, &st, WNOHANG);
  CHECK(r < 0 && errno == ECHILD);
}

/* Starts what makes callback `kind` run. */
static void trigger(evl_loop *loop, int kind, int sv[2], evl_future **held) {
  static const char *const echo_argv[] = {"sh", "-c", "echo hi", NULL};
  static const char *const sleep_arg[] = {"sleep", "30", NULL};
  evl_transport *t;
  char c = 'x';
  *held = NULL;
  sv[0] = sv[1] = -1;
  switch (kind) {
  case K_SOON:
  case KC_EXCEPTION + 100: /* (unused) */
    CHECK(evl_call_soon(loop, soon_cb, (void *)(intptr_t)kind) > 0);
    break;
  case K_TIMER:
    CHECK(evl_call_later(loop, 0.01, soon_cb, (void *)(intptr_t)kind) > 0);
    break;
  case K_READER:
  case K_WRITER:
    CHECK(test_socketpair(sv) == 0);
    CHECK(write(sv[1], &c, 1) == 1);
    CHECK_EQ(kind == K_READER
                 ? evl_add_reader(loop, sv[0], io_cb, (void *)(intptr_t)kind)
                 : evl_add_writer(loop, sv[0], io_cb, (void *)(intptr_t)kind),
             0);
    break;
  case K_DONE:
    *held = evl_future_new(loop);
    CHECK_EQ(
        evl_future_add_done_callback(*held, done_cb, (void *)(intptr_t)kind),
        0);
    CHECK_EQ(evl_future_set_result(*held, NULL), 0);
    break;
  case K_TASK:
    *held = evl_task_new(loop, task_fn, NULL, 0);
    break;
  case K_EXECUTOR:
    *held = evl_run_in_executor(loop, NULL, job, NULL, NULL);
    CHECK_EQ(
        evl_future_add_done_callback(*held, done_cb, (void *)(intptr_t)kind),
        0);
    break;
  case K_MADE:
  case K_DATA:
  case K_EOF:
  case K_LOST:
  case KC_LOST:
    if (kind == KC_LOST) { /* the proxy's peer B, made before A */
      int pv[2];
      CHECK(test_socketpair(pv) == 0);
      CHECK(test_set_nonblocking(pv[0]) == 0);
      g_b = evl_connect_accepted_socket(loop, &proto, NULL, pv[0]);
      CHECK(g_b != NULL);
      g_pv1 = pv[1];
    }
    CHECK(test_socketpair(sv) == 0);
    CHECK(test_set_nonblocking(sv[0]) == 0);
    t = evl_connect_accepted_socket(loop, &proto, NULL, sv[0]);
    CHECK(t != NULL);
    if (kind == KC_LOST)
      g_a = t; /* the loop ends A first (the newest), whose lost closes B */
    if (kind == K_DATA)
      CHECK(write(sv[1], &c, 1) == 1);
    if (kind == K_EOF || kind == K_LOST) {
      close(sv[1]);
      sv[1] = -1;
    }
    break;
  case K_DGRAM: {
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    *held = evl_create_datagram_endpoint(loop, &proto, NULL, "127.0.0.1", 0,
                                         NULL, 0, NULL);
    CHECK_EQ(evl_run_until_complete(loop, *held), 0);
    t = (evl_transport *)evl_future_result(*held);
    CHECK_EQ(evl_transport_get_sockname(t, &ss, &len), 0);
    CHECK(sendto(u, &c, 1, 0, (struct sockaddr *)&ss, (socklen_t)len) == 1);
    close(u);
    break;
  }
  case K_ERROR_RECEIVED: { /* a datagram to a port nobody listens on */
    int port = 0, l = tcp_listener(&port); /* a free port number... */
    close(l);
    *held = evl_create_datagram_endpoint(loop, &proto, NULL, NULL, 0,
                                         "127.0.0.1", port, NULL);
    CHECK_EQ(evl_run_until_complete(loop, *held), 0);
    t = (evl_transport *)evl_future_result(*held);
    CHECK_EQ(evl_transport_sendto(t, &c, 1, NULL, 0), 0);
    break;
  }
  case K_PAUSE_WRITING:
    CHECK(test_socketpair(sv) == 0);
    CHECK(test_set_nonblocking(sv[0]) == 0);
    g_writer = evl_connect_accepted_socket(loop, &proto, NULL, sv[0]);
    CHECK(g_writer != NULL);
    CHECK_EQ(evl_transport_set_write_buffer_limits(g_writer, 1024, 0), 0);
    CHECK(evl_call_soon(loop, write_big, NULL) > 0);
    break;
  case K_STREAM_SERVER: {
    evl_server *srv;
    evl_future *f =
        evl_start_server(loop, stream_cb, NULL, "127.0.0.1", 0, 0, NULL);
    CHECK_EQ(evl_run_until_complete(loop, f), 0);
    srv = (evl_server *)evl_future_result(f);
    evl_future_release(f);
    *held =
        evl_open_connection(loop, "127.0.0.1", evl_server_port(srv), 0, NULL);
    break;
  }
  case K_SUB_MADE:
  case K_SUB_DATA:
  case K_SUB_PIPE_LOST:
  case K_SUB_EXITED:
  case K_SUB_LOST:
    *held = evl_subprocess_exec(loop, &sproto, NULL, echo_argv, NULL);
    break;
  case KC_SUB_PIPE_LOST:
  case KC_SUB_LOST:
  case KC_SUB_EXITED:
    *held = evl_subprocess_exec(loop, &sproto, NULL, sleep_arg, NULL);
    break;
  case K_SIGNAL:
    CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, sig_cb, NULL), 0);
    CHECK(kill(getpid(), SIGUSR1) == 0);
    break;
  case K_EXCEPTION:
    CHECK(evl_call_soon(loop, fail_soon, NULL) > 0);
    break;
  case KC_TASK_FINALLY:
  case KC_TASK_CLEANUP:
    *held = evl_task_new(loop, close_task, NULL, 0);
    CHECK_EQ(evl_task_set_cleanup(*held, close_task_cleanup), 0);
    break;
  case KC_EXCEPTION: { /* freed by the close: the fire's reference */
    evl_future *f = evl_future_new(loop);
    CHECK_EQ(evl_future_add_done_callback(f, done_cb, (void *)(intptr_t)K_END),
             0);
    CHECK_EQ(evl_future_set_error(f, EVL_EIO, NULL), 0);
    evl_future_release(f);
    break;
  }
  }
}

static int g_base_fds;

/* kind's callback calls `action`; zoo_iters: loop iterations the zoo runs
   before the trigger; outer_free: the close from outside is evl_loop_free
   (else evl_loop_close, then evl_loop_free unless the callback freed). */
static void scenario(int kind, int action, int zoo_iters, int outer_free) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_future *held;
  zoo z;
  int sv[2], i,
      inside_close = kind > K_RUNNING_END && kind != K_OUTSIDE_EXCEPTION;
  if (getenv("T_VERBOSE"))
    printf("  %s: %s, zoo after %d iterations, outer %s\n", kind_names[kind],
           action == ACT_CLOSE ? "close" : "free", zoo_iters,
           outer_free ? "free" : "close");
  memset(&cfg, 0, sizeof cfg); /* allocations counted: test_open_with */
  if (kind == KC_LOG) {
    cfg.debug = 1;
    cfg.log = log_cb;
  }
  g_test_live = 0;
  g_kind = K_END; /* nothing acts before the trigger */
  loop = test_open_with(&cfg);
  g_loop = loop;
  evl_set_exception_handler(loop, handler, NULL);
  g_kind = kind;
  g_action = action;
  g_acted = g_rc = g_was_running = g_handler_calls = g_refused = 0;
  g_run_rc = 1;
  g_a = g_b = NULL;
  g_b_lost = g_b_err = g_b_nested = g_depth = 0;
  g_srv_stream = NULL;
  zoo_make(loop, &z);
  for (i = 0; i < zoo_iters; i++)
    evl_run_once(loop, 0.01);
  trigger(loop, kind, sv, &held);
  if (kind == K_OUTSIDE_EXCEPTION) {
    /* Not running, not closing: both take effect at once. */
    evl_future *f = evl_future_new(loop);
    run_for(loop, 0.02);
    CHECK_EQ(evl_future_set_error(f, EVL_EIO, NULL), 0);
    evl_future_release(f); /* the handler runs in here */
    CHECK(g_acted);
    CHECK(!g_was_running);
    CHECK(g_run_rc >= 0); /* evl_run_once from it runs (callbacks run) */
    if (action == ACT_CLOSE) {
      CHECK_EQ(g_rc, 0);
      CHECK(evl_loop_is_closed(loop));
      evl_loop_free(loop);
    }
  } else if (!inside_close) {
    RUN_UNTIL(loop, g_acted);
    CHECK(g_was_running);
    CHECK_EQ(g_run_rc, EVL_ERUNNING);
    if (action == ACT_CLOSE)
      CHECK_EQ(g_rc, EVL_ERUNNING);
    else
      CHECK_EQ(g_refused, 1);
    CHECK(!evl_loop_is_closed(loop));
    /* The loop still works. */
    g_acted = 0;
    g_kind = K_SOON;
    g_action = -1;
    CHECK(evl_call_soon(loop, soon_cb, (void *)(intptr_t)K_SOON) > 0);
    RUN_UNTIL(loop, g_acted);
    if (g_srv_stream)
      evl_stream_free(g_srv_stream);
    evl_loop_free(loop);
  } else {
    if (kind == KC_SUB_PIPE_LOST || kind == KC_SUB_LOST ||
        kind == KC_SUB_EXITED)
      RUN_UNTIL(loop, evl_future_done(held));
    else if (kind != KC_EXCEPTION && kind != KC_LOG) /* (for the close) */
      run_for(loop, 0.02);
    CHECK(!g_acted);
    g_outer = 1;
    if (outer_free) {
      evl_loop_free(loop); /* the callback's free or close: no effect */
    } else {
      CHECK_EQ(evl_loop_close(loop), 0);
      if (action == ACT_CLOSE)
        evl_loop_free(loop);
      /* else: the callback's evl_loop_free freed it as the close ended */
    }
    g_outer = 0;
    CHECK(g_acted);
    if (kind == KC_TASK_FINALLY || kind == KC_TASK_CLEANUP) {
      /* The close runs its tasks with the loop running: a close from
         there is refused, a free waits for the close to end. */
      CHECK(g_was_running);
      CHECK_EQ(g_run_rc, EVL_ERUNNING);
      if (action == ACT_CLOSE)
        CHECK_EQ(g_rc, EVL_ERUNNING);
    } else {
      CHECK(!g_was_running);
      CHECK_EQ(g_run_rc, EVL_ECLOSED);
      if (action == ACT_CLOSE)
        CHECK_EQ(g_rc, 0);
    }
    CHECK_EQ(g_refused, 0);
    if (kind == KC_LOST) { /* the proxy's peer: once, after, ECLOSED */
      CHECK_EQ(g_b_lost, 1);
      CHECK_EQ(g_b_nested, 0);
      CHECK_EQ(g_b_err, EVL_ECLOSED);
    }
  }
  if (held) {
    if (kind == K_STREAM_SERVER && evl_future_error(held) == 0)
      evl_stream_free((evl_stream *)evl_future_result(held));
    evl_future_release(held);
  }
  zoo_free(&z);
  if (sv[0] >= 0 && kind != K_MADE && kind != K_DATA && kind != K_EOF &&
      kind != K_LOST && kind != KC_LOST && kind != K_PAUSE_WRITING)
    close(sv[0]); /* not given to a transport */
  if (sv[1] >= 0)
    close(sv[1]);
  if (g_pv1 >= 0)
    close(g_pv1);
  g_pv1 = -1;
  if (g_test_live != 0)
    printf("  %s, %s: %ld allocations of the loop left\n", kind_names[kind],
           action == ACT_CLOSE ? "close" : "free", g_test_live);
  CHECK_EQ(g_test_live, 0);
  check_no_children();
  CHECK_EQ(test_count_fds(), g_base_fds);
}

/* The signal slots keep their self-pipe for good once used: use them
   once before counting. */
static void warm_up(void) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, sig_cb, NULL), 0);
  test_close(loop);
  test_settle_fds();
  g_base_fds = test_count_fds();
}

static void sweep(int from, int to) {
  int kind, action, iters, outer, n = 0;
  warm_up();
  for (kind = from; kind < to; kind++)
    for (action = ACT_CLOSE; action <= ACT_FREE; action++)
      for (iters = 0; iters <= 3; iters += 3)
        for (outer = 0;
             outer <= (kind > K_RUNNING_END && kind != K_OUTSIDE_EXCEPTION);
             outer++) {
          scenario(kind, action, iters, outer);
          n++;
        }
  printf("  %d scenarios\n", n);
}

TEST(close_and_free_from_running_callbacks) {
  sweep(K_SOON, K_RUNNING_END);
}
TEST(close_and_free_from_callbacks_inside_close) {
  sweep(K_RUNNING_END + 1, K_OUTSIDE_EXCEPTION);
}
TEST(close_and_free_from_handler_outside_run) {
  sweep(K_OUTSIDE_EXCEPTION, K_END);
}

/* Issue 11, bug 5: the proxy pattern alone, on a plain loop. */
TEST(proxy_close_inside_connection_lost_at_close) {
  warm_up();
  scenario(KC_LOST, ACT_CLOSE, 0, 1);
  scenario(KC_LOST, ACT_FREE, 0, 0);
}

/* Issue 11, bug 3: the loop freed right after a spawn, before the child's
   pipes started (and a few iterations later). */
TEST(free_loop_right_after_spawn) {
  static const char *const argv[] = {"sleep", "30", NULL};
  int k, kind;
  warm_up();
  for (kind = 0; kind < 2; kind++)
    for (k = 0; k < 3; k++) {
      evl_loop *loop;
      evl_future *f;
      int i;
      g_test_live = 0;
      loop = test_open();
      g_loop = loop;
      g_kind = K_END;
      f = kind ? evl_create_subprocess_exec(loop, argv, NULL, 0)
               : evl_subprocess_exec(loop, &sproto, NULL, argv, NULL);
      CHECK(f != NULL);
      for (i = 0; i < k; i++)
        evl_run_once(loop, 0);
      evl_loop_free(loop);
      if (evl_future_error(f) == 0 && kind)
        evl_process_free((evl_process *)evl_future_result(f));
      evl_future_release(f);
      CHECK_EQ(g_test_live, 0);
      check_no_children();
      CHECK_EQ(test_count_fds(), g_base_fds);
    }
}

#endif /* !_WIN32 */

TESTS_BEGIN
T_POSIX(close_and_free_from_running_callbacks, "POSIX fds, fork, kill")
T_POSIX(close_and_free_from_callbacks_inside_close, "POSIX fds, fork, kill")
T_POSIX(close_and_free_from_handler_outside_run, "POSIX fds, fork, kill")
T_POSIX(proxy_close_inside_connection_lost_at_close, "POSIX socketpair")
T_POSIX(free_loop_right_after_spawn, "POSIX children")
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_PROCESS: the sweeps spawn children")
#endif
