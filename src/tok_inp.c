/*
 * tok_inp.c: llama.cpp's tokenizer-test layout (.inp strings in, .out id lines out); see
 * tok_inp.h. Called by tools/exsa/cmd_tokenize.c and tests/test_tokenizer.c.
 */
#include "tok_inp.h"

#include <stdlib.h>
#include <string.h>

#include "exsa.h"

bool tok_inp_next(const char *data, size_t len, size_t *pos, const char **s, size_t *n)
{
    static const size_t mlen = sizeof(TOK_INP_MARKER) - 1;
    if (*pos >= len)
        return false;
    const char *start = data + *pos;
    const char *hit = memmem(start, len - *pos, TOK_INP_MARKER, mlen);
    *s = start;
    *n = hit ? (size_t)(hit - start) : len - *pos;
    *pos += *n + (hit ? mlen : 0);
    return true;
}

/* Writes ids[0..n) space-separated and a newline; EXSA_EIO on a write error. */
static int write_ids(FILE *out, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (fprintf(out, i ? " %d" : "%d", (int)ids[i]) < 0)
            return EXSA_EIO;
    return fputc('\n', out) == EOF ? EXSA_EIO : 0;
}

int tok_inp_run(const struct tokenizer *t, const char *data, size_t len, FILE *out)
{
    size_t pos = 0, n;
    const char *s;
    int32_t *ids = NULL;
    int cap = 0, count = 0, rc = 0;
    while (rc == 0 && tok_inp_next(data, len, &pos, &s, &n)) {
        rc = tok_encode(t, s, n, false, false, ids, cap);
        if (rc > cap) { /* too small: grow to the count it reported and encode again */
            int32_t *bigger = realloc(ids, (size_t)rc * sizeof(*ids));
            if (!bigger) {
                rc = EXSA_ENOMEM;
                break;
            }
            ids = bigger;
            cap = rc;
            rc = tok_encode(t, s, n, false, false, ids, cap);
        }
        if (rc >= 0)
            rc = write_ids(out, ids, rc);
        count++;
    }
    free(ids);
    return rc < 0 ? rc : count;
}
