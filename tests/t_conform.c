/* asyncio's behaviour to the letter (issue 12): ordering, fd reuse,
   ownership and the places where evloop.h says it departs. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "core_test.h"
#include "net_test.h"

#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#endif

#ifndef EVLOOP_NO_THREADS
#ifdef _WIN32
#include <process.h>
#else
#include <pthread.h>
#endif
#endif

/* ---- call_soon and call_soon_threadsafe feed one FIFO ---------------- */

static char g_order[16];
static int g_norder;
static void note_cb(evl_loop *loop, void *arg) {
  (void)loop;
  if (g_norder < 15)
    g_order[g_norder++] = (char)(uintptr_t)arg;
}

static void schedule_both_cb(evl_loop *loop, void *arg) {
  (void)arg;
  CHECK_EQ(evl_call_soon_threadsafe(loop, note_cb, (void *)(uintptr_t)'A'), 0);
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'B') > 0);
  CHECK_EQ(evl_call_soon_threadsafe(loop, note_cb, (void *)(uintptr_t)'C'), 0);
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'D') > 0);
}

TEST(threadsafe_then_soon_from_loop_thread_run_in_order) {
  evl_loop *loop = test_open();
  g_norder = 0;
  CHECK(evl_call_soon(loop, schedule_both_cb, NULL) > 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  g_order[g_norder] = 0;
  CHECK(strcmp(g_order, "ABCD") == 0);
  test_close(loop);
}

#ifndef EVLOOP_NO_THREADS
#ifdef _WIN32
static unsigned __stdcall post_a_main(void *arg) {
  evl_call_soon_threadsafe((evl_loop *)arg, note_cb, (void *)(uintptr_t)'A');
  return 0;
}
#else
static void *post_a_main(void *arg) {
  evl_call_soon_threadsafe((evl_loop *)arg, note_cb, (void *)(uintptr_t)'A');
  return NULL;
}
#endif

/* The other thread's call_soon_threadsafe happens before the join, the
   join before this call_soon: A must run first. */
static void join_then_soon_cb(evl_loop *loop, void *arg) {
#ifdef _WIN32
  HANDLE th = (HANDLE)_beginthreadex(NULL, 0, post_a_main, loop, 0, NULL);
  (void)arg;
  CHECK(th != NULL);
  WaitForSingleObject(th, INFINITE);
  CloseHandle(th);
#else
  pthread_t th;
  (void)arg;
  CHECK_EQ(pthread_create(&th, NULL, post_a_main, loop), 0);
  CHECK_EQ(pthread_join(th, NULL), 0);
#endif
  CHECK(evl_call_soon(loop, note_cb, (void *)(uintptr_t)'B') > 0);
}

TEST(threadsafe_from_other_thread_runs_before_later_soon) {
  evl_loop *loop = test_open();
  int i;
  g_norder = 0;
  CHECK(evl_call_soon(loop, join_then_soon_cb, NULL) > 0);
  for (i = 0; i < 5 && g_norder < 2; i++)
    evl_run_once(loop, 0.05);
  g_order[g_norder] = 0;
  CHECK(strcmp(g_order, "AB") == 0);
  test_close(loop);
}
#endif

/* ---- events carry the identity of the watcher ------------------------- */
#ifndef _WIN32
static int g_old_reads, g_new_reads, g_fresh[2], g_reused_fd;
static void old_reader(evl_loop *loop, evl_fd fd, void *arg) {
  (void)loop;
  (void)fd;
  (void)arg;
  g_old_reads++;
}
static void new_reader(evl_loop *loop, evl_fd fd, void *arg) {
  char buf[16];
  (void)loop;
  (void)arg;
  g_new_reads++;
  CHECK(read((int)fd, buf, sizeof buf) > 0); /* it is really readable */
}
/* Runs before the fd event the poll queued for the old reader. */
static void reuse_fd_cb(evl_loop *loop, void *arg) {
  (void)arg;
  CHECK_EQ(evl_remove_reader(loop, g_reused_fd), 1);
  CHECK_EQ(dup2(g_fresh[0], g_reused_fd), g_reused_fd);
  CHECK_EQ(evl_add_reader(loop, g_reused_fd, new_reader, NULL), 0);
}

TEST(fd_event_not_given_to_new_reader_on_reused_fd) {
  evl_loop *loop = test_open();
  int old[2];
  CHECK_EQ(test_socketpair(old), 0);
  CHECK_EQ(test_socketpair(g_fresh), 0);
  test_set_nonblocking(old[0]);
  test_set_nonblocking(g_fresh[0]);
  g_reused_fd = old[0];
  CHECK_EQ(test_send(old[1], "x", 1), 1); /* the old socket is readable */
  CHECK_EQ(evl_add_reader(loop, old[0], old_reader, NULL), 0);
  CHECK(evl_call_soon(loop, reuse_fd_cb, NULL) > 0);
  CHECK(evl_run_once(loop, 0) >= 0);
  CHECK_EQ(g_old_reads, 0);
  CHECK_EQ(g_new_reads, 0); /* the fresh socket has nothing to read */
  /* The new reader works once its own socket is readable. */
  CHECK_EQ(test_send(g_fresh[1], "y", 1), 1);
  RUN_UNTIL(loop, g_new_reads == 1);
  CHECK_EQ(evl_remove_reader(loop, g_reused_fd), 1);
  test_close(loop);
  close(old[0]);
  close(old[1]);
  close(g_fresh[0]);
  close(g_fresh[1]);
}
#endif

/* ---- a transport's or server's fd is not the user's to watch ---------- */
static int g_got;
static void count_data(evl_transport *t, const void *d, size_t n, void *u) {
  (void)t;
  (void)d;
  (void)u;
  g_got += (int)n;
}
static void never_io(evl_loop *loop, evl_fd fd, void *arg) {
  (void)loop;
  (void)fd;
  (void)arg;
  CHECK(!"a user watcher ran on a transport's fd");
}
static const evl_protocol count_proto = {NULL, count_data, NULL, NULL, NULL,
                                         NULL, NULL,       NULL, NULL, NULL};

TEST(transport_and_server_fds_refuse_add_and_remove_reader) {
  evl_loop *loop = test_open();
  evl_transport *t;
  evl_future *f;
  evl_server *srv;
  evl_fd lfd;
  int sv[2];
  CHECK_EQ(test_socketpair(sv), 0);
  t = evl_connect_accepted_socket(loop, &count_proto, NULL, sv[0]);
  CHECK(t != NULL);
  CHECK_EQ(evl_add_reader(loop, sv[0], never_io, NULL), EVL_EBUSY);
  CHECK_EQ(evl_add_writer(loop, sv[0], never_io, NULL), EVL_EBUSY);
  evl_run_once(loop, 0); /* connection_made: the transport reads */
  CHECK_EQ(evl_remove_reader(loop, sv[0]), EVL_EBUSY);
  CHECK_EQ(evl_remove_writer(loop, sv[0]), EVL_EBUSY);
  CHECK_EQ(test_send(sv[1], "hello", 5), 5);
  RUN_UNTIL(loop, g_got == 5); /* its own watcher is still there */

  f = evl_create_server(loop, &count_proto, NULL, "127.0.0.1", 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_server_sockets(srv, &lfd, 1), 1);
  CHECK_EQ(evl_add_reader(loop, lfd, never_io, NULL), EVL_EBUSY);
  CHECK_EQ(evl_remove_reader(loop, lfd), EVL_EBUSY);
  evl_server_close(srv);

  evl_transport_close(t);
  run_for(loop, 0.02);
  test_closesocket(sv[1]);
  test_close(loop);
}

/* ---- one running loop per thread (asyncio) ----------------------------- */
static int g_inner_rc[4];
static void inner_main(evl_task *task, void *st) {
  (void)task;
  (void)st;
}
static void run_other_loop_cb(evl_loop *loop, void *arg) {
  evl_loop *other = (evl_loop *)arg;
  evl_future *f = evl_future_new(other);
  (void)loop;
  CHECK(f != NULL);
  CHECK(evl_call_soon(other, test_stop_cb, NULL) > 0);
  g_inner_rc[0] = evl_run_once(other, 0);
  g_inner_rc[1] = evl_run_forever(other);
  g_inner_rc[2] = evl_run_until_complete(other, f);
  g_inner_rc[3] = evl_run(inner_main, NULL, 0, NULL, NULL);
  evl_future_release(f);
}

TEST(running_a_loop_inside_another_loops_callback_is_refused) {
  evl_loop *loop = test_open(), *other = test_open();
  int ran = 0;
  CHECK(evl_call_soon(loop, run_other_loop_cb, other) > 0);
  CHECK(evl_run_once(loop, 0) >= 1);
  CHECK_EQ(g_inner_rc[0], EVL_EOTHERLOOP);
  CHECK_EQ(g_inner_rc[1], EVL_EOTHERLOOP);
  CHECK_EQ(g_inner_rc[2], EVL_EOTHERLOOP);
  CHECK_EQ(g_inner_rc[3], EVL_EOTHERLOOP);
  CHECK(strstr(evl_strerror(EVL_EOTHERLOOP), "another event loop") != NULL);
  /* Outside the callback the other loop runs as usual. */
  CHECK(evl_call_soon(other, test_count_cb, &ran) > 0);
  CHECK(evl_run_once(other, 0) >= 1);
  CHECK_EQ(ran, 1);
  evl_loop_close(other);
  test_close(other);
  test_close(loop);
}

/* ---- handle_cancelled and handle_when --------------------------------- */
TEST(handle_cancelled_holds_until_next_iteration_despite_purge) {
  evl_loop *loop = test_open();
  evl_handle h[200];
  int i, ran = 0;
  for (i = 0; i < 200; i++) {
    h[i] = evl_call_later(loop, 100.0 + i, test_count_cb, &ran);
    CHECK(h[i] > 0);
  }
  for (i = 0; i < 150; i++) { /* passes the purge threshold on the way */
    CHECK_EQ(evl_handle_cancel(loop, h[i]), 1);
    CHECK_EQ(evl_handle_cancelled(loop, h[i]), 1);
  }
  for (i = 0; i < 150; i++)
    CHECK_EQ(evl_handle_cancelled(loop, h[i]), 1);
  CHECK(evl_handle_when(loop, h[150]) > 0);
  evl_run_once(loop, 0);
  for (i = 0; i < 150; i++)
    CHECK_EQ(evl_handle_cancelled(loop, h[i]), 0); /* discarded */
  for (i = 150; i < 200; i++)
    CHECK_EQ(evl_handle_cancelled(loop, h[i]), 0); /* still pending */
  CHECK_EQ(ran, 0);
  test_close(loop);
}

TEST(huge_delay_is_clamped_and_handle_when_says_so) {
  evl_loop *loop = test_open();
  int ran = 0;
  evl_handle a = evl_call_later(loop, 1e300, test_count_cb, &ran);
  evl_handle b = evl_call_at(loop, 1e300, test_count_cb, &ran);
  double now = evl_time(loop), wa, wb;
  CHECK(a > 0 && b > 0);
  wa = evl_handle_when(loop, a);
  wb = evl_handle_when(loop, b);
  CHECK(wa >= now + 2.29e9 && wa <= now + 2.31e9); /* now + 2.3e18 ns */
  CHECK(wb >= 2.29e9 && wb <= 2.31e9);             /* 2.3e18 ns */
  CHECK(evl_next_timeout(loop) > 2.0e9);
  evl_run_once(loop, 0);
  CHECK_EQ(ran, 0);
  CHECK_EQ(evl_handle_cancel(loop, a), 1);
  test_close(loop);
}

/* ---- network ------------------------------------------------------------ */
TEST(connect_accepted_socket_refuses_a_datagram_socket) {
  evl_loop *loop = test_open();
  int u = (int)socket(AF_INET, SOCK_DGRAM, 0);
  CHECK(u >= 0);
  CHECK(evl_connect_accepted_socket(loop, &count_proto, NULL, u) == NULL);
  CHECK(!test_sock_is_closed(u)); /* refused: the fd is still the caller's */
  test_closesocket(u);
  test_close(loop);
}

TEST(server_host_list_with_the_same_address_twice_listens_once) {
  evl_loop *loop = test_open();
  evl_future *f;
  evl_server *srv;
  evl_fd fds[4];
  int port;
  /* Port 0: one socket, not two. */
  f = evl_create_server(loop, &count_proto, NULL, "127.0.0.1,127.0.0.1", 0,
                        NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_server_sockets(srv, fds, 4), 1);
  port = evl_server_port(srv);
  evl_server_free(srv);
  run_for(loop, 0.01);
  /* A fixed port: not EADDRINUSE against itself. */
  f = evl_create_server(loop, &count_proto, NULL, "127.0.0.1,127.0.0.1", port,
                        NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_server_sockets(srv, fds, 4), 1);
  CHECK_EQ(evl_server_port(srv), port);
  evl_server_free(srv);
  test_close(loop);
}

/* A UDP socket on 127.0.0.1, non-blocking; its address in *sin. */
static int udp_sink(struct sockaddr_in *sin) {
  socklen_t len = sizeof *sin;
  int u = (int)socket(AF_INET, SOCK_DGRAM, 0);
  CHECK(u >= 0);
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(0x7f000001);
  CHECK_EQ(bind(u, (struct sockaddr *)sin, sizeof *sin), 0);
  CHECK_EQ(getsockname(u, (struct sockaddr *)sin, &len), 0);
  test_set_nonblocking(u);
  return u;
}
/* Datagrams waiting on u after the loop ran a little. */
static int udp_count(evl_loop *loop, int u) {
  char buf[64];
  int n = 0;
  run_for(loop, 0.05);
  while (test_recv(u, buf, sizeof buf) >= 0)
    n++;
  return n;
}
static evl_transport *udp_endpoint(evl_loop *loop, int port,
                                   const evl_net_options *o) {
  evl_future *f = evl_create_datagram_endpoint(loop, &count_proto, NULL, NULL,
                                               0, "127.0.0.1", port, o);
  evl_transport *t;
  CHECK_EQ(wait_fut(loop, f), 0);
  t = (evl_transport *)evl_future_result(f);
  evl_future_release(f);
  return t;
}

TEST(datagram_sendto_elsewhere_than_remote_is_einval) {
  evl_loop *loop = test_open();
  struct sockaddr_in ra, oa;
  int r = udp_sink(&ra), o = udp_sink(&oa);
  evl_transport *t = udp_endpoint(loop, ntohs(ra.sin_port), NULL);
  CHECK_EQ(evl_transport_sendto(t, "x", 1, &oa, sizeof oa), EVL_EINVAL);
  CHECK_EQ(evl_transport_sendto(t, "y", 1, &ra, sizeof ra), 0);
  CHECK_EQ(evl_transport_sendto(t, "z", 1, NULL, 0), 0);
  CHECK_EQ(udp_count(loop, o), 0); /* nothing went elsewhere */
  CHECK_EQ(udp_count(loop, r), 2);
  evl_transport_close(t);
  run_for(loop, 0.01);
  test_closesocket(r);
  test_closesocket(o);
  test_close(loop);
}

TEST(datagram_endpoint_without_any_address_or_family_is_einval) {
  evl_loop *loop = test_open();
  evl_future *f = evl_create_datagram_endpoint(loop, &count_proto, NULL, NULL,
                                               0, NULL, 0, NULL);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  test_close(loop);
}

TEST(datagram_allow_broadcast_leaves_socket_unconnected) {
  evl_loop *loop = test_open();
  struct sockaddr_in ra, oa;
  struct sockaddr_storage ss;
  size_t sslen = sizeof ss;
  evl_net_options o;
  int r = udp_sink(&ra), other = udp_sink(&oa);
  evl_transport *t;
  memset(&o, 0, sizeof o);
  o.allow_broadcast = 1;
  t = udp_endpoint(loop, ntohs(ra.sin_port), &o);
  CHECK(evl_transport_get_peername(t, &ss, &sslen) != 0); /* not connected */
  CHECK_EQ(evl_transport_sendto(t, "a", 1, NULL, 0), 0);
  CHECK_EQ(evl_transport_sendto(t, "b", 1, &ra, sizeof ra), 0);
  CHECK_EQ(evl_transport_sendto(t, "c", 1, &oa, sizeof oa), EVL_EINVAL);
  CHECK_EQ(udp_count(loop, r), 2);
  CHECK_EQ(udp_count(loop, other), 0);
  evl_transport_close(t);
  run_for(loop, 0.01);
  test_closesocket(r);
  test_closesocket(other);
  test_close(loop);
}

#ifndef _WIN32
static int unix_connect(const char *path) {
  struct sockaddr_un sun;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0), rc;
  CHECK(fd >= 0);
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  strcpy(sun.sun_path, path);
  rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
  close(fd);
  return rc;
}

TEST(unix_server_on_a_live_path_is_eaddrinuse) {
  evl_loop *loop = test_open();
  char dir[80], path[100];
  evl_future *f;
  evl_server *first;
  int fd;
  struct sockaddr_un sun;
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/s", dir);
  f = evl_create_unix_server(loop, &count_proto, NULL, path, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  first = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  /* Someone listens there: refused, and the first server keeps its path. */
  f = evl_create_unix_server(loop, &count_proto, NULL, path, NULL);
  CHECK_EQ(wait_fut(loop, f), EVL_EADDRINUSE);
  evl_future_release(f);
  CHECK_EQ(unix_connect(path), 0);
  evl_server_free(first);
  run_for(loop, 0.01);
  /* A stale file (bound, nobody listening) is replaced. */
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  strcpy(sun.sun_path, path);
  CHECK_EQ(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
  close(fd);
  f = evl_create_unix_server(loop, &count_proto, NULL, path, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  first = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(unix_connect(path), 0);
  evl_server_free(first);
  run_for(loop, 0.01);
  test_close(loop);
  unlink(path);
  CHECK_EQ(test_rmdir(dir), 0);
}
#endif

/* ---- sendfile: file position, count 0, socket checks ------------------- */
#define SF_SIZE 100000
static long long file_pos(int fd) {
#ifdef _WIN32
  return _lseeki64(fd, 0, SEEK_CUR);
#else
  return (long long)lseek(fd, 0, SEEK_CUR);
#endif
}
static int sf_file(void) {
  static unsigned char data[SF_SIZE];
  int fd = test_tmpfile_fd(), i;
  for (i = 0; i < SF_SIZE; i++)
    data[i] = (unsigned char)(i * 7);
  CHECK(fd >= 0);
  CHECK_EQ(test_fd_write(fd, data, SF_SIZE), SF_SIZE);
#ifdef _WIN32
  CHECK_EQ(_lseeki64(fd, 0, SEEK_SET), 0);
#else
  CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
#endif
  return fd;
}

TEST(transport_sendfile_sets_file_position_and_count_0_is_rest) {
  evl_loop *loop = test_open();
  int sv[2], file = sf_file();
  evl_transport *t;
  evl_future *f;
  CHECK_EQ(test_socketpair(sv), 0);
  test_set_nonblocking(sv[1]);
  t = evl_connect_accepted_socket(loop, &count_proto, NULL, sv[0]);
  CHECK(t != NULL);
  evl_run_once(loop, 0);
  g_got = 0;
  f = evl_sendfile(t, file, 1000, 500);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), 500);
  evl_future_release(f);
  CHECK_EQ(file_pos(file), 1500);
  /* count 0: the rest of the file, in chunks the reader drains */
  f = evl_sendfile(t, file, 90000, 0);
  {
    char buf[65536];
    long got = 0, n;
    double end = test_now() + 10;
    while (!evl_future_done(f) && test_now() < end) {
      evl_run_once(loop, 0.01);
      while ((n = test_recv(sv[1], buf, sizeof buf)) > 0)
        got += n;
    }
    while ((n = test_recv(sv[1], buf, sizeof buf)) > 0)
      got += n;
    CHECK_EQ(got, 500 + SF_SIZE - 90000);
  }
  CHECK_EQ(evl_future_error(f), 0);
  CHECK_EQ(evl_future_result_int(f), SF_SIZE - 90000);
  evl_future_release(f);
  CHECK_EQ(file_pos(file), SF_SIZE);
  evl_transport_close(t);
  run_for(loop, 0.01);
  test_closesocket(sv[1]);
  test_fd_close(file);
  test_close(loop);
}

#ifndef _WIN32
TEST(transport_sendfile_failing_midway_sets_file_position) {
  evl_loop *loop = test_open();
  int sv[2], file = sf_file();
  evl_transport *t;
  evl_future *f;
  intptr_t sent;
  CHECK_EQ(test_socketpair(sv), 0);
  {
    int small = 4096;
    CHECK_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  }
  t = evl_connect_accepted_socket(loop, &count_proto, NULL, sv[0]);
  CHECK(t != NULL);
  evl_run_once(loop, 0);
  /* The peer reads nothing: the send stalls part way; closing the
     transport at once ends it with an error. */
  f = evl_sendfile(t, file, 0, SF_SIZE);
  run_for(loop, 0.05);
  CHECK(!evl_future_done(f));
  evl_transport_abort(t);
  RUN_UNTIL(loop, evl_future_done(f));
  CHECK(evl_future_error(f) != 0);
  evl_future_release(f);
  /* What the peer got is what was sent. */
  {
    char buf[65536];
    long n;
    sent = 0;
    test_set_nonblocking(sv[1]);
    while ((n = test_recv(sv[1], buf, sizeof buf)) > 0)
      sent += n;
  }
  CHECK(sent > 0 && sent < SF_SIZE);
  CHECK_EQ(lseek(file, 0, SEEK_CUR), sent);
  close(sv[1]);
  close(file);
  test_close(loop);
}

TEST(sock_sendfile_position_and_refusals) {
  evl_loop *loop = test_open();
  int sv[2], file = sf_file(), u;
  evl_future *f;
  CHECK_EQ(test_socketpair(sv), 0);
  /* a blocking socket */
  f = evl_sock_sendfile(loop, sv[0], file, 0, 10);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  /* a datagram socket */
  u = (int)socket(AF_INET, SOCK_DGRAM, 0);
  test_set_nonblocking(u);
  f = evl_sock_sendfile(loop, u, file, 0, 10);
  CHECK_EQ(wait_fut(loop, f), EVL_EINVAL);
  evl_future_release(f);
  close(u);
  CHECK_EQ(lseek(file, 0, SEEK_CUR), 0);
  /* done: the position is offset + bytes sent */
  test_set_nonblocking(sv[0]);
  f = evl_sock_sendfile(loop, sv[0], file, 10, 20);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), 20);
  evl_future_release(f);
  CHECK_EQ(lseek(file, 0, SEEK_CUR), 30);
  /* count 0: to the end */
  {
    char buf[4096];
    test_set_nonblocking(sv[1]);
    while (test_recv(sv[1], buf, sizeof buf) > 0) {
    }
  }
  f = evl_sock_sendfile(loop, sv[0], file, SF_SIZE - 100, 0);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(evl_future_result_int(f), 100);
  evl_future_release(f);
  CHECK_EQ(lseek(file, 0, SEEK_CUR), SF_SIZE);
  close(sv[0]);
  close(sv[1]);
  close(file);
  test_close(loop);
}
#endif

/* ---- processes and signals ---------------------------------------------- */
#ifndef _WIN32
static char g_seq[32];
static int g_nseq;
static void seq_add(char c) {
  if (g_nseq < 31)
    g_seq[g_nseq++] = c;
  g_seq[g_nseq] = 0;
}
static void sp_made(evl_subprocess *p, void *u) {
  (void)p;
  (void)u;
  seq_add('m');
}
static void sp_pipe_lost(evl_subprocess *p, int fd, int err, void *u) {
  (void)p;
  (void)fd;
  (void)err;
  (void)u;
  seq_add('p');
}
static void sp_exited(evl_subprocess *p, void *u) {
  (void)p;
  (void)u;
  seq_add('x');
}
static void sp_lost(evl_subprocess *p, int err, void *u) {
  (void)p;
  (void)u;
  CHECK_EQ(err, EVL_ECLOSED);
  seq_add('l');
}
static const evl_subprocess_protocol seq_proto = {sp_made, NULL, sp_pipe_lost,
                                                  sp_exited, sp_lost};

TEST(subprocess_callback_order_holds_at_loop_close) {
  evl_loop *loop = test_open();
  const char *argv[] = {"/bin/sleep", "10", NULL};
  evl_future *f = evl_subprocess_exec(loop, &seq_proto, NULL, argv, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  CHECK(strcmp(g_seq, "m") == 0);
  evl_loop_close(loop); /* the child still runs */
  CHECK(strcmp(g_seq, "mpppxl") == 0);
  test_close(loop);
}
#endif

TEST(remove_signal_handler_with_an_invalid_number_is_einval) {
  evl_loop *loop = test_open();
  CHECK_EQ(evl_remove_signal_handler(loop, 0), EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(loop, -1), EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(loop, 100000), EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(NULL, SIGINT), EVL_EINVAL);
  CHECK_EQ(evl_add_signal_handler(loop, 100000, nop_signal_cb, NULL),
           EVL_EINVAL);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGINT), 0); /* none there */
  test_close(loop);
}

TEST(write_to_closing_transport_says_transport_is_closing) {
  evl_loop *loop = test_open();
  int sv[2];
  evl_transport *t;
  CHECK_EQ(test_socketpair(sv), 0);
  t = evl_connect_accepted_socket(loop, &count_proto, NULL, sv[0]);
  CHECK(t != NULL);
  evl_run_once(loop, 0);
  evl_transport_close(t);
  CHECK_EQ(evl_transport_write(t, "x", 1), EVL_ECLOSING);
  CHECK(strstr(evl_strerror(EVL_ECLOSING), "transport") != NULL);
  run_for(loop, 0.01);
  test_closesocket(sv[1]);
  test_close(loop);
}

#ifndef _WIN32
TEST(write_to_stdin_of_exited_child_says_it_exited) {
  evl_loop *loop = test_open();
  const char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
  evl_future *f = evl_create_subprocess_exec(loop, argv, NULL, 0), *w;
  evl_process *pr;
  int rc;
  CHECK_EQ(wait_fut(loop, f), 0);
  pr = (evl_process *)evl_future_result(f);
  evl_future_release(f);
  w = evl_process_wait(pr);
  CHECK_EQ(wait_fut(loop, w), 0);
  CHECK_EQ(evl_future_result_int(w), 3);
  evl_future_release(w);
  rc = evl_stream_write(evl_process_stdin(pr), "x", 1);
  CHECK_EQ(rc, EVL_EEXITED);
  CHECK(strstr(evl_strerror(rc), "exited") != NULL);
  run_for(loop, 0.02);
  CHECK_EQ(evl_stream_write(evl_process_stdin(pr), "x", 1), EVL_EEXITED);
  evl_process_free(pr);
  run_for(loop, 0.01);
  test_close(loop);
}
#endif

/* ---- start_new_session, process_group, pass_fds ------------------------ */
#ifndef _WIN32
/* The child's pid and, once it exited, its returncode (the loop frees the
   evl_subprocess after connection_lost: keep what is needed here). */
typedef struct {
  int pid, exited, code;
} child_info;
static void ci_made(evl_subprocess *p, void *u) {
  ((child_info *)u)->pid = evl_subprocess_get_pid(p);
}
static void ci_exited(evl_subprocess *p, void *u) {
  child_info *ci = (child_info *)u;
  CHECK_EQ(evl_subprocess_get_returncode(p, &ci->code), 1);
  ci->exited = 1;
}
static const evl_subprocess_protocol ci_proto = {ci_made, NULL, NULL, ci_exited,
                                                 NULL};
static void spawn_opts(evl_loop *loop, const char *const *argv,
                       evl_subprocess_options *o, child_info *ci, int want) {
  evl_future *f;
  memset(ci, 0, sizeof *ci);
  o->stdin_mode = o->stdout_mode = o->stderr_mode = EVL_STDIO_DEVNULL;
  f = evl_subprocess_exec(loop, &ci_proto, ci, argv, o);
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), want);
  evl_future_release(f);
}
static void kill_and_reap(evl_loop *loop, child_info *ci, int group) {
  CHECK_EQ(kill(group ? -ci->pid : ci->pid, SIGKILL), 0);
  RUN_UNTIL(loop, ci->exited);
  CHECK_EQ(ci->code, -SIGKILL);
}

/* The child's group (sid: its session) once it has settled: qemu-user
   runs posix_spawn's vfork as a fork, so the spawn may return before the
   child called setpgid/setsid (on a real kernel it never does). */
static pid_t settled(pid_t (*get)(pid_t), pid_t pid, pid_t want) {
  pid_t got = get(pid);
  int i;
  for (i = 0; i < 200 && got != want; i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    got = get(pid);
  }
  return got;
}

TEST(subprocess_start_new_session_and_process_group) {
  evl_loop *loop = test_open();
  const char *argv[] = {"/bin/sleep", "10", NULL};
  evl_subprocess_options o;
  child_info a, b;
  /* start_new_session: its own session and group */
  memset(&o, 0, sizeof o);
  o.start_new_session = 1;
  spawn_opts(loop, argv, &o, &a, 0);
  CHECK_EQ(settled(getsid, a.pid, a.pid), a.pid);
  CHECK_EQ(settled(getpgid, a.pid, a.pid), a.pid);
  kill_and_reap(loop, &a, 1); /* one signal to the group */
  /* a new group in our session, then a second child joins it */
  memset(&o, 0, sizeof o);
  o.process_group = EVL_PROCESS_GROUP_NEW;
  spawn_opts(loop, argv, &o, &a, 0);
  CHECK_EQ(settled(getpgid, a.pid, a.pid), a.pid);
  CHECK_EQ(getsid(a.pid), getsid(0));
  memset(&o, 0, sizeof o);
  o.process_group = a.pid;
  spawn_opts(loop, argv, &o, &b, 0);
  CHECK_EQ(settled(getpgid, b.pid, a.pid), a.pid);
  CHECK_EQ(kill(-a.pid, SIGKILL), 0); /* both at once */
  RUN_UNTIL(loop, a.exited && b.exited);
  CHECK_EQ(a.code, -SIGKILL);
  CHECK_EQ(b.code, -SIGKILL);
  /* without either, the child stays in our group */
  memset(&o, 0, sizeof o);
  spawn_opts(loop, argv, &o, &a, 0);
  CHECK_EQ(getpgid(a.pid), getpgid(0));
  kill_and_reap(loop, &a, 0);
  /* both at once, or a bad group: EVL_EINVAL */
  memset(&o, 0, sizeof o);
  o.start_new_session = 1;
  o.process_group = EVL_PROCESS_GROUP_NEW;
  spawn_opts(loop, argv, &o, &a, EVL_EINVAL);
  memset(&o, 0, sizeof o);
  o.process_group = -5;
  spawn_opts(loop, argv, &o, &a, EVL_EINVAL);
  run_for(loop, 0.02);
  test_close(loop);
}

TEST(subprocess_pass_fds_keeps_them_open_in_the_child) {
  evl_loop *loop = test_open();
  evl_subprocess_options o;
  child_info ci;
  char cmd[64], buf[16];
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  int pp[2], fds[1];
  long n;
  CHECK_EQ(pipe(pp), 0);
  /* close-on-exec, as every fd a careful program opens */
  CHECK_EQ(fcntl(pp[1], F_SETFD, FD_CLOEXEC), 0);
  /* /dev/fd/N: dash's ">&N" takes one digit only */
  snprintf(cmd, sizeof cmd, "echo hi >/dev/fd/%d", pp[1]);
  fds[0] = pp[1];
  memset(&o, 0, sizeof o);
  o.pass_fds = fds;
  o.npass_fds = 1;
  spawn_opts(loop, argv, &o, &ci, 0);
  RUN_UNTIL(loop, ci.exited);
  CHECK_EQ(ci.code, 0);
  n = read(pp[0], buf, sizeof buf);
  CHECK_EQ(n, 3);
  CHECK(memcmp(buf, "hi\n", 3) == 0);
  /* not passed: the child cannot write there */
  memset(&o, 0, sizeof o);
  CHECK_EQ(fcntl(pp[1], F_SETFD, 0), 0); /* even without close-on-exec */
  spawn_opts(loop, argv, &o, &ci, 0);
  RUN_UNTIL(loop, ci.exited);
  CHECK(ci.code != 0);
  /* a closed fd */
  close(pp[0]);
  close(pp[1]);
  memset(&o, 0, sizeof o);
  o.pass_fds = fds;
  o.npass_fds = 1;
  spawn_opts(loop, argv, &o, &ci, EVL_EBADF);
  run_for(loop, 0.02);
  test_close(loop);
}
#endif

#ifdef _WIN32
/* Windows: a new process group is the nearest thing to a session; joining
   a group and pass_fds have no equivalent. */
TEST(subprocess_group_options_on_windows) {
  evl_loop *loop = test_open();
  const char *argv[] = {"cmd.exe", "/c", "exit 0", NULL};
  evl_subprocess_options o;
  evl_future *f;
  int fds[1] = {1}, code = -1;
  evl_subprocess *p;
  static const evl_subprocess_protocol none = {NULL, NULL, NULL, NULL, NULL};
  memset(&o, 0, sizeof o);
  o.stdin_mode = o.stdout_mode = o.stderr_mode = EVL_STDIO_DEVNULL;
  o.start_new_session = 1;
  f = evl_subprocess_exec(loop, &none, NULL, argv, &o);
  CHECK_EQ(wait_fut(loop, f), 0);
  p = (evl_subprocess *)evl_future_result(f);
  evl_future_release(f);
  RUN_UNTIL(loop, evl_subprocess_get_returncode(p, &code) == 1);
  CHECK_EQ(code, 0);
  o.start_new_session = 0;
  o.process_group = 1234;
  f = evl_subprocess_exec(loop, &none, NULL, argv, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  o.process_group = 0;
  o.pass_fds = fds;
  o.npass_fds = 1;
  f = evl_subprocess_exec(loop, &none, NULL, argv, &o);
  CHECK_EQ(wait_fut(loop, f), EVL_ENOTSUP);
  evl_future_release(f);
  run_for(loop, 0.02);
  test_close(loop);
}
#endif

TEST(process_returncode_getter) {
  evl_loop *loop = test_open();
#ifdef _WIN32
  const char *argv[] = {"cmd.exe", "/c", "exit 7", NULL};
#else
  const char *argv[] = {"/bin/sh", "-c", "exit 7", NULL};
#endif
  evl_future *f = evl_create_subprocess_exec(loop, argv, NULL, 0);
  evl_process *pr;
  int code = -1;
  CHECK_EQ(wait_fut(loop, f), 0);
  pr = (evl_process *)evl_future_result(f);
  evl_future_release(f);
  CHECK_EQ(evl_process_returncode(NULL, &code), EVL_EINVAL);
  RUN_UNTIL(loop, evl_process_returncode(pr, &code) == 1);
  CHECK_EQ(code, 7);
  evl_process_free(pr);
  run_for(loop, 0.01);
  test_close(loop);
}

/* ---- documentation pinned: what the stream limit limits ---------------- */
#define BIG 700000
static unsigned char g_big[BIG];
static evl_stream *g_srv_stream;
static void big_writer(evl_stream *s, void *arg) {
  size_t n = (size_t)(uintptr_t)arg;
  g_srv_stream = s;
  CHECK_EQ(evl_stream_write(s, g_big, n), 0);
  CHECK_EQ(evl_stream_write_eof(s), 0);
}
static evl_stream *big_pair(evl_loop *loop, evl_server **srv, size_t n) {
  evl_future *f = evl_start_server(loop, big_writer, (void *)(uintptr_t)n,
                                   "127.0.0.1", 0, 0, NULL);
  evl_stream *c;
  CHECK_EQ(wait_fut(loop, f), 0);
  *srv = (evl_server *)evl_future_result(f);
  evl_future_release(f);
  f = evl_open_connection(loop, "127.0.0.1", evl_server_port(*srv), 0, NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  c = (evl_stream *)evl_future_result(f);
  evl_future_release(f);
  return c;
}
static size_t read_len(evl_loop *loop, evl_future *f, int want_err) {
  size_t n = 0;
  CHECK_EQ(wait_fut(loop, f), want_err);
  if (!want_err)
    n = ((evl_bytes *)evl_future_result(f))->len;
  evl_future_release(f);
  return n;
}
static void big_done(evl_loop *loop, evl_server *srv, evl_stream *c) {
  evl_stream_free(c);
  evl_stream_free(g_srv_stream);
  evl_server_free(srv);
  run_for(loop, 0.02);
  test_close(loop);
}

TEST(stream_limit_bounds_readline_not_read_or_readexactly) {
  evl_loop *loop = test_open();
  evl_server *srv;
  evl_stream *c;
  memset(g_big, 'a', sizeof g_big); /* no newline anywhere */
  c = big_pair(loop, &srv, BIG);
  CHECK_EQ(read_len(loop, evl_stream_readexactly(c, 300000), 0), 300000);
  CHECK_EQ(read_len(loop, evl_stream_read(c, -1), 0), BIG - 300000);
  big_done(loop, srv, c);
  loop = test_open();
  c = big_pair(loop, &srv, 100000);
  CHECK_EQ(read_len(loop, evl_stream_readline(c), EVL_ELIMIT), 0);
  CHECK_EQ(read_len(loop, evl_stream_readuntil(c, "\n", 1), EVL_ELIMIT), 0);
  CHECK_EQ(read_len(loop, evl_stream_read(c, -1), 0), 100000); /* kept */
  big_done(loop, srv, c);
}

/* ---- EVL_AWAIT inside a switch of the task's own fails loudly ---------- */
typedef struct {
  int kind, before, after;
} switch_state;
static void await_in_switch_task(evl_task *t, void *state) {
  switch_state *st = (switch_state *)state;
  EVL_ASYNC_BEGIN(t);
  st->before++;
  switch (st->kind) {
  case 1:
    EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.01, NULL));
    st->after++; /* never reached: the resume finds no point */
    break;
  default:
    break;
  }
  st->after += 10;
  EVL_ASYNC_END(t);
}

TEST(await_inside_own_switch_fails_the_task_loudly) {
  evl_loop *loop = test_open();
  switch_state st = {1, 0, 0};
  evl_task *t = evl_task_create(loop, await_in_switch_task, &st, 0);
  CHECK(t != NULL);
  CHECK_EQ(wait_fut(loop, t), EVL_EINVALSTATE);
  CHECK_EQ(st.before, 1);
  CHECK_EQ(st.after, 0);
  evl_future_release(t);
  test_close(loop);
}

/* ---- allocation failures ------------------------------------------------ */
/* Fails every allocation while g_fail_alloc, or the next one of exactly
   g_fail_size bytes. */
static int g_fail_alloc;
static size_t g_fail_size;
static void *failing_alloc(void *ctx, void *p, size_t n) {
  (void)ctx;
  if (n == 0) {
    free(p);
    return NULL;
  }
  if (g_fail_alloc)
    return NULL;
  if (g_fail_size && n == g_fail_size) {
    g_fail_size = 0;
    return NULL;
  }
  return realloc(p, n);
}

/* ---- kqueue: no signal or exit event lost when memory runs out -------- */
#ifdef EVLOOP_BACKEND_KQUEUE
static void nop_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
}
static void count_sig(evl_loop *loop, int signum, void *arg) {
  (void)loop;
  (void)signum;
  (*(int *)arg)++;
}
static void kq_exited(evl_subprocess *p, void *u) {
  (void)p;
  (*(int *)u)++;
}
static const evl_subprocess_protocol kq_proto = {NULL, NULL, NULL, kq_exited,
                                                 NULL};
/* Fills the ready ring to its capacity (a power of two), so that the next
   poll must grow it, then makes every allocation fail for one iteration. */
static void run_once_without_memory(evl_loop *loop) {
  int i;
  for (i = 0; i < 4096; i++)
    CHECK(evl_call_soon(loop, nop_cb, NULL) > 0);
  g_fail_alloc = 1;
  evl_run_once(loop, 0);
  g_fail_alloc = 0;
}

TEST(kqueue_keeps_signal_and_exit_events_when_memory_runs_out) {
  evl_loop_config cfg;
  evl_loop *loop;
  evl_future *f;
  const char *argv[] = {"/bin/sh", "-c", "exit 0", NULL};
  evl_subprocess_options o;
  int sigs = 0, exits = 0;
  memset(&cfg, 0, sizeof cfg);
  cfg.alloc = failing_alloc;
  loop = test_open_with(&cfg);
  CHECK_EQ(evl_add_signal_handler(loop, SIGUSR1, count_sig, &sigs), 0);
  CHECK_EQ(kill(getpid(), SIGUSR1), 0);
  test_sleep_ms(50);
  run_once_without_memory(loop);
  CHECK_EQ(sigs, 0);
  RUN_UNTIL(loop, sigs == 1); /* kept, delivered once memory came back */
  /* A child's NOTE_EXIT (one-shot) likewise. */
  memset(&o, 0, sizeof o);
  o.stdin_mode = o.stdout_mode = o.stderr_mode = EVL_STDIO_DEVNULL;
  f = evl_subprocess_exec(loop, &kq_proto, &exits, argv, &o);
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  test_sleep_ms(200); /* it exits meanwhile */
  run_once_without_memory(loop);
  RUN_UNTIL(loop, exits == 1);
  CHECK_EQ(evl_remove_signal_handler(loop, SIGUSR1), 1);
  test_close(loop);
  signal(SIGUSR1, SIG_DFL);
}
#endif

/* ---- debug mode: a failed growth of the call-site table ---------------- */
static int g_slow_reports, g_bad_reports;
static void slow_log(evl_loop *loop, const char *msg, void *ctx) {
  (void)loop;
  (void)ctx;
  if (!strstr(msg, "scheduled at"))
    return;
  g_slow_reports++;
  /* a site is this file's, or none ("<callback>" at "?") */
  if (!strstr(msg, "t_conform.c") && !strstr(msg, "<callback> scheduled at ?"))
    g_bad_reports++;
}

TEST(debug_slow_callback_report_after_site_table_growth_failed) {
  evl_loop_config cfg;
  evl_loop *loop;
  int i, ran = 0;
  size_t site_size = 3 * sizeof(void *); /* name, file, line (padded) */
  memset(&cfg, 0, sizeof cfg);
  cfg.alloc = failing_alloc;
  cfg.debug = 1;
  cfg.log = slow_log;
  loop = test_open_with(&cfg);
  evl_set_slow_callback_duration(loop, 0.0); /* every callback is "slow" */
  for (i = 0; i < 64; i++) /* the first 64 slots, with their sites */
    CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  g_fail_size = 128 * site_size; /* the table's growth to 128 fails */
  for (i = 64; i < 200; i++)     /* ...and to 256 succeeds */
    CHECK(evl_call_soon(loop, test_count_cb, &ran) > 0);
  CHECK_EQ(g_fail_size, 0); /* the failure happened */
  evl_run_once(loop, 0);
  CHECK_EQ(ran, 200);
  CHECK_EQ(g_slow_reports, 200);
  CHECK_EQ(g_bad_reports, 0);
  test_close(loop);
}

/* A manual clock near the end of its range: a long delay saturates at the
   end (never wraps around into the past and fires at once). */
static int64_t late_clock(void *ctx) {
  (void)ctx;
  return (int64_t)9000000000000000000LL; /* 9e18 ns */
}
TEST(delay_past_the_clock_end_saturates_and_does_not_fire) {
  evl_loop_config cfg;
  evl_loop *loop;
  int ran = 0;
  evl_handle h;
  memset(&cfg, 0, sizeof cfg);
  cfg.clock_ns = late_clock;
  loop = test_open_with(&cfg);
  h = evl_call_later(loop, 1e9, test_count_cb, &ran); /* 1e18 ns */
  CHECK(h > 0);
  CHECK(evl_handle_when(loop, h) >= 9.2e9); /* INT64_MAX ns */
  evl_run_once(loop, 0);
  evl_run_once(loop, 0);
  CHECK_EQ(ran, 0);
  test_close(loop);
}

TESTS_BEGIN
T(threadsafe_then_soon_from_loop_thread_run_in_order)
#ifndef EVLOOP_NO_THREADS
T(threadsafe_from_other_thread_runs_before_later_soon)
#endif
T_POSIX(fd_event_not_given_to_new_reader_on_reused_fd, "dup2 onto a socket")
T(transport_and_server_fds_refuse_add_and_remove_reader)
T(running_a_loop_inside_another_loops_callback_is_refused)
T(handle_cancelled_holds_until_next_iteration_despite_purge)
T(huge_delay_is_clamped_and_handle_when_says_so)
T(connect_accepted_socket_refuses_a_datagram_socket)
T(server_host_list_with_the_same_address_twice_listens_once)
T(datagram_sendto_elsewhere_than_remote_is_einval)
T(datagram_endpoint_without_any_address_or_family_is_einval)
T(datagram_allow_broadcast_leaves_socket_unconnected)
T_POSIX(unix_server_on_a_live_path_is_eaddrinuse, "socket files")
T(transport_sendfile_sets_file_position_and_count_0_is_rest)
T_POSIX(transport_sendfile_failing_midway_sets_file_position,
        "lseek on a CRT fd")
T_POSIX(sock_sendfile_position_and_refusals, "blocking mode unknown on Windows")
T_POSIX(subprocess_callback_order_holds_at_loop_close, "/bin/sleep")
T(remove_signal_handler_with_an_invalid_number_is_einval)
T(write_to_closing_transport_says_transport_is_closing)
T_POSIX(write_to_stdin_of_exited_child_says_it_exited, "/bin/sh")
T_POSIX(subprocess_start_new_session_and_process_group, "sessions")
T_POSIX(subprocess_pass_fds_keeps_them_open_in_the_child, "fds")
#ifdef _WIN32
T(subprocess_group_options_on_windows)
#endif
T(process_returncode_getter)
T(stream_limit_bounds_readline_not_read_or_readexactly)
T(await_inside_own_switch_fails_the_task_loudly)
#ifdef EVLOOP_BACKEND_KQUEUE
T(kqueue_keeps_signal_and_exit_events_when_memory_runs_out)
#else
T_SKIP(kqueue_keeps_signal_and_exit_events_when_memory_runs_out,
       "kqueue backend only (make test BACKEND=kqueue)")
#endif
T(debug_slow_callback_report_after_site_table_growth_failed)
T(delay_past_the_clock_end_saturates_and_does_not_fire)
TESTS_END
