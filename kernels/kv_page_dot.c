/* kernels/kv_page_dot.c — attention scores and value sums from a KV page's codes and group
 * parameters (see kv_page_dot.h). Every format reduces to two products with S, the page's matrix
 * in storage order: u^T S (columns of S: KIVI keys, every value page, DecoQuant chan keys) and
 * S u (rows of S: fp16 / RTN keys, DecoQuant chan values). Each has a plain-C and an AVX2 form,
 * as has the unpacking of the codes. */
#include "kernels/kv_page_dot.h"

#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "kernels/qmatmul.h"
#include "kernels/simd_x86.h"

/* A page's tile (kv_page_unpack), all floats: the codes (fp16 pages: the values) in storage
 * order [n_values], the groups' (scale, min) [n_groups][2], DecoQuant's small tensor A [m][rank].
 */
static size_t tile_params_at(const kv_page_format *f) {
    return f->method == KV_FP16 ? (size_t)f->block_size * f->head_dim : (size_t)f->n_values;
}

static size_t tile_small_at(const kv_page_format *f) {
    return tile_params_at(f) + (f->method == KV_FP16 ? 0 : 2 * (size_t)f->n_groups);
}

/* S: rows x cols in storage order (element k = row * cols + col) in a tile, with one
 * (scale, min) per group of group_len elements of a row. */
typedef struct smat {
    int fp16;            /* scale 1, min 0, group_len = cols */
    const float *codes;  /* [rows][cols] */
    const float *params; /* [n_groups][scale, min] */
    int group_len;
    int rows, cols;
} smat;

static smat page_matrix(const kv_page_format *f, const float *tile, int rows, int cols) {
    if (f->method == KV_FP16) return (smat){1, tile, NULL, cols, rows, cols};
    return (smat){0, tile, tile + tile_params_at(f), f->group_len, rows, cols};
}

static inline float raw_at(const smat *m, size_t k) { return m->codes[k]; }

/* Scale and min of the group holding element (row, col). */
static inline void group_at(const smat *m, int row, int col, float *scale, float *mn) {
    if (m->fp16) {
        *scale = 1.0f, *mn = 0.0f;
        return;
    }
    const size_t g = ((size_t)row * m->cols + col) / m->group_len;
    *scale = m->params[2 * g];
    *mn = m->params[2 * g + 1];
}

/* The minimum terms of u^T S: y[col] += sum_row u[row] min(row, col), one sum per column group. */
static void left_mins(const smat *m, const float *u, float *y) {
    if (m->fp16) return;
    const int gpr = m->cols / m->group_len;
    for (int g = 0; g < gpr; g++) {
        float sum = 0.0f;
        for (int r = 0; r < m->rows; r++)
            sum += u[r] * m->params[2 * ((size_t)r * gpr + g) + 1];
        for (int c = g * m->group_len; c < (g + 1) * m->group_len; c++)
            y[c] += sum;
    }
}

/* ---- Plain C ------------------------------------------------------------------------------ */

/* y[col] += sum_row (u[row] scale) code, rows in order, then the minimum terms. */
static void left_scalar(const smat *m, const float *u, float *y) {
    for (int r = 0; r < m->rows; r++)
        for (int c0 = 0; c0 < m->cols; c0 += m->group_len) {
            float scale, mn;
            group_at(m, r, c0, &scale, &mn);
            const float a = u[r] * scale;
            for (int c = c0; c < c0 + m->group_len; c++)
                y[c] += a * raw_at(m, (size_t)r * m->cols + c);
        }
    left_mins(m, u, y);
}

/* y[row] = sum_g scale_g (sum_{col in g} code u[col]) + min_g (sum_{col in g} u[col]). */
static void right_scalar(const smat *m, const float *u, float *y) {
    for (int r = 0; r < m->rows; r++) {
        float acc = 0.0f;
        for (int c0 = 0; c0 < m->cols; c0 += m->group_len) {
            float scale, mn, dot = 0.0f, usum = 0.0f;
            group_at(m, r, c0, &scale, &mn);
            for (int c = c0; c < c0 + m->group_len; c++) {
                dot += raw_at(m, (size_t)r * m->cols + c) * u[c];
                usum += u[c];
            }
            acc += scale * dot + mn * usum;
        }
        y[r] = acc;
    }
}

/* ---- AVX2 + FMA: 8 elements of a row at a time, codes unpacked in registers ------------------ */

#if SIMD_X86

#define DOT_TARGET "avx2,fma,f16c"

/* Codes k .. k + 7 (k % 8 == 0) of a payload of `bits`-bit codes (they fill exactly `bits`
 * bytes), or 8 fp16 values, as floats: shifted out of one load in registers. */
__attribute__((always_inline, target(DOT_TARGET))) static inline __m256
unpack8(const uint8_t *data, int bits, size_t k) {
    if (bits == 16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)data + k)));
    if (bits == 8)
        return _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(data + k))));
    __m256i codes;
    if (bits == 4) {
        uint32_t word;
        memcpy(&word, data + k / 2, sizeof word);
        codes = _mm256_srlv_epi32(_mm256_set1_epi32((int)word),
                                  _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    } else {
        uint16_t word;
        memcpy(&word, data + k / 4, sizeof word);
        codes = _mm256_srlv_epi32(_mm256_set1_epi32(word),
                                  _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
    }
    return _mm256_cvtepi32_ps(_mm256_and_si256(codes, _mm256_set1_epi32((1 << bits) - 1)));
}

__attribute__((target(DOT_TARGET))) static void unpack_avx2(const uint8_t *data, int bits, size_t n,
                                                            float *tile) {
    for (size_t k = 0; k < n; k += 8)
        _mm256_storeu_ps(tile + k, unpack8(data, bits, k));
}

__attribute__((always_inline, target(DOT_TARGET))) static inline __m256 load8(const smat *m,
                                                                              size_t k) {
    return _mm256_loadu_ps(m->codes + k);
}

/* Scale of group g (1 for fp16 pages). */
static inline float scale_at(const smat *m, size_t g) { return m->fp16 ? 1.0f : m->params[2 * g]; }

/* NV vectors of columns [c0, c0 + 8 NV) of u^T S, kept in registers over all rows. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
left_cols(const smat *m, const float *u, float *y, const int NV, int c0) {
    const int gpr = m->cols / m->group_len; /* groups per row */
    int gv[4];
    __m256 acc[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        gv[v] = (c0 + 8 * v) / m->group_len;
        acc[v] = _mm256_loadu_ps(y + c0 + 8 * v);
    }
    for (int r = 0; r < m->rows; r++) {
        const size_t row = (size_t)r * m->cols;
        const float a0 = u[r] * scale_at(m, (size_t)r * gpr + gv[0]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const float a = v && gv[v] == gv[0] ? a0 : u[r] * scale_at(m, (size_t)r * gpr + gv[v]);
            acc[v] = _mm256_fmadd_ps(_mm256_set1_ps(a), load8(m, row + c0 + 8 * v), acc[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        _mm256_storeu_ps(y + c0 + 8 * v, acc[v]);
}

/* As left_scalar, 32 columns at a time. */
__attribute__((target(DOT_TARGET))) static void left_avx2(const smat *m, const float *u, float *y) {
    int c0 = 0;
    for (; c0 + 32 <= m->cols; c0 += 32)
        left_cols(m, u, y, 4, c0);
    switch ((m->cols - c0) / 8) {
    case 3: left_cols(m, u, y, 3, c0); break;
    case 2: left_cols(m, u, y, 2, c0); break;
    case 1: left_cols(m, u, y, 1, c0); break;
    }
    left_mins(m, u, y);
}

/* As right_scalar: per group 8 lanes of code x u and of u, scaled into one accumulator. */
__attribute__((target(DOT_TARGET))) static void right_avx2(const smat *m, const float *u,
                                                           float *y) {
    const int gpr = m->cols / m->group_len;
    for (int r = 0; r < m->rows; r++) {
        __m256 acc = _mm256_setzero_ps();
        for (int g = 0; g < gpr; g++) {
            const int c0 = g * m->group_len;
            __m256 dot = _mm256_setzero_ps(), usum = _mm256_setzero_ps();
            for (int c = c0; c < c0 + m->group_len; c += 8) {
                const __m256 uv = _mm256_loadu_ps(u + c);
                dot = _mm256_fmadd_ps(load8(m, (size_t)r * m->cols + c), uv, dot);
                usum = _mm256_add_ps(usum, uv);
            }
            const size_t gi = (size_t)r * gpr + g;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scale_at(m, gi)), dot, acc);
            if (!m->fp16) acc = _mm256_fmadd_ps(_mm256_set1_ps(m->params[2 * gi + 1]), usum, acc);
        }
        y[r] = simd_hsum8(acc);
    }
}

#endif /* SIMD_X86 */

static int simd_on(void) {
#if SIMD_X86
    return qm_isa_active() != QM_ISA_SCALAR;
#else
    return 0;
#endif
}

static int use_avx2(const smat *m) {
    return simd_on() && m->cols % 8 == 0 && m->group_len % 8 == 0;
}

/* y[col] += sum_row u[row] S[row][col] */
static void left(const smat *m, const float *u, float *y) {
#if SIMD_X86
    if (use_avx2(m)) {
        left_avx2(m, u, y);
        return;
    }
#endif
    left_scalar(m, u, y);
}

/* y[row] = sum_col S[row][col] u[col] */
static void right(const smat *m, const float *u, float *y) {
#if SIMD_X86
    if (use_avx2(m)) {
        right_avx2(m, u, y);
        return;
    }
#endif
    right_scalar(m, u, y);
}

/* ---- The tile: a page's codes as floats -------------------------------------------------- */

size_t kv_page_tile_floats(const kv_page_format *f) {
    return tile_small_at(f) + (f->method == KV_DECOQUANT ? (size_t)f->m * f->rank : 0);
}

/* The codes (or fp16 values) of the tile. */
static void unpack_codes(const kv_page_format *f, const uint8_t *page, float *tile) {
    const size_t n = tile_params_at(f);
    const int bits = f->method == KV_FP16 ? 16 : f->bits;
    const uint8_t *data = f->method == KV_FP16 ? page : page + f->payload_offset;
#if SIMD_X86
    if (simd_on() && n % 8 == 0) {
        unpack_avx2(data, bits, n, tile);
        return;
    }
#endif
    if (bits == 16) {
        for (size_t k = 0; k < n; k++)
            tile[k] = ds_half_to_float(((const uint16_t *)data)[k]);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        const size_t bit = k * (size_t)bits;
        tile[k] = (float)((data[bit / 8] >> (bit % 8)) & ((1u << bits) - 1));
    }
}

void kv_page_unpack(const kv_page_format *f, const uint8_t *page, float *tile) {
    unpack_codes(f, page, tile);
    if (f->method == KV_FP16) return;
    const uint16_t *params = (const uint16_t *)(page + f->params_offset);
    ds_half_to_float_n(params, tile + tile_params_at(f), 2 * (size_t)f->n_groups);
    if (f->method == KV_DECOQUANT)
        ds_half_to_float_n((const uint16_t *)(page + f->small_offset), tile + tile_small_at(f),
                           (size_t)f->m * f->rank);
}

/* ---- DecoQuant: qA / pB and, for row groups, the large tensor B dequantized ------------------ */

size_t kv_page_dot_scratch_floats(const kv_page_format *f) {
    if (f->method != KV_DECOQUANT) return 0;
    return (size_t)f->rank * f->d2 + (f->axis_chan ? 0 : (size_t)f->rank * f->n);
}

typedef struct dq_parts {
    smat b;         /* chan: S = B as [rank * d2][t2]; row: B [rank][n] */
    const float *a; /* [m][rank], in the tile */
    float *qa;      /* [rank][d2]: qA or pB */
    float *b_row;   /* row groups: B dequantized, [rank][n]; NULL for chan */
} dq_parts;

static dq_parts dq_open(const kv_page_format *f, const float *tile, float *scratch) {
    dq_parts d;
    d.a = tile + tile_small_at(f);
    d.qa = scratch;
    d.b_row = NULL;
    if (f->axis_chan) {
        d.b = page_matrix(f, tile, f->rank * f->d2, f->t2);
        return d;
    }
    d.b = page_matrix(f, tile, f->rank, f->n);
    d.b_row = d.qa + (size_t)f->rank * f->d2;
    for (int r = 0; r < f->rank; r++)
        for (int j = 0; j < f->n; j++) {
            float scale, mn;
            group_at(&d.b, r, j, &scale, &mn);
            d.b_row[(size_t)r * f->n + j] = raw_at(&d.b, (size_t)r * f->n + j) * scale + mn;
        }
    return d;
}

static void dq_scores(const kv_page_format *f, const float *tile, const float *q, float *s,
                      float *scratch) {
    const dq_parts d = dq_open(f, tile, scratch);
    const int d1 = f->d1, d2 = f->d2, t2 = f->t2, R = f->rank;
    for (int t1i = 0; t1i < f->t1; t1i++) {
        float *st = s + (size_t)t1i * t2;
        for (int r = 0; r < R; r++)
            for (int c2 = 0; c2 < d2; c2++) {
                float acc = 0.0f;
                for (int c1 = 0; c1 < d1; c1++)
                    acc += q[c1 * d2 + c2] * d.a[(t1i * d1 + c1) * R + r];
                d.qa[r * d2 + c2] = acc;
            }
        for (int t = 0; t < t2; t++)
            st[t] = 0.0f;
        if (d.b_row) {
            for (int t = 0; t < t2; t++)
                for (int r = 0; r < R; r++)
                    for (int c2 = 0; c2 < d2; c2++)
                        st[t] += d.qa[r * d2 + c2] * d.b_row[(size_t)r * f->n + t * d2 + c2];
        } else {
            left(&d.b, d.qa, st);
        }
    }
}

static void dq_values(const kv_page_format *f, const float *tile, const float *p, float *out,
                      float *scratch) {
    const dq_parts d = dq_open(f, tile, scratch);
    const int d1 = f->d1, d2 = f->d2, t2 = f->t2, R = f->rank;
    for (int t1i = 0; t1i < f->t1; t1i++) {
        const float *pt = p + (size_t)t1i * t2;
        if (d.b_row) {
            for (int r = 0; r < R; r++)
                for (int c2 = 0; c2 < d2; c2++) {
                    float acc = 0.0f;
                    for (int t = 0; t < t2; t++)
                        acc += pt[t] * d.b_row[(size_t)r * f->n + t * d2 + c2];
                    d.qa[r * d2 + c2] = acc;
                }
        } else {
            right(&d.b, pt, d.qa);
        }
        for (int c1 = 0; c1 < d1; c1++)
            for (int c2 = 0; c2 < d2; c2++) {
                float acc = 0.0f;
                for (int r = 0; r < R; r++)
                    acc += d.a[(t1i * d1 + c1) * R + r] * d.qa[r * d2 + c2];
                out[c1 * d2 + c2] += acc;
            }
    }
}

/* ---- Entry points --------------------------------------------------------------------------- */

void kv_page_scores(const kv_page_format *f, const float *tile, const float *q, float scale,
                    float *s, float *scratch) {
    const int T = f->block_size, D = f->head_dim;
    if (f->method == KV_DECOQUANT) {
        dq_scores(f, tile, q, s, scratch);
    } else if (f->method == KV_KIVI) { /* S = K^T [D][T] */
        DS_ASSERT(!f->is_values);
        const smat m = page_matrix(f, tile, D, T);
        for (int t = 0; t < T; t++)
            s[t] = 0.0f;
        left(&m, q, s);
    } else { /* fp16, RTN: S = K [T][D] */
        const smat m = page_matrix(f, tile, T, D);
        right(&m, q, s);
    }
    for (int t = 0; t < T; t++)
        s[t] *= scale;
}

void kv_page_values(const kv_page_format *f, const float *tile, const float *p, float *out,
                    float *scratch) {
    if (f->method == KV_DECOQUANT) {
        dq_values(f, tile, p, out, scratch);
        return;
    }
    const smat m = page_matrix(f, tile, f->block_size, f->head_dim); /* S = V [T][D] */
    left(&m, p, out);
}
