/* engine/backend.h — the forward pass as the serving engine sees it: one struct of function
 * pointers per device (ggml's backend interface), so engine/serving.c runs the same scheduler
 * steps on the CPU (engine/llama.h) or a GPU (engine/cuda/cuda_backend.h).
 *
 * Lifetime: whoever creates a backend (llama_engine_create wrapped by the caller, or
 * cuda_backend_create) owns it and calls destroy(impl) once; the model and the KV cache it
 * borrows must outlive it. One engine thread calls forward; nothing here locks. */
#ifndef DS_ENGINE_BACKEND_H
#define DS_ENGINE_BACKEND_H

#include <stddef.h>

#include "common/status.h"
#include "engine/llama.h"
#include "kernels/sample.h"

typedef struct engine_backend {
    void *impl;
    const char *device; /* "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"; owned by impl */
    /* Same contract as llama_engine_forward: every sequence's new positions are reserved
     * (kv_seq_reserve with exactly its tokens); writes and compresses K/V, attends, and fills
     * logits [llama_step_logit_rows(seqs, n_seqs)][vocab] in batch order; the caller commits or
     * rolls back. */
    ds_status (*forward)(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                         char *msg, size_t msg_len);
    /* Optional (NULL: the caller samples forward's logits itself): forward, then one token for
     * every sequence that wants logits (each LLAMA_LOGITS_LAST or NONE), drawn where the logits
     * are by kernels/sample.h from rows[i] (i counts those sequences in batch order) into
     * tokens[i], with its log-probability in logprobs[i] (may be NULL): only these leave the
     * device. */
    ds_status (*forward_sample)(void *impl, const llama_step_seq *seqs, int n_seqs,
                                const sample_row *rows, int32_t *tokens, float *logprobs, char *msg,
                                size_t msg_len);
    /* Optional, both or neither (NULL: the engine steps through forward / forward_sample):
     * forward_sample split in two so that the host works while the device runs (the engine's
     * --async-scheduling). launch enqueues the step and returns without waiting for it; at most
     * two launched steps are uncollected at a time (DS_EINVAL for a third). prev_row (NULL: none)
     * hands tokens over on the device: prev_row[i] >= 0 makes sequence i's last token the id
     * that the previously launched step sampled at row prev_row[i] (kernels/sample.h's
     * sample_handoff_id), and that token, a placeholder, is not read. collect waits for the
     * oldest launched step and fills tokens[i] and logprobs[i] (may be NULL) for each of its
     * rows. A launch that fails leaves nothing launched; after a failed collect the engine still
     * collects the other launched steps (their results are dropped). */
    ds_status (*launch)(void *impl, const llama_step_seq *seqs, int n_seqs, const sample_row *rows,
                        const int32_t *prev_row, char *msg, size_t msg_len);
    ds_status (*collect)(void *impl, int32_t *tokens, float *logprobs, char *msg, size_t msg_len);
    void (*destroy)(void *impl);
    /* Optional (NULL: never fails by itself): NULL while the device is healthy, else why it is
     * not (a tensor-parallel peer died, noticed between steps); the string stays valid until
     * destroy. Safe to call from any thread, while forward runs too. */
    const char *(*failure)(void *impl);
} engine_backend;

#endif
