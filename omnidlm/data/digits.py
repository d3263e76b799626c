"""Real handwritten digits for the embedded omni models: scikit-learn's 1,797 8x8 digits.

Fixed split, so anyone can check on images the model never saw: images 0-1499 train, images
1500-1796 are held out. Images are upsampled with Pillow (bicubic) to `size` x `size`, values in
[0, 1], white digit on black.

Understanding samples ask questions whose answers have different lengths, so adaptive-length
decoding is exercised:

    "What digit is shown?"                -> "seven"
    "Describe the image."                 -> "A handwritten digit seven, written in white on black."
    "What is the digit plus 3?"           -> "The digit is 7, and 7 plus 3 is 10."

Generation samples pair the caption "a handwritten digit 7" with the image.

    from omnidlm.data.digits import digit_images, understanding_samples, caption
    images, labels = digit_images("heldout")
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from PIL import Image

N_TRAIN = 1500
N_TOTAL = 1797
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION = "What digit is shown?"
DESCRIBE = "Describe the image."
SPLITS = {"train": range(0, N_TRAIN), "heldout": range(N_TRAIN, N_TOTAL)}


@lru_cache(maxsize=4)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)  # (N, 8, 8) in [0, 1]


def upsample(image_8x8: np.ndarray, size: int) -> np.ndarray:
    """(8, 8) in [0, 1] -> (size, size) in [0, 1], bicubic through Pillow."""
    pil = Image.fromarray(np.clip(image_8x8 * 255.0, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(pil.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def digit_images(split: str, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size) float32 in [0, 1] and labels (N,) of a split ("train" or "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {sorted(SPLITS)}")
    images, labels = _raw_digits()
    idx = list(SPLITS[split])
    return np.stack([upsample(images[i], size) for i in idx]), labels[idx]


def caption(label: int) -> str:
    """The drawing prompt for a digit."""
    return f"a handwritten digit {label}"


def question_answer(label: int, kind: str, rng: random.Random) -> tuple[str, str]:
    """One (question, answer) about a digit image: kind is 'word', 'describe' or 'arithmetic'."""
    word = WORDS[label]
    if kind == "word":
        return QUESTION, word
    if kind == "describe":
        return DESCRIBE, f"A handwritten digit {word}, written in white on black."
    if kind == "arithmetic":
        n = rng.randint(1, 9)
        return f"What is the digit plus {n}?", f"The digit is {label}, and {label} plus {n} is {label + n}."
    raise ValueError(f"unknown question kind {kind!r}; valid kinds: word, describe, arithmetic")


def understanding_samples(split: str, seed: int = 0, kinds=("word", "describe", "arithmetic")):
    """One (image index within split, question, answer) per image and kind, shuffled by `seed`."""
    _, labels = _raw_digits()
    rng = random.Random(seed)
    samples = [(j, *question_answer(int(labels[i]), kind, rng))
               for j, i in enumerate(SPLITS[split]) for kind in kinds]
    rng.shuffle(samples)
    return samples
