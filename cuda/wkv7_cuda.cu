// WKV-7 (RWKV-7 "Goose") CUDA kernels: forward and backward with an initial state in, the final
// state out, the gradient of the initial state and a gradient for the final state. No limit on T;
// the head size N is fixed per build with -DWKV_N.
//
// Recurrence per (batch b, head h), S an N x N fp32 matrix indexed [value i, key j] (BlinkDL's
// runtime layout), d_t = exp(w_t):
//
//     sa_t = S_{t-1} a_t        S_t = S_{t-1} diag(d_t) + sa_t b_t^T + v_t k_t^T        y_t = S_t r_t
//
// Backward, with G = dL/dS_t (G_{T-1} = ds_out + dy r^T; after step t, G <- G diag(d_t) + dsa a_t^T
// and then + dy_{t-1} r_{t-1}^T; ds0 = G after step 0):
//
//     dv_i = sum_j G[i][j] k_j          dsa_i = sum_j G[i][j] b_j          dr_j = sum_i S_t[i][j] dy_i
//     dk_j = sum_i G[i][j] v_i          db_j  = sum_i G[i][j] sa_i         da_j = sum_i dsa_i S_{t-1}[i][j]
//     dw_j = d_j * sum_i G[i][j] S_{t-1}[i][j]
//
// Design: one block of N threads per (b, h), sequential in T like RWKV-LM's wkv7 kernels. In the
// forward, thread i keeps row i of S in registers (both of its dot products are then local). The
// backward keeps G twice, row i and column i, so that row sums (dv, dsa) and column sums (dk, db,
// dw, da, dr) are all local to a thread; only dsa is exchanged through shared memory. The states
// S_{t-1} the backward needs are not stored by the forward and never recovered by dividing by a
// decay: the backward first re-runs the forward keeping a checkpoint every WKV7_CHUNK steps, then,
// chunk by chunk from the end, recomputes the chunk's states from its checkpoint into a scratch
// buffer (stored key-major, so a thread reads its column contiguously) and walks them backwards.
// Extra memory: the fp32 scratch of `wkv7_scratch_floats` (N^2 per WKV7_CHUNK steps plus one chunk
// of states, per (b, h)), freed after the backward. All math is fp32.
//
// Compiled with -DWKV_EMULATE (and tests/kernels/emulate/cuda_emulate.h force-included), the same
// source runs on the CPU: the emulator tests execute these kernels without a GPU.

#include "wkv7_cuda.h"
#include "wkv_device.cuh"

#ifndef WKV_N
#error "compile with -DWKV_N=<head size: 32, 64 or 128>"
#endif

// Steps per backward chunk (override with -D; build(defines=...) passes it): one checkpoint per
// chunk, and one chunk of recomputed states in scratch.
#ifndef WKV7_CHUNK
#define WKV7_CHUNK 32
#endif

namespace {

constexpr int kChunk = WKV7_CHUNK;
static_assert(WKV_N == 32 || WKV_N == 64 || WKV_N == 128, "head size must be 32, 64 or 128");

// Scratch floats per (b, h): the checkpoints [n_chunks][N][N], then the chunk states [kChunk + 1][N][N].
__host__ __device__ inline int n_chunks(int T) { return (T + kChunk - 1) / kChunk; }
__host__ __device__ inline int64_t scratch_per_head(int T, int N) {
    return (static_cast<int64_t>(n_chunks(T)) + kChunk + 1) * N * N;
}

template <typename F, typename FW>
struct Args7 {
    Seq<F> r, k, v, a, b, dy;
    Seq<FW> w;
    const float* s0;
    const float* ds_out;
    F *y, *dr, *dk, *dv, *da, *db;
    FW* dw;
    float *s_out, *ds0, *scratch;
    int T, H;
};

// Row i of the (b, h) state from a [B, H, N, N] tensor (zeros for null), or back into one.
template <int N>
__device__ __forceinline__ void load_row(float (&x)[N], const float* src, int b, int h, int i, int H) {
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = src ? src[state_row(b, h, i, H, N) + j] : 0.f;
}

template <int N>
__device__ __forceinline__ void store_row(const float (&x)[N], float* dst, int b, int h, int i, int H) {
#pragma unroll
    for (int j = 0; j < N; ++j) dst[state_row(b, h, i, H, N) + j] = x[j];
}

// One step of row i of S: returns sa_i = (S_{t-1} a)_i and leaves S_t in s.
template <int N>
__device__ __forceinline__ float step_row(float (&s)[N], float vi, const float* d, const float* k, const float* a,
                                          const float* bb) {
    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < N; ++j) sa = fmaf(a[j], s[j], sa);
#pragma unroll
    for (int j = 0; j < N; ++j) s[j] = fmaf(s[j], d[j], fmaf(sa, bb[j], vi * k[j]));
    return sa;
}

template <int N, typename F, typename FW>
__global__ void __launch_bounds__(N) wkv7_forward_kernel(const Args7<F, FW> p) {
    const int b = blockIdx.x / p.H, h = blockIdx.x % p.H, i = threadIdx.x;
    const Rows<F> r_in(p.r, b, h), k_in(p.k, b, h), v_in(p.v, b, h), a_in(p.a, b, h), b_in(p.b, b, h);
    const Rows<FW> w_in(p.w, b, h);
    __shared__ __align__(16) float s_r[N], s_d[N], s_k[N], s_a[N], s_b[N];
    float s[N];
    load_row<N>(s, p.s0, b, h, i, p.H);
    for (int t = 0; t < p.T; ++t) {
        __syncthreads();  // the previous step has read the staged vectors
        s_r[i] = r_in(t, i);
        s_d[i] = expf(w_in(t, i));
        s_k[i] = k_in(t, i);
        s_a[i] = a_in(t, i);
        s_b[i] = b_in(t, i);
        __syncthreads();
        step_row<N>(s, v_in(t, i), s_d, s_k, s_a, s_b);
        float y = 0.f;
#pragma unroll
        for (int j = 0; j < N; ++j) y = fmaf(s[j], s_r[j], y);
        p.y[dense(b, t, h, p.T, p.H, N) + i] = from_f<F>(y);
    }
    store_row<N>(s, p.s_out, b, h, i, p.H);
}

template <int N, typename F, typename FW>
__global__ void __launch_bounds__(N) wkv7_backward_kernel(const Args7<F, FW> p) {
    const int b = blockIdx.x / p.H, h = blockIdx.x % p.H, i = threadIdx.x, T = p.T, H = p.H;
    const Rows<F> r_in(p.r, b, h), k_in(p.k, b, h), v_in(p.v, b, h), a_in(p.a, b, h), b_in(p.b, b, h);
    const Rows<F> dy_in(p.dy, b, h);
    const Rows<FW> w_in(p.w, b, h);
    float* ck = p.scratch + static_cast<int64_t>(blockIdx.x) * scratch_per_head(T, N);  // [n_chunks][N][N]
    float* cs = ck + static_cast<int64_t>(n_chunks(T)) * N * N;  // [kChunk + 1][key][value]
    __shared__ __align__(16) float s_r[N], s_d[N], s_k[N], s_v[N], s_a[N], s_b[N], s_dy[N], s_dsa[N];
    __shared__ __align__(16) float s_sa[kChunk][N];

    // Phase A: the forward again, keeping row i of the state at every chunk start.
    float s[N];
    load_row<N>(s, p.s0, b, h, i, H);
    for (int t = 0; t < T; ++t) {
        if (t % kChunk == 0) {
#pragma unroll
            for (int j = 0; j < N; ++j) ck[(static_cast<int64_t>(t / kChunk) * N + i) * N + j] = s[j];
        }
        __syncthreads();
        s_d[i] = expf(w_in(t, i));
        s_k[i] = k_in(t, i);
        s_a[i] = a_in(t, i);
        s_b[i] = b_in(t, i);
        __syncthreads();
        step_row<N>(s, v_in(t, i), s_d, s_k, s_a, s_b);
    }

    // Phase B: chunks from the end. g_row[j] = G[i][j], g_col[j] = G[j][i].
    float g_row[N], g_col[N];
    load_row<N>(g_row, p.ds_out, b, h, i, H);
#pragma unroll
    for (int j = 0; j < N; ++j) g_col[j] = p.ds_out ? p.ds_out[state_row(b, h, j, H, N) + i] : 0.f;
    for (int c = n_chunks(T) - 1; c >= 0; --c) {
        const int c0 = c * kChunk, cnt = min(kChunk, T - c0);
        // B1: the chunk's states S_{c0-1} .. S_{c0+cnt-1} into cs[0 .. cnt], element (i, j) at cs[tt][j][i].
#pragma unroll
        for (int j = 0; j < N; ++j) s[j] = ck[(static_cast<int64_t>(c) * N + i) * N + j];
        for (int tt = 0; tt <= cnt; ++tt) {
#pragma unroll
            for (int j = 0; j < N; ++j) cs[(static_cast<int64_t>(tt) * N + j) * N + i] = s[j];
            if (tt == cnt) break;
            const int t = c0 + tt;
            __syncthreads();
            s_d[i] = expf(w_in(t, i));
            s_k[i] = k_in(t, i);
            s_a[i] = a_in(t, i);
            s_b[i] = b_in(t, i);
            __syncthreads();
            s_sa[tt][i] = step_row<N>(s, v_in(t, i), s_d, s_k, s_a, s_b);
        }
        // B2: the chunk's steps backwards.
        for (int tt = cnt - 1; tt >= 0; --tt) {
            const int t = c0 + tt;
            __syncthreads();  // cs and s_sa are written; the previous step has read the staged vectors
            s_r[i] = r_in(t, i);
            s_d[i] = expf(w_in(t, i));
            s_k[i] = k_in(t, i);
            s_v[i] = v_in(t, i);
            s_a[i] = a_in(t, i);
            s_b[i] = b_in(t, i);
            s_dy[i] = dy_in(t, i);
            __syncthreads();
            const float dyi = s_dy[i], ri = s_r[i], di = s_d[i], ai = s_a[i];
            float dv = 0.f, dsa = 0.f, dk = 0.f, db = 0.f, dr = 0.f;
            const float* col_now = cs + (static_cast<int64_t>(tt + 1) * N + i) * N;  // S_t[.][i]
#pragma unroll
            for (int j = 0; j < N; ++j) {
                g_row[j] = fmaf(dyi, s_r[j], g_row[j]);  // G += dy_t r_t^T
                g_col[j] = fmaf(s_dy[j], ri, g_col[j]);
                dv = fmaf(g_row[j], s_k[j], dv);
                dsa = fmaf(g_row[j], s_b[j], dsa);
                dk = fmaf(g_col[j], s_v[j], dk);
                db = fmaf(g_col[j], s_sa[tt][j], db);
                dr = fmaf(col_now[j], s_dy[j], dr);
            }
            s_dsa[i] = dsa;
            __syncthreads();
            const float* col_prev = cs + (static_cast<int64_t>(tt) * N + i) * N;  // S_{t-1}[.][i]
            float dd = 0.f, da = 0.f;
#pragma unroll
            for (int j = 0; j < N; ++j) {
                const float sp = col_prev[j];
                dd = fmaf(g_col[j], sp, dd);
                da = fmaf(s_dsa[j], sp, da);
                g_row[j] = fmaf(g_row[j], s_d[j], dsa * s_a[j]);  // G <- G diag(d) + dsa a^T
                g_col[j] = fmaf(g_col[j], di, s_dsa[j] * ai);
            }
            const int64_t o = dense(b, t, h, T, H, N) + i;
            p.dr[o] = from_f<F>(dr);
            p.dw[o] = from_f<FW>(dd * di);
            p.dk[o] = from_f<F>(dk);
            p.dv[o] = from_f<F>(dv);
            p.da[o] = from_f<F>(da);
            p.db[o] = from_f<F>(db);
        }
        __syncthreads();  // every thread is done with cs before the next chunk rewrites it
    }
    if (p.ds0) store_row<N>(g_row, p.ds0, b, h, i, H);
}

template <typename F, typename FW>
Args7<F, FW> make_args7(int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a, WkvSeq b) {
    Args7<F, FW> p{};
    p.r = typed<F>(r);
    p.w = typed<FW>(w);
    p.k = typed<F>(k);
    p.v = typed<F>(v);
    p.a = typed<F>(a);
    p.b = typed<F>(b);
    p.T = T;
    p.H = H;
    return p;
}

template <typename F, typename FW>
int launch_forward7(int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a, WkvSeq b,
                    const float* s0, void* y, float* s_out, cudaStream_t stream) {
    Args7<F, FW> p = make_args7<F, FW>(T, H, r, w, k, v, a, b);
    p.s0 = s0;
    p.y = static_cast<F*>(y);
    p.s_out = s_out;
    void (*kernel)(const Args7<F, FW>) = wkv7_forward_kernel<WKV_N, F, FW>;
    WKV_LAUNCH(kernel, dim3(B * H), dim3(WKV_N), stream, p);
    return static_cast<int>(cudaGetLastError());
}

template <typename F, typename FW>
int launch_backward7(int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a, WkvSeq b,
                     const float* s0, WkvSeq dy, const float* ds_out, void* dr, void* dw, void* dk, void* dv,
                     void* da, void* db, float* ds0, float* scratch, cudaStream_t stream) {
    Args7<F, FW> p = make_args7<F, FW>(T, H, r, w, k, v, a, b);
    p.dy = typed<F>(dy);
    p.s0 = s0;
    p.ds_out = ds_out;
    p.dr = static_cast<F*>(dr);
    p.dw = static_cast<FW*>(dw);
    p.dk = static_cast<F*>(dk);
    p.dv = static_cast<F*>(dv);
    p.da = static_cast<F*>(da);
    p.db = static_cast<F*>(db);
    p.ds0 = ds0;
    p.scratch = scratch;
    void (*kernel)(const Args7<F, FW>) = wkv7_backward_kernel<WKV_N, F, FW>;
    WKV_LAUNCH(kernel, dim3(B * H), dim3(WKV_N), stream, p);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

int wkv7_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                 WkvSeq b, const float* s0, void* y, float* s_out, cudaStream_t stream) {
    if (B == 0 || H == 0) return 0;
#define WKV7_CASE(D, DW, F, FW) \
    if (dtype == D && w_dtype == DW) return launch_forward7<F, FW>(B, T, H, r, w, k, v, a, b, s0, y, s_out, stream);
    WKV_FOR_EACH_DTYPE(WKV7_CASE)
#undef WKV7_CASE
    return kWkvUnsupportedDtype;
}

size_t wkv7_scratch_floats(int B, int T, int H) {
    return static_cast<size_t>(B) * H * static_cast<size_t>(scratch_per_head(T, WKV_N));
}

int wkv7_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq w, WkvSeq k, WkvSeq v, WkvSeq a,
                  WkvSeq b, const float* s0, WkvSeq dy, const float* ds_out, void* dr, void* dw, void* dk, void* dv,
                  void* da, void* db, float* ds0, float* scratch, cudaStream_t stream) {
    if (B == 0 || H == 0) return 0;
#define WKV7_CASE(D, DW, F, FW)                                                                              \
    if (dtype == D && w_dtype == DW)                                                                         \
        return launch_backward7<F, FW>(B, T, H, r, w, k, v, a, b, s0, dy, ds_out, dr, dw, dk, dv, da, db, ds0, \
                                       scratch, stream);
    WKV_FOR_EACH_DTYPE(WKV7_CASE)
#undef WKV7_CASE
    return kWkvUnsupportedDtype;
}

int wkv7_head_size() { return WKV_N; }
