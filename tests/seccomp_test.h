/* A sandbox's refusal, for the tests of the fallbacks (t_api, t_kqueue):
   refuse_epoll_create() installs a seccomp filter that makes
   epoll_create and epoll_create1 fail with EPERM in this process (and its
   children). Returns 0, or -1 where no filter can be installed. Linux,
   x86-64, glibc (which has the kernel headers it needs): include it only
   there. */
#ifndef EVL_SECCOMP_TEST_H
#define EVL_SECCOMP_TEST_H

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#ifndef AUDIT_ARCH_X86_64 /* <linux/audit.h> is not on every libc's path */
#define AUDIT_ARCH_X86_64 0xC000003Eu
#endif
static int refuse_epoll_create(void) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_epoll_create1, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_epoll_create, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & 0xffff)),
  };
  struct sock_fprog prog;
  prog.len = (unsigned short)(sizeof code / sizeof code[0]);
  prog.filter = code;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* With epoll refused: a default loop falls back to poll and says why in
   its backend name (fallback_name), and runs; a loop that asks for the
   refused backend by name fails (no silent switch) with want_err (0: with
   any error). */
static void check_refused_backend_falls_back(const char *fallback_name,
                                             evl_backend asked_by_name,
                                             int want_err) {
  evl_loop_config cfg;
  evl_loop *loop = NULL;
  int ran = 0, rc;
  if (refuse_epoll_create() != 0) {
    printf("  (cannot install a seccomp filter here: skipped)\n");
    return;
  }
  memset(&cfg, 0, sizeof cfg);
  CHECK_EQ(evl_loop_new(&loop, &cfg), 0);
  CHECK(strcmp(evl_backend_name(loop), fallback_name) == 0);
  CHECK_EQ(evl_backend_fd(loop), -1);
  CHECK(evl_call_later(loop, 0.001, test_stop_cb, &ran) > 0);
  CHECK_EQ(evl_run_forever(loop), 0);
  CHECK_EQ(ran, 1);
  test_close(loop);
  cfg.backend = asked_by_name;
  rc = evl_loop_new(&loop, &cfg);
  CHECK(rc < 0);
  if (want_err)
    CHECK_EQ(rc, want_err);
}

#endif
