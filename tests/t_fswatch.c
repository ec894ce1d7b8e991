/* Watching files (evl_fs_watch_start): created, modified, deleted and
   renamed entries of a directory, changes of one file, stop from inside
   the callback; through inotify (Linux), EVFILT_VNODE (kqueue loops) and
   stat polling (everywhere, and forced with EVL_FS_WATCH_POLL). */
#include "test.h"

#ifndef EVLOOP_NO_FS
#define MAX_EV 64
typedef struct seen {
  int n;
  char name[MAX_EV][64];
  int ev[MAX_EV];
  int stop_at;
  evl_fs_watch *w;
} seen;

static void on_change(evl_fs_watch *w, const char *name, int events,
                      void *arg) {
  seen *s = (seen *)arg;
  CHECK(name != NULL);
  if (s->n < MAX_EV) {
    snprintf(s->name[s->n], sizeof s->name[0], "%s", name);
    s->ev[s->n] = events;
  }
  s->n++;
  if (s->stop_at && s->n == s->stop_at)
    evl_fs_watch_stop(w);
}

/* Index of the first event for name with any of the bits, from `from`;
   -1 if none. */
static int find(const seen *s, int from, const char *name, int bits) {
  int i;
  for (i = from; i < s->n && i < MAX_EV; i++)
    if (strcmp(s->name[i], name) == 0 && (s->ev[i] & bits))
      return i;
  return -1;
}

static void wait_for(evl_loop *loop, const seen *s, const char *name,
                     int bits) {
  double end = test_now() + 10;
  while (find(s, 0, name, bits) < 0 && test_now() < end)
    evl_run_once(loop, 0.02);
  if (find(s, 0, name, bits) < 0) {
    int i;
    for (i = 0; i < s->n && i < MAX_EV; i++)
      printf("  event %d: %s %d\n", i, s->name[i], s->ev[i]);
    printf("  waited for %s %d\n", name, bits);
  }
  CHECK(find(s, 0, name, bits) >= 0);
}

static void put(const char *dir, const char *name, const char *data,
                const char *mode) {
  char p[700];
  FILE *f;
  snprintf(p, sizeof p, "%s/%s", dir, name);
  f = fopen(p, mode);
  CHECK(f != NULL);
  fputs(data, f);
  fclose(f);
}

static void dir_case(int flags) {
  evl_loop *loop = test_loop();
  char dir[512], a[700], b[700];
  seen s;
  int wine_rdcw;
  memset(&s, 0, sizeof s);
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  CHECK_EQ(evl_fs_watch_start(loop, dir, flags, 0.02, on_change, &s, &s.w), 0);
  printf("  method: %s\n", evl_fs_watch_method(s.w));
  /* wine 8's ReadDirectoryChangesW: no record for a write to a file, and
     after a rename neither the new name nor its removal (file_native
     checks a removal there) */
  wine_rdcw = test_under_wine() &&
              strcmp(evl_fs_watch_method(s.w), "ReadDirectoryChangesW") == 0;
  if (flags)
    CHECK(strcmp(evl_fs_watch_method(s.w), "poll") == 0);
  else if (strcmp(evl_backend_name(loop), "kqueue") == 0)
    CHECK(strcmp(evl_fs_watch_method(s.w), "kqueue") == 0);
  else if (strcmp(evl_backend_name(loop), "iocp") == 0)
    CHECK(strcmp(evl_fs_watch_method(s.w), "ReadDirectoryChangesW") == 0);
#ifdef __linux__
  else
    CHECK(strcmp(evl_fs_watch_method(s.w), "inotify") == 0);
#endif
  CHECK_EQ(evl_loop_alive(loop), 1);
  put(dir, "a", "one", "w");
  wait_for(loop, &s, "a", EVL_FS_CREATED);
  evl_run_once(loop, 0.1); /* let the creation's own writes pass */
  put(dir, "a", " two", "a");
  if (wine_rdcw)
    printf("  note: wine reports no write through ReadDirectoryChangesW\n");
  else
    wait_for(loop, &s, "a", EVL_FS_MODIFIED);
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  CHECK_EQ(rename(a, b), 0);
  if (strcmp(evl_fs_watch_method(s.w), "poll") == 0 ||
      strcmp(evl_fs_watch_method(s.w), "kqueue") == 0) {
    wait_for(loop, &s, "a", EVL_FS_DELETED);
    wait_for(loop, &s, "b", EVL_FS_CREATED);
  } else {
    wait_for(loop, &s, "a", EVL_FS_RENAMED);
    if (!wine_rdcw)
      wait_for(loop, &s, "b", EVL_FS_RENAMED);
  }
  CHECK_EQ(test_unlink(b), 0);
  if (wine_rdcw)
    printf("  note: wine reports neither the new name nor its removal\n");
  else
    wait_for(loop, &s, "b", EVL_FS_DELETED);
  evl_fs_watch_stop(s.w);
  CHECK_EQ(evl_loop_alive(loop), 0);
  CHECK_EQ(test_rmdir(dir), 0);
  evl_loop_free(loop);
}

TEST(directory_native) {
  dir_case(0);
}
TEST(directory_polling) {
  dir_case(EVL_FS_WATCH_POLL);
}

static void file_case(int flags) {
  evl_loop *loop = test_loop();
  char dir[512], f[700];
  seen s;
  memset(&s, 0, sizeof s);
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  put(dir, "conf.txt", "x=1\n", "w");
  snprintf(f, sizeof f, "%s/conf.txt", dir);
  CHECK_EQ(evl_fs_watch_start(loop, f, flags, 0.02, on_change, &s, &s.w), 0);
  put(dir, "conf.txt", "x=22\n", "w");
  wait_for(loop, &s, "conf.txt", EVL_FS_MODIFIED);
  CHECK_EQ(test_unlink(f), 0);
  wait_for(loop, &s, "conf.txt", EVL_FS_DELETED);
  evl_fs_watch_stop(s.w);
  CHECK_EQ(test_rmdir(dir), 0);
  evl_loop_free(loop);
}

TEST(file_native) {
  file_case(0);
}
TEST(file_polling) {
  file_case(EVL_FS_WATCH_POLL);
}

/* Stopped from inside its callback, among several changes at once: no
   callback after that, and the loop closes cleanly. */
static void stop_case(int flags) {
  evl_loop *loop = test_loop();
  char dir[512], p[700];
  seen s;
  int i;
  memset(&s, 0, sizeof s);
  s.stop_at = 1;
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  CHECK_EQ(evl_fs_watch_start(loop, dir, flags, 0.02, on_change, &s, &s.w), 0);
  put(dir, "x1", "1", "w");
  put(dir, "x2", "2", "w");
  put(dir, "x3", "3", "w");
  for (i = 0; i < 20; i++)
    evl_run_once(loop, 0.02);
  CHECK_EQ(s.n, 1);
  CHECK_EQ(evl_loop_alive(loop), 0);
  for (i = 1; i <= 3; i++) {
    snprintf(p, sizeof p, "%s/x%d", dir, i);
    CHECK_EQ(test_unlink(p), 0);
  }
  CHECK_EQ(test_rmdir(dir), 0);
  evl_loop_free(loop);
}
TEST(stop_inside_callback) {
  stop_case(0);
  stop_case(EVL_FS_WATCH_POLL);
}

/* A watch still running when the loop closes is freed with it. */
TEST(closed_with_the_loop) {
  evl_loop *loop = test_loop();
  char dir[512];
  seen s;
  evl_fs_watch *w2;
  memset(&s, 0, sizeof s);
  CHECK_EQ(test_mkdtemp(dir, sizeof dir), 0);
  CHECK_EQ(evl_fs_watch_start(loop, dir, 0, 0, on_change, &s, &s.w), 0);
  CHECK_EQ(
      evl_fs_watch_start(loop, dir, EVL_FS_WATCH_POLL, 0, on_change, &s, &w2),
      0);
  evl_run_once(loop, 0);
  evl_loop_free(loop);
  CHECK_EQ(test_rmdir(dir), 0);
}

TEST(bad_input) {
  evl_loop *loop = test_loop();
  evl_fs_watch *w = (evl_fs_watch *)&w;
  seen s;
  double zero = 0;
  memset(&s, 0, sizeof s);
  CHECK_EQ(
      evl_fs_watch_start(loop, "/no/such/evl/dir", 0, 0, on_change, &s, &w),
      EVL_ENOENT);
  CHECK(w == NULL);
  CHECK_EQ(evl_fs_watch_start(NULL, ".", 0, 0, on_change, &s, &w), EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, NULL, 0, 0, on_change, &s, &w), EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, "", 0, 0, on_change, &s, &w), EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, ".", 0, 0, NULL, &s, &w), EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, ".", 0, 0, on_change, &s, NULL),
           EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, ".", 64, 0, on_change, &s, &w), EVL_EINVAL);
  CHECK_EQ(evl_fs_watch_start(loop, ".", 0, zero / zero, on_change, &s, &w),
           EVL_EINVAL);
  evl_fs_watch_stop(NULL);
  CHECK(evl_fs_watch_method(NULL) == NULL);
  CHECK_EQ(evl_loop_alive(loop), 0);
  evl_loop_free(loop);
}

TESTS_BEGIN
T(directory_native)
T(directory_polling)
T(file_native)
T(file_polling)
T(stop_inside_callback)
T(closed_with_the_loop)
T(bad_input)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_FS: no file watching")
#endif
