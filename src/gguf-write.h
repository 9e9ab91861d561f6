/*
 * gguf-write.h: additions to the GGUF writer declared in gguf.h (src/gguf-write.c implements
 * both). gguf.h's writer has setters for UINT32, INT32, FLOAT32, BOOL and STRING scalars only;
 * gguf_w_val writes a scalar of any other type, so tools and tests can produce every value type
 * the format has. Candidate to fold into gguf.h.
 */
#ifndef EXSA_GGUF_WRITE_H
#define EXSA_GGUF_WRITE_H

#include "gguf.h"

/* A scalar KV of type t (any type but STRING and ARRAY); v points to a value of t's C type
 * (uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, uint64_t, int64_t,
 * double). */
void gguf_w_val(struct gguf_writer *w, const char *key, enum gguf_type t, const void *v);

#endif
