"""An independent judge of drawn digits: scikit-learn's SVC trained on the real training digits.

Drawings are judged by what a classifier that never saw a generated image thinks they show: the
image is downsampled to 8x8 (Pillow, box filter) and classified in the digits' own feature space.

    judge = DigitJudge.fit()
    judge.accuracy(drawings, wanted_labels)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from ..data.digits import SPLITS, _raw_digits


def to_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W) in [0, 1] -> (N, 64) features on the scale of the 8x8 training digits."""
    small = [np.asarray(Image.fromarray(np.clip(im * 255, 0, 255).astype(np.uint8), mode="L")
                        .resize((8, 8), Image.BOX), dtype=np.float32) / 255.0 for im in images]
    return np.stack(small).reshape(len(images), 64)


class DigitJudge:
    def __init__(self, classifier):
        self.classifier = classifier

    @classmethod
    @lru_cache(maxsize=1)
    def fit(cls) -> "DigitJudge":
        """Train on the real digits 0-1499 only (the same split as the models)."""
        from sklearn.svm import SVC

        images, labels = _raw_digits()
        train = list(SPLITS["train"])
        return cls(SVC(gamma="scale", C=10.0).fit(images[train].reshape(-1, 64), labels[train]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.predict(to_features(images))

    def accuracy(self, images: np.ndarray, labels) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())
