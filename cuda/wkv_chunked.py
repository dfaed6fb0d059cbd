"""Chunked, parallel-in-time WKV in plain PyTorch (training and prefill, any device, any T).

The sequence is padded to a multiple of the chunk size C (r = k = v = w = 0 on the padding,
which changes neither outputs nor the final state) and cut into chunks. Per chunk:

* inter-chunk: queries decayed from the chunk start, ``r_t prod_{j<t} e_j``, read the state at
  the chunk start; keys decayed to the chunk end, ``k_i prod_{j>i} e_j``, give the chunk's own
  contribution to the next state. A short loop over chunks (elementwise ops on [B, H, N, N])
  carries the state; everything else is batched over all chunks at once.
* intra-chunk: attention of each query on the earlier keys of its chunk, with weight
  ``prod_{i<j<t} e_j`` per channel (``e = exp(w)``), plus the bonus ``u`` for the current token.
  It is built bottom-up over a binary tree of blocks. Leaves are sub-chunks of c positions whose
  few pairs are computed one by one with the exact product of decays; a block of 2h positions
  adds the cross term "second half attends to first half", which factorises exactly through the
  midpoint: ``weight = P_t * Q_i`` with P_t the decay from the midpoint to t and Q_i the decay
  from i to the midpoint.

Every factor lies in [0, 1], so nothing overflows whatever the decays are (w ~ -1e-9 or -100),
and log decays are only ever summed, never subtracted: no cumulative sum is differenced, which
would lose precision when a strong decay precedes weak ones. Products of decays are floored at
e^-25 ~ 1.4e-11 -- far below fp32 resolution relative to the terms they are summed with -- so
that nothing reaches the denormal range, where x86 ``exp`` and ``mul`` run 10-100x slower.
Gradients come from autograd through this code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract import check_wkv_inputs, compute_dtype, empty_sequence_result

__all__ = ["wkv_chunked", "DEFAULT_CHUNK_SIZE", "DEFAULT_SUB_CHUNK"]

#: Positions per chunk (the N x N state is materialised once per chunk); ``sub_chunk`` times a
#: power of 2. 32 and 64 measure the same on a 2-core CPU at T=1024; 32 is faster for short T.
DEFAULT_CHUNK_SIZE = 32
#: Positions per leaf block, whose c(c-1)/2 pairs are computed one by one (4 beat 2 and 8 on CPU).
DEFAULT_SUB_CHUNK = 4

# Sums of log decays below the floor are raised to it before exp (see the module docstring);
# fp64 (tests) keeps far more range.
_LOG_FLOOR = {torch.float32: -25.0, torch.float64: -200.0}


def _decay(x: torch.Tensor) -> torch.Tensor:
    """exp(x) for (sums of) log decays x <= 0, floored; never denormal, never inf/nan."""
    return x.clamp(min=_LOG_FLOOR[x.dtype]).exp_()  # exp_ in place: clamp's backward doesn't need its output


def _excl_sum(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Exclusive cumulative sum along dim -2: sum over j < i (or j > i when ``reverse``).

    Running sums of the terms themselves (never a difference of running sums), so each output
    is as accurate as a direct sum.
    """
    if reverse:
        return _excl_sum(x.flip(-2)).flip(-2)
    return F.pad(x[..., :-1, :], (0, 0, 1, 0)).cumsum(-2)


def _block_diagonal(att: torch.Tensor, size: int) -> torch.Tensor:
    """View of the diagonal size x size blocks of att [B, H, nC, C, C] as [B, H, nC, size, size, C/size]."""
    B, H, nC, C, _ = att.shape
    return att.view(B, H, nC, C // size, size, C // size, size).diagonal(dim1=3, dim2=5)


def _leaves(
    r: torch.Tensor, k: torch.Tensor, e: torch.Tensor, u: torch.Tensor, phi: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything inside the leaf blocks of c positions.

    r, k, e: [B, H, nC, L, c, N] (e: per-step decay factors in [phi, 1]); u: [H, N].
    Returns att [B, H, nC, L, c, c] (pairs i < t with their exact decay products, the bonus on
    the diagonal), rP = r_t prod_{j<t} e_j and kQ = k_i prod_{j>i} e_j (products within the
    leaf, floored at phi), both [B, H, nC, L, c, N].
    """
    c = r.shape[-2]
    rl, kl, el = r.unbind(-2), k.unbind(-2), e.unbind(-2)  # c x [B, H, nC, L, N]
    bonus = (r * k * u[:, None, None, None, :]).sum(-1).unbind(-1)  # c x [B, H, nC, L]
    zero = torch.zeros_like(bonus[0])
    rows = [[bonus[t] if i == t else zero for i in range(c)] for t in range(c)]
    for i in range(c - 1):
        dec = None  # prod_{i<j<t} e_j; None = 1
        for t in range(i + 1, c):
            if t > i + 1:
                dec = el[t - 1] if dec is None else (dec * el[t - 1]).clamp(min=phi)
            rows[t][i] = (rl[t] * (kl[i] if dec is None else kl[i] * dec)).sum(-1)
    att = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rP, kQ = [rl[0]], [kl[c - 1]]
    pre = suf = None
    for j in range(1, c):
        pre = el[j - 1] if pre is None else (pre * el[j - 1]).clamp(min=phi)
        suf = el[c - j] if suf is None else (suf * el[c - j]).clamp(min=phi)
        rP.append(rl[j] * pre)
        kQ.append(kl[c - 1 - j] * suf)
    return att, torch.stack(rP, dim=-2), torch.stack(kQ[::-1], dim=-2)


def _intra_chunk(
    r: torch.Tensor, k: torch.Tensor, w: torch.Tensor, u: torch.Tensor, c: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intra-chunk attention, and queries / keys decayed from the chunk start / to its end.

    r, k, w (log decays): [B, H, nC, C, N], any layout that views as that; u: [H, N]; C = c * 2^m.
    Returns att [B, H, nC, C, C] (att[t, i] = weight of key i in output t, bonus included),
    q_in [B, H, nC, C, N] = r_t prod_{j<t} e_j, k_in [B, H, nC, C, N] = k_i prod_{j>i} e_j and
    the log decay of each whole chunk [B, H, nC, N].
    """
    B, H, nC, C, N = r.shape
    L = C // c  # leaves per chunk
    phi = math.exp(_LOG_FLOOR[r.dtype])

    w_leaf = w.view(B, H, nC, L, c, N)
    att_leaf, rP, kQ = _leaves(r.view(w_leaf.shape), k.view(w_leaf.shape), _decay(w_leaf), u, phi)
    att = r.new_zeros(B, H, nC, C, C)  # filled block by block, in place
    _block_diagonal(att, c).copy_(att_leaf.permute(0, 1, 2, 4, 5, 3))
    W = w_leaf.sum(-2)  # [B, H, nC, L, N] log decay over each leaf
    h = c
    while h < C:  # merge pairs of blocks of h positions into blocks of 2h
        m, nb = h // c, C // (2 * h)  # leaves per half, merged blocks per chunk
        _, rP_hi = rP.view(B, H, nC, nb, 2, m, c, N).unbind(4)  # [B, H, nC, nb, m, c, N]
        kQ_lo, _ = kQ.view(B, H, nC, nb, 2, m, c, N).unbind(4)
        # Second half attends to the first through the midpoint. Extend the leaves' own decay
        # products by whole leaves: from the midpoint to t's leaf, from i's leaf to the midpoint.
        if m > 1:
            W_lo, W_hi = W.view(B, H, nC, nb, 2, m, N).unbind(4)  # [B, H, nC, nb, m, N]
            rP_hi = rP_hi * _decay(_excl_sum(W_hi)).unsqueeze(-2)
            kQ_lo = kQ_lo * _decay(_excl_sum(W_lo, reverse=True)).unsqueeze(-2)
        cross = rP_hi.flatten(4, 5) @ kQ_lo.flatten(4, 5).transpose(-1, -2)  # [B, H, nC, nb, h, h]
        _block_diagonal(att, 2 * h)[:, :, :, h:, :h].copy_(cross.permute(0, 1, 2, 4, 5, 3))
        h *= 2
    q_in = (rP * _decay(_excl_sum(W)).unsqueeze(-2)).view(B, H, nC, C, N)
    k_in = (kQ * _decay(_excl_sum(W, reverse=True)).unsqueeze(-2)).view(B, H, nC, C, N)
    return att, q_in, k_in, W.sum(-2)


def _scan_states(
    upd: torch.Tensor, decay: torch.Tensor, state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """State at the start of every chunk, and after the last one.

    upd: [B, H, nC, N, N] each chunk's own contribution (decayed to its end);
    decay: [B, H, nC, N, 1] whole-chunk decay factor per key; state: [B, H, N, N] or None.
    Returns s_starts [B, H, nC, N, N] and the final state [B, H, N, N].
    """
    s = state
    starts = []
    for upd_c, decay_c in zip(upd.unbind(2), decay.unbind(2)):  # unbind: cheap in backward
        if s is None:
            starts.append(torch.zeros_like(upd_c))
            s = upd_c
        else:
            starts.append(s)
            s = torch.addcmul(upd_c, decay_c, s)  # decay_c * s + upd_c
    return torch.stack(starts, dim=2), s


def wkv_chunked(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    sub_chunk: int = DEFAULT_SUB_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a whole sequence, parallel within chunks; differentiable by autograd.

    Args:
        r, k, v, w: [B, T, H, N], any float dtype (``w`` may be a broadcast view). ``w`` is the
            log decay (<= 0, finite); the per-step decay factor is ``exp(w)``.
        u: [H, N] bonus for the current token.
        state: optional [B, H, N, N] initial state, key index first; ``None`` means zeros.
        chunk_size: positions per chunk, ``sub_chunk`` times a power of two (shrunk for short inputs).
        sub_chunk: positions per leaf block, whose pairs are computed one by one.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] in fp32
        (fp64 when an input is fp64). Gradients flow to r, k, v, w, u and ``state``.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
        ValueError: chunk_size is not sub_chunk times a power of two.

    Decay products below e^-25 (fp32; e^-200 for fp64) are rounded up to it: a change of at most
    1.4e-11 relative to the terms they are summed with.
    """
    check_wkv_inputs(r, k, v, w, u, state)
    ratio = chunk_size // sub_chunk if sub_chunk > 0 else 0
    if sub_chunk < 1 or chunk_size % sub_chunk or ratio & (ratio - 1):
        raise ValueError(f"chunk_size ({chunk_size}) must be sub_chunk ({sub_chunk}) times a power of two")
    B, T, H, N = r.shape
    dt = compute_dtype(r, k, v, w, u, state)
    if T == 0:
        return empty_sequence_result(r, state, dt)
    st = None if state is None else state.to(dt)

    # Short inputs: don't pad a handful of tokens up to a whole chunk.
    c = min(sub_chunk, T)
    C = c
    while C < min(T, chunk_size):
        C *= 2
    nC = -(-T // C)
    pad = nC * C - T

    def to_chunks(x: torch.Tensor, contiguous: bool) -> torch.Tensor:
        x = x.transpose(1, 2).to(dt)  # [B, H, T, N]
        if pad:  # r = k = v = w = 0 there: no effect on outputs or state
            x = F.pad(x, (0, 0, 0, pad))
        if contiguous:
            x = x.to(memory_format=torch.contiguous_format)
        return x.view(B, H, nC, C, N)

    # r, k and w feed only elementwise ops (any layout will do, so no copy); v feeds matmuls.
    rc, kc, wc = (to_chunks(x, contiguous=False) for x in (r, k, w))  # [B, H, nC, C, N]
    vc = to_chunks(v, contiguous=True)
    att, q_in, k_in, w_chunk = _intra_chunk(rc, kc, wc, u.to(dt), c)

    upd = k_in.transpose(-1, -2) @ vc  # [B, H, nC, N, N] each chunk's keys, decayed to its end
    s_starts, s_out = _scan_states(upd, _decay(w_chunk).unsqueeze(-1), st)
    y = (att @ vc).view(B * H * nC, C, N)
    y = y.baddbmm_(q_in.view(B * H * nC, C, N), s_starts.view(B * H * nC, N, N))  # + the carried state
    y = y.view(B, H, nC * C, N)[:, :, :T].transpose(1, 2)  # [B, T, H, N]
    return y.contiguous().to(r.dtype), s_out
