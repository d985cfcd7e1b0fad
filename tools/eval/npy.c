/* tools/eval/npy.c — a strict .npy reader: only the dtypes and layouts the evaluator needs. */
#include "tools/eval/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"

/* Finds 'key': in the header dict and returns a pointer just past the colon and spaces. */
static const char *dict_value(const char *header, const char *key) {
    const char *p = strstr(header, key);
    if (!p) return NULL;
    p = strchr(p + strlen(key), ':');
    if (!p) return NULL;
    for (p++; *p == ' '; p++) {
    }
    return p;
}

ds_status npy_read(const char *path, npy_array *out, char *msg, size_t msg_len) {
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: cannot open", path);
    unsigned char pre[12];
    ds_status st = DS_OK;
    char *header = NULL;
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: not a .npy file (bad magic)", path);
        goto done;
    }
    size_t header_len;
    if (pre[6] == 1) {
        header_len = pre[8] | (size_t)pre[9] << 8;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: truncated header", path);
            goto done;
        }
        header_len = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    } else {
        st = ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: npy version %d", path, pre[6]);
        goto done;
    }
    if (header_len > (1u << 20)) {
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: header length %zu", path, header_len);
        goto done;
    }
    header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, fp) != header_len) {
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: truncated header", path);
        goto done;
    }
    const char *descr = dict_value(header, "'descr'");
    const char *order = dict_value(header, "'fortran_order'");
    const char *shape = dict_value(header, "'shape'");
    if (!descr || !order || !shape || *shape != '(') {
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: header lacks descr/fortran_order/shape", path);
        goto done;
    }
    int elem;
    if (!strncmp(descr, "'<f4'", 5)) {
        elem = 4;
    } else if (!strncmp(descr, "'<f2'", 5)) {
        elem = 2;
    } else {
        st = ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: dtype %.6s: expected '<f4' or '<f2'", path,
                     descr);
        goto done;
    }
    if (strncmp(order, "False", 5)) {
        st = ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: fortran_order arrays are not supported",
                     path);
        goto done;
    }
    out->n_elements = 1;
    for (const char *p = shape + 1; *p && *p != ')';) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')') break;
        char *end;
        long long dim = strtoll(p, &end, 10);
        if (end == p || dim < 0 || out->n_dims == NPY_MAX_DIMS || dim > (1ll << 40)) {
            st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: bad shape %.40s", path, shape);
            goto done;
        }
        out->shape[out->n_dims++] = dim;
        out->n_elements *= dim;
        if (out->n_elements > (1ll << 34)) {
            st = ds_fail(msg, msg_len, DS_ERANGE, "%s: array too large", path);
            goto done;
        }
        p = end;
    }
    out->data = malloc((size_t)(out->n_elements ? out->n_elements : 1) * sizeof(float));
    if (!out->data) {
        st = ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (elem == 4) {
        if (fread(out->data, 4, (size_t)out->n_elements, fp) != (size_t)out->n_elements)
            st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: truncated data", path);
    } else {
        uint16_t *h = (uint16_t *)out->data; /* widen in place from the back */
        if (fread(h, 2, (size_t)out->n_elements, fp) != (size_t)out->n_elements)
            st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: truncated data", path);
        for (int64_t i = out->n_elements - 1; st == DS_OK && i >= 0; i--)
            out->data[i] = ds_half_to_float(h[i]);
    }
done:
    free(header);
    fclose(fp);
    if (st != DS_OK) npy_free(out);
    return st;
}

void npy_free(npy_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
