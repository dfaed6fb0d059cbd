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


def _suffix_lengths(answerer, qs):
    from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
    out = []
    for q in qs:
        ids = answerer.prompt_ids(q)
        out.append(len(ids) - 1 - max(i for i, t in enumerate(ids) if t == IMAGE_TOKEN_ID))
    return out


@pytest.mark.parametrize("version, n_layer, position, reverse", [
    ("5", 2, "last", False), ("5", 2, "middle", False), ("6", 2, "first", True),
    ("goldfinch", 3, "last", False), ("goldfinch", 3, "middle", False),
])
def test_other_layouts_answer_as_one_at_a_time(tmp_path, version, n_layer, position, reverse):
    """Text before the image (per-question prefixes of unequal length: GoldFinch batches only
    equally long sequences) and VisualRWKV-6's reversed odd layers."""
    model = tiny_visual_model(version, reverse=reverse, seed=5, n_layer=n_layer)
    qs = _questions(_images(tmp_path, 2))
    cached = _answerer(model, image_position=position)
    reference = [_greedy_reference(model, cached, q) for q in qs]
    assert cached.answer(qs) == reference
    assert cached.stats["prefix_computed"] == (2 if position == "first" else 8)


def test_suffixes_prefill_in_few_calls_and_the_head_runs_once(tmp_path, monkeypatch):
    """Unequal suffixes: one call per extra length, then one call for all rows; the [V]-wide
    head runs once for the prefill (not for the image prefix) and once per decoding step, and
    decoding makes no step whose logits nobody reads."""
    model = tiny_visual_model(seed=3)
    answerer = _answerer(model)
    qs = _questions(_images(tmp_path, 1))[:4]  # one image, 4 questions
    lengths = _suffix_lengths(answerer, qs)
    assert len(set(lengths)) == 3  # [10, 10, 7, 13]: extras 3, 3, 0, 6 -> 2 calls before the last
    calls, heads = [], []
    forward, logits = type(model).forward, VisualAnswerer._logits

    def spy(self, input_ids, images=None, state=None, **kw):
        calls.append((tuple(input_ids.shape), images is not None))
        return forward(self, input_ids, images, state, **kw)

    def spy_head(self, hidden):
        heads.append(len(calls))  # how many model calls preceded this head
        return logits(self, hidden)

    monkeypatch.setattr(type(model), "forward", spy)
    monkeypatch.setattr(VisualAnswerer, "_logits", spy_head)
    answers = answerer.answer(qs)
    monkeypatch.undo()
    m = min(lengths)
    extras = sorted({n - m for n in lengths} - {0})
    n_prefill = 2 + len(extras)
    assert calls[0][1] and not any(image for _, image in calls[1:])  # one image prefix
    assert sorted(shape[1] for shape, _ in calls[1:n_prefill - 1]) == extras  # extra tokens
    assert calls[n_prefill - 1][0] == (4, m)  # all rows' last m tokens together
    assert all(shape == (4, 1) for shape, _ in calls[n_prefill:])
    assert len(calls) - n_prefill <= answerer.max_new_tokens - 1
    assert heads == list(range(n_prefill, len(calls) + 1))  # after the prefill, after each step
    assert answers == [_greedy_reference(model, answerer, q) for q in qs]


def test_a_prompt_ending_at_the_image_decodes_from_the_prefix(tmp_path, monkeypatch):
    """No suffix: the first token comes from the cached prefix's own logits."""
    model = tiny_visual_model(seed=4)
    answerer = _answerer(model)
    qs = _questions(_images(tmp_path, 1))[:2]
    full = VisualAnswerer.prompt_ids

    def ending_at_image(self, q):
        from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
        ids = full(self, q)
        return ids[:max(i for i, t in enumerate(ids) if t == IMAGE_TOKEN_ID) + 1]

    monkeypatch.setattr(VisualAnswerer, "prompt_ids", ending_at_image)
    reference = [_greedy_reference(model, answerer, q) for q in qs]
    assert answerer.answer(qs) == reference
    assert answerer.stats == {"prefix_computed": 1, "prefix_reused": 1}
