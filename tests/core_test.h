/* Callbacks that do nothing, for the loop tests that only need a watcher
   or a signal handler to be there (include after test.h). */
#ifndef EVL_CORE_TEST_H
#define EVL_CORE_TEST_H

static inline void nop_fd_cb(evl_loop *loop, evl_fd fd, void *arg) {
  (void)loop;
  (void)fd;
  (void)arg;
}

static inline void nop_signal_cb(evl_loop *loop, int signum, void *arg) {
  (void)loop;
  (void)signum;
  (void)arg;
}

#endif
