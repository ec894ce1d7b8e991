/* A small test runner for evloop.h's tests: each test runs in a child
   process (so one crash or hang is one failure), under a 60 s alarm.
   A test file ends with TESTS_BEGIN T(name) ... TESTS_END, which defines
   main(). The run prints one line per test and ends with
   "N passed, N failed, N skipped". Run one test in-process: ./t_foo name
   A test that cannot apply here is never dropped silently: T_SKIP(name,
   "reason") in the list, or SKIP("reason") inside the test, prints
   "skip NAME: reason" and counts it as skipped.                          */
#ifndef EVL_TEST_H
#define EVL_TEST_H

/* clock_gettime, pthreads, setenv, AI_* under strict -std=c99. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "../evloop.h"

/* kqueue builds: the provider's header, so that a test can tell libkqueue
   (EVFILT_LIBKQUEUE) from the BSDs' kqueue and say what it skips there. */
#ifdef EVLOOP_BACKEND_KQUEUE
#include <sys/types.h>
#include <sys/event.h>
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <io.h>
#include <fcntl.h>
#include <sys/stat.h>
#ifndef SHUT_WR
#define SHUT_WR SD_SEND
#endif
#ifndef SIGKILL /* the numbers evloop.h takes on Windows too (as asyncio) */
#define SIGKILL 9
#endif
#else
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

typedef struct test_case {
  const char *name;
  void (*fn)(void);
  const char *skip; /* why it cannot run here, or NULL */
} test_case;

#define TEST(name) static void name(void)
#define T(name) {#name, name, NULL},
/* A test that does not apply on this platform (its function is usually
   not compiled here): listed, printed and counted as skipped. */
#define T_SKIP(name, reason) {#name, NULL, reason},
/* A POSIX-only test: runs on POSIX, skipped with the reason on Windows
   (wrap its function in #ifndef _WIN32). */
#ifdef _WIN32
#define T_POSIX(name, reason) T_SKIP(name, "Windows: " reason)
#else
#define T_POSIX(name, reason) T(name)
#endif
#define TESTS_BEGIN static const test_case test_cases_[] = {
#define TESTS_END                                                              \
  { NULL, NULL, NULL }                                                         \
  }                                                                            \
  ;                                                                            \
  int main(int argc, char **argv) {                                            \
    return test_main(test_cases_, argc, argv);                                 \
  }

/* A test file whose subject the build left out (EVLOOP_NO_FS & co.): one
   test that says so (and uses test.h's helpers, as a file's tests do). */
#define TESTS_LEFT_OUT(why)                                                    \
  TEST(everything) {                                                           \
    evl_loop *loop = test_open();                                              \
    CHECK(loop != NULL);                                                       \
    test_close(loop);                                                          \
    SKIP(why);                                                                 \
  }                                                                            \
  TESTS_BEGIN T(everything) TESTS_END

/* Fails the current test: prints where and why, exits the child. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      test_fail_(__FILE__, __LINE__, "CHECK(%s)", #cond);                      \
  } while (0)
#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_)                                                              \
      test_fail_(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b, a_,    \
                 b_);                                                          \
  } while (0)

/* Skips the current test at run time (something this machine lacks):
   prints "skip NAME: reason" and ends the test process with
   TEST_SKIP_STATUS, which the runner counts as skipped. */
#define TEST_SKIP_STATUS 77
static const char *test_current_;
#define SKIP(reason) test_skip_(reason)
static inline void test_skip_(const char *reason)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;
static inline void test_skip_(const char *reason) {
  printf("skip %s: %s\n", test_current_ ? test_current_ : "?", reason);
  fflush(stdout);
  exit(TEST_SKIP_STATUS);
}

static void test_fail_(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4), noreturn))
#endif
    ;

/* Which backend the tests run on: EVLOOP_TEST_BACKEND=select|poll|epoll|
   kqueue|iocp, default: the build's default. */
static evl_backend test_backend(void) {
  const char *b = getenv("EVLOOP_TEST_BACKEND");
  if (!b || !*b)
    return EVL_BACKEND_DEFAULT;
  if (!strcmp(b, "select"))
    return EVL_BACKEND_SELECT;
  if (!strcmp(b, "poll"))
    return EVL_BACKEND_POLL;
  if (!strcmp(b, "epoll"))
    return EVL_BACKEND_EPOLL;
  if (!strcmp(b, "kqueue"))
    return EVL_BACKEND_KQUEUE;
  if (!strcmp(b, "iocp"))
    return EVL_BACKEND_IOCP;
  return EVL_BACKEND_DEFAULT;
}

/* A new loop on the backend under test; fails the test if it cannot. */
static evl_loop *test_loop_with(evl_loop_config *cfg) {
  evl_loop *loop = NULL;
  evl_loop_config def;
  int rc;
  if (!cfg) {
    memset(&def, 0, sizeof def);
    cfg = &def;
  }
  if (cfg->backend == EVL_BACKEND_DEFAULT)
    cfg->backend = test_backend();
  rc = evl_loop_new(&loop, cfg);
  if (rc != 0 || !loop) {
    fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(rc));
    exit(1);
  }
  return loop;
}
static inline evl_loop *test_loop(void) {
  return test_loop_with(NULL);
}

/* ---- The open/close fixture ---------------------------------------------
   test_open() gives a loop on the backend under test whose exception
   handler counts its calls (g_reports; each printed unless g_quiet) and
   whose allocations are counted; test_close(loop) frees it and fails the
   test if the handler was called (test_close_reported(loop, n): called n
   times, the expected reports; test_close_any(loop): any number). When the test
   function has returned, the runner fails it if any allocation of its fixture
   loops is still held (futures may outlive their loop: the count is taken at
   the very end). test_open_with(cfg) keeps cfg's own allocator if it has one.
 */
static int g_reports, g_quiet;
static long g_test_live; /* allocations of the fixture's loops still held */
static int g_test_opened_;
/* evl_loop_config.alloc, counting into g_test_live (a loop calls it on its
   thread; loops of several threads: atomically where the compiler can). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__TINYC__)
#define TEST_LIVE_ADD(d) __atomic_add_fetch(&g_test_live, (d), __ATOMIC_RELAXED)
#define TEST_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define TEST_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define TEST_INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)
#elif !defined(_WIN32)
/* tcc has no __atomic builtins: one mutex around every counter instead. */
#include <pthread.h>
static pthread_mutex_t g_test_mu = PTHREAD_MUTEX_INITIALIZER;
static long test_locked_add_(void *x, long d, int is_long, int set) {
  long r;
  pthread_mutex_lock(&g_test_mu);
  if (is_long)
    r = set ? (*(long *)x = d) : (*(long *)x += d);
  else
    r = set ? (*(int *)x = (int)d) : (*(int *)x += (int)d);
  pthread_mutex_unlock(&g_test_mu);
  return r;
}
#define TEST_LIVE_ADD(d) test_locked_add_(&g_test_live, (d), 1, 0)
#define TEST_SET(x, v)                                                         \
  ((void)test_locked_add_(&(x), (v), sizeof(x) > sizeof(int), 1))
#define TEST_GET(x) test_locked_add_(&(x), 0, sizeof(x) > sizeof(int), 0)
#define TEST_INC(x) test_locked_add_(&(x), 1, sizeof(x) > sizeof(int), 0)
#else
#define TEST_LIVE_ADD(d) (g_test_live += (d))
#define TEST_SET(x, v) ((x) = (v))
#define TEST_GET(x) (x)
#define TEST_INC(x) (++(x))
#endif
static inline void count_handler(evl_loop *loop, const evl_context *ctx,
                                 void *arg) {
  (void)loop;
  (void)arg;
  if (!g_quiet)
    fprintf(stderr, "  exception handler: %s (%s)\n", ctx->message,
            ctx->error ? evl_err_name(ctx->error) : "-");
  TEST_INC(g_reports);
}
static void *test_count_alloc(void *ctx, void *p, size_t n) {
  (void)ctx;
  if (!n) {
    if (p)
      TEST_LIVE_ADD(-1);
    free(p);
    return NULL;
  }
  if (p)
    return realloc(p, n);
  p = malloc(n);
  if (p)
    TEST_LIVE_ADD(1);
  return p;
}
static inline evl_loop *test_open_with(evl_loop_config *cfg) {
  evl_loop_config def;
  evl_loop *loop;
  if (!cfg) {
    memset(&def, 0, sizeof def);
    cfg = &def;
  }
  if (!cfg->alloc)
    cfg->alloc = test_count_alloc;
  loop = test_loop_with(cfg);
  TEST_SET(g_test_opened_, 1); /* (loops of several threads too) */
  TEST_SET(g_reports, 0);
  evl_set_exception_handler(loop, count_handler, NULL);
  return loop;
}
static inline evl_loop *test_open(void) {
  return test_open_with(NULL);
}
static inline void test_close_(evl_loop *loop, int reports, const char *file,
                               int line) {
  int got;
  evl_loop_free(loop);
  got = TEST_GET(g_reports);
  if (reports >= 0 && got != reports)
    test_fail_(file, line,
               "the exception handler was called %d times, "
               "%d expected",
               got, reports);
}
#define test_close(loop) test_close_((loop), 0, __FILE__, __LINE__)
#define test_close_reported(loop, n)                                           \
  test_close_((loop), (n), __FILE__, __LINE__)
/* Reports may come or not (a race the test cannot steer): not checked. */
#define test_close_any(loop) test_close_((loop), -1, __FILE__, __LINE__)
/* After a test function returned: its fixture loops gave everything back. */
static inline void test_done_(void) {
  if (TEST_GET(g_test_opened_) && TEST_GET(g_test_live) != 0)
    test_fail_(__FILE__, __LINE__,
               "%ld allocations of the test's loops "
               "left (leak)",
               g_test_live);
}

/* Open fds (Linux: /proc/self/fd) or handles, sockets included
   (Windows); -1 where neither can be counted. */
#ifdef _WIN32
static inline int test_count_handles(void);
static inline int test_count_fds(void) {
  return test_count_handles();
}
#else
#include <dirent.h>
static inline void test_settle_fds(void);
static inline int test_count_fds(void) {
  DIR *d;
  test_settle_fds(); /* libkqueue: its closed kqueues' fds go a bit later */
  d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  if (!d)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}
#endif

/* libkqueue keeps fds of its own: process-wide ones made with the first
   kqueue and the first EVFILT_SIGNAL, and those of a closed kqueue until
   its monitoring thread frees them a moment later. A test that counts fds
   calls this before each count: it makes the lasting ones and waits for
   the others to go. A no-op elsewhere. */
#ifdef EVFILT_LIBKQUEUE
void libkqueue_drain_pending_close(void); /* libkqueue's, for its tests */
#endif
#if defined(EVFILT_LIBKQUEUE) && !defined(EVLOOP_NO_PROCESS)
static void test_sig_nop(evl_loop *loop, int signum, void *arg) {
  (void)loop;
  (void)signum;
  (void)arg;
}
#endif
static inline void test_settle_fds(void) {
#ifdef EVFILT_LIBKQUEUE
#ifndef EVLOOP_NO_PROCESS
  static int warm;
  if (!warm) {
    evl_loop *loop = test_loop();
    warm = 1;
    if (evl_add_signal_handler(loop, SIGWINCH, test_sig_nop, NULL) != 0)
      exit(1);
    evl_loop_free(loop);
  }
#endif
  libkqueue_drain_pending_close();
#endif
}

/* Set by `make test-cross`: the binary runs under qemu-user, whose few
   known limits some tests work around, always saying so. */
static inline int under_qemu(void) {
  const char *q = getenv("EVL_TEST_QEMU");
  return q && *q && strcmp(q, "0") != 0;
}

/* Monotonic wall time in seconds, independent of any loop's clock. */
static inline double test_now(void) {
#ifdef _WIN32
  LARGE_INTEGER c, f;
  QueryPerformanceCounter(&c);
  QueryPerformanceFrequency(&f);
  return (double)c.QuadPart / (double)f.QuadPart;
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
}

/* ---- Sockets on both platforms -----------------------------------------
   A socket is kept in an int on both (evloop.h does the same: Windows
   keeps handle values within 32 bits). Winsock closes sockets with
   closesocket, reads and writes them with recv and send, and has no
   socketpair: test_socketpair gives a connected loopback TCP pair there
   (AF_UNIX socketpair on POSIX). */
#ifdef _WIN32
static inline int test_closesocket(int fd) {
  return closesocket((SOCKET)fd) == 0 ? 0 : -1;
}
static inline long test_send(int fd, const void *buf, size_t len) {
  return (long)send((SOCKET)fd, (const char *)buf, (int)len, 0);
}
static inline long test_recv(int fd, void *buf, size_t len) {
  return (long)recv((SOCKET)fd, (char *)buf, (int)len, 0);
}
static inline int test_set_nonblocking(int fd) {
  u_long one = 1;
  return ioctlsocket((SOCKET)fd, (long)FIONBIO, &one) == 0 ? 0 : -1;
}
static inline int test_socketpair(int sv[2]) {
  SOCKET l, c = INVALID_SOCKET, a = INVALID_SOCKET;
  struct sockaddr_in sa;
  int len = (int)sizeof sa, one = 1;
  l = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (l == INVALID_SOCKET)
    return -1;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, (struct sockaddr *)&sa, len) != 0 || listen(l, 1) != 0 ||
      getsockname(l, (struct sockaddr *)&sa, &len) != 0)
    goto fail;
  c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (c == INVALID_SOCKET || connect(c, (struct sockaddr *)&sa, len) != 0)
    goto fail;
  a = accept(l, NULL, NULL);
  if (a == INVALID_SOCKET)
    goto fail;
  closesocket(l);
  /* Single bytes go at once, as on a socketpair; no child inherits them. */
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
  setsockopt(a, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
  SetHandleInformation((HANDLE)c, HANDLE_FLAG_INHERIT, 0);
  SetHandleInformation((HANDLE)a, HANDLE_FLAG_INHERIT, 0);
  sv[0] = (int)c;
  sv[1] = (int)a;
  return 0;
fail:
  closesocket(l);
  if (c != INVALID_SOCKET)
    closesocket(c);
  return -1;
}
static inline void test_sleep_ms(int ms) {
  Sleep((DWORD)ms);
}
/* Running under wine (its ntdll exports wine_get_version): for the few
   checks wine cannot pass, skipped there and run on Windows. */
static inline int test_under_wine(void) {
  HMODULE nt = GetModuleHandleA("ntdll.dll");
  return nt && GetProcAddress(nt, "wine_get_version") != NULL;
}
/* Open handles of this process, sockets included (a count that wine's
   GetProcessHandleCount, always 0, cannot give): handle values are
   multiples of 4, allocated from the bottom. */
static inline int test_count_handles(void) {
  DWORD flags;
  uintptr_t h;
  int n = 0;
  for (h = 4; h < (1u << 16); h += 4)
    if (GetHandleInformation((HANDLE)h, &flags))
      n++;
  return n;
}
/* fd is no open socket (any more). */
static inline int test_sock_is_closed(int fd) {
  int type = 0, len = (int)sizeof type;
  return getsockopt((SOCKET)fd, SOL_SOCKET, SO_TYPE, (char *)&type, &len) !=
             0 &&
         WSAGetLastError() == WSAENOTSOCK;
}
/* The last socket call failed because it would block. */
static inline int test_would_block(void) {
  return WSAGetLastError() == WSAEWOULDBLOCK;
}
/* A temporary file, read-write, removed once closed: a C runtime fd (what
   evl_sendfile takes on Windows). */
static inline int test_tmpfile_fd(void) {
  char dir[MAX_PATH], path[MAX_PATH];
  if (!GetTempPathA(sizeof dir, dir) || !GetTempFileNameA(dir, "evl", 0, path))
    return -1;
  return _open(path, _O_RDWR | _O_BINARY | _O_CREAT | _O_TRUNC | _O_TEMPORARY,
               _S_IREAD | _S_IWRITE);
}
static inline long test_fd_write(int fd, const void *buf, size_t len) {
  return (long)_write(fd, buf, (unsigned)len);
}
static inline int test_fd_close(int fd) {
  return _close(fd);
}
static inline int test_setenv(const char *name, const char *value) {
  return _putenv_s(name, value) == 0 ? 0 : -1;
}
static inline int test_unsetenv(const char *name) {
  return _putenv_s(name, "") == 0 ? 0 : -1; /* "" removes it */
}
/* A new empty directory in the temporary directory; its path in buf. */
static inline int test_mkdtemp(char *buf, size_t n) {
  char dir[MAX_PATH];
  int i;
  if (!GetTempPathA(sizeof dir, dir))
    return -1;
  for (i = 0; i < 1000; i++) {
    snprintf(buf, n, "%sevl-%lu-%d", dir, (unsigned long)GetCurrentProcessId(),
             i);
    if (CreateDirectoryA(buf, NULL))
      return 0;
    if (GetLastError() != ERROR_ALREADY_EXISTS)
      return -1;
  }
  return -1;
}
static inline int test_rmdir(const char *path) {
  return RemoveDirectoryA(path) ? 0 : -1;
}
static inline int test_unlink(const char *path) {
  return DeleteFileA(path) ? 0 : -1;
}
/* An anonymous pipe: two Win32 HANDLEs (in ints), which are no sockets. */
static inline int test_pipe(int p[2]) {
  HANDLE r, w;
  if (!CreatePipe(&r, &w, NULL, 0))
    return -1;
  p[0] = (int)(intptr_t)r;
  p[1] = (int)(intptr_t)w;
  return 0;
}
static inline int test_pipe_close(int fd) {
  return CloseHandle((HANDLE)(intptr_t)fd) ? 0 : -1;
}
#else
static inline int test_closesocket(int fd) {
  return close(fd);
}
static inline long test_send(int fd, const void *buf, size_t len) {
  return (long)write(fd, buf, len);
}
static inline long test_recv(int fd, void *buf, size_t len) {
  return (long)read(fd, buf, len);
}
static inline int test_set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}
static inline int test_socketpair(int sv[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
}
static inline int test_under_wine(void) {
  return 0;
}
static inline int test_sock_is_closed(int fd) {
  return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}
static inline int test_would_block(void) {
  return errno == EAGAIN || errno == EWOULDBLOCK;
}
static inline int test_tmpfile_fd(void) {
  char name[] = "/tmp/evl-test-XXXXXX";
  int fd = mkstemp(name);
  if (fd >= 0)
    unlink(name);
  return fd;
}
static inline long test_fd_write(int fd, const void *buf, size_t len) {
  return (long)write(fd, buf, len);
}
static inline int test_fd_close(int fd) {
  return close(fd);
}
static inline int test_setenv(const char *name, const char *value) {
  return setenv(name, value, 1);
}
static inline int test_unsetenv(const char *name) {
  return unsetenv(name);
}
static inline int test_mkdtemp(char *buf, size_t n) {
  snprintf(buf, n, "/tmp/evl-XXXXXX");
  return mkdtemp(buf) ? 0 : -1;
}
static inline int test_rmdir(const char *path) {
  return rmdir(path);
}
static inline int test_unlink(const char *path) {
  return unlink(path);
}
static inline int test_pipe(int p[2]) {
  return pipe(p);
}
static inline int test_pipe_close(int fd) {
  return close(fd);
}
static inline void test_sleep_ms(int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}
#endif

/* ---- Child programs on Windows ------------------------------------------
   Windows has no /bin/sh and coreutils: the subprocess tests run this very
   program as their child, "SELF --child CMD ARGS" (test_main dispatches),
   with stdio in binary mode:
     echo ARGS...  its arguments, space-separated, and "\n"
     lines ARGS... each argument on a line of its own
     exit N        exits with N
     sleep SECS [N]  sleeps, then exits N (0)
     say TEXT [SECS [N]]  TEXT and "\n", then sleeps SECS, exits N (0)
     cat           copies stdin to stdout until EOF
     outerr [N]    "out\n" to stdout, then "err\n" to stderr; exits N (0)
     cwd           the current directory and "\n"
     env NAME      NAME's value, or "unset", and "\n"
     handle H      exits 1 if H is a semaphore of count 37 here (the one
                   the parent made: inherited), else 0
     ready         "ready\n", then sleeps until killed                  */
#ifdef _WIN32
static inline const char *test_self(void) {
  static char path[MAX_PATH];
  if (!path[0])
    GetModuleFileNameA(NULL, path, sizeof path);
  return path;
}
#define TEST_CHILD(...) test_self(), "--child", __VA_ARGS__
static int test_child_main_(int argc, char **argv) {
  const char *cmd = argc > 0 ? argv[0] : "";
  int i;
  _setmode(_fileno(stdin), _O_BINARY);
  _setmode(_fileno(stdout), _O_BINARY);
  _setmode(_fileno(stderr), _O_BINARY);
  if (!strcmp(cmd, "echo") || !strcmp(cmd, "lines")) {
    for (i = 1; i < argc; i++)
      printf("%s%s", argv[i], cmd[0] == 'l' ? "\n" : i + 1 < argc ? " " : "");
    if (cmd[0] == 'e')
      printf("\n");
  } else if (!strcmp(cmd, "exit") && argc > 1) {
    return atoi(argv[1]);
  } else if (!strcmp(cmd, "sleep") && argc > 1) {
    Sleep((DWORD)(atof(argv[1]) * 1000));
    return argc > 2 ? atoi(argv[2]) : 0;
  } else if (!strcmp(cmd, "say") && argc > 1) {
    printf("%s\n", argv[1]);
    fflush(stdout);
    if (argc > 2)
      Sleep((DWORD)(atof(argv[2]) * 1000));
    return argc > 3 ? atoi(argv[3]) : 0;
  } else if (!strcmp(cmd, "cat")) {
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
      if (fwrite(buf, 1, n, stdout) != n)
        return 2;
  } else if (!strcmp(cmd, "outerr")) {
    fputs("out\n", stdout);
    fflush(stdout);
    fputs("err\n", stderr);
    fflush(stderr);
    return argc > 1 ? atoi(argv[1]) : 0;
  } else if (!strcmp(cmd, "cwd")) {
    char dir[MAX_PATH];
    if (!GetCurrentDirectoryA(sizeof dir, dir))
      return 2;
    printf("%s\n", dir);
  } else if (!strcmp(cmd, "env") && argc > 1) {
    const char *v = getenv(argv[1]);
    printf("%s\n", v ? v : "unset");
  } else if (!strcmp(cmd, "handle") && argc > 1) {
    LONG prev = -1;
    return ReleaseSemaphore((HANDLE)(intptr_t)atoll(argv[1]), 1, &prev) &&
           prev == 37;
  } else if (!strcmp(cmd, "ready")) {
    printf("ready\n");
    fflush(stdout);
    for (;;)
      Sleep(1000);
  } else {
    fprintf(stderr, "unknown child command \"%s\"\n", cmd);
    return 99;
  }
  fflush(stdout);
  return 0;
}
#endif

/* Windows has no fork: each test runs in a new process of this program
   (argv[0] NAME), killed after 60 s. 0 passed, else the exit code. */
#ifdef _WIN32
static int test_run_child_(const char *self, const char *name, int *timed_out) {
  char cmd[1024];
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  DWORD code = 1;
  int tries = 0;
  *timed_out = 0;
  snprintf(cmd, sizeof cmd, "\"%s\" %s", self, name);
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  /* Starting the test's process is the runner's job, not the test: wine
     under load has refused it once in a while, and once started one that
     died in its DLL initialisation (STATUS_DLL_INIT_FAILED, before main),
     so try again (and say so). */
  for (;;) {
    if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
      printf("  note: starting %s failed (error %lu)%s\n", name,
             (unsigned long)GetLastError(), tries < 2 ? ", trying again" : "");
      fflush(stdout);
      if (++tries == 3)
        return -1;
      Sleep(200);
      continue;
    }
    if (WaitForSingleObject(pi.hProcess, 60000) == WAIT_TIMEOUT) {
      *timed_out = 1;
      TerminateProcess(pi.hProcess, 124);
      WaitForSingleObject(pi.hProcess, INFINITE);
    }
    GetExitCodeProcess(pi.hProcess, &code);
    CloseHandle(pi.hProcess);
    CloseHandle(pi.hThread);
    if (code != 0xC0000142u || ++tries == 3)
      return (int)code;
    printf("  note: %s's process did not start (STATUS_DLL_INIT_FAILED), "
           "trying again\n",
           name);
    fflush(stdout);
    Sleep(200);
  }
}
#endif
/* Test data that shows a lost, doubled or reordered byte: byte i of a
   long stream (no short period), and n such bytes from offset off. */
static inline unsigned char test_pat(size_t i) {
  return (unsigned char)((i * 131u + (i >> 11) + (i >> 19)) & 0xff);
}
static inline unsigned char *test_pattern_buf(size_t n, size_t off) {
  unsigned char *b = (unsigned char *)malloc(n ? n : 1);
  size_t i;
  if (!b)
    test_fail_(__FILE__, __LINE__, "out of memory for %lu bytes",
               (unsigned long)n);
  for (i = 0; i < n; i++)
    b[i] = test_pat(off + i);
  return b;
}

/* Callbacks many tests need: count into an int; count (if given) and stop. */
static inline void test_count_cb(evl_loop *loop, void *arg) {
  (void)loop;
  (*(int *)arg)++;
}
static inline void test_stop_cb(evl_loop *loop, void *arg) {
  if (arg)
    (*(int *)arg)++;
  evl_stop(loop);
}
/* Runs in 3 iterations in a row (counting into an int), then stops. */
static inline void test_chain_cb(evl_loop *loop, void *arg) {
  int *n = (int *)arg;
  if (++*n < 3)
    CHECK(evl_call_soon(loop, test_chain_cb, n) > 0);
  else
    evl_stop(loop);
}

#include <stdarg.h>
static void test_fail_(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "  %s:%d: failed: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  exit(1);
}

/* One result line; returns 0 passed, 1 failed, 2 skipped (the test
   printed its own "skip" line). */
static int test_report_(const char *name, int skipped, int ok,
                        const char *why) {
  if (skipped)
    return 2;
  if (ok) {
    printf("ok   %s\n", name);
    return 0;
  }
  printf("FAIL %s: %s\n", name, why);
  return 1;
}

static int test_main(const test_case *cases, int argc, char **argv) {
  int counts[3] = {0, 0, 0}, i; /* passed, failed, skipped */
  const char *backend = getenv("EVLOOP_TEST_BACKEND");
#ifdef _WIN32
  WSADATA wsa; /* the tests make sockets before any loop starts Winsock */
  if (argc > 2 && !strcmp(argv[1], "--child"))
    return test_child_main_(argc - 2, argv + 2);
  if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
    printf("FAIL WSAStartup\n");
    return 1;
  }
#endif
  if (argc > 1) { /* run the named tests in this process */
    int a;
    for (a = 1; a < argc; a++) {
      for (i = 0; cases[i].name; i++)
        if (!strcmp(cases[i].name, argv[a]))
          break;
      if (!cases[i].name) {
        fprintf(stderr, "no test named %s\n", argv[a]);
        return 2;
      }
      test_current_ = cases[i].name;
      if (cases[i].skip) {
        printf("skip %s: %s\n", cases[i].name, cases[i].skip);
        continue;
      }
      cases[i].fn();
      test_done_();
      if (!getenv("EVL_TEST_CHILD")) /* the runner prints the result */
        printf("ok %s\n", cases[i].name);
    }
    return 0;
  }
#ifdef _WIN32
  SetEnvironmentVariableA("EVL_TEST_CHILD", "1");
#else
  signal(SIGPIPE, SIG_IGN);
#endif
  for (i = 0; cases[i].name; i++) {
    char why[96];
    int r;
    fflush(stdout);
    fflush(stderr);
    if (cases[i].skip) {
      printf("skip %s: %s\n", cases[i].name, cases[i].skip);
      counts[2]++;
      continue;
    }
#ifdef _WIN32
    {
      int timed_out, code;
      code = test_run_child_(argv[0], cases[i].name, &timed_out);
      snprintf(why, sizeof why, "%s %d",
               timed_out ? "timeout (60 s), killed:" : "exit status", code);
      r = test_report_(cases[i].name, code == TEST_SKIP_STATUS, code == 0, why);
    }
#else
    {
      pid_t pid;
      int status = 0;
      pid = fork();
      if (pid == 0) {
        alarm(60);
        test_current_ = cases[i].name;
        cases[i].fn();
        test_done_();
        exit(0); /* not _exit: LeakSanitizer runs at exit */
      }
      if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        printf("FAIL %s: could not run\n", cases[i].name);
        counts[1]++;
        continue;
      }
      if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
      else
        snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
      r = test_report_(cases[i].name,
                       WIFEXITED(status) &&
                           WEXITSTATUS(status) == TEST_SKIP_STATUS,
                       WIFEXITED(status) && WEXITSTATUS(status) == 0, why);
    }
#endif
    counts[r]++;
  }
  printf("%s [%s]: %d passed, %d failed, %d skipped\n", argv[0],
         backend && *backend ? backend : "default", counts[0], counts[1],
         counts[2]);
  return counts[1] ? 1 : 0;
}

#endif
