"""The synthetic digit-ops task (omnidlm.data.synthetic): determinism, disjoint splits, answer
lengths, the ops, the fixed-offset alignment of prompts, and the exact-match scorer."""

import pytest

from omnidlm.data import synthetic as S
from omnidlm.data.char_tokenizer import build_char_tokenizer, special_ids
from omnidlm.sequence.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(build_char_tokenizer())


def _parse(messages):
    text = messages[0]["content"]
    op, field = text[:S.OP_WIDTH].strip(), text[S.OP_WIDTH + 1:]
    return op, field.rstrip(S.PAD_CHAR)


def test_ops_by_hand():
    assert S.apply_op("copy", "0912") == "0912"
    assert S.apply_op("add1", "1299") == "2300"
    # pairsum: d[i] + d[i-1] mod 10 with d[-1] = 0: 1, 1+2, 2+9, 9+5 -> 1 3 1 4
    assert S.apply_op("pairsum", "1295") == "1314"
    with pytest.raises(ValueError, match="unknown op"):
        S.apply_op("reverse", "12")


def test_deterministic():
    assert S.example(7) == S.example(7)
    assert S.heldout(5) == S.heldout(5)
    assert S.train_examples(4, seed=3) == S.train_examples(4, seed=3)
    assert S.train_examples(4, seed=3) != S.train_examples(4, seed=4)
    assert S.example(7) != S.example(8)


def test_example_format_and_answer():
    for messages, answer in S.heldout(30):
        assert len(messages) == 1 and messages[0]["role"] == "user"
        text = messages[0]["content"]
        assert len(text) == S.PROMPT_CHARS
        op, digits = _parse(messages)
        assert op in S.OPS and digits.isdigit()
        assert S.MIN_DIGITS <= len(digits) <= S.MAX_DIGITS
        assert answer == S.apply_op(op, digits)


def test_splits_disjoint():
    assert min(S.train_ids(2000, seed=0)) >= S.HELDOUT_SIZE
    held = {_parse(m)[1] for m, _ in S.heldout(300)}
    train = {_parse(m)[1] for m, _ in S.train_examples(300, seed=0)}
    assert not held & train
    with pytest.raises(ValueError):
        S.heldout(S.HELDOUT_SIZE + 1)
    with pytest.raises(ValueError):
        S.example(-1)


def test_variety():
    examples = S.heldout(200)
    assert {_parse(m)[0] for m, _ in examples} == set(S.OPS)
    lengths = {len(a) for _, a in examples}
    assert len(lengths) > 10
    only_copy = S.heldout(20, ops=("copy",))
    assert all(_parse(m)[0] == "copy" for m, _ in only_copy)


def test_encoded_lengths_and_alignment(tok):
    eos = special_ids(tok.hf)["eos_id"]
    prompt_lengths = set()
    for messages, answer in S.heldout(40):
        prompt, ans = S.encode_example(messages, answer, tok)
        prompt_lengths.add(len(prompt))
        assert len(ans) >= 65 and ans[-1] == eos and eos not in ans[:-1]
        assert len(ans) == len(answer) + 1  # one token per character
        assert tok.decode(ans) == answer
        # the alignment property: digit i of the prompt sits at one fixed absolute position
        start = 9 + S.OP_WIDTH + 1  # after <bos><header>user<end_header>\n\n and the op field
        digits = _parse(messages)[1]
        assert tok.decode(prompt[start:start + len(digits)]) == digits
    assert prompt_lengths == {S.PROMPT_CHARS + 23}


def test_score_exact():
    assert S.score_exact("1234", "1234")
    assert S.score_exact(" 1234\n", "1234")
    assert not S.score_exact("1235", "1234")
    assert not S.score_exact("123", "1234")
    assert not S.score_exact("12345", "1234")
    assert not S.score_exact("", "1234")
    assert S.exact_match(["12", "34", "56"], ["12", "34", "57"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        S.exact_match(["1"], ["1", "2"])
    assert S.char_accuracy("1294", "1234") == pytest.approx(0.75)
    assert S.char_accuracy("12", "1234") == pytest.approx(0.5)
    assert S.char_accuracy("123456", "1234") == pytest.approx(4 / 6)
