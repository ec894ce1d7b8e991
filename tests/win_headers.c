/* Windows compile check: the declarations part of evloop.h does not pull in
   <windows.h>, and the header works included before and after it.
   Built with -DWIN_HEADERS_IMPL for the implementation half (which needs
   winsock2.h before windows.h, so WIN32_LEAN_AND_MEAN there). */
#ifdef WIN_HEADERS_IMPL
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"
#else
#include "../evloop.h"
#ifdef _WINDOWS_
#error "the declarations of evloop.h included <windows.h>"
#endif
#include <windows.h>
#include "../evloop.h"
#include <string.h>

int main(void) {
  evl_loop *loop = NULL;
  HANDLE port;
  if (evl_loop_new(&loop, NULL) != 0)
    return 1;
  /* The IOCP backend's fd is the completion port: a real handle. */
  port = (HANDLE)evl_backend_fd(loop);
  if (strcmp(evl_backend_name(loop), "iocp") != 0 || port == NULL ||
      port == INVALID_HANDLE_VALUE)
    return 2;
  evl_loop_free(loop);
  return 0;
}
#endif
