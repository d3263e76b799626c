"""The shipped `models/text-tiny` (trained by `omnidlm train --recipe synthetic-text`) solves the
held-out digit-ops task: exact match with LLaDA2.0's block-causal threshold sampler."""

from pathlib import Path

import pytest

import omnidlm
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.train.evaluate import synthetic_exact_match

MODEL = Path(__file__).resolve().parents[1] / "models" / "text-tiny"


@pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(), reason="models/text-tiny is not shipped yet")
def test_shipped_text_model_solves_heldout_examples():
    model = omnidlm.load(MODEL)
    assert model.config.attention == "block" and model.num_parameters() < 2_000_000
    result = synthetic_exact_match(model, Tokenizer.from_file(MODEL), n=32, threshold=0.9)
    assert result["exact_match"] >= 0.85, result
