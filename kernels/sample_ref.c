/* kernels/sample_ref.c — the sampling reference (see sample.h), fast enough to be the CPU
 * backend's sampler: top-k is a size-k heap selection (O(vocab log k)); top-p first drops the
 * candidates that cannot be in the nucleus (a probability threshold, O(vocab) per try) and
 * heap-ranks only the rest; plain sampling is one scan in id order. */
#include "kernels/sample.h"

#include <string.h>

/* One candidate in scratch: probability and token id. */
typedef struct sample_candidate {
    float prob;
    int32_t id;
} sample_candidate;

size_t sample_ref_scratch_bytes(int vocab) { return (size_t)vocab * sizeof(sample_candidate); }

int32_t sample_argmax_ref(const float *logits, int vocab) {
    int32_t best = -1;
    float best_logit = -INFINITY;
    for (int32_t i = 0; i < vocab; i++)
        if (logits[i] > best_logit) { /* strict: ties keep the lower id; NaN compares false */
            best_logit = logits[i];
            best = i;
        }
    return best;
}

static int cand_before(sample_candidate a, sample_candidate b) {
    return a.prob > b.prob || (a.prob == b.prob && a.id < b.id);
}

/* Binary heap over h[0..n); worst_on_top = 1: the root is the lowest-ranked candidate (top-k
 * selection), 0: the root is the best (popping in rank order). */
static void heap_sift_down(sample_candidate *h, int n, int i, int worst_on_top) {
    sample_candidate v = h[i];
    for (;;) {
        int child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && cand_before(h[child + 1], h[child]) != worst_on_top) child++;
        if (cand_before(h[child], v) == worst_on_top) break;
        h[i] = h[child];
        i = child;
    }
    h[i] = v;
}

/* The first of c[0..n) whose running mass exceeds r (< the mass of c[0..n)). */
static int32_t draw(const sample_candidate *c, int n, uint64_t r) {
    uint64_t acc = 0;
    for (int j = 0; j < n; j++) {
        acc += sample_mass(c[j].prob);
        if (acc > r) return c[j].id;
    }
    return c[n - 1].id; /* not reached: r is below the mass */
}

/* Top-k: the k best of c[0..n) end up in c[0..k), best first, in O(n log k). */
static void select_top_k(sample_candidate *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(c, k, i, 1);
    for (int j = k; j < n; j++)
        if (cand_before(c[j], c[0])) {
            sample_candidate t = c[0];
            c[0] = c[j];
            c[j] = t;
            heap_sift_down(c, k, 0, 1);
        }
    /* Heap-sort: the worst goes to the back each time, leaving c[0..k) best first. */
    for (int end = k - 1; end > 0; end--) {
        sample_candidate t = c[0];
        c[0] = c[end];
        c[end] = t;
        heap_sift_down(c, end, 0, 1);
    }
}

/* Top-p without top-k: returns m such that c[0..m) is the nucleus, best first, the shortest rank
 * prefix holding at least `target` mass (at least one token). Only candidates that can be in it
 * are ranked: for a threshold t whose set {prob >= t} already carries the target mass, the
 * nucleus lies inside that set, so the set is compacted to the front and only it is heap-ranked. */
static int select_nucleus(sample_candidate *c, int n, uint64_t target, uint64_t *kept) {
    float threshold = 1e-3f; /* relative to the best candidate, whose prob is exactly 1 */
    for (;;) {
        uint64_t mass = 0;
        for (int i = 0; i < n; i++)
            if (c[i].prob >= threshold) mass += sample_mass(c[i].prob);
        if (mass >= target || threshold == 0.0f) break;
        threshold = threshold > 1e-30f ? threshold * 1e-3f : 0.0f;
    }
    int n_set = 0;
    for (int i = 0; i < n; i++)
        if (c[i].prob >= threshold) c[n_set++] = c[i];
    /* Pop the best one at a time into the tail, c[n_set - 1 - m], until the target is reached. */
    for (int i = n_set / 2 - 1; i >= 0; i--)
        heap_sift_down(c, n_set, i, 0);
    int n_heap = n_set, m = 0;
    uint64_t acc = 0;
    while (n_heap > 0 && (m == 0 || acc < target)) {
        sample_candidate best = c[0];
        c[0] = c[--n_heap];
        heap_sift_down(c, n_heap, 0, 0);
        c[n_set - 1 - m] = best;
        acc += sample_mass(best.prob);
        m++;
    }
    /* The popped tail c[n_set - m .. n_set) is worst first: reverse it, move it to the front. */
    sample_candidate *tail = c + (n_set - m);
    for (int a = 0, b = m - 1; a < b; a++, b--) {
        sample_candidate t = tail[a];
        tail[a] = tail[b];
        tail[b] = t;
    }
    memmove(c, tail, sizeof(sample_candidate) * m);
    *kept = acc;
    return m;
}

/* log softmax(logits)[id] at temperature 1 (the sum in double: a float sum over a 128k
 * vocabulary drifts by ~1e-3). */
static float raw_logprob(const float *logits, int vocab, float max, int32_t id) {
    double sum = 0.0;
    for (int i = 0; i < vocab; i++)
        sum += sample_prob(logits[i], max, 1.0f);
    return (float)((double)((logits[id] < FLT_MAX ? logits[id] : FLT_MAX) - max) - log(sum));
}

static int32_t sample_token(const float *logits, int vocab, const sample_row *p, float max,
                            sample_candidate *c) {
    const int top_k = p->top_k > 0 && p->top_k < vocab ? p->top_k : 0;
    uint64_t total = 0;
    for (int i = 0; i < vocab; i++) {
        c[i] = (sample_candidate){sample_prob(logits[i], max, p->temperature), i};
        total += sample_mass(c[i].prob);
    }
    if (top_k == 0 && p->top_p >= 1.0f) return draw(c, vocab, sample_scale_mass(p->u, total));
    if (top_k == 0) {
        uint64_t kept;
        int m = select_nucleus(c, vocab, (uint64_t)((double)p->top_p * (double)total), &kept);
        return draw(c, m, sample_scale_mass(p->u, kept));
    }
    select_top_k(c, vocab, top_k);
    uint64_t kept = 0;
    for (int j = 0; j < top_k; j++)
        kept += sample_mass(c[j].prob);
    if (p->top_p >= 1.0f) return draw(c, top_k, sample_scale_mass(p->u, kept));
    /* The nucleus is cut from the top-k mass (as HF and vLLM: top-k, then top-p). */
    const uint64_t nucleus = (uint64_t)((double)p->top_p * (double)kept);
    uint64_t acc = 0;
    int m = 0;
    while (m < top_k && (m == 0 || acc < nucleus))
        acc += sample_mass(c[m++].prob);
    return draw(c, m, sample_scale_mass(p->u, acc));
}

int32_t sample_row_ref(const float *logits, int vocab, const sample_row *row, void *scratch,
                       float *logprob) {
    float max = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > max) max = logits[i]; /* NaN compares false */
    if (max == -INFINITY) {
        if (logprob) *logprob = NAN;
        return -1;
    }
    max = fminf(max, FLT_MAX); /* +inf logits count as FLT_MAX, so (l - max) stays defined */
    const int32_t id = sample_is_greedy(row) ? sample_argmax_ref(logits, vocab)
                                             : sample_token(logits, vocab, row, max, scratch);
    if (logprob) *logprob = raw_logprob(logits, vocab, max, id);
    return id;
}
