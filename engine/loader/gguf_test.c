/* gguf_test — the GGUF reader and writer: a writer -> reader round trip of every metadata type and
 * tensor type, dequantization of hand-built blocks, and hostile input (truncations at every byte,
 * seeded random byte flips, bad magic/version/type/counts) that must fail with a message naming
 * the file and the field, never crash. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/file.h"
#include "common/half.h"
#include "common/status.h"
#include "engine/loader/gguf.h"
#include "engine/loader/gguf_writer.h"
#include "engine/loader/loader_test_util.h"

#define READ_MAX_BYTES (64u << 20)

static uint8_t *read_all(const char *path, size_t *size) {
    char *bytes, msg[512];
    if (ds_read_file(path, READ_MAX_BYTES, &bytes, size, msg, sizeof msg)) fail_msg("%s", msg);
    return (uint8_t *)bytes;
}

static void write_all(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
}

static uint8_t *find_bytes(uint8_t *hay, size_t size, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    return NULL;
}

/* ---- metadata round trip ---- */

/* [[1, 2], [3]] of int32, then [["ab"], []] of strings: two nested arrays, encoded by hand. */
static size_t put(uint8_t *out, size_t at, uint64_t v, size_t size) {
    memcpy(out + at, &v, size); /* little-endian host */
    return at + size;
}

static size_t nested_array_bytes(uint8_t *out) {
    size_t n = put(out, 0, GGUF_TYPE_ARRAY, 4);
    n = put(out, n, 4, 8); /* four inner arrays */
    n = put(out, n, GGUF_TYPE_INT32, 4), n = put(out, n, 2, 8);
    n = put(out, n, 1, 4), n = put(out, n, 2, 4);
    n = put(out, n, GGUF_TYPE_INT32, 4), n = put(out, n, 1, 8), n = put(out, n, 3, 4);
    n = put(out, n, GGUF_TYPE_STRING, 4), n = put(out, n, 1, 8), n = put(out, n, 2, 8);
    memcpy(out + n, "ab", 2);
    n += 2;
    n = put(out, n, GGUF_TYPE_STRING, 4), n = put(out, n, 0, 8);
    return n;
}

static void write_metadata_file(const char *path) {
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    OK(gguf_writer_add_u8(w, "t.u8", 200, M));
    OK(gguf_writer_add_i8(w, "t.i8", -100, M));
    OK(gguf_writer_add_u16(w, "t.u16", 60000, M));
    OK(gguf_writer_add_i16(w, "t.i16", -30000, M));
    OK(gguf_writer_add_u32(w, "t.u32", 4000000000u, M));
    OK(gguf_writer_add_i32(w, "t.i32", -5, M));
    OK(gguf_writer_add_u64(w, "t.u64", 1ull << 40, M));
    OK(gguf_writer_add_i64(w, "t.i64", -(1ll << 40), M));
    OK(gguf_writer_add_f32(w, "t.f32", 0.15625f, M));
    OK(gguf_writer_add_f64(w, "t.f64", 1e-300, M));
    OK(gguf_writer_add_bool(w, "t.bool", 1, M));
    OK(gguf_writer_add_str(w, "t.str", "héllo wörld", M));
    OK(gguf_writer_add_str(w, "t.empty", "", M));
    float f32s[] = {1.5f, -2.25f, 1e10f};
    int32_t i32s[] = {-7, 0, 2147483647};
    uint8_t u8s[] = {1, 2, 255};
    OK(gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, f32s, 3, M));
    OK(gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, i32s, 3, M));
    OK(gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, u8s, 3, M));
    OK(gguf_writer_add_arr(w, "a.empty", GGUF_TYPE_UINT64, NULL, 0, M));
    const char *strs[] = {"zero", "", "t\0wo"};
    size_t lens[] = {4, 0, 4};
    OK(gguf_writer_add_arr_str(w, "a.str", strs, lens, 3, M));
    uint8_t nested[256];
    OK(gguf_writer_add_raw(w, "a.nested", GGUF_TYPE_ARRAY, nested, nested_array_bytes(nested), M));
    char m[256];
    assert_int_equal(gguf_writer_add_u8(w, "t.u8", 1, m, sizeof m), DS_EINVAL); /* duplicate */
    assert_contains(m, "t.u8");
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
}

static void test_metadata_round_trip(void **state) {
    (void)state;
    const char *path = tmp_file("meta.gguf");
    write_metadata_file(path);
    gguf_file *f;
    OK(gguf_open(path, &f, M));
    assert_int_equal(gguf_version(f), 3);
    assert_int_equal(gguf_n_kv(f), 19);
    assert_int_equal(gguf_n_tensors(f), 0);
    assert_int_equal(gguf_alignment(f), 32);
    assert_string_equal(gguf_kv_key(f, 0), "t.u8");
    assert_int_equal(gguf_kv_type(f, gguf_find_key(f, "t.i16")), GGUF_TYPE_INT16);
    assert_int_equal(gguf_find_key(f, "nope"), -1);

    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    int b;
    OK(gguf_get_u32(f, "t.u8", &u32, M));
    assert_int_equal(u32, 200);
    OK(gguf_get_i32(f, "t.i8", &i32, M));
    assert_int_equal(i32, -100);
    OK(gguf_get_u32(f, "t.u16", &u32, M));
    assert_int_equal(u32, 60000);
    OK(gguf_get_i32(f, "t.i16", &i32, M));
    assert_int_equal(i32, -30000);
    OK(gguf_get_u32(f, "t.u32", &u32, M));
    assert_int_equal(u32, 4000000000u);
    OK(gguf_get_i32(f, "t.i32", &i32, M));
    assert_int_equal(i32, -5);
    OK(gguf_get_u64(f, "t.u64", &u64, M));
    assert_true(u64 == 1ull << 40);
    OK(gguf_get_f32(f, "t.f32", &f32, M));
    assert_true(f32 == 0.15625f);
    OK(gguf_get_f32(f, "t.f64", &f32, M));
    assert_true(f32 == (float)1e-300);
    OK(gguf_get_bool(f, "t.bool", &b, M));
    assert_int_equal(b, 1);
    const char *s;
    size_t len;
    OK(gguf_get_str(f, "t.str", &s, &len, M));
    assert_string_equal(s, "héllo wörld");
    assert_int_equal(len, strlen("héllo wörld"));
    OK(gguf_get_str(f, "t.empty", &s, &len, M));
    assert_string_equal(s, "");

    /* Conversions that do not fit, wrong types, absent keys: each named in the message. */
    char m[256];
    assert_int_equal(gguf_get_u32(f, "t.i32", &u32, m, sizeof m), DS_ERANGE);
    assert_contains(m, "t.i32");
    assert_int_equal(gguf_get_i32(f, "t.u32", &i32, m, sizeof m), DS_ERANGE);
    assert_int_equal(gguf_get_u32(f, "t.u64", &u32, m, sizeof m), DS_ERANGE);
    assert_int_equal(gguf_get_u32(f, "t.str", &u32, m, sizeof m), DS_EINVAL);
    assert_contains(m, path);
    assert_contains(m, "key t.str: expected uint32, got string");
    assert_int_equal(gguf_get_str(f, "t.u8", &s, NULL, m, sizeof m), DS_EINVAL);
    assert_int_equal(gguf_get_f32(f, "t.bool", &f32, m, sizeof m), DS_EINVAL);
    assert_int_equal(gguf_get_bool(f, "t.u8", &b, m, sizeof m), DS_EINVAL);
    assert_int_equal(gguf_get_u32(f, "missing.key", &u32, m, sizeof m), DS_ENOTFOUND);
    assert_contains(m, "missing.key");

    /* Arrays. */
    gguf_type et;
    uint64_t n;
    OK(gguf_get_arr_info(f, "a.f32", &et, &n, M));
    assert_int_equal(et, GGUF_TYPE_FLOAT32);
    assert_int_equal(n, 3);
    float fv[3];
    OK(gguf_get_arr_f32(f, "a.f32", fv, 3, M));
    assert_true(fv[0] == 1.5f && fv[1] == -2.25f && fv[2] == 1e10f);
    int32_t iv[3];
    OK(gguf_get_arr_i32(f, "a.i32", iv, 3, M));
    assert_true(iv[0] == -7 && iv[1] == 0 && iv[2] == 2147483647);
    OK(gguf_get_arr_i32(f, "a.u8", iv, 3, M));
    assert_true(iv[0] == 1 && iv[2] == 255);
    OK(gguf_get_arr_f32(f, "a.i32", fv, 3, M));
    assert_true(fv[0] == -7.0f);
    assert_int_equal(gguf_get_arr_i32(f, "a.f32", iv, 3, m, sizeof m), DS_ERANGE); /* 1.5 */
    assert_int_equal(gguf_get_arr_f32(f, "a.f32", fv, 2, m, sizeof m), DS_EINVAL); /* length */
    assert_contains(m, "a.f32");
    assert_int_equal(gguf_get_arr_f32(f, "a.str", fv, 3, m, sizeof m), DS_EINVAL);
    OK(gguf_get_arr_info(f, "a.empty", &et, &n, M));
    assert_int_equal(et, GGUF_TYPE_UINT64);
    assert_int_equal(n, 0);

    gguf_str gs;
    OK(gguf_get_arr_str(f, "a.str", 0, &gs, M));
    assert_int_equal(gs.len, 4);
    assert_memory_equal(gs.ptr, "zero", 4);
    OK(gguf_get_arr_str(f, "a.str", 1, &gs, M));
    assert_int_equal(gs.len, 0);
    OK(gguf_get_arr_str(f, "a.str", 2, &gs, M));
    assert_int_equal(gs.len, 4);
    assert_memory_equal(gs.ptr, "t\0wo", 4);
    assert_int_equal(gguf_get_arr_str(f, "a.str", 3, &gs, m, sizeof m), DS_ERANGE);
    assert_int_equal(gguf_get_arr_str(f, "a.f32", 0, &gs, m, sizeof m), DS_EINVAL);

    const gguf_array *a;
    OK(gguf_get_arr(f, "a.nested", &a, M));
    assert_int_equal(a->elem_type, GGUF_TYPE_ARRAY);
    assert_int_equal(a->n, 4);
    assert_int_equal(a->arrays[0].elem_type, GGUF_TYPE_INT32);
    assert_int_equal(a->arrays[0].n, 2);
    assert_int_equal(gguf_array_i64(&a->arrays[0], 1), 2);
    assert_int_equal(gguf_array_i64(&a->arrays[1], 0), 3);
    assert_int_equal(a->arrays[2].strs[0].len, 2);
    assert_memory_equal(a->arrays[2].strs[0].ptr, "ab", 2);
    assert_int_equal(a->arrays[3].n, 0);
    assert_ptr_equal(gguf_kv_array(f, gguf_find_key(f, "a.nested")), a);
    assert_null(gguf_kv_array(f, gguf_find_key(f, "t.u8")));
    gguf_close(f);
}

/* ---- tensor round trip ---- */

static float test_value(int64_t i) { return sinf((float)i * 0.37f) * (1.0f + (float)(i % 7)); }

static void test_tensor_round_trip(void **state) {
    (void)state;
    const gguf_ggml_type types[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16,
                                    GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1};
    const int n_types = 6;
    const int64_t ne[3] = {64, 3, 2};
    const int64_t n = 64 * 3 * 2;
    float values[64 * 3 * 2], out[64 * 3 * 2];
    for (int64_t i = 0; i < n; i++)
        values[i] = test_value(i);
    for (int align = 0; align < 2; align++) {
        const char *path = tmp_file("tensors.gguf");
        gguf_writer *w = gguf_writer_create();
        if (align) OK(gguf_writer_add_u32(w, "general.alignment", 256, M));
        for (int t = 0; t < n_types; t++) {
            char name[32];
            snprintf(name, sizeof name, "t.%s", gguf_ggml_type_name(types[t]));
            OK(gguf_writer_add_tensor(w, name, types[t], 3, ne, values, M));
        }
        OK(gguf_writer_write(w, path, M));
        gguf_writer_destroy(w);

        gguf_file *f;
        OK(gguf_open(path, &f, M));
        assert_int_equal(gguf_alignment(f), align ? 256 : 32);
        assert_int_equal(gguf_data_offset(f) % gguf_alignment(f), 0);
        assert_int_equal(gguf_n_tensors(f), n_types);
        for (int t = 0; t < n_types; t++) {
            char name[32];
            snprintf(name, sizeof name, "t.%s", gguf_ggml_type_name(types[t]));
            const gguf_tensor *ti = gguf_find_tensor(f, name);
            assert_non_null(ti);
            assert_ptr_equal(ti, gguf_tensor_at(f, t));
            assert_string_equal(ti->name, name);
            assert_int_equal(ti->type, types[t]);
            assert_int_equal(ti->n_dims, 3);
            assert_true(ti->ne[0] == 64 && ti->ne[1] == 3 && ti->ne[2] == 2 && ti->ne[3] == 1);
            assert_int_equal(ti->n_elements, n);
            assert_int_equal(ti->n_bytes,
                             n / gguf_ggml_block_size(types[t]) * gguf_ggml_block_bytes(types[t]));
            assert_int_equal(ti->offset % gguf_alignment(f), 0);
            assert_int_equal(gguf_dequantize(ti->type, ti->data, out, n), DS_OK);
            for (int64_t i = 0; i < n; i++) {
                float want = values[i], got = out[i];
                switch (types[t]) {
                case GGML_TYPE_F32: assert_true(got == want); break;
                case GGML_TYPE_F16: assert_true(got == ds_round_half(want)); break;
                case GGML_TYPE_BF16: assert_true(fabsf(got - want) <= fabsf(want) / 256.0f); break;
                default: {
                    /* Error bound of one block: half a quantization step, plus fp16 rounding of
                     * the scale (and of the minimum for Q4_1). */
                    const float *blk = values + (i / 32) * 32;
                    float lo = blk[0], hi = blk[0];
                    for (int j = 1; j < 32; j++) {
                        lo = fminf(lo, blk[j]);
                        hi = fmaxf(hi, blk[j]);
                    }
                    float amax = fmaxf(fabsf(lo), fabsf(hi));
                    float step = types[t] == GGML_TYPE_Q8_0   ? amax / 127.0f
                                 : types[t] == GGML_TYPE_Q4_0 ? amax / 8.0f
                                                              : (hi - lo) / 15.0f;
                    float bound = step * 0.5f + amax * 2e-3f + 1e-6f;
                    if (types[t] == GGML_TYPE_Q4_0) bound = step + amax * 2e-3f; /* 16 levels */
                    if (fabsf(got - want) > bound)
                        fail_msg("%s[%lld]: got %g want %g (bound %g)", name, (long long)i, got,
                                 want, bound);
                }
                }
            }
        }
        assert_null(gguf_find_tensor(f, "t.missing"));
        gguf_close(f);
    }
}

/* ---- dequantization of hand-built blocks ---- */

static void put_half(uint8_t *p, uint16_t h) { memcpy(p, &h, 2); }

static void test_dequant_blocks(void **state) {
    (void)state;
    float out[64];
    uint8_t blk[2 * 34];

    /* Q8_0: d = 0.5 (fp16 0x3800), q = j - 16 in block 0; d = -2 (0xc000), q = 127/-128 in 1. */
    put_half(blk, 0x3800);
    for (int j = 0; j < 32; j++)
        blk[2 + j] = (uint8_t)(int8_t)(j - 16);
    put_half(blk + 34, 0xc000);
    for (int j = 0; j < 32; j++)
        blk[36 + j] = (uint8_t)(int8_t)(j % 2 ? 127 : -128);
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q8_0, blk, out, 64), DS_OK);
    for (int j = 0; j < 32; j++)
        assert_true(out[j] == 0.5f * (float)(j - 16));
    for (int j = 0; j < 32; j++)
        assert_true(out[32 + j] == (j % 2 ? -254.0f : 256.0f));

    /* Q4_0: d = 2 (0x4000); byte j holds value j (low nibble j & 15) and value j + 16 (high
     * nibble 15 - j): x = (q - 8) * d. */
    put_half(blk, 0x4000);
    for (int j = 0; j < 16; j++)
        blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q4_0, blk, out, 32), DS_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 2.0f * (float)(j - 8));
        assert_true(out[j + 16] == 2.0f * (float)(7 - j));
    }

    /* Q4_1: d = 0.25 (0x3400), m = -1 (0xbc00): x = q * d + m. */
    put_half(blk, 0x3400);
    put_half(blk + 2, 0xbc00);
    for (int j = 0; j < 16; j++)
        blk[4 + j] = (uint8_t)(((j * 3) & 15) | ((j ^ 5) << 4));
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q4_1, blk, out, 32), DS_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.25f * (float)((j * 3) & 15) - 1.0f);
        assert_true(out[j + 16] == 0.25f * (float)(j ^ 5) - 1.0f);
    }

    /* F16 and BF16. */
    const uint16_t halves[] = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000};
    const float half_vals[] = {1.0f, -2.0f, 0.333251953125f, 65504.0f, 5.960464477539063e-08f,
                               -0.0f};
    assert_int_equal(gguf_dequantize(GGML_TYPE_F16, halves, out, 6), DS_OK);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == half_vals[i]);
    const uint16_t bf[] = {0x3f80, 0xc040, 0x4049, 0x0000};
    const float bf_vals[] = {1.0f, -3.0f, 3.140625f, 0.0f};
    assert_int_equal(gguf_dequantize(GGML_TYPE_BF16, bf, out, 4), DS_OK);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == bf_vals[i]);

    /* The writer's quantizers produce these exact blocks from their own output. */
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = 0.5f * (float)(j - 16);
    uint8_t q[34];
    gguf_quantize_q8_0(x, q, 32);
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q8_0, q, out, 32), DS_OK);
    for (int j = 0; j < 32; j++)
        assert_float_equal(out[j], x[j], 8.0f / 127.0f * 0.5f + 1e-3f);
    for (int j = 0; j < 32; j++)
        x[j] = 0.25f * (float)(j % 16) - 1.0f; /* exactly 16 levels */
    gguf_quantize_q4_1(x, q, 32);
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q4_1, q, out, 32), DS_OK);
    for (int j = 0; j < 32; j++)
        assert_true(out[j] == x[j]);

    assert_int_equal(gguf_dequantize(GGML_TYPE_Q4_K, blk, out, 256), DS_EUNSUPPORTED);
    assert_int_equal(gguf_dequantize((gguf_ggml_type)99, blk, out, 32), DS_EUNSUPPORTED);
    assert_int_equal(gguf_dequantize(GGML_TYPE_Q8_0, blk, out, 31), DS_EINVAL);
}

/* ---- hostile input ---- */

/* A small file with metadata of every shape and three tensors; the last tensor's size is a
 * multiple of the alignment so every strict prefix of the file is truncated. */
static void write_sample(const char *path) {
    gguf_writer *w = gguf_writer_create();
    OK(gguf_writer_add_str(w, "general.architecture", "llama", M));
    OK(gguf_writer_add_u32(w, "llama.block_count", 2, M));
    OK(gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f, M));
    const char *toks[] = {"a", "bc", "<|im_end|>"};
    OK(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3, M));
    int32_t types[] = {1, 1, 3};
    OK(gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 3, M));
    uint8_t nested[256];
    OK(gguf_writer_add_raw(w, "x.nested", GGUF_TYPE_ARRAY, nested, nested_array_bytes(nested), M));
    float v[128];
    for (int i = 0; i < 128; i++)
        v[i] = test_value(i);
    int64_t ne_a[2] = {32, 2}, ne_b[1] = {64}, ne_c[2] = {64, 2};
    OK(gguf_writer_add_tensor(w, "a.weight", GGML_TYPE_Q4_1, 2, ne_a, v, M));
    OK(gguf_writer_add_tensor(w, "b.weight", GGML_TYPE_F16, 1, ne_b, v, M));
    OK(gguf_writer_add_tensor(w, "c.weight", GGML_TYPE_F32, 2, ne_c, v, M)); /* 512 bytes */
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
}

static void walk_array(const gguf_array *a) {
    for (uint64_t i = 0; i < a->n; i++) {
        if (a->elem_type == GGUF_TYPE_ARRAY)
            walk_array(&a->arrays[i]);
        else if (a->elem_type == GGUF_TYPE_STRING) {
            volatile char c = a->strs[i].len ? a->strs[i].ptr[a->strs[i].len - 1] : 0;
            (void)c;
        } else {
            volatile double d = gguf_array_f64(a, i);
            (void)d;
        }
    }
}

/* Touches everything a parse exposes, so ASan sees any out-of-bounds view. */
static void walk_file(const gguf_file *f) {
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_kv_key(f, i);
        assert_int_equal(gguf_find_key(f, key), i);
        const gguf_array *a = gguf_kv_array(f, i);
        if (a) walk_array(a);
        const char *s;
        char m[256];
        if (gguf_get_str(f, key, &s, NULL, m, sizeof m) == DS_OK) assert_non_null(s);
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        assert_ptr_equal(gguf_find_tensor(f, t->name), t);
        if (t->n_elements <= 4096) {
            float out[4096];
            gguf_dequantize(t->type, t->data, out, t->n_elements);
        }
    }
}

static void test_truncated_everywhere(void **state) {
    (void)state;
    const char *src = tmp_file("sample.gguf");
    write_sample(src);
    size_t size;
    uint8_t *bytes = read_all(src, &size);
    char path[600];
    snprintf(path, sizeof path, "%s.cut", src);
    for (size_t cut = 0; cut < size; cut++) {
        write_all(path, bytes, cut);
        gguf_file *f = NULL;
        char m[512] = "";
        ds_status st = gguf_open(path, &f, m, sizeof m);
        if (st == DS_OK) fail_msg("a file cut at %zu of %zu bytes parsed", cut, size);
        assert_null(f);
        assert_int_equal(st, DS_ECORRUPT);
        assert_contains(m, path);
    }
    /* A cut inside a key's value names that key; a cut inside the data names the tensor. */
    const char *key = "tokenizer.ggml.tokens";
    size_t in_tokens = (size_t)(find_bytes(bytes, size, key) - bytes) + strlen(key) + 4 + 4 + 8 + 3;
    write_all(path, bytes, in_tokens);
    gguf_file *f;
    char m[512];
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "key tokenizer.ggml.tokens");
    write_all(path, bytes, size - 1);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "tensor c.weight");
    assert_contains(m, "past the end");
    OK(gguf_open(src, &f, M)); /* the uncut file is fine */
    walk_file(f);
    gguf_close(f);
    free(bytes);
}

static void test_random_byte_flips(void **state) {
    (void)state;
    const char *src = tmp_file("flip-src.gguf");
    write_sample(src);
    size_t size;
    uint8_t *bytes = read_all(src, &size), *copy = malloc(size);
    char path[600];
    snprintf(path, sizeof path, "%s.flip", src);
    uint64_t rng = 12345;
    int n_ok = 0, n_err = 0;
    for (int iter = 0; iter < 600; iter++) {
        memcpy(copy, bytes, size);
        int n_flips = 1 + iter % 4;
        for (int k = 0; k < n_flips; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = rng >> 33;
            /* Mostly the header and directory (where flips change the parse), some data. */
            size_t pos = (r % 8) ? (size_t)(r / 8 % 400) : (size_t)(r / 8 % size);
            copy[pos] ^= (uint8_t)(1u << (r / 3200 % 8)) | (iter % 5 == 0 ? 0xff : 0);
        }
        write_all(path, copy, size);
        gguf_file *f = NULL;
        char m[512] = "";
        ds_status st = gguf_open(path, &f, m, sizeof m);
        if (st == DS_OK) {
            n_ok++;
            walk_file(f);
            gguf_close(f);
        } else {
            n_err++;
            assert_null(f);
            assert_contains(m, path);
        }
    }
    assert_true(n_err > 100); /* the flips did hit the structure */
    assert_true(n_ok > 0);
    free(bytes);
    free(copy);
}

static void patch_u32(uint8_t *p, size_t at, uint32_t v) { memcpy(p + at, &v, 4); }
static void patch_u64(uint8_t *p, size_t at, uint64_t v) { memcpy(p + at, &v, 8); }

static void expect_error(const char *path, const uint8_t *bytes, size_t size, ds_status want,
                         const char *needle) {
    write_all(path, bytes, size);
    gguf_file *f = NULL;
    char m[512] = "";
    ds_status st = gguf_open(path, &f, m, sizeof m);
    if (st != want) fail_msg("expected %s, got %s: %s", ds_status_str(want), ds_status_str(st), m);
    assert_null(f);
    assert_contains(m, path);
    assert_contains(m, needle);
}

static void test_bad_headers(void **state) {
    (void)state;
    const char *src = tmp_file("hdr-src.gguf");
    write_sample(src);
    size_t size;
    uint8_t *bytes = read_all(src, &size), *copy = malloc(size);
    char path[600];
    snprintf(path, sizeof path, "%s.bad", src);

    memcpy(copy, bytes, size);
    copy[0] = 'X';
    expect_error(path, copy, size, DS_ECORRUPT, "bad magic");
    memcpy(copy, bytes, size);
    patch_u32(copy, 4, 1);
    expect_error(path, copy, size, DS_EUNSUPPORTED, "version 1");
    patch_u32(copy, 4, 4);
    expect_error(path, copy, size, DS_EUNSUPPORTED, "version 4");
    memcpy(copy, bytes, size);
    patch_u32(copy, 4, 2); /* v2 has the same layout */
    write_all(path, copy, size);
    gguf_file *f;
    OK(gguf_open(path, &f, M));
    assert_int_equal(gguf_version(f), 2);
    gguf_close(f);

    memcpy(copy, bytes, size);
    patch_u64(copy, 16, 1ull << 60); /* n_kv */
    expect_error(path, copy, size, DS_ECORRUPT, "metadata count");
    memcpy(copy, bytes, size);
    patch_u64(copy, 8, UINT64_MAX); /* n_tensors */
    expect_error(path, copy, size, DS_ECORRUPT, "tensor count");
    memcpy(copy, bytes, size);
    patch_u64(copy, 24, 1ull << 62); /* first key's length */
    expect_error(path, copy, size, DS_ECORRUPT, "runs past the end");

    /* The token array's count (after key, type, element type) made absurd. */
    const char *key = "tokenizer.ggml.tokens";
    uint8_t *at = find_bytes(bytes, size, key);
    assert_non_null(at);
    size_t count_at = (size_t)(at - bytes) + strlen(key) + 4 + 4;
    memcpy(copy, bytes, size);
    patch_u64(copy, count_at, 1ull << 59);
    expect_error(path, copy, size, DS_ECORRUPT, "key tokenizer.ggml.tokens");

    /* Unknown metadata value type. */
    memcpy(copy, bytes, size);
    patch_u32(copy, count_at - 8, 77);
    expect_error(path, copy, size, DS_ECORRUPT, "unknown value type 77");

    /* Empty and header-only files. */
    expect_error(path, bytes, 0, DS_ECORRUPT, "truncated");
    expect_error(path, bytes, 10, DS_ECORRUPT, "header");

    /* Missing file and a directory. */
    char m[512];
    f = (gguf_file *)1;
    assert_int_equal(gguf_open("/nonexistent/model.gguf", &f, m, sizeof m), DS_ENOTFOUND);
    assert_null(f);
    assert_contains(m, "/nonexistent/model.gguf");
    assert_int_equal(gguf_open("/", &f, m, sizeof m), DS_EIO);
    free(bytes);
    free(copy);
}

static void test_bad_tensors(void **state) {
    (void)state;
    const char *path = tmp_file("bad-tensor.gguf");
    float v[64] = {0};
    int64_t ne[2] = {32, 2};
    uint8_t raw[512] = {0};
    char m[512];
    gguf_file *f;

    /* Unknown type id. */
    gguf_writer *w = gguf_writer_create();
    OK(gguf_writer_add_tensor(w, "fine.weight", GGML_TYPE_F32, 2, ne, v, M));
    OK(gguf_writer_add_tensor_raw(w, "odd.weight", 77, 2, ne, raw, 64, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_EUNSUPPORTED);
    assert_contains(m, path);
    assert_contains(m, "tensor odd.weight: unknown tensor type 77");

    /* Data that runs past the end of the file: declares 64 f32 but stores 32 bytes. */
    w = gguf_writer_create();
    OK(gguf_writer_add_tensor(w, "fine.weight", GGML_TYPE_F32, 2, ne, v, M));
    OK(gguf_writer_add_tensor_raw(w, "short.weight", GGML_TYPE_F32, 2, ne, raw, 32, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "tensor short.weight");
    assert_contains(m, "past the end of the file");

    /* A row length that is not a whole number of blocks. */
    int64_t ne_odd[2] = {33, 1};
    w = gguf_writer_create();
    OK(gguf_writer_add_tensor_raw(w, "ragged.weight", GGML_TYPE_Q8_0, 2, ne_odd, raw, 68, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "tensor ragged.weight: row length 33");

    /* Dimensions whose product overflows int64. */
    int64_t ne_big[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    w = gguf_writer_create();
    OK(gguf_writer_add_tensor_raw(w, "huge.weight", GGML_TYPE_F32, 4, ne_big, raw, 32, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "tensor huge.weight");

    /* Bad alignment key. */
    w = gguf_writer_create();
    OK(gguf_writer_add_u32(w, "general.alignment", 48, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "general.alignment");

    /* Arrays nested deeper than the parser allows. */
    uint8_t deep[40 * 12];
    size_t n = 0;
    for (int d = 0; d < 40; d++) {
        uint32_t t = d < 39 ? GGUF_TYPE_ARRAY : GGUF_TYPE_INT32;
        uint64_t c = d < 39 ? 1 : 0;
        memcpy(deep + n, &t, 4);
        memcpy(deep + n + 4, &c, 8);
        n += 12;
    }
    w = gguf_writer_create();
    OK(gguf_writer_add_raw(w, "deep", GGUF_TYPE_ARRAY, deep, n, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_EUNSUPPORTED);
    assert_contains(m, "key deep");

    /* Duplicate tensor names (the writer refuses them, so patch a name). */
    w = gguf_writer_create();
    OK(gguf_writer_add_tensor(w, "twin.a", GGML_TYPE_F32, 2, ne, v, M));
    OK(gguf_writer_add_tensor(w, "twin.b", GGML_TYPE_F32, 2, ne, v, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
    size_t size;
    uint8_t *bytes = read_all(path, &size);
    uint8_t *b = find_bytes(bytes, size, "twin.b");
    b[5] = 'a';
    write_all(path, bytes, size);
    free(bytes);
    assert_int_equal(gguf_open(path, &f, m, sizeof m), DS_ECORRUPT);
    assert_contains(m, "tensor twin.a: duplicate");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_round_trip), cmocka_unit_test(test_tensor_round_trip),
        cmocka_unit_test(test_dequant_blocks),      cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_random_byte_flips),   cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
