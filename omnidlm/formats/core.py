"""The one loading core every checkpoint layout goes through (text, LLaDA-V, LLaDA-o, Uni parts).

A layout reader builds its model on the meta device and hands its rules and tensor source here;
`load_state` does the checks once for every layout: tensors the config implies but the files lack,
tensors the model does not use (extra layers are an error, the rest a warning), shapes, integer
tensors where weights are expected, mixed float dtypes, NaN / inf weights (one float32 sum per
tensor, checked once at the end). `finish` assigns the tensors and rebuilds the buffers a
checkpoint does not hold (rotary frequencies, position ids). Every error names the file.

    model = build_meta(lambda: Backbone(cfg))
    state = load_state(model, rules, TensorSource(directory), device="cpu", dtype=None)
    model = finish(model, state, device)
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from pathlib import Path

import torch

from ..nn.layers import Rotary
from . import rules as R
from .hub import resolve  # noqa: F401  (the one resolve step: local directory or Hub repo id)
from .io import TensorSource

_LAYER = re.compile(r"^(.*?\b(?:layers|blocks))\.(\d+)\.")
# float32 by design in published MoE checkpoints whose other weights are bf16 (selection-only bias)
_ANY_DTYPE = ("expert_bias",)


class MissingTensors(KeyError):
    """Tensors the config implies that the checkpoint lacks (a KeyError that prints without quotes)."""

    def __str__(self) -> str:
        return str(self.args[0])


def read_json(path: Path) -> dict:
    """A JSON object file; a missing directory, file, bad JSON or a non-object is an error naming it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no checkpoint: {path.parent} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path.parent} lacks {path.name}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(data).__name__}")
    return data


@contextlib.contextmanager
def naming(path: Path):
    """Re-raise what reading a config's fields raises (KeyError, TypeError, ValueError) as one
    ValueError naming the file."""
    try:
        yield
    except KeyError as error:
        raise ValueError(f"{path} lacks the field {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def build_meta(build):
    """`build()` on the meta device: no memory until the tensors are assigned."""
    with torch.device("meta"):
        return build()


def _layers_of(names) -> dict[str, set[int]]:
    """prefix -> layer indices, for names such as `model.layers.3.mlp...`."""
    out: dict[str, set[int]] = {}
    for name in names:
        if m := _LAYER.match(name):
            out.setdefault(m.group(1), set()).add(int(m.group(2)))
    return out


def _layer_count_error(wanted: dict, present: dict, source: TensorSource, layers_field: str) -> None:
    """Raise when the config's layer count and the tensors' disagree under one prefix."""
    for prefix, used in wanted.items():
        have = present.get(prefix, set())
        if have and used and max(have) != max(used):
            raise ValueError(f"checkpoint {source.directory}: the config says {max(used) + 1} layers "
                             f"(field {layers_field!r}) but the tensors under {prefix!r} hold {max(have) + 1}")


def check_names(rules: list[R.Rule], source: TensorSource, ignored=(), layers_field: str = "n_layers") -> None:
    """Missing tensors and extra layers are errors; other unused tensors a warning."""
    used = [name for rule in rules for name in rule.sources]
    unused = R.unused_keys(rules, source, tuple(ignored))
    missing = [name for name in used if name not in source]
    if missing or unused:
        kept = [k for k in source.keys() if not k.startswith(tuple(ignored))]
        _layer_count_error(_layers_of(used), _layers_of(kept), source, layers_field)
    if missing:
        raise MissingTensors(f"checkpoint {source.directory} lacks {len(missing)} tensor(s) the config implies, "
                       f"e.g. {missing[:5]}")
    if unused:
        warnings.warn(f"checkpoint {source.directory} has {len(unused)} tensor(s) the model does not use, "
                      f"e.g. {unused[:5]}")


def _check_dtype(rule: R.Rule, tensor: torch.Tensor, want: torch.Tensor | None, source: TensorSource) -> None:
    if want is not None and want.is_floating_point() and not tensor.is_floating_point():
        raise ValueError(f"{source.file(rule.sources[0])}: tensor {rule.sources[0]} is {tensor.dtype}; "
                         "weights must be floating point")


def _check_mixed(dtypes: dict[torch.dtype, str], source: TensorSource) -> None:
    if len(dtypes) > 1:
        seen = ", ".join(f"{name} is {str(d).removeprefix('torch.')}" for d, name in dtypes.items())
        raise ValueError(f"checkpoint {source.directory} mixes float dtypes ({seen}); "
                         "load it in one dtype: omnidlm.load(path, dtype=torch.float32)")


def load_state(model: torch.nn.Module, rules: list[R.Rule], source: TensorSource, device=None,
               dtype: torch.dtype | None = None, ignored=(), layers_field: str = "n_layers") -> dict:
    """The model's state dict read through `rules` from `source`, every check above done once."""
    device = torch.device(device or "cpu")
    check_names(rules, source, ignored, layers_field)
    wanted = model.state_dict()
    state, sums, dtypes = {}, [], {}
    for rule, tensor in R.read(rules, source, {k: tuple(v.shape) for k, v in wanted.items()}):
        _check_dtype(rule, tensor, wanted.get(rule.internal), source)
        if tensor.is_floating_point() and not rule.internal.endswith(_ANY_DTYPE):
            dtypes.setdefault(tensor.dtype, rule.sources[0])
        cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        state[rule.internal] = tensor = tensor.to(device=device, dtype=cast)
        if tensor.is_floating_point():
            sums.append((rule.internal, tensor.sum(dtype=torch.float32)))
    if dtype is None:
        _check_mixed(dtypes, source)
    _check_finite(sums, state, rules, source)
    return state


def _check_finite(sums, state, rules, source) -> None:
    if not sums or bool(torch.isfinite(torch.stack([s for _, s in sums])).all()):
        return
    first = {rule.internal: rule.sources[0] for rule in rules}
    for internal, total in sums:
        if not math.isfinite(float(total)) and not bool(torch.isfinite(state[internal]).all()):
            name = first[internal]
            raise ValueError(f"{source.file(name)}: tensor {name} holds NaN or inf values")


def finish(model: torch.nn.Module, state: dict, device) -> torch.nn.Module:
    """Assign the loaded tensors; rebuild what a checkpoint does not hold (rotary, position ids)."""
    device = torch.device(device or "cpu")
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        rotary = getattr(module, "rotary", None)
        if isinstance(rotary, Rotary) and rotary.inv_freq.is_meta:
            module.rotary = Rotary(module.config.rotary_dim, module.config.rope_theta).to(device)
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name != "position_ids":  # SigLIP's non-persistent arange; nothing else is expected
                raise RuntimeError(f"buffer {name!r} of {type(module).__name__} was not loaded")
            module.register_buffer(name, torch.arange(buf.shape[-1], device=device).expand(buf.shape),
                                   persistent=False)
    return model.eval()


def read_tokenizer(directory: Path, config=None):
    """The checkpoint's `tokenizer.json` as a `Tokenizer`. Without one: the character tokenizer of the
    shipped tiny models when its special ids fit `config` (a ModelConfig), else None, with a warning
    saying which. A file that does not parse is an error naming it."""
    from ..data.char_tokenizer import build_char_tokenizer, special_ids
    from ..sequence.tokenizer import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        chars = Tokenizer(build_char_tokenizer())
        ids = special_ids(chars.hf)
        if config is None or (ids["mask_id"], ids["eos_id"]) == (config.mask_id, config.eos_id):
            warnings.warn(f"{directory} ships no tokenizer.json: using the character tokenizer of the shipped tiny models")
            return chars
        warnings.warn(f"{directory} ships no tokenizer.json (and the character tokenizer's mask / EOS ids do not "
                      "fit the model): text needs token ids")
        return None
    try:  # the directory: with a tokenizer_config.json it goes through AutoTokenizer and its chat template
        return Tokenizer.from_file(directory)
    except (ValueError, FileNotFoundError):
        raise  # already names the file
    except Exception as error:  # transformers / tokenizers raise many classes for a file they cannot read
        raise ValueError(f"{path}: not a readable tokenizer ({type(error).__name__}: {error})") from None
