"""The registry of systems: every layout the project reads is found, opened with its tokenizer and
saved back through its spec; `omnidlm.load` returns the right model for each; an unknown directory
lists every layout looked for; `omnidlm convert` keeps a model's behaviour, not only its bits."""

import json
import warnings
from pathlib import Path

import pytest
import torch

import omnidlm
from conftest import FIXTURES, LLADA2_MASK_ID
from omnidlm import systems
from omnidlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

CASES = [  # path, system, model class
    (MODELS / "text-tiny", "llada", "Backbone"),
    (MODELS / "lladao-digits", "lladao", "LLaDAO"),
    (MODELS / "uni-digits", "uni", "LLaDA2Uni"),
    (FIXTURES / "llada-tiny", "llada", "Backbone"),
    (FIXTURES / "lladao-tiny", "lladao", "LLaDAO"),
    (FIXTURES / "llada-v-tiny", "llada-v", "LLaDAO"),
]


@pytest.mark.parametrize("path,name,cls", CASES, ids=[c[0].name for c in CASES])
def test_every_layout_opens_with_its_system(path, name, cls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixtures ship no tokenizer: the character tokenizer, with a warning
        loaded = systems.open(path)
    assert loaded.system is systems.find(path) is systems.SYSTEMS[name]
    assert type(loaded.model).__name__ == cls and systems.system_of(loaded.model) is loaded.system
    assert type(omnidlm.load(path)).__name__ == cls
    if (path / "tokenizer.json").is_file():
        assert loaded.tokenizer.vocab_size > 0
    else:  # the published fixtures ship none, and their ids are not the character tokenizer's
        assert loaded.tokenizer is None


def test_a_missing_tokenizer_that_does_not_fit_is_none_with_a_warning():
    with pytest.warns(UserWarning, match="ships no tokenizer.json .*do not fit the model"):
        assert systems.open(FIXTURES / "lladao-tiny").tokenizer is None


def test_llada2_needs_its_mask_id_and_is_its_own_system():
    loaded = systems.open(FIXTURES / "llada2-moe-tiny", mask_id=LLADA2_MASK_ID)
    assert loaded.system.name == "llada2" and loaded.model.config.is_moe


def test_unknown_directory_lists_every_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError) as e:
        systems.find(tmp_path)
    message = str(e.value)
    for system in systems.SYSTEMS.values():
        assert system.title in message and system.layout in message
    assert "notes.txt" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        systems.find(tmp_path / "nowhere")


def test_specs_are_consistent():
    from omnidlm.train.omni import OMNI_RECIPES
    from omnidlm.train.recipes import RECIPES
    from omnidlm.train.uni import UNI_RECIPES

    known = set(RECIPES) | set(OMNI_RECIPES) | set(UNI_RECIPES)
    assert set(systems.SYSTEMS) == {"llada", "llada2", "llada-v", "lladao", "uni"}
    for system in systems.SYSTEMS.values():
        assert "text" in system.capabilities <= {"text", "see", "draw", "edit", "interleave"}
        assert set(system.recipes) <= known, system.name
    assert systems.SYSTEMS["uni"].capabilities == {"text", "see", "draw", "edit", "interleave"}
    with pytest.raises(ValueError, match="unknown capabilities"):
        systems.System("x", "X", frozenset({"fly"}), "", bool, None, None, bool)


def test_every_recipe_is_claimed_by_the_system_it_trains():
    """`System.recipes` names each recipe once, under the system of the model it trains (a text
    recipe's by its model config: experts -> LLaDA2.0), so a new recipe cannot go unlisted."""
    from omnidlm.train.omni import OMNI_RECIPES
    from omnidlm.train.recipes import RECIPES, recipe
    from omnidlm.train.uni import UNI_RECIPES

    claims = [(name, s.name) for s in systems.SYSTEMS.values() for name in s.recipes]
    assert sorted(n for n, _ in claims) == sorted(RECIPES)
    for name, system in claims:
        trains = ("lladao" if name in OMNI_RECIPES else "uni" if name in UNI_RECIPES
                  else "llada2" if recipe(name).model.is_moe else "llada")
        assert system == trains, name


def test_save_through_the_system_round_trips(tmp_path):
    model = omnidlm.load(FIXTURES / "lladao-tiny")
    systems.save(model, tmp_path / "o")
    back = omnidlm.load(tmp_path / "o")
    assert systems.find(tmp_path / "o").name == "lladao"
    for name, t in model.state_dict().items():
        assert torch.equal(t, back.state_dict()[name]), name


def test_top_level_api():
    from omnidlm.eval.likelihood import loglikelihood
    from omnidlm.sampling.engine import generate

    assert omnidlm.generate is generate and omnidlm.loglikelihood is loglikelihood


def _generate(capsys, model) -> dict:
    code = main(["generate", "--model", str(model), "--prompt", "add1    31415926", "--gen-length", "32", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_convert_keeps_the_attention_layout_and_the_tokens(tmp_path, capsys):
    src = MODELS / "text-tiny"
    assert main(["convert", str(src), str(tmp_path / "l"), "--format", "llada"]) == 0
    assert main(["convert", str(tmp_path / "l"), str(tmp_path / "o"), "--format", "omnidlm"]) == 0
    capsys.readouterr()
    recorded = json.loads((tmp_path / "l" / "config.json").read_text())["omnidlm_overrides"]
    assert recorded["attention"] == "block"  # LLaDA's config has no field for it: written beside the weights
    back = json.loads((tmp_path / "o" / "config.json").read_text())
    assert back["attention"] == "block" and "omnidlm_overrides" not in back
    before, after = _generate(capsys, src), _generate(capsys, tmp_path / "o")
    assert after["sampler"] == before["sampler"] == "llada2"
    assert after["output_ids"] == before["output_ids"]


def test_uni_drawing_guidance_is_one_constant():
    """Uni's CFG default is the spec's everywhere it has a default: the samplers, the drawing eval."""
    import inspect

    from omnidlm.eval import uni_digits
    from omnidlm.sampling import image

    scale = systems.SYSTEMS["uni"].sampling["cfg"]
    for fn in (image.sample_codes, image.draw_uni, image.edit_uni, uni_digits.drawing_accuracy):
        assert inspect.signature(fn).parameters["cfg"].default == scale, fn.__name__
    assert scale == 3.0  # the scale its drawings are measured at ("CFG 3", models/uni-digits/README.md)


def test_lladao_drawing_and_answer_defaults_are_the_specs():
    """LLaDA-o's 30 Euler steps, CFG 4 and threshold 0.95: the spec's, the digits eval's and the
    published inferencer's (FlowSettings) defaults agree, and `omnidlm demo` takes the spec's."""
    import inspect

    from omnidlm.eval import omni_digits
    from omnidlm.sampling.image import FlowSettings

    spec = systems.SYSTEMS["lladao"]
    drawing = inspect.signature(omni_digits.drawing_accuracy).parameters
    assert (drawing["steps"].default, drawing["cfg"].default) == (spec.sampling["draw_steps"], spec.sampling["cfg"])
    assert inspect.signature(omni_digits.question_accuracy).parameters["threshold"].default == spec.threshold()
    published = FlowSettings()
    assert (published.num_timesteps - 1, published.cfg_text_scale) == (spec.sampling["draw_steps"], spec.sampling["cfg"])
    assert (spec.sampling["draw_steps"], spec.sampling["cfg"], spec.threshold()) == (30, 4.0, 0.95)
