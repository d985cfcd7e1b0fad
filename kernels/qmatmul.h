/* kernels/qmatmul.h — the CPU backend's linear layer on weights in a compute format (fp32, ggml's
 * Q8_0, or ggml's Q4_0 / Q4_1 as a GGUF file stores them), so a decode step reads ~1 or ~0.6 bytes
 * per weight instead of 4. The backend creates one qm_matrix per weight at load time (qm_create
 * quantizes, qm_create_blocks copies a file's blocks; the matrix owns its data) and calls
 * qm_matmul with its thread pool and a scratch buffer it allocated once (qm_scratch_bytes).
 *
 *   y[t][o] = sum_i x[t][i] W[o][i]      x [n][cols], W [rows][cols] row-major, y [n][rows]
 *
 * Q8_0 (ggml's layout, bit for bit): each row is cols/32 blocks of {fp16 d; int8 q[32]} (34 bytes,
 * no padding), W[o][32b + j] = d * q[j], d = max_j |W| / 127 rounded to fp16, q = round(W / d).
 * Q4_0 {fp16 d; u8 qs[16]} (18 bytes): W[32b + j] = (q_j - 8) d; Q4_1 {fp16 d, m; u8 qs[16]}
 * (20 bytes): W[32b + j] = q_j d + m; in both, q_j is the low nibble of qs[j] for j < 16 and the
 * high nibble of qs[j - 16] otherwise (ggml's block_q4_0 / block_q4_1).
 * qm_matmul quantizes each activation row to 32-wide int8 blocks once (float scale d_x and the
 * block's code sum s_x, as ggml's q8_0 / q8_1 activations) and sums integer block dot products
 * times the scales: Q8_0 d_w d_x sum q_w q_x; Q4 d_w d_x sum q_j q_x + m_w d_x s_x (m_w = -8 d_w
 * for Q4_0). So the result carries the activations' quantization error too; qm_matmul_ref is
 * the exact product of x and the dequantized W (double accumulation) that tests compare with. */
#ifndef DS_KERNELS_QMATMUL_H
#define DS_KERNELS_QMATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/threadpool.h"

typedef enum { QM_F32 = 0, QM_Q8_0, QM_Q4_0, QM_Q4_1 } qm_type;

/* A weight matrix in a compute format. data is owned (qm_create / qm_destroy). */
typedef struct qm_matrix {
    qm_type type;
    int rows, cols; /* rows = output features, cols = input features */
    void *data;     /* F32: float [rows][cols]; else that type's blocks [rows][cols / 32] */
} qm_matrix;

#define QM_Q8_0_BLOCK 32

typedef struct qm_block_q8_0 {
    uint16_t d; /* fp16 scale */
    int8_t qs[QM_Q8_0_BLOCK];
} qm_block_q8_0;
_Static_assert(sizeof(qm_block_q8_0) == 34, "Q8_0 block must match ggml's block_q8_0");

typedef struct qm_block_q4_0 {
    uint16_t d;     /* fp16 scale */
    uint8_t qs[16]; /* value j: low nibble of qs[j % 16] for j < 16, high nibble otherwise */
} qm_block_q4_0;
_Static_assert(sizeof(qm_block_q4_0) == 18, "Q4_0 block must match ggml's block_q4_0");

typedef struct qm_block_q4_1 {
    uint16_t d, m; /* fp16 scale and minimum */
    uint8_t qs[16];
} qm_block_q4_1;
_Static_assert(sizeof(qm_block_q4_1) == 20, "Q4_1 block must match ggml's block_q4_1");

/* "f32", "q8_0", "q4_0", "q4_1"; "?" for anything else. */
const char *qm_type_name(qm_type type);

/* Bytes of data for a rows x cols matrix of this type (0 for an unknown type or bad shape). */
size_t qm_bytes(qm_type type, int rows, int cols);

/* Allocates m->data and fills it from src [rows][cols] (fp32): QM_F32 copies, QM_Q8_0 quantizes.
 * DS_EINVAL naming the shape/type (rows, cols >= 1; cols % 32 == 0 for Q8_0), DS_ERANGE naming the
 * row and column of a non-finite value or of a block whose scale overflows fp16, DS_ENOMEM. On
 * failure *m is left empty (data NULL). */
ds_status qm_create(qm_matrix *m, qm_type type, const float *src, int rows, int cols, char *msg,
                    size_t msg_len);

/* Allocates m->data and copies rows x cols of Q4_0 or Q4_1 blocks into it (a GGUF tensor's own
 * bytes, rows of cols / 32 blocks). DS_EINVAL naming the type or shape (cols % 32 == 0),
 * DS_ERANGE naming the row and block of a non-finite scale or minimum, DS_ENOMEM; on failure *m
 * is left empty. */
ds_status qm_create_blocks(qm_matrix *m, qm_type type, const void *blocks, int rows, int cols,
                           char *msg, size_t msg_len);

/* Frees m->data and empties m; safe on an empty or failed matrix. */
void qm_destroy(qm_matrix *m);

/* Quantizes cols (% 32 == 0) finite floats to cols / 32 Q8_0 blocks (the qm_create kernel). */
void qm_quantize_row_q8_0(qm_block_q8_0 *dst, const float *src, int cols);

/* Dequantizes (or copies) row `row` of w into out [cols]; also serves embedding lookups. */
void qm_dequantize_row(const qm_matrix *w, int row, float *out);

/* Scratch qm_matmul needs for n tokens (0 for QM_F32). Allocate once for the largest n. */
size_t qm_scratch_bytes(const qm_matrix *w, int n);

/* y [n][rows] = x [n][cols] * W^T. y must not alias x. pool may be NULL (caller thread only).
 * scratch: >= qm_scratch_bytes(w, n) bytes, any alignment, not shared with a concurrent call.
 * The block types run on pool (rows split into tasks, tokens too when n is large); a token's
 * outputs are the same bits whatever the other tokens of the call. QM_F32 calls
 * OpenBLAS cblas_sgemm once from the caller thread and lets OpenBLAS thread it; the pool's
 * workers are idle meanwhile (after ~0.2 ms of spinning they sleep). Do not alternate the two in
 * one forward pass: OpenBLAS's threads and ours each spin after a call and fight for the cores
 * (576x576 GEMV pairs, 2 cores: 454 us alternating vs 149 us for the two alone). Use one format
 * for all of a model's matrices, or OPENBLAS_NUM_THREADS=1. */
void qm_matmul(float *y, const float *x, const qm_matrix *w, int n, threadpool *pool,
               void *scratch);

/* Reference: y = x * dequantize(W)^T, accumulated in double, single thread. */
void qm_matmul_ref(float *y, const float *x, const qm_matrix *w, int n);

/* Which SIMD kernel qm_matmul uses for the block types (attention's kv_page_dot follows it too:
 * plain C for scalar, AVX2 otherwise; Q4_0 / Q4_1 run their AVX2 kernel under avx512vnni too).
 * The default is the best the CPU supports (__builtin_cpu_supports), overridable by env
 * DECOSERVE_QM_ISA=scalar|avx2|avx512vnni. */
typedef enum qm_isa {
    QM_ISA_SCALAR = 0,  /* portable C */
    QM_ISA_AVX2,        /* AVX2 + FMA + F16C, ggml's maddubs/sign trick */
    QM_ISA_AVX512_VNNI, /* + AVX-512 F/BW/VL/VNNI: vpdpbusd on 256-bit vectors */
} qm_isa;

const char *qm_isa_name(qm_isa isa);

/* Best ISA this CPU supports (ignores the env override). */
qm_isa qm_isa_supported(void);

/* ISA qm_matmul uses now. */
qm_isa qm_isa_active(void);

/* Forces an ISA (for tests and benchmarks); clamped to what the CPU supports. Returns the ISA
 * now active. Not synchronised with concurrent qm_matmul calls. */
qm_isa qm_isa_force(qm_isa isa);

#endif
