/* libFuzzer target: the HTTP example's request handling
   (examples/http_request.h, what examples/http_server.c runs). The input's
   first byte seeds the chunking; the rest is what a client sends. It is
   fed once whole and once in pieces of 1 to 16 bytes (as reads may split
   it): the answers, the closing decision and (if the connection stays
   open) what stays buffered must be the same. Every answer is a whole HTTP/1.1
   response, and each http_input() call answers at most what its bytes could
   complete. Build: make fuzz (clang -fsanitize=fuzzer,address,undefined). */
#include "../../examples/http_request.h"
#include "fuzz.h"

#include <stdint.h>

typedef struct sink {
  char *data;
  size_t len, cap;
} sink;

static void sink_write(void *ctx, const char *data, size_t len) {
  sink *k = (sink *)ctx;
  if (k->len + len > k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 4096;
    while (cap < k->len + len)
      cap *= 2;
    k->data = (char *)realloc(k->data, cap);
    FUZZ_CHECK(k->data != NULL);
    k->cap = cap;
  }
  memcpy(k->data + k->len, data, len);
  k->len += len;
}

/* Feeds data in pieces (seed 0: whole); returns the answers in *k. */
static void run(http_conn *c, sink *k, const uint8_t *data, size_t size,
                unsigned seed) {
  static out_buf o; /* 16 KiB: not on the stack */
  size_t pos = 0;
  int answers = 0;
  memset(c, 0, sizeof *c);
  memset(k, 0, sizeof *k);
  o.write = sink_write;
  o.ctx = k;
  o.date = "Thu, 01 Jan 1970 00:00:00 GMT"; /* the same in both runs */
  o.len = 0;
  while (pos < size && !c->closing) {
    size_t n = size - pos;
    int a;
    if (seed) {
      seed = seed * 1103515245u + 12345u;
      n = 1 + (seed >> 16) % 16;
      if (n > size - pos)
        n = size - pos;
    }
    a = http_input(c, (const char *)data + pos, n, &o);
    FUZZ_CHECK(a >= 0 && (size_t)a <= n); /* a request takes a byte at least */
    answers += a;
    out_flush(&o);
    pos += n;
  }
  FUZZ_CHECK(c->len <= HEAD_MAX);
  (void)answers;
}

/* Counts the answers: each starts with "HTTP/1.1 " and has a whole
   Content-Length body. */
static int whole_answers(const sink *k) {
  size_t pos = 0;
  int n = 0;
  while (pos < k->len) {
    const char *p = k->data + pos, *end, *cl;
    unsigned long body;
    FUZZ_CHECK(k->len - pos > 9 && !memcmp(p, "HTTP/1.1 ", 9));
    end = strstr(p, "\r\n\r\n");
    FUZZ_CHECK(end != NULL);
    cl = strstr(p, "Content-Length: ");
    FUZZ_CHECK(cl != NULL && cl < end);
    body = strtoul(cl + 16, NULL, 10);
    pos = (size_t)(end + 4 - k->data);
    /* HEAD answers have no body: the next answer or the end follows */
    if (pos + body <= k->len &&
        (pos + body == k->len || !memcmp(k->data + pos + body, "HTTP/1.1 ", 9)))
      pos += body;
    n++;
  }
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static http_conn a, b;
  sink ka, kb;
  if (size < 1)
    return 0;
  run(&a, &ka, data + 1, size - 1, 0);
  run(&b, &kb, data + 1, size - 1, 1u + data[0]);
  /* a NUL-terminated copy for strstr */
  sink_write(&ka, "", 1);
  ka.len--;
  sink_write(&kb, "", 1);
  kb.len--;
  FUZZ_CHECK(ka.len == kb.len && !memcmp(ka.data, kb.data, ka.len));
  FUZZ_CHECK(a.closing == b.closing);
  if (!a.closing) { /* a closing connection's leftovers do not matter */
    FUZZ_CHECK(a.len == b.len && !memcmp(a.buf, b.buf, a.len));
    FUZZ_CHECK(a.body_left == b.body_left && http_idle(&a) == http_idle(&b));
  }
  (void)whole_answers(&ka);
  free(ka.data);
  free(kb.data);
  return 0;
}
