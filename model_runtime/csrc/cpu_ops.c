/* Small float32 operations for the engine on CPU, each one call instead of several torch
 * operations (a tiny model's step is bound by how many operations it runs, not their
 * size). Built by cpu_kernels.py with -O3 -ffast-math: results match torch to
 * float32 rounding, not bit for bit.
 */
#include <math.h>
#include <stdint.h>

/* RMSNorm of each row: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight.
 * x rows are `stride` floats apart (a column slice of a wider tensor); out is dense. */
void moe_swarm_rms_norm(const float *restrict x, int64_t rows, int64_t dim, int64_t stride, const float *restrict weight,
                        float eps, float *restrict out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * stride;
        float *yr = out + r * dim;
        float sum = 0.0f;
        for (int64_t d = 0; d < dim; d++) sum += xr[d] * xr[d];
        const float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        for (int64_t d = 0; d < dim; d++) yr[d] = xr[d] * inv * weight[d];
    }
}

/* Index of each row's largest value, the first of equal ones (as torch.argmax; rows
 * holding NaN are not handled). Two passes: the maximum (vectorised), then its place. */
void moe_swarm_argmax(const float *restrict x, int64_t rows, int64_t cols, int64_t *restrict out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float peak = xr[0];
        for (int64_t c = 1; c < cols; c++) peak = xr[c] > peak ? xr[c] : peak;
        int64_t best = 0;
        while (best < cols - 1 && xr[best] != peak) best++;
        out[r] = best;
    }
}

/* MoE routing without group limits (DeepSeek-V3's noaux_tc with one group): per row,
 * sigmoid scores; the top k of score + bias (the bias picks, it does not weigh), in
 * descending order, the first of equal ones first; their unbiased scores, renormalised
 * when `normalize`, times `scaling`. */
void moe_swarm_route(const float *restrict logits, int64_t rows, int64_t experts, const float *restrict bias, int64_t k,
                     int normalize, float scaling, int64_t *restrict idx, float *restrict weights, float *restrict scratch) {
    float *scores = scratch, *biased = scratch + experts; /* scratch: 2 * experts floats */
    for (int64_t r = 0; r < rows; r++) {
        const float *lr = logits + r * experts;
        for (int64_t e = 0; e < experts; e++) {
            scores[e] = 1.0f / (1.0f + expf(-lr[e]));
            biased[e] = scores[e] + bias[e];
        }
        int64_t *ir = idx + r * k;
        float *wr = weights + r * k;
        float total = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < experts; e++)
                if (biased[e] != -INFINITY && (best < 0 || biased[e] > biased[best])) best = e;
            ir[j] = best;
            wr[j] = scores[best];
            total += scores[best];
            biased[best] = -INFINITY;
        }
        const float factor = normalize ? scaling / (total + 1e-20f) : scaling;
        for (int64_t j = 0; j < k; j++) wr[j] *= factor;
    }
}

/* Rotary embedding of interleaved pairs, written de-interleaved (evens then odds), as
 * layers/rope.py's complex path does: for pair i of each head,
 *     out[i]        = x[2i] * cos_i - x[2i+1] * sin_i
 *     out[R/2 + i]  = x[2i+1] * cos_i + x[2i] * sin_i
 * x [N, H, R] with row strides (stride_n, stride_h) (a slice of a wider tensor); rot
 * [N, R/2, 2] holds (cos, sin) per token and pair; out [N, H, R] dense. */
void moe_swarm_rope_pairs(const float *restrict x, int64_t tokens, int64_t heads, int64_t dim, int64_t stride_n,
                          int64_t stride_h, const float *restrict rot, float *restrict out) {
    const int64_t half = dim / 2;
    for (int64_t n = 0; n < tokens; n++) {
        const float *rn = rot + n * dim;
        for (int64_t h = 0; h < heads; h++) {
            const float *xh = x + n * stride_n + h * stride_h;
            float *oh = out + (n * heads + h) * dim;
            for (int64_t i = 0; i < half; i++) {
                const float c = rn[2 * i], s = rn[2 * i + 1], even = xh[2 * i], odd = xh[2 * i + 1];
                oh[i] = even * c - odd * s;
                oh[half + i] = odd * c + even * s;
            }
        }
    }
}

/* A small MoE layer's experts for a few tokens, sparse: each token through its k routed
 * experts (weights w) and the shared experts (weight 1) only,
 *     out[n] = sum_j w_j * down_e(silu(gate_e(x[n])) * up_e(x[n]))
 * with every expert's weights stored transposed so that both products are vector
 * multiply-adds along contiguous rows: w13t [E', D, 2I] (gate then up), w2t [E', I, D];
 * experts num_routed .. num_routed + num_shared - 1 are the shared ones. */
void moe_swarm_moe(const float *restrict x, int64_t tokens, int64_t dim, int64_t hidden, const int64_t *restrict idx,
                   const float *restrict weights, int64_t k, const float *restrict w13t, const float *restrict w2t,
                   int64_t num_routed, int64_t num_shared, float *restrict out, float *restrict scratch) {
    float *gate_up = scratch, *act = scratch + 2 * hidden; /* scratch: 3 * hidden floats */
    const int64_t width = 2 * hidden;
    for (int64_t n = 0; n < tokens; n++) {
        const float *xn = x + n * dim;
        float *on = out + n * dim;
        for (int64_t d = 0; d < dim; d++) on[d] = 0.0f;
        for (int64_t j = 0; j < k + num_shared; j++) {
            const int64_t e = j < k ? idx[n * k + j] : num_routed + (j - k);
            const float weight = j < k ? weights[n * k + j] : 1.0f;
            const float *w13 = w13t + e * dim * width;
            for (int64_t c = 0; c < width; c++) gate_up[c] = 0.0f;
            for (int64_t d = 0; d < dim; d++) {
                const float xd = xn[d];
                const float *row = w13 + d * width;
                for (int64_t c = 0; c < width; c++) gate_up[c] += xd * row[c];
            }
            for (int64_t i = 0; i < hidden; i++) {
                const float g = gate_up[i];
                act[i] = weight * g / (1.0f + expf(-g)) * gate_up[hidden + i];
            }
            const float *w2 = w2t + e * hidden * dim;
            for (int64_t i = 0; i < hidden; i++) {
                const float a = act[i];
                const float *row = w2 + i * dim;
                for (int64_t d = 0; d < dim; d++) on[d] += a * row[d];
            }
        }
    }
}
