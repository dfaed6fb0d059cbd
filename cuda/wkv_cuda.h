// Host-side interface of the WKV CUDA kernels (wkv_cuda.cu), shared with the torch binding
// (wkv_cuda.cpp). Deliberately free of torch headers, so the kernels compile with nvcc alone.
//
// Layout contract (the same as rwkv_mm.kernels.wkv):
//   r, k, v, w, dy: [B, T, H, N] addressed through WkvSeq (strides of b, t, h in elements; the
//                   channel stride must be 1). w is the *log* decay (<= 0), per-step factor exp(w).
//   u:              [H, N] fp32, contiguous.
//   states:         [B, H, N, N] fp32, contiguous, key index first: S[b, h, key, value].
//   outputs y, dr, dk, dv (dtype of r), dw (dtype of w): [B, T, H, N] contiguous.
// N (the head size) is fixed at compile time with -DWKV_N=<32|64|128>.
#pragma once

#include <cstdint>

#ifndef WKV_EMULATE
#include <cuda_runtime_api.h>
#endif

// One [B, T, H, N] operand: element (b, t, h, n) lives at ptr + b*sb + t*st + h*sh + n.
struct WkvSeq {
    const void* ptr;
    int64_t sb, st, sh;
};

// Element types of r/k/v/dy (`dtype`) and of w (`w_dtype`): w_dtype is dtype or kWkvF32.
enum WkvDtype : int { kWkvF32 = 0, kWkvF16 = 1, kWkvBF16 = 2 };

// Return codes besides cudaSuccess (0) and CUDA error codes (positive).
constexpr int kWkvUnsupportedDtype = -1;

// Forward: y, and the final state when s_out is not null. s0 may be null (zeros).
int wkv_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                const float* u, const float* s0, void* y, float* s_out, cudaStream_t stream);

// Backward. Inputs as in the forward plus s_out (the forward's final state, needed for dw when
// ds_out is given), dy (same dtype as r) and ds_out (nullable: no gradient for the final state).
// Outputs: dr, dk, dv (dtype of r), dw (dtype of w), du_part [B, H, N] fp32 (per-batch partial
// sums of du) and ds0 [B, H, N, N] fp32 (nullable: not wanted). `acc` is an fp32 [B, T, H, N]
// contiguous scratch buffer; it may alias dw when w_dtype is kWkvF32.
int wkv_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                 const float* u, const float* s0, const float* s_out, WkvSeq dy, const float* ds_out,
                 void* dr, void* dk, void* dv, void* dw, float* acc, float* du_part, float* ds0,
                 cudaStream_t stream);

// Head size this translation unit was compiled for.
int wkv_head_size();
