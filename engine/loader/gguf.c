/* engine/loader/gguf.c — GGUF v2/v3 parser over an mmapped file, and dequantization of the ggml
 * block types decoserve loads. Every count and length is checked against the bytes left in the
 * file before anything is allocated or read, so hostile input costs at most a few times the file
 * size in memory and always ends in an error message naming the file and the field. */
#include "engine/loader/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/half.h"
#include "common/log.h"

#define GGUF_MAGIC           0x46554747u /* "GGUF" read as little-endian u32 */
#define GGUF_MAX_ARRAY_DEPTH 16          /* nested arrays deeper than this are refused */

typedef struct gguf_kv {
    char *key;
    gguf_type type;
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;     /* scalars: unsigned in u, signed in i, floats in f, bool in u */
    char *str; /* STRING: NUL-terminated copy */
    size_t str_len;
    gguf_array arr; /* ARRAY */
} gguf_kv;

/* Open-addressing index from name to position, so lookups and duplicate checks stay O(1) even
 * for files with millions of entries. */
typedef struct name_index {
    int64_t *slots; /* -1 = empty */
    uint64_t mask;
} name_index;

struct gguf_file {
    char *path;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kvs;
    int64_t n_tensors;
    gguf_tensor *tensors;
    name_index kv_index, tensor_index;
};

/* ---- type tables ---- */

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};
static const size_t type_sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_type_name(gguf_type type) {
    return (unsigned)type < GGUF_TYPE_COUNT ? type_names[type] : "?";
}

size_t gguf_type_size(gguf_type type) {
    return (unsigned)type < GGUF_TYPE_COUNT ? type_sizes[type] : 0;
}

typedef struct ggml_traits {
    const char *name;
    int64_t block_size;
    size_t block_bytes;
} ggml_traits;

/* ggml's type traits (ggml.c / gguf-py constants.py GGML_QUANT_SIZES); QK_K = 256. */
static const ggml_traits ggml_types[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"f32", 1, 4},
    [GGML_TYPE_F16] = {"f16", 1, 2},
    [GGML_TYPE_Q4_0] = {"q4_0", 32, 2 + 16},
    [GGML_TYPE_Q4_1] = {"q4_1", 32, 2 + 2 + 16},
    [GGML_TYPE_Q5_0] = {"q5_0", 32, 2 + 4 + 16},
    [GGML_TYPE_Q5_1] = {"q5_1", 32, 2 + 2 + 4 + 16},
    [GGML_TYPE_Q8_0] = {"q8_0", 32, 2 + 32},
    [GGML_TYPE_Q8_1] = {"q8_1", 32, 4 + 4 + 32},
    [GGML_TYPE_Q2_K] = {"q2_k", 256, 2 + 2 + 16 + 64},
    [GGML_TYPE_Q3_K] = {"q3_k", 256, 2 + 64 + 32 + 12},
    [GGML_TYPE_Q4_K] = {"q4_k", 256, 2 + 2 + 128 + 12},
    [GGML_TYPE_Q5_K] = {"q5_k", 256, 2 + 2 + 128 + 32 + 12},
    [GGML_TYPE_Q6_K] = {"q6_k", 256, 2 + 128 + 64 + 16},
    [GGML_TYPE_Q8_K] = {"q8_k", 256, 4 + 256 + 32},
    [GGML_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 2 + 64},
    [GGML_TYPE_IQ2_XS] = {"iq2_xs", 256, 2 + 64 + 8},
    [GGML_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 2 + 64 + 32},
    [GGML_TYPE_IQ1_S] = {"iq1_s", 256, 2 + 32 + 16},
    [GGML_TYPE_IQ4_NL] = {"iq4_nl", 32, 2 + 16},
    [GGML_TYPE_IQ3_S] = {"iq3_s", 256, 2 + 64 + 32 + 8 + 4},
    [GGML_TYPE_IQ2_S] = {"iq2_s", 256, 2 + 64 + 16},
    [GGML_TYPE_IQ4_XS] = {"iq4_xs", 256, 2 + 2 + 128 + 4},
    [GGML_TYPE_I8] = {"i8", 1, 1},
    [GGML_TYPE_I16] = {"i16", 1, 2},
    [GGML_TYPE_I32] = {"i32", 1, 4},
    [GGML_TYPE_I64] = {"i64", 1, 8},
    [GGML_TYPE_F64] = {"f64", 1, 8},
    [GGML_TYPE_IQ1_M] = {"iq1_m", 256, 32 + 16 + 8},
    [GGML_TYPE_BF16] = {"bf16", 1, 2},
    [GGML_TYPE_TQ1_0] = {"tq1_0", 256, 2 + 4 * 13},
    [GGML_TYPE_TQ2_0] = {"tq2_0", 256, 2 + 64},
    [GGML_TYPE_MXFP4] = {"mxfp4", 32, 1 + 16},
    [GGML_TYPE_NVFP4] = {"nvfp4", 64, 4 + 32},
    [GGML_TYPE_Q1_0] = {"q1_0", 128, 2 + 16},
};

const char *gguf_ggml_type_name(gguf_ggml_type type) {
    return (unsigned)type < GGML_TYPE_COUNT ? ggml_types[type].name : NULL;
}

int64_t gguf_ggml_block_size(gguf_ggml_type type) {
    return (unsigned)type < GGML_TYPE_COUNT ? ggml_types[type].block_size : 0;
}

size_t gguf_ggml_block_bytes(gguf_ggml_type type) {
    return (unsigned)type < GGML_TYPE_COUNT ? ggml_types[type].block_bytes : 0;
}

/* ---- name index ---- */

static uint64_t hash_name(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int index_init(name_index *ix, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2)
        cap <<= 1;
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return 0;
    memset(ix->slots, 0xff, cap * sizeof *ix->slots);
    ix->mask = cap - 1;
    return 1;
}

/* Inserts position pos under names[pos]; returns the position already holding that name, or -1. */
static int64_t index_insert(name_index *ix, const char *name, int64_t pos,
                            const char *(*name_of)(const void *, int64_t), const void *ctx) {
    for (uint64_t h = hash_name(name) & ix->mask;; h = (h + 1) & ix->mask) {
        if (ix->slots[h] < 0) {
            ix->slots[h] = pos;
            return -1;
        }
        if (strcmp(name_of(ctx, ix->slots[h]), name) == 0) return ix->slots[h];
    }
}

static int64_t index_find(const name_index *ix, const char *name,
                          const char *(*name_of)(const void *, int64_t), const void *ctx) {
    if (!ix->slots) return -1;
    for (uint64_t h = hash_name(name) & ix->mask;; h = (h + 1) & ix->mask) {
        if (ix->slots[h] < 0) return -1;
        if (strcmp(name_of(ctx, ix->slots[h]), name) == 0) return ix->slots[h];
    }
}

static const char *kv_name(const void *f, int64_t i) { return ((const gguf_file *)f)->kvs[i].key; }
static const char *tensor_name(const void *f, int64_t i) {
    return ((const gguf_file *)f)->tensors[i].name;
}

/* ---- parser ---- */

typedef struct parser {
    gguf_file *f;
    uint64_t pos;
    char *msg;
    size_t msg_len;
    char what[192]; /* the field being read, for messages */
} parser;

static ds_status perr(parser *p, ds_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ds_status perr(parser *p, ds_status st, const char *fmt, ...) {
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return ds_fail(p->msg, p->msg_len, st, "%s: %s: %s", p->f->path, p->what, detail);
}

static uint64_t remaining(const parser *p) { return p->f->size - p->pos; }

static ds_status read_bytes(parser *p, void *dst, uint64_t n) {
    if (n > remaining(p))
        return perr(p, DS_ECORRUPT,
                    "truncated file (needs %" PRIu64 " bytes at offset %" PRIu64
                    ", file has %" PRIu64 ")",
                    n, p->pos, p->f->size);
    memcpy(dst, p->f->map + p->pos, n);
    p->pos += n;
    return DS_OK;
}

static ds_status read_u32(parser *p, uint32_t *v) { return read_bytes(p, v, 4); }
static ds_status read_u64(parser *p, uint64_t *v) { return read_bytes(p, v, 8); }

static ds_status read_str(parser *p, gguf_str *s) {
    uint64_t len = 0;
    ds_status st = read_u64(p, &len);
    if (st) return st;
    if (len > remaining(p))
        return perr(p, DS_ECORRUPT,
                    "string of %" PRIu64 " bytes at offset %" PRIu64 " runs past the end of the "
                    "file (%" PRIu64 " bytes)",
                    len, p->pos, p->f->size);
    s->ptr = (const char *)p->f->map + p->pos;
    s->len = len;
    p->pos += len;
    return DS_OK;
}

static char *copy_str(gguf_str s) {
    char *c = malloc(s.len + 1);
    if (!c) return NULL;
    memcpy(c, s.ptr, s.len);
    c[s.len] = '\0';
    return c;
}

static void free_array(gguf_array *a) {
    if (a->arrays)
        for (uint64_t i = 0; i < a->n; i++)
            free_array((gguf_array *)&a->arrays[i]);
    free((void *)a->strs);
    free((void *)a->arrays);
    memset(a, 0, sizeof *a);
}

static ds_status read_array(parser *p, gguf_array *a, int depth) {
    uint32_t elem = 0;
    ds_status st;
    if ((st = read_u32(p, &elem)) || (st = read_u64(p, &a->n))) return st;
    if (elem >= GGUF_TYPE_COUNT) {
        a->n = 0;
        return perr(p, DS_ECORRUPT, "unknown array element type %" PRIu32, elem);
    }
    a->elem_type = (gguf_type)elem;
    uint64_t n = a->n;
    size_t size = type_sizes[elem];
    /* Smallest encoding of one element: its fixed size, a string's length, an array's header. */
    uint64_t min_bytes = size ? size : elem == GGUF_TYPE_STRING ? 8 : 12;
    if (n > remaining(p) / min_bytes) {
        a->n = 0;
        return perr(p, DS_ECORRUPT,
                    "array of %" PRIu64 " %s elements at offset %" PRIu64 " cannot fit in the "
                    "%" PRIu64 " bytes left",
                    n, type_names[elem], p->pos, remaining(p));
    }
    if (size) {
        a->data = p->f->map + p->pos;
        p->pos += n * size;
        return DS_OK;
    }
    if (elem == GGUF_TYPE_STRING) {
        gguf_str *strs = malloc((n ? n : 1) * sizeof *strs);
        if (!strs) {
            a->n = 0;
            return perr(p, DS_ENOMEM, "out of memory for %" PRIu64 " strings", n);
        }
        a->strs = strs;
        for (uint64_t i = 0; i < n; i++)
            if ((st = read_str(p, &strs[i]))) return st;
        return DS_OK;
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH) {
        a->n = 0;
        return perr(p, DS_EUNSUPPORTED, "arrays nested deeper than %d", GGUF_MAX_ARRAY_DEPTH);
    }
    gguf_array *kids = calloc(n ? n : 1, sizeof *kids);
    if (!kids) {
        a->n = 0;
        return perr(p, DS_ENOMEM, "out of memory for %" PRIu64 " nested arrays", n);
    }
    a->arrays = kids;
    for (uint64_t i = 0; i < n; i++)
        if ((st = read_array(p, &kids[i], depth + 1))) return st;
    return DS_OK;
}

static ds_status read_kv(parser *p, int64_t index) {
    gguf_kv *kv = &p->f->kvs[index];
    gguf_str key = {0};
    uint32_t type = 0;
    ds_status st;
    snprintf(p->what, sizeof p->what, "metadata entry %" PRId64 " key", index);
    if ((st = read_str(p, &key))) return st;
    if (!(kv->key = copy_str(key))) return perr(p, DS_ENOMEM, "out of memory");
    snprintf(p->what, sizeof p->what, "key %.120s", kv->key);
    if ((st = read_u32(p, &type))) return st;
    if (type >= GGUF_TYPE_COUNT) return perr(p, DS_ECORRUPT, "unknown value type %" PRIu32, type);
    kv->type = (gguf_type)type;

    uint8_t raw[8] = {0};
    switch (kv->type) {
    case GGUF_TYPE_STRING: {
        gguf_str s = {0};
        if ((st = read_str(p, &s))) return st;
        if (!(kv->str = copy_str(s))) return perr(p, DS_ENOMEM, "out of memory");
        kv->str_len = s.len;
        return DS_OK;
    }
    case GGUF_TYPE_ARRAY: return read_array(p, &kv->arr, 0);
    default: break;
    }
    if ((st = read_bytes(p, raw, type_sizes[type]))) return st;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: kv->num.u = raw[0]; break;
    case GGUF_TYPE_BOOL: kv->num.u = raw[0]; break;
    case GGUF_TYPE_INT8: kv->num.i = (int8_t)raw[0]; break;
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, raw, 2);
        kv->num.u = v;
    } break;
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, raw, 2);
        kv->num.i = v;
    } break;
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, raw, 4);
        kv->num.u = v;
    } break;
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, raw, 4);
        kv->num.i = v;
    } break;
    case GGUF_TYPE_FLOAT32: {
        float v;
        memcpy(&v, raw, 4);
        kv->num.f = v;
    } break;
    case GGUF_TYPE_UINT64: memcpy(&kv->num.u, raw, 8); break;
    case GGUF_TYPE_INT64: memcpy(&kv->num.i, raw, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->num.f, raw, 8); break;
    default: DS_ASSERT(0 && "unhandled scalar type");
    }
    return DS_OK;
}

static ds_status read_tensor_info(parser *p, int64_t index) {
    gguf_tensor *t = &p->f->tensors[index];
    gguf_str name = {0};
    uint32_t n_dims = 0, type = 0;
    ds_status st;
    snprintf(p->what, sizeof p->what, "tensor %" PRId64 " name", index);
    if ((st = read_str(p, &name))) return st;
    char *copy = copy_str(name);
    if (!copy) return perr(p, DS_ENOMEM, "out of memory");
    t->name = copy;
    snprintf(p->what, sizeof p->what, "tensor %.120s", t->name);
    if ((st = read_u32(p, &n_dims))) return st;
    if (n_dims > GGUF_MAX_DIMS)
        return perr(p, DS_ECORRUPT, "n_dims = %" PRIu32 " (at most %d)", n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_elements = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && (st = read_u64(p, &ne))) return st;
        if (ne > (uint64_t)INT64_MAX || (ne && (uint64_t)n_elements > (uint64_t)INT64_MAX / ne))
            return perr(p, DS_ECORRUPT, "dimension %d = %" PRIu64 " overflows the element count", d,
                        ne);
        t->ne[d] = (int64_t)ne;
        n_elements *= (int64_t)ne;
    }
    t->n_elements = n_elements;
    if ((st = read_u32(p, &type))) return st;
    if (type >= GGML_TYPE_COUNT || !ggml_types[type].name)
        return perr(p, DS_EUNSUPPORTED, "unknown tensor type %" PRIu32, type);
    t->type = (gguf_ggml_type)type;
    const ggml_traits *tr = &ggml_types[type];
    if (t->ne[0] % tr->block_size)
        return perr(p, DS_ECORRUPT,
                    "row length %" PRId64 " is not a multiple of the %s block "
                    "size %" PRId64,
                    t->ne[0], tr->name, tr->block_size);
    /* bytes = ne0/bs*bb * ne1*ne2*ne3, computed so that overflow is detected, not wrapped. */
    uint64_t bytes = (uint64_t)(t->ne[0] / tr->block_size);
    uint64_t factors[GGUF_MAX_DIMS] = {tr->block_bytes, (uint64_t)t->ne[1], (uint64_t)t->ne[2],
                                       (uint64_t)t->ne[3]};
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        if (factors[i] && bytes > UINT64_MAX / factors[i])
            return perr(p, DS_ECORRUPT, "byte size overflows");
        bytes *= factors[i];
    }
    t->n_bytes = bytes;
    return read_u64(p, &t->offset);
}

/* Doubles a zero-filled table; new entries are zeroed so gguf_close can free a partial parse. */
static int grow(void **table, uint64_t *cap, size_t elem_size) {
    uint64_t new_cap = *cap ? *cap * 2 : 64;
    void *t = realloc(*table, new_cap * elem_size);
    if (!t) return 0;
    memset((char *)t + *cap * elem_size, 0, (new_cap - *cap) * elem_size);
    *table = t;
    *cap = new_cap;
    return 1;
}

static ds_status parse(parser *p) {
    gguf_file *f = p->f;
    uint32_t magic = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    ds_status st;
    snprintf(p->what, sizeof p->what, "header");
    if ((st = read_u32(p, &magic))) return st;
    if (magic != GGUF_MAGIC)
        return perr(p, DS_ECORRUPT, "bad magic 0x%08" PRIx32 " (not a GGUF file)", magic);
    if ((st = read_u32(p, &f->version))) return st;
    if (f->version == 1)
        return perr(p, DS_EUNSUPPORTED, "GGUF version 1 is not supported (only 2 and 3)");
    if (f->version != 2 && f->version != 3)
        return perr(p, DS_EUNSUPPORTED, "unsupported GGUF version %" PRIu32 " (only 2 and 3)",
                    f->version);
    if ((st = read_u64(p, &n_tensors)) || (st = read_u64(p, &n_kv))) return st;
    /* A metadata entry takes at least 13 bytes and a tensor info at least 24. */
    if (n_kv > remaining(p) / 13)
        return perr(p, DS_ECORRUPT, "metadata count %" PRIu64 " cannot fit in the file", n_kv);
    if (n_tensors > remaining(p) / 24)
        return perr(p, DS_ECORRUPT, "tensor count %" PRIu64 " cannot fit in the file", n_tensors);

    /* Tables grow as entries parse, so a corrupt count costs no more than the entries present. */
    uint64_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (i == cap && !grow((void **)&f->kvs, &cap, sizeof *f->kvs))
            return perr(p, DS_ENOMEM, "out of memory for %" PRIu64 " metadata entries", n_kv);
        f->n_kv = (int64_t)i + 1; /* so gguf_close frees what this entry allocated */
        if ((st = read_kv(p, (int64_t)i))) return st;
    }
    if (!index_init(&f->kv_index, f->n_kv)) return perr(p, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < f->n_kv; i++) {
        snprintf(p->what, sizeof p->what, "key %.120s", f->kvs[i].key);
        int64_t dup = index_insert(&f->kv_index, f->kvs[i].key, i, kv_name, f);
        if (dup >= 0)
            return perr(p, DS_ECORRUPT, "duplicate key (entries %" PRId64 " and %" PRId64 ")", dup,
                        i);
    }

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ia = gguf_find_key(f, "general.alignment");
    if (ia >= 0) {
        const gguf_kv *kv = &f->kvs[ia];
        snprintf(p->what, sizeof p->what, "key general.alignment");
        if (kv->type != GGUF_TYPE_UINT32)
            return perr(p, DS_ECORRUPT, "expected uint32, got %s", type_names[kv->type]);
        if (kv->num.u == 0 || (kv->num.u & (kv->num.u - 1)))
            return perr(p, DS_ECORRUPT, "%" PRIu64 " is not a power of two", kv->num.u);
        f->alignment = (uint32_t)kv->num.u;
    }

    cap = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (i == cap && !grow((void **)&f->tensors, &cap, sizeof *f->tensors))
            return perr(p, DS_ENOMEM, "out of memory for %" PRIu64 " tensors", n_tensors);
        f->n_tensors = (int64_t)i + 1;
        if ((st = read_tensor_info(p, (int64_t)i))) return st;
    }
    if (!index_init(&f->tensor_index, f->n_tensors)) return perr(p, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < f->n_tensors; i++) {
        snprintf(p->what, sizeof p->what, "tensor %.120s", f->tensors[i].name);
        int64_t dup = index_insert(&f->tensor_index, f->tensors[i].name, i, tensor_name, f);
        if (dup >= 0)
            return perr(p, DS_ECORRUPT,
                        "duplicate tensor name (tensors %" PRId64 " and %" PRId64 ")", dup, i);
    }

    uint64_t pad = (f->alignment - p->pos % f->alignment) % f->alignment;
    f->data_offset = p->pos + pad;
    if (n_tensors == 0) return DS_OK;
    if (f->data_offset > f->size) {
        snprintf(p->what, sizeof p->what, "data section");
        return perr(p, DS_ECORRUPT,
                    "truncated file (data starts at %" PRIu64 ", file has %" PRIu64 " bytes)",
                    f->data_offset, f->size);
    }
    uint64_t data_size = f->size - f->data_offset;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        snprintf(p->what, sizeof p->what, "tensor %.120s", t->name);
        if (t->offset % f->alignment)
            return perr(p, DS_ECORRUPT,
                        "data offset %" PRIu64 " is not a multiple of the "
                        "alignment %" PRIu32,
                        t->offset, f->alignment);
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return perr(p, DS_ECORRUPT,
                        "data [%" PRIu64 ", +%" PRIu64 ") runs past the end of the file (%" PRIu64
                        " data bytes)",
                        t->offset, t->n_bytes, data_size);
        t->data = f->map + f->data_offset + t->offset;
    }
    return DS_OK;
}

ds_status gguf_open(const char *path, gguf_file **out, char *msg, size_t msg_len) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return ds_fail(msg, msg_len, errno == ENOENT ? DS_ENOTFOUND : DS_EIO, "%s: %s", path,
                       strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_fail(msg, msg_len, DS_EIO, "%s: not a regular file", path);
    }
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    }
    f->size = (uint64_t)sb.st_size;
    if (f->size > 0) {
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            gguf_close(f);
            return ds_fail(msg, msg_len, DS_EIO, "%s: mmap: %s", path, strerror(err));
        }
        f->map = map;
    } else {
        f->map = (const uint8_t *)""; /* every read fails the bounds check */
    }
    close(fd);
    parser p = {.f = f, .msg = msg, .msg_len = msg_len};
    ds_status st = parse(&p);
    if (st) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return DS_OK;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) {
        free(f->kvs[i].key);
        free(f->kvs[i].str);
        free_array(&f->kvs[i].arr);
    }
    for (int64_t i = 0; i < f->n_tensors; i++)
        free((void *)f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    free(f->kv_index.slots);
    free(f->tensor_index.slots);
    if (f->size > 0 && f->map) munmap((void *)f->map, f->size);
    free(f->path);
    free(f);
}

/* ---- accessors ---- */

const char *gguf_path(const gguf_file *f) { return f->path; }
uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
uint64_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    return index_find(&f->kv_index, key, kv_name, f);
}

const char *gguf_kv_key(const gguf_file *f, int64_t i) {
    DS_ASSERT(i >= 0 && i < f->n_kv);
    return f->kvs[i].key;
}

gguf_type gguf_kv_type(const gguf_file *f, int64_t i) {
    DS_ASSERT(i >= 0 && i < f->n_kv);
    return f->kvs[i].type;
}

const gguf_array *gguf_kv_array(const gguf_file *f, int64_t i) {
    DS_ASSERT(i >= 0 && i < f->n_kv);
    return f->kvs[i].type == GGUF_TYPE_ARRAY ? &f->kvs[i].arr : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) {
    DS_ASSERT(i >= 0 && i < f->n_tensors);
    return &f->tensors[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int64_t i = index_find(&f->tensor_index, name, tensor_name, f);
    return i < 0 ? NULL : &f->tensors[i];
}

/* ---- typed getters ---- */

static ds_status lookup(const gguf_file *f, const char *key, const gguf_kv **kv, char *msg,
                        size_t msg_len) {
    int64_t i = gguf_find_key(f, key);
    if (i < 0) return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: key %s: not found", f->path, key);
    *kv = &f->kvs[i];
    return DS_OK;
}

static ds_status wrong_type(const gguf_file *f, const char *key, const char *want, gguf_type got,
                            char *msg, size_t msg_len) {
    return ds_fail(msg, msg_len, DS_EINVAL, "%s: key %s: expected %s, got %s", f->path, key, want,
                   type_names[got]);
}

static int is_unsigned(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}
static int is_signed(gguf_type t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

/* An integer scalar as (negative?, magnitude) so every range check is exact. */
static ds_status get_int(const gguf_file *f, const char *key, const char *want, int *neg,
                         uint64_t *mag, char *msg, size_t msg_len) {
    const gguf_kv *kv = NULL;
    ds_status st = lookup(f, key, &kv, msg, msg_len);
    if (st) return st;
    if (is_unsigned(kv->type)) {
        *neg = 0;
        *mag = kv->num.u;
    } else if (is_signed(kv->type)) {
        *neg = kv->num.i < 0;
        *mag = *neg ? (uint64_t)(-(kv->num.i + 1)) + 1 : (uint64_t)kv->num.i;
    } else {
        return wrong_type(f, key, want, kv->type, msg, msg_len);
    }
    return DS_OK;
}

static ds_status out_of_range(const gguf_file *f, const char *key, const char *want, int neg,
                              uint64_t mag, char *msg, size_t msg_len) {
    return ds_fail(msg, msg_len, DS_ERANGE, "%s: key %s: value %s%" PRIu64 " does not fit %s",
                   f->path, key, neg ? "-" : "", mag, want);
}

ds_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, char *msg,
                       size_t msg_len) {
    int neg = 0;
    uint64_t mag = 0;
    ds_status st = get_int(f, key, "uint32", &neg, &mag, msg, msg_len);
    if (st) return st;
    if (neg || mag > UINT32_MAX) return out_of_range(f, key, "uint32", neg, mag, msg, msg_len);
    *out = (uint32_t)mag;
    return DS_OK;
}

ds_status gguf_get_i32(const gguf_file *f, const char *key, int32_t *out, char *msg,
                       size_t msg_len) {
    int neg = 0;
    uint64_t mag = 0;
    ds_status st = get_int(f, key, "int32", &neg, &mag, msg, msg_len);
    if (st) return st;
    if (mag > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX))
        return out_of_range(f, key, "int32", neg, mag, msg, msg_len);
    *out = neg ? (int32_t)(-(int64_t)mag) : (int32_t)mag;
    return DS_OK;
}

ds_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, char *msg,
                       size_t msg_len) {
    int neg = 0;
    uint64_t mag = 0;
    ds_status st = get_int(f, key, "uint64", &neg, &mag, msg, msg_len);
    if (st) return st;
    if (neg) return out_of_range(f, key, "uint64", neg, mag, msg, msg_len);
    *out = mag;
    return DS_OK;
}

ds_status gguf_get_f32(const gguf_file *f, const char *key, float *out, char *msg, size_t msg_len) {
    const gguf_kv *kv = NULL;
    ds_status st = lookup(f, key, &kv, msg, msg_len);
    if (st) return st;
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return wrong_type(f, key, "float32", kv->type, msg, msg_len);
    *out = (float)kv->num.f;
    return DS_OK;
}

ds_status gguf_get_bool(const gguf_file *f, const char *key, int *out, char *msg, size_t msg_len) {
    const gguf_kv *kv = NULL;
    ds_status st = lookup(f, key, &kv, msg, msg_len);
    if (st) return st;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(f, key, "bool", kv->type, msg, msg_len);
    *out = kv->num.u != 0;
    return DS_OK;
}

ds_status gguf_get_str(const gguf_file *f, const char *key, const char **out, size_t *len,
                       char *msg, size_t msg_len) {
    const gguf_kv *kv = NULL;
    ds_status st = lookup(f, key, &kv, msg, msg_len);
    if (st) return st;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(f, key, "string", kv->type, msg, msg_len);
    *out = kv->str;
    if (len) *len = kv->str_len;
    return DS_OK;
}

ds_status gguf_get_arr(const gguf_file *f, const char *key, const gguf_array **out, char *msg,
                       size_t msg_len) {
    const gguf_kv *kv = NULL;
    ds_status st = lookup(f, key, &kv, msg, msg_len);
    if (st) return st;
    if (kv->type != GGUF_TYPE_ARRAY) return wrong_type(f, key, "array", kv->type, msg, msg_len);
    *out = &kv->arr;
    return DS_OK;
}

ds_status gguf_get_arr_info(const gguf_file *f, const char *key, gguf_type *elem_type, uint64_t *n,
                            char *msg, size_t msg_len) {
    const gguf_array *a = NULL;
    ds_status st = gguf_get_arr(f, key, &a, msg, msg_len);
    if (st) return st;
    if (elem_type) *elem_type = a->elem_type;
    if (n) *n = a->n;
    return DS_OK;
}

ds_status gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out,
                           char *msg, size_t msg_len) {
    const gguf_array *a = NULL;
    ds_status st = gguf_get_arr(f, key, &a, msg, msg_len);
    if (st) return st;
    if (a->elem_type != GGUF_TYPE_STRING)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: key %s: expected array of string, got array "
                       "of %s",
                       f->path, key, type_names[a->elem_type]);
    if (i >= a->n)
        return ds_fail(msg, msg_len, DS_ERANGE, "%s: key %s: index %" PRIu64 " out of %" PRIu64,
                       f->path, key, i, a->n);
    *out = a->strs[i];
    return DS_OK;
}

static int is_numeric(gguf_type t) {
    return is_unsigned(t) || is_signed(t) || t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64 ||
           t == GGUF_TYPE_BOOL;
}

int64_t gguf_array_i64(const gguf_array *a, uint64_t i) {
    DS_ASSERT(i < a->n && is_numeric(a->elem_type));
    const uint8_t *p = a->data + i * type_sizes[a->elem_type];
    switch (a->elem_type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL: return p[0];
    case GGUF_TYPE_INT8: return (int8_t)p[0];
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    default: { /* floats: truncate, saturating (an out-of-range cast is undefined) */
        double v = gguf_array_f64(a, i);
        if (!(v == v)) return 0;
        if (v >= 9223372036854775807.0) return INT64_MAX;
        if (v <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)v;
    }
    }
}

double gguf_array_f64(const gguf_array *a, uint64_t i) {
    DS_ASSERT(i < a->n && is_numeric(a->elem_type));
    const uint8_t *p = a->data + i * type_sizes[a->elem_type];
    if (a->elem_type == GGUF_TYPE_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    if (a->elem_type == GGUF_TYPE_FLOAT64) {
        double v;
        memcpy(&v, p, 8);
        return v;
    }
    if (a->elem_type == GGUF_TYPE_UINT64) {
        uint64_t v;
        memcpy(&v, p, 8);
        return (double)v;
    }
    return (double)gguf_array_i64(a, i);
}

static ds_status numeric_array(const gguf_file *f, const char *key, uint64_t n,
                               const gguf_array **out, char *msg, size_t msg_len) {
    ds_status st = gguf_get_arr(f, key, out, msg, msg_len);
    if (st) return st;
    if (!is_numeric((*out)->elem_type))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: key %s: expected a numeric array, got array "
                       "of %s",
                       f->path, key, type_names[(*out)->elem_type]);
    if ((*out)->n != n)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: key %s: array has %" PRIu64 " elements, expected %" PRIu64, f->path,
                       key, (*out)->n, n);
    return DS_OK;
}

ds_status gguf_get_arr_f32(const gguf_file *f, const char *key, float *dst, uint64_t n, char *msg,
                           size_t msg_len) {
    const gguf_array *a = NULL;
    ds_status st = numeric_array(f, key, n, &a, msg, msg_len);
    if (st) return st;
    for (uint64_t i = 0; i < n; i++)
        dst[i] = (float)gguf_array_f64(a, i);
    return DS_OK;
}

ds_status gguf_get_arr_i32(const gguf_file *f, const char *key, int32_t *dst, uint64_t n, char *msg,
                           size_t msg_len) {
    const gguf_array *a = NULL;
    ds_status st = numeric_array(f, key, n, &a, msg, msg_len);
    if (st) return st;
    int is_float = a->elem_type == GGUF_TYPE_FLOAT32 || a->elem_type == GGUF_TYPE_FLOAT64;
    for (uint64_t i = 0; i < n; i++) {
        int ok;
        if (is_float) {
            double v = gguf_array_f64(a, i);
            ok = v >= INT32_MIN && v <= INT32_MAX && v == (double)(int64_t)v;
            if (ok) dst[i] = (int32_t)v;
        } else if (a->elem_type == GGUF_TYPE_UINT64) {
            uint64_t v = (uint64_t)gguf_array_i64(a, i);
            ok = v <= INT32_MAX;
            if (ok) dst[i] = (int32_t)v;
        } else {
            int64_t v = gguf_array_i64(a, i);
            ok = v >= INT32_MIN && v <= INT32_MAX;
            if (ok) dst[i] = (int32_t)v;
        }
        if (!ok)
            return ds_fail(msg, msg_len, DS_ERANGE,
                           "%s: key %s: element %" PRIu64 " is not an int32", f->path, key, i);
    }
    return DS_OK;
}

/* ---- dequantization (ggml-quants.c reference layouts) ---- */

static float load_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ds_half_to_float(h);
}

ds_status gguf_dequantize(gguf_ggml_type type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    int64_t bs = gguf_ggml_block_size(type);
    if (bs == 0) return DS_EUNSUPPORTED;
    if (n < 0 || n % bs) return DS_EINVAL;
    switch (type) {
    case GGML_TYPE_F32: memcpy(dst, s, (size_t)n * sizeof(float)); return DS_OK;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = load_half(s + 2 * i);
        return DS_OK;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t b;
            memcpy(&b, s + 2 * i, 2);
            dst[i] = ds_bf16_to_float(b);
        }
        return DS_OK;
    case GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, s += 34, dst += 32) {
            float d = load_half(s);
            for (int j = 0; j < 32; j++)
                dst[j] = (float)(int8_t)s[2 + j] * d;
        }
        return DS_OK;
    case GGML_TYPE_Q4_0: /* byte j holds value j (low nibble) and value j + 16 (high nibble) */
        for (int64_t b = 0; b < n / 32; b++, s += 18, dst += 32) {
            float d = load_half(s);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((s[2 + j] & 0x0f) - 8) * d;
                dst[j + 16] = (float)((s[2 + j] >> 4) - 8) * d;
            }
        }
        return DS_OK;
    case GGML_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, s += 20, dst += 32) {
            float d = load_half(s), m = load_half(s + 2);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(s[4 + j] & 0x0f) * d + m;
                dst[j + 16] = (float)(s[4 + j] >> 4) * d + m;
            }
        }
        return DS_OK;
    default: return DS_EUNSUPPORTED;
    }
}
