"""Batched greedy answering and image-state caching give the same answers as one at a time."""

import pytest
import torch
from PIL import Image

from rwkv_mm.backbone import load_tokenizer
from rwkv_mm.vision.answer import Question, VisualAnswerer
from rwkv_mm.vision.preprocess import ImageProcessor
from vision_test_utils import tiny_visual_model

TOK = load_tokenizer("world")


def _images(tmp_path, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (32, 32), (80 * i, 255 - 60 * i, 30)).save(p)
        paths.append(p)
    return paths


def _questions(paths):
    texts = ["Is there a dog?", "What colour is it?", "Where?", "How many things are there in total?"]
    return [Question(f"{i}-{j}", p, t) for i, p in enumerate(paths) for j, t in enumerate(texts)] + \
        [Question("text", None, "Hello?")]


def _answerer(model, **kw):
    return VisualAnswerer(model, TOK, ImageProcessor(32), max_new_tokens=6, **kw)


def _greedy_reference(model, answerer, q):
    """Plain B=1 greedy decoding over the whole prompt, written independently."""
    ids = torch.tensor([answerer.prompt_ids(q)])
    pixels = ImageProcessor(32)(q.image).unsqueeze(0) if q.image else None
    out = []
    with torch.no_grad():
        logits, state = model(ids, images=pixels)
        tok = int(logits[0, -1].argmax())
        for _ in range(6):
            if tok == 0:
                break
            out.append(tok)
            if "\n\n" in TOK.decode(out):
                break
            logits, state = model(torch.tensor([[tok]]), state=state)
            tok = int(logits[0, -1].argmax())
    return TOK.decode(out).split("\n\n")[0].strip()


@pytest.mark.parametrize("version, n_layer", [("5", 2), ("goldfinch", 3)])
def test_batched_and_cached_answers_equal_one_at_a_time(tmp_path, version, n_layer):
    model = tiny_visual_model(version, seed=3, n_layer=n_layer)
    qs = _questions(_images(tmp_path))
    reference = [_greedy_reference(model, _answerer(model), q) for q in qs]
    no_cache = _answerer(model, cache_images=False)
    assert [no_cache.answer([q])[0] for q in qs] == reference
    cached = _answerer(model)
    assert cached.answer(qs[:7]) + cached.answer(qs[7:]) == reference
    assert cached.stats == {"prefix_computed": 3, "prefix_reused": 9}
    assert len(set(reference)) > 1  # the answers differ between questions: the test can fail


def test_cache_is_keyed_by_image(tmp_path):
    model = tiny_visual_model(seed=1)
    a, b = _images(tmp_path, 2)
    ans = _answerer(model)
    ans.answer([Question("1", a, "What?"), Question("2", b, "What?")])
    assert ans.stats["prefix_computed"] == 2


def test_non_finite_logits_stop_the_answers_with_a_user_error(tmp_path):
    """A model with NaN weights must not 'answer' with empty strings (greedy argmax of NaN)."""
    from rwkv_mm.backbone.sampling import NonFiniteLogitsError

    model = tiny_visual_model()
    with torch.no_grad():
        model.rwkv.head.weight.fill_(float("nan"))
    answerer = _answerer(model)
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        answerer.answer(_questions(_images(tmp_path, 1)))
