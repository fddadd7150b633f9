/* MLA decode attention over the paged latent cache, float32, for CPUs.
 *
 * For each decoding sequence s and head h, over the sequence's own L = lens[s] context
 * tokens (not padded to the batch's longest):
 *     score[t]     = scale * q[s, h, :] . K_s[t, :]            (D = C + R: latent, rope key)
 *     out[s, h, :] = sum_t softmax(score)[t] * K_s[t, :C]      (the latent is the value too)
 * Block b of the sequence is cache block tables[s, b], stored transposed, [D][B]: row d
 * holds coordinate d of the block's B tokens, so both passes are B-wide vector
 * multiply-adds (GCC/Clang vector extensions) with no per-token horizontal sums. A
 * block's tail past L holds whatever was there; its scores are set to -inf.
 *
 * NUM_HEADS, DIM, LATENT and BLOCK are compile-time constants (cpu_kernels.py
 * builds one library per model shape), so every inner loop has a fixed trip count and
 * the accumulators stay in registers. Built with -O3 -ffast-math: results match the
 * torch path to float32 rounding, not bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(NUM_HEADS) || !defined(DIM) || !defined(LATENT) || !defined(BLOCK)
#error "build with -DNUM_HEADS=.. -DDIM=.. -DLATENT=.. -DBLOCK=.. (cpu_kernels.py does)"
#endif

typedef float vec __attribute__((vector_size(BLOCK * sizeof(float)), aligned(4)));  /* one block row */

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* q [S, H, D]; cache [blocks, D, B] (one layer); tables [S, width]; lens [S];
 * out [S, H, C]; scratch: NUM_HEADS * (max lens rounded up to BLOCK) floats. */
void moe_swarm_mla_decode(const float *restrict q, const float *restrict cache, const int64_t *restrict tables,
                          const int64_t *restrict lens, int64_t num_seqs, int64_t width, float scale,
                          float *restrict out, float *restrict scratch) {
    for (int64_t s = 0; s < num_seqs; s++) {
        const int64_t len = lens[s], num_blocks = (len + BLOCK - 1) / BLOCK, padded = num_blocks * BLOCK;
        const int64_t *table = tables + s * width;
        const float *qs = q + s * NUM_HEADS * DIM;
        float *os = out + s * NUM_HEADS * LATENT;
        if (len <= 0) {
            memset(os, 0, sizeof(float) * NUM_HEADS * LATENT);
            continue;
        }
        float qk[NUM_HEADS][DIM];
        for (int h = 0; h < NUM_HEADS; h++)
            for (int d = 0; d < DIM; d++) qk[h][d] = qs[h * DIM + d] * scale;

        /* scores, a block (B tokens) at a time */
        for (int64_t b = 0; b < num_blocks; b++) {
            const float *block = cache + table[b] * (DIM * BLOCK);
            vec acc[NUM_HEADS];
            for (int h = 0; h < NUM_HEADS; h++) acc[h] = (vec){0};
            for (int d = 0; d < DIM; d++) {
                const vec row = load(block + d * BLOCK);
                for (int h = 0; h < NUM_HEADS; h++) acc[h] += qk[h][d] * row;
            }
            for (int h = 0; h < NUM_HEADS; h++) memcpy(scratch + h * padded + b * BLOCK, &acc[h], sizeof(vec));
        }

        /* softmax per head; the last block's tail past len gets weight 0 */
        float inv_total[NUM_HEADS];
        for (int h = 0; h < NUM_HEADS; h++) {
            float *row = scratch + h * padded;
            float peak = row[0];
            for (int64_t t = 1; t < len; t++) peak = row[t] > peak ? row[t] : peak;
            float total = 0.0f;
            for (int64_t t = 0; t < len; t++) {
                row[t] = expf(row[t] - peak);
                total += row[t];
            }
            for (int64_t t = len; t < padded; t++) row[t] = 0.0f;
            inv_total[h] = 1.0f / total;
        }

        /* weighted sums of the latent rows (the first LATENT of each block's DIM rows) */
        vec acc[NUM_HEADS][LATENT];
        for (int h = 0; h < NUM_HEADS; h++)
            for (int c = 0; c < LATENT; c++) acc[h][c] = (vec){0};
        for (int64_t b = 0; b < num_blocks; b++) {
            const float *block = cache + table[b] * (DIM * BLOCK);
            vec p[NUM_HEADS];
            for (int h = 0; h < NUM_HEADS; h++) p[h] = load(scratch + h * padded + b * BLOCK);
            for (int c = 0; c < LATENT; c++) {
                const vec row = load(block + c * BLOCK);
                for (int h = 0; h < NUM_HEADS; h++) acc[h][c] += p[h] * row;
            }
        }
        for (int h = 0; h < NUM_HEADS; h++)
            for (int c = 0; c < LATENT; c++) {
                float sum = 0.0f;
                for (int r = 0; r < BLOCK; r++) sum += acc[h][c][r];
                os[h * LATENT + c] = sum * inv_total[h];
            }
    }
}
