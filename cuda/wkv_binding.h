// Helpers of the torch bindings of the WKV kernels (wkv_cuda.cpp, wkv7_cuda.cpp): dtype codes,
// strided operands, status checks. Included by the .cpp files only (torch headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "wkv_cuda.h"  // WkvSeq, WkvDtype, kWkvUnsupportedDtype

namespace wkv_binding {

inline int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return kWkvF32;
        case at::kHalf: return kWkvF16;
        case at::kBFloat16: return kWkvBF16;
        default: TORCH_CHECK(false, "the WKV CUDA kernels take float32, float16 or bfloat16, got ", t);
    }
    return -1;
}

inline WkvSeq seq(const at::Tensor& x) { return WkvSeq{x.data_ptr(), x.stride(0), x.stride(1), x.stride(2)}; }

inline void check_status(int status, const char* what) {
    TORCH_CHECK(status != kWkvUnsupportedDtype, what, ": unsupported dtype combination");
    TORCH_CHECK(status == 0, what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)));
}

inline const float* opt_ptr(const std::optional<at::Tensor>& x) { return x ? x->data_ptr<float>() : nullptr; }

}  // namespace wkv_binding
