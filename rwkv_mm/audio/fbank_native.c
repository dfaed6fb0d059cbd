/* Fused CPU loops of the Kaldi fbank (rwkv_mm.audio.fbank.KaldiFbank).
 *
 * Compiled on first use by fbank_native.py with -ffp-contract=off: every float operation below
 * rounds on its own, exactly as the separate float32 torch operations of the reference do
 * (torchaudio.compliance.kaldi.fbank), so the frames handed to the FFT are bit-identical.
 */
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

/* Frames → zero-padded FFT input rows.
 *   wave:   n_clips rows of samples, `clip_stride` floats apart; frame t starts at t·shift.
 *   means:  [n_clips·n_frames] per-frame means to remove, or NULL (no DC removal).
 *   out:    [n_clips·n_frames, n_fft]; samples win..n_fft-1 are zeroed.
 * Per frame: y = x − μ; z_0 = y_0 − fl(p·y_0), z_j = y_j − fl(p·y_{j−1}); out_j = z_j·w_j.
 * With preemph == 0 the pre-emphasis step is skipped (z = y), as the reference does. */
MULTIVERSION
void fbank_prepare_frames(const float *wave, int64_t clip_stride, int64_t n_clips,
                          int64_t n_frames, int64_t shift, int64_t win, int64_t n_fft,
                          const float *means, float preemph, const float *window,
                          float *out) {
    float y[win];
    for (int64_t c = 0; c < n_clips; c++) {
        for (int64_t t = 0; t < n_frames; t++) {
            const float *restrict x = wave + c * clip_stride + t * shift;
            float *restrict o = out + (c * n_frames + t) * n_fft;
            if (means) {
                const float mu = means[c * n_frames + t];
                for (int64_t j = 0; j < win; j++) y[j] = x[j] - mu;
            } else {
                memcpy(y, x, (size_t)win * sizeof(float));
            }
            if (preemph != 0.0f) {
                o[0] = (y[0] - preemph * y[0]) * window[0];
                for (int64_t j = 1; j < win; j++) o[j] = (y[j] - preemph * y[j - 1]) * window[j];
            } else {
                for (int64_t j = 0; j < win; j++) o[j] = y[j] * window[j];
            }
            memset(o + win, 0, (size_t)(n_fft - win) * sizeof(float));
        }
    }
}

/* Power spectrum → mel energies, band by band, TILE rows (frames) at a time.
 *   spec:   [rows, n_bins, 2] (real, imaginary) as torch.view_as_real(rfft(...)) lays it out.
 *   Filter m has weights weights[offset[m] + i] for bins lo[m] + i, i < hi[m] − lo[m].
 *   out:    row r at out + r·out_stride, n_mel values.
 * The powers of TILE frames sit side by side, so the sum over a filter's bins runs on TILE
 * independent accumulators (one vector), each adding its bins in order. */
#define TILE 8
typedef float tile_t __attribute__((vector_size(TILE * sizeof(float))));  /* GCC/Clang vectors */
MULTIVERSION
void fbank_mel_energies(const float *spec, int64_t rows, int64_t n_bins, int64_t n_mel,
                        const int32_t *lo, const int32_t *hi, const int64_t *offset,
                        const float *weights, float *out, int64_t out_stride) {
    tile_t power[n_bins];  /* power[k][i]: bin k of frame r0 + i */
    for (int64_t r0 = 0; r0 < rows; r0 += TILE) {
        const int64_t nr = rows - r0 < TILE ? rows - r0 : TILE;
        const float *src[TILE];  /* the last frame stands in for missing ones (results unused) */
        for (int64_t i = 0; i < TILE; i++) src[i] = spec + (r0 + (i < nr ? i : nr - 1)) * n_bins * 2;
        for (int64_t k = 0; k < n_bins; k++) {
            tile_t re, im;
            for (int64_t i = 0; i < TILE; i++) re[i] = src[i][2 * k], im[i] = src[i][2 * k + 1];
            power[k] = re * re + im * im;
        }
        for (int64_t m = 0; m < n_mel; m++) {
            const float *restrict w = weights + offset[m] - lo[m];
            tile_t acc = {0};
            for (int64_t k = lo[m]; k < hi[m]; k++) acc += power[k] * w[k];
            for (int64_t i = 0; i < nr; i++) out[(r0 + i) * out_stride + m] = acc[i];
        }
    }
}
