"""Chunked, parallel-in-time WKV-7 in plain PyTorch (training and prefill, any device, any T).

Internally the state is used key-major, h = S^T [K, V], so a step reads
``h_t = (D_t + b_t a_t^T) h_{t-1} + k_t v_t^T`` and ``y_t = h_t^T r_t`` (D_t = diag(exp(w_t))).
The sequence is padded to whole chunks of C positions (w = 0 and r = k = v = a = b = 0 there:
the state passes unchanged) and, within a chunk with start state h_0 and G_t the log decay summed
over positions 1..t of the chunk, unrolled exactly (the WY / "UT transform" form of
flash-linear-attention's ``chunk_dplr_delta_rule``):

    u_i = h_{i-1}^T a_i  (rows of U [C, V]):  (I - M_ab) U = A~ h_0 + M_ak V
    y_t = R~ h_0 + M_rk V + M_rb U            h_C = diag(e^{G_C}) h_0 + K^^T V + B^^T U

with M_xy[t, i] = sum_c x_t[c] y_i[c] exp(G'_t[c] - G_i[c]) over i <= t (r: G' = G_t, pairs
i <= t) or i < t (a: G' = G_{t-1}), A~ = a e^{G_{t-1}}, R~ = r e^{G_t}, K^ = k e^{G_C - G},
B^ = b e^{G_C - G}. (I - M_ab) is unit lower triangular: a triangular solve (no inverse of any
decay) gives W = (I - M_ab)^{-1} A~ and U_v = (I - M_ab)^{-1} M_ak V, so that U = W h_0 + U_v.
Each chunk then maps its start state by h_C = P h_0 + Delta (P = diag(e^{G_C}) + B^^T W,
Delta = K^^T V + B^^T U_v): a short loop over chunks carries the state, everything else is
batched over all chunks at once.

Stability: no decay is ever inverted where that could overflow, and log decays are only summed,
never differenced (a strong decay followed by weak ones loses nothing). The pair decays
exp(G'_t - G_i) come one of two ways. (1) Factored through the chunk start, exp(G'_t) exp(-G_i),
one matmul per chunk -- used when every chunk's total log decay is >= -60 (fp32; -600 in fp64),
so exp(-G_i) <= e^60 is finite and exp(G) normal and each term is exact to a few ulps; Goose's
decays (w >= -e^-0.5 per step) always qualify at C = 32. (2) Otherwise exactly, in two levels: a
chunk is cut into blocks of c positions; pairs in different blocks factor through the start of
the later block q, ``exp(G'_t - G_q) * exp(G_q - G_i)``, both factors <= 1 and each a sum of the
log decays in between (one batched matmul per block row); pairs inside one block use the exact
sum over the positions in between (a c x c x K table). Math in fp32 (fp64 when an input is fp64);
gradients come from autograd through this code (saved per chunk: C x C matrices and the N x N
transition and start state, no per-token state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contract import check_wkv7_inputs, compute_dtype, empty_sequence_result

__all__ = ["wkv7_chunked", "DEFAULT_CHUNK_SIZE7", "DEFAULT_BLOCK7"]

#: Positions per chunk (one N x N transition and state per chunk); a multiple of the block size.
DEFAULT_CHUNK_SIZE7 = 32
#: Positions per block, whose pairs get exact decay sums (c x c x K tables).
DEFAULT_BLOCK7 = 8


# The factored pair matrices multiply exp(G_t) by exp(-G_i): used when every chunk's total log
# decay is at least -limit, so that exp(-G) stays finite and exp(G) normal (fp32 max ~e^88).
_FACTOR_LIMIT = {torch.float32: 60.0, torch.float64: 600.0}


def _excl_cumsum(x: torch.Tensor, dim: int, reverse: bool = False) -> torch.Tensor:
    """Exclusive cumulative sum along ``dim`` (sum over j < i, or j > i when ``reverse``): a running
    sum of the terms themselves, never a difference of running sums."""
    if reverse:
        return _excl_cumsum(x.flip(dim), dim).flip(dim)
    x = x.movedim(dim, -1)
    return F.pad(x[..., :-1], (1, 0)).cumsum(-1).movedim(-1, dim)


def _pair_matrices_factored(
    r_dec: torch.Tensor, w: torch.Tensor, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, g_in: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_pair_matrices` through the chunk start: exp(G'_t - G_i) = exp(G'_t) * exp(-G_i), one
    matmul per chunk (r_dec = r exp(G) is passed in). Exact (a few ulps per term) while exp(-G_i)
    stays far from overflow, which the caller checks: the chunk's total log decay >= -`_FACTOR_LIMIT`."""
    C = r_dec.shape[-2]
    up = torch.exp(-g_in)  # [..., C, K], <= e^limit
    queries = torch.cat([r_dec, a * torch.exp(_excl_cumsum(w, -2))], dim=-2)  # [..., 2C, K]
    keys = torch.cat([k * up, b * up], dim=-2)  # [..., 2C, K]
    m = queries @ keys.transpose(-1, -2)  # [..., 2C, 2C]
    incl = torch.ones(C, C, dtype=m.dtype, device=m.device).tril()
    strict = incl.tril(-1)
    m = m * torch.cat([torch.cat([incl, incl], 1), torch.cat([strict, strict], 1)], 0)  # r: i <= t, a: i < t
    return m[..., :C, :C], m[..., :C, C:], m[..., C:, :C], m[..., C:, C:]


def _pair_matrices(
    r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """M_rk, M_rb (pairs i <= t) and M_ak, M_ab (pairs i < t), each [..., C, C].

    r, w, k, a, b: [..., C, K] (w the log decays of one chunk); c: block size dividing C.
    """
    *lead, C, K = r.shape
    ns = C // c
    blk = [x.reshape(*lead, ns, c, K) for x in (r, w, k, a, b)]
    rb_, wb_, kb_, ab_, bb_ = blk  # [..., ns, c, K]
    g_in = wb_.cumsum(-2)  # log decay from the block start through t (inclusive)
    g_ex = _excl_cumsum(wb_, -2)  # ... through t - 1
    g_after = _excl_cumsum(wb_, -2, reverse=True)  # sum over the rest of i's block, after i
    total = g_in[..., -1, :]  # [..., ns, K] whole block
    # between[q, p] = sum of whole blocks strictly between p and q (p < q), exact sums.
    idx = torch.arange(ns, device=r.device)
    strictly = ((idx[None, :, None] < idx[None, None, :]) & (idx[None, None, :] < idx[:, None, None]))
    between = torch.einsum("qpm,...mk->...qpk", strictly.to(w.dtype), total)  # [..., ns(q), ns(p), K]
    # Cross-block pairs: query t in block q, key i in block p < q, through the start of block q.
    expo = between.unsqueeze(-2) + g_after.unsqueeze(-4)  # [..., q, p, c(i), K]
    earlier = (idx[:, None] > idx[None, :]).to(w.dtype)[..., None, None]  # [q, p, 1, 1]
    right = (torch.exp(expo) * earlier).reshape(*lead, ns, C, K)  # [..., q, C(i), K], 0 unless p < q
    keys = torch.cat([right * k.unsqueeze(-3), right * b.unsqueeze(-3)], dim=-2)  # [..., q, 2C, K]
    queries = torch.cat([rb_ * torch.exp(g_in), ab_ * torch.exp(g_ex)], dim=-2)  # [..., q, 2c, K]
    cross = queries @ keys.transpose(-1, -2)  # [..., q, 2c, 2C]
    # Same-block pairs: exact sums sum_{i < s <= t} w_s, from a table masked to s <= t.
    upto = torch.tril(torch.ones(c, c, dtype=torch.bool, device=r.device))  # [t, s]: s <= t
    w_upto = wb_.unsqueeze(-3) * upto[..., None].to(w.dtype)  # [..., ns, c(t), c(s), K]
    dec = torch.exp(_excl_cumsum(w_upto, -2, reverse=True).masked_fill(~upto[..., None], float("-inf")))
    dec_a = F.pad(dec[..., :-1, :, :], (0, 0, 0, 0, 1, 0))  # row i uses t = i - 1: pairs j < i
    kb2 = torch.stack([kb_, bb_], dim=-1)  # [..., ns, c(i), K, 2]
    diag_r = torch.einsum("...tik,...ikx->...tix", rb_.unsqueeze(-2) * dec, kb2)  # [..., ns, c, c, 2]
    diag_a = torch.einsum("...tik,...ikx->...tix", ab_.unsqueeze(-2) * dec_a, kb2)
    diag = torch.cat([diag_r, diag_a], dim=-3)  # [..., ns, 2c, c, 2]
    blocks = cross.view(*lead, ns, 2 * c, 2, ns, c)  # [..., q, rows, (k|b), p, i]
    blocks.diagonal(dim1=-5, dim2=-2).add_(diag.movedim(-4, -1).transpose(-3, -2))  # p = q blocks
    m_rk, m_rb = cross[..., :c, :].reshape(*lead, ns, c, 2, C).unbind(-2)
    m_ak, m_ab = cross[..., c:, :].reshape(*lead, ns, c, 2, C).unbind(-2)
    return (m_rk.reshape(*lead, C, C), m_rb.reshape(*lead, C, C), m_ak.reshape(*lead, C, C),
            m_ab.reshape(*lead, C, C))


def _chunk_states(p: torch.Tensor, delta: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """State at the start of every chunk, and after the last one.

    p: [B, H, nC, K, K] chunk transitions; delta: [B, H, nC, K, V] each chunk's own contribution;
    state: [B, H, K, V] (key-major) or None. Returns starts [B, H, nC, K, V] and the final state.
    """
    h = state
    starts = []
    for p_c, d_c in zip(p.unbind(2), delta.unbind(2)):  # unbind: cheap in backward
        if h is None:
            starts.append(torch.zeros_like(d_c))
            h = d_c
        else:
            starts.append(h)
            h = torch.baddbmm(d_c.flatten(0, 1), p_c.flatten(0, 1), h.flatten(0, 1)).view_as(d_c)
    return torch.stack(starts, dim=2), h


def wkv7_chunked(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE7,
    block: int = DEFAULT_BLOCK7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 over a whole sequence, parallel within chunks; differentiable by autograd.

    Args:
        r, w, k, v, a, b: [B, T, H, N], any float dtype; ``w`` is the log decay (<= 0, finite).
        state: optional [B, H, N, N] initial state, value index first; ``None`` means zeros.
        chunk_size: positions per chunk, a multiple of ``block`` (shrunk for short inputs).
        block: positions per block, whose pairs get exact decay sums.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] (value index
        first) in fp32, fp64 when an input is fp64. Gradients flow to every input and ``state``.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
        ValueError: chunk_size is not a positive multiple of block.
    """
    check_wkv7_inputs(r, w, k, v, a, b, state)
    if block < 1 or chunk_size < block or chunk_size % block:
        raise ValueError(f"chunk_size ({chunk_size}) must be a positive multiple of block ({block})")
    B, T, H, N = r.shape
    dt = compute_dtype(r, w, k, v, a, b, state)
    if T == 0:
        return empty_sequence_result(r, state, dt)
    c = min(block, T)  # short inputs: don't pad a handful of tokens up to a whole chunk
    C = min(chunk_size, -(-T // c) * c)
    nC = -(-T // C)
    pad = nC * C - T

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).to(dt)  # [B, H, T, N]
        if pad:  # w = 0 and r = k = v = a = b = 0 there: the state passes unchanged
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(B, H, nC, C, N)

    rc, wc, kc, vc, ac, bc = (to_chunks(x) for x in (r, w, k, v, a, b))  # [B, H, nC, C, N]
    g_in = wc.cumsum(-2)  # log decay from the chunk start through t
    r_dec = rc * torch.exp(g_in)  # R~
    if bool((g_in[..., -1, :] >= -_FACTOR_LIMIT[dt]).all()):  # always so for Goose's decays (w >= -0.61)
        m_rk, m_rb, m_ak, m_ab = _pair_matrices_factored(r_dec, wc, kc, ac, bc, g_in)  # [B, H, nC, C, C]
    else:
        m_rk, m_rb, m_ak, m_ab = _pair_matrices(rc, wc, kc, ac, bc, c)
    eye = torch.eye(C, dtype=dt, device=r.device)
    # (I - M_ab)^{-1} by a triangular solve (fewer right-hand sides than [A~ | M_ak V]).
    inv = torch.linalg.solve_triangular(eye - m_ab, eye.expand_as(m_ab), upper=False, unitriangular=True)
    rhs = torch.cat([ac * torch.exp(_excl_cumsum(wc, -2)), m_ak @ vc], dim=-1)  # [A~ | M_ak V], [..., C, K + V]
    solved = inv @ rhs  # [W | U_v]: U = W h_0 + U_v
    decay_end = torch.exp(_excl_cumsum(wc, -2, reverse=True))  # exp(G_C - G_t), [B, H, nC, C, K]
    bt_solved = (bc * decay_end).transpose(-1, -2) @ solved  # [B^^T W | B^^T U_v], [..., K, K + V]
    p = torch.diag_embed(torch.exp(g_in[..., -1, :])) + bt_solved[..., :N]  # [B, H, nC, K, K]
    delta = torch.baddbmm(bt_solved[..., N:].flatten(0, 2), (kc * decay_end).transpose(-1, -2).flatten(0, 2),
                          vc.flatten(0, 2)).view(B, H, nC, N, N)  # K^^T V + B^^T U_v
    h0 = None if state is None else state.to(dt).transpose(-1, -2)  # key-major [B, H, K, V]
    starts, h_out = _chunk_states(p, delta, h0)
    rb_solved = m_rb @ solved  # [M_rb W | M_rb U_v], [..., C, K + V]
    q = r_dec + rb_solved[..., :N]  # [B, H, nC, C, K]
    y = q @ starts + m_rk @ vc + rb_solved[..., N:]  # [B, H, nC, C, V]
    y = y.reshape(B, H, nC * C, N)[:, :, :T].transpose(1, 2)  # [B, T, H, N]
    return y.contiguous().to(r.dtype), h_out.transpose(-1, -2).contiguous()
