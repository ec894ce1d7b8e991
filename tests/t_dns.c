/* DNS on the executor: evl_getaddrinfo and evl_getnameinfo. Loopback,
   numeric addresses, localhost and .invalid names only: no network.
   Runs under ThreadSanitizer. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#ifndef _WIN32
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif
#include <string.h>

static int is_eai_code(int err) {
  return err <= EVL_EAI_AGAIN && err >= EVL_EAI_OVERFLOW;
}

/* Waits for f, which must succeed; its result (the future owns it). */
static void *wait_ok(evl_loop *loop, evl_future *f) {
  void *r;
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  r = evl_future_result(f);
  CHECK(r != NULL);
  return r;
}

/* Waits for f, which must fail with want (0: any error) and no result,
   then releases it. A NULL f, refused at once, passes too. */
static void check_fails_or_refused(evl_loop *loop, evl_future *f, int want) {
  int err;
  if (!f)
    return;
  err = evl_run_until_complete(loop, f);
  if (want)
    CHECK_EQ(err, want);
  else
    CHECK(err < 0);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
}

/* 127.0.0.1, port 80. */
static void loopback4_port80(struct sockaddr_in *sin) {
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(80);
  sin->sin_addr.s_addr = htonl(0x7f000001L);
}

/* getnameinfo on the len bytes at sa, numeric host and service, gives
   host and service; the address may change once the call is made (it was
   copied). */
static void check_nameinfo(evl_loop *loop, void *sa, size_t len,
                           const char *host, const char *service) {
  evl_future *f =
      evl_getnameinfo(loop, sa, len, NI_NUMERICHOST | NI_NUMERICSERV);
  const evl_nameinfo *ni;
  memset(sa, 0xff, len);
  ni = (const evl_nameinfo *)wait_ok(loop, f);
  CHECK(strcmp(ni->host, host) == 0);
  CHECK(strcmp(ni->service, service) == 0);
  evl_future_release(f);
}

TEST(getaddrinfo_numeric_ipv4) {
  evl_loop *loop = test_open();
  evl_future *f = evl_getaddrinfo(loop, "127.0.0.1", "80", AF_INET, SOCK_STREAM,
                                  0, AI_NUMERICHOST);
  struct addrinfo *ai = (struct addrinfo *)wait_ok(loop, f);
  const struct sockaddr_in *sin;
  CHECK_EQ(ai->ai_family, AF_INET);
  CHECK_EQ(ai->ai_socktype, SOCK_STREAM);
  CHECK(ai->ai_addr != NULL);
  CHECK_EQ(ai->ai_addrlen, sizeof(struct sockaddr_in));
  sin = (const struct sockaddr_in *)(const void *)ai->ai_addr;
  CHECK_EQ(sin->sin_family, AF_INET);
  CHECK_EQ(ntohs(sin->sin_port), 80);
  CHECK_EQ(ntohl(sin->sin_addr.s_addr), 0x7f000001L);
  evl_future_release(f); /* the future owns the list */
  test_close(loop);
}

TEST(getaddrinfo_localhost) {
  evl_loop *loop = test_open();
  evl_future *f =
      evl_getaddrinfo(loop, "localhost", "8080", AF_UNSPEC, SOCK_STREAM, 0, 0);
  struct addrinfo *ai;
  int n = 0, bad = 0;
  CHECK(f != NULL);
  CHECK_EQ(evl_run_until_complete(loop, f), 0);
  for (ai = (struct addrinfo *)evl_future_result(f); ai; ai = ai->ai_next) {
    n++;
    if (ai->ai_family == AF_INET) {
      const struct sockaddr_in *sin =
          (const struct sockaddr_in *)(const void *)ai->ai_addr;
      bad += ntohs(sin->sin_port) != 8080;
    } else if (ai->ai_family == AF_INET6) {
      const struct sockaddr_in6 *sin6 =
          (const struct sockaddr_in6 *)(const void *)ai->ai_addr;
      bad += ntohs(sin6->sin6_port) != 8080;
    } else {
      bad++;
    }
  }
  CHECK(n >= 1);
  CHECK_EQ(bad, 0);
  evl_future_release(f);
  test_close(loop);
}

TEST(getaddrinfo_numeric_ipv6) {
  static const unsigned char loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                              0, 0, 0, 0, 0, 0, 0, 1};
  evl_loop *loop = test_open();
  evl_future *f = evl_getaddrinfo(loop, "::1", "443", AF_INET6, SOCK_STREAM, 0,
                                  AI_NUMERICHOST);
  struct addrinfo *ai = (struct addrinfo *)wait_ok(loop, f);
  const struct sockaddr_in6 *sin6;
  CHECK_EQ(ai->ai_family, AF_INET6);
  sin6 = (const struct sockaddr_in6 *)(const void *)ai->ai_addr;
  CHECK_EQ(sin6->sin6_family, AF_INET6);
  CHECK_EQ(ntohs(sin6->sin6_port), 443);
  CHECK(memcmp(&sin6->sin6_addr, loopback6, 16) == 0);
  evl_future_release(f);
  test_close(loop);
}

TEST(getaddrinfo_invalid_name) {
  evl_loop *loop = test_open();
  evl_future *f;
  int err;
  g_reports = 0;
  evl_set_exception_handler(loop, count_handler, NULL);
  f = evl_getaddrinfo(loop, "no-such-host.invalid", "80", AF_UNSPEC,
                      SOCK_STREAM, 0, 0);
  CHECK(f != NULL);
  err = evl_run_until_complete(loop, f);
  if (!is_eai_code(err))
    fprintf(stderr, "  got %d (%s)\n", err, evl_err_name(err));
  CHECK(is_eai_code(err));
  CHECK_EQ(evl_future_error(f), err);
  CHECK(evl_future_result(f) == NULL);
  evl_future_release(f);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TEST(getaddrinfo_numeric_flag_with_name) {
  evl_loop *loop = test_open();
  evl_future *f = evl_getaddrinfo(loop, "localhost", "80", AF_INET, SOCK_STREAM,
                                  0, AI_NUMERICHOST);
  CHECK(f != NULL);
  check_fails_or_refused(loop, f, EVL_EAI_NONAME);
  test_close(loop);
}

TEST(getaddrinfo_no_host_no_service) {
  evl_loop *loop = test_open();
  evl_future *f =
      evl_getaddrinfo(loop, NULL, NULL, AF_UNSPEC, SOCK_STREAM, 0, 0);
  check_fails_or_refused(loop, f, EVL_EAI_NONAME);
  test_close(loop);
}

TEST(getaddrinfo_many_concurrent) {
  evl_loop *loop = test_open();
  evl_future *futs[32];
  evl_future *g;
  char host[32];
  int i, bad = 0;
  for (i = 0; i < 32; i++) {
    sprintf(host, "127.0.0.%d", i + 1);
    futs[i] = evl_getaddrinfo(loop, host, "1234", AF_INET, SOCK_DGRAM, 0,
                              AI_NUMERICHOST);
    CHECK(futs[i] != NULL);
  }
  g = evl_gather(loop, futs, 32, 0);
  CHECK_EQ(evl_run_until_complete(loop, g), 0);
  for (i = 0; i < 32; i++) {
    struct addrinfo *ai = (struct addrinfo *)evl_future_result(futs[i]);
    const struct sockaddr_in *sin;
    if (!ai) {
      bad++;
      continue;
    }
    sin = (const struct sockaddr_in *)(const void *)ai->ai_addr;
    bad += ntohl(sin->sin_addr.s_addr) != (unsigned long)(0x7f000001L + i);
    bad += ntohs(sin->sin_port) != 1234;
  }
  CHECK_EQ(bad, 0);
  evl_future_release(g);
  for (i = 0; i < 32; i++)
    evl_future_release(futs[i]);
  test_close(loop);
}

TEST(getaddrinfo_cancelled) {
  /* Cancelled right away: queued or running, the list must not leak. */
  evl_loop *loop = test_open();
  evl_future *futs[8];
  int i;
  for (i = 0; i < 8; i++) {
    futs[i] =
        evl_getaddrinfo(loop, "localhost", "80", AF_UNSPEC, SOCK_STREAM, 0, 0);
    CHECK(futs[i] != NULL);
  }
  for (i = 0; i < 8; i++)
    CHECK_EQ(evl_future_cancel(futs[i]), 1);
  for (i = 0; i < 20; i++)
    evl_run_once(loop, 0.01);
  for (i = 0; i < 8; i++) {
    CHECK_EQ(evl_future_cancelled(futs[i]), 1);
    evl_future_release(futs[i]);
  }
  test_close(loop);
}

TEST(getnameinfo_numeric) {
  evl_loop *loop = test_open();
  struct sockaddr_in sin;
  loopback4_port80(&sin);
  check_nameinfo(loop, &sin, sizeof sin, "127.0.0.1", "80");
  test_close(loop);
}

TEST(getnameinfo_numeric_ipv6) {
  evl_loop *loop = test_open();
  struct sockaddr_in6 sin6;
  memset(&sin6, 0, sizeof sin6);
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(8443);
  sin6.sin6_addr.s6_addr[15] = 1;
  check_nameinfo(loop, &sin6, sizeof sin6, "::1", "8443");
  test_close(loop);
}

TEST(getnameinfo_bad_length) {
  /* each a future that fails, or NULL */
  evl_loop *loop = test_open();
  struct sockaddr_in sin;
  loopback4_port80(&sin);
  check_fails_or_refused(
      loop, evl_getnameinfo(loop, &sin, 3, NI_NUMERICHOST | NI_NUMERICSERV), 0);
  check_fails_or_refused(
      loop, evl_getnameinfo(loop, &sin, 0, NI_NUMERICHOST | NI_NUMERICSERV), 0);
  check_fails_or_refused(
      loop, evl_getnameinfo(loop, NULL, sizeof sin, NI_NUMERICHOST), 0);
  test_close(loop);
}

TEST(getaddrinfo_released_early) {
  /* Nobody holds the futures: the lists are freed when they complete. */
  evl_loop *loop = test_open();
  int i;
  for (i = 0; i < 8; i++) {
    evl_future *f = evl_getaddrinfo(loop, "127.0.0.1", "80", AF_INET,
                                    SOCK_STREAM, 0, AI_NUMERICHOST);
    CHECK(f != NULL);
    evl_future_release(f);
  }
  for (i = 0; i < 20; i++)
    evl_run_once(loop, 0.01);
  test_close(loop);
}

TESTS_BEGIN
T(getaddrinfo_numeric_ipv4)
T(getaddrinfo_localhost)
T(getaddrinfo_numeric_ipv6)
T(getaddrinfo_invalid_name)
T(getaddrinfo_numeric_flag_with_name)
T(getaddrinfo_no_host_no_service)
T(getaddrinfo_many_concurrent)
T(getaddrinfo_cancelled)
T(getaddrinfo_released_early)
T(getnameinfo_numeric)
T(getnameinfo_numeric_ipv6)
T(getnameinfo_bad_length)
TESTS_END
