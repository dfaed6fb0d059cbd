// Device helpers shared by the WKV kernels (wkv_cuda.cu: Eagle/Finch, wkv7_cuda.cu: Goose): the
// CUDA headers and launch macro (the CPU emulation in tests/kernels/emulate defines its own),
// fp32 conversions of the element types, strided [B, T, H, N] operands, dense offsets and the
// dtype combinations the kernels are instantiated for.
#pragma once

#ifndef WKV_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define WKV_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#ifdef WKV_FAST_BUILD
#pragma nv_diag_suppress 177  // unused fp16 / fp32 conversions: only bf16 is instantiated
#endif
#endif

#include <cstdint>

#include "wkv_cuda.h"  // WkvSeq, WkvDtype

namespace {

// ---------------------------------------------------------------------------------------------
// Element conversions (all math is fp32).
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// A strided [B, T, H, N] operand with element type T.
template <typename T>
struct Seq {
    const T* ptr;
    int64_t sb, st, sh;
};

template <typename T>
Seq<T> typed(WkvSeq s) {
    return Seq<T>{static_cast<const T*>(s.ptr), s.sb, s.st, s.sh};
}

// The (b, h) slice of a Seq: element (t, n) at base + t*st + n.
template <typename T>
struct Rows {
    const T* base;
    int64_t st;
    __device__ __forceinline__ Rows(const Seq<T>& s, int b, int h) : base(s.ptr + b * s.sb + h * s.sh), st(s.st) {}
    __device__ __forceinline__ float operator()(int t, int n) const { return to_f<T>(base[t * st + n]); }
};

// Offset of (b, t, h, 0) in a contiguous [B, T, H, N] tensor.
__device__ __forceinline__ int64_t dense(int b, int t, int h, int T, int H, int N) {
    return ((static_cast<int64_t>(b) * T + t) * H + h) * N;
}

// Offset of row `i` of the (b, h) state in a contiguous [B, H, N, N] tensor.
__device__ __forceinline__ int64_t state_row(int b, int h, int i, int H, int N) {
    return ((static_cast<int64_t>(b) * H + h) * N + i) * N;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Dtype combinations: (r/k/v/... dtype, w dtype). WKV_FAST_BUILD (the compile test) instantiates
// bf16 only; every template is still compiled.
// ---------------------------------------------------------------------------------------------
#ifdef WKV_FAST_BUILD
#define WKV_FOR_EACH_DTYPE(X) X(kWkvBF16, kWkvBF16, __nv_bfloat16, __nv_bfloat16)
#else
#define WKV_FOR_EACH_DTYPE(X)                           \
    X(kWkvF32, kWkvF32, float, float)                   \
    X(kWkvF16, kWkvF16, __half, __half)                 \
    X(kWkvF16, kWkvF32, __half, float)                  \
    X(kWkvBF16, kWkvBF16, __nv_bfloat16, __nv_bfloat16) \
    X(kWkvBF16, kWkvF32, __nv_bfloat16, float)
#endif
