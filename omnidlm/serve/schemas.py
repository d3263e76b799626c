"""Request bodies of the OpenAI-compatible routes, validated by pydantic.

The diffusion settings (`steps`, `block_length`, `threshold`, `cfg_scale`) are extra fields beside
the OpenAI ones; a bad value is a 422 naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ImageURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class DiffusionSettings(BaseModel):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    steps: int | None = Field(default=None, ge=1)
    block_length: int | None = Field(default=None, ge=1)
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    cfg_scale: float = Field(default=0.0, ge=0.0)


class ChatRequest(DiffusionSettings):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(DiffusionSettings):
    model: str | None = None
    prompt: str = Field(min_length=1)


class ImageRequest(BaseModel):
    model: str | None = None
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=8)
    size: str | None = None  # None: the size the model draws
    seed: int | None = None
    response_format: Literal["b64_json"] = "b64_json"
    steps: int | None = Field(default=None, ge=1)
    cfg_scale: float | None = Field(default=None, ge=0.0)


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)
