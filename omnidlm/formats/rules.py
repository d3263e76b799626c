"""Key-mapping rules between a published checkpoint layout and the backbone's own names.

A `Rule` says that one internal tensor is made of one or more published tensors: the same tensor
(`one`), several concatenated along dim 0 (`cat`, e.g. q/k/v into the fused qkv projection), or
stacked along a new dim 0 (`stack`, e.g. split experts into the fused (E, I, H) tensor). Reading
and writing are the two directions of the same rule list, so a round trip is bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .io import TensorSource


class ShapeError(ValueError):
    """A tensor whose shape is not the one the config implies."""


@dataclass(frozen=True)
class Rule:
    internal: str
    sources: tuple[str, ...]
    kind: str = "one"  # one | cat | stack
    split: tuple[int, ...] = ()  # row counts of each source, for `cat`

    def combine(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "one":
            return tensors[0]
        if self.kind == "cat":
            return torch.cat(tensors, dim=0)
        return torch.stack(tensors, dim=0)

    def separate(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "one":
            return [tensor]
        if self.kind == "cat":
            return list(tensor.split(list(self.split), dim=0))
        return list(tensor.unbind(0))


def one(internal: str, source: str) -> Rule:
    return Rule(internal, (source,))


def cat(internal: str, sources: list[str], split: list[int]) -> Rule:
    return Rule(internal, tuple(sources), "cat", tuple(split))


def stack(internal: str, sources: list[str]) -> Rule:
    return Rule(internal, tuple(sources), "stack")


def read(rules: list[Rule], source: TensorSource, expected: dict[str, tuple]) -> Iterator[tuple[Rule, torch.Tensor]]:
    """Yield (rule, tensor) per rule, checking shapes against the model built from the config."""
    for rule in rules:
        try:
            tensor = rule.combine([source.get(name) for name in rule.sources])
        except RuntimeError as error:  # parts that cannot be concatenated / reshaped
            raise ValueError(f"{source.file(rule.sources[0])}: tensors {list(rule.sources)} do not form "
                             f"{rule.internal}: {error}") from None
        want = expected.get(rule.internal)
        if want is not None and tuple(tensor.shape) != tuple(want):
            names = rule.sources[0] if len(rule.sources) == 1 else f"{rule.sources[0]} (+{len(rule.sources) - 1} more)"
            raise ShapeError(
                f"{source.file(rule.sources[0])}: tensor {names} has shape {tuple(tensor.shape)} but the config "
                f"implies {tuple(want)} for {rule.internal}"
            )
        yield rule, tensor


def write(rules: list[Rule], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published name -> tensor for every rule, from the backbone's state dict."""
    out = {}
    for rule in rules:
        for name, part in zip(rule.sources, rule.separate(state[rule.internal])):
            out[name] = part
    return out


def unused_keys(rules: list[Rule], source: TensorSource, ignored_prefixes: tuple[str, ...] = ()) -> list[str]:
    used = {name for rule in rules for name in rule.sources}
    return sorted(k for k in source.keys() if k not in used and not k.startswith(ignored_prefixes))
