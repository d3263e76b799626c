"""`omnidlm generate`: sample from a checkpoint with a reference sampler or the inference engine.

    omnidlm generate --model models/text-tiny --prompt "copy: 123..." --gen-length 128
    omnidlm generate --model ckpt --prompt-ids 1,2,3 --sampler llada2 --json
    omnidlm generate --model ckpt --prompt-ids 1,2,3 --sampler llada2 --cache exact --policy threshold

Without `--cache` / `--policy` the published sampler itself runs (`sampling/reference.py`). With
either, the engine (`sampling/engine.py`) runs: policy fixed / threshold / factor (default: the
sampler's own, fixed for llada, threshold for llada2), cache none / exact / approx (default none).
The engine's output has the sampler's shape, so `--cache exact` reproduces `--sampler llada2`.

With `--json` it prints one object whose `output_ids` are what the sampler returns (LLaDA: the
generated part after the prompt; LLaDA2: the tokens after the prompt, cut after the first EOS),
plus timings (and the engine's forward count). The printed `text` stops at the first EOS.
"""

from __future__ import annotations

import json
import time

from .args import (device, nonnegative_float, nonnegative_int, positive_float, positive_int, probability, seed,
                   token_ids)


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a reference sampler or the inference engine")
    p.add_argument("--model", required=True, help="checkpoint directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (chat-templated unless --raw)")
    src.add_argument("--prompt-ids", type=token_ids, help="comma-separated prompt token ids")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template to --prompt")
    p.add_argument("--sampler", choices=["llada", "llada2"], default=None,
                   help="llada: fixed steps, full canvas; llada2: block-causal threshold (default: by model)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="denoising steps (llada: total, default the gen length; llada2: per block, "
                        "default the block length)")
    p.add_argument("--gen-length", type=positive_int, default=128, help="tokens generated after the prompt")
    p.add_argument("--block-length", type=positive_int, default=None,
                   help="semi-autoregressive block (default: llada the gen length, llada2 the model's block size)")
    p.add_argument("--temperature", type=nonnegative_float, default=0.0, help="0: greedy")
    p.add_argument("--cfg-scale", type=nonnegative_float, default=0.0,
                   help="classifier-free guidance scale of the llada sampler (0: off)")
    p.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence",
                   help="which masked tokens the llada sampler commits first")
    p.add_argument("--threshold", type=probability, default=0.95,
                   help="acceptance threshold (llada2, policy threshold)")
    p.add_argument("--cache", choices=["none", "exact", "approx"], default=None,
                   help="run the engine with this cache mode (exact: block-causal only)")
    p.add_argument("--policy", choices=["fixed", "threshold", "factor"], default=None,
                   help="run the engine with this commit policy")
    p.add_argument("--factor", type=positive_float, default=1.0, help="f of the factor policy")
    p.add_argument("--mask-id", type=nonnegative_int, default=None, help="mask token id, when the config lacks it")
    p.add_argument("--seed", type=seed, default=0, help="seed of the sampling noise")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--tensor-parallel", type=positive_int, default=1, metavar="N",
                   help="shard the model over N processes started by torchrun --nproc_per_node N")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8: weight-only int8 linears (CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def prompt_ids(args, tokenizer) -> list[int]:
    if args.prompt_ids is not None:
        return args.prompt_ids  # parsed by args.token_ids
    if tokenizer is None:
        raise ValueError(f"{args.model} has no tokenizer.json: pass --prompt-ids instead of --prompt")
    if args.raw:
        return tokenizer.encode(args.prompt)
    return tokenizer.encode_chat([{"role": "user", "content": args.prompt}])


def block_length(model, args) -> int:
    return args.block_length or (model.config.block_size if args.sampler == "llada2" else args.gen_length)


def engine_config(model, args):
    """The engine's SamplingConfig for these flags, shaped like the chosen sampler."""
    from ..sampling.engine import SamplingConfig
    from ..sampling.policies import make_policy
    from ..sampling.prompts import check_lengths

    if args.cfg_scale > 0:
        raise ValueError("--cfg-scale needs the reference sampler: drop --cache and --policy")
    block = block_length(model, args)
    if args.sampler == "llada2":
        check_lengths(model.config, 0, args.gen_length, block, None)
        steps, default_policy = min(args.steps or block, args.gen_length), "threshold"
    else:
        steps_total = args.steps or args.gen_length
        check_lengths(model.config, 0, args.gen_length, block, steps_total)
        steps, default_policy = steps_total // (args.gen_length // block), "fixed"
    policy = make_policy(args.policy or default_policy, steps, threshold=args.threshold, factor=args.factor)
    return SamplingConfig(max_new_tokens=args.gen_length, block_length=block,
                          attention="block" if args.sampler == "llada2" else "full",
                          cache=args.cache or "none", policy=policy, temperature=args.temperature,
                          remasking=args.remasking, stop_at_eos=args.sampler == "llada2")


def sample(model, ids, args):
    import torch

    from ..sampling.engine import generate as engine_generate
    from ..sampling.reference import generate, generate_llada2

    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    block = block_length(model, args)
    if args.cache or args.policy:
        result = engine_generate(model, [ids], engine_config(model, args), max_batch=1, generator=generator)[0]
        args.forwards = result.forwards
        return torch.tensor(result.tokens)
    if args.sampler == "llada2":
        return generate_llada2(model, ids, gen_length=args.gen_length, block_length=block,
                               steps=args.steps or block, threshold=args.threshold,
                               temperature=args.temperature, generator=generator)[0]
    return generate(model, [ids], steps=args.steps or args.gen_length, gen_length=args.gen_length,
                    block_length=block, temperature=args.temperature, cfg_scale=args.cfg_scale,
                    remasking=args.remasking, generator=generator)[0]


def prepare(model, args):
    """Apply --tensor-parallel (under torchrun) and --quantize to a loaded model."""
    if args.tensor_parallel < 1:
        raise ValueError(f"--tensor-parallel must be at least 1, got {args.tensor_parallel}")
    if args.tensor_parallel > 1:
        from ..nn.parallel import init_mesh, tensor_parallel

        mesh = init_mesh(args.tensor_parallel)
        args.rank = mesh.get_rank()
        model = tensor_parallel(model.to(mesh.device_type), mesh)
    if args.quantize == "int8":
        from ..nn.quantize import quantize_int8

        model = quantize_int8(model)
    return model


def until_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """The answer a reader sees: ids up to the first EOS (the LLaDA sampler pads with EOS and may
    write past it; `output_ids` keep everything it returned)."""
    return ids[: ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids


def run(args) -> int:
    from .. import load
    from ..formats.core import read_tokenizer, resolve

    start = time.perf_counter()
    overrides = {"mask_id": args.mask_id} if args.mask_id is not None else {}
    directory = resolve(args.model)
    model = prepare(load(directory, device=args.device, **overrides), args)
    tokenizer = read_tokenizer(directory) if (directory / "tokenizer.json").is_file() else None
    args.sampler = args.sampler or ("llada2" if model.config.attention == "block" else "llada")
    ids = prompt_ids(args, tokenizer)
    loaded = time.perf_counter()
    out = sample(model, ids, args).tolist()
    done = time.perf_counter()
    if getattr(args, "rank", 0) != 0:
        return 0  # every rank sampled the same tokens; one prints them
    text = tokenizer.decode(until_eos(out, model.config.eos_id)) if tokenizer else None
    if args.json:
        timings = {"load_s": loaded - start, "generate_s": done - loaded,
                   "tokens_per_s": len(out) / max(done - loaded, 1e-9)}
        result = {"sampler": args.sampler, "prompt_ids": ids, "output_ids": out, "text": text, "timings": timings}
        if args.cache or args.policy:
            result.update(cache=args.cache or "none", policy=args.policy or "default",
                          forwards=getattr(args, "forwards", None))
        print(json.dumps(result))
    else:
        print(text if text is not None else ",".join(map(str, out)))
    return 0
