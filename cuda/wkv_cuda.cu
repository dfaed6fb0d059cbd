// WKV CUDA kernels for Eagle (RWKV-5) and Finch (RWKV-6): forward and backward with an initial
// state in, the final state out, the gradient of the initial state and a gradient for the final
// state. No compile-time limit on T; the head size N is fixed per build with -DWKV_N.
//
// Recurrence per (batch b, head h), S an N x N fp32 matrix indexed [key i, value j]:
//
//     y_t = r_t (S_t + diag(u) k_t^T v_t)          S_{t+1} = diag(e_t) S_t + k_t^T v_t,  e_t = exp(w_t)
//
// Backward, with G_t = dL/dS_t (G_T = ds_out, G_t = r_t^T dy_t + diag(e_t) G_{t+1}, ds0 = G_0):
//
//     dr_t = S_t dy_t + u*k_t (v_t.dy_t)            dk_t = G_{t+1} v_t + u*r_t (v_t.dy_t)
//     dv_t = G_{t+1}^T k_t + (r_t.(u*k_t)) dy_t     du   = sum_t r_t*k_t (v_t.dy_t)
//     dw_t = sum_{m>t} r_m*(S_m dy_m) - sum_{m>=t} k_m*(G_{m+1} v_m) + rowsum(S_T * G_T)
//
// The dw line is dw_t = e_t * rowsum(S_t * G_{t+1}) rewritten through the cumulative log decay
// (the identity fla's chunked kernels use): S_t and G_{t+1} are never needed at the same time.
//
// Design (the RWKV-LM kernels' one-block-per-head sequential scan, with each line split over a
// few lanes): every pass is a scan over T that keeps an N x N fp32 matrix in registers. A "line"
// of the matrix (a value column or a key row, depending on the pass) is owned by G = N/16
// adjacent lanes of a warp, 16 elements each; the line's dot product is reduced with shuffles.
// The inputs of TC time steps are staged in shared memory as fp32 (exp already applied to w,
// the per-step scalar of the bonus term already reduced), with one __syncthreads pair per stage;
// outputs are staged too and written back coalesced. Per matrix element and step a pass costs
// three fp32 instructions (two for the state update, one for the output).
//
//   forward   column pass, t ascending:  lines = value j, state S  -> y, S_T
//   backward  row pass,    t ascending:  lines = key i,   state S  -> dr, du; acc[t-1] += r*(S dy)
//             row pass,    t descending: lines = key i,   state G  -> dk, ds0; acc[t] -= k*(G v)
//             column pass, t descending: lines = value j, state G  -> dv
//             (the three passes are independent: one launch, blockIdx.y picks the pass)
//             dw scan: dw_t = rowsum(S_T * G_T) + sum_{m>=t} acc[m], one thread per channel
//
// The backward recomputes S from s0 and G from ds_out instead of storing states: no O(T N^2)
// memory. Its only extra memory is the fp32 [B, T, H, N] buffer `acc` (dw itself when w is fp32).
//
// Any strides over b, t and h are accepted (the channel stride must be 1), so Eagle's static decay
// can arrive as a broadcast view [B, T, H, N] with zero b and t strides (read, never copied), and
// r, k, v may be views into a fused projection.
//
// Compiled with -DWKV_EMULATE (and a host emulation header force-included), the same source runs
// on the CPU: tests/kernels/emulate/ uses that to execute these kernels without a GPU.

#include "wkv_cuda.h"
#include "wkv_device.cuh"

#ifndef WKV_N
#error "compile with -DWKV_N=<head size: 32, 64 or 128>"
#endif

// Tuning knobs (override with -D; build(defines=...) passes them): time steps staged in shared
// memory per __syncthreads pair, and the resident threads per SM that __launch_bounds__ asks
// the register allocator to allow (512: at most 128 registers per thread).
#ifndef WKV_STAGE_STEPS
#define WKV_STAGE_STEPS 16
#endif
#ifndef WKV_MIN_RESIDENT_THREADS
#define WKV_MIN_RESIDENT_THREADS 512
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// Configuration per head size.
// ---------------------------------------------------------------------------------------------
template <int N>
struct Cfg {
    static_assert(N == 32 || N == 64 || N == 128, "head size must be 32, 64 or 128");
    static constexpr int SL = 16;                             // matrix elements per thread
    static constexpr int G = N / SL;                          // lanes per line (2, 4, 8)
    static constexpr int LPB = (N * G <= 256) ? N : 256 / G;  // lines per block
    static constexpr int LS = N / LPB;                        // blocks per head and pass
    static constexpr int THREADS = LPB * G;                   // 64, 256, 256
    static constexpr int QUADS = SL / 4;                      // float4 groups per thread
    static constexpr int TC = WKV_STAGE_STEPS;                // time steps per shared stage
    static constexpr int MIN_BLOCKS = WKV_MIN_RESIDENT_THREADS / THREADS;  // resident blocks per SM
    // Column pass: three [TC][N] key vectors, u, the [TC][LPB] line vector and outputs, bonus.
    static constexpr int SMEM_COLUMN = (3 * N + 2 * LPB + 1) * TC + N;
    // Row pass: two [TC][N] value vectors, five [TC][LPB] line scalars and outputs, p.vv.
    static constexpr int SMEM_ROW = (2 * N + 5 * LPB + 1) * TC;
    static constexpr int SMEM = SMEM_COLUMN > SMEM_ROW ? SMEM_COLUMN : SMEM_ROW;  // floats
    static_assert(N % 32 == 0 && THREADS % 32 == 0, "staging reduces whole warps over one time step");
    static_assert(SMEM * sizeof(float) <= 48 * 1024, "static shared memory is limited to 48 KiB");
    static_assert(MIN_BLOCKS >= 1, "WKV_MIN_RESIDENT_THREADS below one block");
};

// Thread g of a line holds the slice elements idx(q, c) = (q*G + g)*4 + c: one float4 per q,
// consecutive lanes on consecutive float4s, so the shared-memory reads are conflict-free.
template <int N>
__device__ __forceinline__ int slice_index(int g, int q, int c) {
    return (q * Cfg<N>::G + g) * 4 + c;
}

// Sum over groups of G adjacent lanes (every lane of the group gets the total).
template <int G>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
    for (int m = G / 2; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

// Time index of the tt-th step of the stage starting at c0.
template <bool REVERSE>
__device__ __forceinline__ int time_of(int c0, int tt, int T) {
    return REVERSE ? T - 1 - (c0 + tt) : c0 + tt;
}

// ---------------------------------------------------------------------------------------------
// Column pass: lines are value columns j, the slice runs over keys i; X[j][i] is the matrix.
//
//     out_t[j] = sum_i q_t[i] X[j][i] + vv_t[j] * sum_i q_t[i] u[i] kk_t[i]
//     X[j][i] <- e_t[i] X[j][i] + kk_t[i] vv_t[j]
//
// forward:  q = r, kk = k, vv = v,  X = S (from s0),     ascending t  -> y, S_T
// dv:       q = k, kk = r, vv = dy, X = G (from ds_out), descending t -> dv
// ---------------------------------------------------------------------------------------------
template <int N, typename F, typename FW, bool REVERSE>
__device__ void column_pass(const Seq<F>& q_seq, const Seq<F>& kk_seq, const Seq<F>& vv_seq, const Seq<FW>& w_seq,
                            const float* __restrict__ u, const float* __restrict__ x0, F* __restrict__ out,
                            float* __restrict__ x_final, int T, int H, float* smem) {
    using C = Cfg<N>;
    const int bh = blockIdx.x / C::LS, part = blockIdx.x % C::LS;
    const int b = bh / H, h = bh % H;
    const int tid = threadIdx.x, lane = tid % 32, g = tid % C::G, line = tid / C::G;
    const int l0 = part * C::LPB, j = l0 + line;  // this thread's value column
    const Rows<F> q_in(q_seq, b, h), kk_in(kk_seq, b, h), vv_in(vv_seq, b, h);
    const Rows<FW> w_in(w_seq, b, h);

    float* s_q = smem;                     // [TC][N]
    float* s_kk = s_q + C::TC * N;         // [TC][N]
    float* s_e = s_kk + C::TC * N;         // [TC][N]
    float* s_vv = s_e + C::TC * N;         // [TC][LPB]
    float* s_out = s_vv + C::TC * C::LPB;  // [TC][LPB]
    float* s_bonus = s_out + C::TC * C::LPB;  // [TC]: sum_i q u kk
    float* s_u = s_bonus + C::TC;          // [N]

    for (int n = tid; n < N; n += C::THREADS) s_u[n] = u[h * N + n];
    for (int n = tid; n < C::TC; n += C::THREADS) s_bonus[n] = 0.f;
    float x[C::SL];
#pragma unroll
    for (int q = 0; q < C::QUADS; ++q) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            x[q * 4 + c] = x0 ? x0[state_row(b, h, slice_index<N>(g, q, c), H, N) + j] : 0.f;
        }
    }

    for (int c0 = 0; c0 < T; c0 += C::TC) {
        const int cnt = min(C::TC, T - c0);
        __syncthreads();  // the previous stage is consumed and s_bonus is zeroed
        // Whole warps per time step (N % 32 == 0): reduce q*u*kk over the warp, then over warps.
        for (int idx = tid; idx < cnt * N; idx += C::THREADS) {
            const int tt = idx / N, n = idx % N, t = time_of<REVERSE>(c0, tt, T);
            const float qv = q_in(t, n), kv = kk_in(t, n);
            s_q[idx] = qv;
            s_kk[idx] = kv;
            s_e[idx] = expf(w_in(t, n));
            const float bonus = group_sum<32>(qv * s_u[n] * kv);
            if (lane == 0) atomicAdd(s_bonus + tt, bonus);
        }
        for (int idx = tid; idx < cnt * C::LPB; idx += C::THREADS) {
            const int tt = idx / C::LPB;
            s_vv[idx] = vv_in(time_of<REVERSE>(c0, tt, T), l0 + idx % C::LPB);
        }
        __syncthreads();

#pragma unroll 1
        for (int tt = 0; tt < cnt; ++tt) {
            const float vj = s_vv[tt * C::LPB + line];
            const float4* q4 = reinterpret_cast<const float4*>(s_q + tt * N);
            const float4* k4 = reinterpret_cast<const float4*>(s_kk + tt * N);
            const float4* e4 = reinterpret_cast<const float4*>(s_e + tt * N);
            float acc = 0.f;
#pragma unroll
            for (int q = 0; q < C::QUADS; ++q) {
                const float4 qa = q4[q * C::G + g], ka = k4[q * C::G + g], ea = e4[q * C::G + g];
                const float qs[4] = {qa.x, qa.y, qa.z, qa.w};
                const float ks[4] = {ka.x, ka.y, ka.z, ka.w};
                const float es[4] = {ea.x, ea.y, ea.z, ea.w};
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    float& s = x[q * 4 + c];
                    acc = fmaf(qs[c], s, acc);
                    s = fmaf(s, es[c], ks[c] * vj);
                }
            }
            acc = group_sum<C::G>(acc);
            if (g == 0) s_out[tt * C::LPB + line] = fmaf(vj, s_bonus[tt], acc);
        }
        __syncthreads();
        for (int idx = tid; idx < cnt * C::LPB; idx += C::THREADS) {
            const int tt = idx / C::LPB, t = time_of<REVERSE>(c0, tt, T);
            out[dense(b, t, h, T, H, N) + l0 + idx % C::LPB] = from_f<F>(s_out[idx]);
        }
        for (int n = tid; n < C::TC; n += C::THREADS) s_bonus[n] = 0.f;
    }

    if (x_final) {
#pragma unroll
        for (int q = 0; q < C::QUADS; ++q) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                x_final[state_row(b, h, slice_index<N>(g, q, c), H, N) + j] = x[q * 4 + c];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row pass: lines are key rows i, the slice runs over values j; X[i][j] is the matrix.
//
//     o = sum_j X[i][j] p_t[j];   pv = sum_j p_t[j] vv_t[j];   X[i][j] <- e_t[i] X[i][j] + kk_t[i] vv_t[j]
//     grad_t[i] = o + u[i] kk_t[i] pv;   acc[t + SHIFT][i] += SIGN * qq_t[i] o
//
// dr (DR):  p = dy, vv = v,  kk = k, qq = r, X = S (from s0),     ascending t  -> dr, du; acc[t-1] += r*o
// dk:       p = v,  vv = dy, kk = r, qq = k, X = G (from ds_out), descending t -> dk, ds0; acc[t] -= k*o
// ---------------------------------------------------------------------------------------------
template <int N, typename F, typename FW, bool DR>
__device__ void row_pass(const Seq<F>& p_seq, const Seq<F>& vv_seq, const Seq<F>& kk_seq, const Seq<F>& qq_seq,
                         const Seq<FW>& w_seq, const float* __restrict__ u, const float* __restrict__ x0,
                         F* __restrict__ grad, float* __restrict__ acc, float* __restrict__ du_part,
                         float* __restrict__ x_final, int T, int H, float* smem) {
    using C = Cfg<N>;
    constexpr bool REVERSE = !DR;
    const int bh = blockIdx.x / C::LS, part = blockIdx.x % C::LS;
    const int b = bh / H, h = bh % H;
    const int tid = threadIdx.x, lane = tid % 32, g = tid % C::G, line = tid / C::G;
    const int l0 = part * C::LPB, i = l0 + line;  // this thread's key row
    const Rows<F> p_in(p_seq, b, h), vv_in(vv_seq, b, h), kk_in(kk_seq, b, h), qq_in(qq_seq, b, h);
    const Rows<FW> w_in(w_seq, b, h);

    float* s_p = smem;                         // [TC][N]
    float* s_vv = s_p + C::TC * N;             // [TC][N]
    float* s_kk = s_vv + C::TC * N;            // [TC][LPB]
    float* s_qq = s_kk + C::TC * C::LPB;       // [TC][LPB]
    float* s_e = s_qq + C::TC * C::LPB;        // [TC][LPB]
    float* s_grad = s_e + C::TC * C::LPB;      // [TC][LPB]
    float* s_wterm = s_grad + C::TC * C::LPB;  // [TC][LPB]
    float* s_pv = s_wterm + C::TC * C::LPB;    // [TC]: sum_j p vv

    for (int n = tid; n < C::TC; n += C::THREADS) s_pv[n] = 0.f;
    const float ui = u[h * N + i];
    float x[C::SL];
#pragma unroll
    for (int q = 0; q < C::QUADS; ++q) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            x[q * 4 + c] = x0 ? x0[state_row(b, h, i, H, N) + slice_index<N>(g, q, c)] : 0.f;
        }
    }
    float du = 0.f;

    for (int c0 = 0; c0 < T; c0 += C::TC) {
        const int cnt = min(C::TC, T - c0);
        __syncthreads();  // the previous stage is consumed and s_pv is zeroed
        for (int idx = tid; idx < cnt * N; idx += C::THREADS) {
            const int tt = idx / N, n = idx % N, t = time_of<REVERSE>(c0, tt, T);
            const float pv = p_in(t, n), vv = vv_in(t, n);
            s_p[idx] = pv;
            s_vv[idx] = vv;
            const float dot = group_sum<32>(pv * vv);
            if (lane == 0) atomicAdd(s_pv + tt, dot);
        }
        for (int idx = tid; idx < cnt * C::LPB; idx += C::THREADS) {
            const int tt = idx / C::LPB, n = l0 + idx % C::LPB, t = time_of<REVERSE>(c0, tt, T);
            s_kk[idx] = kk_in(t, n);
            s_qq[idx] = qq_in(t, n);
            s_e[idx] = expf(w_in(t, n));
        }
        __syncthreads();

#pragma unroll 1
        for (int tt = 0; tt < cnt; ++tt) {
            const int li = tt * C::LPB + line;
            const float kk = s_kk[li], ei = s_e[li];
            const float4* p4 = reinterpret_cast<const float4*>(s_p + tt * N);
            const float4* v4 = reinterpret_cast<const float4*>(s_vv + tt * N);
            float o = 0.f;
#pragma unroll
            for (int q = 0; q < C::QUADS; ++q) {
                const float4 pa = p4[q * C::G + g], va = v4[q * C::G + g];
                const float ps[4] = {pa.x, pa.y, pa.z, pa.w};
                const float vs[4] = {va.x, va.y, va.z, va.w};
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    float& s = x[q * 4 + c];
                    o = fmaf(s, ps[c], o);
                    s = fmaf(s, ei, kk * vs[c]);
                }
            }
            o = group_sum<C::G>(o);
            if (g == 0) {
                const float qq = s_qq[li], pv = s_pv[tt];
                s_grad[li] = fmaf(ui * kk, pv, o);
                s_wterm[li] = DR ? qq * o : -qq * o;
                if (DR) du = fmaf(qq * kk, pv, du);
            }
        }
        __syncthreads();
        for (int idx = tid; idx < cnt * C::LPB; idx += C::THREADS) {
            const int tt = idx / C::LPB, l = idx % C::LPB, t = time_of<REVERSE>(c0, tt, T);
            grad[dense(b, t, h, T, H, N) + l0 + l] = from_f<F>(s_grad[idx]);
            // dr pass: r_t*(S_t dy_t) belongs to acc[t-1] (nothing decays before t = 0).
            const int ta = DR ? t - 1 : t;
            if (ta >= 0) atomicAdd(acc + dense(b, ta, h, T, H, N) + l0 + l, s_wterm[idx]);
        }
        for (int n = tid; n < C::TC; n += C::THREADS) s_pv[n] = 0.f;
    }

    if (DR && g == 0) du_part[(static_cast<int64_t>(b) * H + h) * N + i] = du;
    if (!DR && x_final) {
#pragma unroll
        for (int q = 0; q < C::QUADS; ++q) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                x_final[state_row(b, h, i, H, N) + slice_index<N>(g, q, c)] = x[q * 4 + c];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels.
// ---------------------------------------------------------------------------------------------
template <typename F, typename FW>
struct Args {
    Seq<F> r, k, v, dy;
    Seq<FW> w;
    const float* u;
    const float* s0;
    const float* ds_out;
    F *y, *dr, *dk, *dv;
    float *s_out, *acc, *du_part, *ds0;
    int B, T, H;
};

template <int N, typename F, typename FW>
__global__ void __launch_bounds__(Cfg<N>::THREADS, Cfg<N>::MIN_BLOCKS) wkv_forward_kernel(const Args<F, FW> a) {
    __shared__ __align__(16) float smem[Cfg<N>::SMEM];
    column_pass<N, F, FW, false>(a.r, a.k, a.v, a.w, a.u, a.s0, a.y, a.s_out, a.T, a.H, smem);
}

// blockIdx.y: 0 = dr/du (row pass, ascending), 1 = dk/ds0 (row pass, descending), 2 = dv.
template <int N, typename F, typename FW>
__global__ void __launch_bounds__(Cfg<N>::THREADS, Cfg<N>::MIN_BLOCKS) wkv_backward_kernel(const Args<F, FW> a) {
    __shared__ __align__(16) float smem[Cfg<N>::SMEM];
    if (blockIdx.y == 0) {
        row_pass<N, F, FW, true>(a.dy, a.v, a.k, a.r, a.w, a.u, a.s0, a.dr, a.acc, a.du_part, nullptr, a.T, a.H,
                                 smem);
    } else if (blockIdx.y == 1) {
        row_pass<N, F, FW, false>(a.v, a.dy, a.r, a.k, a.w, a.u, a.ds_out, a.dk, a.acc, nullptr, a.ds0, a.T, a.H,
                                  smem);
    } else {
        column_pass<N, F, FW, true>(a.k, a.r, a.dy, a.w, a.u, a.ds_out, a.dv, nullptr, a.T, a.H, smem);
    }
}

// dw_t[i] = rowsum(S_T * G_T)[i] + sum_{m >= t} acc[m][i]; one thread per (b, h, i), t descending.
// acc and dw may alias (fp32 w), hence no __restrict__ on them; each element is read, then written.
template <int N, typename FW>
__global__ void wkv_dw_scan_kernel(const float* acc, const float* __restrict__ s_out, const float* __restrict__ ds_out,
                                   FW* dw, int B, int T, int H) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(B) * H * N) return;
    const int i = static_cast<int>(idx % N);
    const int h = static_cast<int>((idx / N) % H);
    const int b = static_cast<int>(idx / (static_cast<int64_t>(N) * H));
    float total = 0.f;
    if (ds_out) {
        const int64_t row = state_row(b, h, i, H, N);
        for (int jj = 0; jj < N; ++jj) total = fmaf(s_out[row + jj], ds_out[row + jj], total);
    }
    constexpr int U = 8;  // loads in flight per thread
    const int64_t step = static_cast<int64_t>(H) * N;
    int64_t off = dense(b, T - 1, h, T, H, N) + i;
    int t = T - 1;
    for (; t >= U - 1; t -= U, off -= U * step) {
        float d[U];
#pragma unroll
        for (int s = 0; s < U; ++s) d[s] = acc[off - s * step];
#pragma unroll
        for (int s = 0; s < U; ++s) {
            total += d[s];
            dw[off - s * step] = from_f<FW>(total);
        }
    }
    for (; t >= 0; --t, off -= step) {
        total += acc[off];
        dw[off] = from_f<FW>(total);
    }
}

template <typename F, typename FW>
Args<F, FW> make_args(int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w, const float* u) {
    Args<F, FW> a{};
    a.r = typed<F>(r);
    a.k = typed<F>(k);
    a.v = typed<F>(v);
    a.w = typed<FW>(w);
    a.u = u;
    a.B = B;
    a.T = T;
    a.H = H;
    return a;
}

template <typename F, typename FW>
int launch_forward(int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w, const float* u, const float* s0,
                   void* y, float* s_out, cudaStream_t stream) {
    using C = Cfg<WKV_N>;
    Args<F, FW> a = make_args<F, FW>(B, T, H, r, k, v, w, u);
    a.s0 = s0;
    a.y = static_cast<F*>(y);
    a.s_out = s_out;
    void (*kernel)(const Args<F, FW>) = wkv_forward_kernel<WKV_N, F, FW>;
    WKV_LAUNCH(kernel, dim3(B * H * C::LS), dim3(C::THREADS), stream, a);
    return static_cast<int>(cudaGetLastError());
}

template <typename F, typename FW>
int launch_backward(int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w, const float* u, const float* s0,
                    const float* s_out, WkvSeq dy, const float* ds_out, void* dr, void* dk, void* dv, void* dw,
                    float* acc, float* du_part, float* ds0, cudaStream_t stream) {
    using C = Cfg<WKV_N>;
    Args<F, FW> a = make_args<F, FW>(B, T, H, r, k, v, w, u);
    a.dy = typed<F>(dy);
    a.s0 = s0;
    a.ds_out = ds_out;
    a.dr = static_cast<F*>(dr);
    a.dk = static_cast<F*>(dk);
    a.dv = static_cast<F*>(dv);
    a.acc = acc;
    a.du_part = du_part;
    a.ds0 = ds0;
    const size_t n_acc = static_cast<size_t>(B) * T * H * WKV_N;
    cudaError_t err = cudaMemsetAsync(acc, 0, n_acc * sizeof(float), stream);
    if (err != cudaSuccess) return static_cast<int>(err);
    void (*kernel)(const Args<F, FW>) = wkv_backward_kernel<WKV_N, F, FW>;
    WKV_LAUNCH(kernel, dim3(B * H * C::LS, 3), dim3(C::THREADS), stream, a);
    err = cudaGetLastError();
    if (err != cudaSuccess) return static_cast<int>(err);
    const int64_t channels = static_cast<int64_t>(B) * H * WKV_N;
    constexpr int SCAN_THREADS = 128;
    const unsigned blocks = static_cast<unsigned>((channels + SCAN_THREADS - 1) / SCAN_THREADS);
    void (*scan)(const float*, const float*, const float*, FW*, int, int, int) = wkv_dw_scan_kernel<WKV_N, FW>;
    WKV_LAUNCH(scan, dim3(blocks), dim3(SCAN_THREADS), stream, acc, s_out, ds_out, static_cast<FW*>(dw), B, T, H);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Dtype dispatch over WKV_FOR_EACH_DTYPE (wkv_device.cuh): (r/k/v/dy dtype, w dtype).
// ---------------------------------------------------------------------------------------------

int wkv_forward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                const float* u, const float* s0, void* y, float* s_out, cudaStream_t stream) {
    if (B == 0 || H == 0) return 0;  // T == 0 is fine: s_out = s0
#define WKV_CASE(D, DW, F, FW) \
    if (dtype == D && w_dtype == DW) return launch_forward<F, FW>(B, T, H, r, k, v, w, u, s0, y, s_out, stream);
    WKV_FOR_EACH_DTYPE(WKV_CASE)
#undef WKV_CASE
    return kWkvUnsupportedDtype;
}

int wkv_backward(int dtype, int w_dtype, int B, int T, int H, WkvSeq r, WkvSeq k, WkvSeq v, WkvSeq w,
                 const float* u, const float* s0, const float* s_out, WkvSeq dy, const float* ds_out, void* dr,
                 void* dk, void* dv, void* dw, float* acc, float* du_part, float* ds0, cudaStream_t stream) {
    if (B == 0 || H == 0) return 0;  // T == 0 is fine: ds0 = ds_out, du = 0
#define WKV_CASE(D, DW, F, FW)                                                                                 \
    if (dtype == D && w_dtype == DW)                                                                           \
        return launch_backward<F, FW>(B, T, H, r, k, v, w, u, s0, s_out, dy, ds_out, dr, dk, dv, dw, acc, du_part, \
                                      ds0, stream);
    WKV_FOR_EACH_DTYPE(WKV_CASE)
#undef WKV_CASE
    return kWkvUnsupportedDtype;
}

int wkv_head_size() { return WKV_N; }
