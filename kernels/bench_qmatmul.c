/* kernels/bench_qmatmul.c — microbenchmark of qm_matmul on the SmolLM2-135M linear-layer shapes:
 * Q8_0 (our kernels, on a threadpool) vs fp32 (OpenBLAS sgemm), decode (n = 1) and prefill
 * (n = 128), reported as time per call and GB/s of weight bytes read. Also measures Q8_0 calls
 * interleaved with OpenBLAS calls (both thread sets sharing the cores).
 * Usage: bench_qmatmul [min_seconds_per_case]   (env DECOSERVE_THREADS, DECOSERVE_QM_ISA) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/threadpool.h"
#include "kernels/qmatmul.h"

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* Best of 5 batches of the mean time per call, each batch >= min_s / 5 seconds. Calls cycle
 * through n_copies copies of the matrix (> 2x the 32 MiB L3 in total), so weights come from DRAM
 * as in a real decode step, which streams every layer's weights once per token. */
static double time_call(const qm_matrix *copies, int n_copies, const float *x, float *y, int n,
                        threadpool *pool, void *scratch, double min_s) {
    qm_matmul(y, x, &copies[0], n, pool, scratch);
    double best = 1e30;
    int c = 0;
    for (int batch = 0; batch < 5; batch++) {
        int reps = 0;
        double t0 = ds_now_s(), t1;
        do {
            qm_matmul(y, x, &copies[c], n, pool, scratch);
            c = (c + 1) % n_copies;
            reps++;
            t1 = ds_now_s();
        } while (t1 - t0 < min_s / 5);
        if ((t1 - t0) / reps < best) best = (t1 - t0) / reps;
    }
    return best;
}

#define COLD_BYTES (80u << 20)

static qm_matrix *make_copies(qm_type type, const float *src, int rows, int cols, int *n_copies) {
    *n_copies = (int)(COLD_BYTES / qm_bytes(type, rows, cols)) + 1;
    qm_matrix *m = calloc((size_t)*n_copies, sizeof *m);
    char msg[256];
    for (int i = 0; i < *n_copies; i++)
        if (qm_create(&m[i], type, src, rows, cols, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s\n", msg);
            exit(1);
        }
    return m;
}

static void free_copies(qm_matrix *m, int n_copies) {
    for (int i = 0; i < n_copies; i++)
        qm_destroy(&m[i]);
    free(m);
}

int main(int argc, char **argv) {
    double min_s = argc > 1 ? atof(argv[1]) : 1.0;
    threadpool *pool = NULL;
    char msg[256];
    if (threadpool_create(&pool, 0, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    printf("threads=%d isa=%s\n", threadpool_n_threads(pool), qm_isa_name(qm_isa_active()));
    const int shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
    const int ns[] = {1, 128};
    printf("%-12s %4s | %10s %8s | %10s %8s | %6s\n", "out x in", "n", "q8_0 us", "GB/s", "f32 us",
           "GB/s", "speedup");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        unsigned seed = 1;
        float *src = malloc(sizeof(float) * rows * cols);
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            src[i] = 0.05f * frand(&seed);
        int nq, nf;
        qm_matrix *wq = make_copies(QM_Q8_0, src, rows, cols, &nq);
        qm_matrix *wf = make_copies(QM_F32, src, rows, cols, &nf);
        free(src);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int n = ns[k];
            float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
            for (size_t i = 0; i < (size_t)n * cols; i++)
                x[i] = frand(&seed);
            void *scratch = malloc(qm_scratch_bytes(&wq[0], n));
            double tq = time_call(wq, nq, x, y, n, pool, scratch, min_s);
            double tf = time_call(wf, nf, x, y, n, pool, scratch, min_s);
            double bq = (double)qm_bytes(QM_Q8_0, rows, cols),
                   bf = (double)qm_bytes(QM_F32, rows, cols);
            char shape[32];
            snprintf(shape, sizeof shape, "%dx%d", rows, cols);
            printf("%-12s %4d | %10.1f %8.1f | %10.1f %8.1f | %6.2fx\n", shape, n, tq * 1e6,
                   bq / tq / 1e9, tf * 1e6, bf / tf / 1e9, tf / tq);
            fflush(stdout);
            free(x);
            free(y);
            free(scratch);
        }
        free_copies(wq, nq);
        free_copies(wf, nf);
    }

    /* Interference: one Q8_0 GEMV right after one OpenBLAS GEMV, 576x576, n = 1 (in cache). */
    {
        int rows = 576, cols = 576;
        unsigned seed = 7;
        float *src = malloc(sizeof(float) * rows * cols);
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            src[i] = frand(&seed);
        qm_matrix wq, wf;
        qm_create(&wq, QM_Q8_0, src, rows, cols, msg, sizeof msg);
        qm_create(&wf, QM_F32, src, rows, cols, msg, sizeof msg);
        float x[576], y[576];
        for (int i = 0; i < cols; i++)
            x[i] = frand(&seed);
        void *scratch = malloc(qm_scratch_bytes(&wq, 1));
        double tq = time_call(&wq, 1, x, y, 1, pool, scratch, min_s);
        double tf = time_call(&wf, 1, x, y, 1, pool, scratch, min_s);
        int reps = 0;
        double t0 = ds_now_s(), t1;
        do {
            qm_matmul(y, x, &wf, 1, pool, scratch);
            qm_matmul(y, x, &wq, 1, pool, scratch);
            reps++;
            t1 = ds_now_s();
        } while (t1 - t0 < min_s);
        printf("interleaved 576x576 n=1: q8_0 alone %.1f us + f32 alone %.1f us = %.1f us; "
               "alternating pair %.1f us\n",
               tq * 1e6, tf * 1e6, (tq + tf) * 1e6, (t1 - t0) / reps * 1e6);
        free(src);
        free(scratch);
        qm_destroy(&wq);
        qm_destroy(&wf);
    }
    threadpool_destroy(pool);
    return 0;
}
