/* kernels/qmatmul.c — Q8_0 / Q4_0 / Q4_1 / fp32 matmul for the CPU backend: weight quantization
 * (qm_create) or a file's blocks (qm_create_blocks), the double-precision reference, and the fast
 * path: activations quantized once per call, then R x T register tiles (R weight rows x T tokens)
 * of 32-wide integer block dot products, one function per type and ISA chosen at run time so the
 * binary still runs on any x86-64 (or non-x86). */
#include "kernels/qmatmul.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "kernels/simd_x86.h"

#define QK QM_Q8_0_BLOCK
/* Software prefetch distance along the weight stream, in bytes. Without it a decode GEMV on a
 * matrix that is not in cache ran at ~6 GB/s (the hardware prefetcher keeps too few lines in
 * flight behind ~10 instructions per 34-byte block); 8 KiB ahead gave ~22 GB/s on one core. */
#ifndef QM_PREFETCH
#define QM_PREFETCH 8192
#endif

const char *qm_type_name(qm_type type) {
    switch (type) {
    case QM_F32: return "f32";
    case QM_Q8_0: return "q8_0";
    case QM_Q4_0: return "q4_0";
    case QM_Q4_1: return "q4_1";
    }
    return "?";
}

size_t qm_bytes(qm_type type, int rows, int cols) {
    if (rows < 1 || cols < 1) return 0;
    switch (type) {
    case QM_F32: return (size_t)rows * cols * sizeof(float);
    case QM_Q8_0: return cols % QK ? 0 : (size_t)rows * (cols / QK) * sizeof(qm_block_q8_0);
    case QM_Q4_0: return cols % QK ? 0 : (size_t)rows * (cols / QK) * sizeof(qm_block_q4_0);
    case QM_Q4_1: return cols % QK ? 0 : (size_t)rows * (cols / QK) * sizeof(qm_block_q4_1);
    }
    return 0;
}

/* ---- Quantization ------------------------------------------------------------------------ */

/* As ggml's quantize_row_q8_0_ref, except that q = round(x / d) divides by the fp16-rounded d
 * that is stored, so |x - d q| <= d / 2 holds exactly (ggml divides by the unrounded d; the bytes
 * differ only where x / d sits within ~2^-11 of a rounding tie). */
void qm_quantize_row_q8_0(qm_block_q8_0 *dst, const float *src, int cols) {
    DS_ASSERT(cols % QK == 0);
    for (int b = 0; b < cols / QK; b++) {
        const float *x = src + (size_t)b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        uint16_t dh = ds_float_to_half(amax / 127.0f);
        float d = ds_half_to_float(dh);
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = dh;
        for (int j = 0; j < QK; j++) {
            float q = roundf(x[j] * id);
            dst[b].qs[j] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
        }
    }
}

ds_status qm_create(qm_matrix *m, qm_type type, const float *src, int rows, int cols, char *msg,
                    size_t msg_len) {
    memset(m, 0, sizeof *m);
    if (type != QM_F32 && type != QM_Q8_0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "qm_create: type=%d: expected f32 or q8_0 (q4 from qm_create_blocks)",
                       (int)type);
    if (rows < 1 || cols < 1 || (type == QM_Q8_0 && cols % QK))
        return ds_fail(
            msg, msg_len, DS_EINVAL, "qm_create: %s matrix %dx%d: rows and cols must be >= 1%s",
            qm_type_name(type), rows, cols, type == QM_Q8_0 ? " and cols a multiple of 32" : "");
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        if (!isfinite(src[i]))
            return ds_fail(msg, msg_len, DS_ERANGE, "qm_create: %dx%d matrix: [%zu][%zu] = %g",
                           rows, cols, i / (size_t)cols, i % (size_t)cols, (double)src[i]);
    size_t bytes = qm_bytes(type, rows, cols);
    void *data = malloc(bytes);
    if (!data)
        return ds_fail(msg, msg_len, DS_ENOMEM, "qm_create: %s matrix %dx%d: %zu bytes",
                       qm_type_name(type), rows, cols, bytes);
    if (type == QM_F32) {
        memcpy(data, src, bytes);
    } else {
        for (int r = 0; r < rows; r++) {
            const float *row = src + (size_t)r * cols;
            for (int c = 0; c < cols; c += QK) {
                float amax = 0.0f;
                for (int j = 0; j < QK; j++)
                    amax = fmaxf(amax, fabsf(row[c + j]));
                if (amax / 127.0f > 65504.0f) {
                    free(data);
                    return ds_fail(msg, msg_len, DS_ERANGE,
                                   "qm_create: q8_0 matrix %dx%d: row %d, block at col %d: "
                                   "max |x| = %g overflows the fp16 scale",
                                   rows, cols, r, c, (double)amax);
                }
            }
            qm_quantize_row_q8_0((qm_block_q8_0 *)data + (size_t)r * (cols / QK), row, cols);
        }
    }
    m->type = type;
    m->rows = rows;
    m->cols = cols;
    m->data = data;
    return DS_OK;
}

ds_status qm_create_blocks(qm_matrix *m, qm_type type, const void *blocks, int rows, int cols,
                           char *msg, size_t msg_len) {
    memset(m, 0, sizeof *m);
    if (type != QM_Q4_0 && type != QM_Q4_1)
        return ds_fail(msg, msg_len, DS_EINVAL, "qm_create_blocks: type=%d: expected q4_0 or q4_1",
                       (int)type);
    if (rows < 1 || cols < 1 || cols % QK)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "qm_create_blocks: %s matrix %dx%d: rows and cols must be >= 1 and cols a "
                       "multiple of 32",
                       qm_type_name(type), rows, cols);
    const size_t block_bytes = qm_bytes(type, 1, QK), nb = (size_t)cols / QK;
    for (size_t b = 0; b < (size_t)rows * nb; b++) {
        const uint16_t *h = (const uint16_t *)((const char *)blocks + b * block_bytes);
        for (int i = 0; i < (type == QM_Q4_1 ? 2 : 1); i++)
            if (!isfinite(ds_half_to_float(h[i])))
                return ds_fail(msg, msg_len, DS_ERANGE,
                               "qm_create_blocks: %s matrix %dx%d: row %zu, block at col %zu: %s "
                               "is not finite",
                               qm_type_name(type), rows, cols, b / nb, b % nb * QK,
                               i ? "the minimum" : "the scale");
    }
    size_t bytes = qm_bytes(type, rows, cols);
    void *data = malloc(bytes);
    if (!data)
        return ds_fail(msg, msg_len, DS_ENOMEM, "qm_create_blocks: %s matrix %dx%d: %zu bytes",
                       qm_type_name(type), rows, cols, bytes);
    memcpy(data, blocks, bytes);
    *m = (qm_matrix){.type = type, .rows = rows, .cols = cols, .data = data};
    return DS_OK;
}

void qm_destroy(qm_matrix *m) {
    if (!m) return;
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* Block b of row `row` of a block-typed matrix, dequantized into out[32] (as gguf.c does). */
static void dequantize_block(const qm_matrix *w, int row, int b, float *out) {
    const size_t at = (size_t)row * (w->cols / QK) + b;
    switch (w->type) {
    case QM_Q8_0: {
        const qm_block_q8_0 *q = (const qm_block_q8_0 *)w->data + at;
        const float d = ds_half_to_float(q->d);
        for (int j = 0; j < QK; j++)
            out[j] = d * q->qs[j];
        return;
    }
    case QM_Q4_0: {
        const qm_block_q4_0 *q = (const qm_block_q4_0 *)w->data + at;
        const float d = ds_half_to_float(q->d);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)((q->qs[j] & 0x0f) - 8) * d;
            out[j + QK / 2] = (float)((q->qs[j] >> 4) - 8) * d;
        }
        return;
    }
    case QM_Q4_1: {
        const qm_block_q4_1 *q = (const qm_block_q4_1 *)w->data + at;
        const float d = ds_half_to_float(q->d), m = ds_half_to_float(q->m);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)(q->qs[j] & 0x0f) * d + m;
            out[j + QK / 2] = (float)(q->qs[j] >> 4) * d + m;
        }
        return;
    }
    case QM_F32: break;
    }
    DS_ASSERT(!"dequantize_block: not a block type");
}

void qm_dequantize_row(const qm_matrix *w, int row, float *out) {
    DS_ASSERT(w && w->data && row >= 0 && row < w->rows);
    if (w->type == QM_F32) {
        memcpy(out, (const float *)w->data + (size_t)row * w->cols, sizeof(float) * w->cols);
        return;
    }
    for (int b = 0; b < w->cols / QK; b++)
        dequantize_block(w, row, b, out + (size_t)b * QK);
}

void qm_matmul_ref(float *y, const float *x, const qm_matrix *w, int n) {
    DS_ASSERT(w && w->data && n >= 0);
    const int rows = w->rows, cols = w->cols;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * cols;
        for (int o = 0; o < rows; o++) {
            double acc = 0.0;
            if (w->type == QM_F32) {
                const float *wo = (const float *)w->data + (size_t)o * cols;
                for (int i = 0; i < cols; i++)
                    acc += (double)xt[i] * wo[i];
            } else {
                for (int b = 0; b < cols / QK; b++) {
                    float wb[QK];
                    dequantize_block(w, o, b, wb);
                    for (int j = 0; j < QK; j++)
                        acc += (double)xt[b * QK + j] * wb[j];
                }
            }
            y[(size_t)t * rows + o] = (float)acc;
        }
    }
}

/* ---- ISA selection ----------------------------------------------------------------------- */

static atomic_int g_isa = -1; /* qm_isa, or -1 before the first use */

const char *qm_isa_name(qm_isa isa) {
    switch (isa) {
    case QM_ISA_SCALAR: return "scalar";
    case QM_ISA_AVX2: return "avx2";
    case QM_ISA_AVX512_VNNI: return "avx512vnni";
    }
    return "?";
}

qm_isa qm_isa_supported(void) {
#if SIMD_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && ds_cpu_has_f16c();
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return QM_ISA_AVX512_VNNI;
    if (avx2) return QM_ISA_AVX2;
#endif
    return QM_ISA_SCALAR;
}

qm_isa qm_isa_force(qm_isa isa) {
    qm_isa best = qm_isa_supported();
    if ((int)isa < 0 || isa > best) isa = best;
    atomic_store(&g_isa, (int)isa);
    return isa;
}

qm_isa qm_isa_active(void) {
    int isa = atomic_load(&g_isa);
    if (isa >= 0) return (qm_isa)isa;
    qm_isa pick = qm_isa_supported();
    const char *env = getenv("DECOSERVE_QM_ISA");
    if (env && *env) {
        if (!strcmp(env, "scalar"))
            pick = qm_isa_force(QM_ISA_SCALAR);
        else if (!strcmp(env, "avx2"))
            pick = qm_isa_force(QM_ISA_AVX2);
        else if (!strcmp(env, "avx512vnni"))
            pick = qm_isa_force(QM_ISA_AVX512_VNNI);
        else
            DS_LOG_W("DECOSERVE_QM_ISA=\"%s\": expected scalar, avx2 or avx512vnni; using %s", env,
                     qm_isa_name(pick));
    }
    atomic_store(&g_isa, (int)pick);
    return pick;
}

/* ---- Activation quantization (per call, into scratch) -----------------------------------
 * Per 32-wide block: d = amax / 127 (float), q = round-half-even(x * 127 / amax), and the sum of
 * q (the VNNI kernel's offset correction). The scalar and AVX2 versions give identical bytes. */

typedef struct q8_acts {
    int8_t *q;  /* [n][cols], 32-byte aligned rows (cols % 32 == 0) */
    float *d;   /* [n][nb] */
    int32_t *s; /* [n][nb], sum of the block's q */
} q8_acts;

static void quantize_acts_scalar(const q8_acts *a, const float *x, int cols, int t) {
    const int nb = cols / QK;
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)t * cols + (size_t)b * QK;
        int8_t *qb = a->q + (size_t)t * cols + (size_t)b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < QK; j++) {
            int v = (int)nearbyintf(xb[j] * id);
            qb[j] = (int8_t)v;
            sum += v;
        }
        a->d[(size_t)t * nb + b] = amax / 127.0f;
        a->s[(size_t)t * nb + b] = sum;
    }
}

#if SIMD_X86
/* A constant expression, as clang requires of _mm256_round_ps's mode. */
enum { ROUND_NEAREST = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC };

__attribute__((target("avx2,fma,f16c"))) static void
quantize_acts_avx2(const q8_acts *a, const float *x, int cols, int t) {
    const int nb = cols / QK;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)t * cols + (size_t)b * QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                          _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, vid), ROUND_NEAREST));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, vid), ROUND_NEAREST));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, vid), ROUND_NEAREST));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, vid), ROUND_NEAREST));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* packs interleave 128-bit lanes: 0 1 2 3 4 5 6 7 comes out as lanes 0 4 1 5 2 6 3 7 */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(a->q + (size_t)t * cols + (size_t)b * QK), p);
        a->d[(size_t)t * nb + b] = amax / 127.0f;
        a->s[(size_t)t * nb + b] = _mm_cvtsi128_si32(s4);
    }
}
#endif

/* ---- Block x q8 kernels --------------------------------------------------------------------
 * rows_*(args, r0, r1, t0, t1) computes y[t][r] for r in [r0, r1), t in [t0, t1). */

typedef struct q8_args {
    float *y;      /* [n][ldy] */
    size_t ldy;    /* = rows */
    const void *w; /* [rows][nb] blocks of the matrix's type */
    int nb;        /* blocks per row */
    q8_acts acts;  /* [n][...] */
} q8_args;

typedef void (*q8_rows_fn)(const q8_args *a, int r0, int r1, int t0, int t1);

static void rows_scalar(const q8_args *a, int r0, int r1, int t0, int t1) {
    const int nb = a->nb;
    for (int t = t0; t < t1; t++) {
        const int8_t *xq = a->acts.q + (size_t)t * nb * QK;
        const float *xd = a->acts.d + (size_t)t * nb;
        for (int r = r0; r < r1; r++) {
            const qm_block_q8_0 *wr = (const qm_block_q8_0 *)a->w + (size_t)r * nb;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                if (QM_PREFETCH) __builtin_prefetch((const char *)&wr[b] + QM_PREFETCH);
                int32_t dot = 0;
                for (int j = 0; j < QK; j++)
                    dot += (int32_t)wr[b].qs[j] * xq[b * QK + j];
                acc += ds_half_to_float(wr[b].d) * xd[b] * (float)dot;
            }
            a->y[(size_t)t * a->ldy + r] = acc;
        }
    }
}

/* The scale, the minimum (-8 d for Q4_0) and the nibbles of block b of row r of a Q4 matrix. */
typedef struct q4_block {
    float d, m;
    const uint8_t *qs;
} q4_block;

static inline q4_block q4_block_at(const void *w, int q4_1, size_t at) {
    uint16_t h[2];
    if (q4_1) {
        const qm_block_q4_1 *q = (const qm_block_q4_1 *)w + at;
        memcpy(h, &q->d, sizeof h);
        return (q4_block){ds_half_to_float(h[0]), ds_half_to_float(h[1]), q->qs};
    }
    const qm_block_q4_0 *q = (const qm_block_q4_0 *)w + at;
    memcpy(h, &q->d, sizeof h[0]);
    const float d = ds_half_to_float(h[0]);
    return (q4_block){d, -8.0f * d, q->qs};
}

/* sum_j (q_j d + m) x_j d_x = d d_x sum_j q_j x_j + m d_x s_x per block. */
static void rows_q4_scalar(const q8_args *a, int q4_1, int r0, int r1, int t0, int t1) {
    const int nb = a->nb;
    for (int t = t0; t < t1; t++) {
        const int8_t *xq = a->acts.q + (size_t)t * nb * QK;
        const float *xd = a->acts.d + (size_t)t * nb;
        const int32_t *xs = a->acts.s + (size_t)t * nb;
        for (int r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const q4_block w = q4_block_at(a->w, q4_1, (size_t)r * nb + b);
                if (QM_PREFETCH) __builtin_prefetch(w.qs + QM_PREFETCH);
                int32_t dot = 0;
                for (int j = 0; j < QK / 2; j++)
                    dot += (w.qs[j] & 0x0f) * xq[b * QK + j] + (w.qs[j] >> 4) * xq[b * QK + j + 16];
                acc += w.d * xd[b] * (float)dot + w.m * xd[b] * (float)xs[b];
            }
            a->y[(size_t)t * a->ldy + r] = acc;
        }
    }
}

static void rows_q4_0_scalar(const q8_args *a, int r0, int r1, int t0, int t1) {
    rows_q4_scalar(a, 0, r0, r1, t0, t1);
}

static void rows_q4_1_scalar(const q8_args *a, int r0, int r1, int t0, int t1) {
    rows_q4_scalar(a, 1, r0, r1, t0, t1);
}

#if SIMD_X86

/* Keeps GCC from turning set1(a) * set1(b) into a scalar multiply plus a broadcast per pair. */
#ifndef QM_NO_OPAQUE
#define QM_OPAQUE(v) __asm__("" : "+v"(v))
#else
#define QM_OPAQUE(v) (void)0
#endif
#define QM_TARGET_AVX2 "avx2,fma,f16c"
#define QM_TARGET_VNNI "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"

/* An R x T tile's accumulators: zeroed, and their sums stored into y. */
__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_zero(const int R, const int T, __m256 acc[4][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
}

__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_store(const q8_args *a, const int R, const int T, int r0, int t0, __m256 acc[4][4]) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            a->y[(size_t)(t0 + t) * a->ldy + r0 + r] = simd_hsum8(acc[r][t]);
}

/* One R x T tile over all blocks. AVX2 has no u8 x s8 -> s32 dot, so as in ggml: |x| (u8) times
 * w with x's sign (s8) through maddubs (pairs fit int16: 2 * 127 * 127 < 32768), then madd. */
__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_avx2(const q8_args *a, const int R, const int T, int r0, int t0) {
    const int nb = a->nb;
    const qm_block_q8_0 *w = (const qm_block_q8_0 *)a->w + (size_t)r0 * nb;
    const int8_t *xq = a->acts.q + (size_t)t0 * nb * QK;
    const float *xd = a->acts.d + (size_t)t0 * nb;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    tile_zero(R, T, acc);
    for (int b = 0; b < nb; b++) {
        __m256i wv[4];
        __m256 dw[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            wv[r] = _mm256_loadu_si256((const __m256i *)w[(size_t)r * nb + b].qs);
            dw[r] = _mm256_set1_ps(_cvtsh_ss(w[(size_t)r * nb + b].d));
            if (QM_PREFETCH) __builtin_prefetch((const char *)&w[(size_t)r * nb + b] + QM_PREFETCH);
            QM_OPAQUE(dw[r]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256i xv = _mm256_load_si256((const __m256i *)(xq + ((size_t)t * nb + b) * QK));
            __m256i ax = _mm256_abs_epi8(xv);
            __m256 dx = _mm256_set1_ps(xd[(size_t)t * nb + b]);
            QM_OPAQUE(dx);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[r], xv));
                __m256i p32 = _mm256_madd_epi16(p16, ones);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(p32), acc[r][t]);
            }
        }
    }
    tile_store(a, R, T, r0, t0, acc);
}

/* VNNI: vpdpbusd wants u8 x s8, so the weights are offset to u8 (w ^ 0x80 = w + 128) and the
 * 128 * sum(x) this adds is subtracted by starting lane 0 of the accumulator at -128 * sum(x).
 * Lane sums stay below 2^24, so converting them to float is exact. */
__attribute__((always_inline, target(QM_TARGET_VNNI))) static inline void
tile_vnni(const q8_args *a, const int R, const int T, int r0, int t0) {
    const int nb = a->nb;
    const qm_block_q8_0 *w = (const qm_block_q8_0 *)a->w + (size_t)r0 * nb;
    const int8_t *xq = a->acts.q + (size_t)t0 * nb * QK;
    const float *xd = a->acts.d + (size_t)t0 * nb;
    const int32_t *xs = a->acts.s + (size_t)t0 * nb;
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][4];
    tile_zero(R, T, acc);
    for (int b = 0; b < nb; b++) {
        __m256i wu[4];
        __m256 dw[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            wu[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[(size_t)r * nb + b].qs),
                                     bias);
            if (QM_PREFETCH) __builtin_prefetch((const char *)&w[(size_t)r * nb + b] + QM_PREFETCH);
            dw[r] = _mm256_set1_ps(_cvtsh_ss(w[(size_t)r * nb + b].d));
            QM_OPAQUE(dw[r]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256i xv = _mm256_load_si256((const __m256i *)(xq + ((size_t)t * nb + b) * QK));
            __m256i corr = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-128 * xs[(size_t)t * nb + b]));
            __m256 dx = _mm256_set1_ps(xd[(size_t)t * nb + b]);
            QM_OPAQUE(dx);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i p32 = _mm256_dpbusd_epi32(corr, wu[r], xv);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(p32), acc[r][t]);
            }
        }
    }
    tile_store(a, R, T, r0, t0, acc);
}

/* One R x T tile of a Q4 matrix. The nibbles are already u8, maddubs' unsigned operand, so they
 * multiply the s8 activations directly (pairs: 2 * 15 * 127 < 32768). The minimum term
 * m_w d_x s_x goes into the same accumulator as m_w x (d_x s_x / 8) on each of the 8 lanes
 * (the division by 8 is exact), so a tile keeps only vector accumulators. */
__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_q4_avx2(const q8_args *a, const int q4_1, const int R, const int T, int r0, int t0) {
    const int nb = a->nb;
    const size_t block_bytes = q4_1 ? sizeof(qm_block_q4_1) : sizeof(qm_block_q4_0);
    const uint8_t *w = (const uint8_t *)a->w + (size_t)r0 * nb * block_bytes;
    const int8_t *xq = a->acts.q + (size_t)t0 * nb * QK;
    const float *xd = a->acts.d + (size_t)t0 * nb;
    const int32_t *xs = a->acts.s + (size_t)t0 * nb;
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0f);
    __m256 acc[4][4];
    tile_zero(R, T, acc);
    for (int b = 0; b < nb; b++) {
        __m256i wv[4];
        __m256 dw[4], mw[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + ((size_t)r * nb + b) * block_bytes;
            uint16_t h[2];
            memcpy(h, blk, sizeof h);
            const __m128i raw = _mm_loadu_si128((const __m128i *)(blk + (q4_1 ? 4 : 2)));
            wv[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
            const float d = _cvtsh_ss(h[0]);
            dw[r] = _mm256_set1_ps(d);
            mw[r] = _mm256_set1_ps(q4_1 ? _cvtsh_ss(h[1]) : -8.0f * d);
            if (QM_PREFETCH) __builtin_prefetch(blk + QM_PREFETCH);
            QM_OPAQUE(dw[r]);
            QM_OPAQUE(mw[r]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const size_t tb = (size_t)t * nb + b;
            __m256i xv = _mm256_load_si256((const __m256i *)(xq + tb * QK));
            __m256 dx = _mm256_set1_ps(xd[tb]);
            __m256 sx = _mm256_set1_ps(xd[tb] * (float)xs[tb] * 0.125f);
            QM_OPAQUE(dx);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[r], xv), ones);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(p32), acc[r][t]);
                acc[r][t] = _mm256_fmadd_ps(mw[r], sx, acc[r][t]);
            }
        }
    }
    tile_store(a, R, T, r0, t0, acc);
}

__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_q4_0_avx2(const q8_args *a, const int R, const int T, int r0, int t0) {
    tile_q4_avx2(a, 0, R, T, r0, t0);
}

__attribute__((always_inline, target(QM_TARGET_AVX2))) static inline void
tile_q4_1_avx2(const q8_args *a, const int R, const int T, int r0, int t0) {
    tile_q4_avx2(a, 1, R, T, r0, t0);
}

/* Drives tiles of RMAX rows x TMAX (<= 4) tokens over a range, smaller tiles for the remainders
 * (cases >= TMAX are dead). R and T are constants at every call, so each tile is unrolled into
 * registers. */
#define QM_DEFINE_ROWS(isa, target_str, RMAX, TMAX)                                                \
    __attribute__((always_inline, target(target_str))) static inline void tokens_##isa(            \
        const q8_args *a, const int R, int r, int t0, int t1) {                                    \
        int t = t0;                                                                                \
        for (; t + TMAX <= t1; t += TMAX)                                                          \
            tile_##isa(a, R, TMAX, r, t);                                                          \
        switch (t1 - t) {                                                                          \
        case 3: tile_##isa(a, R, 3, r, t); break;                                                  \
        case 2: tile_##isa(a, R, 2, r, t); break;                                                  \
        case 1: tile_##isa(a, R, 1, r, t); break;                                                  \
        }                                                                                          \
    }                                                                                              \
    __attribute__((target(target_str))) static void rows_##isa(const q8_args *a, int r0, int r1,   \
                                                               int t0, int t1) {                   \
        int r = r0;                                                                                \
        for (; r + RMAX <= r1; r += RMAX)                                                          \
            tokens_##isa(a, RMAX, r, t0, t1);                                                      \
        for (; r < r1; r++)                                                                        \
            tokens_##isa(a, 1, r, t0, t1);                                                         \
    }

QM_DEFINE_ROWS(avx2, QM_TARGET_AVX2, 4, 2)
QM_DEFINE_ROWS(vnni, QM_TARGET_VNNI, 4, 4)
QM_DEFINE_ROWS(q4_0_avx2, QM_TARGET_AVX2, 4, 2)
QM_DEFINE_ROWS(q4_1_avx2, QM_TARGET_AVX2, 4, 2)

#endif /* SIMD_X86 */

/* ---- Driver ------------------------------------------------------------------------------ */

#define QM_ALIGN 64

static size_t align_up(size_t v) { return (v + QM_ALIGN - 1) & ~(size_t)(QM_ALIGN - 1); }

size_t qm_scratch_bytes(const qm_matrix *w, int n) {
    DS_ASSERT(w && n >= 0);
    if (w->type == QM_F32 || n == 0) return 0;
    size_t nb = (size_t)w->cols / QK;
    return QM_ALIGN + align_up((size_t)n * w->cols) + align_up((size_t)n * nb * sizeof(float)) +
           (size_t)n * nb * sizeof(int32_t);
}

typedef struct q8_job {
    q8_args args;
    q8_rows_fn rows_fn;
    int rows, n;
    int rows_per_task, tokens_per_task, n_row_tasks;
    /* activation quantization */
    const float *x;
    int tokens_per_quant_task;
    qm_isa isa;
} q8_job;

static void quantize_task(void *ctx, int task_index) {
    const q8_job *job = ctx;
    int t0 = task_index * job->tokens_per_quant_task;
    int t1 = t0 + job->tokens_per_quant_task < job->n ? t0 + job->tokens_per_quant_task : job->n;
    for (int t = t0; t < t1; t++) {
#if SIMD_X86
        if (job->isa != QM_ISA_SCALAR) {
            quantize_acts_avx2(&job->args.acts, job->x, job->args.nb * QK, t);
            continue;
        }
#endif
        quantize_acts_scalar(&job->args.acts, job->x, job->args.nb * QK, t);
    }
}

static void matmul_task(void *ctx, int task_index) {
    const q8_job *job = ctx;
    int rt = task_index % job->n_row_tasks, tt = task_index / job->n_row_tasks;
    int r0 = rt * job->rows_per_task, t0 = tt * job->tokens_per_task;
    int r1 = r0 + job->rows_per_task < job->rows ? r0 + job->rows_per_task : job->rows;
    int t1 = t0 + job->tokens_per_task < job->n ? t0 + job->tokens_per_task : job->n;
    job->rows_fn(&job->args, r0, r1, t0, t1);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* The kernel for a block type on an ISA; Q4 has no VNNI kernel (its AVX2 one runs there). */
static q8_rows_fn rows_fn_for(qm_type type, qm_isa isa) {
#if SIMD_X86
    if (isa != QM_ISA_SCALAR) switch (type) {
        case QM_Q8_0: return isa == QM_ISA_AVX512_VNNI ? rows_vnni : rows_avx2;
        case QM_Q4_0: return rows_q4_0_avx2;
        case QM_Q4_1: return rows_q4_1_avx2;
        case QM_F32: break;
        }
#else
    (void)isa;
#endif
    switch (type) {
    case QM_Q8_0: return rows_scalar;
    case QM_Q4_0: return rows_q4_0_scalar;
    case QM_Q4_1: return rows_q4_1_scalar;
    case QM_F32: break;
    }
    DS_ASSERT(!"rows_fn_for: not a block type");
}

static void matmul_blocks(float *y, const float *x, const qm_matrix *w, int n, threadpool *pool,
                          void *scratch) {
    DS_ASSERT(scratch);
    const int rows = w->rows, cols = w->cols, nb = cols / QK;
    q8_job job = {0};
    job.isa = qm_isa_active();
    job.rows_fn = rows_fn_for(w->type, job.isa);
    char *base = (char *)align_up((size_t)scratch);
    job.args.acts.q = (int8_t *)base;
    job.args.acts.d = (float *)(base + align_up((size_t)n * cols));
    job.args.acts.s =
        (int32_t *)((char *)job.args.acts.d + align_up((size_t)n * nb * sizeof(float)));
    job.args.y = y;
    job.args.ldy = (size_t)rows;
    job.args.w = w->data;
    job.args.nb = nb;
    job.rows = rows;
    job.n = n;
    job.x = x;

    const int n_threads = threadpool_n_threads(pool);
    /* Quantizing a token row costs about as much as one task dispatch; only split big batches. */
    job.tokens_per_quant_task = n >= 16 ? ceil_div(n, 2 * n_threads) : n;
    threadpool_run(pool, ceil_div(n, job.tokens_per_quant_task), quantize_task, &job);

    /* Rows in multiples of 4 (the tile height), ~4 tasks per thread so a late or preempted
     * thread is absorbed; split the tokens too when there are few rows for many tokens. */
    const int target_tasks = 4 * n_threads;
    job.rows_per_task = ceil_div(ceil_div(rows, target_tasks), 4) * 4;
    job.n_row_tasks = ceil_div(rows, job.rows_per_task);
    int n_token_tasks = 1;
    if (job.n_row_tasks < target_tasks && n >= 8)
        n_token_tasks = ceil_div(target_tasks, job.n_row_tasks);
    if (n_token_tasks > ceil_div(n, 4)) n_token_tasks = ceil_div(n, 4);
    job.tokens_per_task = ceil_div(ceil_div(n, n_token_tasks), 4) * 4;
    n_token_tasks = ceil_div(n, job.tokens_per_task);
    threadpool_run(pool, job.n_row_tasks * n_token_tasks, matmul_task, &job);
}

void qm_matmul(float *y, const float *x, const qm_matrix *w, int n, threadpool *pool,
               void *scratch) {
    DS_ASSERT(y && x && w && w->data && n >= 0);
    if (n == 0) return;
    switch (w->type) {
    case QM_F32:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w->rows, w->cols, 1.0f, x, w->cols,
                    (const float *)w->data, w->cols, 0.0f, y, w->rows);
        return;
    case QM_Q8_0:
    case QM_Q4_0:
    case QM_Q4_1: matmul_blocks(y, x, w, n, pool, scratch); return;
    }
    DS_ASSERT(!"qm_matmul: unknown qm_type");
}
