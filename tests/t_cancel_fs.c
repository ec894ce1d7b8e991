/* The cancellation matrix for the file futures (evl_fs_*, on the
   executor): cancelled before the job starts (queued behind a blocked
   executor), after the job ran but before delivery, after completion,
   released unread, and raced by an evl_wait_for timeout. Nothing leaks
   (the fixture's allocation count, the fd count): an fd a cancelled open
   produced is closed by the library. */
#include "test.h"

#if !defined(EVLOOP_NO_FS) && !defined(EVLOOP_NO_THREADS)
#include "net_test.h"
#ifdef _WIN32
#include <io.h>
#else
#include <sys/stat.h>
#include <unistd.h>
#endif

static char g_dir[512];
static volatile int g_go; /* set by the loop thread, read by the blocker */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__TINYC__)
#define GO_GET() __atomic_load_n(&g_go, __ATOMIC_ACQUIRE)
#define GO_SET(v) __atomic_store_n(&g_go, (v), __ATOMIC_RELEASE)
#else
#define GO_GET() (g_go)
#define GO_SET(v) (g_go = (v))
#endif

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", g_dir, name);
}

/* Blocks the executor's only thread until g_go. */
static int blocker(void *arg, void **result) {
  (void)arg;
  (void)result;
  while (!GO_GET())
    test_sleep_ms(2);
  return 0;
}

/* The fd count once a loop has used the executor and been freed (Windows
   keeps a handle or two from the first use, whatever the test does). */
static int fd_base(void) {
  evl_loop *loop = test_loop();
  evl_future *f = evl_fs_stat(loop, ".");
  CHECK_EQ(wait_fut(loop, f), 0);
  evl_future_release(f);
  evl_loop_free(loop);
  return test_count_fds();
}

static evl_loop *one_thread_loop(void) {
  evl_loop_config cfg;
  evl_loop *loop;
  memset(&cfg, 0, sizeof cfg);
  cfg.executor_threads = 1;
  loop = test_open_with(&cfg);
  CHECK_EQ(test_mkdtemp(g_dir, sizeof g_dir), 0);
  return loop;
}

static void put(const char *name, const char *data) {
  char p[600];
  FILE *fp;
  path_of(p, sizeof p, name);
  fp = fopen(p, "wb");
  CHECK(fp != NULL);
  fputs(data, fp);
  fclose(fp);
}

static int exists(const char *name) {
  char p[600];
  FILE *fp;
  path_of(p, sizeof p, name);
  fp = fopen(p, "rb");
  if (fp)
    fclose(fp);
  return fp != NULL;
}

#define NOPS 16
/* One future of each kind on the files of g_dir; fd is an open file. */
static void all_ops(evl_loop *loop, evl_fd fd, char *buf, evl_future **f) {
  char a[600], b[600], d[600], n[600], c[600];
  path_of(a, sizeof a, "a");
  path_of(b, sizeof b, "b");
  path_of(d, sizeof d, "d");
  path_of(n, sizeof n, "new");
  path_of(c, sizeof c, "copy");
  f[0] = evl_fs_open(loop, a, EVL_FS_READ, 0);
  f[1] = evl_fs_close(loop, fd);
  f[2] = evl_fs_read(loop, fd, buf, 4, 0);
  f[3] = evl_fs_write(loop, fd, "zz", 2, 0);
  f[4] = evl_fs_stat(loop, a);
  f[5] = evl_fs_lstat(loop, a);
  f[6] = evl_fs_fstat(loop, fd);
  f[7] = evl_fs_fsync(loop, fd);
  f[8] = evl_fs_rename(loop, a, n);
  f[9] = evl_fs_unlink(loop, b);
  f[10] = evl_fs_mkdir(loop, n, 0755);
  f[11] = evl_fs_rmdir(loop, d);
  f[12] = evl_fs_readdir(loop, g_dir);
  f[13] = evl_fs_realpath(loop, a);
  f[14] = evl_fs_copyfile(loop, a, c, 0);
  f[15] = evl_fs_read_file(loop, a);
}

static void setup_files(void) {
  char d[600];
  put("a", "hello");
  put("b", "bye");
  path_of(d, sizeof d, "d");
#ifdef _WIN32
  CHECK(CreateDirectoryA(d, NULL));
#else
  CHECK_EQ(mkdir(d, 0755), 0);
#endif
}

/* Removes what the tests made, then the directory. */
static void cleanup(void) {
  static const char *const names[] = {"a", "b", "d", "new", "copy"};
  char p[600];
  size_t i;
  for (i = 0; i < sizeof names / sizeof *names; i++) {
    path_of(p, sizeof p, names[i]);
    if (test_unlink(p) != 0)
      (void)test_rmdir(p);
  }
  CHECK_EQ(test_rmdir(g_dir), 0);
}

/* The evl_fd of a stdio file. */
static evl_fd file_fd(FILE *fp) {
#ifdef _WIN32
  return (evl_fd)_get_osfhandle(_fileno(fp));
#else
  return (evl_fd)fileno(fp);
#endif
}

/* Queued behind a blocked executor, each cancelled: all are cancelled,
   none ran (the files are as they were), nothing leaks. */
TEST(cancel_queued) {
  int fds = fd_base(), i;
  evl_loop *loop = one_thread_loop();
  evl_future *blk, *f[NOPS];
  char buf[8];
  FILE *fp;
  char a[600];
  setup_files();
  path_of(a, sizeof a, "a");
  fp = fopen(a, "rb");
  CHECK(fp != NULL);
  GO_SET(0);
  blk = evl_run_in_executor(loop, NULL, blocker, NULL, NULL);
  all_ops(loop, file_fd(fp), buf, f);
  for (i = 0; i < NOPS; i++) {
    CHECK(f[i] != NULL);
    CHECK_EQ(evl_future_cancel(f[i]), 1);
    CHECK(evl_future_cancelled(f[i]));
  }
  GO_SET(1);
  CHECK_EQ(wait_fut(loop, blk), 0);
  evl_future_release(blk);
  for (i = 0; i < NOPS; i++)
    evl_future_release(f[i]);
  run_for(loop, 0.05);
  CHECK(exists("a"));
  CHECK(exists("b"));
  CHECK(!exists("new"));
  CHECK(!exists("copy"));
  fclose(fp);
  test_close(loop);
  if (fds >= 0)
    CHECK_EQ(test_count_fds(), fds);
  cleanup();
}

/* The job ran (the thread finished it) but the loop has not delivered it
   when the future is cancelled: what the job produced is freed; an open's
   fd is closed (it leaked before). */
TEST(cancel_after_job_ran) {
  int fds = fd_base(), i;
  evl_loop *loop = one_thread_loop();
  evl_future *f[NOPS], *o;
  char buf[8];
  char a[600];
  setup_files();
  path_of(a, sizeof a, "a");
  /* an fd of our own, which f[1] closes */
  o = evl_fs_open(loop, a, EVL_FS_READ | EVL_FS_WRITE, 0);
  CHECK_EQ(wait_fut(loop, o), 0);
  all_ops(loop, (evl_fd)(intptr_t)evl_future_result(o), buf, f);
  evl_future_release(o);
  test_sleep_ms(300); /* the jobs run on the thread meanwhile */
  for (i = 0; i < NOPS; i++) {
    CHECK(f[i] != NULL);
    CHECK_EQ(evl_future_cancel(f[i]), 1);
  }
  run_for(loop, 0.1);
  for (i = 0; i < NOPS; i++) {
    CHECK(evl_future_cancelled(f[i]));
    evl_future_release(f[i]);
  }
  test_close(loop);
  if (fds >= 0)
    CHECK_EQ(test_count_fds(), fds); /* ours was closed by f[1] */
  cleanup();
}

/* Released before the job ran and before it was delivered, never read: the
   open's fd is closed, structures freed. */
TEST(release_unread_pending) {
  int fds = fd_base(), i;
  evl_loop *loop = one_thread_loop();
  evl_future *f[4];
  char a[600];
  setup_files();
  path_of(a, sizeof a, "a");
  f[0] = evl_fs_open(loop, a, EVL_FS_READ, 0);
  f[1] = evl_fs_read_file(loop, a);
  f[2] = evl_fs_readdir(loop, g_dir);
  f[3] = evl_fs_realpath(loop, a);
  for (i = 0; i < 4; i++)
    evl_future_release(f[i]);
  test_sleep_ms(200);
  run_for(loop, 0.1);
  test_close(loop);
  /* a released open future still delivers its fd to nobody: documented as
     the caller's only once it reads it; the library closes it */
  if (fds >= 0)
    CHECK_EQ(test_count_fds(), fds);
  cleanup();
}

/* After completion cancel is a no-op and the result stays. */
TEST(cancel_after_done) {
  evl_loop *loop = one_thread_loop();
  evl_future *f;
  const evl_fs_data *d;
  char a[600];
  setup_files();
  path_of(a, sizeof a, "a");
  f = evl_fs_read_file(loop, a);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(evl_future_cancel(f), 0);
  CHECK(!evl_future_cancelled(f));
  d = (const evl_fs_data *)evl_future_result(f);
  CHECK_EQ(d->len, 5);
  CHECK(memcmp(d->data, "hello", 5) == 0);
  evl_future_release(f);
  test_close(loop);
  cleanup();
}

/* An evl_wait_for timeout on a queued unlink: EVL_ETIMEDOUT, the unlink
   is cancelled and never runs. */
TEST(wait_for_timeout) {
  evl_loop *loop = one_thread_loop();
  evl_future *blk, *f, *w;
  char b[600];
  setup_files();
  path_of(b, sizeof b, "b");
  GO_SET(0);
  blk = evl_run_in_executor(loop, NULL, blocker, NULL, NULL);
  f = evl_fs_unlink(loop, b);
  w = evl_wait_for(evl_future_ref(f), 0.05);
  CHECK_EQ(evl_run_until_complete(loop, w), EVL_ETIMEDOUT);
  CHECK(evl_future_cancelled(f));
  GO_SET(1);
  CHECK_EQ(wait_fut(loop, blk), 0);
  run_for(loop, 0.05);
  CHECK(exists("b"));
  evl_future_release(w);
  evl_future_release(f);
  evl_future_release(blk);
  test_close(loop);
  cleanup();
}

/* evl_wait_for timeouts racing a copyfile of 4 MB and a read_file of it
   (from none to plenty): each ends copied/read in full or timed out with
   its future cancelled (a copy cancelled while queued never runs; one
   already running goes on to the end: the one executor thread runs the
   later stat after it, which sees the copy whole or absent, never
   partial); nothing leaks either way. */
TEST(wait_for_races_running_job) {
  static const double timeouts[] = {0, 0.0005, 0.002, 0.01, 0.05, 5};
  int fds = fd_base();
  evl_loop *loop = one_thread_loop();
  char a[600], c[600];
  size_t i, size = 4u << 20;
  char *big = (char *)malloc(size);
  FILE *fp;
  CHECK(big != NULL);
  memset(big, 'x', size);
  path_of(a, sizeof a, "a");
  path_of(c, sizeof c, "copy");
  fp = fopen(a, "wb");
  CHECK(fp != NULL);
  CHECK_EQ(fwrite(big, 1, size, fp), size);
  fclose(fp);
  free(big);
  for (i = 0; i < sizeof timeouts / sizeof *timeouts; i++) {
    evl_future *f = evl_fs_copyfile(loop, a, c, 0);
    evl_future *r = evl_fs_read_file(loop, a);
    evl_future *w = evl_wait_for(evl_future_ref(f), timeouts[i]);
    evl_future *wr = evl_wait_for(evl_future_ref(r), timeouts[i]);
    int rc = evl_run_until_complete(loop, w);
    int rr = evl_run_until_complete(loop, wr);
    CHECK(rc == 0 || rc == EVL_ETIMEDOUT);
    CHECK(rr == 0 || rr == EVL_ETIMEDOUT);
    CHECK_EQ(evl_future_cancelled(f), rc == EVL_ETIMEDOUT);
    CHECK_EQ(evl_future_cancelled(r), rr == EVL_ETIMEDOUT);
    if (rr == 0)
      CHECK_EQ(((const evl_fs_data *)evl_future_result(r))->len, size);
    evl_future_release(w);
    evl_future_release(wr);
    evl_future_release(f);
    evl_future_release(r);
    /* the jobs finish (a cancelled running one too); then the copy is
       whole: copyfile's cancel cannot stop it once started */
    {
      evl_future *s = evl_fs_stat(loop, c);
      int st = wait_fut(loop, s);
      if (rc == 0)
        CHECK_EQ(st, 0);
      if (st == 0)
        CHECK_EQ(((const evl_stat *)evl_future_result(s))->size, size);
      evl_future_release(s);
    }
    (void)test_unlink(c);
  }
  test_close(loop);
  if (fds >= 0)
    CHECK_EQ(test_count_fds(), fds);
  cleanup();
}

/* A task awaiting an open (state: the path). */
static void opener(evl_task *t, void *state) {
  EVL_ASYNC_BEGIN(t);
  EVL_AWAIT(t,
            evl_fs_open(evl_task_loop(t), (const char *)state, EVL_FS_READ, 0));
  EVL_ASYNC_END(t);
}

/* Tasks awaiting opens are cancelled: one while its open is queued (it
   never runs), one after its open ran but before delivery (the fd is
   closed). Both tasks end cancelled; no fd is left. */
TEST(task_awaiting_cancelled) {
  int fds = fd_base();
  evl_loop *loop = one_thread_loop();
  evl_future *blk;
  evl_task *t1, *t2;
  char a[600];
  setup_files();
  path_of(a, sizeof a, "a");
  GO_SET(0);
  blk = evl_run_in_executor(loop, NULL, blocker, NULL, NULL);
  t1 = evl_task_create(loop, opener, a, 0);
  CHECK(t1 != NULL);
  run_for(loop, 0.05); /* t1 awaits its queued open */
  CHECK_EQ(evl_future_cancel(t1), 1);
  GO_SET(1);
  CHECK_EQ(wait_fut(loop, blk), 0);
  CHECK(evl_future_cancelled(t1));
  t2 = evl_task_create(loop, opener, a, 0);
  CHECK(t2 != NULL);
  evl_run_once(loop, 0); /* t2 starts its open */
  test_sleep_ms(200);    /* the open runs; the loop has not delivered it */
  CHECK_EQ(evl_future_cancel(t2), 1);
  run_for(loop, 0.1);
  CHECK(evl_future_cancelled(t2));
  evl_future_release(t1);
  evl_future_release(t2);
  evl_future_release(blk);
  test_close(loop);
  if (fds >= 0)
    CHECK_EQ(test_count_fds(), fds);
  cleanup();
}

TESTS_BEGIN
T(cancel_queued)
T(cancel_after_job_ran)
T(release_unread_pending)
T(cancel_after_done)
T(wait_for_timeout)
T(task_awaiting_cancelled)
T(wait_for_races_running_job)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_FS or EVLOOP_NO_THREADS")
#endif
