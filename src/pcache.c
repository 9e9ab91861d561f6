/*
 * pcache.c: the prompt cache (pcache.h): a radix tree over token prefixes. Each node holds a
 * run of tokens [start, start + n) following its parent's run, their K/V rows in host memory
 * (kv_export's layout: planes of n rows each) and, at most, one snapshot taken at length
 * start + n. Siblings differ in their first token (children are found by it; the rest of a run
 * is compared exactly). Invariants: every leaf holds a snapshot (a node left with neither
 * children nor a snapshot is dropped); pc->bytes is the sum of node_bytes over the tree.
 * Called by the scheduler thread only (sched-cache.c) and by tests/test_pcache.c.
 */
#include "pcache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct node {
    struct node *parent, *kids, *next; /* first child; next sibling */
    int start, n;
    int32_t *toks;              /* n */
    char *kv;                   /* n rows, kv_export's layout */
    struct exsa_snapshot *snap; /* state at start + n, or NULL */
    unsigned long long used;    /* LRU clock of the last restore or insert through it */
};

struct pcache {
    struct exsa_engine *e;
    struct node root; /* n = 0 */
    size_t row_bytes;
    int n_planes;
    size_t *plane_bytes; /* [n_planes] */
    unsigned long long clock;
    struct pcache_stats st;
};

struct pcache *pcache_new(struct exsa_engine *e, size_t max_bytes)
{
    struct pcache *pc = calloc(1, sizeof *pc);
    if (!pc)
        return NULL;
    pc->e = e;
    pc->n_planes = 2 * e->kv->n_attn;
    pc->plane_bytes = calloc((size_t)pc->n_planes + 1, sizeof(size_t));
    if (!pc->plane_bytes) {
        free(pc);
        return NULL;
    }
    for (int i = 0; i < pc->n_planes; i++)
        pc->plane_bytes[i] = kv_plane_bytes(e->kv, i);
    pc->row_bytes = kv_row_bytes(e->kv);
    pc->st.max_bytes = max_bytes;
    return pc;
}

static size_t snap_bytes(const struct exsa_snapshot *s)
{
    return s ? sizeof *s + s->conv_floats * sizeof(float) : 0;
}

static size_t node_bytes(const struct pcache *pc, const struct node *nd)
{
    return sizeof *nd + (size_t)nd->n * (sizeof(int32_t) + pc->row_bytes) + snap_bytes(nd->snap);
}

static void free_tree(struct node *nd)
{
    while (nd) {
        struct node *next = nd->next;
        free_tree(nd->kids);
        free(nd->toks);
        free(nd->kv);
        exsa_snapshot_free(nd->snap);
        free(nd);
        nd = next;
    }
}

void pcache_free(struct pcache *pc)
{
    if (!pc)
        return;
    free_tree(pc->root.kids);
    free(pc->plane_bytes);
    free(pc);
}

void pcache_get_stats(const struct pcache *pc, struct pcache_stats *st)
{
    *st = pc->st;
}

static struct node *find_kid(const struct node *p, int32_t tok)
{
    struct node *k = p->kids;
    while (k && k->toks[0] != tok)
        k = k->next;
    return k;
}

/* ---- restore ---------------------------------------------------------------------------- */

/* The deepest node with a snapshot whose whole prefix is toks[0..end) with end <= n_max. */
static struct node *longest(struct pcache *pc, const int32_t *toks, int n_max)
{
    struct node *nd = &pc->root, *best = NULL;
    int pos = 0;
    while (pos < n_max) {
        struct node *k = find_kid(nd, toks[pos]);
        if (!k || pos + k->n > n_max || memcmp(k->toks, toks + pos, sizeof(int32_t) * k->n))
            break;
        nd = k;
        pos += k->n;
        if (k->snap)
            best = k;
    }
    return best;
}

/* Copies the rows of the path root..nd into seq (root first), then nd's conv state. */
static int restore_path(struct pcache *pc, int seq, struct node *nd)
{
    if (nd->parent != &pc->root) {
        int rc = restore_path(pc, seq, nd->parent);
        if (rc < 0)
            return rc;
    }
    nd->used = pc->clock;
    return kv_import(pc->e->kv, seq, nd->n, nd->kv);
}

int pcache_restore(struct pcache *pc, int seq, const int32_t *toks, int n_max)
{
    struct node *best = n_max > 0 ? longest(pc, toks, n_max) : NULL;
    if (!best) {
        pc->st.misses++;
        return 0;
    }
    pc->clock++;
    int rc = restore_path(pc, seq, best);
    if (rc == 0)
        rc = kv_restore(pc->e->kv, seq, best->snap);
    if (rc < 0)
        return rc;
    pc->st.hits++;
    pc->st.reused_tokens += (unsigned long long)best->snap->len;
    return best->snap->len;
}

/* ---- eviction --------------------------------------------------------------------------- */

static void unlink_kid(struct node *nd)
{
    struct node **pp = &nd->parent->kids;
    while (*pp != nd)
        pp = &(*pp)->next;
    *pp = nd->next;
}

/* Unlinks and frees leaf nd. */
static void drop_node(struct pcache *pc, struct node *nd)
{
    pc->st.bytes -= node_bytes(pc, nd);
    pc->st.nodes--;
    pc->st.checkpoints -= nd->snap != NULL;
    unlink_kid(nd);
    nd->next = NULL;
    free_tree(nd);
}

/* Drops leaf nd, then each ancestor left with neither children nor a snapshot. */
static void drop_leaf(struct pcache *pc, struct node *nd)
{
    struct node *p = nd->parent;
    drop_node(pc, nd);
    while (p != &pc->root && !p->kids && !p->snap) {
        nd = p;
        p = p->parent;
        drop_node(pc, nd);
    }
}

/* Drops every node under nd left with neither children nor a snapshot (after a failed insert). */
static void prune(struct pcache *pc, struct node *nd)
{
    for (struct node *k = nd->kids, *next; k; k = next) {
        next = k->next;
        prune(pc, k);
        if (!k->kids && !k->snap)
            drop_node(pc, k);
    }
}

/* The least recently used leaf under nd (NULL when nd has no children). */
static struct node *lru_leaf(struct node *nd)
{
    struct node *best = NULL;
    for (struct node *k = nd->kids; k; k = k->next) {
        struct node *c = k->kids ? lru_leaf(k) : k;
        if (c && (!best || c->used < best->used))
            best = c;
    }
    return best;
}

static void evict(struct pcache *pc)
{
    while (pc->st.bytes > pc->st.max_bytes) {
        struct node *nd = lru_leaf(&pc->root);
        if (!nd)
            break;
        pc->st.evictions++;
        drop_leaf(pc, nd);
    }
}

/* ---- insert ----------------------------------------------------------------------------- */

/* Rows [from, from + m) of the n-row buffer kv (every plane) into a new buffer. */
static char *rows_slice(const struct pcache *pc, const char *kv, int n, int from, int m)
{
    char *out = malloc((size_t)m * pc->row_bytes + 1), *o = out;
    for (int i = 0; out && i < pc->n_planes; i++) {
        const size_t pb = pc->plane_bytes[i];
        memcpy(o, kv + (size_t)from * pb, (size_t)m * pb);
        o += (size_t)m * pb;
        kv += (size_t)n * pb;
    }
    return out;
}

/* Splits nd after its first m tokens (0 < m < n): nd keeps them; a new child takes the rest,
 * nd's children and its snapshot. */
static int split(struct pcache *pc, struct node *nd, int m)
{
    struct node *b = calloc(1, sizeof *b);
    int32_t *ta = malloc(sizeof(int32_t) * m), *tb = malloc(sizeof(int32_t) * (nd->n - m));
    char *ka = rows_slice(pc, nd->kv, nd->n, 0, m);
    char *kb = rows_slice(pc, nd->kv, nd->n, m, nd->n - m);
    if (!b || !ta || !tb || !ka || !kb) {
        free(b), free(ta), free(tb), free(ka), free(kb);
        return EXSA_ENOMEM;
    }
    memcpy(ta, nd->toks, sizeof(int32_t) * m);
    memcpy(tb, nd->toks + m, sizeof(int32_t) * (nd->n - m));
    *b = (struct node){.parent = nd,
                       .kids = nd->kids,
                       .start = nd->start + m,
                       .n = nd->n - m,
                       .toks = tb,
                       .kv = kb,
                       .snap = nd->snap,
                       .used = nd->used};
    for (struct node *k = b->kids; k; k = k->next)
        k->parent = b;
    free(nd->toks), free(nd->kv);
    nd->toks = ta, nd->kv = ka, nd->n = m, nd->snap = NULL, nd->kids = b;
    pc->st.bytes += sizeof *b; /* the same tokens and rows, one more node */
    pc->st.nodes++;
    return 0;
}

/* A new leaf under p for toks[pos..end) with seq's rows of those positions. */
static struct node *add_leaf(struct pcache *pc, struct node *p, int seq, const int32_t *toks,
                             int pos, int end)
{
    struct node *nd = calloc(1, sizeof *nd);
    const int n = end - pos;
    if (nd) {
        nd->toks = malloc(sizeof(int32_t) * n);
        nd->kv = malloc((size_t)n * pc->row_bytes + 1);
    }
    if (!nd || !nd->toks || !nd->kv || kv_export(pc->e->kv, seq, pos, n, nd->kv) < 0) {
        if (nd)
            free(nd->toks), free(nd->kv);
        free(nd);
        return NULL;
    }
    memcpy(nd->toks, toks + pos, sizeof(int32_t) * n);
    nd->parent = p, nd->start = pos, nd->n = n, nd->used = pc->clock;
    nd->next = p->kids;
    p->kids = nd;
    pc->st.bytes += node_bytes(pc, nd);
    pc->st.nodes++;
    return nd;
}

/* Makes the tree hold toks[0..end) as a path, splitting where needed so that every length in
 * cut[0..n_cut) (ascending, <= end) ends a node, and copying the rows it lacks from seq.
 * Touches the path. Returns 0 or a negative code (the tree stays consistent). */
static int add_path(struct pcache *pc, int seq, const int32_t *toks, int end, const int *cut,
                    int n_cut)
{
    struct node *nd = &pc->root;
    int pos = 0, c = 0;
    while (pos < end) {
        while (c < n_cut && cut[c] <= pos)
            c++;
        const int stop = c < n_cut ? cut[c] : end;
        struct node *k = find_kid(nd, toks[pos]);
        if (!k)
            k = add_leaf(pc, nd, seq, toks, pos, stop);
        if (!k)
            return EXSA_ENOMEM;
        int m = 0, lim = k->n < stop - pos ? k->n : stop - pos;
        while (m < lim && k->toks[m] == toks[pos + m])
            m++;
        if (m < k->n && split(pc, k, m) < 0)
            return EXSA_ENOMEM;
        k->used = pc->clock;
        nd = k;
        pos += m;
    }
    return 0;
}

/* The node of the path toks[0..) that ends at len (add_path made one), or NULL. */
static struct node *node_ending_at(struct pcache *pc, const int32_t *toks, int len)
{
    struct node *nd = &pc->root;
    int pos = 0;
    while (pos < len && (nd = find_kid(nd, toks[pos])))
        pos += nd->n;
    return pos == len ? nd : NULL;
}

/* How many of the first n_snaps checkpoints (lengths ascending) to keep so that the rows the
 * tree does not hold yet fit max_bytes. */
static int fitting(struct pcache *pc, const int32_t *toks, struct exsa_snapshot **snaps,
                   int n_snaps)
{
    const struct node *nd = &pc->root;
    const int end = snaps[n_snaps - 1]->len;
    long have = 0;
    while (have < end && (nd = find_kid(nd, toks[have])) && nd->n <= end - have &&
           !memcmp(nd->toks, toks + have, sizeof(int32_t) * nd->n))
        have += nd->n;
    const double per_row = (double)(pc->row_bytes + sizeof(int32_t));
    while (n_snaps > 0 && (snaps[n_snaps - 1]->len - have) * per_row > (double)pc->st.max_bytes)
        n_snaps--;
    return n_snaps;
}

int pcache_insert(struct pcache *pc, int seq, const int32_t *toks, int n,
                  struct exsa_snapshot **snaps, int n_snaps)
{
    int keep = 0, rc = 0;
    for (int i = 0; i < n_snaps; i++) /* only checkpoints inside toks, ascending */
        if (snaps[i] && snaps[i]->len > (keep ? snaps[keep - 1]->len : 0) && snaps[i]->len <= n &&
            snaps[i]->len <= exsa_seq_len(pc->e, seq))
            snaps[keep++] = snaps[i];
        else
            exsa_snapshot_free(snaps[i]);
    int use = keep ? fitting(pc, toks, snaps, keep) : 0;
    int *cut = malloc(sizeof(int) * (use + 1));
    for (int i = 0; cut && i < use; i++)
        cut[i] = snaps[i]->len;
    pc->clock++;
    rc = !cut ? EXSA_ENOMEM : use ? add_path(pc, seq, toks, cut[use - 1], cut, use) : 0;
    for (int i = 0; i < keep; i++) {
        struct node *nd = rc == 0 && i < use ? node_ending_at(pc, toks, cut[i]) : NULL;
        if (nd && !nd->snap) {
            nd->snap = snaps[i];
            pc->st.bytes += snap_bytes(nd->snap);
            pc->st.checkpoints++;
        } else {
            exsa_snapshot_free(snaps[i]);
        }
    }
    free(cut);
    if (rc < 0) /* add_path may have left leaves without a snapshot */
        prune(pc, &pc->root);
    evict(pc);
    return rc;
}
