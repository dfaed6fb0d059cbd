// Host emulation of the CUDA subset used by cuda/wkv_cuda.cu, so the kernels' own source runs on
// a CPU (tests only; force-included with `g++ -include cuda_emulate.h -DWKV_EMULATE`).
//
// A launch runs the blocks one after another. The threads of a block are fibers (ucontext) on the
// calling OS thread, run in threadIdx order, each until it waits: at __syncthreads for the whole
// block, at a warp shuffle for its 32 lanes (a shuffle is an exchange buffer between two warp
// waits). So every thread runs the code between two barriers before any thread passes the second
// one -- what CUDA guarantees, and nothing more: a missing barrier shows up as a thread reading
// data that a later thread has not written yet. A barrier in divergent code, a shuffle with
// exited lanes or a deadlock aborts with a message.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// ---- types -------------------------------------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
    float x, y, z, w;
};

using cudaStream_t = void*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
    std::memset(p, value, bytes);
    return cudaSuccess;
}

struct __half {
    _Float16 v;
};
inline float __half2float(__half x) { return static_cast<float>(x.v); }
inline __half __float2half_rn(float x) { return __half{static_cast<_Float16>(x)}; }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 x) {
    const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if (std::isnan(f)) return __nv_bfloat16{0x7fc0};
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return __nv_bfloat16{static_cast<uint16_t>(u >> 16)};
}

inline int min(int a, int b) { return a < b ? a : b; }
inline float atomicAdd(float* p, float x) {  // fibers never interleave inside an expression
    const float old = *p;
    *p = old + x;
    return old;
}

// ---- the fiber scheduler -----------------------------------------------------------------------
namespace wkv_emu {

inline dim3 thread_idx, block_idx, block_dim, grid_dim;

enum class State { Ready, WarpWait, BlockWait, Done };

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    unsigned tid = 0;
    State state = State::Ready;
};

inline ucontext_t main_ctx;
inline std::vector<Fiber> fibers;
inline size_t current = 0;
inline const std::function<void()>* body = nullptr;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cuda_emulate: %s (block %u,%u thread %zu)\n", what, block_idx.x, block_idx.y, current);
    std::abort();
}

inline void fiber_entry() {
    (*body)();
    fibers[current].state = State::Done;
    swapcontext(&fibers[current].ctx, &main_ctx);
}

// Called by a fiber: park until the block (or its warp) has arrived.
inline void wait(State s) {
    fibers[current].state = s;
    swapcontext(&fibers[current].ctx, &main_ctx);
}

inline std::vector<float>& exchange() {
    static std::vector<float> buf;
    return buf;
}

inline void run_block(unsigned n_threads, const std::function<void()>& fn) {
    constexpr size_t kStack = 256 * 1024;
    if (n_threads % 32) fail("block size must be a multiple of 32");
    fibers.resize(n_threads);
    exchange().assign(n_threads, 0.f);
    body = &fn;
    for (unsigned t = 0; t < n_threads; ++t) {
        Fiber& f = fibers[t];
        f.stack.resize(kStack);
        f.tid = t;
        f.state = State::Ready;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    for (;;) {
        // Run every ready thread, in threadIdx order, until it waits or ends.
        for (current = 0; current < n_threads; ++current) {
            if (fibers[current].state != State::Ready) continue;
            thread_idx = dim3(fibers[current].tid);
            swapcontext(&main_ctx, &fibers[current].ctx);
        }
        // Release the warps whose 32 lanes all wait at a shuffle.
        bool released = false;
        size_t n_done = 0, n_block = 0;
        for (unsigned w0 = 0; w0 < n_threads; w0 += 32) {
            unsigned n_warp = 0;
            for (unsigned t = w0; t < w0 + 32; ++t) n_warp += fibers[t].state == State::WarpWait;
            if (n_warp == 32) {
                for (unsigned t = w0; t < w0 + 32; ++t) fibers[t].state = State::Ready;
                released = true;
            } else if (n_warp) {
                for (unsigned t = w0; t < w0 + 32; ++t)
                    if (fibers[t].state != State::WarpWait && fibers[t].state != State::BlockWait)
                        fail("a warp shuffle with lanes that have exited");
            }
        }
        if (released) continue;
        for (const Fiber& f : fibers) {
            n_done += f.state == State::Done;
            n_block += f.state == State::BlockWait;
        }
        if (n_done == n_threads) return;
        if (n_block + n_done != n_threads) fail("deadlock: lanes of a warp wait at different shuffles/barriers");
        if (n_done) fail("threads disagree on the number of __syncthreads");
        for (Fiber& f : fibers) f.state = State::Ready;
    }
}

inline void launch(dim3 grid, dim3 block, const std::function<void()>& fn) {
    grid_dim = grid;
    block_dim = block;
    const unsigned n_threads = block.x * block.y * block.z;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                block_idx = dim3(x, y, z);
                run_block(n_threads, fn);
            }
}

}  // namespace wkv_emu

#define threadIdx (wkv_emu::thread_idx)
#define blockIdx (wkv_emu::block_idx)
#define blockDim (wkv_emu::block_dim)
#define gridDim (wkv_emu::grid_dim)

inline void __syncthreads() { wkv_emu::wait(wkv_emu::State::BlockWait); }

// All 32 lanes of the warp must take part (the kernels only use full masks).
inline float __shfl_xor_sync(unsigned /*mask*/, float x, int lane_mask) {
    std::vector<float>& buf = wkv_emu::exchange();
    const unsigned tid = wkv_emu::thread_idx.x;
    buf[tid] = x;
    wkv_emu::wait(wkv_emu::State::WarpWait);
    const float y = buf[(tid & ~31u) | ((tid & 31u) ^ static_cast<unsigned>(lane_mask))];
    wkv_emu::wait(wkv_emu::State::WarpWait);
    return y;
}

#define WKV_LAUNCH(kernel, grid, block, stream, ...) wkv_emu::launch(grid, block, [&]() { kernel(__VA_ARGS__); })
