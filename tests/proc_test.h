/* Helpers the subprocess tests share (include after test.h). */
#ifndef EVL_PROC_TEST_H
#define EVL_PROC_TEST_H

#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Under valgrind (it preloads vgpreload_*.so), glibc's posix_spawn cannot
   report exec errors (valgrind runs CLONE_VFORK as a plain fork): the
   spawn succeeds and the child exits 127. The tests accept that there. */
static inline int under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p && strstr(p, "vgpreload") != NULL;
}

/* qemu-user too runs glibc's clone(CLONE_VM | CLONE_VFORK) as a plain
   fork, so the child's exec error never reaches posix_spawn's caller.
   1 (and says so) where a spawn that should fail succeeds with a child
   that exits 127. */
static inline int spawn_hides_exec_errors(void) {
  if (!under_valgrind() && !under_qemu())
    return 0;
  printf("  (%s runs vfork as fork: posix_spawn cannot report the exec "
         "error; checking for a child that exits 127 instead)\n",
         under_qemu() ? "qemu-user" : "valgrind");
  return 1;
}

/* Makes pidfd_open fail with ENOSYS in this (forked test) process, as on
   Linux < 5.3 or under a seccomp policy, so the loop watches exits through
   SIGCHLD. 0 if that is not possible here (then the test is skipped). */
#if defined(__linux__) && defined(PR_SET_SECCOMP)
typedef struct bpf_ins {
  unsigned short code;
  unsigned char jt, jf;
  unsigned int k;
} bpf_ins;
typedef struct bpf_prog {
  unsigned short len;
  bpf_ins *filter;
} bpf_prog;
static inline int no_pidfd(void) {
  static bpf_ins ins[] = {
      {0x20, 0, 0, 0},                 /* A = seccomp_data.nr */
      {0x15, 0, 1, 434},               /* A == __NR_pidfd_open ? */
      {0x06, 0, 0, 0x00050000u | 38u}, /* SECCOMP_RET_ERRNO | ENOSYS */
      {0x06, 0, 0, 0x7fff0000u}};      /* SECCOMP_RET_ALLOW */
  bpf_prog prog;
  prog.len = (unsigned short)(sizeof ins / sizeof ins[0]);
  prog.filter = ins;
  if (prctl(38 /* PR_SET_NO_NEW_PRIVS */, 1L, 0L, 0L, 0L) != 0 ||
      prctl(PR_SET_SECCOMP, 2L /* SECCOMP_MODE_FILTER */, &prog, 0L, 0L) != 0) {
    printf("  (seccomp not available%s: skipped)\n",
           under_qemu() ? " under qemu-user; make test-cross covers the "
                          "SIGCHLD path with its s390xalt build"
                        : "");
    return 0;
  }
  return 1;
}
#else
static inline int no_pidfd(void) {
  printf("  (not Linux: the SIGCHLD path is the only one)\n");
  return 0;
}
#endif

/* The child ended, and (POSIX) was reaped: kill(pid, 0) succeeds on a
   zombie, so this says "reaped" without reaping. On Windows the process
   ended (once its last handle is closed Windows forgets it, but wine 8
   lets an ended process be opened still). */
#ifdef _WIN32
static inline int gone(int pid) {
  HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  DWORD code = STILL_ACTIVE;
  if (!h)
    return 1;
  GetExitCodeProcess(h, &code);
  CloseHandle(h);
  return code != STILL_ACTIVE;
}
/* Kills the child (TerminateProcess, exit code 9); 0 on success. */
static inline int kill_pid(int pid) {
  HANDLE h = OpenProcess(PROCESS_TERMINATE, FALSE, (DWORD)pid);
  int ok = h && TerminateProcess(h, 9);
  if (h)
    CloseHandle(h);
  return ok ? 0 : -1;
}
#else
#include <errno.h>
#include <signal.h>
static inline int gone(int pid) {
  return pid > 0 && kill(pid, 0) == -1 && errno == ESRCH;
}
static inline int kill_pid(int pid) {
  return kill(pid, SIGKILL);
}
#endif

/* After evl_loop_free with a child running: the loop killed and reaped
   it. If not, the test fails, and the child is killed (and reaped) so
   that it does not outlive the test. */
static inline void check_no_child_left(int pid) {
#ifdef _WIN32
  if (gone(pid))
    return;
  kill_pid(pid);
  test_fail_(__FILE__, __LINE__, "child %d left after evl_loop_free", pid);
#else
  pid_t w;
  if (gone(pid))
    return;
  w = waitpid(pid, NULL, WNOHANG);
  kill_pid(pid);
  waitpid(pid, NULL, 0);
  test_fail_(__FILE__, __LINE__,
             "child %d left behind after evl_loop_free (%s)", pid,
             w == 0 ? "still running" : "a zombie");
#endif
}

#endif
