/* engine/loader/safetensors.c — mmap + header validation for .safetensors files and sharded
 * checkpoint directories. Every offset and size in the header is checked against the mapping
 * before a tensor is handed out, so a truncated or corrupted file is an error, never a crash. */
#include "engine/loader/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/half.h"

/* Tensor names and paths are cut in messages so the field that failed still fits. */
#define NAME_FMT "%.160s"

#define INDEX_MAX_BYTES (64u << 20) /* model.safetensors.index.json */

struct safetensors_file {
    char *path;
    uint8_t *map;
    size_t map_size;
    cJSON *header;
    const cJSON *metadata;       /* "__metadata__" object inside header, or NULL */
    safetensors_tensor *tensors; /* sorted by name */
    size_t n_tensors;
};

struct safetensors_checkpoint {
    char *path; /* the index, or the single file */
    safetensors_file **shards;
    size_t n_shards;
};

static const struct {
    const char *name;
    size_t size;
} dtype_traits[SAFETENSORS_DTYPE_COUNT] = {
    [SAFETENSORS_BOOL] = {"BOOL", 1},       [SAFETENSORS_U8] = {"U8", 1},
    [SAFETENSORS_I8] = {"I8", 1},           [SAFETENSORS_F8_E5M2] = {"F8_E5M2", 1},
    [SAFETENSORS_F8_E4M3] = {"F8_E4M3", 1}, [SAFETENSORS_F8_E8M0] = {"F8_E8M0", 1},
    [SAFETENSORS_I16] = {"I16", 2},         [SAFETENSORS_U16] = {"U16", 2},
    [SAFETENSORS_F16] = {"F16", 2},         [SAFETENSORS_BF16] = {"BF16", 2},
    [SAFETENSORS_I32] = {"I32", 4},         [SAFETENSORS_U32] = {"U32", 4},
    [SAFETENSORS_F32] = {"F32", 4},         [SAFETENSORS_F64] = {"F64", 8},
    [SAFETENSORS_I64] = {"I64", 8},         [SAFETENSORS_U64] = {"U64", 8},
    [SAFETENSORS_C64] = {"C64", 8},
};

const char *safetensors_dtype_name(safetensors_dtype dtype) {
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtype_traits[dtype].name : "?";
}

size_t safetensors_dtype_size(safetensors_dtype dtype) {
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtype_traits[dtype].size : 0;
}

static int dtype_from_name(const char *name, safetensors_dtype *out) {
    for (int i = 0; i < SAFETENSORS_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_traits[i].name) == 0) {
            *out = (safetensors_dtype)i;
            return 1;
        }
    }
    return 0;
}

static char *path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    char *p = malloc(dl + (size_t)slash + nl + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (slash) p[dl] = '/';
    memcpy(p + dl + slash, name, nl + 1);
    return p;
}

static ds_status open_error(const char *path, int err, char *msg, size_t msg_len) {
    return ds_fail(msg, msg_len, err == ENOENT ? DS_ENOTFOUND : DS_EIO, "%s: cannot open: %s", path,
                   strerror(err));
}

/* A JSON number that is a whole number in [0, 2^53] (exact in a double). */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0.0 || v > 9007199254740992.0 || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const safetensors_tensor *)a)->name, ((const safetensors_tensor *)b)->name);
}

/* Fills t from one header entry; data is the start of the data region of data_size bytes. */
static ds_status parse_tensor(const char *path, const cJSON *entry, const uint8_t *data,
                              size_t data_size, safetensors_tensor *t, char *msg, size_t msg_len) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: tensor " NAME_FMT ": expected an object",
                       path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT ": field dtype: missing or not a string", path, name);
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor " NAME_FMT ": field dtype: unknown dtype \"%.32s\"", path, name,
                       dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT ": field shape: missing or not an array", path, name);
    int n_dims = cJSON_GetArraySize(shape);
    if (n_dims > SAFETENSORS_MAX_DIMS)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor " NAME_FMT ": field shape: %d dims, at most %d supported", path,
                       name, n_dims, SAFETENSORS_MAX_DIMS);
    t->n_dims = n_dims;
    size_t n_elements = 1;
    int overflow = 0;
    const cJSON *dim;
    int d = 0;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return ds_fail(msg, msg_len, DS_ECORRUPT,
                           "%s: tensor " NAME_FMT ": field shape: dim %d is not a non-negative "
                           "integer",
                           path, name, d);
        t->shape[d++] = (int64_t)v;
        if (v != 0 && n_elements > SIZE_MAX / v) overflow = 1;
        n_elements = overflow ? 0 : n_elements * (size_t)v;
    }
    size_t esize = dtype_traits[t->dtype].size;
    if (overflow || (esize && n_elements > SIZE_MAX / esize))
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT ": field shape: element count overflows", path, name);
    t->n_elements = n_elements;

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_uint(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &end))
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT
                       ": field data_offsets: expected [begin, end] of non-negative integers",
                       path, name);
    if (begin > end || end > data_size)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT
                       ": field data_offsets: [%llu, %llu] outside the data region of %zu bytes",
                       path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    t->n_bytes = (size_t)(end - begin);
    if (t->n_bytes != n_elements * esize)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: tensor " NAME_FMT
                       ": field data_offsets: span of %zu bytes, but shape x %s needs %zu",
                       path, name, t->n_bytes, dtype_traits[t->dtype].name, n_elements * esize);
    t->data = data + begin;
    t->name = name;
    t->path = path;
    return DS_OK;
}

/* Parses and validates the header of an already mapped file. */
static ds_status parse_header(safetensors_file *f, char *msg, size_t msg_len) {
    const char *path = f->path;
    if (f->map_size < 8)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: file of %zu bytes is too short for the 8-byte header length", path,
                       f->map_size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = (header_len << 8) | f->map[i];
    if (header_len > f->map_size - 8 || header_len > SAFETENSORS_MAX_HEADER_BYTES || header_len < 2)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: header length %llu is invalid for a file of %zu bytes (limit %u)", path,
                       (unsigned long long)header_len, f->map_size, SAFETENSORS_MAX_HEADER_BYTES);

    /* Parse from a NUL-terminated copy so the JSON parser can never read past the header. */
    size_t hlen = (size_t)header_len;
    char *text = malloc(hlen + 1);
    if (!text) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: header: out of memory", path);
    memcpy(text, f->map + 8, hlen);
    text[hlen] = '\0';
    const char *parse_end = NULL;
    f->header = cJSON_ParseWithLengthOpts(text, hlen + 1, &parse_end, 0);
    size_t end_pos = parse_end ? (size_t)(parse_end - text) : 0;
    int trailing_ok = 1;
    for (size_t i = end_pos; f->header && i < hlen; i++)
        if (!strchr(" \t\r\n", text[i]) || text[i] == '\0') trailing_ok = 0;
    free(text);
    if (!f->header)
        return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: header: invalid JSON near byte %zu", path,
                       end_pos);
    if (!trailing_ok)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "%s: header: unexpected bytes after the JSON object at byte %zu", path,
                       end_pos);
    if (!cJSON_IsObject(f->header))
        return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: header: not a JSON object", path);

    const uint8_t *data = f->map + 8 + hlen;
    size_t data_size = f->map_size - 8 - hlen;
    size_t n = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, f->header) n++;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: header: out of memory", path);

    cJSON_ArrayForEach(entry, f->header) {
        if (!entry->string)
            return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: header: entry without a name", path);
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (f->metadata)
                return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: __metadata__: appears twice", path);
            if (!cJSON_IsObject(entry))
                return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: __metadata__: not an object", path);
            const cJSON *kv;
            cJSON_ArrayForEach(kv, entry) {
                if (!cJSON_IsString(kv))
                    return ds_fail(msg, msg_len, DS_ECORRUPT,
                                   "%s: __metadata__: field " NAME_FMT ": not a string", path,
                                   kv->string ? kv->string : "?");
            }
            f->metadata = entry;
            continue;
        }
        ds_status st =
            parse_tensor(path, entry, data, data_size, &f->tensors[f->n_tensors], msg, msg_len);
        if (st != DS_OK) return st;
        f->n_tensors++;
    }

    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, tensor_name_cmp);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: tensor " NAME_FMT ": appears twice",
                           path, f->tensors[i].name);
    return DS_OK;
}

ds_status safetensors_open(const char *path, safetensors_file **out, char *msg, size_t msg_len) {
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ds_status st = open_error(path, errno, msg, msg_len);
        safetensors_close(f);
        return st;
    }
    struct stat sb;
    ds_status st = DS_OK;
    if (fstat(fd, &sb) != 0) {
        st = ds_fail(msg, msg_len, DS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = ds_fail(msg, msg_len, DS_EINVAL, "%s: not a regular file", path);
    } else if (sb.st_size < 8) {
        st = ds_fail(msg, msg_len, DS_ECORRUPT,
                     "%s: file of %lld bytes is too short for the 8-byte header length", path,
                     (long long)sb.st_size);
    } else {
        void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st = ds_fail(msg, msg_len, DS_EIO, "%s: cannot mmap: %s", path, strerror(errno));
        } else {
            f->map = map;
            f->map_size = (size_t)sb.st_size;
        }
    }
    close(fd);
    if (st == DS_OK) st = parse_header(f, msg, msg_len);
    if (st != DS_OK) {
        safetensors_close(f);
        return st;
    }
    *out = f;
    return DS_OK;
}

void safetensors_close(safetensors_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    cJSON_Delete(f->header);
    free(f->tensors);
    free(f->path);
    free(f);
}

size_t safetensors_n_tensors(const safetensors_file *f) { return f->n_tensors; }

const safetensors_tensor *safetensors_tensor_at(const safetensors_file *f, size_t i) {
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name) {
    safetensors_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof key, tensor_name_cmp);
}

const char *safetensors_metadata(const safetensors_file *f, const char *key) {
    const cJSON *v = f->metadata ? cJSON_GetObjectItemCaseSensitive(f->metadata, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

ds_status safetensors_to_f32(const safetensors_tensor *t, float *dst, char *msg, size_t msg_len) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case SAFETENSORS_F32:
        for (size_t i = 0; i < t->n_elements; i++, p += 4) {
            uint32_t bits =
                (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            memcpy(&dst[i], &bits, sizeof bits);
        }
        return DS_OK;
    case SAFETENSORS_F16:
        for (size_t i = 0; i < t->n_elements; i++, p += 2)
            dst[i] = ds_half_to_float((uint16_t)(p[0] | p[1] << 8));
        return DS_OK;
    case SAFETENSORS_BF16:
        for (size_t i = 0; i < t->n_elements; i++, p += 2)
            dst[i] = ds_bf16_to_float((uint16_t)(p[0] | p[1] << 8));
        return DS_OK;
    default:
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor " NAME_FMT ": dtype %s cannot be converted (F32, F16, BF16)",
                       t->path, t->name, safetensors_dtype_name(t->dtype));
    }
}

/* ---- checkpoint directories ---- */

static int plain_file_name(const char *s) {
    return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

static ds_status add_shard(safetensors_checkpoint *ck, const char *dir, const char *name, char *msg,
                           size_t msg_len) {
    char *path = path_join(dir, name);
    safetensors_file **grown = realloc(ck->shards, (ck->n_shards + 1) * sizeof *grown);
    if (!path || !grown) {
        free(path);
        if (grown) ck->shards = grown;
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", ck->path);
    }
    ck->shards = grown;
    ds_status st = safetensors_open(path, &ck->shards[ck->n_shards], msg, msg_len);
    free(path);
    if (st == DS_OK) ck->n_shards++;
    return st;
}

static ds_status open_index(safetensors_checkpoint *ck, const char *dir, char *msg,
                            size_t msg_len) {
    cJSON *root;
    ds_status st = ds_read_json(ck->path, INDEX_MAX_BYTES, &root, msg, msg_len);
    if (st != DS_OK) return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map) || !map->child)
        st = ds_fail(msg, msg_len, DS_ECORRUPT,
                     "%s: field weight_map: missing, not an object or empty", ck->path);

    /* Each distinct shard is opened once, in order of first mention. */
    const char **names = NULL;
    const cJSON *e;
    if (st == DS_OK) {
        size_t n = (size_t)cJSON_GetArraySize(map);
        names = calloc(n, sizeof *names);
        if (!names) st = ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", ck->path);
    }
    for (e = st == DS_OK ? map->child : NULL; e && st == DS_OK; e = e->next) {
        if (!cJSON_IsString(e) || !plain_file_name(e->valuestring)) {
            st = ds_fail(msg, msg_len, DS_ECORRUPT,
                         "%s: field weight_map: tensor " NAME_FMT
                         ": shard must be a file name in the checkpoint directory",
                         ck->path, e->string ? e->string : "?");
            break;
        }
        size_t s = 0;
        while (s < ck->n_shards && strcmp(names[s], e->valuestring))
            s++;
        if (s == ck->n_shards) {
            names[s] = e->valuestring;
            st = add_shard(ck, dir, e->valuestring, msg, msg_len);
        }
    }
    for (e = st == DS_OK ? map->child : NULL; e && st == DS_OK; e = e->next) {
        size_t s = 0;
        while (strcmp(names[s], e->valuestring))
            s++;
        if (!safetensors_find(ck->shards[s], e->string))
            st = ds_fail(msg, msg_len, DS_ECORRUPT,
                         "%s: field weight_map: tensor " NAME_FMT ": not found in shard %s",
                         ck->path, e->string, e->valuestring);
    }
    free(names);
    cJSON_Delete(root);
    return st;
}

ds_status safetensors_checkpoint_open(const char *dir, safetensors_checkpoint **out, char *msg,
                                      size_t msg_len) {
    *out = NULL;
    safetensors_checkpoint *ck = calloc(1, sizeof *ck);
    char *index = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    ds_status st = DS_OK;
    struct stat sb;
    if (!ck || !index || !single) {
        st = ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", dir);
    } else if (stat(index, &sb) == 0) {
        ck->path = index;
        index = NULL;
        st = open_index(ck, dir, msg, msg_len);
    } else if (stat(single, &sb) == 0) {
        ck->path = single;
        single = NULL;
        st = add_shard(ck, dir, "model.safetensors", msg, msg_len);
    } else {
        st = ds_fail(msg, msg_len, DS_ENOTFOUND,
                     "%s: neither model.safetensors nor model.safetensors.index.json exists", dir);
    }
    free(index);
    free(single);
    if (st != DS_OK) {
        safetensors_checkpoint_close(ck);
        return st;
    }
    *out = ck;
    return DS_OK;
}

void safetensors_checkpoint_close(safetensors_checkpoint *ck) {
    if (!ck) return;
    for (size_t i = 0; i < ck->n_shards; i++)
        safetensors_close(ck->shards[i]);
    free(ck->shards);
    free(ck->path);
    free(ck);
}

const char *safetensors_checkpoint_path(const safetensors_checkpoint *ck) { return ck->path; }

const safetensors_tensor *safetensors_checkpoint_find(const safetensors_checkpoint *ck,
                                                      const char *name) {
    for (size_t i = 0; i < ck->n_shards; i++) {
        const safetensors_tensor *t = safetensors_find(ck->shards[i], name);
        if (t) return t;
    }
    return NULL;
}
