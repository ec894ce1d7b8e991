// The header must compile as C++, implementation included.
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"

int evl_cpp_check(void);
int evl_cpp_check(void) {
  evl_loop *loop = 0;
  if (evl_loop_new(&loop, 0) != 0)
    return 1;
  evl_loop_free(loop);
  return 0;
}
