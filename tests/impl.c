/* The implementation, compiled once per backend and build variant. */
#define EVLOOP_IMPLEMENTATION
#include "../evloop.h"
