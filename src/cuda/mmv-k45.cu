/* mmv-k45.cu: the dense decode kernels of Q4_K and Q5_K weights (mmv.h). */
#include "cuda/mmv.h"

mmv_kernel mmv_pick_k45(int gt, int nt, bool glu, bool lng)
{
    switch (gt) {
    case GT_Q4_K: return pick_long<GT_Q4_K>(nt, glu, lng);
    default: return pick_long<GT_Q5_K>(nt, glu, lng);
    }
}
