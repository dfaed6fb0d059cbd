// Host-side interface of the WKV-7 (Goose) CUDA kernels (wkv7_cuda.cu), shared with the torch
// binding (wkv7_cuda.cpp). Free of torch headers, so the kernels compile with nvcc alone.
//
// Layout contract (the same as rwkv_mm.kernels.wkv.wkv7):
//   r, w, k, v, a, b, dy: [B, T, H, N] addressed through WkvSeq (wkv_cuda.h; channel stride 1).
//                         w is the *log* decay (<= 0), per-step factor exp(w).
//   states:               [B, H, N, N] fp32, contiguous, value index first: S[b, h, value, key].
//   outputs y, dr, dk, dv, da, db (dtype of r), dw (dtype of w): [B, T, H, N] contiguous.
// Per head: S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T,  y_t = S_t r_t.
// N (the head size) is fixed at compile time with -DWKV_N=<32|64|128>.
#pragma once

#include <cstddef>

#include "wkv_cuda.h"  // WkvSeq, WkvDtype, kWkvUnsupportedDtype, cudaStream_t

// Forward: y and the final state s_out. s0 may be null (zeros).
int wkv7_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                 WkvSeq b, const float* s0, void* y, float* s_out, cudaStream_t stream);

// fp32 scratch the backward needs: state checkpoints and one chunk of recomputed states per (b, h).
size_t wkv7_scratch_floats(int B, int T, int H);

// Backward. Inputs as in the forward plus dy (dtype of r) and ds_out (nullable: no gradient for
// the final state). Outputs dr, dw, dk, dv, da, db [B, T, H, N] and ds0 [B, H, N, N] fp32
// (nullable: not wanted). `scratch` holds wkv7_scratch_floats(B, T, H) floats.
int wkv7_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                  WkvSeq b, const float* s0, WkvSeq dy, const float* ds_out, void* dr, void* dw, void* dk, void* dv,
                  void* da, void* db, float* ds0, float* scratch, cudaStream_t stream);

// Head size this translation unit was compiled for.
int wkv7_head_size();
