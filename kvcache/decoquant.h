/* kvcache/decoquant.h — the KV page codec: DecoQuant (MPO decomposition + low-bit large tensor,
 * arXiv 2405.12591) and, in the same API and byte accounting, the baselines every table compares
 * against (fp16, per-token round-to-nearest, KIVI-style). C reference; the CUDA kernels in
 * kernels/ must produce the same page bytes up to float rounding.
 *
 * A page is one full KV block of one (layer, kv-head, K-or-V): a matrix M of T tokens x D channels
 * (T = block_size, D = head_dim), stored fp16 while the block fills.
 *
 * DecoQuant (n = 2 MPO). Factor T = t1*t2, D = d1*d2; token t = t1i*t2 + t2i, channel
 * c = c1*d2 + c2. Regroup M into M'[(t1i,c1), (t2i,c2)], an m x n matrix, m = t1*d1, n = t2*d2.
 * SVD by Jacobi on the m x m Gram matrix: M' = U S V^T (rank r <= m).
 *     small tensor A = U S   (m x r, fp16)           absorb = SMALL (default)
 *                  A = U     and B = S V^T           absorb = LARGE
 *     large tensor B = V^T   (r x n, quantized to 2/3/4/8 bits)
 *     M' ~= A * dequant(B)
 * With refit on, A is re-solved after quantization as the least-squares fit
 * A = M' B^T (B B^T)^-1 for the dequantized B (still data-free: it uses only the page).
 *
 * Attention can run in the decomposed domain without materialising K:
 *     q . k_t = sum_c2 sum_r ( sum_c1 q[c1,c2] A[(t1i,c1), r] ) B[r, (t2i,c2)]
 *
 * Page byte layout (little-endian; every section starts at a multiple of 16 bytes and the page
 * size is a multiple of 16, padding counted in bytes_per_token):
 *     [small tensor]  fp16 A[m][r] row-major            (DecoQuant only)
 *     [group params]  fp16 (scale, min) x n_groups      (quantized methods)
 *                     fp16 scale x n_groups             (symmetric)
 *     [payload]       n_values codes of `bits` bits; code k occupies bits [k*b, (k+1)*b) of the
 *                     section, least significant first (8-bit: byte k; 3-bit codes
 *                     straddle bytes)
 *     [outliers]      (uint16 storage index, fp16 value) x outliers; index 0xffff: unused slot
 *                     (only with outliers > 0)
 * fp16 (bits = 16, any method) is the raw page, fp16 [T][D].
 *
 * Values are quantized in their storage order, in groups of group_len consecutive values
 * (asymmetric round-to-nearest: code = round((x - min) / scale), x' = code*scale + min, scale and
 * min rounded to fp16 before use so encoder and decoder agree; symmetric: min = -scale*qmax/2,
 * computed in fp32 from the fp16 scale on both sides). The grid is the group's min/max, or with
 * clip the least-squared-error one among ranges cut at either end, refitted once by least squares
 * (encoder only: the decoder reads (scale, min) either way). With outliers > 0 the encoder first
 * takes out, greedily, the values whose removal shrinks their group's range^2 most, and the decoder
 * writes them back exact after dequantizing (storage index = position in the order below).
 * With rotate, each token's D channels go through the orthonormal Hadamard transform H/sqrt(D)
 * before all of this and back after decoding (D a power of two; q.k = (Hq).(Hk) and
 * sum_t p_t v_t = H sum_t p_t (H v_t), so attention can also stay in the rotated domain).
 * Storage order:
 *     RTN            M row-major [T][D]: groups along channels of one token (per-token)
 *     KIVI keys      M^T [D][T]: groups along tokens of one channel (per-channel)
 *     KIVI values    as RTN
 *     DecoQuant row  B row-major [r][n]
 *     DecoQuant chan B as [r][d2][t2]: for each (r, c2) a group along t2 (per-channel in the
 *                    decomposed domain)
 *
 * Presets (method values that dq_format_init resolves per role; measured on SmolLM2's real KV in
 * BENCHMARKS.md sections 2-3):
 *     hadamard-rtn  keys and values: rtn + rotate (QuaRot-style per-token RTN, data-free)
 *     decoquant-hv  keys: decoquant, chan axis, refit, clip, DQ_HV_KEY_OUTLIERS outliers;
 *                   values: rtn + rotate + symmetric + clip. At head_dim 64 this is exactly
 *                   KIVI's bytes per token at every bit width (head_dim 128: 1 byte more).
 * Each page stays self-contained (no state shared across pages or sequences), so identical
 * prefixes give identical pages and prefix-cache sharing is unchanged.
 *
 * Lifetime: a dq_format is a plain value built once by dq_format_init (no allocation); pages and
 * workspaces are caller-owned byte buffers of dq_page_bytes / dq_workspace_bytes. */
#ifndef DS_KVCACHE_DECOQUANT_H
#define DS_KVCACHE_DECOQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

enum { DQ_MAX_OUTLIERS = 256, DQ_HV_KEY_OUTLIERS = 8 };

/* DQ_HADAMARD_RTN and DQ_DECOQUANT_HV are presets: dq_format_init resolves them per role into
 * one of the four page methods with knobs set (see "Presets" above), so a dq_format never holds
 * them. */
typedef enum dq_method {
    DQ_FP16 = 0,
    DQ_DECOQUANT,
    DQ_RTN,
    DQ_KIVI,
    DQ_HADAMARD_RTN,
    DQ_DECOQUANT_HV,
    DQ_N_METHODS
} dq_method;

typedef enum dq_role { DQ_KEYS = 0, DQ_VALUES } dq_role;

typedef enum dq_absorb { DQ_ABSORB_SMALL = 0, DQ_ABSORB_LARGE } dq_absorb;

typedef enum dq_axis { DQ_AXIS_ROW = 0, DQ_AXIS_CHAN } dq_axis;

/* What the user chooses. Zero fields take the documented defaults. */
typedef struct dq_config {
    dq_method method;
    int bits;       /* 16 (no compression, any method), 8, 4, 3 or 2 */
    int block_size; /* T: tokens per page */
    int head_dim;   /* D */
    int group_size; /* values per quantization group; 0 -> 64, clipped to the group axis length */
    /* DecoQuant only */
    int t1, d1;       /* MPO factors; 0 -> t1 = 1, d1 = 8 (head_dim >= 128) or 4 */
    int rank;         /* kept singular directions; 0 -> full (t1*d1) */
    dq_absorb absorb; /* where S goes */
    dq_axis axis;     /* grouping inside the large tensor */
    int refit;        /* 1: least-squares refit of the small tensor after quantization */
    /* Every quantized method */
    int clip;      /* 1: least-squares range per group instead of min/max (encoder only) */
    int rotate;    /* 1: each token's D channels through the orthonormal Hadamard transform */
    int outliers;  /* values per page kept exact in fp16 (0..DQ_MAX_OUTLIERS) */
    int symmetric; /* 1: one fp16 scale per group, levels (q - qmax/2) * scale, no min */
} dq_config;

/* What decoserve uses when the user names only method and bits: DecoQuant with channel groups
 * along tokens inside the large tensor and the least-squares refit of the small tensor, the best
 * DecoQuant settings on SmolLM2's real KV (BENCHMARKS.md); group_size 64. The zero config keeps
 * the paper's plain variant (row groups, no refit). */
dq_config dq_config_defaults(dq_method method, int bits);

/* The resolved page format for one role (keys or values). */
typedef struct dq_format {
    dq_config cfg; /* with defaults filled in */
    dq_role role;
    int T, D;
    int m, n, rank, t2, d2; /* MPO geometry (DecoQuant) */
    int n_values;           /* quantized values per page */
    int group_len;          /* values per group */
    int n_groups;
    size_t small_offset, params_offset, payload_offset, outlier_offset;
    size_t page_bytes;
} dq_format;

/* Name of a method ("fp16", "decoquant", "rtn", "kivi") and the reverse lookup. */
const char *dq_method_name(dq_method method);
ds_status dq_method_from_name(const char *name, dq_method *out, char *msg, size_t msg_len);

/* Validates cfg and fills fmt. Errors name the field: "head_dim = 100 is not divisible by
 * d1 = 8", "bits = 5: expected 2, 3, 4, 8 or 16", "block_size = 0: must be positive". */
ds_status dq_format_init(dq_format *fmt, const dq_config *cfg, dq_role role, char *msg,
                         size_t msg_len);

static inline size_t dq_page_bytes(const dq_format *fmt) { return fmt->page_bytes; }

/* Exact storage cost per token of one (layer, kv-head) matrix, scales and small tensor included. */
static inline double dq_bytes_per_token(const dq_format *fmt) {
    return (double)fmt->page_bytes / fmt->T;
}

/* Effective bits per stored value: 8 * page_bytes / (T * D). 16 for fp16. */
static inline double dq_bits_per_value(const dq_format *fmt) {
    return 8.0 * (double)fmt->page_bytes / ((double)fmt->T * fmt->D);
}

/* Scratch needed by dq_compress_page (bytes, 16-aligned). */
size_t dq_workspace_bytes(const dq_format *fmt);

/* Compresses one fp16 page src[t * src_stride + c] (t < T, c < D) into page[page_bytes].
 * workspace: dq_workspace_bytes(fmt) bytes, 16-byte aligned; nothing is allocated. */
void dq_compress_page(const dq_format *fmt, const uint16_t *src, size_t src_stride, uint8_t *page,
                      void *workspace);

/* Reconstructs a page into out[t * out_stride + c] as fp32 (workspace as for compression). */
void dq_decompress_page(const dq_format *fmt, const uint8_t *page, float *out, size_t out_stride,
                        void *workspace);

/* The MPO step alone, in fp32 without quantization (tests, evaluator): page [T][D] ->
 * small [m][rank], large [rank][n], singular values [rank] in descending order.
 * workspace as for dq_compress_page. Only for DecoQuant formats. */
void dq_mpo_decompose(const dq_format *fmt, const float *page, float *small, float *large,
                      float *singular, void *workspace);

/* page [T][D] = regroup^-1(small [m][rank] x large [rank][n]); workspace as above. */
void dq_mpo_reconstruct(const dq_format *fmt, const float *small, const float *large, float *page,
                        void *workspace);

/* Bit packing of codes (< 2^bits) used by the page format; exposed for tests and kernels. */
void dq_pack_codes(const uint8_t *codes, int n, int bits, uint8_t *out);
void dq_unpack_codes(const uint8_t *packed, int n, int bits, uint8_t *codes);

#endif
