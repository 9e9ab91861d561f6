/*
 * chain.cu: what a kernel boundary costs on this GPU, against a grid barrier inside one
 * persistent kernel. A decode step of the 1.2B model is ~96 dependent kernels; this measures the
 * floor of one dependent step each way, to decide between graphs of kernels and a persistent
 * kernel (issue 8). Build: nvcc -O3 -arch=sm_90 -o /tmp/chain tools/cuda-micro/chain.cu
 *
 *   chain   STEPS dependent launches of a small kernel (every block reads the previous step's
 *           2048 floats, block 0 writes 2048 new ones), captured in a graph, with and without PDL
 *   barrier one kernel, every block resident, STEPS phases of the same work separated by a grid
 *           barrier (one counter, release/acquire)
 *   stream  the same chain where each step also streams BYTES of its own weights (decode-like),
 *           kernels vs persistent, loading the next phase's first chunk before the barrier
 */
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define DIM 2048
#define THREADS 128

__device__ __forceinline__ void pdl_wait()
{
    asm volatile("griddepcontrol.wait;" ::: "memory");
}
__device__ __forceinline__ void pdl_trigger()
{
    asm volatile("griddepcontrol.launch_dependents;");
}

/* One step's work for virtual block b of nb: read x (the previous step's), stream this block's
 * share of w (uint4s), write y's share. Returns nothing; y gets sum(x) + partial of w. */
__device__ __forceinline__ float stream_share(const uint4 *w, long n16, int b, int nb, uint4 *pre,
                                              int npre)
{
    float s = 0;
    long per = (n16 + nb - 1) / nb, lo = (long)b * per, hi = lo + per < n16 ? lo + per : n16;
    long i = lo + threadIdx.x;
    for (int j = 0; j < npre; j++, i += THREADS)
        if (i < hi)
            s += __int_as_float(pre[j].x ^ pre[j].y) * 1e-30f;
    for (; i < hi; i += THREADS) {
        uint4 v = __ldg(w + i);
        s += __int_as_float(v.x ^ v.y ^ v.z ^ v.w) * 1e-30f;
    }
    return s;
}

__device__ __forceinline__ void step_body(const float *x, float *y, const uint4 *w, long n16, int b,
                                          int nb, uint4 *pre, int npre)
{
    __shared__ float red[THREADS / 32];
    float s = 0;
    for (int i = threadIdx.x; i < DIM; i += THREADS)
        s += x[i];
    s += stream_share(w, n16, b, nb, pre, npre);
    for (int o = 16; o; o >>= 1)
        s += __shfl_xor_sync(~0u, s, o);
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = s;
    __syncthreads();
    s = 0;
    for (int i = 0; i < THREADS / 32; i++)
        s += red[i];
    const int per = DIM / nb > 0 ? (DIM + nb - 1) / nb : 1;
    for (int i = b * per + threadIdx.x; i < (b + 1) * per && i < DIM; i += THREADS)
        y[i] = s * 1e-6f + 1.0f;
    __syncthreads();
}

__global__ void k_step(const float *x, float *y, const uint4 *w, long n16)
{
    pdl_trigger();
    uint4 pre[4];
    long per = (n16 + gridDim.x - 1) / gridDim.x, lo = (long)blockIdx.x * per;
    for (int j = 0; j < 4; j++) {
        long i = lo + threadIdx.x + (long)j * THREADS;
        pre[j] = i < lo + per && i < n16 ? __ldg(w + i) : make_uint4(0, 0, 0, 0);
    }
    pdl_wait();
    step_body(x, y, w, n16, blockIdx.x, gridDim.x, pre, n16 ? 4 : 0);
}

__device__ unsigned int g_bar;

__device__ __forceinline__ void grid_wait(unsigned int target)
{
    if (threadIdx.x == 0) {
        unsigned int v;
        do {
            asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(&g_bar));
        } while (v < target);
    }
    __syncthreads();
}

__device__ __forceinline__ void grid_arrive()
{
    __syncthreads();
    if (threadIdx.x == 0)
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(&g_bar));
}

__global__ void k_persist(float *buf, const uint4 *w, long n16, int steps)
{
    for (int s = 0; s < steps; s++) {
        const uint4 *ws = w ? w + (long)s * n16 : w;
        uint4 pre[4];
        long per = (n16 + gridDim.x - 1) / gridDim.x, lo = (long)blockIdx.x * per;
        for (int j = 0; j < 4; j++) {
            long i = lo + threadIdx.x + (long)j * THREADS;
            pre[j] = i < lo + per && i < n16 ? __ldg(ws + i) : make_uint4(0, 0, 0, 0);
        }
        if (s)
            grid_wait((unsigned)s * gridDim.x);
        step_body(buf + (long)(s % 2) * DIM, buf + (long)((s + 1) % 2) * DIM, ws, n16, blockIdx.x,
                  gridDim.x, pre, n16 ? 4 : 0);
        grid_arrive();
    }
}

static float time_graph(cudaGraphExec_t g, cudaStream_t st, int reps)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(g, st));
    CK(cudaStreamSynchronize(st));
    CK(cudaEventRecord(a, st));
    for (int i = 0; i < reps; i++)
        CK(cudaGraphLaunch(g, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms / reps;
}

/* Ends the capture on st, replays its graph and returns the microseconds a step. */
static float ended_capture_us(cudaStream_t st, int steps)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    float ms = time_graph(ge, st, 20);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return ms * 1000 / steps;
}

static float chain(cudaStream_t st, float *buf, const uint4 *w, long n16, int steps, int grid,
                   bool pdl)
{
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int s = 0; s < steps; s++) {
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute at[1];
        cfg.gridDim = dim3(grid);
        cfg.blockDim = dim3(THREADS);
        cfg.stream = st;
        if (pdl) {
            at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            at[0].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at;
            cfg.numAttrs = 1;
        }
        CK(cudaLaunchKernelEx(&cfg, k_step, (const float *)(buf + (s % 2) * DIM),
                              buf + ((s + 1) % 2) * DIM, w ? w + (long)s * n16 : w, n16));
    }
    return ended_capture_us(st, steps);
}

static float persist(cudaStream_t st, float *buf, const uint4 *w, long n16, int steps, int grid)
{
    unsigned int *bar;
    CK(cudaGetSymbolAddress((void **)&bar, g_bar));
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    CK(cudaMemsetAsync(bar, 0, 4, st));
    k_persist<<<grid, THREADS, 0, st>>>(buf, w, n16, steps);
    return ended_capture_us(st, steps);
}

int main(int argc, char **argv)
{
    const int steps = 96;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_persist, THREADS, 0));
    printf("%s, %d SMs, persistent kernel: %d blocks an SM resident\n", prop.name,
           prop.multiProcessorCount, per_sm);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    float *buf;
    CK(cudaMalloc(&buf, 2 * DIM * sizeof(float)));
    CK(cudaMemset(buf, 0, 2 * DIM * sizeof(float)));
    const long mb[] = {0, 2, 8, 16};
    uint4 *w;
    const size_t wbytes = (size_t)steps * 16 << 20;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMemset(w, 1, wbytes));
    const int sms = prop.multiProcessorCount;
    for (int m = 0; m < 4; m++) {
        long n16 = mb[m] * (1 << 20) / 16;
        const uint4 *ww = n16 ? w : NULL;
        printf("-- %ld MB a step (%d steps): us per step\n", mb[m], steps);
        for (int mult = 1; mult <= 4; mult *= 2) {
            int grid = sms * mult;
            float a = chain(st, buf, ww, n16, steps, grid, false);
            float b = chain(st, buf, ww, n16, steps, grid, true);
            float c = mult <= per_sm ? persist(st, buf, ww, n16, steps, grid) : -1;
            printf("grid %4d: kernels %.2f, kernels+PDL %.2f, persistent %.2f", grid, a, b, c);
            if (n16)
                printf("  (GB/s: %.0f %.0f %.0f)", mb[m] * 1.048576e3 / a, mb[m] * 1.048576e3 / b,
                       c > 0 ? mb[m] * 1.048576e3 / c : 0.0);
            printf("\n");
        }
    }
    CK(cudaDeviceSynchronize());
    return 0;
}
