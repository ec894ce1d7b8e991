/* libFuzzer target: host lists, ports and addresses, as evl_create_server,
   evl_create_connection and the datagram endpoints take them, checked
   against a reference written here:
     - evl__hosts_check: EVL_EINVAL exactly when an element of the
       comma-separated list is empty (after its leading spaces);
     - a list that passes it and is all numeric resolves without
       getaddrinfo (this file defines getaddrinfo, which counts the calls
       and answers EAI_NONAME: no DNS while fuzzing), to one address per
       element, the one inet_pton gives, with the port;
     - any other list gets a clean error or addresses, never a crash;
     - evl__numeric_addr: EVL_EINVAL for ports outside 0..65535;
     - evl__unix_addr: EVL_EINVAL for "", EVL_ENAMETOOLONG from 108
       bytes on, else the path (an abstract one for "@name").
   The input: 2 bytes of port, 1 of family, then the host text (up to
   400 bytes).
   Build: make fuzz (clang -fsanitize=fuzzer,address,undefined). */
#define EVLOOP_IMPLEMENTATION
#include "../../evloop.h"
#include "fuzz.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gai_calls;

/* Replaces the C library's: no DNS while fuzzing. */
int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res) {
  (void)node;
  (void)service;
  (void)hints;
  *res = NULL;
  gai_calls++;
  return EAI_NONAME;
}

/* The reference: the elements of the list (the first max of them),
   leading spaces dropped; *empty: one of them (any) is empty. */
static int split(const char *h, char el[][128], int max, int *empty) {
  int n = 0;
  *empty = 0;
  for (;;) {
    const char *e = strchr(h, ',');
    size_t len = e ? (size_t)(e - h) : strlen(h);
    while (len && *h == ' ') {
      h++;
      len--;
    }
    if (len == 0)
      *empty = 1;
    if (n < max) {
      size_t k = len < 127 ? len : 127;
      memcpy(el[n], h, k);
      el[n][k] = '\0';
      if (len > 127)
        el[n][0] = '\x01'; /* too long to be numeric: not an address */
    }
    n++;
    if (!e)
      return n;
    h = e + 1;
  }
}

static void check_numeric_list(const char *h, int port, int family, int nel,
                               char el[][128]) {
  evl__addrs *l = NULL;
  int rc, i;
  gai_calls = 0;
  rc = evl__resolve_all(h, port, family, 0, &l);
  FUZZ_CHECK(gai_calls == 0); /* numeric: no resolver */
  FUZZ_CHECK(rc == 0 && l && l->n == (size_t)nel);
  for (i = 0; i < nel; i++) {
    unsigned char want[16];
    const struct sockaddr *sa = (const struct sockaddr *)&l->a[i].ss;
    if (family != AF_INET6 && inet_pton(AF_INET, el[i], want) == 1) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)(void *)sa;
      FUZZ_CHECK(sa->sa_family == AF_INET);
      FUZZ_CHECK(!memcmp(&a->sin_addr, want, 4));
      FUZZ_CHECK(ntohs(a->sin_port) == port);
    } else {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(void *)sa;
      FUZZ_CHECK(inet_pton(AF_INET6, el[i], want) == 1);
      FUZZ_CHECK(sa->sa_family == AF_INET6);
      FUZZ_CHECK(!memcmp(&a->sin6_addr, want, 16));
      FUZZ_CHECK(ntohs(a->sin6_port) == port);
    }
  }
  evl__addrs_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char el[64][128];
  char h[401];
  int port, family, nel, empty, numeric = 1, i, rc;
  size_t n;
  struct sockaddr_storage ss;
  socklen_t len;
  struct sockaddr_un su;
  if (size < 3)
    return 0;
  port = (int)((data[0] << 8 | data[1]) % 65600) - 20; /* -20..65579 */
  family = data[2] % 3 == 0 ? 0 : data[2] % 3 == 1 ? AF_INET : AF_INET6;
  n = size - 3 < 400 ? size - 3 : 400;
  memcpy(h, data + 3, n);
  h[n] = '\0'; /* the text up to its first NUL */

  /* Addresses and ports. */
  rc = evl__numeric_addr(h, port, family, &ss, &len);
  if (port < 0 || port > 65535)
    FUZZ_CHECK(rc == EVL_EINVAL);
  else if (rc == 0)
    FUZZ_CHECK(len <= sizeof ss &&
               (ss.ss_family == AF_INET || ss.ss_family == AF_INET6));
  else
    FUZZ_CHECK(rc == EVL_EAI_NONAME);
  rc = evl__unix_addr(h, &su, &len);
  if (!*h)
    FUZZ_CHECK(rc == EVL_EINVAL);
  else if (strlen(h) >= sizeof su.sun_path)
    FUZZ_CHECK(rc == EVL_ENAMETOOLONG);
  else
    FUZZ_CHECK(
        rc == 0 && len <= sizeof su &&
        (h[0] == '@' ? su.sun_path[0] == '\0' : strcmp(su.sun_path, h) == 0));
  if (port < 0 || port > 65535)
    return 0;

  /* Host lists. */
  nel = split(h, el, 64, &empty);
  for (i = 0; i < nel && i < 64; i++) {
    struct sockaddr_storage x;
    if (el[i][0] && evl__numeric_addr(el[i], port, family, &x, &len) != 0)
      numeric = 0;
  }
  rc = evl__hosts_check(h);
  FUZZ_CHECK(rc == (*h && empty ? EVL_EINVAL : 0));
  if (!*h) {
    FUZZ_CHECK(evl__hosts_numeric(h, family) == 1);
    return 0;
  }
  if (rc == 0 && nel <= 64) /* the fast path takes exactly numeric lists */
    FUZZ_CHECK(evl__hosts_numeric(h, family) == numeric);
  if (rc == 0 && nel <= 64 && numeric)
    check_numeric_list(h, port, family, nel, el);
  else if (rc == 0) {
    evl__addrs *l = NULL;
    gai_calls = 0;
    rc = evl__resolve_all(h, port, family, 0, &l);
    FUZZ_CHECK(rc < 0 ? l == NULL : l != NULL && l->n > 0);
    evl__addrs_free(l);
  }
  return 0;
}
