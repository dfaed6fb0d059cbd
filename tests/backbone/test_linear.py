"""The decode-layout Linear: same results as nn.Linear, in both layouts and every path."""

from __future__ import annotations

import torch

from rwkv_mm.backbone.linear import Linear, column_halves, to_decode_layout
from rwkv_test_utils import tiny_model


def test_single_row_path_equals_nn_linear():
    torch.manual_seed(0)
    lin = Linear(96, 250, bias=False)
    ref = torch.nn.functional.linear
    assert column_halves(lin.weight) is None  # row-major: the plain path
    to_decode_layout(lin)
    assert lin.weight.t().is_contiguous() and lin.weight.shape == (250, 96)
    halves = column_halves(lin.weight)
    assert halves.shape == (2, 96, 125) and halves.data_ptr() == lin.weight.data_ptr()
    assert torch.equal(halves[1], lin.weight[125:].t())
    for shape in [(96,), (1, 96), (1, 1, 96), (3, 96), (2, 5, 96)]:
        x = torch.randn(shape)
        with torch.no_grad():
            y = lin(x)
        assert y.shape == (*shape[:-1], 250)
        assert torch.allclose(y, ref(x, lin.weight), atol=1e-5), shape
    x = torch.randn(1, 1, 96, requires_grad=True)  # with autograd: the plain path, gradients flow
    lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None


def test_decode_layout_keeps_model_outputs_and_state_dict():
    model = tiny_model(version="6", n_layer=2, n_embd=64, head_size=16)
    tokens = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        ref, _ = model(tokens)
        sd_before = {k: v.clone() for k, v in model.state_dict().items()}
        to_decode_layout(model)
        full, _ = model(tokens)
        state, steps = None, []
        for t in tokens[0]:
            out, state = model(t.view(1, 1), state)
            steps.append(out)
    assert torch.allclose(full, ref, atol=1e-5)
    assert torch.allclose(torch.cat(steps, 1), ref, atol=1e-5)
    assert all(torch.equal(sd_before[k], v) for k, v in model.state_dict().items())
