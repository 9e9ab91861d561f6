/*
 * tokenizer.c: byte-level BPE from a GGUF's tokenizer.ggml.* keys, as llama.cpp runs it
 * (LFM2-SPEC.md section 6): load and checks, special-token partitioning, pre-tokenizer split
 * (tok_pre.c), GPT-2 byte mapping, merges by rank, pieces for decoding, the EOG set, and the
 * public exsa_tokenize / exsa_token_* wrappers.
 *
 * struct tokenizer owns copies of every token text and merge (it does not borrow the GGUF), two
 * open-addressing hash tables (text -> id, "left right" -> rank), and the decoded bytes of every
 * token, precomputed. It is read-only after tok_load(); tok_encode() keeps all of its scratch in
 * the call, so threads may share one tokenizer. Invariants: 0 <= every stored id < n_vocab;
 * every token text is non-empty. Called by model.c, the server, tools and tests.
 */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "model.h"
#include "tok_pre.h"

enum tok_attr { A_UNDEFINED, A_NORMAL, A_UNKNOWN, A_CONTROL, A_USER_DEFINED, A_UNUSED, A_BYTE };

struct span {
    size_t off;
    uint32_t len;
};

struct tokenizer {
    int n_vocab;
    char *text;       /* every token text back to back (byte-mapped form for NORMAL tokens) */
    struct span *tok; /* n_vocab: token text in text[] */
    char *bytes;      /* decoded bytes of every token back to back */
    struct span *pc;  /* n_vocab: token bytes in bytes[] */
    uint8_t *attr;    /* n_vocab: enum tok_attr */
    uint8_t *eog;     /* n_vocab: 1 if the token ends generation */
    int32_t *vslot;   /* vocab hash: token id or -1; vmask + 1 slots */
    size_t vmask;
    char *mtext;      /* every merge "left right" back to back */
    struct span *mrg; /* n_merges */
    uint32_t *msplit; /* n_merges: length of the left part */
    int32_t *mslot;   /* merge hash: rank or -1; mmask + 1 slots */
    size_t mmask;
    int n_merges;
    int32_t *special; /* CONTROL / USER_DEFINED / UNKNOWN ids, longest text first */
    int n_special;
    struct tok_pre *pre;
    int32_t bos, eos;
    bool add_bos, ignore_merges;
    char bmap[256][2]; /* GPT-2 bytes_to_unicode: UTF-8 of the code point each byte maps to */
    uint8_t bmap_len[256];
    int16_t unmap[0x144]; /* code point -> byte, or -1 */
};

#define FNV0 0xcbf29ce484222325ULL

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}

/* Slots for n keys at most half full: a power of two, minus one as the mask. */
static int32_t *new_slots(size_t n, size_t *mask)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    int32_t *s = malloc(cap * sizeof(*s));
    if (s)
        memset(s, 0xff, cap * sizeof(*s)); /* every slot -1 */
    *mask = cap - 1;
    return s;
}

/* ---- lookups -------------------------------------------------------------------------------- */

static int32_t vocab_find(const struct tokenizer *t, const char *s, size_t n)
{
    for (size_t i = fnv(FNV0, s, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslot[i];
        if (id < 0)
            return -1;
        if (t->tok[id].len == n && memcmp(t->text + t->tok[id].off, s, n) == 0)
            return id;
    }
}

/* The rank of merging symbols l and r, or -1. */
static int32_t merge_rank(const struct tokenizer *t, const char *l, size_t ln, const char *r,
                          size_t rn)
{
    uint64_t h = fnv(fnv(fnv(FNV0, l, ln), " ", 1), r, rn);
    for (size_t i = h & t->mmask;; i = (i + 1) & t->mmask) {
        int32_t k = t->mslot[i];
        if (k < 0)
            return -1;
        const char *m = t->mtext + t->mrg[k].off;
        if (t->mrg[k].len == ln + 1 + rn && t->msplit[k] == ln && memcmp(m, l, ln) == 0 &&
            memcmp(m + ln + 1, r, rn) == 0)
            return k;
    }
}

/* ---- loading -------------------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the 68 others to U+0100.. in
 * byte order (LFM2-SPEC.md section 6.4 C). */
static void init_byte_map(struct tokenizer *t)
{
    unsigned next = 0x100;
    for (int i = 0; i < 0x144; i++)
        t->unmap[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = keep ? b : next++;
        t->bmap_len[b] = (uint8_t)tok_utf8_encode(cp, t->bmap[b]);
        t->unmap[cp] = (int16_t)b;
    }
}

/* Reads a string array key; EXSA_ENOTFOUND is returned silently when optional. */
static int get_str_arr(const struct gguf_file *f, const char *key, bool optional,
                       struct gguf_array *a, char *err, size_t errlen)
{
    int rc = gguf_get_arr(f, key, a);
    if (rc == EXSA_ENOTFOUND && optional)
        return rc;
    if (rc == EXSA_ENOTFOUND)
        snprintf(err, errlen, "tokenizer: key %s is missing", key);
    else if (rc || a->type != GGUF_TYPE_STRING)
        snprintf(err, errlen, "tokenizer: key %s is not an array of strings", key);
    if (rc == 0 && a->type != GGUF_TYPE_STRING)
        rc = EXSA_ETYPE;
    return rc;
}

/* Copies the token texts (an empty one becomes "[EMPTY_<id>]", as llama.cpp names it) and the
 * token types into t. */
static int load_tokens(struct tokenizer *t, const struct gguf_file *f, const struct gguf_array *a,
                       char *err, size_t errlen)
{
    struct gguf_array ty;
    int rc = gguf_get_arr(f, "tokenizer.ggml.token_type", &ty);
    bool have_types = rc == 0;
    if (rc != 0 && rc != EXSA_ENOTFOUND)
        return snprintf(err, errlen, "tokenizer: key tokenizer.ggml.token_type is not an array"),
               rc;
    if (have_types && ty.n != a->n) {
        snprintf(err, errlen,
                 "tokenizer: tokenizer.ggml.token_type has %llu entries, "
                 "tokenizer.ggml.tokens %llu",
                 (unsigned long long)ty.n, (unsigned long long)a->n);
        return EXSA_EFORMAT;
    }
    size_t total = 0;
    for (int i = 0; i < t->n_vocab; i++)
        total += a->str[i].len ? a->str[i].len : 24;
    t->text = malloc(total + 1);
    size_t nv = (size_t)a->n; /* == n_vocab, checked to fit an int32 */
    t->tok = calloc(nv, sizeof(*t->tok));
    t->attr = calloc(nv, 1);
    t->eog = calloc(nv, 1);
    if (!t->text || !t->tok || !t->attr || !t->eog)
        return snprintf(err, errlen, "tokenizer: out of memory"), EXSA_ENOMEM;
    size_t off = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        const struct gguf_str *s = &a->str[i];
        if (s->len > UINT32_MAX) {
            snprintf(err, errlen, "tokenizer: token %d is longer than 4 GiB", i);
            return EXSA_EFORMAT;
        }
        size_t n = s->len ? s->len : (size_t)sprintf(t->text + off, "[EMPTY_%d]", i);
        if (s->len)
            memcpy(t->text + off, s->ptr, n);
        t->tok[i] = (struct span){off, (uint32_t)n};
        off += n;
        int64_t type = 1;
        if (have_types && gguf_arr_int(&ty, (uint64_t)i, &type) != 0) {
            snprintf(err, errlen, "tokenizer: tokenizer.ggml.token_type is not an integer array");
            return EXSA_ETYPE;
        }
        t->attr[i] = type >= A_NORMAL && type <= A_BYTE ? (uint8_t)type : A_UNDEFINED;
    }
    return 0;
}

/* Fills the text -> id table; a repeated text maps to its last id, as in llama.cpp. */
static int build_vocab_hash(struct tokenizer *t)
{
    t->vslot = new_slots((size_t)t->n_vocab, &t->vmask);
    if (!t->vslot)
        return EXSA_ENOMEM;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->text + t->tok[id].off;
        size_t n = t->tok[id].len;
        size_t i = fnv(FNV0, s, n) & t->vmask;
        for (; t->vslot[i] >= 0; i = (i + 1) & t->vmask) {
            int32_t o = t->vslot[i];
            if (t->tok[o].len == n && memcmp(t->text + t->tok[o].off, s, n) == 0)
                break;
        }
        t->vslot[i] = id;
    }
    return 0;
}

/* Copies the merges and fills the "left right" -> rank table. A merge splits at its first space
 * past index 0; one without such a space can never apply and is skipped; a repeated merge keeps
 * its first (lowest) rank. */
static int load_merges(struct tokenizer *t, const struct gguf_array *a, char *err, size_t errlen)
{
    if (a->n > INT32_MAX)
        return snprintf(err, errlen, "tokenizer: too many merges"), EXSA_ERANGE;
    size_t total = 0;
    for (uint64_t i = 0; i < a->n; i++)
        total += a->str[i].len;
    t->n_merges = (int)a->n;
    t->mtext = malloc(total + 1);
    t->mrg = calloc(a->n + 1, sizeof(*t->mrg));
    t->msplit = calloc(a->n + 1, sizeof(*t->msplit));
    t->mslot = new_slots(a->n, &t->mmask);
    if (!t->mtext || !t->mrg || !t->msplit || !t->mslot)
        return snprintf(err, errlen, "tokenizer: out of memory"), EXSA_ENOMEM;
    size_t off = 0;
    for (int32_t k = 0; k < t->n_merges; k++) {
        const struct gguf_str *s = &a->str[k];
        if (s->len > UINT32_MAX)
            return snprintf(err, errlen, "tokenizer: merge %d is too long", k), EXSA_EFORMAT;
        memcpy(t->mtext + off, s->ptr, s->len);
        const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
        t->mrg[k] = (struct span){off, (uint32_t)s->len};
        off += s->len;
        if (!sp)
            continue;
        size_t ln = (size_t)(sp - s->ptr);
        t->msplit[k] = (uint32_t)ln;
        size_t i = fnv(FNV0, s->ptr, s->len) & t->mmask;
        for (; t->mslot[i] >= 0; i = (i + 1) & t->mmask) {
            int32_t o = t->mslot[i];
            if (t->mrg[o].len == s->len && t->msplit[o] == ln &&
                memcmp(t->mtext + t->mrg[o].off, s->ptr, s->len) == 0)
                break;
        }
        if (t->mslot[i] < 0)
            t->mslot[i] = k;
    }
    return 0;
}

/* Reads an optional token-id key into *id (-1 when absent); the id must name a token. */
static int read_id(const struct gguf_file *f, const struct tokenizer *t, const char *key,
                   int32_t *id, char *err, size_t errlen)
{
    int64_t v;
    int rc = gguf_get_int(f, key, &v);
    *id = -1;
    if (rc == EXSA_ENOTFOUND)
        return 0;
    if (rc == EXSA_ETYPE)
        return snprintf(err, errlen, "tokenizer: key %s is not an integer", key), rc;
    if (rc == EXSA_ERANGE || v < 0 || v >= t->n_vocab) {
        snprintf(err, errlen,
                 "tokenizer: key %s = %lld is out of range (the vocabulary has %d "
                 "tokens)",
                 key, rc ? -1LL : (long long)v, t->n_vocab);
        return EXSA_ERANGE;
    }
    *id = (int32_t)v;
    return rc;
}

/* BOS/EOS, the other special ids (checked only), add_bos, and the EOG set: eos, eot and eom plus
 * every token whose text llama.cpp recognises as an end of turn (forced to CONTROL, as there). */
static int load_specials(struct tokenizer *t, const struct gguf_file *f, char *err, size_t errlen)
{
    static const char *const other_keys[] = {
        "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.mask_token_id"};
    static const char *const eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",   "<|endoftext|>",
        "<|eom_id|>", "<EOT>",      "_<EOT>",  "<|end_of_text|>", "<end_of_utterance>"};
    int32_t eot, eom, other;
    int rc = read_id(f, t, "tokenizer.ggml.bos_token_id", &t->bos, err, errlen);
    if (!rc)
        rc = read_id(f, t, "tokenizer.ggml.eos_token_id", &t->eos, err, errlen);
    if (!rc)
        rc = read_id(f, t, "tokenizer.ggml.eot_token_id", &eot, err, errlen);
    if (!rc)
        rc = read_id(f, t, "tokenizer.ggml.eom_token_id", &eom, err, errlen);
    for (size_t i = 0; !rc && i < sizeof(other_keys) / sizeof(other_keys[0]); i++)
        rc = read_id(f, t, other_keys[i], &other, err, errlen);
    if (rc)
        return rc;
    bool b;
    rc = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b);
    if (rc == 0)
        t->add_bos = b;
    else if (rc != EXSA_ENOTFOUND)
        return snprintf(err, errlen,
                        "tokenizer: key tokenizer.ggml.add_bos_token is not a "
                        "bool"),
               rc;
    for (size_t i = 0; i < sizeof(eog_texts) / sizeof(eog_texts[0]); i++) {
        int32_t id = vocab_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0) {
            t->eog[id] = 1;
            t->attr[id] = A_CONTROL;
        }
    }
    int32_t ids[3] = {t->eos, eot, eom};
    for (int i = 0; i < 3; i++)
        if (ids[i] >= 0)
            t->eog[ids[i]] = 1;
    return 0;
}

/* The special-token list of LFM2-SPEC.md 6.4 A, longest text first (ties: lower id first). */
static int build_special_list(struct tokenizer *t)
{
    t->special = malloc(((size_t)t->n_vocab + 1) * sizeof(*t->special));
    if (!t->special)
        return EXSA_ENOMEM;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t a = t->attr[id];
        if (a == A_CONTROL || a == A_USER_DEFINED || a == A_UNKNOWN)
            t->special[t->n_special++] = id;
    }
    /* Insertion sort without a comparator context (qsort has none); near-sorted input in
     * practice, as special tokens sit together at the start of a vocabulary. */
    for (int i = 1; i < t->n_special; i++) {
        int32_t id = t->special[i];
        int j = i;
        for (; j > 0; j--) {
            int32_t p = t->special[j - 1];
            bool before =
                t->tok[id].len > t->tok[p].len || (t->tok[id].len == t->tok[p].len && id < p);
            if (!before)
                break;
            t->special[j] = p;
        }
        t->special[j] = id;
    }
    return 0;
}

/* The bytes each token decodes to (LFM2-SPEC.md 6.5): NORMAL texts through the inverse byte map
 * (a code point outside the map is kept as its UTF-8), CONTROL / UNKNOWN / USER_DEFINED texts
 * raw, every other kind empty. */
static int build_pieces(struct tokenizer *t)
{
    size_t total = t->n_vocab ? t->tok[t->n_vocab - 1].off + t->tok[t->n_vocab - 1].len : 0;
    t->bytes = malloc(total + 1);
    t->pc = calloc((size_t)t->n_vocab, sizeof(*t->pc));
    if (!t->bytes || !t->pc)
        return EXSA_ENOMEM;
    size_t o = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const unsigned char *s = (const unsigned char *)t->text + t->tok[id].off;
        size_t n = t->tok[id].len, start = o;
        uint8_t a = t->attr[id];
        if (a == A_CONTROL || a == A_UNKNOWN || a == A_USER_DEFINED) {
            memcpy(t->bytes + o, s, n);
            o += n;
        } else if (a == A_NORMAL) {
            for (size_t i = 0, adv; i < n; i += adv) {
                unsigned cp = tok_utf8_decode(s + i, n - i, &adv);
                if (cp < 0x144 && t->unmap[cp] >= 0)
                    t->bytes[o++] = (char)t->unmap[cp];
                else
                    memcpy(t->bytes + o, s + i, adv), o += adv;
            }
        }
        t->pc[id] = (struct span){start, (uint32_t)(o - start)};
    }
    return 0;
}

/* Checks the model and pre-tokenizer names; compiles the split regex. */
static int load_kind(struct tokenizer *t, const struct gguf_file *f, char *err, size_t errlen)
{
    struct gguf_str s;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &s);
    if (rc)
        return snprintf(err, errlen, "tokenizer: key tokenizer.ggml.model is %s",
                        rc == EXSA_ENOTFOUND ? "missing" : "not a string"),
               rc;
    if (s.len != 4 || memcmp(s.ptr, "gpt2", 4) != 0) {
        snprintf(err, errlen, "tokenizer: model '%.*s' is not supported (known: gpt2)",
                 (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return EXSA_EUNSUPPORTED;
    }
    rc = gguf_get_str(f, "tokenizer.ggml.pre", &s);
    if (rc == EXSA_ENOTFOUND) {
        snprintf(err, errlen,
                 "tokenizer: key tokenizer.ggml.pre is missing (known "
                 "pre-tokenizers: lfm2, gpt-2)");
        return EXSA_EUNSUPPORTED;
    }
    if (rc)
        return snprintf(err, errlen, "tokenizer: key tokenizer.ggml.pre is not a string"), rc;
    return tok_pre_new(s.ptr, s.len, &t->pre, &t->ignore_merges, &t->add_bos, err, errlen);
}

int tok_load(const struct gguf_file *f, int vocab_size, struct tokenizer **out, char *err,
             size_t errlen)
{
    struct gguf_array toks, merges;
    *out = NULL;
    struct tokenizer *t = calloc(1, sizeof(*t));
    if (!t)
        return snprintf(err, errlen, "tokenizer: out of memory"), EXSA_ENOMEM;
    init_byte_map(t);
    int rc = load_kind(t, f, err, errlen);
    if (!rc)
        rc = get_str_arr(f, "tokenizer.ggml.tokens", false, &toks, err, errlen);
    if (!rc)
        rc = get_str_arr(f, "tokenizer.ggml.merges", false, &merges, err, errlen);
    if (!rc && (toks.n == 0 || toks.n > INT32_MAX)) {
        snprintf(err, errlen, "tokenizer: tokenizer.ggml.tokens has %llu entries",
                 (unsigned long long)toks.n);
        rc = EXSA_EFORMAT;
    }
    if (!rc && vocab_size > 0 && toks.n > (uint64_t)vocab_size) {
        snprintf(err, errlen,
                 "tokenizer: the vocabulary has %llu tokens but the model's "
                 "embedding only %d rows",
                 (unsigned long long)toks.n, vocab_size);
        rc = EXSA_ERANGE;
    }
    if (!rc) {
        t->n_vocab = (int)toks.n;
        rc = load_tokens(t, f, &toks, err, errlen);
    }
    if (!rc && (rc = build_vocab_hash(t)) != 0)
        snprintf(err, errlen, "tokenizer: out of memory");
    if (!rc)
        rc = load_merges(t, &merges, err, errlen);
    if (!rc)
        rc = load_specials(t, f, err, errlen);
    if (!rc && ((rc = build_special_list(t)) != 0 || (rc = build_pieces(t)) != 0))
        snprintf(err, errlen, "tokenizer: out of memory");
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tok_free(struct tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->tok);
    free(t->bytes);
    free(t->pc);
    free(t->attr);
    free(t->eog);
    free(t->vslot);
    free(t->mtext);
    free(t->mrg);
    free(t->msplit);
    free(t->mslot);
    free(t->special);
    tok_pre_free(t->pre);
    free(t);
}

/* ---- queries -------------------------------------------------------------------------------- */

int tok_n_vocab(const struct tokenizer *t)
{
    return t->n_vocab;
}

int32_t tok_bos(const struct tokenizer *t)
{
    return t->bos;
}

int32_t tok_eos(const struct tokenizer *t)
{
    return t->eos;
}

bool tok_add_bos(const struct tokenizer *t)
{
    return t->add_bos && t->bos >= 0;
}

bool tok_is_eog(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

bool tok_is_control(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->attr[id] == A_CONTROL;
}

int32_t tok_find(const struct tokenizer *t, const char *s)
{
    return vocab_find(t, s, strlen(s));
}

int tok_piece(const struct tokenizer *t, int32_t id, bool special, const char **bytes, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return EXSA_ERANGE;
    uint8_t a = t->attr[id];
    *bytes = t->bytes + t->pc[id].off;
    *len = (a == A_CONTROL || a == A_UNKNOWN) && !special ? 0 : t->pc[id].len;
    return 0;
}

/* ---- encoding ------------------------------------------------------------------------------- */

/* Where ids go: the caller's array up to max, and a count that goes on past it. */
struct sink {
    int32_t *out;
    size_t max, n;
};

static void emit(struct sink *k, int32_t id)
{
    if (k->n < k->max)
        k->out[k->n] = id;
    k->n++;
}

struct sym {
    int32_t prev, next;
    uint32_t start, n; /* bytes of the mapped piece; n == 0: merged into its left neighbour */
};

struct bigram {
    int32_t rank, left, right;
    uint32_t size; /* left.n + right.n when queued: a different sum later means stale */
};

/* Scratch of one tok_encode call, grown as pieces need. */
struct work {
    const struct tokenizer *t;
    struct sink *sink;
    char *map;
    size_t map_cap;
    struct sym *sym;
    size_t sym_cap;
    struct bigram *heap;
    size_t heap_n, heap_cap;
};

static int reserve(void **p, size_t *cap, size_t need, size_t elsize)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elsize);
    if (!q)
        return EXSA_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static bool heap_less(const struct bigram *a, const struct bigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

/* Queues the pair (l, r) if it has a merge rank; the heap has room for it (3 n entries). */
static void add_bigram(struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const struct sym *a = &w->sym[l], *b = &w->sym[r];
    int32_t rank = merge_rank(w->t, w->map + a->start, a->n, w->map + b->start, b->n);
    if (rank < 0)
        return;
    size_t i = w->heap_n++;
    struct bigram e = {rank, l, r, a->n + b->n};
    while (i > 0 && heap_less(&e, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = e;
}

static struct bigram pop_bigram(struct work *w)
{
    struct bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!heap_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

/* Emits the id of the mapped symbol s[0..n); a symbol outside the vocabulary goes out as the
 * tokens of its single bytes that exist (llama.cpp's fallback). */
static void emit_symbol(struct work *w, const char *s, size_t n)
{
    int32_t id = vocab_find(w->t, s, n);
    if (id >= 0) {
        emit(w->sink, id);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if ((id = vocab_find(w->t, s + i, 1)) >= 0)
            emit(w->sink, id);
}

/* Merges the symbols of the mapped piece (one per input byte) by lowest rank, leftmost first,
 * skipping queue entries made stale by an earlier merge (LFM2-SPEC.md 6.4 D). */
static void bpe_merge(struct work *w, size_t nsym)
{
    w->heap_n = 0;
    for (size_t i = 1; i < nsym; i++)
        add_bigram(w, (int32_t)i - 1, (int32_t)i);
    while (w->heap_n) {
        struct bigram b = pop_bigram(w);
        struct sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = b.left;
        add_bigram(w, l->prev, b.left);
        add_bigram(w, b.left, l->next);
    }
}

/* tok_piece_fn: one pre-token -> byte mapping -> whole-word lookup or BPE -> ids. */
static int encode_piece(void *ctx, const char *s, size_t n)
{
    struct work *w = ctx;
    const struct tokenizer *t = w->t;
    if (n > INT32_MAX / 3) /* symbol indices and mapped offsets are 32-bit */
        return EXSA_ERANGE;
    if (reserve((void **)&w->map, &w->map_cap, 2 * n, 1) ||
        reserve((void **)&w->sym, &w->sym_cap, n, sizeof(*w->sym)) ||
        reserve((void **)&w->heap, &w->heap_cap, 3 * n, sizeof(*w->heap)))
        return EXSA_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        w->sym[i] = (struct sym){(int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, (uint32_t)m,
                                 t->bmap_len[b]};
        memcpy(w->map + m, t->bmap[b], t->bmap_len[b]);
        m += t->bmap_len[b];
    }
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, w->map, m);
        if (id >= 0) {
            emit(w->sink, id);
            return 0;
        }
    }
    bpe_merge(w, n);
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        emit_symbol(w, w->map + w->sym[i].start, w->sym[i].n);
    return 0;
}

/* A run of text (no special tokens in it): UTF-8 clean-up, split, BPE. */
static int encode_text(struct work *w, const char *text, size_t len)
{
    const char *s;
    size_t n;
    char *owned;
    int rc = tok_utf8_sanitize(text, len, &s, &n, &owned);
    if (rc == 0)
        rc = tok_pre_split(w->t->pre, s, n, encode_piece, w);
    free(owned);
    return rc;
}

struct frag {
    int32_t id; /* a special token, or -1 for the text [off, off + len) */
    size_t off, len;
};

static int push_frag(struct frag **v, size_t *n, size_t *cap, struct frag f)
{
    if (reserve((void **)v, cap, *n + 1, sizeof(**v)))
        return EXSA_ENOMEM;
    (*v)[(*n)++] = f;
    return 0;
}

/* Splits the text fragments of in[] at every occurrence of token id, left to right, into out[]. */
static int split_at_token(const struct tokenizer *t, const char *text, int32_t id,
                          const struct frag *in, size_t nin, struct frag **out, size_t *nout,
                          size_t *cap)
{
    const char *tt = t->text + t->tok[id].off;
    size_t tl = t->tok[id].len;
    int rc = 0;
    *nout = 0;
    for (size_t i = 0; i < nin && !rc; i++) {
        struct frag f = in[i];
        const char *hit;
        while (!rc && f.id < 0 && (hit = memmem(text + f.off, f.len, tt, tl)) != NULL) {
            size_t at = (size_t)(hit - text);
            if (at > f.off)
                rc = push_frag(out, nout, cap, (struct frag){-1, f.off, at - f.off});
            if (!rc)
                rc = push_frag(out, nout, cap, (struct frag){id, at, tl});
            f.len -= at + tl - f.off;
            f.off = at + tl;
        }
        if (!rc && (f.id >= 0 || f.len > 0))
            rc = push_frag(out, nout, cap, f);
    }
    return rc;
}

/* Special-token partitioning (LFM2-SPEC.md 6.4 A): USER_DEFINED tokens always, CONTROL and
 * UNKNOWN ones only with parse_special, longest first. *out (malloc'd) gets the fragments. */
static int partition(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
                     struct frag **out, size_t *nout)
{
    struct frag *a = NULL, *b = NULL;
    size_t na = 0, nb = 0, ca = 0, cb = 0;
    int rc = len ? push_frag(&a, &na, &ca, (struct frag){-1, 0, len}) : 0;
    for (int k = 0; k < t->n_special && !rc && na; k++) {
        int32_t id = t->special[k];
        if (!parse_special && t->attr[id] != A_USER_DEFINED)
            continue;
        rc = split_at_token(t, text, id, a, na, &b, &nb, &cb);
        struct frag *tv = a;
        size_t tn = na, tc = ca;
        a = b, na = nb, ca = cb;
        b = tv, nb = tn, cb = tc;
    }
    free(b);
    if (rc) {
        free(a);
        return rc;
    }
    *out = a;
    *nout = na;
    return 0;
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
               bool parse_special, int32_t *out, int max)
{
    if (!t || (!text && len) || max < 0 || (!out && max > 0))
        return EXSA_EINVAL;
    struct sink sink = {out, (size_t)max, 0};
    struct work w = {.t = t, .sink = &sink};
    struct frag *fr = NULL;
    size_t nfr = 0;
    if (add_bos && t->add_bos && t->bos >= 0)
        emit(&sink, t->bos);
    int rc = partition(t, text, len, parse_special, &fr, &nfr);
    for (size_t i = 0; i < nfr && !rc; i++) {
        if (fr[i].id >= 0)
            emit(&sink, fr[i].id);
        else
            rc = encode_text(&w, text + fr[i].off, fr[i].len);
    }
    free(fr);
    free(w.map);
    free(w.sym);
    free(w.heap);
    if (rc)
        return rc;
    return sink.n > INT32_MAX ? EXSA_ERANGE : (int)sink.n;
}

/* ---- public API (include/exsa.h) ------------------------------------------------------------ */

const struct tokenizer *tok_of_model(const struct exsa_model *m)
{
    return m ? m->tok : NULL;
}

int exsa_tokenize(const struct exsa_model *m, const char *text, size_t len, bool add_bos,
                  bool parse_special, int32_t *out, int max)
{
    if (!m || !m->tok)
        return EXSA_EINVAL;
    return tok_encode(m->tok, text, len, add_bos, parse_special, out, max);
}

/* Copies at most size bytes (no NUL added) and returns the piece's full length: a value above
 * size means buf was too small. */
int exsa_token_to_piece(const struct exsa_model *m, int32_t id, bool special, char *buf,
                        size_t size)
{
    const char *p;
    size_t n;
    if (!m || !m->tok || (!buf && size))
        return EXSA_EINVAL;
    int rc = tok_piece(m->tok, id, special, &p, &n);
    if (rc)
        return rc;
    if (size)
        memcpy(buf, p, n < size ? n : size);
    return (int)n;
}

bool exsa_token_is_eog(const struct exsa_model *m, int32_t id)
{
    return m && m->tok && tok_is_eog(m->tok, id);
}

int32_t exsa_token_bos(const struct exsa_model *m)
{
    return m && m->tok ? m->tok->bos : -1;
}

int32_t exsa_token_eos(const struct exsa_model *m)
{
    return m && m->tok ? m->tok->eos : -1;
}
