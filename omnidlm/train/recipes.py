"""Training configurations: the text `TrainConfig`, the one registry of every recipe, `key=value` overrides.

    cfg = recipe("synthetic-text")                       # a named recipe (text, LLaDA-o or Uni)
    cfg = apply_overrides(cfg, ["lr=1e-3", "model.n_layers=2", "batch_size=16"])
    cfg = cfg.with_max_steps(50)                         # `--max-steps`: bounds every stage of the recipe

A recipe is a plain function returning a config dataclass: a `TrainConfig` for the text models
(`train/trainer.py`), an `OmniTrainConfig` (`train/omni.py`) or a `UniTrainConfig` (`train/uni.py`)
for the omni systems; `RECIPES` lists them all. Overrides name a field (`lr=...`) or a field of a
nested config (`model.hidden_size=...`, `vit_pretrain.steps=...`, `decoder_train.vae_steps=...`);
the value is parsed by the field's type. An unknown recipe, field or bad value is a ValueError
naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from ..config import ModelConfig, build_dataclass
from ..data.char_tokenizer import build_char_tokenizer, special_ids

OBJECTIVES = ("bdlm", "sft", "pretrain", "lladao")
DATASETS = ("synthetic", "chat")
PARALLEL = ("auto", "none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (the model, the data, the optimisation)."""

    recipe: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    init_from: str | None = None  # start from a checkpoint (fine-tuning) instead of random weights
    # data
    data: str = "synthetic"  # "synthetic" (data.synthetic digit ops) or "chat" (JSON lines at data_path)
    data_path: str | None = None
    tokenizer: str | None = None  # tokenizer.json; None: the character tokenizer (data.char_tokenizer)
    seq_len: int = 192  # every row is padded (EOS, learned) to this length
    pack: bool = False  # chat data: pack several conversations per row (document-masked attention)
    # objective (diffusion.masked)
    objective: str = "bdlm"
    complementary: bool = False  # LLaDA2.0 complementary masking (doubles the rows)
    reweight: bool = False  # LLaDA2.0 Mask Token Reweighting (bdlm)
    p_ext: float = 0.1  # adaptive length augmentation (LLaDA-o): extra EOS
    p_trunc: float = 0.1  # adaptive length augmentation: truncate to a prefix
    # optimisation
    max_steps: int = 1000
    batch_size: int = 32  # global batch (rows per optimiser step, all processes together)
    micro_batch_size: int = 0  # rows per forward pass per process; 0: batch_size / world (no accumulation)
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    schedule: str = "wsd"
    warmup_steps: int = 100
    decay_frac: float = 0.2
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.0  # 0 disables the EMA; the exported weights are the EMA's when enabled
    balance_rate: float = 1e-3  # expert-bias balancing of MoE models after each step (0: off; train/loop.py)
    lora_rank: int = 0  # 0: full fine-tuning
    lora_alpha: float = 16.0
    lora_targets: str = "qkv,o_proj,gate_up,down"
    seed: int = 0
    # execution (not compared on resume)
    parallel: str = "auto"  # auto: ddp under torchrun with several processes, else none
    activation_checkpointing: bool = False
    bf16: bool = True  # bf16 autocast, on GPU only
    save_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int = 0  # synthetic data: exact match on held-out examples every N steps (0: only at the end)
    eval_samples: int = 32
    progress: bool = True
    threads: int = 0  # CPU threads (torch.set_num_threads); 0 keeps torch's default

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.validate()

    def validate(self) -> None:
        for name, valid in (("objective", OBJECTIVES), ("data", DATASETS), ("parallel", PARALLEL)):
            if getattr(self, name) not in valid:
                raise ValueError(f"train field {name!r} must be one of {list(valid)}, got {getattr(self, name)!r}")
        for name in ("max_steps", "batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train field {name!r} must be positive, got {getattr(self, name)}")
        if self.objective == "bdlm" and self.pack:
            raise ValueError("train field 'pack' cannot be combined with objective=bdlm (one example per row)")
        if self.seq_len > self.model.max_seq_len:
            raise ValueError(f"train field 'seq_len' ({self.seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_max_steps(self, n: int) -> "TrainConfig":
        return dataclasses.replace(self, max_steps=n)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return build_dataclass(cls, data, "train")


# Fields that say how a run executes, not what it computes: they may change across a resume.
EXECUTION_FIELDS = ("parallel", "activation_checkpointing", "save_every", "keep_checkpoints", "log_every",
                    "eval_every", "eval_samples", "progress", "threads")


def char_model(**fields) -> ModelConfig:
    """A model config over the character tokenizer (vocab 103 with its special ids)."""
    ids = special_ids(build_char_tokenizer())
    return ModelConfig(vocab_size=103, **ids, **fields)


def synthetic_text() -> TrainConfig:
    """The shipped `models/text-tiny`: block diffusion (BDLM, block 32) with adaptive-length augmentation
    on the digit-ops task; a 0.9M-parameter model, 400 steps of 32 rows, 6 to 15 minutes on 2 CPU cores."""
    model = char_model(hidden_size=128, n_layers=4, n_heads=4, intermediate_size=384, max_seq_len=256,
                       attention="block", block_size=32, rope_theta=10000.0)
    return TrainConfig(recipe="synthetic-text", model=model, data="synthetic", seq_len=192, objective="bdlm",
                       max_steps=400, batch_size=32, lr=3e-3, weight_decay=0.01, warmup_steps=50,
                       schedule="wsd", decay_frac=0.25, ema_decay=0.0, save_every=50, log_every=10,
                       eval_every=0, eval_samples=64)


def synthetic_tiny() -> TrainConfig:
    """A seconds-long smoke run (tests, CI): a 2-layer model on the digit-ops task."""
    model = char_model(hidden_size=32, n_layers=2, n_heads=2, intermediate_size=64, max_seq_len=256,
                       attention="block", block_size=32)
    return TrainConfig(recipe="synthetic-tiny", model=model, data="synthetic", seq_len=192, objective="bdlm",
                       max_steps=4, batch_size=4, lr=1e-3, warmup_steps=1, save_every=2, log_every=1,
                       eval_samples=0, progress=False)


def synthetic_moe_tiny() -> TrainConfig:
    """As synthetic-tiny with a LLaDA2.0-style MoE second layer (4 experts, 2 per token, a shared
    expert): the loop balances its experts after every step (`balance_rate`)."""
    model = synthetic_tiny().model.replace(n_experts=4, n_experts_per_tok=2, n_shared_experts=1,
                                           moe_intermediate_size=16, first_k_dense=1)
    return dataclasses.replace(synthetic_tiny(), recipe="synthetic-moe-tiny", model=model)


def chat_sft() -> TrainConfig:
    """LLaDA SFT on a JSON-lines chat file (`data_path=...`), full fine-tuning of `init_from`."""
    cfg = synthetic_tiny()
    return dataclasses.replace(cfg, recipe="chat-sft", data="chat", objective="sft", seq_len=256, max_steps=100,
                               batch_size=8, lr=1e-4, warmup_steps=10, save_every=50, log_every=10)


def chat_lora() -> TrainConfig:
    """As chat-sft, with LoRA adapters (rank 8) merged into the exported weights."""
    return dataclasses.replace(chat_sft(), recipe="chat-lora", lora_rank=8, lr=1e-3)


def _recipes() -> dict:
    from .omni import OMNI_RECIPES
    from .uni import UNI_RECIPES

    text = {"synthetic-text": synthetic_text, "synthetic-tiny": synthetic_tiny, "synthetic-moe-tiny": synthetic_moe_tiny,
            "chat-sft": chat_sft, "chat-lora": chat_lora}
    return {**text, **OMNI_RECIPES, **UNI_RECIPES}


RECIPES = _recipes()


def recipe(name: str):
    """The named recipe's config; an unknown name lists the valid ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {sorted(RECIPES)}")
    return RECIPES[name]()


def _parse(value: str, current, where: str, annotation: str = ""):
    """Parse `value` like the field's current value (bool, int, float, dict, list / tuple, str, None-able)."""
    if value.lower() in ("none", "null"):
        return None
    kind = type(current)
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, dict):
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError
            return parsed
        if isinstance(current, (list, tuple)):
            parsed = json.loads(value)
            if not isinstance(parsed, list):
                raise ValueError
            return kind(parsed)
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"override {where}={value!r}: expected a {kind.__name__}") from None
    if current is None and "str" not in annotation:  # an optional number (e.g. model.n_kv_heads)
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return value


def _fields(cfg) -> dict:
    """Overridable fields of a config dataclass: name -> annotation (as a string)."""
    return {f.name: str(f.type) for f in dataclasses.fields(cfg) if f.name != "extra"}


def _nested(cfg) -> list[str]:
    """Fields holding a config of their own: overridden as `name.field=value`."""
    return [name for name in _fields(cfg) if dataclasses.is_dataclass(getattr(cfg, name))]


def _unknown(cfg, item: str, key: str, where: str) -> ValueError:
    plain = sorted(set(_fields(cfg)) - set(_nested(cfg)))
    nested = "".join(f" or {name}.<field> with <field> in {sorted(_fields(getattr(cfg, name)))}"
                     for name in _nested(cfg))
    if where:  # a nested config: "unknown model field 'width' ...; valid model fields: [...]"
        return ValueError(f"unknown {where[:-1]} field {key!r} in override {item!r}; valid {where[:-1]} fields: "
                          f"{plain}{nested}")
    return ValueError(f"unknown train field {key!r} in override {item!r}; valid fields: {plain}{nested}")


def _apply(cfg, tree: dict, where: str = ""):
    """`cfg` with the overrides of `tree` ({field: (item, value) or subtree}) in one replace per level,
    so that fields validated together (seq_len and model.max_seq_len) may change together."""
    fields, changes = _fields(cfg), {}
    for top, node in tree.items():
        nested = isinstance(node, dict)
        item = node[0] if not nested else next(iter(_items(node)))
        if top not in fields or (not nested and top in _nested(cfg)):
            raise _unknown(cfg, item, top, where)
        current = getattr(cfg, top)
        if not nested and current is None and _config_type(cfg, top) is not None:
            changes[top] = _config_from_json(_config_type(cfg, top), node[1], item)
        elif not nested:
            changes[top] = _parse(node[1], current, where + top, fields[top])
        elif dataclasses.is_dataclass(current):
            changes[top] = _apply(current, node, f"{where}{top}.")
        elif isinstance(current, dict):
            changes[top] = {**current, **_dict_changes(current, node, f"{where}{top}.")}
        else:
            raise ValueError(f"override {item!r}: field {where}{top!r} has no fields of its own (it is {current!r})")
    replace = getattr(cfg, "replace", None)
    return replace(**changes) if callable(replace) else dataclasses.replace(cfg, **changes)


def _config_type(cfg, name: str):
    """The dataclass an optional field may hold (`vit_pretrain: VisionPretrain | None`), else None."""
    hint = typing.get_type_hints(type(cfg)).get(name)
    return next((t for t in typing.get_args(hint) if dataclasses.is_dataclass(t)), None)


def _config_from_json(kind, value: str, item: str):
    """`name={"steps": 4}`: a nested config built from a JSON object (its other fields at their defaults)."""
    if value.lower() in ("none", "null"):
        return None
    try:
        fields = json.loads(value)
        return kind(**fields)
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"override {item!r}: expected a JSON object of {kind.__name__} fields "
                         f"{sorted(f.name for f in dataclasses.fields(kind))} ({error})") from None


def _items(tree: dict):
    for node in tree.values():
        yield from (_items(node) if isinstance(node, dict) else [node[0]])


def _dict_changes(current: dict, tree: dict, where: str) -> dict:
    out = {}
    for key, node in tree.items():
        if isinstance(node, dict):
            raise ValueError(f"override {next(iter(_items(node)))!r}: {where}{key} is nested too deep")
        old = current.get(key)
        out[key] = _parse(node[1], old, where + key) if old is not None else _parse_free(node[1])
    return out


def _parse_free(value: str):
    """A value for a new dict key: JSON when it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def apply_overrides(cfg, overrides: list[str]):
    """A copy of `cfg` (any recipe's config) with `key=value` overrides; nested fields as `model.key=value`."""
    tree: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            raise ValueError(f"override {item!r} is not key=value")
        *parents, last = key.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with an earlier override of {name!r}")
        node[last] = (item, value)
    return _apply(cfg, tree) if tree else cfg


def config_differences(saved: dict, current: TrainConfig) -> list[str]:
    """Fields (dotted for the model) on which a saved run's config and `current` differ, execution aside."""
    now = current.to_dict()
    defaults = TrainConfig().to_dict()
    diffs = []
    for key in sorted(set(saved) | set(now)):
        if key in EXECUTION_FIELDS or (key not in saved and now.get(key) == defaults.get(key)):
            continue  # a field added since the run was saved, at its default, changes nothing
        if key == "model":
            old_model, new_model = saved.get("model", {}), now["model"]
            for name in sorted(set(old_model) | set(new_model)):
                if old_model.get(name) != new_model.get(name):
                    diffs.append(f"model.{name}: {old_model.get(name)!r} there, {new_model.get(name)!r} here")
        elif saved.get(key) != now.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} there, {now.get(key)!r} here")
    return diffs
