/* kernels/paged_attention.cu — paged attention on tensor cores over fp16, KIVI and DecoQuant
 * pages (semantics in paged_attention.h, reference in paged_attention_ref.c).
 *
 * Work: a CTA takes one (row, kv head, split of the row's blocks); each of its warps streams its
 * share of the split's full pages through a ring of shared-memory stages (cp.async of the page's
 * compressed bytes, nothing else), and the warp that owns the row's own block reads it from the
 * fp16 open pool. One page load serves the G <= 8 query heads of the kv head: the scores are an
 * MMA with tokens as rows and the heads as the 8 columns,
 *     S^T[t][g] = sum_c K[t][c] Q[g][c]        (m16n8k16: A = K tile, B = Q^T)
 *     O^T[c][g] += sum_t V^T[c][t] P^T[t][g]   (A = V^T tile, B = P^T via movmatrix)
 * with the online softmax in fp32 per head. Quantized pages are never dequantized to memory:
 * each lane unpacks the codes its MMA fragments need from the staged compressed bytes and turns
 * them into fp16 with one exact subtraction and one FMA with the group's (scale, min), in
 * registers, so the tensor cores see the same operands as for an fp16 page.
 *   - KIVI keys (per-channel groups over the block) and values (per-token groups) this way.
 *     Where the geometry allows (keys: a channel's codes are one 16-byte row, T * BITS = 128;
 *     values: an even number of 16-byte chunks per token row), the codes reach the lanes by
 *     ldmatrix.trans straight from the staged page, which leaves every operand register's two
 *     codes at the same bit offset of its two halves: one lop3 and one exact fp16 op per pair,
 *     no byte shuffling, and the tensor cores take the codes themselves: the scales are folded
 *     into the query (keys) and into P (values), the minimums enter as one extra MMA each
 *     (scores_codes_mma, values_kivi_mma). Elsewhere lanes load runs, pair codes by byte_perm
 *     and dequantize to fp16 (scores_codes, values_kivi).
 *   - DecoQuant (t1 = 1, d2 = 16, chan axis): K[t][c1*16+c2] = sum_r A[c1][r] B[r][t][c2], so
 *     q.k_t = sum_{r,c2} Qp[r][c2] B[r][t][c2] with the projected query Qp = q A (per page, fp32,
 *     then fp16), then as KIVI keys on the large tensor B; values: W[r][c2][g] =
 *     sum_t P[g][t] B_v[r][t][c2] by MMA, then O[c1][c2] += sum_r A_v[c1][r] W[r][c2] in fp32,
 *     lane-local. Only the compressed bytes are read from memory.
 *
 * Lane layouts: the MMA's k index and row order may be permuted freely as long as both operands
 * agree, and each format picks the permutation that makes its loads contiguous. Token tile i
 * (16 tokens) of a page maps S^T row r to token pi(i, r) = (r % 8) * 2NT + 2i + r / 8 (NT = T/16
 * tiles): key lane gid then holds 2NT consecutive tokens and value lane tig 4NT. Splits write
 * partial (max, sum, unnormalised output) to the workspace and a second kernel merges them. */
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/paged_prefill.cuh"

namespace {

/* The kernel families (a template parameter), chosen from the page's kv_method by classify(). */
enum { FMT_F16 = 0, FMT_KIVI = 1, FMT_DECO = 2 };
constexpr int kMaxWarps = 8;
constexpr int kMaxGroup = 8; /* query heads per kv head: the MMA's n = 8 */
constexpr float kLog2e = 1.4426950408889634f;

/* What the host decides per launch. */
struct pa_plan {
    int blocks_per_split, n_splits, stages; /* n_splits: the grid's (the partials' stride) */
    const int32_t *bps_dev; /* CUDA graphs: blocks_per_split read here at run time (or NULL) */
    uint32_t stage_bytes;   /* one page pair (key + value), 16-byte multiple */
    float scale_log2;       /* scale * log2(e): the softmax runs in base 2 */
    float *part_o;          /* [n_rows][n_q_heads][n_splits][D] */
    float *part_ml;         /* [n_rows][n_q_heads][n_splits][2] (max, sum), base 2 */
};

/* A run of NB <= 128 bits starting at a multiple of NB bits (so it never straddles a load of its
 * own size); runs shorter than a word are shifted down to bit 0. */
template <int NB> struct bit_run { uint32_t w[NB > 32 ? NB / 32 : 1]; };

template <int NB> DS_DEV bit_run<NB> load_bits(const uint8_t *base, uint32_t bit) {
    bit_run<NB> r;
    if constexpr (NB == 128) {
        const uint4 v = *reinterpret_cast<const uint4 *>(base + bit / 8);
        r.w[0] = v.x, r.w[1] = v.y, r.w[2] = v.z, r.w[3] = v.w;
    } else if constexpr (NB == 64) {
        const uint2 v = *reinterpret_cast<const uint2 *>(base + bit / 8);
        r.w[0] = v.x, r.w[1] = v.y;
    } else {
        r.w[0] = *reinterpret_cast<const uint32_t *>(base + bit / 32 * 4) >> (bit % 32);
    }
    return r;
}

/* Two BITS-bit codes as the fp16 values 1024 + code (exact for codes < 1024): code k0 of run a in
 * the low half, code k1 of run b in the high half. The indices are constants after unrolling, so
 * the branch folds: one byte_perm + one masked shift when both sit at the same offset of a
 * 16-bit half (the common case), else two extractions. dequant2 takes the 1024 off. */
template <int BITS, int NA, int NB>
DS_DEV uint32_t two_codes(const bit_run<NA> &a, int k0, const bit_run<NB> &b, int k1) {
    constexpr uint32_t mask = (1u << BITS) - 1;
    const int b0 = k0 * BITS, b1 = k1 * BITS, s0 = b0 % 32, s1 = b1 % 32;
    const uint32_t wa = a.w[b0 / 32], wb = b.w[b1 / 32];
    uint32_t x;
    if (s0 % 16 == s1 % 16) {
        const uint32_t w =
            __byte_perm(wa, wb, (s0 < 16 ? 0x10u : 0x32u) | (s1 < 16 ? 0x5400u : 0x7600u));
        x = (w >> (s0 % 16)) & (mask * 0x10001u);
    } else {
        x = ((wa >> s0) & mask) | (((wb >> s1) & mask) << 16);
    }
    return x | 0x64006400u;
}

/* (1024 + code) pairs from two_codes -> code * scale + min in fp16: the subtraction is exact and
 * the FMA rounds once, the rounding an fp16 page has. */
DS_DEV uint32_t dequant2(uint32_t x, uint32_t scale, uint32_t mn) {
    const __half2 c = __hsub2(*reinterpret_cast<const __half2 *>(&x), __float2half2_rn(1024.0f));
    __half2 r = __hfma2(c, *reinterpret_cast<const __half2 *>(&scale),
                        *reinterpret_cast<const __half2 *>(&mn));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* The MMA-native code paths. ldmatrix.trans over 16-byte rows of codes hands lane (gid, tig)
 * the 16-bit unit gid of rows 2tig and 2tig+1 in one register: two runs of 16 / BITS codes at
 * the same positions of the two halves. So a pair of codes for one MMA operand register is one
 * lop3 (mask both halves' code, or in the fp16 exponent of 1024) with no shuffling, where the
 * generic path needs a byte_perm, a shift and a lop3 per pair, after a load and a shift per run.
 * Keys (rows = channels): needs one unit per lane per channel, T * BITS == 128. Values (rows =
 * tokens): needs an even number of 16-byte chunks per token row, D * BITS / 128. */
template <int T, int BITS> constexpr bool keys_mma = T *BITS == 128;
template <int D, int BITS> constexpr bool values_mma = (D * BITS / 128) % 2 == 0;

/* Codes E of both halves of an ldmatrix unit register as fp16 integers: 1024 + code * 2^sub
 * (sub: the code's offset inside its byte) by one LOP3, then the exact code by one FMA with
 * powers of two. The scales and minimums are folded out of the product (scores_codes_mma,
 * values_kivi_mma), so the tensor cores take the codes themselves. */
template <int BITS, int E> DS_DEV uint32_t code_unit(uint32_t r) {
    constexpr int bit = E * BITS, sub = bit % 8;
    const uint32_t w = bit >= 8 ? r >> (bit & ~7) : r;
    const uint32_t x = and_or<(((1u << BITS) - 1) << sub) * 0x10001u, 0x64006400u>(w);
    __half2 c = *reinterpret_cast<const __half2 *>(&x);
    if constexpr (sub != 0)
        c = __hfma2(c, __float2half2_rn(1.0f / (float)(1 << sub)),
                    __float2half2_rn(-1024.0f / (float)(1 << sub)));
    else
        c = __hsub2(c, __float2half2_rn(1024.0f));
    return *reinterpret_cast<uint32_t *>(&c);
}

DS_DEV uint32_t hmul2_bits(uint32_t a, uint32_t b) {
    __half2 r =
        __hmul2(*reinterpret_cast<const __half2 *>(&a), *reinterpret_cast<const __half2 *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* Bytes of a key + value page pair of the code formats as the kernels are compiled for it
 * (classify() checks the formats' page_bytes against it): KIVI key page (scale, min) per channel
 * + codes, value page (scale, min) per (token, group) + codes; DecoQuant pages the small tensor
 * (D/16)^2 fp16, (scale, min) per row of the large tensor (D rows) + codes. */
__host__ __device__ constexpr int code_pair_bytes(int fmt, int D, int T, int bits, int ngv) {
    return fmt == FMT_KIVI ? D * 4 + T * ngv * 4 + 2 * D * T * bits / 8
                           : 2 * ((D / 16) * (D / 16) * 2 + D * 4 + D * T * bits / 8);
}

/* ---- per-warp softmax state and the page step they share ---------------------------------- */

/* Lane (gid, tig) owns heads 2tig and 2tig+1 (the C fragments' columns). l is the lane's partial
 * sum over its own tokens, reduced over gid at the end. */
template <int KS> struct warp_state {
    float o[KS][4]; /* O^T fragments: m-tile of 16 channels (format's order) x heads 2tig..+1 */
    float oz[4];    /* KIVI values on the MMA-native path: sum_t p_t min_t of group gid (rows
                       gid < NGV) x heads 2tig..+1, added to every channel of the group at the end */
    float m[2], l[2];
};

template <int KS> DS_DEV void state_init(warp_state<KS> &st) {
#pragma unroll
    for (int i = 0; i < KS; i++)
        st.o[i][0] = st.o[i][1] = st.o[i][2] = st.o[i][3] = 0.0f;
    st.oz[0] = st.oz[1] = st.oz[2] = st.oz[3] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
}

/* s: one page's scores (log2 domain, masked entries -inf). Updates the running max and sum,
 * rescales O, and leaves P^T as the B fragments of the value MMA of each token tile. */
template <int NT, int KS>
DS_DEV void softmax_page(warp_state<KS> &st, float s[NT][4], uint32_t pb[NT][2]) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        mx0 = fmaxf(mx0, fmaxf(s[i][0], s[i][2]));
        mx1 = fmaxf(mx1, fmaxf(s[i][1], s[i][3]));
    }
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
    }
    const float m0 = fmaxf(st.m[0], mx0), m1 = fmaxf(st.m[1], mx1);
    const float c0 = st.m[0] == -INFINITY ? 0.0f : fast_exp2(st.m[0] - m0);
    const float c1 = st.m[1] == -INFINITY ? 0.0f : fast_exp2(st.m[1] - m1);
    st.m[0] = m0, st.m[1] = m1;
#pragma unroll
    for (int i = 0; i < KS; i++) {
        st.o[i][0] *= c0, st.o[i][2] *= c0;
        st.o[i][1] *= c1, st.o[i][3] *= c1;
    }
    st.oz[0] *= c0, st.oz[2] *= c0;
    st.oz[1] *= c1, st.oz[3] *= c1;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const float p0 = fast_exp2(s[i][0] - m0), p1 = fast_exp2(s[i][1] - m1);
        const float p2 = fast_exp2(s[i][2] - m0), p3 = fast_exp2(s[i][3] - m1);
        sum0 += p0 + p2, sum1 += p1 + p3;
        pb[i][0] = movmatrix_trans(pack_half2(p0, p1));
        pb[i][1] = movmatrix_trans(pack_half2(p2, p3));
    }
    st.l[0] = st.l[0] * c0 + sum0;
    st.l[1] = st.l[1] * c1 + sum1;
}

/* ---- formats ------------------------------------------------------------------------------ */

/* Token of S^T row r of token tile i (see the file comment). */
template <int NT> DS_DEV int token_of(int i, int r) { return (r & 7) * 2 * NT + 2 * i + (r >> 3); }

/* fp16 pages are staged with their 16-byte chunks XOR-swizzled by (token / 2NT) % 8, so the
 * eight rows of every ldmatrix land in distinct banks. */
template <int D, int T> DS_DEV uint32_t f16_chunk_offset(int token, int chunk) {
    constexpr int NT = T / 16;
    return (uint32_t)(token * D * 2 + ((chunk ^ ((token / (2 * NT)) & 7)) * 16));
}

/* Channel of O^T row r of m-tile m, in the order each value format accumulates. KIVI on the
 * MMA-native path: m-tile m = (chunk pair m / CPU, code e = m % CPU of each unit), row gid from
 * the pair's first 16-byte chunk of the token row, row gid + 8 from its second. */
template <int D, int FMT, int NGV, int BITS> DS_DEV int channel_of(int m, int r) {
    if constexpr (FMT == FMT_KIVI && values_mma<D, BITS>) {
        constexpr int CPU = 16 / BITS, CPC = 128 / BITS;
        return (2 * (m / CPU) + (r >> 3)) * CPC + (r & 7) * CPU + m % CPU;
    } else if constexpr (FMT == FMT_KIVI) {
        constexpr int GL = D / NGV, MPG = GL / 16, CW = GL / 8;
        return (m / MPG) * GL + (r & 7) * CW + 2 * (m % MPG) + (r >> 3);
    } else {
        return 16 * m + r;
    }
}

/* Scores of one fp16 page in shared memory (swizzled). qh: Q^T B fragments, standard k order. */
template <int D, int T>
DS_DEV void scores_f16(float s[T / 16][4], const uint32_t qh[D / 16][2], const uint8_t *page,
                       int lane) {
    constexpr int NT = T / 16, KS = D / 16;
    const int mi = lane >> 3, j8 = lane & 7;
    const uint32_t base = smem_addr(page);
#pragma unroll
    for (int i = 0; i < NT; i++) {
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        const int token = token_of<NT>(i, j8 + 8 * (mi & 1));
#pragma unroll
        for (int j = 0; j < KS; j++) {
            uint32_t a[4];
            ldmatrix_x4(a, base + f16_chunk_offset<D, T>(token, 2 * j + (mi >> 1)));
            mma_16816(s[i], a, qh[j]);
        }
    }
}

template <int D, int T>
DS_DEV void values_f16(warp_state<D / 16> &st, const uint32_t pb[T / 16][2], const uint8_t *page,
                       int lane) {
    constexpr int NT = T / 16, KS = D / 16;
    const int mi = lane >> 3, j8 = lane & 7;
    const uint32_t base = smem_addr(page) + T * D * 2;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const int token = token_of<NT>(i, j8 + 8 * (mi >> 1));
#pragma unroll
        for (int m = 0; m < KS; m++) {
            uint32_t a[4];
            ldmatrix_x4_trans(a, base + f16_chunk_offset<D, T>(token, 2 * m + (mi & 1)));
            mma_16816(st.o[m], a, pb[i]);
        }
    }
}

/* Scores of a page whose keys are codes [channel][token] with one (scale, min) per channel
 * (KIVI keys; DecoQuant's large tensor with channel c = r * 16 + c2). qb: the query (KIVI) or
 * the projected query (DecoQuant) of head gid at channels 16j + 4tig + q as B fragments. The
 * codes are dequantized to fp16 in registers, straight into the A fragments. */
template <int D, int T, int BITS>
DS_DEV void scores_codes(float s[T / 16][4], const uint32_t qb[D / 16][2], const uint8_t *page,
                         uint32_t params_offset, uint32_t payload_offset, int gid, int tig) {
    constexpr int NT = T / 16, KS = D / 16, PB = 2 * NT * BITS;
    const uint8_t *params = page + params_offset, *codes = page + payload_offset;
#pragma unroll
    for (int i = 0; i < NT; i++)
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < KS; j++) {
        const int c0 = 16 * j + 4 * tig;
        bit_run<PB> pc[4];
#pragma unroll
        for (int q = 0; q < 4; q++)
            pc[q] = load_bits<PB>(codes, (uint32_t)(((c0 + q) * T + gid * 2 * NT) * BITS));
        const uint4 prm = *reinterpret_cast<const uint4 *>(params + c0 * 4); /* (scale, min) x 4 */
        const uint32_t s01 = __byte_perm(prm.x, prm.y, 0x5410),
                       s23 = __byte_perm(prm.z, prm.w, 0x5410);
        const uint32_t m01 = __byte_perm(prm.x, prm.y, 0x7632),
                       m23 = __byte_perm(prm.z, prm.w, 0x7632);
#pragma unroll
        for (int i = 0; i < NT; i++) {
            /* rows gid | gid+8 are the lane's tokens 2i | 2i+1; k = channels c0 + q */
            const uint32_t a[4] = {
                dequant2(two_codes<BITS>(pc[0], 2 * i, pc[1], 2 * i), s01, m01),
                dequant2(two_codes<BITS>(pc[0], 2 * i + 1, pc[1], 2 * i + 1), s01, m01),
                dequant2(two_codes<BITS>(pc[2], 2 * i, pc[3], 2 * i), s23, m23),
                dequant2(two_codes<BITS>(pc[2], 2 * i + 1, pc[3], 2 * i + 1), s23, m23)};
            mma_16816(s[i], a, qb[j]);
        }
    }
}

/* KIVI values: codes [token][channel], (scale, min) per (token, group of D / NGV channels),
 * dequantized to fp16 in registers into the A fragments of V^T. */
template <int D, int T, int BITS, int NGV>
DS_DEV void values_kivi(warp_state<D / 16> &st, const uint32_t pb[T / 16][2], const uint8_t *page,
                        uint32_t params_offset, uint32_t payload_offset, int gid, int tig) {
    constexpr int NT = T / 16, GL = D / NGV, MPG = GL / 16, CW = GL / 8, CB = CW * BITS;
    const uint8_t *params = page + params_offset, *codes = page + payload_offset;
    const int tb = 4 * NT * tig; /* this lane's first token */
#pragma unroll
    for (int grp = 0; grp < NGV; grp++) {
#pragma unroll
        for (int i = 0; i < NT; i++) {
            /* B rows 2tig, 2tig+1 | 2tig+8, 2tig+9 are tokens tb + {2i, 2NT+2i | 2i+1, 2NT+2i+1} */
            const int x[4] = {2 * i, 2 * NT + 2 * i, 2 * i + 1, 2 * NT + 2 * i + 1};
            uint32_t prm[4];
            bit_run<CB> ch[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int t = tb + x[u];
                prm[u] = *reinterpret_cast<const uint32_t *>(params + (t * NGV + grp) * 4);
                ch[u] = load_bits<CB>(codes, (uint32_t)((t * D + grp * GL + gid * CW) * BITS));
            }
            const uint32_t sa = __byte_perm(prm[0], prm[1], 0x5410),
                           sb = __byte_perm(prm[2], prm[3], 0x5410);
            const uint32_t ma = __byte_perm(prm[0], prm[1], 0x7632),
                           mb = __byte_perm(prm[2], prm[3], 0x7632);
#pragma unroll
            for (int mm = 0; mm < MPG; mm++) {
                const uint32_t a[4] = {
                    dequant2(two_codes<BITS>(ch[0], 2 * mm, ch[1], 2 * mm), sa, ma),
                    dequant2(two_codes<BITS>(ch[0], 2 * mm + 1, ch[1], 2 * mm + 1), sa, ma),
                    dequant2(two_codes<BITS>(ch[2], 2 * mm, ch[3], 2 * mm), sb, mb),
                    dequant2(two_codes<BITS>(ch[2], 2 * mm + 1, ch[3], 2 * mm + 1), sb, mb)};
                mma_16816(st.o[grp * MPG + mm], a, pb[i]);
            }
        }
    }
}

/* Keys on the MMA-native path (T * BITS == 128: a channel's codes are one 16-byte row): one
 * ldmatrix.x4.trans gives 32 channels x the lane's 2NT tokens (unit gid), registers 2h | 2h + 1
 * the channels 16j + 2tig.. | 16j + 8 + 2tig.. of k-step j = 2jj + h (the fp16 k order, so qh is
 * loaded as for fp16 pages); code e of the unit is token gid * 2NT + e, row e % 2 of tile e / 2.
 * Channel c's (scale, min) are the 32 bits at params + 4c. The per-channel scales are folded
 * into the query and the minimums into one score per head added to every token:
 *     q . k_t = sum_c (q_c scale_c) code_ct + sum_c q_c min_c,
 * the second an MMA with the minimums as every row of A. Serves KIVI keys and DecoQuant's large
 * tensor (channel r * 16 + c2) alike. */
template <int D, int T, int BITS>
DS_DEV void scores_codes_mma(float s[T / 16][4], const uint32_t qb[D / 16][2], const uint8_t *page,
                             uint32_t params_offset, uint32_t payload_offset, int lane) {
    static_assert(keys_mma<T, BITS>, "one 16-byte row of codes per channel");
    constexpr int NT = T / 16, KS = D / 16;
    const int tig = lane & 3;
    const uint8_t *params = page + params_offset;
    const uint32_t rows = smem_addr(page + payload_offset) + lane * 16;
    float z[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* sum_c q_c min_c: all rows alike */
#pragma unroll
    for (int i = 0; i < NT; i++)
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int jj = 0; jj < KS / 2; jj++) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, rows + jj * 32 * 16);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int j = 2 * jj + h;
            const uint2 lo = *reinterpret_cast<const uint2 *>(params + (16 * j + 2 * tig) * 4);
            const uint2 hi = *reinterpret_cast<const uint2 *>(params + (16 * j + 8 + 2 * tig) * 4);
            const uint32_t slo = __byte_perm(lo.x, lo.y, 0x5410),
                           mlo = __byte_perm(lo.x, lo.y, 0x7632);
            const uint32_t shi = __byte_perm(hi.x, hi.y, 0x5410),
                           mhi = __byte_perm(hi.x, hi.y, 0x7632);
            const uint32_t qs[2] = {hmul2_bits(qb[j][0], slo), hmul2_bits(qb[j][1], shi)};
            const uint32_t am[4] = {mlo, mlo, mhi, mhi};
            mma_16816(z, am, qb[j]);
            static_for<NT>([&](auto I) {
                constexpr int i = decltype(I)::value;
                const uint32_t a[4] = {
                    code_unit<BITS, 2 * i>(r[2 * h]), code_unit<BITS, 2 * i + 1>(r[2 * h]),
                    code_unit<BITS, 2 * i>(r[2 * h + 1]), code_unit<BITS, 2 * i + 1>(r[2 * h + 1])};
                mma_16816(s[i], a, qs);
            });
        }
    }
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[i][e] += z[e];
}

/* 16-byte chunk ch of token t's row of KIVI value codes as staged: XOR-swizzled in its aligned
 * run of 8 chunks by (t / 2NT) % 8, so the 8 token rows of every ldmatrix (tokens 2NT apart)
 * land in distinct banks. A bijection when 2NT rows span a multiple of 8 chunks (else left
 * plain). The staging copy writes chunk L to value_chunk(L / NCH, L % NCH). */
template <int D, int T, int BITS> DS_DEV int value_chunk(int t, int ch) {
    constexpr int NCH = D * BITS / 128;
    constexpr bool swizzled = (T / 8 * NCH) % 8 == 0;
    return (t * NCH + ch) ^ (swizzled ? (t / (T / 8)) & 7 : 0);
}

/* KIVI values on the MMA-native path: per tile one ldmatrix.x4.trans per pair of 16-byte chunks
 * (rows = the tile's tokens in P^T's k order, so any token order works): registers 0 | 1 hold
 * k 2tig.. of chunks 2pq | 2pq + 1 (O^T rows gid | gid + 8), 2 | 3 the same for k 2tig + 8..;
 * code e of each unit is m-tile pq * CPU + e (channel_of). (scale, min) per (token, group) as
 * values_kivi, folded out of the product:
 *     sum_t p_t v_tc = sum_t (p_t scale_tg) code_tc + sum_t p_t min_tg,
 * the first with P scaled per group (both chunks of an m-tile lie in one group), the second an
 * MMA with the minimums of group g as row g of A, accumulated in st.oz across pages. */
template <int D, int T, int BITS, int NGV>
DS_DEV void values_kivi_mma(warp_state<D / 16> &st, const uint32_t pb[T / 16][2],
                            const uint8_t *page, uint32_t params_offset, uint32_t payload_offset,
                            int lane) {
    static_assert(values_mma<D, BITS>, "an even number of chunks per token row");
    constexpr int NT = T / 16, NCH = D * BITS / 128, CPU = 16 / BITS, CPC = 128 / BITS,
                  GL = D / NGV;
    const int gid = lane >> 2, tig = lane & 3, mm = lane >> 3, rr = lane & 7;
    const uint8_t *params = page + params_offset;
    const uint32_t pay = smem_addr(page + payload_offset);
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const int t_row = token_of<NT>(i, rr + 8 * (mm >> 1)); /* this lane's ldmatrix row */
        const int tk[4] = {token_of<NT>(i, 2 * tig), token_of<NT>(i, 2 * tig + 1),
                           token_of<NT>(i, 2 * tig + 8), token_of<NT>(i, 2 * tig + 9)};
        uint32_t slo[NGV], mlo[NGV], shi[NGV], mhi[NGV], ps[NGV][2]; /* ps: P^T x scales */
#pragma unroll
        for (int g = 0; g < NGV; g++) {
            uint32_t prm[4];
#pragma unroll
            for (int u = 0; u < 4; u++)
                prm[u] = *reinterpret_cast<const uint32_t *>(params + (tk[u] * NGV + g) * 4);
            slo[g] = __byte_perm(prm[0], prm[1], 0x5410),
            mlo[g] = __byte_perm(prm[0], prm[1], 0x7632);
            shi[g] = __byte_perm(prm[2], prm[3], 0x5410),
            mhi[g] = __byte_perm(prm[2], prm[3], 0x7632);
            ps[g][0] = hmul2_bits(pb[i][0], slo[g]), ps[g][1] = hmul2_bits(pb[i][1], shi[g]);
        }
        { /* sum_t p_t min_tg into row g of st.oz */
            uint32_t am[4] = {0u, 0u, 0u, 0u};
#pragma unroll
            for (int g = 0; g < NGV; g++)
                if (gid == g) am[0] = mlo[g], am[2] = mhi[g];
            mma_16816(st.oz, am, pb[i]);
        }
        static_for<NCH / 2>([&](auto PQ) {
            constexpr int pq = decltype(PQ)::value;
            uint32_t r[4];
            ldmatrix_x4_trans(r, pay + value_chunk<D, T, BITS>(t_row, 2 * pq + (mm & 1)) * 16);
            constexpr int g0 = 2 * pq * CPC / GL, g1 = (2 * pq + 1) * CPC / GL;
            static_for<CPU>([&](auto E) {
                constexpr int e = decltype(E)::value;
                const uint32_t c0 = code_unit<BITS, e>(r[0]), c1 = code_unit<BITS, e>(r[1]);
                const uint32_t c2 = code_unit<BITS, e>(r[2]), c3 = code_unit<BITS, e>(r[3]);
                if constexpr (g0 == g1) {
                    const uint32_t a[4] = {c0, c1, c2, c3};
                    mma_16816(st.o[pq * CPU + e], a, ps[g0]);
                } else { /* the rows' groups differ: one MMA per group, the other rows zero */
                    const uint32_t a0[4] = {c0, 0u, c2, 0u}, a1[4] = {0u, c1, 0u, c3};
                    mma_16816(st.o[pq * CPU + e], a0, ps[g0]);
                    mma_16816(st.o[pq * CPU + e], a1, ps[g1]);
                }
            });
        });
    }
}

/* A row of DecoQuant's small tensor ([m][rank] fp16, m = rank = KS) as floats. */
template <int KS> DS_DEV void small_row(float out[KS], const uint8_t *small, int row) {
    const uint32_t *w = reinterpret_cast<const uint32_t *>(small + row * KS * 2);
    uint32_t v[KS / 2];
    if constexpr (KS == 8) {
        const uint4 x = *reinterpret_cast<const uint4 *>(w);
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    } else {
        const uint2 x = *reinterpret_cast<const uint2 *>(w);
        v[0] = x.x, v[1] = x.y;
    }
#pragma unroll
    for (int k = 0; k < KS / 2; k++) {
        const float2 f = unpack_half2(v[k]);
        out[2 * k] = f.x, out[2 * k + 1] = f.y;
    }
}

/* Qp[r][q] = sum_c1 q[c1 * 16 + 4tig + q] A[c1][r]: the query in the key page's decomposed
 * domain, laid out as the codes' channel r * 16 + 4tig + q. */
template <int KS>
DS_DEV void project_query(float qp[KS][4], const float qf[KS][4], const uint8_t *small) {
#pragma unroll
    for (int r = 0; r < KS; r++)
        qp[r][0] = qp[r][1] = qp[r][2] = qp[r][3] = 0.0f;
#pragma unroll
    for (int c1 = 0; c1 < KS; c1++) {
        float a[KS];
        small_row<KS>(a, small, c1);
#pragma unroll
        for (int r = 0; r < KS; r++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                qp[r][q] += qf[c1][q] * a[r];
    }
}

/* DecoQuant values: W = P B_v by MMA over codes [r*16+c2][token] with per-row (scale, min),
 * then O[c1][c2] += sum_r A_v[c1][r] W[r][c2] (both lane-local: m-tile = c1 or r, row = c2). */
template <int D, int T, int BITS>
DS_DEV void values_deco(warp_state<D / 16> &st, const uint32_t pb[T / 16][2], const uint8_t *page,
                        uint32_t small_offset, uint32_t params_offset, uint32_t payload_offset,
                        int gid, int tig) {
    constexpr int NT = T / 16, KS = D / 16, PV = 4 * NT * BITS;
    const uint8_t *params = page + params_offset, *codes = page + payload_offset;
    const int tb = 4 * NT * tig;
    float w[KS][4];
#pragma unroll
    for (int r = 0; r < KS; r++) {
        const int row = 16 * r + gid;
        const bit_run<PV> c0 = load_bits<PV>(codes, (uint32_t)((row * T + tb) * BITS));
        const bit_run<PV> c1 = load_bits<PV>(codes, (uint32_t)(((row + 8) * T + tb) * BITS));
        /* (scale, min) of rows row and row + 8, each broadcast to both halves */
        const uint32_t p0 = *reinterpret_cast<const uint32_t *>(params + row * 4);
        const uint32_t p1 = *reinterpret_cast<const uint32_t *>(params + row * 4 + 32);
        const uint32_t s0 = __byte_perm(p0, p0, 0x1010), m0 = __byte_perm(p0, p0, 0x3232);
        const uint32_t s1 = __byte_perm(p1, p1, 0x1010), m1 = __byte_perm(p1, p1, 0x3232);
        w[r][0] = w[r][1] = w[r][2] = w[r][3] = 0.0f;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            const uint32_t a[4] = {
                dequant2(two_codes<BITS>(c0, 2 * i, c0, 2 * NT + 2 * i), s0, m0),
                dequant2(two_codes<BITS>(c1, 2 * i, c1, 2 * NT + 2 * i), s1, m1),
                dequant2(two_codes<BITS>(c0, 2 * i + 1, c0, 2 * NT + 2 * i + 1), s0, m0),
                dequant2(two_codes<BITS>(c1, 2 * i + 1, c1, 2 * NT + 2 * i + 1), s1, m1)};
            mma_16816(w[r], a, pb[i]);
        }
    }
    const uint8_t *small = page + small_offset;
#pragma unroll
    for (int c1 = 0; c1 < KS; c1++) {
        float a[KS];
        small_row<KS>(a, small, c1);
#pragma unroll
        for (int r = 0; r < KS; r++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                st.o[c1][e] += a[r] * w[r][e];
    }
}

/* The row's own block, exact from the fp16 open pool (global memory, rows of stride H * D),
 * n_valid <= T tokens. qb: Q^T B fragments in the format's k order (fp16 pages and the
 * MMA-native code path: ldmatrix's, the generic code path: channels 16j + 4tig + q). */
template <int D, int T, int FMT, int NGV, int BITS>
DS_DEV void own_block(warp_state<D / 16> &st, const uint32_t qb[D / 16][2], const uint16_t *kb,
                      const uint16_t *vb, size_t row_stride, int n_valid, float scale_log2, int gid,
                      int tig) {
    constexpr int NT = T / 16, KS = D / 16;
    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const int t0 = gid * 2 * NT + 2 * i, t1 = t0 + 1;
        const uint16_t *k0 = kb + (size_t)t0 * row_stride, *k1 = kb + (size_t)t1 * row_stride;
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int j = 0; j < KS; j++) {
            uint32_t a[4] = {0, 0, 0, 0};
            if constexpr (FMT == FMT_F16 || keys_mma<T, BITS>) {
                const int c = 16 * j + 2 * tig;
                if (t0 < n_valid) {
                    a[0] = *reinterpret_cast<const uint32_t *>(k0 + c);
                    a[2] = *reinterpret_cast<const uint32_t *>(k0 + c + 8);
                }
                if (t1 < n_valid) {
                    a[1] = *reinterpret_cast<const uint32_t *>(k1 + c);
                    a[3] = *reinterpret_cast<const uint32_t *>(k1 + c + 8);
                }
            } else {
                const int c = 16 * j + 4 * tig;
                if (t0 < n_valid) {
                    const uint2 x = *reinterpret_cast<const uint2 *>(k0 + c);
                    a[0] = x.x, a[2] = x.y;
                }
                if (t1 < n_valid) {
                    const uint2 x = *reinterpret_cast<const uint2 *>(k1 + c);
                    a[1] = x.x, a[3] = x.y;
                }
            }
            mma_16816(s[i], a, qb[j]);
        }
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[i][e] *= scale_log2;
        if (t0 >= n_valid) s[i][0] = s[i][1] = -INFINITY;
        if (t1 >= n_valid) s[i][2] = s[i][3] = -INFINITY;
    }
    uint32_t pb[NT][2];
    softmax_page<NT, KS>(st, s, pb);
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const int ta = 2 * tig * 2 * NT + 2 * i, tb = ta + 2 * NT;
        const int tok[4] = {ta, tb, ta + 1, tb + 1};
        const uint16_t *row[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            row[u] = tok[u] < n_valid ? vb + (size_t)tok[u] * row_stride : nullptr;
#pragma unroll
        for (int m = 0; m < KS; m++) {
            const int c0 = channel_of<D, FMT, NGV, BITS>(m, gid),
                      c1 = channel_of<D, FMT, NGV, BITS>(m, gid + 8);
            uint32_t v[4][2]; /* [token][row gid | gid+8] */
#pragma unroll
            for (int u = 0; u < 4; u++) {
                v[u][0] = row[u] ? row[u][c0] : 0u;
                v[u][1] = row[u] ? row[u][c1] : 0u;
            }
            const uint32_t a[4] = {v[0][0] | (v[1][0] << 16), v[0][1] | (v[1][1] << 16),
                                   v[2][0] | (v[3][0] << 16), v[2][1] | (v[3][1] << 16)};
            mma_16816(st.o[m], a, pb[i]);
        }
    }
}

template <int N> DS_DEV void wait_stages(int pending) {
    /* cp.async.wait_group takes an immediate: dispatch the run-time ring depth. */
    if constexpr (N > 0) {
        if (pending >= N) {
            cp_async_wait<N>();
            return;
        }
        wait_stages<N - 1>(pending);
    } else {
        cp_async_wait<0>();
    }
}

/* ---- the kernel ----------------------------------------------------------------------------- */

template <int D, int T, int FMT, int BITS, int NGV>
__global__ void __launch_bounds__(kMaxWarps * 32, FMT == FMT_KIVI ? 2 : 1)
    paged_attention_kernel(const paged_attention_params p, const pa_plan plan) {
    constexpr int NT = T / 16, KS = D / 16;
    constexpr bool KMMA = FMT != FMT_F16 && keys_mma<T, BITS>;
    constexpr bool VMMA = FMT == FMT_KIVI && values_mma<D, BITS>;
    extern __shared__ __align__(16) uint8_t smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    if (p.exec && (int)blockIdx.z >= p.exec[1]) return; /* past the decode list */
    const int split = blockIdx.x, h = blockIdx.y;
    const int row = p.exec ? p.exec[2 + 2 * p.n_rows + blockIdx.z] : blockIdx.z;
    const int H = p.n_kv_heads, G = p.n_q_heads / H;
    const int pos = p.row_pos[row], seq = p.row_seq[row];
    const int n_full = pos / T;
    const int bps = plan.bps_dev ? *plan.bps_dev : plan.blocks_per_split;
    const int b0 = split * bps;
    const int b1 = min(b0 + bps, n_full + 1);
    if (b0 >= b1) return; /* this row has fewer blocks than the split plan */

    /* Query of head gid as the B operand (zero for padding heads g >= G). */
    const uint16_t *qrow = p.q + (size_t)row * p.q_stride + (size_t)(h * G + gid) * D;
    uint32_t qh[KS][2];
    float qf[KS][4];
#pragma unroll
    for (int j = 0; j < KS; j++) {
        if constexpr (FMT == FMT_F16 || KMMA) { /* k order of ldmatrix: channels 16j + 2tig.., +8 */
            qh[j][0] = gid < G ? *reinterpret_cast<const uint32_t *>(qrow + 16 * j + 2 * tig) : 0u;
            qh[j][1] =
                gid < G ? *reinterpret_cast<const uint32_t *>(qrow + 16 * j + 8 + 2 * tig) : 0u;
        } else { /* k order of the generic code path: channels 16j + 4tig + 0..3 */
            const uint2 x = gid < G ? *reinterpret_cast<const uint2 *>(qrow + 16 * j + 4 * tig)
                                    : make_uint2(0u, 0u);
            qh[j][0] = x.x, qh[j][1] = x.y;
        }
        if constexpr (FMT == FMT_DECO) { /* c1 = j, c2 = the lane's four k positions */
            const float2 lo = unpack_half2(qh[j][0]), hi = unpack_half2(qh[j][1]);
            qf[j][0] = lo.x, qf[j][1] = lo.y, qf[j][2] = hi.x, qf[j][3] = hi.y;
        }
    }

    warp_state<KS> st;
    state_init(st);

    /* Full pages b0 + warp + k * n_warps (k < n_mine) through this warp's ring of stages. */
    const int full_end = min(b1, n_full);
    const int first = b0 + warp;
    const int n_mine = first < full_end ? (full_end - first + n_warps - 1) / n_warps : 0;
    const int32_t *table = p.full_table + (size_t)seq * p.table_stride;
    const size_t pk = p.key_format.page_bytes, pair = pk + p.value_format.page_bytes;
    const uint8_t *head_pages = p.cache.full + (size_t)h * pair;
    uint8_t *ring = smem + (size_t)warp * plan.stages * plan.stage_bytes;
    int32_t ids = 0; /* page ids of this warp's pages 32 at a time, lane i holds page k0 + i */
    /* Ring slots advance by one per page issued / used (no division in the loop). */
    int slot_issue = 0, slot_use = 0;
    auto issue = [&](int k) {
        if (k < n_mine) {
            if ((k & 31) == 0) ids = k + lane < n_mine ? table[first + (k + lane) * n_warps] : 0;
            const int32_t id = __shfl_sync(0xffffffffu, ids, k & 31);
            const uint8_t *src = head_pages + (size_t)id * p.cache.full_block_stride;
            const uint32_t dst_addr = smem_addr(ring) + (uint32_t)slot_issue * plan.stage_bytes;
            slot_issue = slot_issue + 1 == plan.stages ? 0 : slot_issue + 1;
            if constexpr (FMT == FMT_F16) {                    /* fixed size: unrolled, swizzled */
                constexpr int CPR = D / 8, PER_PART = T * CPR; /* 16-byte chunks per row, part */
#pragma unroll
                for (int it = 0; it < 2 * PER_PART / 32; it++) {
                    const int c = lane + 32 * it, part = c / PER_PART, w = c % PER_PART;
                    cp_async_16(dst_addr + part * T * D * 2 +
                                    f16_chunk_offset<D, T>(w / CPR, w % CPR),
                                src + (size_t)c * 16);
                }
            } else { /* the pair's size as compiled: unrolled; KIVI value codes swizzled */
                constexpr int N = code_pair_bytes(FMT, D, T, BITS, NGV) / 16;
                constexpr int NCH = D * BITS / 128,
                              V0 = (D * 4 + D * T * BITS / 8 + T * NGV * 4) / 16;
                const uint8_t *src_lane = src + lane * 16;
#pragma unroll
                for (int it = 0; it < (N + 31) / 32; it++) {
                    const int c = lane + 32 * it;
                    if (32 * (it + 1) <= N || c < N) {
                        int to = c;
                        if constexpr (VMMA)
                            if (c >= V0 && c < V0 + T * NCH)
                                to = V0 + value_chunk<D, T, BITS>((c - V0) / NCH, (c - V0) % NCH);
                        cp_async_16(dst_addr + to * 16, src_lane + it * 512);
                    }
                }
            }
        }
        cp_async_commit();
    };
    for (int k = 0; k < plan.stages - 1; k++)
        issue(k);
    for (int k = 0; k < n_mine; k++) {
        issue(k + plan.stages - 1);
        wait_stages<7>(plan.stages - 1);
        __syncwarp();
        const uint8_t *page = ring + (size_t)slot_use * plan.stage_bytes;
        slot_use = slot_use + 1 == plan.stages ? 0 : slot_use + 1;
        float s[NT][4];
        uint32_t pb[NT][2];
        if constexpr (FMT == FMT_F16) {
            scores_f16<D, T>(s, qh, page, lane);
        } else if constexpr (KMMA && FMT == FMT_KIVI) {
            scores_codes_mma<D, T, BITS>(s, qh, page, p.key_format.params_offset,
                                         p.key_format.payload_offset, lane);
        } else if constexpr (FMT == FMT_KIVI) {
            scores_codes<D, T, BITS>(s, qh, page, p.key_format.params_offset,
                                     p.key_format.payload_offset, gid, tig);
        } else {
            float qp[KS][4];
            project_query<KS>(qp, qf, page + p.key_format.small_offset);
            uint32_t qpb[KS][2];
#pragma unroll
            for (int j = 0; j < KS; j++) {
                qpb[j][0] = pack_half2(qp[j][0], qp[j][1]);
                qpb[j][1] = pack_half2(qp[j][2], qp[j][3]);
            }
            if constexpr (KMMA)
                scores_codes_mma<D, T, BITS>(s, qpb, page, p.key_format.params_offset,
                                             p.key_format.payload_offset, lane);
            else
                scores_codes<D, T, BITS>(s, qpb, page, p.key_format.params_offset,
                                         p.key_format.payload_offset, gid, tig);
        }
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[i][e] *= plan.scale_log2;
        softmax_page<NT, KS>(st, s, pb);
        if constexpr (FMT == FMT_DECO) {
            const kv_page_format &vf = p.value_format;
            values_deco<D, T, BITS>(st, pb, page + pk, vf.small_offset, vf.params_offset,
                                    vf.payload_offset, gid, tig);
        } else {
            if constexpr (FMT == FMT_F16)
                values_f16<D, T>(st, pb, page, lane);
            else if constexpr (VMMA)
                values_kivi_mma<D, T, BITS, NGV>(st, pb, page + pk, p.value_format.params_offset,
                                                 p.value_format.payload_offset, lane);
            else
                values_kivi<D, T, BITS, NGV>(st, pb, page + pk, p.value_format.params_offset,
                                             p.value_format.payload_offset, gid, tig);
        }
        __syncwarp();
    }
    cp_async_wait<0>();

    /* The own block, by the warp whose turn it is. */
    if (n_full < b1 && (n_full - b0) % n_warps == warp) {
        const int32_t open = p.open_table[(size_t)seq * p.table_stride + n_full];
        const uint16_t *blk = p.cache.open + (size_t)open * p.cache.open_block_stride;
        const size_t stride = (size_t)H * D;
        own_block<D, T, FMT, NGV, BITS>(st, qh, blk + (size_t)h * D,
                                        blk + (size_t)T * stride + h * D, stride,
                                        pos - n_full * T + 1, plan.scale_log2, gid, tig);
    }
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1)
            st.l[e] += __shfl_xor_sync(0xffffffffu, st.l[e], o);

    /* Merge the warps: [warp][head][D] outputs and [warp][head][max, sum] in shared memory. */
    __syncthreads();
    float *o_sm = reinterpret_cast<float *>(smem);
    float *ml_sm = o_sm + (size_t)n_warps * kMaxGroup * D;
    float oz[NGV][2] = {}; /* the value minimums' term of each group, for heads 2tig..+1 */
    if constexpr (VMMA)
#pragma unroll
        for (int g = 0; g < NGV; g++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                oz[g][e] = __shfl_sync(0xffffffffu, st.oz[e], 4 * g + tig);
#pragma unroll
    for (int m = 0; m < KS; m++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int g = 2 * tig + (e & 1),
                      c = channel_of<D, FMT, NGV, BITS>(m, gid + 8 * (e >> 1));
            o_sm[((size_t)warp * kMaxGroup + g) * D + c] =
                st.o[m][e] + (VMMA ? oz[c / (D / NGV)][e & 1] : 0.0f);
        }
    if (gid == 0)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            ml_sm[(warp * kMaxGroup + 2 * tig + e) * 2] = st.m[e];
            ml_sm[(warp * kMaxGroup + 2 * tig + e) * 2 + 1] = st.l[e];
        }
    __syncthreads();
    for (int x = threadIdx.x; x < G * D; x += blockDim.x) {
        const int g = x / D, c = x % D;
        float mx = -INFINITY;
        for (int w = 0; w < n_warps; w++)
            mx = fmaxf(mx, ml_sm[(w * kMaxGroup + g) * 2]);
        float o = 0.0f, l = 0.0f;
        for (int w = 0; w < n_warps; w++) {
            const float mw = ml_sm[(w * kMaxGroup + g) * 2];
            if (mw == -INFINITY) continue;
            const float f = exp2f(mw - mx);
            o += f * o_sm[((size_t)w * kMaxGroup + g) * D + c];
            l += f * ml_sm[(w * kMaxGroup + g) * 2 + 1];
        }
        const int qh_index = h * G + g;
        if (plan.n_splits == 1) {
            p.out[(size_t)row * p.out_stride + (size_t)qh_index * D + c] =
                __half_as_ushort(__float2half_rn(o / l));
        } else {
            const size_t part = ((size_t)row * p.n_q_heads + qh_index) * plan.n_splits + split;
            plan.part_o[part * D + c] = o;
            if (c == 0) plan.part_ml[part * 2] = mx, plan.part_ml[part * 2 + 1] = l;
        }
    }
}

/* Merges the splits of each (row, query head): one CTA of D threads. */
__global__ void paged_attention_reduce_kernel(const paged_attention_params p, const pa_plan plan) {
    if (p.exec && (int)blockIdx.y >= p.exec[1]) return;
    const int row = p.exec ? p.exec[2 + 2 * p.n_rows + blockIdx.y] : blockIdx.y;
    const int qh = blockIdx.x, c = threadIdx.x, D = p.head_dim;
    const int n_blocks = p.row_pos[row] / p.block_size + 1;
    const int bps = plan.bps_dev ? *plan.bps_dev : plan.blocks_per_split;
    const int used = (n_blocks + bps - 1) / bps;
    const size_t base = ((size_t)row * p.n_q_heads + qh) * plan.n_splits;
    float mx = -INFINITY;
    for (int s = 0; s < used; s++)
        mx = fmaxf(mx, plan.part_ml[(base + s) * 2]);
    float o = 0.0f, l = 0.0f;
    for (int s = 0; s < used; s++) {
        const float ms = plan.part_ml[(base + s) * 2];
        if (ms == -INFINITY) continue;
        const float f = exp2f(ms - mx);
        o += f * plan.part_o[(base + s) * D + c];
        l += f * plan.part_ml[(base + s) * 2 + 1];
    }
    p.out[(size_t)row * p.out_stride + (size_t)qh * D + c] =
        __half_as_ushort(__float2half_rn(o / l));
}

/* ---- host side --------------------------------------------------------------------------------
 */

typedef void (*pa_kernel_fn)(const paged_attention_params, const pa_plan);

template <int D, int T> pa_kernel_fn pick_format(int fmt, int bits, int ngv) {
    if (fmt == FMT_F16) return paged_attention_kernel<D, T, FMT_F16, 16, 1>;
    if (fmt == FMT_KIVI) {
        if (ngv == 1) {
            if (bits == 8) return paged_attention_kernel<D, T, FMT_KIVI, 8, 1>;
            if (bits == 4) return paged_attention_kernel<D, T, FMT_KIVI, 4, 1>;
            if (bits == 2) return paged_attention_kernel<D, T, FMT_KIVI, 2, 1>;
        }
        if constexpr (D == 128) {
            if (ngv == 2) {
                if (bits == 8) return paged_attention_kernel<D, T, FMT_KIVI, 8, 2>;
                if (bits == 4) return paged_attention_kernel<D, T, FMT_KIVI, 4, 2>;
                if (bits == 2) return paged_attention_kernel<D, T, FMT_KIVI, 2, 2>;
            }
        }
        return nullptr;
    }
    if (bits == 8) return paged_attention_kernel<D, T, FMT_DECO, 8, 1>;
    if (bits == 4) return paged_attention_kernel<D, T, FMT_DECO, 4, 1>;
    if (bits == 2) return paged_attention_kernel<D, T, FMT_DECO, 2, 1>;
    return nullptr;
}

/* The kernels stage a page pair of the code formats with its size and the KIVI value codes'
 * offset compiled in (code_pair_bytes): a format laid out otherwise is refused, not misread. */
ds_status check_pair(const kv_page_format *kf, const kv_page_format *vf, int fmt, int ngv,
                     char *msg, size_t msg_len) {
    const int D = kf->head_dim, T = kf->block_size, bits = kf->bits;
    const uint32_t want = (uint32_t)code_pair_bytes(fmt, D, T, bits, ngv);
    const int kivi_layout =
        fmt != FMT_KIVI || (kf->page_bytes == (uint32_t)(D * 4 + D * T * bits / 8) &&
                            vf->payload_offset == (uint32_t)(T * ngv * 4));
    if (kf->page_bytes + vf->page_bytes != want || !kivi_layout)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): %u + %u-byte key and value pages; the kernels "
                       "are built for %u-byte pairs laid out as kvcache/decoquant.h",
                       kf->page_bytes, vf->page_bytes, want);
    return DS_OK;
}

/* Which kernel family runs the formats, or DS_EUNSUPPORTED naming what does not fit. */
ds_status classify(const paged_attention_params *p, int *fmt, int *ngv, char *msg, size_t msg_len) {
    const kv_page_format *kf = &p->key_format, *vf = &p->value_format;
    const int D = p->head_dim, T = p->block_size;
    if (kf->method != vf->method)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): key method %d with value method %d", kf->method,
                       vf->method);
    if (kf->bits != vf->bits)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): key bits %d with value bits %d", kf->bits,
                       vf->bits);
    switch (kf->method) {
    case KV_FP16: *fmt = FMT_F16, *ngv = 1; return DS_OK;
    case KV_KIVI:
        if (kf->group_len != T)
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                           "paged attention (cuda): KIVI key groups of %d tokens; only groups "
                           "spanning the block (%d) are built",
                           kf->group_len, T);
        if (vf->group_len != D && !(D == 128 && vf->group_len == 64))
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                           "paged attention (cuda): KIVI value groups of %d channels at head_dim "
                           "%d; built: head_dim, or 64 at head_dim 128",
                           vf->group_len, D);
        *fmt = FMT_KIVI, *ngv = D / vf->group_len;
        return check_pair(kf, vf, *fmt, *ngv, msg, msg_len);
    case KV_DECOQUANT:
        for (int i = 0; i < 2; i++) {
            const kv_page_format *f = i ? vf : kf;
            if (f->t1 != 1 || f->d2 != 16 || f->rank != f->m || !f->axis_chan ||
                f->group_len != f->t2)
                return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                               "paged attention (cuda): DecoQuant %s pages with t1 = %d, d2 = %d, "
                               "rank %d of %d, %s axis, groups of %d; built: t1 = 1, d2 = 16, "
                               "full rank, chan axis, groups spanning the block",
                               i ? "value" : "key", f->t1, f->d2, f->rank, f->m,
                               f->axis_chan ? "chan" : "row", f->group_len);
        }
        *fmt = FMT_DECO, *ngv = 1;
        return check_pair(kf, vf, *fmt, *ngv, msg, msg_len);
    case KV_RTN:
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): rtn pages are not built");
    default:
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): page method %d is unknown", kf->method);
    }
}

} // namespace

size_t paged_attention_workspace_bytes(int max_rows, int n_q_heads, int head_dim, int max_splits) {
    return (size_t)max_rows * n_q_heads * max_splits * (head_dim + 2) * sizeof(float);
}

namespace {

/* Everything a launch decides: the kernel for p's shape and formats, warps, stages, shared memory
 * and the split plan for p's rows and max_pos. */
struct pa_launch {
    pa_kernel_fn kernel;
    int fmt; /* the family: the prefill kernel's too */
    pa_plan plan;
    int n_warps;
    size_t smem;
};

ds_status pick_kernel(const paged_attention_params *p, pa_kernel_fn *out, int *fmt_out, char *msg,
                      size_t msg_len) {
    ds_status st = paged_attention_validate(p, msg, msg_len);
    if (st != DS_OK) return st;
    const int D = p->head_dim, T = p->block_size, H = p->n_kv_heads;
    if (p->n_q_heads / H > kMaxGroup)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): %d query heads per kv head (at most %d)",
                       p->n_q_heads / H, kMaxGroup);
    int fmt, ngv;
    st = classify(p, &fmt, &ngv, msg, msg_len);
    if (st != DS_OK) return st;
    pa_kernel_fn kernel = nullptr;
    switch (D * 1000 + T) {
    case 64016: kernel = pick_format<64, 16>(fmt, p->key_format.bits, ngv); break;
    case 64032: kernel = pick_format<64, 32>(fmt, p->key_format.bits, ngv); break;
    case 64064: kernel = pick_format<64, 64>(fmt, p->key_format.bits, ngv); break;
    case 128016: kernel = pick_format<128, 16>(fmt, p->key_format.bits, ngv); break;
    case 128032: kernel = pick_format<128, 32>(fmt, p->key_format.bits, ngv); break;
    case 128064: kernel = pick_format<128, 64>(fmt, p->key_format.bits, ngv); break;
    default:
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): head_dim %d with block_size %d (built: head_dim "
                       "64/128, block_size 16/32/64)",
                       D, T);
    }
    if (!kernel)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): %d-bit pages of method %d", p->key_format.bits,
                       p->key_format.method);
    *out = kernel, *fmt_out = fmt;
    return DS_OK;
}

/* The device's multiprocessors and opt-in shared memory: tu's when prepared, else asked. */
ds_status device_limits(const paged_attention_tuning *tu, int *n_sm, int *smem_optin, char *msg,
                        size_t msg_len) {
    if (tu->n_sms > 0 && tu->smem_optin > 0) {
        *n_sm = tu->n_sms, *smem_optin = tu->smem_optin;
        return DS_OK;
    }
    int dev;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(n_sm, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return DS_OK;
}

ds_status plan_launch(const paged_attention_params *p, const paged_attention_tuning *tu,
                      void *workspace, size_t workspace_bytes, pa_launch *out, char *msg,
                      size_t msg_len) {
    ds_status st = pick_kernel(p, &out->kernel, &out->fmt, msg, msg_len);
    if (st != DS_OK) return st;
    int n_sm, smem_optin;
    st = device_limits(tu, &n_sm, &smem_optin, msg, msg_len);
    if (st != DS_OK) return st;
    const int D = p->head_dim, T = p->block_size, H = p->n_kv_heads;
    pa_plan &plan = out->plan;
    plan.bps_dev = tu->blocks_per_split_dev;
    plan.stage_bytes = p->key_format.method == KV_FP16
                           ? 4u * T * D
                           : p->key_format.page_bytes + p->value_format.page_bytes;
    int n_warps = tu->warps_per_cta > 0 ? tu->warps_per_cta : 4;
    n_warps = n_warps > kMaxWarps ? kMaxWarps : n_warps;
    plan.stages = tu->stages;
    if (plan.stages <= 0) { /* as deep as lets ~4 CTAs of compressed pages share an SM */
        plan.stages = (int)((56u << 10) / ((uint32_t)n_warps * plan.stage_bytes));
        plan.stages = plan.stages < 2 ? 2 : plan.stages > 4 ? 4 : plan.stages;
    }
    plan.stages = plan.stages > 8 ? 8 : plan.stages < 2 ? 2 : plan.stages;
    const size_t merge_bytes = (size_t)kMaxWarps * kMaxGroup * (D + 2) * sizeof(float);
    size_t smem = 0;
    for (;; n_warps--) {
        smem = (size_t)n_warps * plan.stages * plan.stage_bytes;
        smem = smem > merge_bytes ? smem : merge_bytes;
        if (smem <= (size_t)smem_optin || n_warps == 1) break;
    }
    if (smem > (size_t)smem_optin)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged attention (cuda): %d stages of %u-byte pages need %zu bytes of "
                       "shared memory (the device has %d)",
                       plan.stages, plan.stage_bytes, smem, smem_optin);
    out->n_warps = n_warps, out->smem = smem;

    const int n_blocks = p->max_pos / T + 1, base_ctas = p->n_rows > 0 ? p->n_rows * H : H;
    const int ctas_per_sm = tu->ctas_per_sm > 0 ? tu->ctas_per_sm : 4;
    int splits = (ctas_per_sm * n_sm + base_ctas - 1) / base_ctas;
    const size_t per_split = paged_attention_workspace_bytes(p->n_rows, p->n_q_heads, D, 1);
    const int per_ws = per_split ? (int)(workspace_bytes / per_split) : 0;
    if (tu->max_splits > 0 && splits > tu->max_splits) splits = tu->max_splits;
    if (splits > per_ws) splits = per_ws;
    if (splits > (n_blocks + n_warps - 1) / n_warps) splits = (n_blocks + n_warps - 1) / n_warps;
    if (splits < 1) splits = 1;
    plan.blocks_per_split = (n_blocks + splits - 1) / splits;
    plan.n_splits = (n_blocks + plan.blocks_per_split - 1) / plan.blocks_per_split;
    plan.scale_log2 = p->scale * kLog2e;
    plan.part_o = (float *)workspace;
    plan.part_ml = plan.part_o + (size_t)p->n_rows * p->n_q_heads * plan.n_splits * D;
    if (plan.n_splits > 1 && !workspace && p->n_rows > 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "paged attention (cuda): split-K needs a workspace");
    return DS_OK;
}

} // namespace

ds_status paged_attention_cuda_prepare(const paged_attention_params *p, paged_attention_tuning *t,
                                       char *msg, size_t msg_len) {
    t->n_sms = t->smem_optin = t->smem_ready = 0;
    int n_sm, optin;
    ds_status st = device_limits(t, &n_sm, &optin, msg, msg_len);
    if (st != DS_OK) return st;
    t->n_sms = n_sm, t->smem_optin = optin;
    pa_launch la;
    paged_attention_params probe = *p;
    probe.n_rows = 0;
    st = plan_launch(&probe, t, NULL, 0, &la, msg, msg_len);
    if (st != DS_OK) return st;
    CUDA_CHECK(
        cudaFuncSetAttribute(la.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)la.smem));
    st = paged_prefill_cuda_setup(&probe, la.fmt, optin, msg, msg_len);
    if (st != DS_OK) return st;
    t->smem_ready = 1;
    return DS_OK;
}

int paged_attention_cuda_blocks_per_split(const paged_attention_params *p,
                                          const paged_attention_tuning *t, size_t workspace_bytes) {
    pa_launch la;
    paged_attention_tuning fixed = *t;
    fixed.blocks_per_split_dev = NULL;
    char msg[16];
    /* a dummy workspace pointer: only the arithmetic runs */
    if (plan_launch(p, &fixed, (void *)16, workspace_bytes, &la, msg, sizeof msg) != DS_OK)
        return 1;
    return la.plan.blocks_per_split;
}

ds_status paged_attention_cuda(const paged_attention_params *p,
                               const paged_attention_tuning *tuning, void *workspace,
                               size_t workspace_bytes, int *n_splits_out, cudaStream_t stream,
                               char *msg, size_t msg_len) {
    const paged_attention_tuning none = {};
    const paged_attention_tuning *tu = tuning ? tuning : &none;
    if (n_splits_out) *n_splits_out = 0;
    pa_launch la;
    ds_status st = plan_launch(p, tu, workspace, workspace_bytes, &la, msg, msg_len);
    if (st != DS_OK || p->n_rows == 0) return st;
    if (!tu->smem_ready) {
        CUDA_CHECK(cudaFuncSetAttribute(la.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)la.smem));
        if (p->exec) {
            int n_sm, optin;
            st = device_limits(tu, &n_sm, &optin, msg, msg_len);
            if (st == DS_OK) st = paged_prefill_cuda_setup(p, la.fmt, optin, msg, msg_len);
            if (st != DS_OK) return st;
        }
    }
    if (p->exec) { /* the tiles first: they hold the longest work */
        st = paged_prefill_cuda_launch(p, la.fmt, stream, msg, msg_len);
        if (st != DS_OK) return st;
    }
    const dim3 grid(la.plan.n_splits, p->n_kv_heads, p->n_rows);
    la.kernel<<<grid, la.n_warps * 32, la.smem, stream>>>(*p, la.plan);
    CUDA_CHECK(cudaGetLastError());
    if (la.plan.n_splits > 1) { /* (a graph's capacity of 1 split covers any replay's rows) */
        paged_attention_reduce_kernel<<<dim3(p->n_q_heads, p->n_rows), p->head_dim, 0, stream>>>(
            *p, la.plan);
        CUDA_CHECK(cudaGetLastError());
    }
    if (n_splits_out) *n_splits_out = la.plan.n_splits;
    return DS_OK;
}
