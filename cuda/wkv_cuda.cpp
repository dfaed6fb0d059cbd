// torch binding of the WKV CUDA kernels (wkv_cuda.cu): argument checks, output allocation, the
// current stream. Built per head size by rwkv_mm.kernels.wkv_cuda (-DWKV_N=<head size>) and
// registered as torch ops in the namespace TORCH_EXTENSION_NAME (torch.ops.<name>.forward, ...).
//
// Light headers on purpose: TORCH_LIBRARY instead of pybind11 / torch/extension.h (4x faster to
// compile), and c10/cuda instead of ATen/cuda/CUDAContext.h, which pulls in cuBLAS / cuSPARSE
// headers that a minimal CUDA toolkit (nvcc and the runtime) lacks.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "wkv_cuda.h"
#include "wkv_binding.h"

namespace {

using wkv_binding::check_status;
using wkv_binding::dtype_code;
using wkv_binding::opt_ptr;
using wkv_binding::seq;

void check_seq(const char* name, const at::Tensor& x, const at::Tensor& r) {
    TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(x.device() == r.device(), name, " must be on r's device");
    TORCH_CHECK(x.sizes() == r.sizes(), name, " must have r's shape ", r.sizes(), ", got ", x.sizes());
    TORCH_CHECK(x.stride(3) == 1, name, " must have unit stride over channels");
}

void check_dense_f32(const char* name, const at::Tensor& x, at::IntArrayRef shape, const at::Tensor& r) {
    TORCH_CHECK(x.device() == r.device(), name, " must be on r's device");
    TORCH_CHECK(x.scalar_type() == at::kFloat, name, " must be float32");
    TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(x.sizes() == shape, name, " must have shape ", shape, ", got ", x.sizes());
}

void check_inputs(const at::Tensor& r, const at::Tensor& k, const at::Tensor& v, const at::Tensor& w,
                  const at::Tensor& u, const std::optional<at::Tensor>& s0) {
    TORCH_CHECK(r.dim() == 4, "r must be [B, T, H, N], got ", r.sizes());
    TORCH_CHECK(r.size(3) == WKV_N, "this build is for head size ", WKV_N, ", got N = ", r.size(3));
    check_seq("r", r, r);
    check_seq("k", k, r);
    check_seq("v", v, r);
    check_seq("w", w, r);
    TORCH_CHECK(k.scalar_type() == r.scalar_type() && v.scalar_type() == r.scalar_type(),
                "r, k, v must share a dtype");
    TORCH_CHECK(w.scalar_type() == r.scalar_type() || w.scalar_type() == at::kFloat,
                "w must have r's dtype or float32, got ", w.scalar_type());
    const int64_t B = r.size(0), H = r.size(2);
    check_dense_f32("u", u, {H, WKV_N}, r);
    if (s0) check_dense_f32("state", *s0, {B, H, WKV_N, WKV_N}, r);
    TORCH_CHECK(r.size(0) * r.size(2) <= (int64_t{1} << 24) && r.size(1) < (int64_t{1} << 31),
                "B*H or T too large for the WKV kernels");
}

}  // namespace

// (y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32)
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& r, const at::Tensor& k, const at::Tensor& v,
                                                 const at::Tensor& w, const at::Tensor& u,
                                                 const std::optional<at::Tensor>& s0) {
    check_inputs(r, k, v, w, u, s0);
    const c10::cuda::CUDAGuard guard(r.device());
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    auto y = at::empty({B, T, H, WKV_N}, r.options().memory_format(at::MemoryFormat::Contiguous));
    auto s_out = at::empty({B, H, WKV_N, WKV_N}, r.options().dtype(at::kFloat));
    const int status = wkv_forward(dtype_code(r.scalar_type()), dtype_code(w.scalar_type()), static_cast<int>(B),
                                   static_cast<int>(T), static_cast<int>(H), seq(r), seq(k), seq(v), seq(w),
                                   u.data_ptr<float>(), opt_ptr(s0), y.data_ptr(), s_out.data_ptr<float>(),
                                   c10::cuda::getCurrentCUDAStream().stream());
    check_status(status, "WKV forward");
    return {y, s_out};
}

// (dr, dk, dv [B, T, H, N] in r's dtype, dw in w's dtype, du per batch [B, H, N] fp32,
//  d(initial state) [B, H, N, N] fp32 -- empty when s0 is None)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
backward(const at::Tensor& r, const at::Tensor& k, const at::Tensor& v, const at::Tensor& w,
         const at::Tensor& u, const std::optional<at::Tensor>& s0, const at::Tensor& s_out,
         const at::Tensor& dy, const std::optional<at::Tensor>& ds_out) {
    check_inputs(r, k, v, w, u, s0);
    check_seq("dy", dy, r);
    TORCH_CHECK(dy.scalar_type() == r.scalar_type(), "dy must have r's dtype");
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    check_dense_f32("s_out", s_out, {B, H, WKV_N, WKV_N}, r);
    if (ds_out) check_dense_f32("ds_out", *ds_out, {B, H, WKV_N, WKV_N}, r);
    const c10::cuda::CUDAGuard guard(r.device());
    const auto dense = r.options().memory_format(at::MemoryFormat::Contiguous);
    auto dr = at::empty({B, T, H, WKV_N}, dense);
    auto dk = at::empty({B, T, H, WKV_N}, dense);
    auto dv = at::empty({B, T, H, WKV_N}, dense);
    auto dw = at::empty({B, T, H, WKV_N}, dense.dtype(w.scalar_type()));
    auto acc = w.scalar_type() == at::kFloat ? dw : at::empty({B, T, H, WKV_N}, dense.dtype(at::kFloat));
    auto du_part = at::empty({B, H, WKV_N}, dense.dtype(at::kFloat));
    auto ds0 = at::empty({s0 ? B : 0, H, WKV_N, WKV_N}, dense.dtype(at::kFloat));
    const int status = wkv_backward(
        dtype_code(r.scalar_type()), dtype_code(w.scalar_type()), static_cast<int>(B), static_cast<int>(T),
        static_cast<int>(H), seq(r), seq(k), seq(v), seq(w), u.data_ptr<float>(), opt_ptr(s0),
        s_out.data_ptr<float>(), seq(dy), opt_ptr(ds_out), dr.data_ptr(), dk.data_ptr(), dv.data_ptr(),
        dw.data_ptr(), acc.data_ptr<float>(), du_part.data_ptr<float>(), s0 ? ds0.data_ptr<float>() : nullptr,
        c10::cuda::getCurrentCUDAStream().stream());
    check_status(status, "WKV backward");
    return {dr, dk, dv, dw, du_part, ds0};
}

int64_t head_size() { return wkv_head_size(); }

// TORCH_LIBRARY pastes its namespace argument: expand TORCH_EXTENSION_NAME first.
#define WKV_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
WKV_TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
    m.def("forward(Tensor r, Tensor k, Tensor v, Tensor w, Tensor u, Tensor? s0) -> (Tensor, Tensor)", &forward);
    m.def(
        "backward(Tensor r, Tensor k, Tensor v, Tensor w, Tensor u, Tensor? s0, Tensor s_out, Tensor dy, "
        "Tensor? ds_out) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        &backward);
    m.def("head_size() -> int", &head_size);
}
