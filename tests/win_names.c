/* Windows: the implementation defines no system names in the translation
   unit that includes it (compiled by make compile-checks with mingw-w64):
   afunix.h's sockaddr_un and the user's own SIGKILL, SHUT_WR, ssize_t and
   sa_family_t still work after it. */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"
#include <afunix.h> /* its struct sockaddr_un must not be renamed */

#ifdef sockaddr_un
#error "evloop.h defined sockaddr_un"
#endif
#ifdef SIGKILL
#error "evloop.h defined SIGKILL"
#endif
#ifdef SHUT_WR
#error "evloop.h defined SHUT_WR"
#endif
#ifdef EAI_OVERFLOW
#error "evloop.h defined EAI_OVERFLOW"
#endif
#define SIGKILL 9
#define SHUT_WR SD_SEND
typedef int sa_family_t; /* a user's own name: no clash */

int main(void) {
  struct sockaddr_un su;
  su.sun_family = AF_UNIX;
  (void)su;
  return SIGKILL - 9 + SHUT_WR - SD_SEND;
}
