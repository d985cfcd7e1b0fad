/* engine/tokenizer/bpe.c — byte-level BPE: vocabulary and merge-rank hash tables, rank-ordered
 * merging with a heap over a linked list of symbols (O(n log n) per pre-token), special-token
 * splitting and whole-text decoding. The tokenizer.json loader (bpe_json.c), the streaming
 * decoder (bpe_decoder.c) and the GGUF loader (bpe_gguf.c) build on it. Semantics follow HF
 * `tokenizers` (BPE model + ByteLevel pre-tokenizer/decoder, AddedVocabulary).
 */
#include "engine/tokenizer/bpe.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "engine/tokenizer/bpe_internal.h"
#include "engine/tokenizer/pretokenize.h"

/* ---- GPT-2 byte <-> unicode alphabet ----------------------------------------------------------
 * Printable bytes stand for themselves; the other 68 map to U+0100.. in byte order, so every
 * token is printable text ("Ġ" is the space byte 0x20). */

#define BYTE_ALPHABET_LIMIT 324 /* highest code point of the alphabet is U+0143 */

typedef struct byte_alphabet {
    uint16_t cp_of_byte[256];
    int16_t byte_of_cp[BYTE_ALPHABET_LIMIT]; /* -1 where a code point is not in the alphabet */
} byte_alphabet;

static void byte_alphabet_init(byte_alphabet *a) {
    int n = 0;
    for (int cp = 0; cp < BYTE_ALPHABET_LIMIT; cp++)
        a->byte_of_cp[cp] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        a->cp_of_byte[b] = (uint16_t)(printable ? b : 256 + n++);
        a->byte_of_cp[a->cp_of_byte[b]] = (int16_t)b;
    }
}

/* Appends the alphabet spelling (UTF-8, 1 or 2 bytes per input byte) of bytes to out. */
static size_t byte_alphabet_spell(const byte_alphabet *a, const uint8_t *bytes, size_t n,
                                  char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t cp = a->cp_of_byte[bytes[i]];
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

/* ---- hash tables -------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint32_t table_capacity(size_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n + 1)
        cap <<= 1;
    return cap;
}

typedef struct merge_entry {
    uint64_t pair; /* left id << 32 | right id; EMPTY_PAIR when free */
    int32_t rank;
    int32_t merged; /* id of left+right */
} merge_entry;

#define EMPTY_PAIR UINT64_MAX

struct bpe_tokenizer {
    int32_t n_tokens;
    char *text;          /* arena: every token's vocabulary text, NUL-terminated */
    uint32_t *text_off;  /* [n_tokens] */
    uint32_t *text_len;  /* [n_tokens] */
    char *bytes;         /* arena: every token's decoded bytes */
    uint32_t *bytes_off; /* [n_tokens] */
    uint32_t *bytes_len; /* [n_tokens] */
    int32_t *types;      /* [n_tokens] */
    size_t max_token_bytes;

    int32_t *vocab_slots; /* open addressing over token text -> id, -1 empty */
    uint32_t vocab_mask;
    merge_entry *merge_slots;
    uint32_t merge_mask;

    int32_t byte_token[256]; /* initial symbol of each byte, -1 if the vocab lacks it */
    byte_alphabet alphabet;

    int32_t *specials; /* control and user-defined ids, longest text first */
    int32_t n_specials;
    uint8_t special_first[256]; /* 1 where some special's text starts with that byte */

    pretok_kind pre;
    int32_t bos_id, eos_id, unk_id;
    bool add_bos, ignore_merges, emit_unk;
};

static const char *tok_text(const bpe_tokenizer *tok, int32_t id) {
    return tok->text + tok->text_off[id];
}

static int32_t vocab_find(const bpe_tokenizer *tok, const char *s, size_t n) {
    uint32_t i = (uint32_t)hash_bytes(s, n) & tok->vocab_mask;
    for (;; i = (i + 1) & tok->vocab_mask) {
        int32_t id = tok->vocab_slots[i];
        if (id < 0) return -1;
        if (tok->text_len[id] == n && memcmp(tok_text(tok, id), s, n) == 0) return id;
    }
}

/* Later duplicates replace earlier ones, as a Python dict or HF's vocab map would. */
static void vocab_insert(bpe_tokenizer *tok, int32_t id) {
    const char *s = tok_text(tok, id);
    size_t n = tok->text_len[id];
    uint32_t i = (uint32_t)hash_bytes(s, n) & tok->vocab_mask;
    for (;; i = (i + 1) & tok->vocab_mask) {
        int32_t other = tok->vocab_slots[i];
        if (other < 0 || (tok->text_len[other] == n && memcmp(tok_text(tok, other), s, n) == 0)) {
            tok->vocab_slots[i] = id;
            return;
        }
    }
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

static const merge_entry *merge_find(const bpe_tokenizer *tok, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    uint32_t i = (uint32_t)hash_u64(key) & tok->merge_mask;
    for (;; i = (i + 1) & tok->merge_mask) {
        const merge_entry *e = &tok->merge_slots[i];
        if (e->pair == key) return e;
        if (e->pair == EMPTY_PAIR) return NULL;
    }
}

/* A repeated pair keeps its last rank, as HF's merge map (built by collecting into a map) does. */
static void merge_insert(bpe_tokenizer *tok, int32_t left, int32_t right, int32_t rank,
                         int32_t merged) {
    uint64_t key = pair_key(left, right);
    uint32_t i = (uint32_t)hash_u64(key) & tok->merge_mask;
    for (;; i = (i + 1) & tok->merge_mask) {
        merge_entry *e = &tok->merge_slots[i];
        if (e->pair == key || e->pair == EMPTY_PAIR) {
            *e = (merge_entry){key, rank, merged};
            return;
        }
    }
}

/* ---- construction ------------------------------------------------------------------------- */

/* HF ByteLevel decoding: a token spelled entirely in the alphabet becomes those bytes; any
 * other token (an added token with a raw space, say) is its own UTF-8 text. */
static size_t decode_token_text(const byte_alphabet *a, const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b = (uint8_t)s[i];
        int cp = -1;
        if (b < 0x80) {
            cp = b;
            i += 1;
        } else if ((b & 0xE0) == 0xC0 && i + 1 < n && ((uint8_t)s[i + 1] & 0xC0) == 0x80) {
            cp = ((b & 0x1F) << 6) | ((uint8_t)s[i + 1] & 0x3F);
            i += 2;
        }
        if (cp < 0 || cp >= BYTE_ALPHABET_LIMIT || a->byte_of_cp[cp] < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[o++] = (char)a->byte_of_cp[cp];
    }
    return o;
}

typedef struct special_order {
    uint32_t len;
    int32_t id;
} special_order;

/* Longest text first, so the first match at a position is the longest (HF leftmost-longest). */
static int compare_special(const void *pa, const void *pb) {
    const special_order *a = pa, *b = pb;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

ds_status bpe_create_from_pairs(const bpe_spec *spec, const bpe_merge_text *merges,
                                bpe_tokenizer **out, char *msg, size_t msg_len) {
    *out = NULL;
    if (spec->n_tokens <= 0 || !spec->tokens)
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe: n_tokens=%d: expected a vocabulary",
                       spec->n_tokens);
    pretok_kind pre;
    if (!spec->pre || !pretok_kind_from_name(spec->pre, &pre))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "bpe: pre-tokenizer \"%s\": expected gpt2, smollm or llama3",
                       spec->pre ? spec->pre : "(null)");
    int32_t n = spec->n_tokens;
    const int32_t special_ids[3] = {spec->bos_id, spec->eos_id, spec->unk_id};
    const char *special_names[3] = {"bos", "eos", "unk"};
    for (int i = 0; i < 3; i++) {
        if (special_ids[i] < -1 || special_ids[i] >= n)
            return ds_fail(msg, msg_len, DS_ERANGE, "bpe: %s id %d outside vocab of %d",
                           special_names[i], special_ids[i], n);
    }
    if ((spec->add_bos && spec->bos_id < 0) || (spec->emit_unk && spec->unk_id < 0))
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe: %s requested but %s id is -1",
                       spec->add_bos ? "add_bos" : "emit_unk", spec->add_bos ? "bos" : "unk");

    bpe_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return ds_fail(msg, msg_len, DS_ENOMEM, "bpe: tokenizer struct");
    tok->n_tokens = n;
    tok->pre = pre;
    tok->bos_id = spec->bos_id;
    tok->eos_id = spec->eos_id;
    tok->unk_id = spec->unk_id;
    tok->add_bos = spec->add_bos;
    tok->ignore_merges = spec->ignore_merges;
    tok->emit_unk = spec->emit_unk;
    byte_alphabet_init(&tok->alphabet);

    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!spec->tokens[i]) {
            bpe_destroy(tok);
            return ds_fail(msg, msg_len, DS_EINVAL, "bpe: token %d is NULL", i);
        }
        total += spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
    }
    if (total + (size_t)n >= UINT32_MAX) {
        bpe_destroy(tok);
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe: %zu bytes of token text is too much", total);
    }
    tok->text = malloc(total + (size_t)n);
    tok->bytes = malloc(total + 1);
    tok->text_off = malloc(sizeof(uint32_t) * (size_t)n);
    tok->text_len = malloc(sizeof(uint32_t) * (size_t)n);
    tok->bytes_off = malloc(sizeof(uint32_t) * (size_t)n);
    tok->bytes_len = malloc(sizeof(uint32_t) * (size_t)n);
    tok->types = malloc(sizeof(int32_t) * (size_t)n);
    tok->vocab_mask = table_capacity((size_t)n) - 1;
    tok->vocab_slots = malloc(sizeof(int32_t) * ((size_t)tok->vocab_mask + 1));
    tok->merge_mask = table_capacity((size_t)spec->n_merges) - 1;
    tok->merge_slots = malloc(sizeof(merge_entry) * ((size_t)tok->merge_mask + 1));
    tok->specials = malloc(sizeof(int32_t) * (size_t)n);
    if (!tok->text || !tok->bytes || !tok->text_off || !tok->text_len || !tok->bytes_off ||
        !tok->bytes_len || !tok->types || !tok->vocab_slots || !tok->merge_slots ||
        !tok->specials) {
        bpe_destroy(tok);
        return ds_fail(msg, msg_len, DS_ENOMEM, "bpe: tables for %d tokens, %d merges", n,
                       spec->n_merges);
    }
    memset(tok->vocab_slots, 0xFF, sizeof(int32_t) * ((size_t)tok->vocab_mask + 1));
    for (uint32_t i = 0; i <= tok->merge_mask; i++)
        tok->merge_slots[i].pair = EMPTY_PAIR;

    size_t text_at = 0, bytes_at = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len = spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
        memcpy(tok->text + text_at, spec->tokens[i], len);
        tok->text[text_at + len] = '\0';
        tok->text_off[i] = (uint32_t)text_at;
        tok->text_len[i] = (uint32_t)len;
        text_at += len + 1;
        size_t blen =
            decode_token_text(&tok->alphabet, spec->tokens[i], len, tok->bytes + bytes_at);
        tok->bytes_off[i] = (uint32_t)bytes_at;
        tok->bytes_len[i] = (uint32_t)blen;
        bytes_at += blen;
        if (blen > tok->max_token_bytes) tok->max_token_bytes = blen;
        tok->types[i] = spec->token_types ? spec->token_types[i] : BPE_TOKEN_NORMAL;
        vocab_insert(tok, i);
    }

    for (int b = 0; b < 256; b++) {
        char spelled[2];
        uint8_t byte = (uint8_t)b;
        size_t sl = byte_alphabet_spell(&tok->alphabet, &byte, 1, spelled);
        tok->byte_token[b] = vocab_find(tok, spelled, sl);
    }

    char *joined = NULL;
    size_t joined_cap = 0;
    for (int32_t r = 0; r < spec->n_merges; r++) {
        const bpe_merge_text *m = &merges[r];
        int32_t left = vocab_find(tok, m->left, m->left_len);
        int32_t right = vocab_find(tok, m->right, m->right_len);
        size_t jl = m->left_len + m->right_len;
        if (jl > joined_cap) {
            char *grown = realloc(joined, jl * 2);
            if (!grown) {
                free(joined);
                bpe_destroy(tok);
                return ds_fail(msg, msg_len, DS_ENOMEM, "bpe: merge buffer");
            }
            joined = grown;
            joined_cap = jl * 2;
        }
        memcpy(joined, m->left, m->left_len);
        memcpy(joined + m->left_len, m->right, m->right_len);
        int32_t merged = vocab_find(tok, joined, jl);
        if (left < 0 || right < 0 || merged < 0) {
            ds_fail(msg, msg_len, DS_ECORRUPT, "bpe: merge %d \"%.*s %.*s\": %s is not a token", r,
                    (int)m->left_len, m->left, (int)m->right_len, m->right,
                    left < 0    ? "left"
                    : right < 0 ? "right"
                                : "the concatenation");
            free(joined);
            bpe_destroy(tok);
            return DS_ECORRUPT;
        }
        merge_insert(tok, left, right, r, merged);
    }
    free(joined);

    special_order *order = malloc(sizeof *order * (size_t)n);
    if (!order) {
        bpe_destroy(tok);
        return ds_fail(msg, msg_len, DS_ENOMEM, "bpe: special token order");
    }
    for (int32_t i = 0; i < n; i++) {
        if ((tok->types[i] == BPE_TOKEN_CONTROL || tok->types[i] == BPE_TOKEN_USER_DEFINED) &&
            tok->bytes_len[i] > 0) {
            order[tok->n_specials++] = (special_order){tok->bytes_len[i], i};
            tok->special_first[(uint8_t)tok->bytes[tok->bytes_off[i]]] = 1;
        }
    }
    qsort(order, (size_t)tok->n_specials, sizeof *order, compare_special);
    for (int32_t k = 0; k < tok->n_specials; k++)
        tok->specials[k] = order[k].id;
    free(order);
    *out = tok;
    return DS_OK;
}

ds_status bpe_create(const bpe_spec *spec, bpe_tokenizer **out, char *msg, size_t msg_len) {
    if (!spec || !out) return ds_fail(msg, msg_len, DS_EINVAL, "bpe_create: NULL argument");
    if (spec->n_merges < 0 || (spec->n_merges > 0 && !spec->merges))
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe: n_merges=%d without merges", spec->n_merges);
    bpe_merge_text *merges = malloc(sizeof(bpe_merge_text) * ((size_t)spec->n_merges + 1));
    if (!merges) return ds_fail(msg, msg_len, DS_ENOMEM, "bpe: %d merges", spec->n_merges);
    for (int32_t r = 0; r < spec->n_merges; r++) {
        const char *s = spec->merges[r];
        size_t len = s ? (spec->merge_lens ? spec->merge_lens[r] : strlen(s)) : 0;
        /* The separator is the first space after the first byte, as llama.cpp splits them. */
        const char *space = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!space) {
            free(merges);
            return ds_fail(msg, msg_len, DS_ECORRUPT,
                           "bpe: merge %d \"%.*s\": expected \"left right\"", r, (int)len,
                           s ? s : "");
        }
        merges[r] =
            (bpe_merge_text){s, space + 1, (size_t)(space - s), len - (size_t)(space - s) - 1};
    }
    ds_status st = bpe_create_from_pairs(spec, merges, out, msg, msg_len);
    free(merges);
    return st;
}

void bpe_destroy(bpe_tokenizer *tok) {
    if (!tok) return;
    free(tok->text);
    free(tok->text_off);
    free(tok->text_len);
    free(tok->bytes);
    free(tok->bytes_off);
    free(tok->bytes_len);
    free(tok->types);
    free(tok->vocab_slots);
    free(tok->merge_slots);
    free(tok->specials);
    free(tok);
}

/* ---- encoding ----------------------------------------------------------------------------- */

typedef struct heap_entry {
    int32_t rank, pos, merged;
} heap_entry;

/* Scratch for one encode call, grown to the longest pre-token seen. */
typedef struct encode_state {
    const bpe_tokenizer *tok;
    int32_t *ids;
    int max_ids;
    int n_ids;
    size_t cap;
    int32_t *sym, *prev, *next;
    heap_entry *heap;
    int n_heap;
    char *spelled; /* 2 * cap: a pre-token in the byte alphabet, for ignore_merges */
} encode_state;

static void emit(encode_state *st, int32_t id) {
    if (st->n_ids < st->max_ids) st->ids[st->n_ids] = id;
    st->n_ids++;
}

static bool reserve(encode_state *st, size_t n) {
    if (n <= st->cap) return true;
    size_t cap = st->cap ? st->cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *sym = realloc(st->sym, cap * sizeof *sym);
    if (sym) st->sym = sym;
    int32_t *prev = realloc(st->prev, cap * sizeof *prev);
    if (prev) st->prev = prev;
    int32_t *next = realloc(st->next, cap * sizeof *next);
    if (next) st->next = next;
    heap_entry *heap = realloc(st->heap, 3 * cap * sizeof *heap);
    if (heap) st->heap = heap;
    char *spelled = realloc(st->spelled, 2 * cap);
    if (spelled) st->spelled = spelled;
    if (!sym || !prev || !next || !heap || !spelled) return false;
    st->cap = cap;
    return true;
}

static bool heap_less(const heap_entry *a, const heap_entry *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(encode_state *st, heap_entry e) {
    int i = st->n_heap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!heap_less(&e, &st->heap[parent])) break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = e;
}

static heap_entry heap_pop(encode_state *st) {
    heap_entry top = st->heap[0];
    heap_entry last = st->heap[--st->n_heap];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= st->n_heap) break;
        if (child + 1 < st->n_heap && heap_less(&st->heap[child + 1], &st->heap[child])) child++;
        if (!heap_less(&st->heap[child], &last)) break;
        st->heap[i] = st->heap[child];
        i = child;
    }
    if (st->n_heap > 0) st->heap[i] = last;
    return top;
}

static void push_pair(encode_state *st, int32_t pos) {
    if (pos < 0) return;
    int32_t nx = st->next[pos];
    if (nx < 0) return;
    const merge_entry *m = merge_find(st->tok, st->sym[pos], st->sym[nx]);
    if (m) heap_push(st, (heap_entry){m->rank, pos, m->merged});
}

/* BPE on one pre-token: repeatedly merge the adjacent pair of lowest rank (leftmost on ties). */
static ds_status encode_piece(encode_state *st, const uint8_t *piece, size_t n) {
    const bpe_tokenizer *tok = st->tok;
    if (!reserve(st, n)) return DS_ENOMEM;
    if (tok->ignore_merges) {
        size_t sl = byte_alphabet_spell(&tok->alphabet, piece, n, st->spelled);
        int32_t whole = vocab_find(tok, st->spelled, sl);
        if (whole >= 0) {
            emit(st, whole);
            return DS_OK;
        }
    }
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_token[piece[i]];
        if (id < 0) {
            if (!tok->emit_unk) continue; /* HF BPE without unk_token drops the byte */
            id = tok->unk_id;
        }
        st->sym[m] = id;
        st->prev[m] = m - 1;
        st->next[m] = m + 1;
        m++;
    }
    if (m == 0) return DS_OK;
    st->next[m - 1] = -1;
    st->n_heap = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        push_pair(st, i);
    while (st->n_heap > 0) {
        heap_entry e = heap_pop(st);
        int32_t nx = st->next[e.pos];
        if (st->sym[e.pos] < 0 || nx < 0) continue; /* merged away since it was queued */
        const merge_entry *cur = merge_find(tok, st->sym[e.pos], st->sym[nx]);
        if (!cur || cur->rank != e.rank || cur->merged != e.merged) continue; /* stale */
        st->sym[e.pos] = e.merged;
        st->sym[nx] = -1;
        st->next[e.pos] = st->next[nx];
        if (st->next[nx] >= 0) st->prev[st->next[nx]] = e.pos;
        push_pair(st, st->prev[e.pos]);
        push_pair(st, e.pos);
    }
    for (int32_t i = 0; i >= 0; i = st->next[i])
        emit(st, st->sym[i]);
    return DS_OK;
}

static ds_status encode_plain(encode_state *st, const char *text, size_t len) {
    pretok_iter it;
    pretok_iter_init(&it, st->tok->pre, text, len);
    size_t a, b;
    while (pretok_iter_next(&it, &a, &b)) {
        ds_status s = encode_piece(st, (const uint8_t *)text + a, b - a);
        if (s != DS_OK) return s;
    }
    return DS_OK;
}

/* Longest special token whose text starts at text[pos], or -1. */
static int32_t match_special(const bpe_tokenizer *tok, const char *text, size_t len, size_t pos,
                             bool parse_special) {
    for (int32_t k = 0; k < tok->n_specials; k++) {
        int32_t id = tok->specials[k];
        if (!parse_special && tok->types[id] == BPE_TOKEN_CONTROL) continue;
        size_t sl = tok->bytes_len[id];
        if (sl <= len - pos && memcmp(text + pos, tok->bytes + tok->bytes_off[id], sl) == 0)
            return id;
    }
    return -1;
}

ds_status bpe_encode(const bpe_tokenizer *tok, const char *text, size_t len, bool parse_special,
                     int32_t *ids, int max_ids, int *n_ids, char *msg, size_t msg_len) {
    if (!tok || (!text && len) || (!ids && max_ids > 0) || max_ids < 0 || !n_ids)
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe_encode: bad argument");
    encode_state st = {.tok = tok, .ids = ids, .max_ids = max_ids};
    ds_status s = DS_OK;
    if (tok->add_bos) emit(&st, tok->bos_id);
    size_t start = 0;
    for (size_t pos = 0; pos < len && s == DS_OK;) {
        int32_t special = -1;
        if (tok->special_first[(uint8_t)text[pos]])
            special = match_special(tok, text, len, pos, parse_special);
        if (special < 0) {
            pos++;
            continue;
        }
        s = encode_plain(&st, text + start, pos - start);
        emit(&st, special);
        pos += tok->bytes_len[special];
        start = pos;
    }
    if (s == DS_OK) s = encode_plain(&st, text + start, len - start);
    free(st.sym);
    free(st.prev);
    free(st.next);
    free(st.heap);
    free(st.spelled);
    *n_ids = st.n_ids;
    if (s == DS_ENOMEM) return ds_fail(msg, msg_len, s, "bpe_encode: scratch for %zu bytes", len);
    if (st.n_ids > max_ids)
        return ds_fail(msg, msg_len, DS_ERANGE, "bpe_encode: text needs %d ids, buffer holds %d",
                       st.n_ids, max_ids);
    return DS_OK;
}

/* ---- decoding ----------------------------------------------------------------------------- */

int32_t bpe_vocab_size(const bpe_tokenizer *tok) { return tok->n_tokens; }

const char *bpe_token_bytes(const bpe_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_tokens) return NULL;
    if (len) *len = tok->bytes_len[id];
    return tok->bytes + tok->bytes_off[id];
}

const char *bpe_token_text(const bpe_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_tokens) return NULL;
    return tok_text(tok, id);
}

int32_t bpe_token_type(const bpe_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_tokens) return -1;
    return tok->types[id];
}

int32_t bpe_token_id(const bpe_tokenizer *tok, const char *text, size_t len) {
    return vocab_find(tok, text, len);
}

size_t bpe_max_token_bytes(const bpe_tokenizer *tok) { return tok->max_token_bytes; }

void bpe_set_special_ids(bpe_tokenizer *tok, int32_t bos_id, int32_t eos_id, int32_t unk_id,
                         bool add_bos, bool emit_unk) {
    DS_ASSERT(bos_id >= -1 && bos_id < tok->n_tokens && eos_id >= -1 && eos_id < tok->n_tokens &&
              unk_id >= -1 && unk_id < tok->n_tokens);
    DS_ASSERT((!add_bos || bos_id >= 0) && (!emit_unk || unk_id >= 0));
    tok->bos_id = bos_id;
    tok->eos_id = eos_id;
    tok->unk_id = unk_id;
    tok->add_bos = add_bos;
    tok->emit_unk = emit_unk;
}

int32_t bpe_bos_id(const bpe_tokenizer *tok) { return tok->bos_id; }
int32_t bpe_eos_id(const bpe_tokenizer *tok) { return tok->eos_id; }
int32_t bpe_unk_id(const bpe_tokenizer *tok) { return tok->unk_id; }
const char *bpe_pre_name(const bpe_tokenizer *tok) { return pretok_kind_name(tok->pre); }

ds_status bpe_decode(const bpe_tokenizer *tok, const int32_t *ids, int n_ids, char *out,
                     size_t out_cap, size_t *n_out, char *msg, size_t msg_len) {
    size_t o = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_tokens)
            return ds_fail(msg, msg_len, DS_EINVAL, "bpe_decode: ids[%d]=%d outside vocab of %d", i,
                           ids[i], tok->n_tokens);
        size_t bl = tok->bytes_len[ids[i]];
        if (o + bl <= out_cap) memcpy(out + o, tok->bytes + tok->bytes_off[ids[i]], bl);
        o += bl;
    }
    *n_out = o;
    if (o > out_cap)
        return ds_fail(msg, msg_len, DS_ERANGE, "bpe_decode: needs %zu bytes, buffer holds %zu", o,
                       out_cap);
    return DS_OK;
}
