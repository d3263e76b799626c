"""LLaDA2.0-Uni (docs/published/uni.md): one MoE backbone over text ids and discrete image codes, plus the
SigLIP-VQ image tokenizer (pixels -> codes) and the diffusion decoder (codes -> pixels).

The vocabulary is the text tokenizer's ids followed by the image codes:

    [0, offset)                 text ids, among them <image>, </image> and <imgsize_1> .. <imgsize_S>
    [offset, offset + K)        image code c is id offset + c (K = codebook_size)

An image in a sequence is `<image> <imgsize_h> <imgsize_w> code... </image>`, codes row-major; the
height and width tokens share one set. Published: offset = 157184 (the text vocabulary, which holds
the markers), K = 16384. Ours: the 103 ids of the character tokenizer, then the two markers (103 and
104, as LLaDA-o's) and S size tokens (`UniVocab.for_text`).

    vocab = UniVocab.for_text(103, max_side=8, codebook_size=128)    # offset 113, total 241
    ids = vocab.image_ids(codes)                # codes (h, w) -> [<image>, <imgsize_h>, <imgsize_w>, ..., </image>]
    codes = vocab.parse_image(ids)              # back to (h, w), or a ValueError saying what is wrong
    model = LLaDA2Uni(UniConfig(llm=..., vocab=vocab, tokenizer=DIGITS_VQ, decoder=DIGITS_DECODER))
    model(ids).logits                           # the backbone's (B, L, vocab.total)

The model is pure architecture; block-diffusion training is `train/uni.py`, sampling `sampling/uni.py`,
and the checkpoint layout `formats/uni.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig, build_dataclass
from .backbone import Backbone


@dataclass(frozen=True)
class UniVocab:
    """Where the image markers, the size tokens and the image codes sit in the vocabulary."""

    image_start: int  # <image>
    image_end: int  # </image>
    imgsize_start: int  # <imgsize_1>; <imgsize_s> is imgsize_start + s - 1
    max_side: int  # S: grid sides 1..S have a size token
    offset: int  # id of image code 0 (= the number of text ids)
    codebook_size: int  # K

    def __post_init__(self):
        if self.codebook_size < 1 or self.max_side < 1:
            bad = "codebook_size" if self.codebook_size < 1 else "max_side"
            raise ValueError(f"Uni vocabulary field {bad!r} must be positive, got {getattr(self, bad)}")
        for name in ("image_start", "image_end", "imgsize_start"):
            if not 0 <= getattr(self, name) < self.offset:
                raise ValueError(f"Uni vocabulary field {name!r} ({getattr(self, name)}) must be a text id in "
                                 f"[0, offset={self.offset})")
        if self.imgsize_start + self.max_side > self.offset:
            raise ValueError(f"Uni vocabulary fields 'imgsize_start' + 'max_side' ({self.imgsize_start} + "
                             f"{self.max_side}) run past the text ids (offset {self.offset})")
        for name in ("image_start", "image_end"):
            if getattr(self, name) in self.size_ids:
                raise ValueError(f"Uni vocabulary field {name!r} ({getattr(self, name)}) is also a size token id")
        if self.image_start == self.image_end:
            raise ValueError(f"Uni vocabulary fields 'image_start' and 'image_end' are both {self.image_start}")

    @classmethod
    def for_text(cls, text_vocab: int, max_side: int, codebook_size: int) -> "UniVocab":
        """Markers and size tokens appended after a text tokenizer's `text_vocab` ids, then the codes."""
        return cls(image_start=text_vocab, image_end=text_vocab + 1, imgsize_start=text_vocab + 2,
                   max_side=max_side, offset=text_vocab + 2 + max_side, codebook_size=codebook_size)

    @property
    def total(self) -> int:
        """The backbone's vocab_size: text ids plus image codes."""
        return self.offset + self.codebook_size

    @property
    def code_range(self) -> range:
        """Ids of the image codes; `logits[..., r.start:r.stop]` restricts a prediction to codes."""
        return range(self.offset, self.total)

    @property
    def size_ids(self) -> range:
        """Ids of <imgsize_1> .. <imgsize_S>."""
        return range(self.imgsize_start, self.imgsize_start + self.max_side)

    def size_id(self, side: int) -> int:
        if not 1 <= side <= self.max_side:
            raise ValueError(f"image grid side {side} has no <imgsize> token; sides must be in [1, {self.max_side}]")
        return self.imgsize_start + side - 1

    def image_ids(self, codes: torch.Tensor) -> list[int]:
        """codes (h, w) in [0, K) -> [<image>, <imgsize_h>, <imgsize_w>, offset + codes row-major..., </image>]."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2:
            raise ValueError(f"image codes must be a 2D (h, w) grid, got shape {tuple(codes.shape)}")
        h, w = codes.shape
        flat = codes.reshape(-1).tolist()
        bad = [c for c in flat if not 0 <= c < self.codebook_size]
        if bad:
            raise ValueError(f"image code {bad[0]} is outside the codebook [0, {self.codebook_size})")
        return [self.image_start, self.size_id(h), self.size_id(w), *(self.offset + c for c in flat), self.image_end]

    def parse_image(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """One image span `<image> <imgsize_h> <imgsize_w> codes... </image>` -> codes (h, w) long."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        if not ids or ids[0] != self.image_start:
            raise ValueError(f"an image must start with <image> (id {self.image_start}), got {ids[:1] or 'nothing'}")
        if ids[-1] != self.image_end:
            raise ValueError(f"the image has no closing </image> (id {self.image_end}); it ends with id {ids[-1]}")
        if len(ids) < 5:
            raise ValueError(f"an image needs <image>, two <imgsize> tokens, codes and </image>; got {len(ids)} ids")
        sides = []
        for pos, name in ((1, "height"), (2, "width")):
            if ids[pos] not in self.size_ids:
                raise ValueError(f"expected the {name} token <imgsize_s> at position {pos}, got id {ids[pos]}; "
                                 f"size ids are [{self.imgsize_start}, {self.size_ids.stop})")
            sides.append(ids[pos] - self.imgsize_start + 1)
        body = ids[3:-1]
        if len(body) != sides[0] * sides[1]:
            raise ValueError(f"the image holds {len(body)} code tokens but its <imgsize> tokens say "
                             f"{sides[0]} x {sides[1]} = {sides[0] * sides[1]}")
        for pos, i in enumerate(body, start=3):
            if i not in self.code_range:
                raise ValueError(f"image token id {i} at position {pos} is outside the image code ids "
                                 f"[{self.offset}, {self.total})")
        return (torch.tensor(body, dtype=torch.long) - self.offset).view(sides[0], sides[1])

    def image_spans(self, ids: Sequence[int] | torch.Tensor) -> list[tuple[int, int]]:
        """[start, end) of every `<image> ... </image>` span in a sequence, in order."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        spans, start = [], None
        for pos, i in enumerate(ids):
            if i == self.image_start:
                start = pos
            elif i == self.image_end and start is not None:
                spans.append((start, pos + 1))
                start = None
        return spans

    def is_image(self, ids: Sequence[int] | torch.Tensor) -> list[bool] | torch.Tensor:
        """True where an id is an image code (markers and size tokens count as text): a list for a
        list, a bool tensor of the same shape for a tensor."""
        if isinstance(ids, torch.Tensor):
            return (ids >= self.offset) & (ids < self.total)
        return [self.offset <= i < self.total for i in ids]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UniVocab":
        return build_dataclass(cls, data, "Uni vocabulary")


@dataclass
class UniConfig:
    """The Uni model: MoE backbone config, vocabulary, and the image tokenizer / decoder configs."""

    llm: ModelConfig  # vocab_size must be vocab.total
    vocab: UniVocab
    tokenizer: dict | None = None  # SiglipVQ config (models/vq.py); None: the model cannot read images
    decoder: dict | None = None  # UniDecoder config (models/uni_decoder.py); None: it cannot draw pixels

    def __post_init__(self):
        if self.llm.vocab_size != self.vocab.total:
            raise ValueError(f"Uni config field 'llm.vocab_size' ({self.llm.vocab_size}) must equal the vocabulary's "
                             f"total {self.vocab.total} (offset {self.vocab.offset} + codebook {self.vocab.codebook_size})")
        if self.llm.mask_id >= self.vocab.offset:
            raise ValueError(f"Uni config field 'llm.mask_id' ({self.llm.mask_id}) must be a text id (< offset "
                             f"{self.vocab.offset}); it falls among the image codes")
        for part in ("tokenizer", "decoder"):
            size = (getattr(self, part) or {}).get("codebook_size")
            if size is not None and size != self.vocab.codebook_size:
                raise ValueError(f"Uni config field '{part}.codebook_size' ({size}) differs from "
                                 f"'vocab.codebook_size' ({self.vocab.codebook_size})")

    def to_dict(self) -> dict:
        return {"llm": self.llm.to_dict(), "vocab": self.vocab.to_dict(), "tokenizer": self.tokenizer,
                "decoder": self.decoder}

    @classmethod
    def from_dict(cls, data: dict) -> "UniConfig":
        missing = [k for k in ("llm", "vocab") if k not in data]
        if missing:
            raise ValueError(f"Uni config lacks field(s) {missing}")
        fields = {**data, "llm": ModelConfig.from_dict(data["llm"]), "vocab": UniVocab.from_dict(data["vocab"])}
        return build_dataclass(cls, fields, "Uni config")


class LLaDA2Uni(nn.Module):
    """`backbone` (MoE Backbone over vocab.total ids), `tokenizer` (SiglipVQ or None), `decoder`
    (UniDecoder or None), `student` (its few-step distillation, or None). Parts passed in are used as they are (a loader's, or trained ones);
    the others are built from the config."""

    def __init__(self, cfg: UniConfig, backbone: Backbone | None = None, tokenizer: nn.Module | None = None,
                 decoder: nn.Module | None = None, student: nn.Module | None = None):
        super().__init__()
        self.config = cfg
        self.backbone = backbone if backbone is not None else Backbone(cfg.llm)
        if tokenizer is None and cfg.tokenizer is not None:
            from .vq import SiglipVQ  # imported here: the model works without the image parts

            tokenizer = SiglipVQ(cfg.tokenizer)
        if decoder is None and cfg.decoder is not None:
            from .uni_decoder import UniDecoder

            decoder = UniDecoder(cfg.decoder)
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.student = student  # the decoder distilled to a few CFG-free steps (a UniDecoder too), if trained

    @property
    def vocab(self) -> UniVocab:
        return self.config.vocab

    def forward(self, *args, **kwargs):
        """The backbone's forward: ids (B, L) over text and image codes -> ModelOutput."""
        return self.backbone(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.backbone.device
