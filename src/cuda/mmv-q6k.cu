/* mmv-q6k.cu: the dense decode kernels of Q6_K weights (mmv.h). */
#include "cuda/mmv.h"

mmv_kernel mmv_pick_q6k(int gt, int nt, bool glu, bool lng)
{
    (void)gt;
    return pick_long<GT_Q6_K>(nt, glu, lng);
}
