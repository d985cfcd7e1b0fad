/* kernels/ops_gemm.c — attention's two fp32 GEMMs (ops.h), each output element summed in one
 * order fixed by k alone: not by m, n, the register tile it falls in or the thread that runs it.
 * That is what keeps a token's logits independent of its batch and chunking. OpenBLAS, used here
 * before, sums by micro-kernel: on its Haswell/Zen cores a row of an m < 4 call and the same row
 * in an m >= 4 call came out 1 ulp apart, which Q8_0 activation rounding turned into other greedy
 * tokens. AVX2 + FMA R x C register tiles when qm_isa_active() allows, plain C otherwise. */

#include "common/log.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"
#include "kernels/simd_x86.h"

/* Below this many multiply-adds a call runs on the caller alone: a pool dispatch costs ~1 us. */
enum { SPLIT_MIN_FMAS = 1 << 18 };

typedef struct gemm_args {
    float *c; /* [m][ldc] */
    size_t ldc;
    const float *a; /* [m][lda] */
    size_t lda;
    const float *b; /* nt: [n][ldb] (B^T), nn: [k][ldb] */
    size_t ldb;
    int k;
    float alpha; /* nt only */
} gemm_args;

/* Computes c[i][j] for i in [i0, i1), j in [j0, j1). */
typedef void (*gemm_block_fn)(const gemm_args *g, int i0, int i1, int j0, int j1);

/* ---- Plain C: sequential sums from +0 ------------------------------------------------------ */

static void nt_scalar(const gemm_args *g, int i0, int i1, int j0, int j1) {
    for (int i = i0; i < i1; i++) {
        const float *ai = g->a + (size_t)i * g->lda;
        for (int j = j0; j < j1; j++) {
            const float *bj = g->b + (size_t)j * g->ldb;
            float s = 0.0f;
            for (int l = 0; l < g->k; l++)
                s += ai[l] * bj[l];
            g->c[(size_t)i * g->ldc + j] = g->alpha * s;
        }
    }
}

static void nn_scalar(const gemm_args *g, int i0, int i1, int j0, int j1) {
    for (int i = i0; i < i1; i++) {
        float *ci = g->c + (size_t)i * g->ldc;
        for (int j = j0; j < j1; j++)
            ci[j] = 0.0f;
        for (int t = 0; t < g->k; t++) {
            const float w = g->a[(size_t)i * g->lda + t], *bt = g->b + (size_t)t * g->ldb;
            for (int j = j0; j < j1; j++)
                ci[j] += w * bt[j];
        }
    }
}

#if SIMD_X86

#define OPS_TARGET "avx2,fma"

/* An R-row tile's row pointers into A and its R x C accumulators, zeroed (R <= 6, C <= 4). Pointers
 * are hoisted so that the k loops do no index arithmetic. */
__attribute__((always_inline, target(OPS_TARGET))) static inline void
tile_start(const gemm_args *g, const int R, const int C, int i, const float *ar[6],
           __m256 acc[6][4]) {
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        ar[r] = g->a + (size_t)(i + r) * g->lda;
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    }
}

/* One step of an R x C tile: acc[r][c] += av[r] * bv[c], one FMA per element. */
__attribute__((always_inline, target(OPS_TARGET))) static inline void
tile_fma(const int R, const int C, __m256 acc[6][4], const __m256 av[6], const __m256 bv[4]) {
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_fmadd_ps(av[r], bv[c], acc[r][c]);
}

/* An R x C tile of scores. Every element: 8 lanes of FMAs over k / 8 steps, hsum8, then the
 * k % 8 tail multiply-added in order, times alpha: the same instructions in every tile shape. */
__attribute__((always_inline, target(OPS_TARGET))) static inline void
nt_tile(const gemm_args *g, const int R, const int C, int i, int j) {
    const int k = g->k, k8 = k & ~7;
    const float *ar[6], *bc[4];
    __m256 acc[6][4];
    tile_start(g, R, C, i, ar, acc);
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
        bc[c] = g->b + (size_t)(j + c) * g->ldb;
    for (int l = 0; l < k8; l += 8) {
        __m256 av[6], bv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            bv[c] = _mm256_loadu_ps(bc[c] + l);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            av[r] = _mm256_loadu_ps(ar[r] + l);
        tile_fma(R, C, acc, av, bv);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            float s = simd_hsum8(acc[r][c]);
            for (int l = k8; l < k; l++)
                s += ar[r][l] * bc[c][l];
            g->c[(size_t)(i + r) * g->ldc + j + c] = g->alpha * s;
        }
}

/* Rows in fours (tiles of 4 x 3 keys), then one at a time (1 x 4); remainders in smaller tiles.
 * R and C are constants at every call, so each tile is unrolled into registers. */
#define OPS_NT_COLS(R, CMAX)                                                                       \
    do {                                                                                           \
        int j = j0;                                                                                \
        for (; j + (CMAX) <= j1; j += (CMAX))                                                      \
            nt_tile(g, R, CMAX, i, j);                                                             \
        switch (j1 - j) {                                                                          \
        case 3: nt_tile(g, R, 3, i, j); break;                                                     \
        case 2: nt_tile(g, R, 2, i, j); break;                                                     \
        case 1: nt_tile(g, R, 1, i, j); break;                                                     \
        }                                                                                          \
    } while (0)

__attribute__((target(OPS_TARGET))) static void nt_avx2(const gemm_args *g, int i0, int i1, int j0,
                                                        int j1) {
    int i = i0;
    for (; i + 4 <= i1; i += 4)
        OPS_NT_COLS(4, 3);
    for (; i < i1; i++)
        OPS_NT_COLS(1, 4);
}

/* Lanes [0, n) of a mask for maskload / maskstore. */
__attribute__((always_inline, target(OPS_TARGET))) static inline __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* An R x (C vectors of 8) tile of outputs; `tail` (1..7, or 0) masks the last vector to its first
 * lanes. Every element: FMAs over t = 0..k-1 in order, from +0 (so terms with a = 0 and finite b
 * leave it unchanged, trailing zero columns of A included). */
__attribute__((always_inline, target(OPS_TARGET))) static inline void
nn_tile(const gemm_args *g, const int R, const int C, int i, int j, int tail) {
    const __m256i mask = lane_mask(tail);
    const int k = g->k;
    const size_t ldb = g->ldb;
    const float *ar[6], *bt = g->b + j;
    __m256 acc[6][4];
    tile_start(g, R, C, i, ar, acc);
    for (int t = 0; t < k; t++, bt += ldb) {
        __m256 av[6], bv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            bv[c] = tail && c == C - 1 ? _mm256_maskload_ps(bt + 8 * c, mask)
                                       : _mm256_loadu_ps(bt + 8 * c);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++)
            av[r] = _mm256_broadcast_ss(ar[r] + t);
        tile_fma(R, C, acc, av, bv);
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            float *out = g->c + (size_t)(i + r) * g->ldc + j + 8 * c;
            if (tail && c == C - 1)
                _mm256_maskstore_ps(out, mask, acc[r][c]);
            else
                _mm256_storeu_ps(out, acc[r][c]);
        }
}

#define OPS_NN_COLS(R, CMAX)                                                                       \
    do {                                                                                           \
        int j = j0;                                                                                \
        for (; j + 8 * (CMAX) <= j1; j += 8 * (CMAX))                                              \
            nn_tile(g, R, CMAX, i, j, 0);                                                          \
        for (; j + 8 <= j1; j += 8)                                                                \
            nn_tile(g, R, 1, i, j, 0);                                                             \
        if (j < j1) nn_tile(g, R, 1, i, j, j1 - j);                                                \
    } while (0)

/* Rows in sixes (6 x 2-vector tiles: 12 accumulators, 2 loads and 6 broadcasts per 12 FMAs), the
 * remainder in one tile of its height, or 1 x 4 vectors for a single row (a decode step). */
__attribute__((target(OPS_TARGET))) static void nn_avx2(const gemm_args *g, int i0, int i1, int j0,
                                                        int j1) {
    int i = i0;
    for (; i + 6 <= i1; i += 6)
        OPS_NN_COLS(6, 2);
    switch (i1 - i) {
    case 5: OPS_NN_COLS(5, 2); break;
    case 4: OPS_NN_COLS(4, 2); break;
    case 3: OPS_NN_COLS(3, 2); break;
    case 2: OPS_NN_COLS(2, 2); break;
    case 1: OPS_NN_COLS(1, 4); break;
    }
}

#endif /* SIMD_X86 */

/* ---- Driver: tasks of whole tiles over the pool ---------------------------------------------- */

typedef struct gemm_job {
    gemm_args args;
    gemm_block_fn block;
    int m, n;
    int rows_per_task, cols_per_task, n_col_tasks;
} gemm_job;

static void gemm_task(void *ctx, int task_index) {
    const gemm_job *job = ctx;
    const int i0 = task_index / job->n_col_tasks * job->rows_per_task;
    const int j0 = task_index % job->n_col_tasks * job->cols_per_task;
    const int i1 = i0 + job->rows_per_task < job->m ? i0 + job->rows_per_task : job->m;
    const int j1 = j0 + job->cols_per_task < job->n ? j0 + job->cols_per_task : job->n;
    job->block(&job->args, i0, i1, j0, j1);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int b) { return ceil_div(a, b) * b; }

/* ~4 tasks per thread of whole tiles: rows in multiples of row_unit, columns of col_unit. */
static void gemm_run(gemm_job *job, int k, int row_unit, int col_unit, threadpool *pool) {
    int tasks = threadpool_n_threads(pool) * 4;
    if ((double)job->m * job->n * k < SPLIT_MIN_FMAS) tasks = 1;
    int col_tasks = tasks < ceil_div(job->n, col_unit) ? tasks : ceil_div(job->n, col_unit);
    int row_tasks = ceil_div(tasks, col_tasks);
    if (row_tasks > ceil_div(job->m, row_unit)) row_tasks = ceil_div(job->m, row_unit);
    job->cols_per_task = round_up(ceil_div(job->n, col_tasks), col_unit);
    job->rows_per_task = round_up(ceil_div(job->m, row_tasks), row_unit);
    job->n_col_tasks = ceil_div(job->n, job->cols_per_task);
    const int n_tasks = job->n_col_tasks * ceil_div(job->m, job->rows_per_task);
    threadpool_run(n_tasks > 1 ? pool : NULL, n_tasks, gemm_task, job);
}

void ops_gemm_nt(float *c, const float *a, int lda, const float *b, int ldb, int m, int n, int k,
                 float alpha, threadpool *pool) {
    DS_ASSERT(c && a && b && m >= 0 && n >= 0 && k >= 0 && lda >= k && ldb >= k);
    if (m == 0 || n == 0) return;
    gemm_job job = {.args = {c, (size_t)n, a, (size_t)lda, b, (size_t)ldb, k, alpha},
                    .block = nt_scalar,
                    .m = m,
                    .n = n};
#if SIMD_X86
    if (qm_isa_active() != QM_ISA_SCALAR) job.block = nt_avx2;
#endif
    gemm_run(&job, k, 4, 12, pool); /* 4-row tiles, 12 keys: 4 tiles of 3 or 3 of 4 */
}

void ops_gemm_nn(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int m, int n,
                 int k, threadpool *pool) {
    DS_ASSERT(c && a && b && m >= 0 && n >= 0 && k >= 0 && ldc >= n && lda >= k && ldb >= n);
    if (m == 0 || n == 0) return;
    gemm_job job = {.args = {c, (size_t)ldc, a, (size_t)lda, b, (size_t)ldb, k, 1.0f},
                    .block = nn_scalar,
                    .m = m,
                    .n = n};
#if SIMD_X86
    if (qm_isa_active() != QM_ISA_SCALAR) job.block = nn_avx2;
#endif
    gemm_run(&job, k, 6, 32, pool); /* 6-row tiles, 32 columns: 2 tiles of 2 vectors */
}
