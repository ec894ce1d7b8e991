/* File operations as futures on the executor (evl_fs_*): open, read and
   write at offsets, stat, fsync, directories, rename, unlink, copyfile,
   realpath, a whole file at once; errors as EVL_E* codes. */
#include "test.h"

#ifndef EVLOOP_NO_FS
#include "net_test.h"

#ifndef _WIN32
#include <sys/stat.h>
#endif

static char g_dir[512];

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", g_dir, name);
}

/* Waits for f: its error code; *res gets the result (f is released, so
   only numbers may be kept; stat_of copies a stat out, the others read
   their result before they release f). */
static int await_num(evl_loop *loop, evl_future *f, intptr_t *res) {
  int rc;
  CHECK(f != NULL);
  rc = wait_fut(loop, f);
  if (res)
    *res = rc == 0 ? (intptr_t)evl_future_result(f) : -1;
  evl_future_release(f);
  return rc;
}

/* A stat, lstat or fstat future that must succeed: a copy of its
   result (f is released). */
static evl_stat stat_of(evl_loop *loop, evl_future *f) {
  evl_stat st;
  CHECK(f != NULL);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK(evl_future_result(f) != NULL);
  st = *(const evl_stat *)evl_future_result(f);
  evl_future_release(f);
  return st;
}

/* After path was removed or renamed away: stat, read_file and readdir on
   it fail with EVL_ENOENT. */
static void check_gone(evl_loop *loop, const char *path) {
  int st = await_num(loop, evl_fs_stat(loop, path), NULL);
  int rf = await_num(loop, evl_fs_read_file(loop, path), NULL);
  int rd = await_num(loop, evl_fs_readdir(loop, path), NULL);
  if (st != EVL_ENOENT || rf != EVL_ENOENT || rd != EVL_ENOENT)
    fprintf(stderr, "  %s: stat %s, read_file %s, readdir %s\n", path,
            evl_err_name(st), evl_err_name(rf), evl_err_name(rd));
  CHECK_EQ(st, EVL_ENOENT);
  CHECK_EQ(rf, EVL_ENOENT);
  CHECK_EQ(rd, EVL_ENOENT);
}

/* A loop and a fresh g_dir; fs_done checks that the test left g_dir
   empty, then closes the loop. */
static evl_loop *fs_loop(void) {
  evl_loop *loop = test_open();
  CHECK_EQ(test_mkdtemp(g_dir, sizeof g_dir), 0);
  return loop;
}
static void fs_done(evl_loop *loop) {
  CHECK_EQ(test_rmdir(g_dir), 0);
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

/* Writes data into a new file at name; returns the file's size. */
static void put_file(evl_loop *loop, const char *name, const char *data) {
  char p[600];
  intptr_t fd, n;
  path_of(p, sizeof p, name);
  CHECK_EQ(
      await_num(loop,
                evl_fs_open(loop, p,
                            EVL_FS_WRITE | EVL_FS_CREATE | EVL_FS_TRUNC, 0644),
                &fd),
      0);
  CHECK_EQ(await_num(loop, evl_fs_write(loop, fd, data, strlen(data), 0), &n),
           0);
  CHECK_EQ(n, (intptr_t)strlen(data));
  CHECK_EQ(await_num(loop, evl_fs_close(loop, fd), NULL), 0);
}

TEST(open_write_read_stat) {
  evl_loop *loop = fs_loop();
  char p[600], buf[64];
  intptr_t fd, n;
  evl_future *f;
  evl_stat st;
  const evl_fs_data *d;
  path_of(p, sizeof p, "a.txt");
  CHECK_EQ(await_num(loop,
                     evl_fs_open(loop, p,
                                 EVL_FS_READ | EVL_FS_WRITE | EVL_FS_CREATE |
                                     EVL_FS_EXCL,
                                 0644),
                     &fd),
           0);
  CHECK(fd >= 0);
  CHECK_EQ(await_num(loop, evl_fs_write(loop, fd, "hello world", 11, 0), &n),
           0);
  CHECK_EQ(n, 11);
  CHECK_EQ(await_num(loop, evl_fs_write(loop, fd, "W", 1, 6), &n), 0);
  CHECK_EQ(await_num(loop, evl_fs_fsync(loop, fd), NULL), 0);
  st = stat_of(loop, evl_fs_fstat(loop, fd));
  CHECK_EQ(st.size, 11);
  CHECK_EQ(st.type, EVL_FS_FILE);
  CHECK(st.mtime_ns > 1000000000ll * 1000000000ll); /* after 2001 */
  memset(buf, 0, sizeof buf);
  CHECK_EQ(await_num(loop, evl_fs_read(loop, fd, buf, sizeof buf, 0), &n), 0);
  CHECK_EQ(n, 11);
  CHECK(memcmp(buf, "hello World", 11) == 0);
  CHECK_EQ(await_num(loop, evl_fs_read(loop, fd, buf, 4, 6), &n), 0);
  CHECK_EQ(n, 4);
  CHECK(memcmp(buf, "Worl", 4) == 0);
  CHECK_EQ(await_num(loop, evl_fs_read(loop, fd, buf, sizeof buf, 100), &n), 0);
  CHECK_EQ(n, 0);
  CHECK_EQ(await_num(loop, evl_fs_close(loop, fd), NULL), 0);
  /* EXCL on an existing file */
  CHECK_EQ(
      await_num(loop,
                evl_fs_open(loop, p, EVL_FS_WRITE | EVL_FS_CREATE | EVL_FS_EXCL,
                            0644),
                NULL),
      EVL_EEXIST);
  f = evl_fs_read_file(loop, p);
  CHECK_EQ(wait_fut(loop, f), 0);
  d = (const evl_fs_data *)evl_future_result(f);
  CHECK_EQ(d->len, 11);
  CHECK(strcmp((const char *)d->data, "hello World") == 0);
  evl_future_release(f);
  CHECK_EQ(stat_of(loop, evl_fs_stat(loop, p)).size, 11);
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, p), NULL), 0);
  check_gone(loop, p);
  fs_done(loop);
}

TEST(directories) {
  evl_loop *loop = fs_loop();
  char sub[600], p[700];
  evl_future *f;
  const evl_fs_dir *dir;
  size_t i;
  int seen = 0;
  path_of(sub, sizeof sub, "sub");
  CHECK_EQ(await_num(loop, evl_fs_mkdir(loop, sub, 0755), NULL), 0);
  CHECK_EQ(await_num(loop, evl_fs_mkdir(loop, sub, 0755), NULL), EVL_EEXIST);
  CHECK_EQ(stat_of(loop, evl_fs_stat(loop, sub)).type, EVL_FS_DIR);
  put_file(loop, "sub/one", "1");
  put_file(loop, "sub/two", "22");
  f = evl_fs_readdir(loop, sub);
  CHECK_EQ(wait_fut(loop, f), 0);
  dir = (const evl_fs_dir *)evl_future_result(f);
  CHECK_EQ(dir->count, 2);
  for (i = 0; i < dir->count; i++) {
    CHECK(dir->entries[i].type == EVL_FS_FILE ||
          dir->entries[i].type == EVL_FS_OTHER);
    if (strcmp(dir->entries[i].name, "one") == 0)
      seen |= 1;
    if (strcmp(dir->entries[i].name, "two") == 0)
      seen |= 2;
  }
  CHECK_EQ(seen, 3);
  evl_future_release(f);
  CHECK_EQ(await_num(loop, evl_fs_rmdir(loop, sub), NULL), EVL_ENOTEMPTY);
  snprintf(p, sizeof p, "%s/one", sub);
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, p), NULL), 0);
  snprintf(p, sizeof p, "%s/two", sub);
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, p), NULL), 0);
  f = evl_fs_readdir(loop, sub);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK_EQ(((const evl_fs_dir *)evl_future_result(f))->count, 0);
  evl_future_release(f);
  CHECK_EQ(await_num(loop, evl_fs_rmdir(loop, sub), NULL), 0);
  check_gone(loop, sub);
  CHECK_EQ(await_num(loop, evl_fs_rmdir(loop, sub), NULL), EVL_ENOENT);
  fs_done(loop);
}

TEST(rename_copy_realpath) {
  evl_loop *loop = fs_loop();
  char x[600], y[600], z[600], dotted[700];
  const char *rp;
  evl_future *f;
  size_t dl;
  put_file(loop, "x", "copy me");
  path_of(x, sizeof x, "x");
  path_of(y, sizeof y, "y");
  path_of(z, sizeof z, "z");
  CHECK_EQ(await_num(loop, evl_fs_copyfile(loop, x, y, 0), NULL), 0);
  f = evl_fs_read_file(loop, y);
  CHECK_EQ(wait_fut(loop, f), 0);
  CHECK(strcmp((const char *)((const evl_fs_data *)evl_future_result(f))->data,
               "copy me") == 0);
  evl_future_release(f);
  CHECK_EQ(await_num(loop, evl_fs_copyfile(loop, x, y, EVL_FS_EXCL), NULL),
           EVL_EEXIST);
  CHECK_EQ(await_num(loop, evl_fs_rename(loop, y, z), NULL), 0);
  check_gone(loop, y);
  CHECK_EQ(await_num(loop, evl_fs_rename(loop, y, z), NULL), EVL_ENOENT);
  /* rename replaces */
  CHECK_EQ(await_num(loop, evl_fs_rename(loop, x, z), NULL), 0);
  snprintf(dotted, sizeof dotted, "%s/./z", g_dir);
  f = evl_fs_realpath(loop, dotted);
  CHECK_EQ(wait_fut(loop, f), 0);
  rp = (const char *)evl_future_result(f);
  dl = strlen(rp);
  CHECK(dl > 2 && strstr(rp, "/./") == NULL && strstr(rp, "\\.\\") == NULL);
  CHECK(rp[dl - 1] == 'z' && (rp[dl - 2] == '/' || rp[dl - 2] == '\\'));
  evl_future_release(f);
  CHECK_EQ(await_num(loop, evl_fs_realpath(loop, y), NULL), EVL_ENOENT);
#ifndef _WIN32
  { /* lstat sees the link, stat the file */
    char l[600];
    evl_stat st;
    path_of(l, sizeof l, "link");
    CHECK_EQ(symlink(z, l), 0);
    CHECK_EQ(stat_of(loop, evl_fs_lstat(loop, l)).type, EVL_FS_LINK);
    st = stat_of(loop, evl_fs_stat(loop, l));
    CHECK_EQ(st.type, EVL_FS_FILE);
    CHECK_EQ(st.size, 7);
    CHECK_EQ(await_num(loop, evl_fs_unlink(loop, l), NULL), 0);
  }
#endif
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, z), NULL), 0);
  check_gone(loop, z);
  fs_done(loop);
}

/* A 3 MiB file read whole; 64 stats at once. */
TEST(big_file_and_many_at_once) {
  evl_loop *loop = fs_loop();
  static unsigned char big[3 << 20];
  char p[600];
  intptr_t fd, n;
  evl_future *fs[64];
  const evl_fs_data *d;
  evl_future *f;
  size_t i;
  for (i = 0; i < sizeof big; i++)
    big[i] = (unsigned char)(i * 7 + (i >> 12));
  path_of(p, sizeof p, "big");
  CHECK_EQ(await_num(loop,
                     evl_fs_open(loop, p, EVL_FS_WRITE | EVL_FS_CREATE, 0600),
                     &fd),
           0);
  CHECK_EQ(await_num(loop, evl_fs_write(loop, fd, big, sizeof big, 0), &n), 0);
  CHECK_EQ(n, (intptr_t)sizeof big);
  CHECK_EQ(await_num(loop, evl_fs_close(loop, fd), NULL), 0);
  f = evl_fs_read_file(loop, p);
  CHECK_EQ(wait_fut(loop, f), 0);
  d = (const evl_fs_data *)evl_future_result(f);
  CHECK_EQ(d->len, sizeof big);
  CHECK(memcmp(d->data, big, sizeof big) == 0);
  evl_future_release(f);
  for (i = 0; i < 64; i++)
    CHECK((fs[i] = evl_fs_stat(loop, p)) != NULL);
  for (i = 0; i < 64; i++) {
    CHECK_EQ(wait_fut(loop, fs[i]), 0);
    CHECK_EQ(((const evl_stat *)evl_future_result(fs[i]))->size, sizeof big);
    evl_future_release(fs[i]);
  }
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, p), NULL), 0);
  fs_done(loop);
}

TEST(bad_input) {
  evl_loop *loop = test_open();
  char buf[4];
  CHECK(evl_fs_open(NULL, "x", EVL_FS_READ, 0) == NULL);
  CHECK(evl_fs_stat(NULL, "x") == NULL);
  CHECK_EQ(await_num(loop, evl_fs_open(loop, NULL, EVL_FS_READ, 0), NULL),
           EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_open(loop, "", EVL_FS_READ, 0), NULL),
           EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_open(loop, "x", 0, 0), NULL), EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_open(loop, "x", EVL_FS_READ | 1024, 0), NULL),
           EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_read(loop, -1, buf, 4, 0), NULL), EVL_EBADF);
  CHECK_EQ(await_num(loop, evl_fs_read(loop, 0, buf, 4, -1), NULL), EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_write(loop, 1, NULL, 4, 0), NULL),
           EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_rename(loop, "a", NULL), NULL), EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_copyfile(loop, "a", "b", 99), NULL),
           EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_unlink(loop, NULL), NULL), EVL_EINVAL);
  CHECK_EQ(await_num(loop, evl_fs_stat(loop, "/no/such/evl/file"), NULL),
           EVL_ENOENT);
#ifndef _WIN32
  {
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    CHECK_EQ(await_num(loop, evl_fs_fstat(loop, fds[0]), NULL), EVL_EBADF);
    CHECK_EQ(await_num(loop, evl_fs_close(loop, fds[0]), NULL), EVL_EBADF);
  }
#endif
  test_close(loop);
  CHECK_EQ(g_reports, 0);
}

TESTS_BEGIN
T(open_write_read_stat)
T(directories)
T(rename_copy_realpath)
T(big_file_and_many_at_once)
T(bad_input)
TESTS_END
#else
TESTS_LEFT_OUT("built with EVLOOP_NO_FS: no file operations")
#endif
