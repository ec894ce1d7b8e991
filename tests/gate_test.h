/* A gate for executor jobs (include after test.h; pthreads): jobs that
   block until the test releases them, and counters of what the jobs and
   free functions did, all under one mutex so that the test thread reads
   them race-free (ThreadSanitizer runs these tests). Shared by t_executor
   and t_close. */
#ifndef EVL_GATE_TEST_H
#define EVL_GATE_TEST_H

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started;  /* blocking jobs that started */
  int released; /* set by gate_release */
  int finished; /* blocking jobs that returned */
  int markers;  /* marker jobs that ran */
  int freed;    /* results given to gate_free */
  int arrived;  /* rendezvous jobs that arrived (t_executor) */
} gate;

static gate g_gate = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};

static inline void gate_reset(void) {
  pthread_mutex_lock(&g_gate.mu);
  g_gate.started = g_gate.released = g_gate.finished = 0;
  g_gate.markers = g_gate.freed = g_gate.arrived = 0;
  pthread_mutex_unlock(&g_gate.mu);
}

/* Waits (at most ~10 s) while *field < n; returns *field. */
static inline int gate_wait(const int *field, int n) {
  struct timespec ts;
  int v;
  ts.tv_sec = time(NULL) + 10;
  ts.tv_nsec = 0;
  pthread_mutex_lock(&g_gate.mu);
  while (*field < n && time(NULL) < ts.tv_sec)
    pthread_cond_timedwait(&g_gate.cv, &g_gate.mu, &ts);
  v = *field;
  pthread_mutex_unlock(&g_gate.mu);
  return v;
}

static inline int gate_get(const int *field) {
  int v;
  pthread_mutex_lock(&g_gate.mu);
  v = *field;
  pthread_mutex_unlock(&g_gate.mu);
  return v;
}

static inline void gate_release(void) {
  pthread_mutex_lock(&g_gate.mu);
  g_gate.released = 1;
  pthread_cond_broadcast(&g_gate.cv);
  pthread_mutex_unlock(&g_gate.mu);
}

/* Blocks until released (at most ~20 s), then stores `arg` as its result. */
static inline int blocker_job(void *arg, void **result) {
  gate *g = &g_gate;
  struct timespec ts;
  ts.tv_sec = time(NULL) + 20;
  ts.tv_nsec = 0;
  pthread_mutex_lock(&g->mu);
  g->started++;
  pthread_cond_broadcast(&g->cv);
  while (!g->released && time(NULL) < ts.tv_sec)
    pthread_cond_timedwait(&g->cv, &g->mu, &ts);
  g->finished++;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  *result = arg;
  return 0;
}

/* As blocker_job, but the result is a fresh allocation. */
static inline int blocker_alloc_job(void *arg, void **result) {
  void *ignored = NULL;
  blocker_job(arg, &ignored);
  *result = malloc(64);
  return *result ? 0 : EVL_ENOMEM;
}

/* A free function that counts its calls in g_gate.freed. */
static inline void gate_free(void *p) {
  pthread_mutex_lock(&g_gate.mu);
  g_gate.freed++;
  pthread_mutex_unlock(&g_gate.mu);
  free(p);
}

/* Counts its run in g_gate.markers; the result is `arg`. */
static inline int marker_job(void *arg, void **result) {
  pthread_mutex_lock(&g_gate.mu);
  g_gate.markers++;
  pthread_mutex_unlock(&g_gate.mu);
  *result = arg;
  return 0;
}

/* Releases the gate after ~50 ms, from its own thread. */
static inline void *releaser_thread(void *arg) {
  struct timespec ts;
  (void)arg;
  ts.tv_sec = 0;
  ts.tv_nsec = 50 * 1000 * 1000;
  nanosleep(&ts, NULL);
  gate_release();
  return NULL;
}

/* One blocking job (result: 64 bytes for gate_free) running on ex (NULL:
   the loop's default executor, which must have one thread), and n marker
   jobs (arg, marker_free) queued behind it in queued[]. Returns the
   running job's future. Resets the gate first. */
static inline evl_future *gate_run_and_queue(evl_loop *loop, evl_executor *ex,
                                             evl_future **queued, int n,
                                             void *arg,
                                             evl_free_fn marker_free) {
  evl_future *running;
  int i;
  gate_reset();
  running = evl_run_in_executor(loop, ex, blocker_alloc_job, NULL, gate_free);
  CHECK(running != NULL);
  CHECK_EQ(gate_wait(&g_gate.started, 1), 1);
  for (i = 0; i < n; i++) {
    queued[i] = evl_run_in_executor(loop, ex, marker_job, arg, marker_free);
    CHECK(queued[i] != NULL);
  }
  return running;
}

/* evl_loop_close while another thread releases the gate ~50 ms later:
   close returns once the running job has finished, and no marker ran. */
static inline void gate_close_while_released(evl_loop *loop) {
  pthread_t rel;
  CHECK_EQ(pthread_create(&rel, NULL, releaser_thread, NULL), 0);
  CHECK_EQ(evl_loop_close(loop), 0);
  CHECK_EQ(gate_get(&g_gate.finished), 1);
  CHECK_EQ(gate_get(&g_gate.markers), 0);
  pthread_join(rel, NULL);
}

#endif
