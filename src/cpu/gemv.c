/* gemv.c: the decode matmul path (fastmm.h). Not specialised yet: handles nothing. */
#include "cpu/fastmm.h"

bool gemv_run(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
              float *y, int n_tok)
{
    return false;
}
