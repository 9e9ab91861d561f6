/*
 * backend.c: what the seam needs beyond one backend: moving bytes between two backends' memory,
 * and, in a build without CUDA (make without CUDA=1, or no nvcc), the CUDA entry points that
 * say so instead of offloading.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int backend_transfer(struct backend *to, void *dst, struct backend *from, const void *src,
                     size_t bytes)
{
    if (to->host_memory && from->host_memory) {
        memmove(dst, src, bytes);
        return 0;
    }
    if (from->host_memory)
        return to->ops->upload(to, dst, src, bytes);
    if (to->host_memory)
        return from->ops->download(from, dst, src, bytes);
    void *bounce = malloc(bytes);
    if (!bounce)
        return EXSA_ENOMEM;
    /* the stage that wrote src has ended its step, so this download is complete on return */
    int rc = from->ops->download(from, bounce, src, bytes);
    if (rc == 0)
        rc = to->ops->upload(to, dst, bounce, bytes);
    free(bounce);
    return rc;
}

#ifndef EXSA_CUDA
struct backend *backend_cuda_create(const struct backend_config *c, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "GPU offload asked for (GPU_LAYERS > 0 or --backend cuda), but this "
             "build has no CUDA backend: rebuild with make CUDA=1 on a machine with the CUDA "
             "toolkit, or set GPU_LAYERS=0 (-ngl 0) to run on the CPU");
    return NULL;
}

int backend_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    return EXSA_EUNSUPPORTED;
}

double backend_cuda_read_bandwidth(size_t bytes)
{
    return -1;
}

long backend_cuda_graph_replays(const struct backend *be)
{
    return -1;
}
#endif
