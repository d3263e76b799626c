"""What each system answers with, for the one app (`serve/app.py`): how a request becomes prompt ids
(or an image job), what the engine runs, how answer ids become text, which routes exist.

    backend = backend_for(model, tokenizer)      # by the model object's system
    backend.capabilities                         # e.g. ("text", "see", "draw", "edit", "interleave")
    prompt = backend.chat_prompt(messages, images)   # Prompt(ids, ban_ids, ...); runs off the event loop
    text = backend.decode(tokens)

- Text systems (LLaDA, LLaDA2.0): the tokenizer's chat template; the scheduler's engine runs the model.
- LLaDA2.0-Uni: images are codes of its tokenizer, so an image question is plain prompt ids and the
  engine runs the backbone: Uni questions batch with each other. An interleaved answer (the
  request's `modalities` holds "image") may hold image codes; they are decoded after the text.
- LLaDA-V: the published prompt and sampler (full attention, fixed steps, its banned ids, text up
  to <|eot_id|>); the whole prompt, image features included, is the engine request's prefix, so
  image questions batch too.
- LLaDA-o: the image question is the request's prefix (ViT features, its segment mask), prefilled
  once; the answer decodes on the engine like every other system's. The prefix is `Deferred`: the
  scheduler embeds the questions it takes at once with one ViT forward (sampling/prefix.py).
Drawing and editing are whole-call jobs for every system that draws, through the system's own
sampler (`System.draw`, what `omnidlm draw` runs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..sampling.engine import SamplingConfig


@dataclass
class Prompt:
    ids: list[int]
    ban_ids: tuple[int, ...] = ()  # never sampled in this answer
    interleave: bool = False  # the answer may hold images (decoded by `answer_parts`)
    prefix: object = None  # sampling/prefix.py Prefix or Deferred: embeddings before the canvas

    @property
    def length(self) -> int:
        """Positions the prompt takes in the sequence."""
        return len(self.ids) + (0 if self.prefix is None else int(self.prefix.length))


class TextBackend:
    """A text system: chat through the tokenizer's template, no images."""

    default_max_tokens: int | None = None  # None: all the room the model has left
    image_mode = "L"  # how images of requests are read (PIL mode)

    def __init__(self, model, tokenizer, system):
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.engine_model, self.codec = model, tokenizer  # codec: what decodes answer ids (omni: its prompt codec)
        self.capabilities: tuple[str, ...] = ("text",)

    @property
    def default_threshold(self) -> float | None:
        """The threshold of a request that gives none: the system's (its spec's `sampling`,
        `System.threshold`); None: fixed steps per block."""
        return self.system.threshold()

    @property
    def config(self):
        """The config of what the engine runs (max_seq_len, block_size, eos_id, mask_id)."""
        return self.engine_model.config

    def engine_config(self, block_length: int) -> SamplingConfig:
        cache = "exact" if self.config.attention == "block" else "approx"
        return SamplingConfig(block_length=block_length, cache=cache)

    def chat_prompt(self, messages: list[dict], images: list, interleave: bool = False) -> Prompt:
        return Prompt(self.tokenizer.encode_chat(messages))

    def completion_prompt(self, text: str) -> Prompt:
        return Prompt(self.tokenizer.encode(text))

    def decode(self, tokens: list[int]) -> str:
        return self.codec.decode(self.without_eos(tokens))

    def without_eos(self, tokens: list[int]) -> list[int]:
        eos = self.config.eos_id
        return [t for t in tokens if t != eos]

    def draw_size(self) -> int | None:
        """The side in pixels of the images the model draws (None: it does not draw)."""
        return None

    def draw(self, prompt: str, n: int, seed: int, steps: int | None, cfg: float | None, image=None) -> np.ndarray:
        """Images by the system's own drawing sampler (what `omnidlm draw` runs, with its defaults);
        an edit of `image` ((H, W) in [0, 1]) when given."""
        from types import MappingProxyType

        from ..systems import Loaded
        from ..systems.tasks import Drawing

        options = MappingProxyType({k: v for k, v in (("steps", steps), ("cfg", cfg)) if v is not None})
        drawing = Drawing(prompt, image, n, seed, options, progress=False)
        return self.system.draw(Loaded(self.system, self.model, self.tokenizer), drawing).images

    def edit(self, image: np.ndarray, prompt: str, n: int, seed: int) -> np.ndarray:
        return self.draw(prompt, n, seed, None, None, image=image)


class SeeingBackend(TextBackend):
    """A system that sees: a completion's prompt is a chat of one user turn (the system's template)."""

    def completion_prompt(self, text: str) -> Prompt:
        return self.chat_prompt([{"role": "user", "content": text}], [])


class UniBackend(SeeingBackend):
    """LLaDA2.0-Uni: one sequence of text ids and image codes, answered by the backbone."""

    def __init__(self, model, tokenizer, system):
        super().__init__(model, tokenizer, system)
        from ..sampling.uni import codec_of

        self.engine_model, self.codec = model.backbone, codec_of(model, tokenizer)
        sees, draws = model.tokenizer is not None, model.decoder is not None
        self.capabilities = ("text",) + ("see",) * sees + ("draw", "edit", "interleave") * (draws and sees)

    def engine_config(self, block_length: int) -> SamplingConfig:
        return SamplingConfig(block_length=block_length, cache="exact")

    def chat_prompt(self, messages: list[dict], images: list, interleave: bool = False) -> Prompt:
        """The last user turn (its text and its last image), as the Uni recipe asks."""
        from ..sampling.uni import _text_ban, encode_images

        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        codes = encode_images(self.model, images[-1:])[0] if images else None
        ban = (self.config.mask_id,) if interleave else _text_ban(self.model)
        return Prompt(self.codec.user(question, codes), ban, interleave)

    def answer_parts(self, tokens: list[int]) -> tuple[str, list[np.ndarray]]:
        """An interleaved answer -> its text ("[image]" where each image stands) and the images."""
        from ..sampling.uni import answer_parts

        return answer_parts(self.model, self.tokenizer, self.without_eos(tokens))

    def draw_size(self) -> int | None:
        return self.model.decoder.image_size if self.model.decoder is not None else None


class LLaDAOBackend(SeeingBackend):
    """LLaDA-o: the image question [head | image | question, header] is the request's prefix
    (`sampling/omni.py`), prefilled once; answers decode in block-causal blocks on the engine, so
    image questions batch with each other. The prefix is deferred: its ViT features are computed
    by the scheduler for all the questions it takes at once (`prefixes`, one batched forward)."""

    default_max_tokens = 128  # 4 blocks of 32: the digits models' answers

    def __init__(self, model, tokenizer, system):
        super().__init__(model, tokenizer, system)
        from ..data.omni_batches import PromptCodec
        from ..sampling.omni import prefixes_of, understanding_config

        self.engine_model, self.codec = model.language_model, PromptCodec(tokenizer)
        self.prefixes = functools.partial(prefixes_of, model)  # ONE builder: its questions batch together
        self.ban_ids = understanding_config(model).ban_ids
        self.capabilities = ("text",) + ("see",) * model.can_see + ("draw", "edit") * model.can_draw

    def engine_config(self, block_length: int) -> SamplingConfig:
        return SamplingConfig(block_length=block_length, attention="block", cache="exact")

    def chat_prompt(self, messages: list[dict], images: list, interleave: bool = False) -> Prompt:
        from ..sampling.omni import question_samples
        from ..sampling.prefix import Deferred

        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        sample = question_samples(self.model, self.tokenizer, [images[-1] if images else None], [question])[0]
        return Prompt([], self.ban_ids, prefix=Deferred(self.prefixes, sample, len(sample[1])))

    def draw_size(self) -> int:
        from ..sampling.omni import model_image_size

        return model_image_size(self.model)


class LLaDAVBackend(SeeingBackend):
    """LLaDA-V: its prompt with one -200 per image, embedded (anyres features) into the prefix."""

    image_mode = "RGB"

    def __init__(self, model, tokenizer, system):
        super().__init__(model, tokenizer, system)
        from ..sampling import llada_v

        self.V, self.engine_model = llada_v, model.language_model
        self.default_max_tokens = llada_v.GEN_LENGTH
        self.capabilities = ("text", "see")

    def engine_config(self, block_length: int) -> SamplingConfig:
        return SamplingConfig(block_length=block_length, attention="full", cache="none", stop_at_eos=False)

    def chat_prompt(self, messages: list[dict], images: list, interleave: bool = False) -> Prompt:
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        ids = self.V.prompt_ids(self.tokenizer, question, len(images))
        prefix = self.V.request(self.model, ids, images, 1).prefix
        return Prompt([], self.V.banned_ids(self.tokenizer), prefix=prefix)

    def decode(self, tokens: list[int]) -> str:
        return self.V.answer_text(self.tokenizer, tokens)


BACKENDS = {"uni": UniBackend, "lladao": LLaDAOBackend, "llada-v": LLaDAVBackend}  # the text systems: TextBackend


def backend_for(model, tokenizer) -> TextBackend:
    """The backend of the model object's system (the registry says which, `systems.system_of`)."""
    from .. import systems

    system = systems.system_of(model)
    return BACKENDS.get(system.name, TextBackend)(model, tokenizer, system)


def open_model(path: str, device: str = "cpu"):
    """(model, tokenizer) of the checkpoint at `path`, whatever its system (the registry finds it)."""
    from .. import systems

    loaded = systems.open(path, device=device)
    return loaded.model, loaded.tokenizer


def open_backend(path: str, device: str = "cpu") -> TextBackend:
    return backend_for(*open_model(path, device))
