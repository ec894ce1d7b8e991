/* libFuzzer target: the stream reader (evl_stream) against a reference
   model. The input is a limit, then commands: feed a chunk of bytes (as
   data_received would give it), start a read (read(n), read(-1),
   readexactly, readline, readuntil), cancel the pending read, or EOF. After
   every step:
     - a completed read returned exactly what the model says (the next
       bytes fed, up to the separator / n / EOF, or EVL_ELIMIT /
       EVL_EINCOMPLETE when the model says so);
     - bytes returned + bytes buffered == bytes fed (an EVL_ELIMIT loses
       nothing: the data stays buffered and is read later).
   At the end, EOF and read(-1) return the rest: everything fed came out
   once, in order. The stream runs over a real transport (one end of a
   socketpair, nothing ever sent on it); the chunks go straight to the
   stream's data_received, so the fuzzer chooses the chunking exactly.
   Build: make fuzz (clang -fsanitize=fuzzer,address,undefined). */
#define EVLOOP_IMPLEMENTATION
#include "../../evloop.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static evl_loop *loop;

/* The model: every byte fed, and how many came out. */
typedef struct model {
  unsigned char *fed;
  size_t nfed, nout, limit;
  int eof;
} model;

typedef struct pending {
  evl_future *f;
  int op; /* EVL__RD_* */
  long n;
  unsigned char sep[4];
  size_t seplen;
} pending;

/* What the model expects of the pending read now: 1 with *len (a result),
   1 with *err (an error), or 0 (still pending). */
static int expect(const model *m, const pending *p, size_t *len, int *err) {
  const unsigned char *b = m->fed + m->nout;
  size_t have = m->nfed - m->nout, i;
  *len = 0;
  *err = 0;
  switch (p->op) {
  case EVL__RD_READ:
    if (p->n == 0 || (p->n > 0 && have) || m->eof) {
      *len = p->n < 0 || (size_t)p->n > have ? have : (size_t)p->n;
      return 1;
    }
    return 0;
  case EVL__RD_EXACTLY:
    if (have >= (size_t)p->n) {
      *len = (size_t)p->n;
      return 1;
    }
    if (m->eof) {
      *err = EVL_EINCOMPLETE;
      return 1;
    }
    return 0;
  default:
    for (i = 0; i + p->seplen <= have; i++)
      if (!memcmp(b + i, p->sep, p->seplen))
        break;
    if (i + p->seplen <= have) {
      if (i + p->seplen > m->limit)
        *err = EVL_ELIMIT;
      else
        *len = i + p->seplen;
      return 1;
    }
    if (have > m->limit) {
      *err = EVL_ELIMIT;
      return 1;
    }
    if (m->eof) {
      if (p->op == EVL__RD_LINE)
        *len = have;
      else
        *err = EVL_EINCOMPLETE;
      return 1;
    }
    return 0;
  }
}

/* Checks the pending read against the model; clears it once done. */
static void check(evl_stream *s, model *m, pending *p) {
  size_t len;
  int err, want;
  if (p->f) {
    want = expect(m, p, &len, &err);
    FUZZ_CHECK(want == evl_future_done(p->f));
    if (want) {
      if (err) {
        FUZZ_CHECK(evl_future_error(p->f) == err);
      } else {
        evl_bytes *b = (evl_bytes *)evl_future_result(p->f);
        FUZZ_CHECK(evl_future_error(p->f) == 0 && b);
        FUZZ_CHECK(b->len == len);
        FUZZ_CHECK(len == 0 || !memcmp(b->data, m->fed + m->nout, len));
        FUZZ_CHECK(b->data[len] == 0);
        m->nout += len;
      }
      evl_future_release(p->f);
      p->f = NULL;
    }
  }
  FUZZ_CHECK(m->nout + s->len == m->nfed); /* nothing lost, nothing made up */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  model m;
  pending p;
  evl_stream *s;
  evl_transport *t;
  int sv[2];
  size_t pos = 0;
  if (!loop && evl_loop_new(&loop, NULL) != 0)
    abort();
  if (size < 1)
    return 0;
  memset(&m, 0, sizeof m);
  memset(&p, 0, sizeof p);
  m.limit = 1 + data[pos++] % 64; /* small limits reach EVL_ELIMIT */
  m.fed = (unsigned char *)malloc(size + 1);
  FUZZ_CHECK(m.fed != NULL);
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  s = evl__st_new(loop, m.limit);
  FUZZ_CHECK(s != NULL);
  t = evl_connect_accepted_socket(loop, &evl__stream_proto, s, sv[0]);
  FUZZ_CHECK(t != NULL);
  for (pos = 0; pos < 10 && !s->t; pos++)
    evl_run_once(loop, 0); /* connection_made */
  FUZZ_CHECK(s->t == t);
  pos = 1;
  while (pos + 1 < size && !m.eof) {
    unsigned cmd = data[pos++], arg = data[pos++];
    switch (cmd % 8) {
    case 0:
    case 1:
    case 2: { /* feed 1 to arg bytes (a transport never gives 0) */
      size_t n = arg;
      if (n > size - pos)
        n = size - pos;
      if (n == 0)
        break;
      memcpy(m.fed + m.nfed, data + pos, n);
      m.nfed += n;
      evl__st_data(t, data + pos, n, s);
      pos += n;
      break;
    }
    case 3:
    case 4: /* a read, unless one is pending (then: EVL_EBUSY) */
      if (p.f) {
        evl_future *f = evl_stream_read(s, 1);
        FUZZ_CHECK(f && evl_future_done(f) && evl_future_error(f) == EVL_EBUSY);
        evl_future_release(f);
        break;
      }
      switch (arg % 5) {
      case 0:
        p.op = EVL__RD_READ;
        p.n = (long)(arg / 5) - 8; /* -8..42: negative is until EOF */
        if (p.n < 0)
          p.n = -1;
        p.f = evl_stream_read(s, p.n);
        break;
      case 1:
        p.op = EVL__RD_EXACTLY;
        p.n = (long)(arg / 5);
        p.f = evl_stream_readexactly(s, (size_t)p.n);
        break;
      case 2:
        p.op = EVL__RD_LINE;
        p.sep[0] = '\n';
        p.seplen = 1;
        p.f = evl_stream_readline(s);
        break;
      default:
        p.op = EVL__RD_UNTIL;
        p.seplen = 1 + arg % 3;
        if (pos + p.seplen > size)
          p.seplen = 1;
        p.sep[0] = pos < size ? data[pos] : 'x';
        if (p.seplen > 1)
          memcpy(p.sep + 1, data + pos + 1, p.seplen - 1);
        pos += p.seplen > size - pos ? size - pos : p.seplen;
        p.f = evl_stream_readuntil(s, p.sep, p.seplen);
        break;
      }
      FUZZ_CHECK(p.f != NULL);
      break;
    case 5: /* cancel the pending read: its data stays */
      if (p.f && !evl_future_done(p.f)) {
        FUZZ_CHECK(evl_future_cancel(p.f) == 1);
        evl_future_release(p.f);
        p.f = NULL;
      }
      break;
    case 6: /* EOF */
      if (arg % 4 == 0) {
        m.eof = 1;
        (void)evl__st_eof(t, s);
      }
      break;
    default: /* the loop runs (done callbacks, nothing else to do) */
      evl_run_once(loop, 0);
      break;
    }
    check(s, &m, &p);
  }
  /* EOF, then the rest in one read(-1): all of it, once, in order. */
  if (p.f && !evl_future_done(p.f)) {
    FUZZ_CHECK(evl_future_cancel(p.f) == 1);
    evl_future_release(p.f);
    p.f = NULL;
  }
  if (!m.eof) {
    m.eof = 1;
    (void)evl__st_eof(t, s);
  }
  check(s, &m, &p);
  p.op = EVL__RD_READ;
  p.n = -1;
  p.f = evl_stream_read(s, -1);
  check(s, &m, &p);
  FUZZ_CHECK(p.f == NULL && m.nout == m.nfed && s->len == 0);
  evl_stream_free(s);
  close(sv[1]);
  for (pos = 0; pos < 100 && loop->transports; pos++)
    evl_run_once(loop, 0.001);
  FUZZ_CHECK(!loop->transports); /* the stream and its transport are gone */
  free(m.fed);
  return 0;
}
