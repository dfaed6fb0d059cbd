// C entry points of the emulated WKV-7 kernels for ctypes (tests/kernels/wkv_emulation.py).
#include "wkv7_cuda.h"

extern "C" {

int emu_wkv7_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                     WkvSeq b, const float* s0, void* y, float* s_out) {
    return wkv7_forward(dtype, w_dtype, B, T, H, r, w, k, v, a, b, s0, y, s_out, nullptr);
}

size_t emu_wkv7_scratch_floats(int B, int T, int H) { return wkv7_scratch_floats(B, T, H); }

int emu_wkv7_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                      WkvSeq b, const float* s0, WkvSeq dy, const float* ds_out, void* dr, void* dw, void* dk,
                      void* dv, void* da, void* db, float* ds0, float* scratch) {
    return wkv7_backward(dtype, w_dtype, B, T, H, r, w, k, v, a, b, s0, dy, ds_out, dr, dw, dk, dv, da, db, ds0,
                         scratch, nullptr);
}

int emu_wkv7_head_size() { return wkv7_head_size(); }
}
