"""Tokenizer files beside a checkpoint: chat template ids and special ids read from tokenizer.json."""

import shutil

import omnidlm
from conftest import FIXTURES
from omnidlm.data.char_tokenizer import build_char_tokenizer, special_ids
from omnidlm.sequence.chat import render_chat
from omnidlm.sequence.tokenizer import Tokenizer


def test_chat_template_is_llama3_style():
    text = render_chat([{"role": "user", "content": "hi"}])
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_checkpoint_tokenizer_supplies_missing_special_ids(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "llada-tiny", ckpt)
    hf = build_char_tokenizer()
    hf.save(str(ckpt / "tokenizer.json"))
    ids = special_ids(hf)
    model = omnidlm.load(ckpt)
    assert model.config.eot_id == ids["eot_id"] and model.config.bos_id == ids["bos_id"]
    assert model.config.mask_id == 500  # the config's own mask id wins over the tokenizer's
    tok = Tokenizer.from_file(ckpt)
    prompt = tok.encode_chat([{"role": "user", "content": "ab"}])
    assert prompt[0] == ids["bos_id"] and prompt.count(ids["eot_id"]) == 1
    assert tok.decode(tok.encode("12 + 3")) == "12 + 3"
