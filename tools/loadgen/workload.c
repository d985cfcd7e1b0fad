/* tools/loadgen/workload.c — seeded requests: lengths, prompts, Poisson arrivals, cancel points. */
#include "tools/loadgen/workload.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

/* Offsets that split one seed into independent splitmix64 streams. */
static const uint64_t ARRIVAL_STREAM = 0x5bd1e9955bd1e995ull;
static const uint64_t CANCEL_STREAM = 0xc2b2ae3d27d4eb4full;

int lg_workload_max_len(int len, double range_ratio) {
    int hi = (int)(len * (1.0 + range_ratio));
    return hi < 1 ? 1 : hi;
}

ds_status lg_workload_create(const lg_workload_options *o, lg_workload *w, char *msg,
                             size_t msg_len) {
    memset(w, 0, sizeof *w);
    if (o->num_requests < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "--num-requests = %d: expected at least 1",
                       o->num_requests);
    if (o->corpus ? o->n_corpus < 1 : o->vocab_size < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "%s",
                       o->corpus ? "--prompt-file: no tokens" : "vocab_size: expected >= 1");
    int n = o->num_requests;
    w->requests = calloc((size_t)n, sizeof *w->requests);
    size_t n_ids = (size_t)n * (size_t)lg_workload_max_len(o->input_len, o->range_ratio);
    w->ids = malloc(n_ids * sizeof *w->ids);
    int *order = malloc((size_t)n * sizeof *order);
    if (!w->requests || !w->ids || !order) {
        free(order);
        lg_workload_destroy(w);
        return ds_fail(msg, msg_len, DS_ENOMEM, "--num-requests %d x --input-len %d: out of memory",
                       n, o->input_len);
    }
    w->n_requests = n;

    ds_rng prompts = {o->seed}, arrivals = {o->seed ^ ARRIVAL_STREAM},
           cancels = {o->seed ^ CANCEL_STREAM};
    int32_t *ids = w->ids;
    double t = 0;
    for (int i = 0; i < n; i++) {
        lg_request *q = &w->requests[i];
        int len = ds_rng_len(&prompts, o->input_len, o->range_ratio);
        if (o->corpus) {
            if (len > o->n_corpus) len = o->n_corpus;
            uint64_t start = ds_rng_u64(&prompts) % (uint64_t)(o->n_corpus - len + 1);
            memcpy(ids, o->corpus + start, (size_t)len * sizeof *ids);
        } else {
            for (int k = 0; k < len; k++)
                ids[k] = (int32_t)(ds_rng_u64(&prompts) % (uint64_t)o->vocab_size);
        }
        q->prompt_ids = ids;
        q->n_prompt_ids = len;
        ids += len;
        q->max_tokens = ds_rng_len(&prompts, o->output_len, o->range_ratio);
        if (o->rate > 0) t += -log(1.0 - ds_rng_uniform(&arrivals)) / o->rate;
        q->arrival_s = t;
        q->cancel_after_tokens = -1;
    }

    /* A partial Fisher-Yates shuffle picks exactly n_cancel distinct requests. */
    int n_cancel = (int)lround(o->cancel_fraction * n);
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 0; i < n_cancel; i++) {
        int j = i + (int)(ds_rng_u64(&cancels) % (uint64_t)(n - i));
        int pick = order[j];
        order[j] = order[i];
        order[i] = pick;
        lg_request *q = &w->requests[pick];
        q->cancel_after_tokens = (int)(ds_rng_u64(&cancels) % (uint64_t)q->max_tokens);
    }
    free(order);
    return DS_OK;
}

void lg_workload_destroy(lg_workload *w) {
    free(w->requests);
    free(w->ids);
    memset(w, 0, sizeof *w);
}
