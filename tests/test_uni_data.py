"""Uni training sequences (data/uni_batches.py): every task is [prompt | answer] over text and codes."""

import random

import pytest
import torch

from omnidlm.data import uni_batches as UB
from omnidlm.data.char_tokenizer import build_char_tokenizer
from omnidlm.models.uni import UniVocab
from omnidlm.sequence.tokenizer import Tokenizer

TOK = Tokenizer(build_char_tokenizer())
VOCAB = UniVocab.for_text(TOK.vocab_size, max_side=8, codebook_size=16)
CODEC = UB.UniCodec(TOK, VOCAB)


def codes(value: int) -> torch.Tensor:
    return torch.full((2, 2), value, dtype=torch.long)


def test_understanding_puts_the_image_in_the_prompt_and_text_in_the_answer():
    prompt, answer = CODEC.understanding(codes(3), "What digit is shown?", "seven")
    assert VOCAB.parse_image(prompt[prompt.index(VOCAB.image_start): prompt.index(VOCAB.image_end) + 1]).eq(3).all()
    assert TOK.decode(answer) == "seven" and not any(VOCAB.is_image(answer))


def test_t2i_edit_interleaved_and_thinking_answers_hold_parsable_images():
    _, t2i = CODEC.t2i("a handwritten digit 7", codes(5))
    assert VOCAB.parse_image(t2i).eq(5).all()
    edit_prompt, edit_answer = CODEC.edit(codes(1), UB.edit_instruction(7), codes(2))
    assert sum(VOCAB.is_image(edit_prompt)) == 4 and VOCAB.parse_image(edit_answer).eq(2).all()
    _, inter = CODEC.interleaved(3, 5, codes(6), codes(7))
    spans = VOCAB.image_spans(inter)
    assert [int(VOCAB.parse_image(inter[a:b])[0, 0]) for a, b in spans] == [6, 7]
    _, think = CODEC.thinking(6, codes(9))
    text = TOK.decode(think[: think.index(VOCAB.image_start)])
    assert text.startswith("6 plus 1 is 7") and VOCAB.parse_image(think[think.index(VOCAB.image_start):]).eq(9).all()


def test_detailed_answers_are_long_enough_for_the_sprint_benchmark():
    assert min(len(TOK.encode(UB.detailed_answer(d))) for d in range(10)) >= 64


def test_task_mix_follows_the_weights_and_drops_captions():
    grid = torch.randint(0, 16, (2, 10, 2, 2))  # 2 augmented copies of 10 images
    tasks = UB.DigitsUniTasks(CODEC, grid, list(range(10)), {"t2i": 1.0}, text_drop=0.5)
    rng = random.Random(0)
    prompts = [TOK.decode(tasks.example(rng).prompt) for _ in range(200)]
    dropped = sum("handwritten" not in p for p in prompts)
    assert 60 < dropped < 140  # about half the captions become the empty prompt
    with pytest.raises(ValueError, match="unknown Uni task"):
        UB.DigitsUniTasks(CODEC, grid, list(range(10)), {"painting": 1.0})


def test_collate_trains_answers_and_eos_through_their_block_only():
    ex = [UB.UniExample([1, 2, 3], [4, 5]), UB.UniExample([1, 2], [6]), UB.UniExample([1] * 6, [7])]
    x0, maskable = UB.collate(ex, 16, eos_id=97, block=4)  # longest 7 + EOS -> 2 blocks of 4
    assert x0[0].tolist() == [1, 2, 3, 4, 5, 97, 97, 97] and x0[1].tolist() == [1, 2, 6, 97, 97, 97, 97, 97]
    # the answer, then EOS up to the end of the block holding the first EOS; later padding stays clean
    assert maskable[0].tolist() == [False] * 3 + [True] * 5
    assert maskable[1].tolist() == [False] * 2 + [True] * 2 + [False] * 4
    assert maskable[2].tolist() == [False] * 6 + [True] * 2
    with pytest.raises(ValueError, match="does not fit"):
        UB.collate([UB.UniExample([1] * 6, [2, 3])], 8, eos_id=97)
