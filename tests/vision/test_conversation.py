"""Chat template, image placement and the assistant-only loss mask."""

import pytest

from rwkv_mm.backbone import load_tokenizer
from rwkv_mm.vision.conversation import (IGNORE_INDEX, IMAGE_TOKEN_ID, ChatTemplate, ConversationError,
                                         encode_conversation, place_image, to_training_pair)

TOK = load_tokenizer("world")


def test_three_turn_mask_is_exact():
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Black."},
            {"from": "human", "value": "Is it happy?"}, {"from": "gpt", "value": "Yes, very."}]
    ids, is_answer = encode_conversation(conv, TOK, num_image_tokens=3)
    # Build the expected sequence piece by piece, independently of the encoder.
    pieces = [("User: ", False), (None, False), ("\nWhat is it?\n\nAssistant:", False), (" A cat.\n\n", True),
              ("User: Colour?\n\nAssistant:", False), (" Black.\n\n", True),
              ("User: Is it happy?\n\nAssistant:", False), (" Yes, very.\n\n", True)]
    exp_ids, exp_mask = [], []
    for text, ans in pieces:
        toks = [IMAGE_TOKEN_ID] * 3 if text is None else TOK.encode(text)
        exp_ids += toks
        exp_mask += [ans] * len(toks)
    assert ids == exp_ids
    assert is_answer == exp_mask
    inputs, targets = to_training_pair(ids, is_answer, ctx_len=1000)
    assert len(inputs) == len(targets) == len(ids) - 1
    # every answer token of all three turns is a target, nothing else is
    supervised = [t for t in targets if t != IGNORE_INDEX]
    expected = TOK.encode(" A cat.\n\n") + TOK.encode(" Black.\n\n") + TOK.encode(" Yes, very.\n\n")
    assert supervised == expected
    for t, (tok, ans) in enumerate(zip(ids[1:], is_answer[1:])):
        assert targets[t] == (tok if ans else IGNORE_INDEX)
    assert TOK.decode([t for t in supervised]) == " A cat.\n\n Black.\n\n Yes, very.\n\n"


def test_truncation_keeps_pairs_aligned():
    conv = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there " * 20}]
    ids, mask = encode_conversation(conv, TOK, 0, has_image=False)
    inputs, targets = to_training_pair(ids, mask, ctx_len=8)
    assert len(inputs) == len(targets) == 8
    assert inputs == ids[:8]


@pytest.mark.parametrize("position,expected", [
    ("first", "<image>\nWhat is this picture about"),
    ("last", "What is this picture about\n<image>"),
    ("middle", "What is\n<image>\nthis picture about"),
    ("keep", "What is this\n<image> picture about"),
])
def test_image_placement(position, expected):
    assert place_image("What is this\n<image> picture about", position) == expected if position == "keep" \
        else place_image("<image>\nWhat is this picture about", position) == expected


def test_image_without_tag_goes_into_first_turn():
    conv = [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Red."}]
    ids, _ = encode_conversation(conv, TOK, num_image_tokens=2, has_image=True)
    assert ids.count(IMAGE_TOKEN_ID) == 2
    ids, _ = encode_conversation(conv, TOK, num_image_tokens=2, has_image=False)
    assert IMAGE_TOKEN_ID not in ids


@pytest.mark.parametrize("conv,match", [
    ([], "non-empty"),
    ([{"from": "gpt", "value": "x"}], "expected 'human'"),
    ([{"from": "human", "value": 3}], "must be"),
    ([{"from": "human", "value": "a"}], "no answer"),
    ([{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "b"}], "one image"),
])
def test_malformed_conversations_name_the_sample(conv, match):
    with pytest.raises(ConversationError, match=match) as info:
        encode_conversation(conv, TOK, 1, sample_id="s42")
    assert "s42" in str(info.value)


def test_generation_prompt_and_custom_template():
    t = ChatTemplate(user="Q", assistant="A", turn_end="\n")
    ids, mask = encode_conversation([{"from": "human", "value": "hi"}], TOK, 0, t, has_image=False,
                                    add_generation_prompt=True)
    assert TOK.decode(ids) == "Q: hi\nA:"
    assert not any(mask)
