"""Chat JSON lines (omnidlm.data.chat_data) and the character tokenizer (omnidlm.data.char_tokenizer):
reading and its errors, prompt/answer split, SFT padding, packing with document ids."""

import json

import pytest
import torch

from omnidlm.data import chat_data as C
from omnidlm.data.char_tokenizer import CHARS, SPECIAL_TOKENS, build_char_tokenizer, special_ids
from omnidlm.sequence.chat import render_chat
from omnidlm.sequence.masks import document_mask
from omnidlm.sequence.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(build_char_tokenizer())


# --- character tokenizer ------------------------------------------------------------------------


def test_char_tokenizer_ids_fixed(tok):
    assert special_ids(tok.hf) == {"mask_id": 101, "eos_id": 97, "eot_id": 98, "bos_id": 96, "pad_id": 97}
    assert tok.vocab_size == len(CHARS) + len(SPECIAL_TOKENS) == 103
    assert tok.encode("\n A~") == [0, 1, 34, 95]


def test_char_tokenizer_round_trip_and_chat(tok, tmp_path):
    text = "Hello,  world!\n\n  {x: [1, 2]} ~`'\"\\ end "
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2 + 2?"}]
    chat = render_chat(messages)
    chat_ids = tok.encode(chat)
    n_markers = 1 + 3 * 2 + 2  # BOS, (header, end header, eot) per turn, the open assistant header
    n_chars = len(chat) - sum(chat.count(s) * len(s) for s in SPECIAL_TOKENS)
    assert len(chat_ids) == n_markers + n_chars
    assert tok.decode(chat_ids, skip_special_tokens=False) == chat
    # saves as tokenizer.json and loads back through the project's wrapper
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.from_file(tmp_path)
    assert again.encode(chat) == chat_ids


def test_char_tokenizer_unknown_characters(tok):
    assert tok.encode("a\tb") == [tok.encode("a")[0], 102, tok.encode("b")[0]]
    assert tok.decode(tok.encode("a\tb")) == "ab"


# --- reading ----------------------------------------------------------------------------------------

GOOD = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                  {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                  {"role": "assistant", "content": "d"}]},
]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_good_file(tmp_path):
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD[0]), "", json.dumps(GOOD[1])])
    assert C.read_chat_jsonl(path) == [GOOD[0]["messages"], GOOD[1]["messages"]]


@pytest.mark.parametrize("bad, what", [
    ("{not json", "invalid JSON"),
    (json.dumps({"msgs": []}), "'messages' list"),
    (json.dumps({"messages": []}), "'messages' is empty"),
    (json.dumps({"messages": [{"role": "user"}]}), "message 0 must be an object with 'role' and 'content'"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "message 0 has role 'robot'"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image"}]},
                              {"role": "assistant", "content": "x"}]}), "message 0 has list content"),
    (json.dumps({"messages": [{"role": "user", "content": 3}]}), "content must be a string"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "last message must be from the assistant"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, what):
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD[0]), "", bad, json.dumps(GOOD[1])])
    with pytest.raises(ValueError) as err:
        C.read_chat_jsonl(path)
    assert f"{path}:3:" in str(err.value) and what in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.read_chat_jsonl(tmp_path / "nope.jsonl")


# --- tokenising -------------------------------------------------------------------------------------


def test_tokenize_chat_prompt_and_answer(tok):
    eos = special_ids(tok.hf)["eos_id"]
    prompt, answer = C.tokenize_chat(GOOD[1]["messages"], tok)
    expected_prompt = render_chat(GOOD[1]["messages"][:-1], add_generation_prompt=True)
    assert tok.decode(prompt, skip_special_tokens=False) == expected_prompt
    assert expected_prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "<|start_header_id|>assistant<|end_header_id|>\n\nb<|eot_id|>" in expected_prompt  # earlier turn kept
    assert answer == tok.encode("d") + [eos]


def test_load_chat_examples(tmp_path, tok):
    path = _write(tmp_path / "chat.jsonl", [json.dumps(g) for g in GOOD])
    examples = C.load_chat_examples(path, tok)
    assert examples == [C.tokenize_chat(g["messages"], tok) for g in GOOD]


# --- batching ---------------------------------------------------------------------------------------

EOS, MASK = 97, 101


def test_collate_sft_by_hand():
    examples = [([1, 2], [3, EOS]), ([4], [5, 6, 7, EOS]), ([8, 9], [10])]  # the last one truncated
    batch = C.collate_sft(examples, eos_id=EOS, mask_id=MASK)
    assert torch.equal(batch.input_ids, torch.tensor([
        [1, 2, 3, EOS, EOS],
        [4, 5, 6, 7, EOS],
        [8, 9, 10, MASK, MASK],
    ]))
    assert torch.equal(batch.answer_mask, torch.tensor([
        [False, False, True, True, True],  # EOS padding counts as answer
        [False, True, True, True, True],
        [False, False, True, False, False],  # no EOS after a truncated answer
    ]))
    with pytest.raises(ValueError, match="example 1 has 5 tokens"):
        C.collate_sft(examples, EOS, MASK, length=4)


def test_pack_examples_by_hand():
    examples = [([1, 2], [3, EOS]), ([4], [5, EOS]), ([6, 7, 8], [9, 10, EOS])]
    packed = C.pack_examples(examples, seq_len=8, pad_id=EOS)
    assert torch.equal(packed.input_ids, torch.tensor([
        [1, 2, 3, EOS, 4, 5, EOS, EOS],
        [6, 7, 8, 9, 10, EOS, EOS, EOS],
    ]))
    assert torch.equal(packed.doc_ids, torch.tensor([[0, 0, 0, 0, 1, 1, 1, -1], [0, 0, 0, 0, 0, 0, -1, -1]]))
    assert torch.equal(packed.position_ids, torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5, 0, 0]]))
    assert torch.equal(packed.answer_mask, torch.tensor([
        [False, False, True, True, False, True, True, False],
        [False, False, False, True, True, True, False, False],
    ]))
    # documents never see each other, nor the padding
    mask = document_mask(packed.doc_ids)[0, 0]
    assert mask[0, 3] and not mask[0, 4] and not mask[4, 7] and mask[4, 6]


def test_pack_examples_too_long():
    examples = [([1, 2, 3], [4, 5, EOS])]
    with pytest.raises(ValueError, match="example 0 has 6 tokens, more than seq_len 4"):
        C.pack_examples(examples, seq_len=4, pad_id=EOS)
    packed = C.pack_examples(examples, seq_len=4, pad_id=EOS, truncate=True)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4]]
    assert packed.answer_mask.tolist() == [[False, False, False, True]]
