/* fuzz/hf_fuzz.c — a Hugging Face folder's two parsed files: the safetensors header (with every
 * tensor it lists converted when small) and config.json. The first byte picks which one the rest
 * of the input is: even a .safetensors file, odd a config.json. */
#include <stdlib.h>

#include "engine/loader/llama_hf.h"
#include "engine/loader/safetensors.h"
#include "fuzz/fuzz_input.h"

enum { MAX_CONVERT = 1 << 16 };

static void safetensors(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("model.safetensors", data, size);
    safetensors_file *f;
    char msg[512];
    if (safetensors_open(path, &f, msg, sizeof msg) != DS_OK) return;
    for (size_t i = 0; i < safetensors_n_tensors(f); i++) {
        const safetensors_tensor *t = safetensors_tensor_at(f, i);
        if (safetensors_find(f, t->name) != t) abort(); /* names are unique */
        if (t->n_elements > MAX_CONVERT) continue;
        float *dst = malloc((t->n_elements + 1) * sizeof *dst);
        if (dst) safetensors_to_f32(t, dst, msg, sizeof msg);
        free(dst);
    }
    safetensors_metadata(f, "format");
    safetensors_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] % 2 == 0) {
        safetensors(data + 1, size - 1);
    } else {
        fuzz_input_file("config.json", data + 1, size - 1);
        llama_config config;
        char msg[512];
        llama_hf_read_config(fuzz_input_dir(), &config, msg, sizeof msg);
    }
    return 0;
}
