"""What every backend shares (`serve/backends.py`): the default sampling settings are the registry
spec's (one source): a request that gives no threshold decodes at `System.threshold()` of the model's
system, and a spec with another threshold (or fixed steps) changes what the server decodes with; an
answer decodes without its EOS ids through the system's codec; a completion of a system that sees is
a chat of one user turn."""

import dataclasses
import functools
from pathlib import Path

import pytest

from omnidlm import systems
from omnidlm.serve.app import create_app
from omnidlm.serve.backends import Prompt, backend_for, open_model
from omnidlm.serve.schemas import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "fixtures"

# what each system is served at: the measured behaviour (text-tiny's serving rows in
# docs/benchmarks.md, the digits models' accuracies) and the published rules (LLaDA2.0 0.95, LLaDA-V fixed)
SERVED = {"llada": 0.9, "llada2": 0.95, "lladao": 0.95, "uni": 0.95, "llada-v": None}
MODELS = {"llada": ROOT / "models" / "text-tiny", "lladao": ROOT / "models" / "lladao-digits",
          "uni": ROOT / "models" / "uni-digits", "llada-v": FIXTURES / "llada-v-tiny"}


@functools.cache
def backend_of(name: str):
    """The backend of MODELS[name] (loaded once for the tests of this file)."""
    return backend_for(*open_model(str(MODELS[name])))


def test_every_system_states_the_threshold_it_is_served_at():
    assert {name: s.threshold() for name, s in systems.SYSTEMS.items()} == SERVED
    fixed = dataclasses.replace(systems.SYSTEMS["llada"], sampling={"policy": "fixed", "threshold": 0.9})
    assert fixed.threshold() is None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_backend_decodes_at_its_systems_threshold(name):
    backend = backend_of(name)
    model, tokenizer = backend.model, backend.tokenizer
    assert backend.system is systems.SYSTEMS[name]
    assert backend.default_threshold == SERVED[name]
    for sampling in ({"policy": "threshold", "threshold": 0.5}, {"policy": "fixed", "threshold": 0.5}):
        other = dataclasses.replace(backend.system, sampling=sampling)
        moved = type(backend)(model, tokenizer, other)  # the same backend over a spec that says otherwise
        assert moved.default_threshold == other.threshold() == (0.5 if sampling["policy"] == "threshold" else None)


def test_a_request_without_threshold_gets_the_specs(monkeypatch):
    model, tokenizer = open_model(str(MODELS["llada"]))
    server = create_app(model, tokenizer, "text-tiny").state.server
    body = lambda **kw: ChatRequest(messages=[{"role": "user", "content": "hi"}], **kw)
    assert server.settings(body(), Prompt([1, 2]), "messages").threshold == 0.9
    assert server.settings(body(threshold=0.7), Prompt([1, 2]), "messages").threshold == 0.7
    monkeypatch.setattr(server.backend, "system", dataclasses.replace(server.backend.system,
                                                                      sampling={"policy": "fixed"}))
    assert server.settings(body(), Prompt([1, 2]), "messages").threshold is None  # fixed steps per block


@pytest.mark.parametrize("name", sorted(MODELS))
def test_answers_decode_without_eos_and_completions_are_one_turn_chats(name):
    backend = backend_of(name)
    tokenizer = backend.tokenizer
    ids = backend.completion_prompt("What digit is shown?").ids or tokenizer.encode("What digit")
    eos = backend.config.eos_id
    assert backend.decode(ids + [eos, eos]) == backend.decode(ids) == backend.codec.decode(ids)
    completion = backend.completion_prompt("What digit is shown?")
    chat = backend.chat_prompt([{"role": "user", "content": "What digit is shown?"}], [])
    if "see" in backend.capabilities:
        assert (completion.ids, completion.ban_ids, completion.length) == (chat.ids, chat.ban_ids, chat.length)
    else:  # a text system completes the raw text
        assert completion.ids == tokenizer.encode("What digit is shown?") != chat.ids
