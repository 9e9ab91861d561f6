/*
 * tok_pre.c: the pre-tokenizers of byte-level BPE vocabularies (LFM2-SPEC.md section 6.4 B) on
 * PCRE2, and the lenient UTF-8 reading that llama.cpp applies before splitting.
 *
 * struct tok_pre holds one compiled regex (PCRE2_UTF | PCRE2_UCP, JIT when available); it is
 * read-only after tok_pre_new(), and tok_pre_split() keeps its match state on the caller's side,
 * so threads may share it. `\s` is spelt out as llama.cpp's 25 White_Space code points, because
 * PCRE2's own \s (before 10.43) leaves out U+0085; the contractions are written case-expanded as
 * llama.cpp stores them, because PCRE2's caseless `s` would also match U+017F. Every position of
 * any text is matched by some alternative of both regexes; a gap is still emitted as a piece so
 * that the pieces always concatenate to the input. Called by tokenizer.c only.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tok_pre.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"

/* llama.cpp's White_Space set, as the body of a character class. */
#define WS                                                                                         \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* llama.cpp's LLAMA3 split (the `lfm2` pre-tokenizer). */
static const char RE_LLAMA3[] = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
                                "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                                "|\\p{N}{1,3}"
                                "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
                                "|[" WS "]*[\\r\\n]+"
                                "|[" WS "]+(?![^" WS "])"
                                "|[" WS "]+";

/* The GPT-2 split. */
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d"
                              "| ?\\p{L}+"
                              "| ?\\p{N}+"
                              "| ?[^" WS "\\p{L}\\p{N}]+"
                              "|[" WS "]+(?![^" WS "])"
                              "|[" WS "]+";

struct pre_kind {
    const char *name;
    const char *regex;
    bool ignore_merges, add_bos;
};

/* The names llama.cpp maps to these two regexes with no other per-name behaviour. */
static const struct pre_kind KINDS[] = {
    {"lfm2", RE_LLAMA3, true, true},     {"llama3", RE_LLAMA3, true, true},
    {"llama-v3", RE_LLAMA3, true, true}, {"llama-bpe", RE_LLAMA3, true, true},
    {"falcon3", RE_LLAMA3, true, true},  {"falcon-h1", RE_LLAMA3, true, true},
    {"pixtral", RE_LLAMA3, true, true},  {"midm-2.0", RE_LLAMA3, true, true},
    {"gpt-2", RE_GPT2, false, false},    {"phi-2", RE_GPT2, false, false},
    {"gigachat", RE_GPT2, false, false}, {"a.x-4.0", RE_GPT2, false, false},
    {"mellum", RE_GPT2, false, false},
};

struct tok_pre {
    pcre2_code *re;
};

int tok_pre_new(const char *name, size_t n, struct tok_pre **out, bool *ignore_merges,
                bool *add_bos, char *err, size_t errlen)
{
    const struct pre_kind *k = NULL;
    for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++)
        if (strlen(KINDS[i].name) == n && memcmp(KINDS[i].name, name, n) == 0)
            k = &KINDS[i];
    *out = NULL;
    if (!k) {
        snprintf(err, errlen,
                 "tokenizer: pre-tokenizer '%.*s' is not supported (known: lfm2, "
                 "gpt-2)",
                 (int)(n > 64 ? 64 : n), name);
        return EXSA_EUNSUPPORTED;
    }
    struct tok_pre *p = calloc(1, sizeof(*p));
    int code = 0;
    PCRE2_SIZE off = 0;
    if (p)
        p->re = pcre2_compile((PCRE2_SPTR)k->regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                              &code, &off, NULL);
    if (!p || !p->re) {
        /* The patterns are constants, so only a failed allocation lands here. */
        snprintf(err, errlen, "tokenizer: cannot compile the '%s' split regex (PCRE2 error %d)",
                 k->name, code);
        free(p);
        return EXSA_ENOMEM;
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter still works */
    *ignore_merges = k->ignore_merges;
    *add_bos = k->add_bos;
    *out = p;
    return 0;
}

void tok_pre_free(struct tok_pre *p)
{
    if (!p)
        return;
    pcre2_code_free(p->re);
    free(p);
}

/* One match at or after pos; retries once with a large JIT stack when the default one is too
 * small. Returns pcre2_match's code. */
static int match_at(const struct tok_pre *p, const char *text, size_t len, size_t pos,
                    pcre2_match_data *md, pcre2_match_context **mctx, pcre2_jit_stack **stack)
{
    int rc = pcre2_match(p->re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, md, *mctx);
    if (rc != PCRE2_ERROR_JIT_STACKLIMIT || *mctx)
        return rc;
    *mctx = pcre2_match_context_create(NULL);
    *stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
    if (!*mctx || !*stack)
        return PCRE2_ERROR_NOMEMORY;
    pcre2_jit_stack_assign(*mctx, NULL, *stack);
    return pcre2_match(p->re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, md, *mctx);
}

int tok_pre_split(const struct tok_pre *p, const char *text, size_t len, tok_piece_fn fn, void *ctx)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
    pcre2_match_context *mctx = NULL;
    pcre2_jit_stack *stack = NULL;
    if (!md)
        return EXSA_ENOMEM;
    size_t pos = 0;
    int ret = 0;
    while (pos < len && ret == 0) {
        int rc = match_at(p, text, len, pos, md, &mctx, &stack);
        if (rc == PCRE2_ERROR_NOMATCH) {
            ret = fn(ctx, text + pos, len - pos);
            break;
        }
        if (rc < 0) {
            ret = rc == PCRE2_ERROR_NOMEMORY ? EXSA_ENOMEM : EXSA_EINVAL;
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (s > pos)
            ret = fn(ctx, text + pos, s - pos);
        if (ret == 0 && e == s) {
            /* An empty match cannot come from these regexes; step one code point anyway. */
            size_t adv;
            tok_utf8_decode((const unsigned char *)text + s, len - s, &adv);
            e = s + adv;
        }
        if (ret == 0)
            ret = fn(ctx, text + s, e - s);
        pos = e;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(stack);
    return ret;
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

unsigned tok_utf8_decode(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned b = s[0];
    size_t need;
    unsigned cp;
    if (b < 0x80) {
        *adv = 1;
        return b;
    }
    if (!(b & 0x40)) { /* a continuation byte cannot start a sequence */
        *adv = 1;
        return 0xFFFD;
    }
    if (!(b & 0x20)) {
        need = 2;
        cp = b & 0x1F;
    } else if (!(b & 0x10)) {
        need = 3;
        cp = b & 0x0F;
    } else if (!(b & 0x08)) {
        need = 4;
        cp = b & 0x07;
    } else {
        *adv = 1;
        return 0xFFFD;
    }
    if (n < need) {
        *adv = 1;
        return 0xFFFD;
    }
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *adv = 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *adv = need;
    return cp;
}

size_t tok_utf8_encode(unsigned cp, char *buf)
{
    unsigned char *o = (unsigned char *)buf;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point PCRE2 will be given for a leniently decoded sequence of adv bytes. */
static unsigned canonical(unsigned cp)
{
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0xFFFD; /* llama.cpp keeps surrogates as they are; PCRE2 cannot take them */
    return cp;
}

/* True when s is strictly valid UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t adv;
        unsigned cp = tok_utf8_decode(s + i, n - i, &adv);
        if (adv == 1 || cp < min_cp[adv] || canonical(cp) != cp)
            return false;
        i += adv;
    }
    return true;
}

int tok_utf8_sanitize(const char *text, size_t len, const char **out, size_t *outlen, char **owned)
{
    const unsigned char *s = (const unsigned char *)text;
    *owned = NULL;
    if (utf8_valid(s, len)) {
        *out = text;
        *outlen = len;
        return 0;
    }
    if (len > (SIZE_MAX - 1) / 3)
        return EXSA_ENOMEM;
    char *buf = malloc(3 * len + 1); /* one bad byte grows to the 3 bytes of U+FFFD */
    if (!buf)
        return EXSA_ENOMEM;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t adv;
        unsigned cp = canonical(tok_utf8_decode(s + i, len - i, &adv));
        o += tok_utf8_encode(cp, buf + o);
        i += adv;
    }
    *out = *owned = buf;
    *outlen = o;
    return 0;
}
