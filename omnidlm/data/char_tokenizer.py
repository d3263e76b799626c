"""A character-level tokenizer for the project's own tiny models.

One token per character of printable ASCII (space to '~') plus "\\n", and one id per special
marker of the LLaDA chat template. It is a plain HF `tokenizers.Tokenizer`, so it saves to a
`tokenizer.json` that `omnidlm.sequence.tokenizer.Tokenizer.from_file` reads back.

    from omnidlm.data.char_tokenizer import build_char_tokenizer, special_ids
    hf = build_char_tokenizer(); hf.save("models/tiny/tokenizer.json")
    special_ids(hf)  # {'mask_id': 101, 'eos_id': 97, 'eot_id': 98, 'bos_id': 96, 'pad_id': 97}

Ids are fixed: "\\n" is 0, chr(32 + i) is 1 + i (so ' ' is 1 and '~' is 95), then the specials in
the order of `SPECIAL_TOKENS` from 96. Any other character (tab, non-ASCII) encodes to `<|unk|>`
(102) and decodes to nothing: round trips are exact for text in the alphabet.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

CHARS = ["\n"] + [chr(c) for c in range(32, 127)]
SPECIAL_TOKENS = (
    "<|startoftext|>",  # BOS
    "<|endoftext|>",  # EOS, also the padding
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|mdm_mask|>",  # the mask token of masked diffusion
    "<|unk|>",  # any character outside CHARS
)


def char_vocab() -> dict[str, int]:
    """Token -> id, characters first, specials after them."""
    tokens = CHARS + list(SPECIAL_TOKENS)
    return {token: i for i, token in enumerate(tokens)}


def build_char_tokenizer() -> Tokenizer:
    """The character tokenizer: 96 characters + 7 specials = 103 ids."""
    tok = Tokenizer(models.WordLevel(char_vocab(), unk_token="<|unk|>"))
    # Every character is its own word; [\s\S] (not '.') so that "\n" splits too.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Concatenate on decode (the default decoder would join tokens with spaces).
    tok.decoder = decoders.Fuse()
    # Specials are matched in the raw text before splitting, so a marker is one id.
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The ids a `ModelConfig` needs: mask_id, eos_id, eot_id, bos_id, pad_id (= eos_id)."""
    names = {"mask_id": "<|mdm_mask|>", "eos_id": "<|endoftext|>", "eot_id": "<|eot_id|>",
             "bos_id": "<|startoftext|>", "pad_id": "<|endoftext|>"}
    ids = {}
    for key, token in names.items():
        ids[key] = tok.token_to_id(token)
        if ids[key] is None:
            raise ValueError(f"tokenizer has no {token} token (needed for {key})")
    return ids
