"""`omnidlm ask` on the published LLaDA-V checkpoint (llada-v-tiny): every recorded greedy generation
of the published `generate` is reproduced token for token, from the recorded ids (-200 where the
image goes) and from the question through the conversation template; bad input is named."""

import functools
import json

import pytest

from conftest import FIXTURES, reference
from omnidlm.cli import main

LLADA_V = FIXTURES / "llada-v-tiny"
CASES = reference("llada-v-tiny")["cases"]
GENERATIONS = [(c, g) for c in CASES for g in c["generate"]]
QUESTION = "Please describe the image in detail."


def knobs(args: dict) -> list[str]:
    return ["--gen-length", str(args["gen_length"]), "--block-length", str(args["block_length"]),
            "--steps", str(args["steps"]), "--policy", "fixed", "--cache", "none", "--temperature", "0", "--json"]


@functools.lru_cache(maxsize=None)
def ask(*argv: str) -> dict:
    """Run `omnidlm ask` once per distinct command line; -> its one JSON object."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ask", "--model", str(LLADA_V), *argv]) == 0
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, lines  # one JSON object, nothing else
    return json.loads(lines[0])


@pytest.mark.parametrize("case,gen", GENERATIONS,
                         ids=[f"{c['image']}-steps{g['args']['steps']}-block{g['args']['block_length']}"
                              f"{'-stop' if 'stopping_criteria' in g['args'] else ''}" for c, g in GENERATIONS])
def test_prompt_ids_give_the_published_generation(case, gen):
    assert gen["args"]["temperature"] == 0 and gen["args"]["remasking"] == "low_confidence"
    ids = ",".join(map(str, case["input_ids"]))  # holds the -200
    answer = ask("--image", str(LLADA_V / case["image"]), "--prompt-ids", ids, *knobs(gen["args"]))
    assert answer["output_ids"] == gen["output"]


@pytest.mark.parametrize("case", CASES, ids=[c["image"] for c in CASES])
def test_question_goes_through_the_conversation_template(case):
    gen = case["generate"][0]
    answer = ask("--image", str(LLADA_V / case["image"]), QUESTION, *knobs(gen["args"]))
    assert answer["output_ids"] == gen["output"]
    assert isinstance(answer["text"], str)


def run_error(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_a_model_that_sees_needs_an_image(capsys):
    run_error(["ask", "--model", str(LLADA_V), QUESTION], capsys, "give --image")


def test_steps_must_divide_into_blocks(capsys):
    image = str(LLADA_V / "image_a.png")
    run_error(["ask", "--model", str(LLADA_V), "--image", image, QUESTION, "--gen-length", "16",
               "--block-length", "8", "--steps", "7"], capsys, "steps (7) must be a multiple")
    run_error(["ask", "--model", str(LLADA_V), "--image", image, QUESTION, "--gen-length", "12",
               "--block-length", "8"], capsys, "gen_length (12) must be a multiple of block_length (8)")


def test_bad_prompt_ids_are_named(capsys):
    image = str(LLADA_V / "image_a.png")
    with pytest.raises(SystemExit) as stop:  # at parse time, naming the flag (commands/args.py)
        main(["ask", "--model", str(LLADA_V), "--image", image, "--prompt-ids", "1,x"])
    assert stop.value.code == 2 and "argument --prompt-ids" in capsys.readouterr().err
    run_error(["ask", "--model", str(LLADA_V), "--image", image, "--prompt-ids", "1,2,3"], capsys,
              "0 image placeholder")


def test_help_names_every_system(capsys):
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("LLaDA-V", "LLaDA-o", "LLaDA2.0-Uni"))
