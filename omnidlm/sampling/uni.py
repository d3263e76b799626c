"""Sampling LLaDA2.0-Uni (docs/published/uni.md): understanding and free answers (drawing, editing and the
decoder's ODE: sampling/image.py).

Everything is block diffusion over one vocabulary; images are the tokenizer's codes.

    understand(model, tok, image, "What digit is shown?")     the engine (exact cache, threshold
                                                               decoding, stop at EOS; SPRINT opt-in)
    respond(model, tok, "Draw the digits 3 and 5.")           free answers mixing text and images
    engine = understanding_engine(model)                      what a server drives: image questions and
    for r in understanding_requests(model, tok, images, qs):  free answers (free=True) batch together,
        engine.add(r)                                         each row with its own bans
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.uni_batches import UniCodec
from .engine import BatchEngine, Request, SamplingConfig
from .omni import prepare_image
from .policies import Threshold
from .rows import RowSettings


@dataclass
class UniAnswer:
    text: str
    ids: list[int]  # the answer's ids, without the closing EOS
    forwards: int
    seconds: float
    images: list[np.ndarray] = field(default_factory=list)  # decoded images of a free answer


def codec_of(model, tokenizer) -> UniCodec:
    return UniCodec(tokenizer, model.config.vocab)


def sampling_config(max_new_tokens: int = 128, threshold: float = 0.95, sprint=None, **kw) -> SamplingConfig:
    """The published LLaDA2.0 rule (threshold 0.95, block 32) on the exact cache; SPRINT when given."""
    return SamplingConfig(max_new_tokens=max_new_tokens, cache="exact", policy=Threshold(threshold, 32),
                          sprint=sprint, **kw)


@torch.no_grad()
def encode_images(model, images: list[np.ndarray]) -> torch.Tensor:
    """(H, W) images in [0, 1] -> codes (N, h, w) of the model's image tokenizer."""
    if model.tokenizer is None:
        raise ValueError("this model has no image tokenizer: it cannot read images")
    size = model.tokenizer.vit.image_size
    return model.tokenizer.encode(torch.stack([prepare_image(im, size) for im in images]))


def _text_ban(model) -> tuple[int, ...]:
    """Ids an understanding answer never holds: the mask, BOS and every image id."""
    cfg, v = model.config.llm, model.config.vocab
    image_ids = [v.image_start, v.image_end, *v.size_ids, *v.code_range]
    return tuple(i for i in [cfg.mask_id, cfg.bos_id, *image_ids] if i is not None)


def understanding_requests(model, tokenizer, images: list[np.ndarray | None], questions: list[str],
                           config: SamplingConfig | None = None, free: bool = False,
                           max_new_tokens: int | None = None) -> list[Request]:
    """One engine Request per (image or None, question): the image's codes in the prompt, the
    row's settings those of `config` (default `sampling_config()`) with its bans: an understanding
    answer never holds image ids (`config.ban_ids` when set); a `free` answer (interleaved text
    and images, thinking) bans only the mask. Both kinds batch in one engine (`understanding_engine`)."""
    for q in questions:
        if not q or not q.strip():
            raise ValueError("the question (prompt) is empty")
    codec, cfg = codec_of(model, tokenizer), config or sampling_config()
    ban = (model.config.llm.mask_id,) if free else (tuple(cfg.ban_ids) or _text_ban(model))
    settings = RowSettings.of(cfg).replace(ban_ids=ban)
    seen = [im for im in images if im is not None]
    codes = iter(encode_images(model, seen)) if seen else iter(())
    requests = []
    for im, q in zip(images, questions):
        prompt = codec.user(q, next(codes) if im is not None else None)
        requests.append(Request(prompt, max_new_tokens, image_mask=model.config.vocab.is_image(prompt),
                                settings=settings))
    return requests


def understanding_engine(model, config: SamplingConfig | None = None, max_batch: int = 16) -> BatchEngine:
    """A BatchEngine over the Uni backbone, for `understanding_requests`."""
    return BatchEngine(model.backbone, config or sampling_config(), max_batch)


@torch.no_grad()
def understand_many(model, tokenizer, images: list[np.ndarray | None], questions: list[str],
                    config: SamplingConfig | None = None, max_batch: int = 16, free: bool = False) -> list[UniAnswer]:
    """Answer each question about its image (None: text only) in one engine batch."""
    start, codec = time.time(), codec_of(model, tokenizer)
    requests = understanding_requests(model, tokenizer, images, questions, config, free)
    results = understanding_engine(model, config, max_batch).run(requests)
    seconds, eos = (time.time() - start) / max(1, len(results)), model.config.llm.eos_id
    answers = [r.tokens[:-1] if r.tokens and r.tokens[-1] == eos else r.tokens for r in results]  # EOS dropped
    return [UniAnswer(codec.decode(ids), ids, r.forwards, seconds) for ids, r in zip(answers, results)]


def understand(model, tokenizer, image: np.ndarray | None, question: str,
               config: SamplingConfig | None = None) -> UniAnswer:
    return understand_many(model, tokenizer, [image], [question], config)[0]


def respond_many(model, tokenizer, texts: list[str], images: list[np.ndarray | None] | None = None,
                 max_new_tokens: int = 128, config: SamplingConfig | None = None,
                 distilled: bool = True) -> list[UniAnswer]:
    """Free answers (interleaved text and images, or thinking before an image), batched through the
    engine; each answer's text shows its images as "[image]" and its `images` are decoded (an image
    span that does not parse shows as "[unreadable image]")."""
    answers = understand_many(model, tokenizer, images or [None] * len(texts), texts,
                              config or sampling_config(max_new_tokens), free=True)  # text and image ids alike
    parsed = [parse_answer(model, tokenizer, ans.ids) for ans in answers]
    from .image import decode_codes  # image.py builds on this module

    every = [c for _, codes in parsed for c in codes]
    decoded = iter(decode_codes(model, torch.stack(every), distilled)) if every and model.decoder is not None else None
    return [UniAnswer(text, ans.ids, ans.forwards, ans.seconds, [next(decoded) for _ in codes] if decoded else [])
            for (text, codes), ans in zip(parsed, answers)]


def respond(model, tokenizer, text: str, image: np.ndarray | None = None, max_new_tokens: int = 128,
            config: SamplingConfig | None = None, distilled: bool = True) -> UniAnswer:
    """One free answer (`respond_many`): `.text` with "[image]" where each image goes, `.images` decoded."""
    return respond_many(model, tokenizer, [text], [image], max_new_tokens, config, distilled)[0]


def parse_answer(model, tokenizer, ids: list[int]) -> tuple[str, list[torch.Tensor]]:
    """A free answer's ids (no EOS) -> its text ("[image]" where each image stands, "[unreadable
    image]" for a span that does not parse) and the codes of its images."""
    vocab, pieces, codes, last = model.config.vocab, [], [], 0
    for a, b in vocab.image_spans(ids):
        try:
            codes.append(vocab.parse_image(ids[a:b]))
            pieces += [tokenizer.decode(ids[last:a]), "[image]"]
        except ValueError:
            pieces += [tokenizer.decode(ids[last:a]), "[unreadable image]"]
        last = b
    pieces.append(tokenizer.decode(ids[last:]))
    return "".join(pieces), codes


def answer_parts(model, tokenizer, ids: list[int], distilled: bool = True) -> tuple[str, list[np.ndarray]]:
    """A free answer's text and its decoded images (the server decodes answers it sampled itself)."""
    from .image import decode_codes

    text, codes = parse_answer(model, tokenizer, ids)
    images = list(decode_codes(model, torch.stack(codes), distilled)) if codes and model.decoder is not None else []
    return text, images
