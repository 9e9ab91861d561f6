/* mmv-float.cu: the dense decode kernels of F32, F16 and BF16 weights (mmv.h). */
#include "cuda/mmv.h"

mmv_kernel mmv_pick_float(int gt, int nt, bool glu, bool lng)
{
    switch (gt) {
    case GT_F32: return pick_long<GT_F32>(nt, glu, lng);
    case GT_F16: return pick_long<GT_F16>(nt, glu, lng);
    default: return pick_long<GT_BF16>(nt, glu, lng);
    }
}
