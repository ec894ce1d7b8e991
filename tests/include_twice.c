/* Compile check (make compile-checks, not a test binary): the declarations
   first, then the implementation later in the same file, as a file does
   that includes its own headers (which include evloop.h) before defining
   EVLOOP_IMPLEMENTATION. The first inclusion settles the C library's
   feature set, so it must already ask for what the implementation needs
   (clang reported `environ` undeclared, gcc sigfillset, when only the
   implementation asked). */
#include "../evloop.h"

#include <stdio.h>

#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

int main(void) {
  evl_loop *loop = NULL;
  int rc = evl_loop_new(&loop, NULL);
  if (rc < 0) {
    printf("evl_loop_new: %s\n", evl_strerror(rc));
    return 1;
  }
  printf("evloop.h %s on %s\n", EVLOOP_VERSION_STRING, evl_backend_name(loop));
  evl_loop_free(loop);
  return 0;
}
