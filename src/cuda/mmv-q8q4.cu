/* mmv-q8q4.cu: the dense decode kernels of Q8_0 and Q4_0 weights (mmv.h). */
#include "cuda/mmv.h"

mmv_kernel mmv_pick_q8q4(int gt, int nt, bool glu, bool lng)
{
    switch (gt) {
    case GT_Q8_0: return pick_long<GT_Q8_0>(nt, glu, lng);
    default: return pick_long<GT_Q4_0>(nt, glu, lng);
    }
}
