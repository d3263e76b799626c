"""The commands dispatch through the registry: every system that sees names an answerer, every system
that draws a drawing sampler and the options it takes; `ask`, `draw` and `edit` call what the spec
names (a spec with the capability removed is refused cleanly, naming the system and what it can do),
and a drawing option of another system is refused before the model loads."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnidlm import systems
from omnidlm.cli import main
from omnidlm.commands import draw as draw_command
from omnidlm.systems.tasks import Drawn

MODELS = Path(__file__).resolve().parents[1] / "models"
LLADAO, UNI = MODELS / "lladao-digits", MODELS / "uni-digits"


def test_every_capability_has_what_runs_it():
    for system in systems.SYSTEMS.values():
        assert ("see" in system.capabilities) == callable(system.answer), system.name
        assert ("draw" in system.capabilities) == callable(system.draw), system.name
        assert set(system.draw_options) <= set(draw_command.OPTIONS), system.name
        assert "edit" not in system.capabilities or system.draw is not None, system.name
    for dest in draw_command.OPTIONS:  # no flag of `draw` is taken by no system
        assert draw_command.takers(dest), dest
    spec = systems.SYSTEMS["lladao"]
    with pytest.raises(ValueError, match="answerer goes with the capability 'see'"):
        dataclasses.replace(spec, answer=None)
    with pytest.raises(ValueError, match="drawing sampler goes with the capability 'draw'"):
        dataclasses.replace(spec, capabilities=spec.capabilities - {"draw", "edit"})


def digit_png(tmp_path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.full((32, 32), 200, np.uint8), mode="L").save(path)
    return path


def test_ask_calls_the_answerer_the_spec_names(tmp_path, monkeypatch, capsys):
    seen = []

    def answer(loaded, question):
        seen.append((loaded.system.name, question))
        return {"text": "from the spec", "images": [np.zeros((8, 8), np.float32)]}

    monkeypatch.setitem(systems.SYSTEMS, "lladao", dataclasses.replace(systems.SYSTEMS["lladao"], answer=answer))
    argv = ["ask", "--model", str(LLADAO), "--image", str(digit_png(tmp_path)), "Q?", "--steps", "4",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["from the spec", str(tmp_path / "answer_0.png")]
    (name, question), = seen
    assert name == "lladao" and question.text == "Q?" and question.steps == 4 and question.image.size == (32, 32)
    assert Image.open(tmp_path / "answer_0.png").size == (32, 32)  # written by the command, upscaled 4x


def test_a_system_without_see_is_refused_by_ask(tmp_path, monkeypatch, capsys):
    spec = systems.SYSTEMS["lladao"]
    monkeypatch.setitem(systems.SYSTEMS, "lladao",
                        dataclasses.replace(spec, capabilities=spec.capabilities - {"see"}, answer=None))
    assert main(["ask", "--model", str(LLADAO), "--image", str(digit_png(tmp_path)), "Q?"]) == 2
    assert "not a LLaDA-V or LLaDA2.0-Uni model (a LLaDA-o model)" in capsys.readouterr().err


def test_draw_calls_the_sampler_the_spec_names_with_the_options_given(tmp_path, monkeypatch, capsys):
    drawings = []

    def sampler(loaded, drawing):
        drawings.append(drawing)
        return Drawn(np.zeros((drawing.n, 8, 8), np.float32))

    monkeypatch.setitem(systems.SYSTEMS, "uni", dataclasses.replace(systems.SYSTEMS["uni"], draw=sampler))
    assert main(["draw", "--model", str(UNI), "a 7", "-n", "2", "--seed", "5", "--out", str(tmp_path)]) == 0
    assert main(["edit", "--model", str(UNI), "Change it.", "--image", str(digit_png(tmp_path)), "--cfg", "2",
                 "--steps", "3", "--full-ode", "--out", str(tmp_path / "e.png")]) == 0
    plain, edit = drawings
    assert (plain.prompt, plain.n, plain.seed, plain.image, dict(plain.options)) == ("a 7", 2, 5, None, {})
    assert dict(edit.options) == {"cfg": 2.0, "steps": 3, "full_ode": True} and edit.image.size == (32, 32)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["digit.png", "draw_5_0.png", "draw_5_1.png", "e.png"]


def test_a_system_without_draw_is_refused_naming_what_it_can_do(tmp_path, monkeypatch, capsys):
    spec = systems.SYSTEMS["uni"]
    monkeypatch.setitem(systems.SYSTEMS, "uni", dataclasses.replace(
        spec, capabilities=spec.capabilities - {"draw", "edit", "interleave"}, draw=None, draw_options=()))
    assert main(["draw", "--model", str(UNI), "a 7", "--out", str(tmp_path)]) == 2
    assert "is a LLaDA2.0-Uni model: it cannot draw (it can: see, text)" in capsys.readouterr().err
    assert main(["edit", "--model", str(UNI), "Change it.", "--image", str(digit_png(tmp_path)),
                 "--out", str(tmp_path)]) == 2
    assert "it cannot edit" in capsys.readouterr().err
    assert not list(tmp_path.glob("draw_*"))


@pytest.mark.parametrize("extra,named", [(["--height", "16"], "--height"),
                                         (["--img-cfg", "2", "--save-latent", "z.npy"], "--img-cfg, --save-latent")])
def test_options_of_another_system_are_refused_before_loading(tmp_path, monkeypatch, capsys, extra, named):
    def never(*args, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setitem(systems.SYSTEMS, "uni", dataclasses.replace(systems.SYSTEMS["uni"], load=never))
    assert main(["draw", "--model", str(UNI), "a 7", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert f"{named}: LLaDA-o options; a LLaDA2.0-Uni model" in err and "--full-ode" in err, err


def test_uni_options_are_refused_for_lladao(tmp_path, capsys):
    assert main(["draw", "--model", str(LLADAO), "a 7", "--full-ode", "--out", str(tmp_path)]) == 2
    assert "--full-ode: LLaDA2.0-Uni options; a LLaDA-o model" in capsys.readouterr().err


def test_demo_runs_the_demo_of_the_models_system(capsys):
    from argparse import Namespace

    from omnidlm.commands import demo

    picked = Namespace(model=str(UNI), system=None)
    assert demo.demo_system(picked) is systems.SYSTEMS["uni"]
    default = Namespace(model=None, system="uni")
    assert demo.demo_system(default) is systems.SYSTEMS["uni"] and Path(default.model) == UNI
    assert main(["demo", "--model", str(MODELS / "text-tiny")]) == 2
    assert "a LLaDA model has no digits demo (demos: LLaDA-o, LLaDA2.0-Uni)" in capsys.readouterr().err
    assert main(["demo", "--model", str(UNI), "--system", "lladao"]) == 2
    assert "is a LLaDA2.0-Uni model, not --system lladao's LLaDA-o" in capsys.readouterr().err
