"""The digits data (fixed split, question forms) and the independent drawing judge."""

import random

import numpy as np
import pytest

from omnidlm.data.digits import N_TRAIN, WORDS, caption, digit_images, question_answer, understanding_samples
from omnidlm.eval.judge import DigitJudge


def test_split_is_fixed_and_disjoint():
    train, train_labels = digit_images("train", size=16)
    held, held_labels = digit_images("heldout", size=16)
    assert train.shape == (N_TRAIN, 16, 16) and held.shape == (297, 16, 16)
    assert 0.0 <= held.min() and held.max() <= 1.0
    assert sorted(set(held_labels.tolist())) == list(range(10))
    with pytest.raises(ValueError, match="valid splits"):
        digit_images("test")


def test_answers_have_different_lengths():
    rng = random.Random(0)
    lengths = {kind: len(question_answer(7, kind, rng)[1]) for kind in ("word", "describe", "arithmetic")}
    assert question_answer(7, "word", rng) == ("What digit is shown?", "seven")
    assert len(set(lengths.values())) == 3
    assert caption(3) == "a handwritten digit 3"
    samples = understanding_samples("heldout", seed=1)
    assert len(samples) == 297 * 3 and samples != understanding_samples("heldout", seed=2)


def test_judge_recognises_real_heldout_digits_and_rejects_noise():
    judge = DigitJudge.fit()
    images, labels = digit_images("heldout", size=32)
    assert judge.accuracy(images, labels) > 0.9
    noise = np.random.default_rng(0).random((50, 32, 32)).astype(np.float32)
    assert judge.accuracy(noise, [7] * 50) < 0.5
    assert WORDS[int(judge.predict(images[:1])[0])] in WORDS
