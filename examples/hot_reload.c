/* Hot reload: watch a file and reload and print it on every change.

       hot_reload FILE     watch FILE until Ctrl-C
       hot_reload          demo: makes a temporary file, changes it three
                           times (the way editors save: write a new file,
                           rename it over the old one), and stops

   The watch is on the file's directory, filtered by the file's name: an
   editor that saves by renaming a new file over the old one replaces the
   inode, which a watch on the file itself would lose. Each change reads
   the whole file with evl_fs_read_file (on the executor) and prints it.

   Build: cc -std=c99 hot_reload.c -o hot_reload -lpthread */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#endif

typedef struct app {
  evl_loop *loop;
  char dir[512], name[256], path[800];
  int reloads, reading, again;
  const char *expect; /* demo: the contents that end it */
} app;

static void reload(app *a);

static void loaded(evl_future *f, void *arg) {
  app *a = (app *)arg;
  a->reading = 0;
  if (evl_future_error(f) == 0) {
    const evl_fs_data *d = (const evl_fs_data *)evl_future_result(f);
    a->reloads++;
    printf("reload %d (%lu bytes): %s", a->reloads, (unsigned long)d->len,
           (const char *)d->data);
    if (a->expect && strcmp((const char *)d->data, a->expect) == 0)
      evl_stop(a->loop);
  } else if (evl_future_error(f) != EVL_ENOENT) {
    printf("cannot read %s: %s\n", a->path, evl_strerror(evl_future_error(f)));
  }
  evl_future_release(f);
  if (a->again) { /* it changed again while we read it */
    a->again = 0;
    reload(a);
  }
}

static void reload(app *a) {
  evl_future *f;
  if (a->reading) {
    a->again = 1;
    return;
  }
  f = evl_fs_read_file(a->loop, a->path);
  if (f) {
    a->reading = 1;
    evl_future_add_done_callback(f, loaded, a);
  }
}

static void on_change(evl_fs_watch *w, const char *name, int events,
                      void *arg) {
  app *a = (app *)arg;
  (void)w;
  if (strcmp(name, a->name) == 0 &&
      (events & (EVL_FS_CREATED | EVL_FS_MODIFIED | EVL_FS_RENAMED)))
    reload(a);
}

/* Demo: a new version of the file, saved as editors do. */
static int step;
static void save_next(evl_loop *loop, void *arg) {
  static const char *versions[] = {"speed = 1\n", "speed = 2\n", "speed = 3\n"};
  app *a = (app *)arg;
  char tmp[820];
  FILE *f;
  (void)loop;
  if (step >= 3)
    return;
  snprintf(tmp, sizeof tmp, "%s.tmp", a->path);
  f = fopen(tmp, "w");
  if (!f)
    return;
  fputs(versions[step++], f);
  fclose(f);
#ifdef _WIN32
  MoveFileExA(tmp, a->path, MOVEFILE_REPLACE_EXISTING);
#else
  rename(tmp, a->path);
#endif
}

static void give_up(evl_loop *loop, void *arg) {
  (void)arg;
  printf("no change seen in 10 s\n");
  evl_stop(loop);
}

int main(int argc, char **argv) {
  app a;
  evl_fs_watch *w;
  evl_handle saver = 0;
  const char *slash;
  int rc, demo = argc < 2;
  memset(&a, 0, sizeof a);
  if (evl_loop_new(&a.loop, NULL) != 0)
    return 1;
  if (demo) {
    const char *tmp = getenv("TMPDIR");
#ifdef _WIN32
    if (!tmp)
      tmp = getenv("TEMP");
#endif
    snprintf(a.dir, sizeof a.dir, "%s/hot_reload_demo_%d", tmp ? tmp : "/tmp",
             (int)(evl_time(a.loop) * 1000) % 100000);
    snprintf(a.name, sizeof a.name, "settings.txt");
    a.expect = "speed = 3\n";
  } else {
    slash = strrchr(argv[1], '/');
    if (slash) {
      snprintf(a.dir, sizeof a.dir, "%.*s", (int)(slash - argv[1]), argv[1]);
      snprintf(a.name, sizeof a.name, "%s", slash + 1);
    } else {
      snprintf(a.dir, sizeof a.dir, ".");
      snprintf(a.name, sizeof a.name, "%s", argv[1]);
    }
  }
  snprintf(a.path, sizeof a.path, "%s/%s", a.dir, a.name);
  if (demo) { /* the directory must exist before it is watched */
    evl_future *f = evl_fs_mkdir(a.loop, a.dir, 0755);
    rc = evl_run_until_complete(a.loop, f);
    evl_future_release(f);
    if (rc) {
      fprintf(stderr, "cannot make %s: %s\n", a.dir, evl_strerror(rc));
      return 1;
    }
  }
  rc = evl_fs_watch_start(a.loop, a.dir, 0, 0.05, on_change, &a, &w);
  if (rc) {
    fprintf(stderr, "cannot watch %s: %s\n", a.dir, evl_strerror(rc));
    return 1;
  }
  printf("watching %s (%s)\n", a.path, evl_fs_watch_method(w));
  reload(&a); /* the contents at the start, if the file exists */
  if (demo) {
    saver = evl_call_every(a.loop, 0.3, save_next, &a);
    evl_call_later(a.loop, 10.0, give_up, NULL);
  }
  evl_run_forever(a.loop);
  evl_handle_cancel(a.loop, saver);
  evl_fs_watch_stop(w);
  if (demo) {
    evl_future *f = evl_fs_unlink(a.loop, a.path);
    evl_run_until_complete(a.loop, f);
    evl_future_release(f);
    f = evl_fs_rmdir(a.loop, a.dir);
    evl_run_until_complete(a.loop, f);
    evl_future_release(f);
  }
  evl_loop_free(a.loop);
  printf("%d reloads\n", a.reloads);
  return demo && a.reloads < 1 ? 1 : 0;
}
