/* kernels/kv_page_dot.c — attention scores and value sums from a KV page's codes and group
 * parameters (see kv_page_dot.h). Every format reduces to two products with S, the page's matrix
 * in storage order: u^T S (columns of S: KIVI keys, every value page, DecoQuant chan keys) and
 * S u (rows of S: fp16 / RTN keys, DecoQuant chan values), each for n vectors u_i at once. Each
 * has a plain-C and an AVX2 form, as has the unpacking of the codes. The AVX2 forms tile vectors
 * x columns (or tokens) so that one load of codes serves several vectors, and give every element
 * the operations, in the order, that it gets when it is the only vector. */
#include "kernels/kv_page_dot.h"

#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "kernels/qmatmul.h"
#include "kernels/simd_x86.h"

/* A page's tile (kv_page_unpack), all floats: the codes (fp16 pages: the values) in storage
 * order [n_values], the groups' scales [n_groups] then mins [n_groups], DecoQuant's small tensor
 * A [m][rank]. */
static size_t tile_params_at(const kv_page_format *f) {
    return f->method == KV_FP16 ? (size_t)f->block_size * f->head_dim : (size_t)f->n_values;
}

static size_t tile_small_at(const kv_page_format *f) {
    return tile_params_at(f) + (f->method == KV_FP16 ? 0 : 2 * (size_t)f->n_groups);
}

/* S: rows x cols in storage order (element k = row * cols + col) in a tile, with one scale and
 * min per group of group_len elements of a row: group (row, col) = row * gpr + col / group_len. */
typedef struct smat {
    int fp16;            /* scale 1, min 0, group_len = cols */
    const float *codes;  /* [rows][cols] */
    const float *scales; /* [rows * gpr] */
    const float *mins;   /* [rows * gpr] */
    int group_len, gpr;  /* gpr: groups per row */
    int rows, cols;
} smat;

static smat page_matrix(const kv_page_format *f, const float *tile, int rows, int cols) {
    if (f->method == KV_FP16) return (smat){1, tile, NULL, NULL, cols, 1, rows, cols};
    const float *params = tile + tile_params_at(f);
    return (smat){0,    tile, params, params + f->n_groups, f->group_len, cols / f->group_len,
                  rows, cols};
}

/* The n vectors of one product: in_i = in + i * in_stride, out_i = out + i * out_stride. */
typedef struct vecs {
    const float *in;
    size_t in_stride;
    float *out;
    size_t out_stride;
    int n;
} vecs;

static inline const float *in_at(const vecs *v, int i) { return v->in + (size_t)i * v->in_stride; }
static inline float *out_at(const vecs *v, int i) { return v->out + (size_t)i * v->out_stride; }

static inline float scale_at(const smat *m, size_t g) { return m->fp16 ? 1.0f : m->scales[g]; }

/* The minimum terms of u^T S for vector i: out[col] += sum_row u[row] min(row, col), one sum per
 * column group, rows in order. */
static void left_mins_one(const smat *m, const float *u, float *y) {
    for (int g = 0; g < m->gpr; g++) {
        float sum = 0.0f;
        for (int r = 0; r < m->rows; r++)
            sum += u[r] * m->mins[(size_t)r * m->gpr + g];
        for (int c = g * m->group_len; c < (g + 1) * m->group_len; c++)
            y[c] += sum;
    }
}

/* ---- Plain C ------------------------------------------------------------------------------ */

/* out_i[col] += sum_row (u_i[row] scale) code, rows in order, then the minimum terms. */
static void left_scalar(const smat *m, const vecs *v) {
    for (int r = 0; r < m->rows; r++) {
        const float *code = m->codes + (size_t)r * m->cols;
        for (int c0 = 0; c0 < m->cols; c0 += m->group_len) {
            const float scale = scale_at(m, (size_t)r * m->gpr + c0 / m->group_len);
            for (int i = 0; i < v->n; i++) {
                const float a = in_at(v, i)[r] * scale;
                float *y = out_at(v, i);
                for (int c = c0; c < c0 + m->group_len; c++)
                    y[c] += a * code[c];
            }
        }
    }
    if (!m->fp16)
        for (int i = 0; i < v->n; i++)
            left_mins_one(m, in_at(v, i), out_at(v, i));
}

/* out_i[row] = sum_g scale_g (sum_{col in g} code u_i[col]) + min_g (sum_{col in g} u_i[col]);
 * the second sums depend on (i, g) only and are summed once: usum [n][gpr]. */
static void right_scalar(const smat *m, const vecs *v, float *usum) {
    for (int i = 0; i < v->n; i++)
        for (int g = 0; g < m->gpr; g++) {
            float s = 0.0f;
            for (int c = g * m->group_len; c < (g + 1) * m->group_len; c++)
                s += in_at(v, i)[c];
            usum[(size_t)i * m->gpr + g] = s;
        }
    for (int r = 0; r < m->rows; r++) {
        const float *code = m->codes + (size_t)r * m->cols;
        for (int i = 0; i < v->n; i++) {
            const float *u = in_at(v, i);
            float acc = 0.0f;
            for (int g = 0; g < m->gpr; g++) {
                const size_t gi = (size_t)r * m->gpr + g;
                const float mn = m->fp16 ? 0.0f : m->mins[gi];
                float dot = 0.0f;
                for (int c = g * m->group_len; c < (g + 1) * m->group_len; c++)
                    dot += code[c] * u[c];
                acc += scale_at(m, gi) * dot + mn * usum[(size_t)i * m->gpr + g];
            }
            out_at(v, i)[r] = acc;
        }
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

/* Columns [c0, c0 + 8 NV) of u^T S for NQ vectors, kept in registers over all rows: each row's
 * NV loads of codes serve the NQ vectors. a_q [rows * gpr]: u_q[row] times the group's scale. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
left_tile(const smat *m, const float *a, size_t a_stride, float *y, size_t y_stride, const int NQ,
          const int NV, const int one_group, int c0) {
    int gv[4];
    __m256 acc[2][4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        gv[v] = (c0 + 8 * v) / m->group_len;
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++)
            acc[q][v] = _mm256_loadu_ps(y + q * y_stride + c0 + 8 * v);
    }
    for (int r = 0; r < m->rows; r++) {
        const float *code = m->codes + (size_t)r * m->cols + c0;
        __m256 cv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            cv[v] = _mm256_loadu_ps(code + 8 * v);
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++) {
            const float *aq = a + q * a_stride + (size_t)r * m->gpr;
            const __m256 a0 = _mm256_set1_ps(aq[gv[0]]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[q][v] =
                    _mm256_fmadd_ps(one_group ? a0 : _mm256_set1_ps(aq[gv[v]]), cv[v], acc[q][v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++)
            _mm256_storeu_ps(y + q * y_stride + c0 + 8 * v, acc[q][v]);
}

/* Columns [c0, c0 + 8 NV) for every vector, two at a time. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
left_cols(const smat *m, const float *a, size_t a_stride, const vecs *v, const int NV,
          const int one_group, int c0) {
    int i = 0;
    for (; i + 2 <= v->n; i += 2)
        left_tile(m, a + i * a_stride, a_stride, out_at(v, i), v->out_stride, 2, NV, one_group, c0);
    if (i < v->n)
        left_tile(m, a + i * a_stride, a_stride, out_at(v, i), v->out_stride, 1, NV, one_group, c0);
}

/* As left_cols, knowing at compile time whether the NV vectors of a row lie in one group (the
 * scaled input is then broadcast once per row and vector). */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
left_cols_grouped(const smat *m, const float *a, size_t a_stride, const vecs *v, const int NV,
                  int c0) {
    if (c0 / m->group_len == (c0 + 8 * NV - 1) / m->group_len)
        left_cols(m, a, a_stride, v, NV, 1, c0);
    else
        left_cols(m, a, a_stride, v, NV, 0, c0);
}

/* 8 x 8 transpose: x[k] lane j becomes x[j] lane k. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void transpose8(__m256 x[8]) {
    __m256 t[8], s[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(x[2 * k], x[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(x[2 * k], x[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        s[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        s[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        s[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        s[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        x[k] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);
        x[k + 4] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);
    }
}

/* left_mins_one for 8 vectors at a time, one per lane, each summed over the rows in order:
 * sums [gpr][8]. */
__attribute__((target(DOT_TARGET))) static void left_mins_avx2(const smat *m, const vecs *v,
                                                               float *sums) {
    for (int i0 = 0; i0 < v->n; i0 += 8) {
        const int lanes = v->n - i0 < 8 ? v->n - i0 : 8;
        if (lanes < 4) { /* too few for the transposes to pay */
            for (int i = i0; i < v->n; i++)
                left_mins_one(m, in_at(v, i), out_at(v, i));
            return;
        }
        for (int k = 0; k < 8 * m->gpr; k++)
            sums[k] = 0.0f;
        int r0 = 0;
        for (; r0 + 8 <= m->rows; r0 += 8) {
            __m256 x[8];
            for (int k = 0; k < 8; k++) /* lanes past the last vector repeat it */
                x[k] = _mm256_loadu_ps(in_at(v, i0 + (k < lanes ? k : lanes - 1)) + r0);
            transpose8(x); /* x[j]: lane k = u_{i0+k}[r0 + j] */
            for (int g = 0; g < m->gpr; g++) {
                __m256 s = _mm256_loadu_ps(sums + 8 * g);
                for (int j = 0; j < 8; j++)
                    s = _mm256_add_ps(
                        s, _mm256_mul_ps(x[j],
                                         _mm256_set1_ps(m->mins[(size_t)(r0 + j) * m->gpr + g])));
                _mm256_storeu_ps(sums + 8 * g, s);
            }
        }
        for (int k = 0; k < lanes; k++) {
            const float *u = in_at(v, i0 + k);
            float *y = out_at(v, i0 + k);
            for (int g = 0; g < m->gpr; g++) {
                float sum = sums[8 * g + k];
                for (int r = r0; r < m->rows; r++)
                    sum += u[r] * m->mins[(size_t)r * m->gpr + g];
                const __m256 add = _mm256_set1_ps(sum);
                for (int c = g * m->group_len; c < (g + 1) * m->group_len; c += 8)
                    _mm256_storeu_ps(y + c, _mm256_add_ps(_mm256_loadu_ps(y + c), add));
            }
        }
    }
}

/* As left_scalar: 2 vectors x 32 columns at a time, then the minimum terms. scratch:
 * [n][rows * gpr] scaled inputs, then [gpr][8]. */
__attribute__((target(DOT_TARGET))) static void left_avx2(const smat *m, const vecs *v,
                                                          float *scratch) {
    const float *a = v->in;
    size_t a_stride = v->in_stride;
    if (!m->fp16) { /* a_i[row * gpr + g] = u_i[row] scale(row, g), as the plain-C form has it */
        const size_t ng = (size_t)m->rows * m->gpr;
        for (int i = 0; i < v->n; i++) {
            const float *u = in_at(v, i);
            float *ai = scratch + i * ng;
            int r = 0;
            if (m->gpr == 1)
                for (; r + 8 <= m->rows; r += 8)
                    _mm256_storeu_ps(ai + r, _mm256_mul_ps(_mm256_loadu_ps(u + r),
                                                           _mm256_loadu_ps(m->scales + r)));
            for (; r < m->rows; r++)
                for (int g = 0; g < m->gpr; g++)
                    ai[(size_t)r * m->gpr + g] = u[r] * m->scales[(size_t)r * m->gpr + g];
        }
        a = scratch, a_stride = ng;
        scratch += (size_t)v->n * ng;
    }
    int c0 = 0;
    for (; c0 + 32 <= m->cols; c0 += 32)
        left_cols_grouped(m, a, a_stride, v, 4, c0);
    switch ((m->cols - c0) / 8) {
    case 3: left_cols_grouped(m, a, a_stride, v, 3, c0); break;
    case 2: left_cols_grouped(m, a, a_stride, v, 2, c0); break;
    case 1: left_cols_grouped(m, a, a_stride, v, 1, c0); break;
    }
    if (!m->fp16) left_mins_avx2(m, v, scratch);
}

/* Horizontal sums of 4 vectors, each added as simd_hsum8 adds its lanes:
 * ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). */
__attribute__((always_inline, target(DOT_TARGET))) static inline __m128 hsum4(const __m256 x[4]) {
    const __m256 ac = _mm256_add_ps(_mm256_permute2f128_ps(x[0], x[2], 0x20),
                                    _mm256_permute2f128_ps(x[0], x[2], 0x31));
    const __m256 bd = _mm256_add_ps(_mm256_permute2f128_ps(x[1], x[3], 0x20),
                                    _mm256_permute2f128_ps(x[1], x[3], 0x31));
    const __m256 z =
        _mm256_add_ps(_mm256_shuffle_ps(ac, bd, 0x44), _mm256_shuffle_ps(ac, bd, 0xEE));
    const __m256 f = _mm256_add_ps(_mm256_shuffle_ps(z, z, 0x88), _mm256_shuffle_ps(z, z, 0xDD));
    return _mm_movelh_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

/* Rows [r0, r0 + NT) of S u for NQ vectors starting at i0: per group 8 lanes of code x u, scaled
 * into one accumulator per (vector, row), then the minimum term; usum [n][gpr][8]. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
right_tile(const smat *m, const vecs *v, int i0, const float *usum, int r0, const int NQ,
           const int NT) {
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            acc[q][t] = _mm256_setzero_ps();
    for (int g = 0; g < m->gpr; g++) {
        const int c0 = g * m->group_len;
        __m256 dot[2][4];
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++)
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++)
                dot[q][t] = _mm256_setzero_ps();
        for (int c = c0; c < c0 + m->group_len; c += 8) {
            __m256 cv[4];
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++)
                cv[t] = _mm256_loadu_ps(m->codes + (size_t)(r0 + t) * m->cols + c);
#pragma GCC unroll 2
            for (int q = 0; q < NQ; q++) {
                const __m256 uv = _mm256_loadu_ps(in_at(v, i0 + q) + c);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++)
                    dot[q][t] = _mm256_fmadd_ps(cv[t], uv, dot[q][t]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const size_t gi = (size_t)(r0 + t) * m->gpr + g;
            const __m256 scale = _mm256_set1_ps(scale_at(m, gi));
#pragma GCC unroll 2
            for (int q = 0; q < NQ; q++) {
                acc[q][t] = _mm256_fmadd_ps(scale, dot[q][t], acc[q][t]);
                if (!m->fp16)
                    acc[q][t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(m->mins[gi]),
                        _mm256_loadu_ps(usum + ((size_t)(i0 + q) * m->gpr + g) * 8), acc[q][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int q = 0; q < NQ; q++) {
        float *y = out_at(v, i0 + q) + r0;
        if (NT == 4)
            _mm_storeu_ps(y, hsum4(acc[q]));
        else
            for (int t = 0; t < NT; t++)
                y[t] = simd_hsum8(acc[q][t]);
    }
}

/* Rows [r0, r0 + NT) for every vector, two at a time. */
__attribute__((always_inline, target(DOT_TARGET))) static inline void
right_rows(const smat *m, const vecs *v, const float *usum, int r0, const int NT) {
    int i = 0;
    for (; i + 2 <= v->n; i += 2)
        right_tile(m, v, i, usum, r0, 2, NT);
    if (i < v->n) right_tile(m, v, i, usum, r0, 1, NT);
}

/* As right_scalar: 2 vectors x 4 rows at a time. usum [n][gpr][8]: the 8 lanes of each group's
 * sum of u, as the one-vector loop summed them. */
__attribute__((target(DOT_TARGET))) static void right_avx2(const smat *m, const vecs *v,
                                                           float *usum) {
    if (!m->fp16)
        for (int i = 0; i < v->n; i++)
            for (int g = 0; g < m->gpr; g++) {
                __m256 s = _mm256_setzero_ps();
                for (int c = g * m->group_len; c < (g + 1) * m->group_len; c += 8)
                    s = _mm256_add_ps(s, _mm256_loadu_ps(in_at(v, i) + c));
                _mm256_storeu_ps(usum + ((size_t)i * m->gpr + g) * 8, s);
            }
    int r0 = 0;
    for (; r0 + 4 <= m->rows; r0 += 4)
        right_rows(m, v, usum, r0, 4);
    for (; r0 < m->rows; r0++)
        right_rows(m, v, usum, r0, 1);
}

/* DecoQuant's small-tensor products, 8 c2 at a time, each element summed as the plain-C loops of
 * dq_scores / dq_values sum it: qa[r][c2] = sum_c1 q[c1][c2] a[c1][r], then
 * out[c1][c2] += sum_r a[c1][r] qa[r][c2] (a: the rows of A of one t1i). */
__attribute__((target(DOT_TARGET))) static void dq_qa_avx2(const float *q, const float *a, int d1,
                                                           int d2, int R, float *qa) {
    for (int r = 0; r < R; r++)
        for (int c2 = 0; c2 < d2; c2 += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int c1 = 0; c1 < d1; c1++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(q + c1 * d2 + c2),
                                                       _mm256_set1_ps(a[c1 * R + r])));
            _mm256_storeu_ps(qa + r * d2 + c2, acc);
        }
}

__attribute__((target(DOT_TARGET))) static void dq_expand_avx2(const float *qa, const float *a,
                                                               int d1, int d2, int R, float *out) {
    for (int c1 = 0; c1 < d1; c1++)
        for (int c2 = 0; c2 < d2; c2 += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int r = 0; r < R; r++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(a[c1 * R + r]),
                                                       _mm256_loadu_ps(qa + r * d2 + c2)));
            float *o = out + c1 * d2 + c2;
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), acc));
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

/* Floats of scratch left / right need for n vectors. */
static size_t product_scratch_floats(const kv_page_format *f, int n) {
    return ((size_t)n + 1) * 8 * (size_t)(f->n_groups ? f->n_groups : 1);
}

/* out_i[col] += sum_row in_i[row] S[row][col] */
static void left(const smat *m, const vecs *v, float *scratch) {
#if SIMD_X86
    if (use_avx2(m)) {
        left_avx2(m, v, scratch);
        return;
    }
#endif
    (void)scratch;
    left_scalar(m, v);
}

/* out_i[row] = sum_col S[row][col] in_i[col] */
static void right(const smat *m, const vecs *v, float *scratch) {
#if SIMD_X86
    if (use_avx2(m)) {
        right_avx2(m, v, scratch);
        return;
    }
#endif
    right_scalar(m, v, scratch);
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
    const uint16_t *params = (const uint16_t *)(page + f->params_offset); /* [g][scale, min] */
    float *scales = tile + tile_params_at(f), *mins = scales + f->n_groups;
    for (int g = 0; g < f->n_groups; g++) {
        scales[g] = ds_half_to_float(params[2 * g]);
        mins[g] = ds_half_to_float(params[2 * g + 1]);
    }
    if (f->method == KV_DECOQUANT)
        ds_half_to_float_n((const uint16_t *)(page + f->small_offset), tile + tile_small_at(f),
                           (size_t)f->m * f->rank);
}

/* ---- DecoQuant: qA / pB and, for row groups, the large tensor B dequantized ------------------ */

size_t kv_page_dot_scratch_floats(const kv_page_format *f, int max_vectors) {
    size_t n = product_scratch_floats(f, max_vectors);
    if (f->method == KV_DECOQUANT)
        n += (size_t)max_vectors * f->rank * f->d2 + (f->axis_chan ? 0 : (size_t)f->rank * f->n);
    return n;
}

/* qa[r][c2] = sum_c1 q[c1][c2] a[c1][r], c1 in order. */
static void dq_qa(const float *q, const float *a, int d1, int d2, int R, float *qa) {
#if SIMD_X86
    if (simd_on() && d2 % 8 == 0) {
        dq_qa_avx2(q, a, d1, d2, R, qa);
        return;
    }
#endif
    for (int r = 0; r < R; r++)
        for (int c2 = 0; c2 < d2; c2++) {
            float acc = 0.0f;
            for (int c1 = 0; c1 < d1; c1++)
                acc += q[c1 * d2 + c2] * a[c1 * R + r];
            qa[r * d2 + c2] = acc;
        }
}

/* out[c1][c2] += sum_r a[c1][r] qa[r][c2], r in order. */
static void dq_expand(const float *qa, const float *a, int d1, int d2, int R, float *out) {
#if SIMD_X86
    if (simd_on() && d2 % 8 == 0) {
        dq_expand_avx2(qa, a, d1, d2, R, out);
        return;
    }
#endif
    for (int c1 = 0; c1 < d1; c1++)
        for (int c2 = 0; c2 < d2; c2++) {
            float acc = 0.0f;
            for (int r = 0; r < R; r++)
                acc += a[c1 * R + r] * qa[r * d2 + c2];
            out[c1 * d2 + c2] += acc;
        }
}

typedef struct dq_parts {
    smat b;         /* chan: S = B as [rank * d2][t2]; row: B [rank][n] */
    const float *a; /* [m][rank], in the tile */
    float *qa;      /* [n vectors][rank][d2]: qA or pB */
    float *b_row;   /* row groups: B dequantized, [rank][n]; NULL for chan */
    float *product; /* scratch of left / right */
} dq_parts;

static dq_parts dq_open(const kv_page_format *f, const float *tile, int n, float *scratch) {
    dq_parts d;
    d.a = tile + tile_small_at(f);
    d.qa = scratch;
    d.b_row = NULL;
    d.product = d.qa + (size_t)n * f->rank * f->d2;
    if (f->axis_chan) {
        d.b = page_matrix(f, tile, f->rank * f->d2, f->t2);
        return d;
    }
    d.b = page_matrix(f, tile, f->rank, f->n);
    d.b_row = d.product;
    for (int r = 0; r < f->rank; r++)
        for (int j = 0; j < f->n; j++) {
            const size_t k = (size_t)r * f->n + j, g = k / d.b.group_len;
            d.b_row[k] = d.b.codes[k] * d.b.scales[g] + d.b.mins[g];
        }
    return d;
}

static void dq_scores(const kv_page_format *f, const float *tile, const vecs *v, float *scratch) {
    const dq_parts d = dq_open(f, tile, v->n, scratch);
    const int d1 = f->d1, d2 = f->d2, t2 = f->t2, R = f->rank;
    const size_t qa_stride = (size_t)R * d2;
    for (int t1i = 0; t1i < f->t1; t1i++) {
        for (int i = 0; i < v->n; i++) {
            const float *q = in_at(v, i);
            float *qa = d.qa + i * qa_stride, *st = out_at(v, i) + (size_t)t1i * t2;
            dq_qa(q, d.a + (size_t)t1i * d1 * R, d1, d2, R, qa);
            for (int t = 0; t < t2; t++)
                st[t] = 0.0f;
            if (d.b_row)
                for (int t = 0; t < t2; t++)
                    for (int r = 0; r < R; r++)
                        for (int c2 = 0; c2 < d2; c2++)
                            st[t] += qa[r * d2 + c2] * d.b_row[(size_t)r * f->n + t * d2 + c2];
        }
        if (!d.b_row) {
            const vecs qv = {d.qa, qa_stride, v->out + (size_t)t1i * t2, v->out_stride, v->n};
            left(&d.b, &qv, d.product);
        }
    }
}

static void dq_values(const kv_page_format *f, const float *tile, const vecs *v, float *scratch) {
    const dq_parts d = dq_open(f, tile, v->n, scratch);
    const int d1 = f->d1, d2 = f->d2, t2 = f->t2, R = f->rank;
    const size_t qa_stride = (size_t)R * d2;
    for (int t1i = 0; t1i < f->t1; t1i++) {
        if (d.b_row) {
            for (int i = 0; i < v->n; i++) {
                const float *pt = in_at(v, i) + (size_t)t1i * t2;
                for (int r = 0; r < R; r++)
                    for (int c2 = 0; c2 < d2; c2++) {
                        float acc = 0.0f;
                        for (int t = 0; t < t2; t++)
                            acc += pt[t] * d.b_row[(size_t)r * f->n + t * d2 + c2];
                        d.qa[i * qa_stride + r * d2 + c2] = acc;
                    }
            }
        } else {
            const vecs pv = {v->in + (size_t)t1i * t2, v->in_stride, d.qa, qa_stride, v->n};
            right(&d.b, &pv, d.product);
        }
        for (int i = 0; i < v->n; i++)
            dq_expand(d.qa + i * qa_stride, d.a + (size_t)t1i * d1 * R, d1, d2, R, out_at(v, i));
    }
}

/* ---- Entry points --------------------------------------------------------------------------- */

void kv_page_scores(const kv_page_format *f, const float *tile, int n, const float *q,
                    size_t q_stride, float scale, float *s, size_t s_stride, float *scratch) {
    const int T = f->block_size, D = f->head_dim;
    const vecs v = {q, q_stride, s, s_stride, n};
    if (f->method == KV_DECOQUANT) {
        dq_scores(f, tile, &v, scratch);
    } else if (f->method == KV_KIVI) { /* S = K^T [D][T] */
        DS_ASSERT(!f->is_values);
        const smat m = page_matrix(f, tile, D, T);
        for (int i = 0; i < n; i++)
            memset(out_at(&v, i), 0, (size_t)T * sizeof(float));
        left(&m, &v, scratch);
    } else { /* fp16, RTN: S = K [T][D] */
        const smat m = page_matrix(f, tile, T, D);
        right(&m, &v, scratch);
    }
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++)
            out_at(&v, i)[t] *= scale;
}

void kv_page_values(const kv_page_format *f, const float *tile, int n, const float *p,
                    size_t p_stride, float *out, size_t out_stride, float *scratch) {
    const vecs v = {p, p_stride, out, out_stride, n};
    if (f->method == KV_DECOQUANT) {
        dq_values(f, tile, &v, scratch);
        return;
    }
    const smat m = page_matrix(f, tile, f->block_size, f->head_dim); /* S = V [T][D] */
    left(&m, &v, scratch);
}
