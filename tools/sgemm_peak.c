/*
 * sgemm_peak: OpenBLAS sgemm GFLOP/s on this machine, for the CPU engine's bench note.
 * Usage: sgemm_peak D E R N V T   (prints JSON: the model's four layer GEMMs and the lm_head
 * at T tokens, and a large square GEMM). Built by tools/bench_cpu.sh; not part of fmbatch.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s of C[M,N] = A[M,K] B[N,K]^T, best of reps. */
static double rate(int M, int N, int K, int reps)
{
    float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)N * K * 4),
          *C = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = (float)(i % 17) * 0.01f;
    for (size_t i = 0; i < (size_t)N * K; i++)
        B[i] = (float)(i % 13) * 0.01f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
        t = now() - t;
        if (t < best)
            best = t;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: sgemm_peak D E R N V T\n");
        return 2;
    }
    int D = atoi(argv[1]), E = atoi(argv[2]), R = atoi(argv[3]), N = atoi(argv[4]),
        V = atoi(argv[5]), T = atoi(argv[6]);
    double in = rate(T, 2 * E, D, 5), xp = rate(T, R + 2 * N, E, 5), dt = rate(T, E, R, 5),
           out = rate(T, D, E, 5), head = rate(T, V, D, 3), sq = rate(2048, 2048, 2048, 3);
    // time-weighted mix of the model's shapes, per token
    double f_in = 2.0 * 2 * E * D, f_xp = 2.0 * (R + 2 * N) * E, f_dt = 2.0 * E * R,
           f_out = 2.0 * D * E, f_head = 2.0 * V * D;
    printf("{\"in_proj\":%.1f,\"x_proj\":%.1f,\"dt_proj\":%.1f,\"out_proj\":%.1f,\"lm_head\":%.1f,"
           "\"square2048\":%.1f,\"layer_flops_per_token\":%.0f,\"head_flops_per_token\":%.0f,"
           "\"layer_mix_gflops\":%.1f}\n",
           in, xp, dt, out, head, sq, f_in + f_xp + f_dt + f_out, f_head,
           (f_in + f_xp + f_dt + f_out) / (f_in / in + f_xp / xp + f_dt / dt + f_out / out));
    return 0;
}
