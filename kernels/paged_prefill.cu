/* kernels/paged_prefill.cu — the prefill half of paged attention (semantics in paged_attention.h,
 * reference in paged_attention_ref.c): tiles of query rows on tensor cores, FlashAttention-2
 * style, for the prompt chunks of a step; paged_attention_cuda runs it over the exec plan's tiles
 * and the decode kernel (paged_attention.cu) over the remaining rows.
 *
 * Work: a CTA takes the rows of one tile that fall into one sub-tile of R positions of their block
 * (R = min(T, the largest power of two with R * G <= 128)) for one kv head. Its M = R * G rows
 * (m = r * G + g: query row r, head g of the group) are split 16 per warp; every page of the
 * sequence before the block is read once per CTA and serves all M rows:
 *     S[m][t] = sum_c Q[m][c] K[t][c]       (m16n8k16: A = Q, B = K^T)
 *     O[m][c] += sum_t P[m][t] V[t][c]      (A = P from S's registers, B = V)
 * with the online softmax in fp32 per row. Pages come through a ring of two shared-memory
 * stages (cp.async of the page's bytes). fp16 pages are copied straight into the fp16 tiles the
 * MMAs read; compressed pages are staged as bytes and decoded by the whole CTA into fp16 tiles
 * once per page (KIVI runs of 8 codes with the decode kernel's exact conversion; DecoQuant pages
 * rebuilt as small x dequant(large) in fp32, rounded once), so the decoding is shared by
 * M = R * G rows. The tile's own
 * block comes last, exact from the fp16 open pool, causally masked.
 *
 * Tiles in shared memory are rows of 16-byte chunks, XOR-swizzled so that the eight rows an
 * ldmatrix reads hit distinct banks: [T][D] (token rows) for fp16 and DecoQuant keys, values and
 * the own block; [D][T] (channel rows) for KIVI keys, whose codes run along tokens. */
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda.h" /* first: the C declarations in extern "C" */
#include "kernels/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/paged_prefill.cuh"

namespace {

enum { FMT_F16 = 0, FMT_KIVI = 1, FMT_DECO = 2 };
constexpr int kMaxM = 128; /* rows of a CTA: R * G */
constexpr float kLog2e = 1.4426950408889634f;

/* Byte offset of 16-byte chunk `chunk` of row `row` in a tile of CPR chunks per row. Rows of 8+
 * chunks XOR the chunk with row % 8; narrower rows XOR within each 128-byte line by the line. */
template <int CPR> DS_DEV uint32_t swz(int row, int chunk) {
    const int p = row * CPR + chunk;
    const int key = CPR >= 8 ? row : p >> 3;
    return (uint32_t)(((p & ~7) | ((p & 7) ^ (key & 7))) * 16);
}

/* cp.async of 16 bytes, zero-filled when !valid (src is not read then). */
DS_DEV void cp_async_16_zfill(uint32_t dst, const void *src, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

/* Eight BITS-bit codes (a run starting at a multiple of 8 codes) -> fp16 code * scale + min, as
 * four half2 words: the decode kernel's conversion (1024 + code exactly, minus 1024, one FMA). */
template <int BITS>
DS_DEV uint4 dequant8(const uint8_t *codes, int first, __half2 scale, __half2 mn) {
    uint32_t lo, hi; /* the run's 8 * BITS bits */
    if constexpr (BITS == 8) {
        const uint2 v = *reinterpret_cast<const uint2 *>(codes + first);
        lo = v.x, hi = v.y;
    } else if constexpr (BITS == 4) {
        lo = *reinterpret_cast<const uint32_t *>(codes + first / 2), hi = 0;
    } else {
        lo = *reinterpret_cast<const uint16_t *>(codes + first / 4), hi = 0;
    }
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int b0 = 2 * k * BITS, b1 = b0 + BITS; /* codes 2k and 2k+1 */
        constexpr uint32_t mask = (1u << BITS) - 1;
        const uint32_t c0 = ((b0 < 32 ? lo >> b0 : hi >> (b0 - 32))) & mask;
        const uint32_t c1 = ((b1 < 32 ? lo >> b1 : hi >> (b1 - 32))) & mask;
        const uint32_t x = (c0 | (c1 << 16)) | 0x64006400u;
        const __half2 c =
            __hsub2(*reinterpret_cast<const __half2 *>(&x), __float2half2_rn(1024.0f));
        const __half2 r = __hfma2(c, scale, mn);
        w[k] = *reinterpret_cast<const uint32_t *>(&r);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

DS_DEV __half2 half2_of(const uint8_t *params, int group, int which) {
    const __half h = reinterpret_cast<const __half *>(params)[2 * group + which];
    return __half2half2(h);
}

/* Code k of a payload of bits-bit codes (DecoQuant's rebuild). */
DS_DEV uint32_t code_at(const uint8_t *payload, int k, int bits) {
    const uint32_t bit = (uint32_t)k * bits;
    return (payload[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

/* A page pair staged in shared memory -> the fp16 key tile and value tile (whole CTA). */
template <int D, int T, int FMT, int BITS>
DS_DEV void decode_pages(const uint8_t *stage, uint8_t *ktile, uint8_t *vtile,
                         const kv_page_format &kf, const kv_page_format &vf) {
    const int tid = threadIdx.x, nth = blockDim.x;
    const uint8_t *kp = stage, *vp = stage + kf.page_bytes;
    if constexpr (FMT == FMT_KIVI) {
        /* keys: codes [c][t], one (scale, min) per channel -> tile [D][T] */
        for (int x = tid; x < D * (T / 8); x += nth) {
            const int c = x / (T / 8), t0 = (x % (T / 8)) * 8;
            const uint4 v = dequant8<BITS>(kp + kf.payload_offset, c * T + t0,
                                           half2_of(kp + kf.params_offset, c, 0),
                                           half2_of(kp + kf.params_offset, c, 1));
            *reinterpret_cast<uint4 *>(ktile + swz<T / 8>(c, t0 / 8)) = v;
        }
        /* values: codes [t][c], (scale, min) per (token, group of group_len channels) */
        const int ngv = D / vf.group_len;
        for (int x = tid; x < T * (D / 8); x += nth) {
            const int t = x / (D / 8), c0 = (x % (D / 8)) * 8, g = t * ngv + c0 / vf.group_len;
            const uint4 v = dequant8<BITS>(vp + vf.payload_offset, t * D + c0,
                                           half2_of(vp + vf.params_offset, g, 0),
                                           half2_of(vp + vf.params_offset, g, 1));
            *reinterpret_cast<uint4 *>(vtile + swz<D / 8>(t, c0 / 8)) = v;
        }
    } else { /* DecoQuant as classify() builds it: t1 = 1, d2 = 16, rank = d1 = D / 16, groups
              * of T along tokens: M'[c1][(t, c2)] = sum_r A[c1][r] B[r][(t, c2)] */
        constexpr int RK = D / 16;
        for (int x = tid; x < 2 * T * 16; x += nth) {
            const int which = x / (T * 16), t = x % T, c2 = (x / T) % 16;
            const kv_page_format &f = which ? vf : kf;
            const uint8_t *page = which ? vp : kp;
            uint8_t *tile = which ? vtile : ktile;
            const __half2 *params = reinterpret_cast<const __half2 *>(page + f.params_offset);
            float b[RK];
#pragma unroll
            for (int r = 0; r < RK; r++) {
                const int g = r * 16 + c2; /* the group, and the code's row in storage */
                const float2 sm = __half22float2(params[g]);
                b[r] = (float)code_at(page + f.payload_offset, g * T + t, BITS) * sm.x + sm.y;
            }
            const __half2 *small = reinterpret_cast<const __half2 *>(page + f.small_offset);
#pragma unroll
            for (int c1 = 0; c1 < RK; c1++) {
                float acc = 0.0f;
#pragma unroll
                for (int r = 0; r < RK; r += 2) { /* summed in order of r, as the reference */
                    const float2 a = __half22float2(small[(c1 * RK + r) / 2]);
                    acc += a.x * b[r];
                    acc += a.y * b[r + 1];
                }
                const int c = c1 * 16 + c2;
                *reinterpret_cast<__half *>(tile + swz<D / 8>(t, c / 8) + (c % 8) * 2) =
                    __float2half_rn(acc);
            }
        }
    }
}

/* S = Q K^T for one page: qa the warp's Q A-fragments, the key tile [T][D] or (KT) [D][T]. */
template <int D, int T, bool KT>
DS_DEV void scores(float s[T / 8][4], const uint32_t qa[D / 16][4], const uint8_t *ktile,
                   int lane) {
    const int mi = lane >> 3, j8 = lane & 7;
    const uint32_t base = smem_addr(ktile);
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++)
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < D / 16; j++)
#pragma unroll
        for (int nt = 0; nt < T / 8; nt += 2) {
            uint32_t b[4];
            if constexpr (!KT) {
                ldmatrix_x4(b, base + swz<D / 8>((nt + (mi >> 1)) * 8 + j8, 2 * j + (mi & 1)));
            } else {
                ldmatrix_x4_trans(b, base + swz<T / 8>(16 * j + (mi & 1) * 8 + j8, nt + (mi >> 1)));
            }
            mma_16816(s[nt], qa[j], b);
            mma_16816(s[nt + 1], qa[j], b + 2);
        }
}

/* Online softmax over one page's scores (log2 domain; masked entries -inf), then O += P V. */
template <int D, int T>
DS_DEV void softmax_values(float s[T / 8][4], float o[D / 8][4], float m[2], float l[2],
                           const uint8_t *vtile, int lane) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffffu, mx[e], 1));
        mx[e] = fmaxf(mx[e], __shfl_xor_sync(0xffffffffu, mx[e], 2));
    }
    float corr[2], mn[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        mn[e] = fmaxf(m[e], mx[e]);
        /* a row with nothing visible yet keeps max -inf: subtract 0 instead (all p are 0) */
        const float base = mn[e] == -INFINITY ? 0.0f : mn[e];
        corr[e] = exp2f(m[e] - base);
        m[e] = mn[e], mn[e] = base;
        l[e] *= corr[e];
    }
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        o[nd][0] *= corr[0], o[nd][1] *= corr[0];
        o[nd][2] *= corr[1], o[nd][3] *= corr[1];
    }
    uint32_t pa[T / 16][4];
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        const float p0 = exp2f(s[nt][0] - mn[0]), p1 = exp2f(s[nt][1] - mn[0]);
        const float p2 = exp2f(s[nt][2] - mn[1]), p3 = exp2f(s[nt][3] - mn[1]);
        l[0] += p0 + p1, l[1] += p2 + p3;
        pa[nt / 2][(nt & 1) * 2] = pack_half2(p0, p1);
        pa[nt / 2][(nt & 1) * 2 + 1] = pack_half2(p2, p3);
    }
    const int mi = lane >> 3, j8 = lane & 7;
    const uint32_t base = smem_addr(vtile);
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++)
#pragma unroll
        for (int nd = 0; nd < D / 8; nd += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, base + swz<D / 8>(16 * kk + (mi & 1) * 8 + j8, nd + (mi >> 1)));
            mma_16816(o[nd], pa[kk], b);
            mma_16816(o[nd + 1], pa[kk], b + 2);
        }
}

struct pf_plan {
    int R, n_warps;       /* query rows per CTA, warps (M / 16) */
    uint32_t stage_bytes; /* one stage: raw page pair (compressed) or the two fp16 tiles */
    float scale_log2;
};

template <int D, int T, int FMT, int BITS>
__global__ void __launch_bounds__(256)
    paged_prefill_kernel(const paged_attention_params p, const pf_plan plan) {
    constexpr int TILE = T * D * 2; /* bytes of one fp16 tile */
    extern __shared__ __align__(16) uint8_t smem[];
    const int n_tiles = p.exec[0];
    if ((int)blockIdx.x >= n_tiles) return;
    /* longest contexts first: tiles are in row order, so the last tile of a sequence goes first */
    const int tile = n_tiles - 1 - blockIdx.x;
    const int row0 = p.exec[2 + 2 * tile], n = p.exec[3 + 2 * tile];
    const int pos0 = p.row_pos[row0], seq = p.row_seq[row0];
    const int bq = pos0 / T, off0 = pos0 % T;
    const int R = plan.R, G = p.n_q_heads / p.n_kv_heads, h = blockIdx.y;
    const int lo = max((int)blockIdx.z * R, off0), hi = min((int)blockIdx.z * R + R, off0 + n);
    if (lo >= hi) return;
    const int first_row = row0 + (lo - off0), n_rows = hi - lo; /* this CTA's rows */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;

    /* Q A-fragments of the warp's rows m0 = 16 warp + gid and m1 = m0 + 8 (zero past the rows). */
    uint32_t qa[D / 16][4];
    int qrow[2], qhead[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int mrow = 16 * warp + gid + 8 * e, r = mrow / G;
        qrow[e] = r < n_rows ? first_row + r : -1;
        qhead[e] = h * G + mrow % G;
    }
#pragma unroll
    for (int j = 0; j < D / 16; j++)
#pragma unroll
        for (int e = 0; e < 2; e++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int c = 16 * j + 8 * half + 2 * tig;
                qa[j][e + 2 * half] =
                    qrow[e] >= 0
                        ? *reinterpret_cast<const uint32_t *>(p.q + (size_t)qrow[e] * p.q_stride +
                                                              (size_t)qhead[e] * D + c)
                        : 0u;
            }

    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++)
        o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;

    const int32_t *table = p.full_table + (size_t)seq * p.table_stride;
    const size_t pk = p.key_format.page_bytes, pair = pk + p.value_format.page_bytes;
    const uint8_t *head_pages = p.cache.full + (size_t)h * pair;
    const int H = p.n_kv_heads;
    const size_t ostride = (size_t)H * D; /* open pool row stride (elements) */
    const uint16_t *own =
        p.cache.open +
        (size_t)p.open_table[(size_t)seq * p.table_stride + bq] * p.cache.open_block_stride +
        (size_t)h * D;
    const int n_own = hi; /* own-block tokens this CTA can see: offsets < hi */
    uint8_t *stage0 = smem, *tiles = smem + 2 * plan.stage_bytes; /* compressed: one tile pair */

    /* Item k < bq: full page k, into stage k % 2 (fp16: as its two tiles; compressed: its bytes);
     * k == bq: the own block's fp16 rows (K then V, rows past n_own zero) as tiles, into stage
     * k % 2 (fp16) or the tile pair (compressed, which is free by then). */
    auto load = [&](int k) {
        uint8_t *dst = FMT != FMT_F16 && k == bq ? tiles : stage0 + (k & 1) * plan.stage_bytes;
        const uint32_t d = smem_addr(dst);
        if (k == bq) {
            for (int x = threadIdx.x; x < 2 * T * (D / 8); x += blockDim.x) {
                const int which = x / (T * (D / 8)), t = (x / (D / 8)) % T, ch = x % (D / 8);
                const uint16_t *src = own + ((size_t)which * T + t) * ostride + ch * 8;
                cp_async_16_zfill(d + which * TILE + swz<D / 8>(t, ch), t < n_own ? src : own,
                                  t < n_own);
            }
        } else {
            const uint8_t *src = head_pages + (size_t)table[k] * p.cache.full_block_stride;
            if constexpr (FMT == FMT_F16) {
                for (int x = threadIdx.x; x < 2 * T * (D / 8); x += blockDim.x) {
                    const int which = x / (T * (D / 8)), t = (x / (D / 8)) % T, ch = x % (D / 8);
                    cp_async_16(d + which * TILE + swz<D / 8>(t, ch), src + (size_t)x * 16);
                }
            } else {
                for (int x = threadIdx.x; x < (int)(pair / 16); x += blockDim.x)
                    cp_async_16(d + x * 16, src + (size_t)x * 16);
            }
        }
        cp_async_commit();
    };

    if (FMT == FMT_F16 || bq > 0) load(0);
    for (int k = 0; k <= bq; k++) {
        const bool own_block = k == bq;
        cp_async_wait<0>();
        __syncthreads(); /* item k landed (fp16); everyone is done with item k - 1's buffers */
        const uint8_t *ktile = tiles;
        if constexpr (FMT == FMT_F16) {
            if (!own_block) load(k + 1); /* into the other stage */
            ktile = stage0 + (k & 1) * plan.stage_bytes;
        } else if (!own_block) {
            if (k + 1 < bq) load(k + 1);
            decode_pages<D, T, FMT, BITS>(stage0 + (k & 1) * plan.stage_bytes, tiles, tiles + TILE,
                                          p.key_format, p.value_format);
            __syncthreads();
        } else {
            load(bq);
            cp_async_wait<0>();
            __syncthreads();
        }
        float s[T / 8][4];
        if (FMT == FMT_KIVI && !own_block)
            scores<D, T, true>(s, qa, ktile, lane);
        else
            scores<D, T, false>(s, qa, ktile, lane);
#pragma unroll
        for (int nt = 0; nt < T / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[nt][e] *= plan.scale_log2;
                if (own_block) { /* causal: token t is visible to the row at offset lo + r iff t <=
                                  */
                    const int t = 8 * nt + 2 * tig + (e & 1), mrow = 16 * warp + gid + 8 * (e >> 1);
                    if (t > lo + mrow / G) s[nt][e] = -INFINITY;
                }
            }
        softmax_values<D, T>(s, o, m, l, ktile + TILE, lane);
    }

#pragma unroll
    for (int e = 0; e < 2; e++) {
        l[e] += __shfl_xor_sync(0xffffffffu, l[e], 1);
        l[e] += __shfl_xor_sync(0xffffffffu, l[e], 2);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        if (qrow[e] < 0) continue;
        const float inv = 1.0f / l[e];
        uint16_t *out = p.out + (size_t)qrow[e] * p.out_stride + (size_t)qhead[e] * D;
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++)
            *reinterpret_cast<uint32_t *>(out + 8 * nd + 2 * tig) =
                pack_half2(o[nd][2 * e] * inv, o[nd][2 * e + 1] * inv);
    }
}

typedef void (*pf_kernel_fn)(const paged_attention_params, const pf_plan);

template <int D, int T> pf_kernel_fn pick_format(int fmt, int bits) {
    if (fmt == FMT_F16) return paged_prefill_kernel<D, T, FMT_F16, 16>;
    if (fmt == FMT_KIVI) {
        if (bits == 8) return paged_prefill_kernel<D, T, FMT_KIVI, 8>;
        if (bits == 4) return paged_prefill_kernel<D, T, FMT_KIVI, 4>;
        if (bits == 2) return paged_prefill_kernel<D, T, FMT_KIVI, 2>;
        return nullptr;
    }
    if (bits == 8) return paged_prefill_kernel<D, T, FMT_DECO, 8>;
    if (bits == 4) return paged_prefill_kernel<D, T, FMT_DECO, 4>;
    if (bits == 2) return paged_prefill_kernel<D, T, FMT_DECO, 2>;
    return nullptr;
}

/* The kernel for p's shape and the family paged_attention.cu's classify() chose. */
pf_kernel_fn pick(const paged_attention_params *p, int fmt) {
    switch (p->head_dim * 1000 + p->block_size) {
    case 64016: return pick_format<64, 16>(fmt, p->key_format.bits);
    case 64032: return pick_format<64, 32>(fmt, p->key_format.bits);
    case 64064: return pick_format<64, 64>(fmt, p->key_format.bits);
    case 128016: return pick_format<128, 16>(fmt, p->key_format.bits);
    case 128032: return pick_format<128, 32>(fmt, p->key_format.bits);
    case 128064: return pick_format<128, 64>(fmt, p->key_format.bits);
    default: return nullptr;
    }
}

pf_plan make_plan(const paged_attention_params *p, int fmt, size_t *smem) {
    pf_plan plan;
    const int T = p->block_size, D = p->head_dim, G = p->n_q_heads / p->n_kv_heads;
    int R = 1;
    while (2 * R <= T && 2 * R * G <= kMaxM)
        R *= 2;
    plan.R = R, plan.n_warps = R * G / 16;
    const uint32_t tile_pair = 4u * T * D;
    plan.stage_bytes =
        fmt == FMT_F16 ? tile_pair : p->key_format.page_bytes + p->value_format.page_bytes;
    plan.scale_log2 = p->scale * kLog2e;
    *smem = 2 * (size_t)plan.stage_bytes + (fmt == FMT_F16 ? 0 : tile_pair);
    return plan;
}

} // namespace

ds_status paged_prefill_cuda_setup(const paged_attention_params *p, int fmt, int smem_optin,
                                   char *msg, size_t msg_len) {
    const pf_kernel_fn k = pick(p, fmt);
    size_t smem;
    const pf_plan plan = make_plan(p, fmt, &smem);
    if (!k || plan.R * (p->n_q_heads / p->n_kv_heads) % 16)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged prefill (cuda): head_dim %d, block_size %d, %d query heads per kv "
                       "head",
                       p->head_dim, p->block_size, p->n_q_heads / p->n_kv_heads);
    if (smem > (size_t)smem_optin)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "paged prefill (cuda): %zu bytes of shared memory (the device has %d)", smem,
                       smem_optin);
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return DS_OK;
}

ds_status paged_prefill_cuda_launch(const paged_attention_params *p, int fmt, cudaStream_t stream,
                                    char *msg, size_t msg_len) {
    const pf_kernel_fn k = pick(p, fmt);
    size_t smem;
    const pf_plan plan = make_plan(p, fmt, &smem);
    if (!k) return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "paged prefill (cuda): no kernel");
    const dim3 grid(p->n_rows, p->n_kv_heads, p->block_size / plan.R);
    k<<<grid, plan.n_warps * 32, smem, stream>>>(*p, plan);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
