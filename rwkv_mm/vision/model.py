"""The VisualRWKV fusion model: projected CLIP features replace the `<image>` placeholders.

Submodule names follow the released VisualRWKV checkpoints: `rwkv` (the language model in the
official layout: Eagle/Finch, or GoldFinch in the GoldFinch code's layout), `vit` (the frozen
tower), `proj` (the projector).
"""

from __future__ import annotations

import torch
from torch import nn

from rwkv_mm.backbone import Backbone, BackboneState
from rwkv_mm.errors import UserError
from rwkv_mm.training.lm_head_loss import head_loss, unwrap
from rwkv_mm.training.segments import Segmented, SegmentOut, even_bounds

from .conversation import IMAGE_TOKEN_ID
from .tower import VisionTower


def image_span_reversal(input_ids: torch.Tensor) -> torch.Tensor | None:
    """Index [B, T] that reverses each row's contiguous image-placeholder span (None if no image).

    Applying it twice is the identity; VisualRWKV-6 runs its odd layers on the reversed order.
    """
    is_image = input_ids == IMAGE_TOKEN_ID  # [B, T]
    if not bool(is_image.any()):
        return None
    B, T = input_ids.shape
    pos = torch.arange(T, device=input_ids.device).expand(B, T)
    big = torch.full_like(pos, T)
    start = torch.where(is_image, pos, big).min(dim=1, keepdim=True).values  # [B, 1]
    end = torch.where(is_image, pos, -1).max(dim=1, keepdim=True).values  # [B, 1] inclusive
    return torch.where(is_image, start + end - pos, pos)


def check_reversal(rwkv: Backbone, reverse_image_odd_layers: bool) -> None:
    """Raise a UserError when `model.reverse_image_odd_layers` is asked of a backbone without it.

    The reversal re-orders the image span between layers (the backbone's `layer_order`); a
    family whose layers must all see one order (GoldFinch: its GOLD layers share one key cache
    in sequence order) says so with `supports_layer_order = False`."""
    if reverse_image_odd_layers and not rwkv.supports_layer_order:
        raise UserError(f"model.reverse_image_odd_layers=true is not supported with version "
                        f"{rwkv.config.version}: its layers share one sequence order (GoldFinch: "
                        "GOLD layers share one key cache), so odd layers cannot run on a reversed "
                        "image span", fix="set it to false")


class VisualRWKV(nn.Module):
    """Eagle/Finch (or GoldFinch) LM with a CLIP front end.

    Args:
        rwkv: the language model (of any family, as `build_backbone` returns it).
        vit: the frozen vision tower (None when only precomputed features are used).
        proj: the projector, [.., C] -> [.., D].
        reverse_image_odd_layers: run odd layers over the image span in reverse (VisualRWKV-6;
            Eagle/Finch only).
    """

    def __init__(self, rwkv: Backbone, vit: VisionTower | None, proj: nn.Module,
                 reverse_image_odd_layers: bool = False) -> None:
        super().__init__()
        self.rwkv, self.vit, self.proj = rwkv, vit, proj
        self.reverse_image_odd_layers = reverse_image_odd_layers

    @property
    def reverse_image_odd_layers(self) -> bool:
        return self._reverse_image_odd_layers

    @reverse_image_odd_layers.setter
    def reverse_image_odd_layers(self, value: bool) -> None:
        check_reversal(self.rwkv, value)
        self._reverse_image_odd_layers = bool(value)

    @property
    def num_image_tokens(self) -> int:
        if self.vit is None:
            raise ValueError("this VisualRWKV has no vision tower")
        return self.vit.num_tokens

    def image_embeddings(self, images: torch.Tensor | None = None,
                         image_features: torch.Tensor | None = None) -> torch.Tensor:
        """images [N, 3, S, S] (through the frozen tower) or tower features [N, P, C] -> [N, P, D]."""
        if image_features is None:
            if self.vit is None:
                raise ValueError("no vision tower: pass image_features [N, P, C]")
            image_features = self.vit(images)
        return self.proj(image_features.to(self.proj_dtype))

    @property
    def proj_dtype(self) -> torch.dtype:
        return next(self.proj.parameters()).dtype

    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None,
              span: tuple[int, int] | None = None) -> torch.Tensor:
        """Token embeddings [B, T, D] with the placeholders (row-major order) replaced by
        `image_embeds` [N, P, D]: image n fills the n-th run of P placeholders. `span` (start,
        end): positions [start, end) of the rows only ([B, end - start, D]), each placeholder
        there taking its own row of the images (`image_embeds` may then be None when the span
        holds none)."""
        is_image = input_ids == IMAGE_TOKEN_ID  # [B, T]
        start, end = span if span is not None else (0, input_ids.shape[1])
        inside = is_image[:, start:end]  # [B, end - start]
        x = self.rwkv.emb(input_ids[:, start:end].clamp(min=0))  # [B, end - start, D]
        n_slots = int(is_image.sum())
        n_given = 0 if image_embeds is None else image_embeds.shape[0] * image_embeds.shape[1]
        if n_slots != n_given and (image_embeds is not None or bool(inside.any())):
            raise ValueError(f"input_ids hold {n_slots} image placeholders but {n_given} image "
                             f"embeddings were given ({None if image_embeds is None else tuple(image_embeds.shape)})")
        if image_embeds is not None and n_slots:
            rows = image_embeds.to(x.dtype).reshape(-1, x.shape[-1])  # [N·P, D]
            if span is not None:  # each placeholder's ordinal among the whole batch's
                ordinal = is_image.flatten().cumsum(0).view_as(is_image) - 1  # [B, T]
                rows = rows[ordinal[:, start:end][inside]]  # [placeholders in the span, D]
            x = x.masked_scatter(inside.unsqueeze(-1), rows)
        return x

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None,
                state: BackboneState | None = None, *, image_features: torch.Tensor | None = None,
                last_only: bool = False, return_hidden: bool = False, span: tuple[int, int] | None = None):
        """input_ids [B, T] with IMAGE_TOKEN_ID placeholders; images [N, 3, S, S] or
        image_features [N, P, C] for the N images in row-major order. Returns (logits [B, T, V]
        or hidden [B, T, D], state), as the backbone's forward (with its state type).

        `span` (start, end): run positions [start, end) of the rows only, from `state` (segment
        training, `train.segment_len`); a reversed image span must lie inside it or outside it."""
        has_image = images is not None or image_features is not None
        if has_image and span is not None and not torch.is_grad_enabled():  # no tower for image-free spans
            has_image = bool((input_ids[:, span[0]:span[1]] == IMAGE_TOKEN_ID).any())
        embeds = self.image_embeddings(images, image_features) if has_image else None
        x = self.embed(input_ids, embeds, span)
        perm = image_span_reversal(input_ids) if self.reverse_image_odd_layers else None  # [B, T]
        if perm is not None and span is not None:
            perm = _span_order(perm, *span)
        order = None if perm is None else (lambda layer: perm if layer % 2 else None)
        return self.rwkv(inputs_embeds=x, state=state, last_only=last_only, return_hidden=return_hidden,
                         layer_order=order)


def _span_order(perm: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The positions [start, end) of a per-row order `perm` [B, T], numbered from start."""
    local = perm[:, start:end] - start  # [B, end - start]
    if local.numel() and not (0 <= int(local.min()) and int(local.max()) < end - start):
        raise ValueError(f"positions [{start}, {end}) cut a reversed image span (vlm_segment_bounds keeps it whole)")
    return local


def vlm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Trainer loss: next-token cross entropy on answer tokens only. The head runs only at the
    positions that have a target (image and prompt positions cost no [V]-wide logits), a chunk of
    them at a time (`head_loss`: the trainer's train.loss_chunk, L2Wrap at those positions)."""
    hidden, _ = model(batch["input_ids"], images=batch.get("images"),
                      image_features=batch.get("image_features"), return_hidden=True)  # [B, T, D]
    return head_loss(unwrap(model).rwkv.head, hidden, batch["targets"])


def vlm_segment(model: nn.Module, batch: dict, start: int, end: int, state: BackboneState | None,
                with_loss: bool) -> SegmentOut:
    """`vlm_loss` over positions [start, end) from `state` (`train.segment_len`). Every segment
    with a gradient runs the projector (its parameters take part in every backward, as
    distributed training expects; placeholders outside the segment get no gradient)."""
    hidden, state = model(batch["input_ids"], images=batch.get("images"), state=state,
                          image_features=batch.get("image_features"), return_hidden=True,
                          last_only=not with_loss, span=(start, end))  # [B, end - start, D]
    if not with_loss:
        return SegmentOut(None, None, state, hidden)
    loss_sum, _, logits = head_loss(unwrap(model).rwkv.head, hidden, batch["targets"][:, start:end])
    return SegmentOut(loss_sum, logits, state)


def vlm_segment_bounds(model: nn.Module, batch: dict, segment_len: int) -> list[int]:
    """Boundaries every `segment_len` positions, except that with `reverse_image_odd_layers` a
    boundary that would cut a row's image span moves to the span's end (the odd layers read the
    span backwards: it must lie in one segment, which may then hold up to segment_len + P - 1)."""
    bounds = even_bounds(model, batch, segment_len)
    if not unwrap(model).reverse_image_odd_layers:
        return bounds
    ids = batch["input_ids"]
    T = ids.shape[1]
    pos = torch.arange(T, device=ids.device).expand_as(ids)
    is_image = ids == IMAGE_TOKEN_ID  # [B, T]
    firsts = torch.where(is_image, pos, T).min(dim=1).values.tolist()
    lasts = torch.where(is_image, pos, -1).max(dim=1).values.tolist()
    spans = [(f, l) for f, l in zip(firsts, lasts) if l >= 0]
    out, b = [0], segment_len
    while b < T:
        while any(f < b <= l for f, l in spans):
            b = max(l + 1 for f, l in spans if f < b <= l)
        if b < T:
            out.append(b)
        b += segment_len
    return [*out, T]


vlm_loss.segmented = Segmented(vlm_segment, vlm_segment_bounds)  # type: ignore[attr-defined]
