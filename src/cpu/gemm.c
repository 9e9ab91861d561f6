/* gemm.c: the prefill matmul path (fastmm.h). Not specialised yet: handles nothing. */
#include "cpu/fastmm.h"

bool gemm_run(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
              float *y, int n_tok)
{
    return false;
}

int gemm_prepare(struct tensor *w)
{
    return 0;
}

void gemm_release(struct tensor *w)
{
}
