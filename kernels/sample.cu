/* kernels/sample.cu — kernels/sample.h on the GPU: one CTA per row of logits, only the token id
 * (and its log-probability) leaves the device. Selections in rank order (the k-th token for
 * top-k, the nucleus boundary, the draw) are a bitwise search on the probability's bits: the
 * largest key K whose set {key >= K} passes the test (count >= k, mass >= target, mass > r),
 * each step one pass over the row and a CTA reduction of exact integer masses, so the result
 * does not depend on the order threads add in. Ties at the found probability go to the lower
 * ids, found by a scan over contiguous id ranges; the plain draw (id order) is the same scan
 * over masses. Reference: sample_row_ref (kernels/sample_ref.c); tests/gpu compares. */
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kernels/sample.h"

namespace {

constexpr int kThreads = 512;

struct best_logit {
    float v;
    int32_t id; /* -1: none */
};

struct best_op {
    __device__ best_logit operator()(best_logit a, best_logit b) const {
        if (a.id < 0) return b;
        if (b.id < 0) return a;
        return a.v > b.v || (a.v == b.v && a.id < b.id) ? a : b;
    }
};

struct count_mass {
    uint32_t count;
    uint64_t mass;
};

struct count_mass_op {
    __device__ count_mass operator()(count_mass a, count_mass b) const {
        return {a.count + b.count, a.mass + b.mass};
    }
};

using reduce_best = cub::BlockReduce<best_logit, kThreads>;
using reduce_double = cub::BlockReduce<double, kThreads>;
using reduce_cm = cub::BlockReduce<count_mass, kThreads>;
using reduce_u64 = cub::BlockReduce<unsigned long long, kThreads>;
using scan_u64 = cub::BlockScan<unsigned long long, kThreads>;

struct shared_state {
    union {
        reduce_best::TempStorage best;
        reduce_double::TempStorage f;
        reduce_cm::TempStorage cm;
        reduce_u64::TempStorage u64;
        scan_u64::TempStorage scan;
    } tmp;
    best_logit best;
    double sum;
    count_mass cm;
    unsigned long long total;
    int32_t found;
};

enum select_mode { BY_COUNT, MASS_AT_LEAST, MASS_ABOVE };

/* count and mass of the row's tokens whose key (probability bits) is >= key. */
__device__ count_mass at_or_above(const float *pr, int V, uint32_t key, shared_state &sh) {
    count_mass local = {0, 0};
    for (int i = threadIdx.x; i < V; i += kThreads) {
        const float p = pr[i];
        if (__float_as_uint(p) >= key) local.count++, local.mass += sample_mass(p);
    }
    const count_mass all = reduce_cm(sh.tmp.cm).Reduce(local, count_mass_op());
    if (threadIdx.x == 0) sh.cm = all;
    __syncthreads();
    const count_mass out = sh.cm;
    __syncthreads();
    return out;
}

__device__ bool passes(select_mode mode, count_mass s, uint64_t t) {
    switch (mode) {
    case BY_COUNT: return s.count >= t;
    case MASS_AT_LEAST: return s.count > 0 && s.mass >= t;
    default: return s.mass > t;
    }
}

/* The id of the n-th (1-based) token, in id order, for which take(i) holds, with take's weight
 * w(i) (1 for a count, the mass for the draw): the first id whose running weight exceeds n - 1
 * when weights are counts, or exceeds r = n when they are masses (see callers). Contiguous id
 * ranges per thread, an exclusive scan, then the one thread whose range holds it walks it. */
template <typename Weight>
__device__ int32_t nth_in_id_order(int V, uint64_t r, Weight w, shared_state &sh) {
    const int chunk = (V + kThreads - 1) / kThreads;
    const int lo = threadIdx.x * chunk, hi = min(V, lo + chunk);
    unsigned long long local = 0;
    for (int i = lo; i < hi; i++)
        local += w(i);
    unsigned long long before;
    if (threadIdx.x == 0) sh.found = -1;
    scan_u64(sh.tmp.scan).ExclusiveSum(local, before);
    __syncthreads();
    if (before <= r && r < before + local) {
        uint64_t acc = before;
        for (int i = lo; i < hi; i++)
            if ((acc += w(i)) > r) {
                sh.found = i;
                break;
            }
    }
    __syncthreads();
    const int32_t id = sh.found;
    __syncthreads();
    return id;
}

/* The token in rank order (p descending, id ascending) at which the rank prefix first passes
 * the test; *prefix_mass gets the mass of the prefix through it. */
__device__ int32_t rank_select(const float *pr, int V, select_mode mode, uint64_t t,
                               uint64_t *prefix_mass, shared_state &sh) {
    uint32_t key = 0;
    for (int bit = 30; bit >= 0; bit--) { /* probabilities are >= 0: bit 31 is never set */
        const uint32_t cand = key | (1u << bit);
        if (passes(mode, at_or_above(pr, V, cand, sh), t)) key = cand;
    }
    /* key is the probability's bits; ties at it are taken in id order */
    const count_mass above = at_or_above(pr, V, key + 1, sh);
    const uint64_t q = sample_mass(__uint_as_float(key));
    uint64_t j; /* how many of the tied tokens the prefix takes */
    if (mode == BY_COUNT)
        j = t - above.count;
    else if (mode == MASS_AT_LEAST)
        j = q == 0 || t <= above.mass ? 1 : (t - above.mass + q - 1) / q;
    else
        j = (t - above.mass) / q + 1;
    if (j == 0) j = 1;
    *prefix_mass = above.mass + j * q;
    return nth_in_id_order(
        V, j - 1, [&](int i) -> uint64_t { return __float_as_uint(pr[i]) == key; }, sh);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(sample_params p) {
    __shared__ shared_state sh;
    const int row = blockIdx.x;
    if (p.n_rows_dev && row >= *p.n_rows_dev) return;
    const int V = p.vocab;
    const float *x = p.logits + (size_t)row * V;
    float *pr = p.probs + (size_t)row * V;
    const sample_row sr = p.rows[row];

    best_logit local = {-INFINITY, -1};
    for (int i = threadIdx.x; i < V; i += kThreads)
        if (x[i] > local.v) local = {x[i], i}; /* ascending: ties keep the lower id; NaN never */
    const best_logit best = reduce_best(sh.tmp.best).Reduce(local, best_op());
    if (threadIdx.x == 0) sh.best = best;
    __syncthreads();
    if (sh.best.id < 0) {
        if (threadIdx.x == 0) {
            p.ids[row] = -1;
            if (p.logprobs) p.logprobs[row] = NAN;
        }
        return;
    }
    const float max = fminf(sh.best.v, FLT_MAX);
    double lse_sum = 0.0;
    if (p.logprobs) {
        double s = 0.0;
        for (int i = threadIdx.x; i < V; i += kThreads)
            s += sample_prob(x[i], max, 1.0f);
        s = reduce_double(sh.tmp.f).Sum(s);
        if (threadIdx.x == 0) sh.sum = s;
        __syncthreads();
        lse_sum = sh.sum;
        __syncthreads();
    }
    int32_t id = sh.best.id;
    if (!sample_is_greedy(&sr)) {
        unsigned long long tot = 0;
        for (int i = threadIdx.x; i < V; i += kThreads) {
            const float q = sample_prob(x[i], max, sr.temperature);
            pr[i] = q;
            tot += sample_mass(q);
        }
        tot = reduce_u64(sh.tmp.u64).Sum(tot);
        if (threadIdx.x == 0) sh.total = tot;
        __syncthreads(); /* also makes pr visible to the whole CTA */
        const uint64_t total = sh.total;
        const int top_k = sr.top_k > 0 && sr.top_k < V ? sr.top_k : 0;
        if (top_k == 0 && sr.top_p >= 1.0f) {
            id = nth_in_id_order(
                V, sample_scale_mass(sr.u, total),
                [&](int i) -> uint64_t { return sample_mass(pr[i]); }, sh);
        } else {
            uint64_t kept = total;
            if (top_k) rank_select(pr, V, BY_COUNT, (uint64_t)top_k, &kept, sh);
            if (sr.top_p < 1.0f)
                rank_select(pr, V, MASS_AT_LEAST, (uint64_t)((double)sr.top_p * (double)kept),
                            &kept, sh);
            uint64_t unused;
            id = rank_select(pr, V, MASS_ABOVE, sample_scale_mass(sr.u, kept), &unused, sh);
        }
    }
    if (threadIdx.x == 0) {
        p.ids[row] = id;
        if (p.logprobs)
            p.logprobs[row] =
                (float)((double)(id >= 0 ? fminf(x[id], FLT_MAX) - max : NAN) - log(lse_sum));
    }
}

} // namespace

ds_status sample_cuda(const sample_params *p, cudaStream_t stream, char *msg, size_t msg_len) {
    if (p->vocab <= 0 || p->n_rows < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "sample (cuda): %d rows of vocab %d", p->n_rows,
                       p->vocab);
    if (p->n_rows == 0) return DS_OK;
    sample_kernel<<<p->n_rows, kThreads, 0, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

namespace {

__global__ void sample_handoff_kernel(int32_t *tokens, const int32_t *src, const int32_t *ids,
                                      int n_rows) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_rows && src[i] >= 0) tokens[i] = sample_handoff_id(ids, src[i]);
}

} // namespace

ds_status sample_handoff_cuda(int32_t *tokens, const int32_t *src, const int32_t *ids, int n_rows,
                              cudaStream_t stream, char *msg, size_t msg_len) {
    if (n_rows < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "sample hand-off (cuda): %d rows", n_rows);
    if (n_rows == 0) return DS_OK;
    const int threads = 128;
    sample_handoff_kernel<<<(n_rows + threads - 1) / threads, threads, 0, stream>>>(tokens, src,
                                                                                    ids, n_rows);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
