/* evloop.h - v0.1.0 - asyncio's event loop for C, in one header.

   Do this in *one* C or C++ file, before any other #include:

       #define EVLOOP_IMPLEMENTATION
       #include "evloop.h"

   Every other file includes "evloop.h" without the define. Link with
   -lpthread on POSIX (nothing else is needed on Linux).

   CONTENTS
     1. Quick start          5. Threads
     2. Configuration macros 6. Ownership and lifetimes
     3. Backends             7. Does NOT do (yet)
     4. Errors and logging   8. Declarations, implementation, licence

   1. QUICK START (examples/tasks.c is the same thing, compiled by the tests)

       #define EVLOOP_IMPLEMENTATION
       #include "evloop.h"
       #include <stdio.h>

       typedef struct { int i; } counter;

       static void count(evl_task *t, void *state) {
           counter *c = (counter *)state;   // locals that live across an
           EVL_ASYNC_BEGIN(t);              // await belong in the state
           for (c->i = 1; c->i <= 3; c->i++) {
               EVL_AWAIT(t, evl_sleep(evl_task_loop(t), 0.1, NULL));
               printf("tick %d\n", c->i);
           }
           EVL_ASYNC_RETURN(t, NULL);
           EVL_ASYNC_END(t);
       }

       int main(void) {
           counter c = {0};
           return evl_run(count, &c, sizeof c, NULL, NULL) == 0 ? 0 : 1;
       }

   2. CONFIGURATION MACROS (define them before including the header)

     EVLOOP_IMPLEMENTATION   emit the implementation in this file
     EVLOOP_BACKEND_SELECT   build only this backend (plus nothing else)
     EVLOOP_BACKEND_POLL     build only poll
     EVLOOP_BACKEND_EPOLL    build epoll (and poll as its runtime fallback)
     EVLOOP_MALLOC(ctx, n) / EVLOOP_REALLOC(ctx, p, n) / EVLOOP_FREE(ctx, p)
                             compile-time allocator (define all three or none);
                             a loop may also get a run-time allocator through
                             evl_loop_config.alloc
     EVLOOP_ASSERT(x)        internal consistency checks (default: assert)
     EVLOOP_NO_THREADS       no threads: evl_run_in_executor and DNS run the
                             work inline and complete the future at once
     EVLOOP_STATIC           make every public function static
     EVLOOP_NO_CALLSITE      do not wrap evl_call_soon & co. in macros that
                             record the call site for debug mode

   3. BACKENDS
     Without a backend macro every backend the platform has is compiled and
     evl_loop_config.backend picks one at run time; the default is epoll on
     Linux and poll elsewhere on POSIX. If epoll_create1 fails (seccomp,
     sandboxes) the loop falls back to poll and evl_backend_name() says so.
     select refuses fds >= FD_SETSIZE with EVL_ERANGE.
     Cross-thread wake-ups: eventfd on epoll, a self-pipe on select and poll.

   4. ERRORS AND LOGGING
     Functions return 0 (or a value >= 0) on success and a negative EVL_E*
     code on failure; evl_strerror() and evl_err_name() describe a code.
     Functions that return a pointer return NULL on failure. No function
     aborts the process on bad input. The library prints nothing unless
     asked: errors nobody handled go to the loop's exception handler (whose
     default writes one line to stderr), and debug mode (evl_set_debug or
     EVLOOP_DEBUG=1 in the environment) logs slow callbacks through
     evl_loop_config.log (default: stderr).

   5. THREADS
     A loop belongs to the thread that runs it; many loops may run in many
     threads. Only evl_call_soon_threadsafe() may be called on a loop from
     another thread. Executors are thread-safe. The run-time allocator of
     evl_loop_config is only called on the loop's thread.

   6. OWNERSHIP AND LIFETIMES
     - Handles (evl_handle) are generation-checked values: cancelling a
       handle whose callback already ran, or that was already cancelled, is
       a harmless no-op.
     - Futures and tasks are reference counted. A function that returns an
       evl_future * returns a reference the caller owns and gives back with
       evl_future_release(). EVL_AWAIT and evl_wait_for consume the
       reference they are given; evl_gather takes references of its own.
     - A running task keeps itself alive until it finishes; releasing your
       reference to it does not stop it ("fire and forget" is safe).
     - An error stored in a future that nobody retrieved (evl_future_error,
       evl_future_result or an await) is reported to the exception handler
       when the future is freed.
     - evl_loop_close() discards pending callbacks, cancels queued executor
       jobs, waits for running ones, drops every reference the loop holds
       and frees what nobody else holds. evl_loop_free() frees the loop; the
       struct itself lives on until the last future of the loop is released,
       so late calls on such futures get EVL_ECLOSED instead of a crash.

   7. DOES NOT DO (yet): sockets and transports, pipes, signals, subprocesses,
     TLS, kqueue and IOCP backends. They are planned, in that order.

   8. Licence: MIT or public domain (Unlicense), your choice; at the end.
*/

#ifndef EVLOOP_H_INCLUDED
#define EVLOOP_H_INCLUDED

/* The implementation needs POSIX and GNU declarations; they must be asked
   for before the first system header of the translation unit. */
#if defined(EVLOOP_IMPLEMENTATION) && !defined(_WIN32)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#endif

#include <stddef.h>
#include <stdint.h>

#define EVLOOP_VERSION_MAJOR 0
#define EVLOOP_VERSION_MINOR 1
#define EVLOOP_VERSION_PATCH 0

#ifndef EVLOOP_API
#ifdef EVLOOP_STATIC
#define EVLOOP_API static
#else
#define EVLOOP_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== Errors =============================================================
   One table gives the codes, their names and their messages. The numbers of
   the system codes are Linux's errno values, negated, on every platform. */
#define EVL__SYS_ERRORS(X)                                                     \
  X(EPERM, -1, "operation not permitted")                                      \
  X(ENOENT, -2, "no such file or directory")                                   \
  X(ESRCH, -3, "no such process")                                              \
  X(EINTR, -4, "interrupted system call")                                      \
  X(EIO, -5, "input/output error")                                             \
  X(E2BIG, -7, "argument list too long")                                       \
  X(ENOEXEC, -8, "exec format error")                                          \
  X(EBADF, -9, "bad file descriptor")                                          \
  X(ECHILD, -10, "no child processes")                                         \
  X(EAGAIN, -11, "resource temporarily unavailable")                           \
  X(ENOMEM, -12, "not enough memory")                                          \
  X(EACCES, -13, "permission denied")                                          \
  X(EFAULT, -14, "bad address")                                                \
  X(EBUSY, -16, "resource busy")                                               \
  X(EEXIST, -17, "file exists")                                                \
  X(ENOTDIR, -20, "not a directory")                                           \
  X(EISDIR, -21, "is a directory")                                             \
  X(EINVAL, -22, "invalid argument")                                           \
  X(ENFILE, -23, "too many open files in system")                              \
  X(EMFILE, -24, "too many open files")                                        \
  X(ENOTTY, -25, "inappropriate ioctl for device")                             \
  X(EFBIG, -27, "file too large")                                              \
  X(ENOSPC, -28, "no space left on device")                                    \
  X(ESPIPE, -29, "invalid seek")                                               \
  X(EROFS, -30, "read-only file system")                                       \
  X(EPIPE, -32, "broken pipe")                                                 \
  X(ERANGE, -34, "result out of range")                                        \
  X(ENAMETOOLONG, -36, "name too long")                                        \
  X(ENOSYS, -38, "function not implemented")                                   \
  X(ENOTSOCK, -88, "socket operation on non-socket")                           \
  X(EDESTADDRREQ, -89, "destination address required")                         \
  X(EMSGSIZE, -90, "message too long")                                         \
  X(EPROTOTYPE, -91, "protocol wrong type for socket")                         \
  X(ENOPROTOOPT, -92, "protocol not available")                                \
  X(EPROTONOSUPPORT, -93, "protocol not supported")                            \
  X(ENOTSUP, -95, "operation not supported")                                   \
  X(EAFNOSUPPORT, -97, "address family not supported")                         \
  X(EADDRINUSE, -98, "address already in use")                                 \
  X(EADDRNOTAVAIL, -99, "address not available")                               \
  X(ENETDOWN, -100, "network is down")                                         \
  X(ENETUNREACH, -101, "network is unreachable")                               \
  X(ECONNABORTED, -103, "connection aborted")                                  \
  X(ECONNRESET, -104, "connection reset by peer")                              \
  X(ENOBUFS, -105, "no buffer space available")                                \
  X(EISCONN, -106, "socket is already connected")                              \
  X(ENOTCONN, -107, "socket is not connected")                                 \
  X(ETIMEDOUT, -110, "timed out")                                              \
  X(ECONNREFUSED, -111, "connection refused")                                  \
  X(EHOSTUNREACH, -113, "host is unreachable")                                 \
  X(EALREADY, -114, "operation already in progress")                           \
  X(EINPROGRESS, -115, "operation in progress")                                \
  X(ECANCELED, -125, "operation cancelled")

#define EVL__GAI_ERRORS(X)                                                     \
  X(EAI_AGAIN, -3001, "temporary failure in name resolution")                  \
  X(EAI_BADFLAGS, -3002, "bad flags for name resolution")                      \
  X(EAI_FAIL, -3003, "permanent failure in name resolution")                   \
  X(EAI_FAMILY, -3004, "address family not supported by resolver")             \
  X(EAI_MEMORY, -3005, "out of memory in name resolution")                     \
  X(EAI_NONAME, -3006, "unknown host or service name")                         \
  X(EAI_SERVICE, -3007, "service not available for socket type")               \
  X(EAI_SOCKTYPE, -3008, "socket type not supported by resolver")              \
  X(EAI_OVERFLOW, -3009, "name resolution buffer overflow")

#define EVL__LIB_ERRORS(X)                                                     \
  X(ECLOSED, -3100, "event loop is closed")                                    \
  X(ERUNNING, -3101, "event loop is already running")                          \
  X(ESTOPPED, -3102, "event loop stopped before the future completed")         \
  X(EINVALSTATE, -3103, "invalid state for this operation")                    \
  X(EEOF, -3104, "end of file")                                                \
  X(EUNKNOWN, -3199, "unknown error")

#define EVL_ERROR_MAP(X) EVL__SYS_ERRORS(X) EVL__GAI_ERRORS(X) EVL__LIB_ERRORS(X)

enum {
  EVL_OK = 0,
#define EVL__ENUM_ERROR(name, value, msg) EVL_##name = value,
  EVL_ERROR_MAP(EVL__ENUM_ERROR)
#undef EVL__ENUM_ERROR
  EVL__ERROR_END = -9999
};

/* ==== Types ============================================================ */

typedef struct evl_loop evl_loop;
typedef struct evl_future evl_future;
typedef struct evl_future evl_task; /* a task is a future */
typedef struct evl_executor evl_executor;

/* A file descriptor on POSIX, a SOCKET on Windows. */
typedef intptr_t evl_fd;

/* A scheduled callback: > 0 is a handle, < 0 an EVL_E* error code. */
typedef int64_t evl_handle;

typedef void (*evl_callback)(evl_loop *loop, void *arg);
typedef void (*evl_io_callback)(evl_loop *loop, evl_fd fd, void *arg);
typedef void (*evl_future_callback)(evl_future *fut, void *arg);
typedef void (*evl_task_fn)(evl_task *task, void *state);
/* Work for an executor thread: store a result, return 0 or an EVL_E* code. */
typedef int (*evl_work_fn)(void *arg, void **result);
typedef void (*evl_free_fn)(void *ptr);

typedef enum evl_backend {
  EVL_BACKEND_DEFAULT = 0,
  EVL_BACKEND_SELECT,
  EVL_BACKEND_POLL,
  EVL_BACKEND_EPOLL,
  EVL_BACKEND_KQUEUE,
  EVL_BACKEND_IOCP
} evl_backend;

/* What the exception handler receives. Fields that do not apply are 0. */
typedef struct evl_context {
  const char *message;       /* what happened, always set */
  int error;                 /* EVL_E* code, or 0 */
  const char *error_message; /* detail given with the error, or NULL */
  evl_future *future;        /* the future or task involved, or NULL */
  evl_handle handle;         /* the callback involved, or 0 */
  void *object;              /* any other object involved, or NULL */
} evl_context;

typedef void (*evl_exception_handler)(evl_loop *loop, const evl_context *ctx,
                                      void *arg);

/* Zero-initialise, then set what you need; zero means default. */
typedef struct evl_loop_config {
  evl_backend backend;
  /* Run-time allocator, realloc-like: (ctx, NULL, n) allocates, (ctx, p, 0)
     frees. Only called on the loop's thread. */
  void *(*alloc)(void *ctx, void *ptr, size_t size);
  void *alloc_ctx;
  /* Manual clock in nanoseconds (any origin). With it the loop never sleeps
     waiting for a timer: it polls I/O without blocking and reads the clock
     again, so a simulation advances its clock as it likes. */
  int64_t (*clock_ns)(void *ctx);
  void *clock_ctx;
  /* 1: debug on; -1: off; 0: from the EVLOOP_DEBUG environment variable. */
  int debug;
  /* Threads of the default executor, created on first use (default 4). */
  int executor_threads;
  /* Where debug-mode messages go (default: a line on stderr). */
  void (*log)(evl_loop *loop, const char *message, void *ctx);
  void *log_ctx;
} evl_loop_config;

/* ==== Loop ============================================================= */

EVLOOP_API int evl_loop_new(evl_loop **out, const evl_loop_config *cfg);
/* Closes the loop (idempotent); EVL_ERUNNING if it is running. */
EVLOOP_API int evl_loop_close(evl_loop *loop);
/* Closes if needed and frees the loop. */
EVLOOP_API void evl_loop_free(evl_loop *loop);
EVLOOP_API int evl_loop_is_closed(const evl_loop *loop);
EVLOOP_API int evl_loop_is_running(const evl_loop *loop);
EVLOOP_API int evl_run_forever(evl_loop *loop);
/* 0 when fut completed with a result; its error code when it failed or was
   cancelled (EVL_ECANCELED); EVL_ESTOPPED when evl_stop() came first. */
EVLOOP_API int evl_run_until_complete(evl_loop *loop, evl_future *fut);
EVLOOP_API void evl_stop(evl_loop *loop);
/* One iteration that waits at most max_wait seconds (0: do not block;
   negative: as long as needed). Returns the number of callbacks run. */
EVLOOP_API int evl_run_once(evl_loop *loop, double max_wait);
/* asyncio.run(): new loop, run a task to completion, cancel the tasks left,
   shut the default executor down, close. Returns the task's error code;
   *result (if given) receives its result. cfg may be NULL. */
EVLOOP_API int evl_run(evl_task_fn fn, const void *state, size_t state_size,
                       const evl_loop_config *cfg, void **result);

EVLOOP_API double evl_time(evl_loop *loop);     /* monotonic seconds */
EVLOOP_API int64_t evl_time_ns(evl_loop *loop); /* monotonic nanoseconds */
EVLOOP_API const char *evl_backend_name(const evl_loop *loop);

/* Embedding in a host's loop: seconds the host may sleep before calling
   evl_run_once(loop, 0) (0: work is ready; -1: nothing is scheduled), and
   an fd that becomes readable when the loop has I/O to handle (the epoll fd;
   -1 on select and poll, which have no such fd). */
EVLOOP_API double evl_next_timeout(evl_loop *loop);
EVLOOP_API evl_fd evl_backend_fd(const evl_loop *loop);

/* ==== Callbacks and timers ==============================================
   Callbacks run in FIFO order; a callback scheduled while the loop runs
   callbacks runs in the next iteration. Timers never fire early; equal
   deadlines fire in the order they were scheduled. A negative delay counts
   as 0; NaN or an infinite delay or time is EVL_EINVAL. */
EVLOOP_API evl_handle evl_call_soon(evl_loop *loop, evl_callback cb, void *arg);
EVLOOP_API evl_handle evl_call_later(evl_loop *loop, double delay,
                                     evl_callback cb, void *arg);
EVLOOP_API evl_handle evl_call_at(evl_loop *loop, double when, evl_callback cb,
                                  void *arg);
/* The only function that may be called from any thread. Wake-ups are
   coalesced. Returns 0 or an error code (no handle: it cannot be cancelled). */
EVLOOP_API int evl_call_soon_threadsafe(evl_loop *loop, evl_callback cb,
                                        void *arg);
/* 1 if cancelled now, 0 if it had run, was cancelled or is unknown. */
EVLOOP_API int evl_handle_cancel(evl_loop *loop, evl_handle h);
/* 1 from the cancel until the loop discards the callback (its next
   iteration); 0 otherwise. */
EVLOOP_API int evl_handle_cancelled(evl_loop *loop, evl_handle h);
/* A pending timer's deadline in evl_time() seconds; -1.0 for anything else. */
EVLOOP_API double evl_handle_when(evl_loop *loop, evl_handle h);

/* Versions that record where the callback was scheduled, for debug mode.
   The macros below call them; the plain functions exist too (take their
   address, or write (evl_call_soon)(...)). */
EVLOOP_API evl_handle evl_call_soon_at_site(evl_loop *loop, evl_callback cb,
                                            void *arg, const char *name,
                                            const char *file, int line);
EVLOOP_API evl_handle evl_call_later_at_site(evl_loop *loop, double delay,
                                             evl_callback cb, void *arg,
                                             const char *name, const char *file,
                                             int line);
EVLOOP_API evl_handle evl_call_at_at_site(evl_loop *loop, double when,
                                          evl_callback cb, void *arg,
                                          const char *name, const char *file,
                                          int line);

/* ==== Watching file descriptors ==========================================
   One reader and one writer per fd; adding again replaces the callback.
   Level-triggered: the callback runs each iteration while the fd is ready.
   Remove the watchers before closing the fd. Errors: EVL_EBADF for a
   negative or closed fd, EVL_EPERM for a file epoll cannot watch (regular
   files), EVL_ERANGE for fd >= FD_SETSIZE on select, EVL_EINVAL for NULL. */
EVLOOP_API int evl_add_reader(evl_loop *loop, evl_fd fd, evl_io_callback cb,
                              void *arg);
EVLOOP_API int evl_add_writer(evl_loop *loop, evl_fd fd, evl_io_callback cb,
                              void *arg);
/* 1 if a watcher was removed, 0 if there was none. */
EVLOOP_API int evl_remove_reader(evl_loop *loop, evl_fd fd);
EVLOOP_API int evl_remove_writer(evl_loop *loop, evl_fd fd);
EVLOOP_API int evl_add_reader_at_site(evl_loop *loop, evl_fd fd,
                                      evl_io_callback cb, void *arg,
                                      const char *name, const char *file,
                                      int line);
EVLOOP_API int evl_add_writer_at_site(evl_loop *loop, evl_fd fd,
                                      evl_io_callback cb, void *arg,
                                      const char *name, const char *file,
                                      int line);

/* ==== Futures ============================================================
   Done callbacks are scheduled with call_soon when the future completes,
   never run inline. */
EVLOOP_API evl_future *evl_future_new(evl_loop *loop);
EVLOOP_API evl_future *evl_future_ref(evl_future *fut);
EVLOOP_API void evl_future_release(evl_future *fut);
/* EVL_EINVALSTATE if already done. The _free variant makes the future own
   the result: free_fn(result) runs when the future is freed. */
EVLOOP_API int evl_future_set_result(evl_future *fut, void *result);
EVLOOP_API int evl_future_set_result_free(evl_future *fut, void *result,
                                          evl_free_fn free_fn);
/* code < 0; message may be NULL (it is copied). */
EVLOOP_API int evl_future_set_error(evl_future *fut, int code,
                                    const char *message);
/* 1 if cancelled now, 0 if already done (a task: see evl_task_cancel). */
EVLOOP_API int evl_future_cancel(evl_future *fut);
EVLOOP_API int evl_future_done(const evl_future *fut);
EVLOOP_API int evl_future_cancelled(const evl_future *fut);
/* 0 if it has a result, its error code (EVL_ECANCELED when cancelled), or
   EVL_EINVALSTATE while pending. Marks the error retrieved. */
EVLOOP_API int evl_future_error(evl_future *fut);
EVLOOP_API const char *evl_future_error_message(const evl_future *fut);
/* The result, or NULL if pending or failed. Marks any error retrieved. */
EVLOOP_API void *evl_future_result(evl_future *fut);
EVLOOP_API int evl_future_add_done_callback(evl_future *fut,
                                            evl_future_callback cb, void *arg);
/* Returns how many (cb, arg) registrations were removed. */
EVLOOP_API int evl_future_remove_done_callback(evl_future *fut,
                                               evl_future_callback cb,
                                               void *arg);
EVLOOP_API evl_loop *evl_future_loop(const evl_future *fut);

/* ==== Tasks: stackless coroutines ========================================
   A task function is re-entered at its last await, so its C locals do not
   survive an await: keep such variables in the state struct. At most one
   EVL_AWAIT per source line.

     EVL_AWAIT(t, fut)      wait for fut (consumes the reference). If fut
                            fails or is cancelled, the task ends with the
                            same error, as an uncaught exception would.
     EVL_AWAIT_TRY(t, fut)  wait for fut and go on whatever happened; then
                            evl_await_error(t) / evl_await_result(t) say how
                            it ended (EVL_ECANCELED if the task itself was
                            cancelled meanwhile).
     EVL_ASYNC_RETURN(t, v) finish with result v.
     EVL_ASYNC_FAIL(t, code, msg) finish with an error.
   Falling off EVL_ASYNC_END finishes with a NULL result. */
#define EVL_ASYNC_BEGIN(t)                                                     \
  switch (evl_task_resume_point(t)) {                                          \
  case 0:
#define EVL_AWAIT_MODE_(t, fut, propagate)                                     \
  do {                                                                         \
    if (evl_task_await((t), (fut), __LINE__, (propagate)))                     \
      return;                                                                  \
  case __LINE__:;                                                              \
  } while (0)
#define EVL_AWAIT(t, fut) EVL_AWAIT_MODE_(t, fut, 1)
#define EVL_AWAIT_TRY(t, fut) EVL_AWAIT_MODE_(t, fut, 0)
#define EVL_ASYNC_RETURN(t, value)                                             \
  do {                                                                         \
    evl_task_return((t), (void *)(value));                                     \
    return;                                                                    \
  } while (0)
#define EVL_ASYNC_FAIL(t, code, msg)                                           \
  do {                                                                         \
    evl_task_fail((t), (code), (msg));                                         \
    return;                                                                    \
  } while (0)
#define EVL_ASYNC_END(t) }

/* A new task (a future) that starts at the next iteration. state_size > 0:
   the task keeps its own zero-padded copy of state[0..state_size) and frees
   it; state_size == 0: state is passed through as is. evl_task_create goes
   through the loop's task factory, evl_task_new never does. */
EVLOOP_API evl_task *evl_task_new(evl_loop *loop, evl_task_fn fn,
                                  const void *state, size_t state_size);
EVLOOP_API evl_task *evl_task_create(evl_loop *loop, evl_task_fn fn,
                                     const void *state, size_t state_size);
EVLOOP_API evl_task *evl_task_create_at_site(evl_loop *loop, evl_task_fn fn,
                                             const void *state,
                                             size_t state_size,
                                             const char *name,
                                             const char *file, int line);
typedef evl_task *(*evl_task_factory)(evl_loop *loop, evl_task_fn fn,
                                      const void *state, size_t state_size,
                                      void *ctx);
EVLOOP_API void evl_set_task_factory(evl_loop *loop, evl_task_factory factory,
                                     void *ctx);
EVLOOP_API evl_task_factory evl_get_task_factory(evl_loop *loop, void **ctx);
/* Asks the task to stop: the future it awaits is cancelled and the task
   resumes with EVL_ECANCELED. 1 if requested, 0 if the task is done. */
EVLOOP_API int evl_task_cancel(evl_task *task);
EVLOOP_API void *evl_task_state(evl_task *task);
EVLOOP_API evl_loop *evl_task_loop(evl_task *task);
EVLOOP_API const char *evl_task_name(evl_task *task);
EVLOOP_API int evl_is_task(const evl_future *fut);
/* How the last await ended, and the future awaited (borrowed, valid until
   the next await or the end of the task). */
EVLOOP_API int evl_await_error(evl_task *task);
EVLOOP_API void *evl_await_result(evl_task *task);
EVLOOP_API evl_future *evl_await_future(evl_task *task);
/* Used by the macros above. */
EVLOOP_API int evl_task_resume_point(evl_task *task);
EVLOOP_API int evl_task_await(evl_task *task, evl_future *fut, int point,
                              int propagate);
EVLOOP_API void evl_task_return(evl_task *task, void *result);
EVLOOP_API void evl_task_fail(evl_task *task, int code, const char *message);

/* ==== High-level helpers ================================================= */

/* Completes with `result` after `delay` seconds (same rules as call_later). */
EVLOOP_API evl_future *evl_sleep(evl_loop *loop, double delay, void *result);
/* Completes as fut does, or with EVL_ETIMEDOUT after `timeout` seconds, once
   fut has been cancelled. Consumes the reference to fut. A negative timeout
   times out at once; NaN is EVL_EINVAL (the returned future fails). */
EVLOOP_API evl_future *evl_wait_for(evl_future *fut, double timeout);
/* Completes when all of futs[0..n) are done, with a NULL result, or with the
   first error (the others go on), unless flags has
   EVL_GATHER_RETURN_ERRORS: then it always waits for all and never fails.
   Cancelling it cancels every child. It takes its own references; inspect
   the children for their results. */
#define EVL_GATHER_RETURN_ERRORS 1
EVLOOP_API evl_future *evl_gather(evl_loop *loop, evl_future *const *futs,
                                  size_t n, int flags);

/* ==== Executor ==========================================================
   evl_run_in_executor runs fn(arg, &result) on a pool thread (exec NULL: the
   loop's default executor, created on first use) and completes the future
   on the loop thread. Cancelling the future removes a job not yet started;
   a result that cannot be delivered is given to result_free (may be NULL). */
EVLOOP_API evl_executor *evl_executor_new(int nthreads);
/* Runs the queued jobs, joins the threads, frees. Close the loops using it
   first (closing a loop cancels its queued jobs). */
EVLOOP_API void evl_executor_free(evl_executor *exec);
EVLOOP_API evl_future *evl_run_in_executor(evl_loop *loop, evl_executor *exec,
                                           evl_work_fn fn, void *arg,
                                           evl_free_fn result_free);
/* The loop uses exec as its default executor but does not own it. */
EVLOOP_API int evl_set_default_executor(evl_loop *loop, evl_executor *exec);
/* Completes when the default executor has finished its jobs and joined its
   threads; later evl_run_in_executor(loop, NULL, ...) fails with
   EVL_ECLOSED. */
EVLOOP_API evl_future *evl_shutdown_default_executor(evl_loop *loop);

/* ==== DNS (on the executor) =============================================
   evl_getaddrinfo: the result is a `struct addrinfo *` the future owns.
   evl_getnameinfo: the result is an `evl_nameinfo *` the future owns.
   Errors are EVL_EAI_* codes (or EVL_E* for system errors). */
typedef struct evl_nameinfo {
  char host[1025];
  char service[32];
} evl_nameinfo;
EVLOOP_API evl_future *evl_getaddrinfo(evl_loop *loop, const char *host,
                                       const char *service, int family,
                                       int socktype, int protocol, int flags);
EVLOOP_API evl_future *evl_getnameinfo(evl_loop *loop, const void *sockaddr,
                                       size_t socklen, int flags);

/* ==== Errors, exception handler, debug ================================== */

EVLOOP_API const char *evl_strerror(int err);
EVLOOP_API const char *evl_err_name(int err);
/* errno value -> EVL_E* code (EVL_EUNKNOWN for codes it does not know). */
EVLOOP_API int evl_translate_sys_error(int sys_errno);

EVLOOP_API void evl_set_exception_handler(evl_loop *loop,
                                          evl_exception_handler handler,
                                          void *arg);
EVLOOP_API evl_exception_handler evl_get_exception_handler(evl_loop *loop,
                                                           void **arg);
EVLOOP_API void evl_default_exception_handler(evl_loop *loop,
                                              const evl_context *ctx);
EVLOOP_API void evl_call_exception_handler(evl_loop *loop,
                                           const evl_context *ctx);
EVLOOP_API int evl_get_debug(const evl_loop *loop);
EVLOOP_API void evl_set_debug(evl_loop *loop, int enabled);
EVLOOP_API double evl_get_slow_callback_duration(const evl_loop *loop);
EVLOOP_API void evl_set_slow_callback_duration(evl_loop *loop, double seconds);

#ifdef __cplusplus
}
#endif

#ifndef EVLOOP_NO_CALLSITE
#define evl_call_soon(loop, cb, arg)                                           \
  evl_call_soon_at_site((loop), (cb), (arg), #cb, __FILE__, __LINE__)
#define evl_call_later(loop, delay, cb, arg)                                   \
  evl_call_later_at_site((loop), (delay), (cb), (arg), #cb, __FILE__, __LINE__)
#define evl_call_at(loop, when, cb, arg)                                       \
  evl_call_at_at_site((loop), (when), (cb), (arg), #cb, __FILE__, __LINE__)
#define evl_add_reader(loop, fd, cb, arg)                                      \
  evl_add_reader_at_site((loop), (fd), (cb), (arg), #cb, __FILE__, __LINE__)
#define evl_add_writer(loop, fd, cb, arg)                                      \
  evl_add_writer_at_site((loop), (fd), (cb), (arg), #cb, __FILE__, __LINE__)
#define evl_task_create(loop, fn, state, size)                                 \
  evl_task_create_at_site((loop), (fn), (state), (size), #fn, __FILE__, __LINE__)
#endif

#endif /* EVLOOP_H_INCLUDED */
