// torch binding of the WKV-7 CUDA kernels (wkv7_cuda.cu): argument checks, output and scratch
// allocation, the current stream. Built per head size by rwkv_mm.kernels.wkv7_cuda (-DWKV_N=<N>)
// and registered as torch ops in the namespace TORCH_EXTENSION_NAME. Light headers, as wkv_cuda.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "wkv7_cuda.h"
#include "wkv_binding.h"

namespace {

using wkv_binding::check_status;
using wkv_binding::dtype_code;
using wkv_binding::opt_ptr;
using wkv_binding::seq;

void check_seq(const char* name, const at::Tensor& x, const at::Tensor& r, bool same_dtype) {
    TORCH_CHECK(x.is_cuda() && x.device() == r.device(), name, " must be a CUDA tensor on r's device");
    TORCH_CHECK(x.sizes() == r.sizes(), name, " must have r's shape ", r.sizes(), ", got ", x.sizes());
    TORCH_CHECK(x.stride(3) == 1, name, " must have unit stride over channels");
    TORCH_CHECK(!same_dtype || x.scalar_type() == r.scalar_type(), name, " must have r's dtype");
}

void check_state(const char* name, const at::Tensor& x, const at::Tensor& r) {
    TORCH_CHECK(x.device() == r.device(), name, " must be on r's device");
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), name, " must be contiguous float32");
    TORCH_CHECK(x.sizes() == at::IntArrayRef({r.size(0), r.size(2), WKV_N, WKV_N}), name, " must be [B, H, N, N]");
}

void check_inputs(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& s0) {
    TORCH_CHECK(r.dim() == 4, "r must be [B, T, H, N], got ", r.sizes());
    TORCH_CHECK(r.size(3) == WKV_N, "this build is for head size ", WKV_N, ", got N = ", r.size(3));
    check_seq("r", r, r, true);
    check_seq("k", k, r, true);
    check_seq("v", v, r, true);
    check_seq("a", a, r, true);
    check_seq("b", b, r, true);
    check_seq("w", w, r, false);
    TORCH_CHECK(w.scalar_type() == r.scalar_type() || w.scalar_type() == at::kFloat,
                "w must have r's dtype or float32, got ", w.scalar_type());
    if (s0) check_state("state", *s0, r);
    TORCH_CHECK(r.size(0) * r.size(2) < (int64_t{1} << 31) && r.size(1) < (int64_t{1} << 31),
                "B*H or T too large for the WKV-7 kernels");
}

}  // namespace

// (y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32, value index first)
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& a, const at::Tensor& b,
                                           const std::optional<at::Tensor>& s0) {
    check_inputs(r, w, k, v, a, b, s0);
    const c10::cuda::CUDAGuard guard(r.device());
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    auto y = at::empty({B, T, H, WKV_N}, r.options().memory_format(at::MemoryFormat::Contiguous));
    auto s_out = at::empty({B, H, WKV_N, WKV_N}, r.options().dtype(at::kFloat));
    const int status = wkv7_forward(dtype_code(r.scalar_type()), dtype_code(w.scalar_type()), static_cast<int>(B),
                                    static_cast<int>(T), static_cast<int>(H), seq(r), seq(w), seq(k), seq(v), seq(a),
                                    seq(b), opt_ptr(s0), y.data_ptr(), s_out.data_ptr<float>(),
                                    c10::cuda::getCurrentCUDAStream().stream());
    check_status(status, "WKV-7 forward");
    return {y, s_out};
}

// (dr, dw, dk, dv, da, db [B, T, H, N] (dw in w's dtype, the others in r's), d(initial state)
//  [B, H, N, N] fp32 -- empty when s0 is None)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
backward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
         const at::Tensor& b, const std::optional<at::Tensor>& s0, const at::Tensor& dy,
         const std::optional<at::Tensor>& ds_out) {
    check_inputs(r, w, k, v, a, b, s0);
    check_seq("dy", dy, r, true);
    if (ds_out) check_state("ds_out", *ds_out, r);
    const c10::cuda::CUDAGuard guard(r.device());
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    const auto dense = r.options().memory_format(at::MemoryFormat::Contiguous);
    auto dr = at::empty({B, T, H, WKV_N}, dense);
    auto dw = at::empty({B, T, H, WKV_N}, dense.dtype(w.scalar_type()));
    auto dk = at::empty({B, T, H, WKV_N}, dense);
    auto dv = at::empty({B, T, H, WKV_N}, dense);
    auto da = at::empty({B, T, H, WKV_N}, dense);
    auto db = at::empty({B, T, H, WKV_N}, dense);
    auto ds0 = at::empty({s0 ? B : 0, H, WKV_N, WKV_N}, dense.dtype(at::kFloat));
    const auto n_scratch = static_cast<int64_t>(
        wkv7_scratch_floats(static_cast<int>(B), static_cast<int>(T), static_cast<int>(H)));
    auto scratch = at::empty({n_scratch}, dense.dtype(at::kFloat));
    const int status = wkv7_backward(
        dtype_code(r.scalar_type()), dtype_code(w.scalar_type()), static_cast<int>(B), static_cast<int>(T),
        static_cast<int>(H), seq(r), seq(w), seq(k), seq(v), seq(a), seq(b), opt_ptr(s0), seq(dy), opt_ptr(ds_out),
        dr.data_ptr(), dw.data_ptr(), dk.data_ptr(), dv.data_ptr(), da.data_ptr(), db.data_ptr(),
        s0 ? ds0.data_ptr<float>() : nullptr, scratch.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
    check_status(status, "WKV-7 backward");
    return {dr, dw, dk, dv, da, db, ds0};
}

int64_t head_size() { return wkv7_head_size(); }

// TORCH_LIBRARY pastes its namespace argument: expand TORCH_EXTENSION_NAME first.
#define WKV7_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
WKV7_TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
    m.def("forward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor? s0) -> (Tensor, Tensor)",
          &forward);
    m.def(
        "backward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor? s0, Tensor dy, "
        "Tensor? ds_out) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        &backward);
    m.def("head_size() -> int", &head_size);
}
