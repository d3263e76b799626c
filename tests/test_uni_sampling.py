"""LLaDA2.0-Uni end to end on a seconds-long recipe run (`digits-uni-tiny`): training, the layout,
the samplers (understanding through the engine, image codes with CFG, the decoders, editing, free
answers), SPRINT's unmasking, the commands, and bad input."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from types import SimpleNamespace

from omnidlm.cli import main
from omnidlm.data.digits import digit_images
from omnidlm.sampling import image as I
from omnidlm.sampling import uni as U
from omnidlm.sampling.sprint import Sprint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from omnidlm import systems
    from omnidlm.train.uni import digits_uni_tiny, train_uni

    out = tmp_path_factory.mktemp("uni") / "model"
    _, summary = train_uni(digits_uni_tiny(), out, progress=False)
    loaded = systems.open(out)
    model, tok = loaded.model, loaded.tokenizer
    return out, model, tok, summary


def digit(index: int = 0) -> np.ndarray:
    return digit_images("heldout", 32)[0][index]


def test_recipe_reports_every_part_and_saves_the_distilled_decoder(trained):
    out, model, _, summary = trained
    assert set(summary["part_seconds"]) == {"tokenizer", "decoder", "backbone"}
    assert summary["steps"] == 3 and summary["tokenizer"]["usage"]["used"] >= 1
    balance = summary["expert_balance"]
    assert balance and all(len(layer["load"]) == 4 for layer in balance.values())  # one load per expert
    assert (out / "decoder_distilled" / "model.safetensors").exists() and model.student is not None
    assert (out / "train_summary.json").exists() and (out / "tokenizer.json").exists()


def test_tune_recipe_trains_only_the_backbone_of_init_from(trained, tmp_path):
    import dataclasses

    from omnidlm import systems
    from omnidlm.train.uni import digits_uni_tune, train_uni

    base_dir, base, _, _ = trained
    cfg = dataclasses.replace(digits_uni_tune(), init_from=str(base_dir), steps=2, warmup=1, augmented_copies=2,
                              time_limit=0.0, threads=1)
    _, summary = train_uni(cfg, tmp_path / "tuned", progress=False)
    tuned = systems.open(tmp_path / "tuned").model
    assert set(summary["part_seconds"]) == {"load", "backbone"} and summary["steps"] == 2
    assert summary["init_from"] == str(base_dir) and summary["tokenizer"]  # the base's records carried over
    for part in ("tokenizer", "decoder", "student"):  # frozen: the same weights as the base
        a, b = getattr(base, part).state_dict(), getattr(tuned, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert any(not torch.equal(p, q) for p, q in zip(base.backbone.parameters(), tuned.backbone.parameters()))
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        train_uni(dataclasses.replace(cfg, init_from=str(tmp_path / "missing")), progress=False)


def test_understanding_answers_hold_no_image_ids_and_rows_match_alone(trained):
    _, model, tok, _ = trained
    v = model.config.vocab
    images, questions = [digit(0), digit(1), None], ["What digit is shown?", "Describe the image.", "Hello?"]
    together = U.understand_many(model, tok, images, questions, U.sampling_config(max_new_tokens=40))
    for image, question, answer in zip(images, questions, together):
        assert not any(v.offset <= i < v.total or i in (v.image_start, v.image_end) for i in answer.ids)
        alone = U.understand(model, tok, image, question, U.sampling_config(max_new_tokens=40))
        assert alone.ids == answer.ids


class GuidedToy(torch.nn.Module):
    """A backbone whose code logits depend on whether the caption token 7 is in the canvas."""

    def __init__(self, vocab, mask_id):
        super().__init__()
        self.config = SimpleNamespace(mask_id=mask_id, block_size=32)
        self.vocab = vocab

    def forward(self, ids, attention_mask=None):
        logits = torch.zeros(*ids.shape, self.vocab.total)
        cond = (ids == 7).any(1)  # (B,)
        three, five = self.vocab.offset + 3, self.vocab.offset + 5
        logits[..., five] = 2.0
        logits[..., three] = torch.where(cond, 1.9, 0.0)[:, None]
        return SimpleNamespace(logits=logits)


def test_code_cfg_pushes_toward_what_the_condition_adds(trained):
    _, model, _, _ = trained
    toy = SimpleNamespace(backbone=GuidedToy(model.config.vocab, 101), config=model.config)
    kw = dict(prompt=[1, 7, 2], uncond=[1, 2], n=2, grid=(2, 2), temperature=0.0)
    assert I.sample_codes(toy, cfg=1.0, **kw).eq(5).all()  # no guidance: the conditional argmax
    assert I.sample_codes(toy, cfg=3.0, **kw).eq(3).all()  # 0 + 3 * 1.9 > 2 + 3 * 0


def test_codes_are_in_range_and_all_decoders_draw_at_twice_the_tokenizer_size(trained):
    _, model, tok, _ = trained
    codes = I.sample_codes(model, [1, 2, 3], [1, 2], 3, (2, 2), cfg=2.0, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, 2, 2) and int(codes.min()) >= 0 and int(codes.max()) < model.config.vocab.codebook_size
    size = 2 * model.tokenizer.vit.image_size
    for kw in (dict(distilled=True), dict(distilled=False, decoder_steps=3), dict(sprint=Sprint())):
        images = I.draw_uni(model, tok, ["a handwritten digit 7"], n=2, **kw)
        assert images.shape == (2, size, size) and 0 <= images.min() and images.max() <= 1
    for kw in (dict(), dict(sprint=Sprint())):
        assert I.edit_uni(model, tok, digit(), "Change the digit to 7.", n=2, **kw).shape == (2, size, size)


def test_free_answers_decode_their_images(trained):
    _, model, tok, _ = trained
    answer = U.respond(model, tok, "Draw the digits 3 and 5.", max_new_tokens=64)
    assert answer.text.count("[image]") == len(answer.images)


def test_sprint_unmasking_commits_at_least_min_accept_per_step(trained):
    _, model, tok, _ = trained
    keep_all = dict(keep_text=1.0, keep_image=1.0)
    plain = U.understand(model, tok, digit(), "What digit is shown?", U.sampling_config(64, sprint=Sprint(**keep_all)))
    fast = U.understand(model, tok, digit(), "What digit is shown?",
                        U.sampling_config(64, sprint=Sprint(min_accept=8, **keep_all)))
    # 64 tokens from mid-block touch 3 blocks: at most 64 / 8 steps plus one partial step per block
    assert fast.forwards <= math.ceil(64 / 8) + 3 < plain.forwards
    with pytest.raises(ValueError, match="min_accept"):
        Sprint(min_accept=0)


def test_bad_input_is_refused_clearly(trained):
    _, model, tok, _ = trained
    with pytest.raises(ValueError, match="source image"):
        I.edit_uni(model, tok, None, "Change the digit to 7.")
    with pytest.raises(ValueError, match="empty"):
        I.draw_uni(model, tok, [" "])
    with pytest.raises(ValueError, match="empty"):
        U.understand(model, tok, digit(), "")
    blind = SimpleNamespace(decoder=None, tokenizer=None, config=model.config, backbone=model.backbone)
    with pytest.raises(ValueError, match="cannot draw"):
        I.draw_uni(blind, tok, ["a handwritten digit 7"])
    with pytest.raises(ValueError, match="cannot read images"):
        U.encode_images(blind, [digit()])


def test_commands_on_a_uni_model(trained, tmp_path, capsys):
    out, *_ = trained
    png = tmp_path / "d.png"
    Image.fromarray((digit() * 255).astype(np.uint8), mode="L").save(png)
    assert main(["ask", "--model", str(out), "--image", str(png), "What digit is shown?"]) == 0
    assert main(["draw", "--model", str(out), "a handwritten digit 7", "--out", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (128, 128)  # 32 pixels, scale 4
    assert main(["edit", "--model", str(out), "Change the digit to 7.", "--image", str(png),
                 "--out", str(tmp_path / "e.png"), "--full-ode", "--steps", "2"]) == 0
    assert (tmp_path / "e.png").exists()
    with pytest.raises(SystemExit):  # an edit without a source image: argparse names --image
        main(["edit", "--model", str(out), "Change the digit to 7."])
    capsys.readouterr()
    assert main(["demo", "--system", "uni", "--model", str(out), "--out", str(tmp_path / "demo"),
                 "--questions", "3", "--per-digit", "1"]) == 0
    printed = capsys.readouterr().out
    assert "judged edit accuracy" in printed and "interleaved pairs" in printed and "thinking" in printed
    for name in ("edits.png", "free_answers.png", "thinking.png", "table.png", "demo.json"):
        assert (tmp_path / "demo" / "uni" / name).exists(), name
    assert main(["bench", "--systems", "uni", "--uni-model", str(out), "--n", "2", "--per-digit", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| uni |" in printed and "interleaved pairs" in printed
    assert main(["bench", "--systems", "lladao,nope"]) == 2


def test_free_answer_judging_parses_the_templates(monkeypatch):
    """interleaved / thinking accuracy: right only when the text names the asked digits in the
    trained template and the judge sees them in the images (answers and judge faked here)."""
    from omnidlm.eval import uni_digits as E

    def fake_answers(model, tok, texts, config=None):
        out = []
        for t in texts:
            nums = [int(c) for c in t if c.isdigit()]
            if len(nums) == 2:  # a pair: both named and drawn right
                text = f"Here is {nums[0]}: [image] and here is {nums[1]}: [image]"
                out.append(SimpleNamespace(text=text, images=[np.full((2, 2), nums[0]), np.full((2, 2), nums[1])]))
            else:  # thinking: right reasoning, except for D = 4
                e = nums[0] + 1 if nums[0] != 4 else 7
                out.append(SimpleNamespace(text=f"{nums[0]} plus 1 is {nums[0] + 1}, so I draw a {e}: [image]",
                                           images=[np.full((2, 2), nums[0] + 1)]))
        return out

    class Judge:
        @staticmethod
        def fit():
            return Judge

        @staticmethod
        def predict(images):  # reads the digit painted into each fake image
            return np.array([int(im[0, 0]) for im in images])

    monkeypatch.setattr(E.U, "respond_many", fake_answers)
    monkeypatch.setattr(E, "DigitJudge", Judge)
    pairs = E.interleaved_accuracy(None, None)
    assert pairs["n"] == 100 and pairs["accuracy"] == 1.0 and pairs["named"] == 1.0
    thinking = E.thinking_accuracy(None, None)
    assert thinking["n"] == 9 and thinking["accuracy"] == pytest.approx(8 / 9) and thinking["drawn"] == 1.0
    assert [r["before"] for r in thinking["rows"] if not r["ok"]] == [4]
