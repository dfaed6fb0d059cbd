// C entry points of the emulated WKV kernels for ctypes (tests/kernels/wkv_emulation.py).
#include "wkv_cuda.h"

extern "C" {

int emu_wkv_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                    const float* u, const float* s0, void* y, float* s_out) {
    return wkv_forward(dtype, w_dtype, B, T, H, r, k, v, w, u, s0, y, s_out, nullptr);
}

int emu_wkv_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                     const float* u, const float* s0, const float* s_out, WkvSeq dy, const float* ds_out, void* dr,
                     void* dk, void* dv, void* dw, float* acc, float* du_part, float* ds0) {
    return wkv_backward(dtype, w_dtype, B, T, H, r, k, v, w, u, s0, s_out, dy, ds_out, dr, dk, dv, dw, acc, du_part,
                        ds0, nullptr);
}

int emu_wkv_head_size() { return wkv_head_size(); }
}
