/* What the fuzz targets share: a check that aborts (libFuzzer saves the
   input that made it fail). */
#ifndef EVL_FUZZ_H
#define EVL_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(c)                                                          \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#endif
