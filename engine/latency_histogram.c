/* engine/latency_histogram.c — vLLM's bucket bounds (vllm/v1/metrics/loggers.py) and a linear
 * search over at most 24 of them per observation. */
#include "engine/latency_histogram.h"

#include <string.h>

#include "common/log.h"

static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                     20.0,  40.0,  80.0, 160,  640,  2560};
static const double INTER_TOKEN_BOUNDS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                            0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                            7.5,  10.0,  20.0, 40.0,  80.0};
static const double E2E_BOUNDS[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240, 480, 960, 1920, 7680};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))
_Static_assert(N_OF(TTFT_BOUNDS) <= LATENCY_HISTOGRAM_MAX_BOUNDS, "TTFT bounds");
_Static_assert(N_OF(INTER_TOKEN_BOUNDS) <= LATENCY_HISTOGRAM_MAX_BOUNDS, "ITL bounds");
_Static_assert(N_OF(E2E_BOUNDS) <= LATENCY_HISTOGRAM_MAX_BOUNDS, "e2e bounds");

void latency_histogram_init(latency_histogram *h, latency_histogram_kind kind) {
    memset(h, 0, sizeof *h);
    switch (kind) {
    case LATENCY_TTFT: h->bounds = TTFT_BOUNDS, h->n_bounds = N_OF(TTFT_BOUNDS); break;
    case LATENCY_INTER_TOKEN:
        h->bounds = INTER_TOKEN_BOUNDS, h->n_bounds = N_OF(INTER_TOKEN_BOUNDS);
        break;
    case LATENCY_E2E: h->bounds = E2E_BOUNDS, h->n_bounds = N_OF(E2E_BOUNDS); break;
    }
    DS_ASSERT(h->bounds != NULL);
}

void latency_histogram_observe(latency_histogram *h, double seconds) {
    int i = 0;
    while (i < h->n_bounds && seconds > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum_s += seconds;
    h->count++;
}
