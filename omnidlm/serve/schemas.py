"""Request bodies of the OpenAI-compatible routes, validated by pydantic.

The diffusion settings (`steps`, `block_length`, `threshold`, `cfg_scale`) are extra fields beside
the OpenAI ones; a bad value is a 422 naming the field. Numbers are finite (no NaN / inf), a
temperature is 0 (greedy) or at least `MIN_TEMPERATURE` (below it logits / temperature overflow and
the probabilities are NaN), a seed fits in 64 bits. Bounds that depend on the model or the server's
flags (`n`, `block_length`, `steps`, prompt lengths) are checked by the app.
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

MIN_TEMPERATURE = 1e-3
SEED = {"ge": 0, "lt": 2**64}  # torch.Generator.manual_seed takes 64 bits
FINITE = {"allow_inf_nan": False}


def valid_text(value: str) -> str:
    """Text that is valid Unicode: a lone surrogate (JSON "\\ud800") cannot be encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"holds invalid Unicode (a lone surrogate at character {error.start})") from None
    return value


Text = Annotated[str, AfterValidator(valid_text)]


class ImageURL(BaseModel):
    url: Text


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text | list[ContentPart]


class DiffusionSettings(BaseModel):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, **FINITE)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, **FINITE)
    seed: int | None = Field(default=None, **SEED)
    stop: Text | list[Text] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    steps: int | None = Field(default=None, ge=1)
    block_length: int | None = Field(default=None, ge=1)
    threshold: float | None = Field(default=None, gt=0.0, le=1.0, **FINITE)
    cfg_scale: float = Field(default=0.0, ge=0.0, **FINITE)

    @field_validator("temperature")
    @classmethod
    def _not_denormal(cls, value: float) -> float:
        # by its bits, not `0 < value`: a process with denormals flushed to zero (torch.set_flush_denormal,
        # DAZ) compares 1e-310 equal to 0
        nonzero = struct.unpack("<q", struct.pack("<d", value))[0] != 0
        if nonzero and not value >= MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {value}")
        return value


class ChatRequest(DiffusionSettings):
    model: Text | None = None
    messages: list[Message] = Field(min_length=1)
    modalities: list[Literal["text", "image"]] | None = None  # with "image": an interleaved answer (Uni)


class CompletionRequest(DiffusionSettings):
    model: Text | None = None
    prompt: Text = Field(min_length=1)


class ImageRequest(BaseModel):
    model: Text | None = None
    prompt: Text = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    size: str | None = None  # None: the size the model draws
    seed: int | None = Field(default=None, **SEED)
    response_format: Literal["b64_json"] = "b64_json"
    steps: int | None = Field(default=None, ge=1)
    cfg_scale: float | None = Field(default=None, ge=0.0, **FINITE)


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)
