"""`omnidlm bench`: the inference engine against the reference sampler on the held-out synthetic task.

    omnidlm bench --model models/text-tiny
    omnidlm bench --model models/text-tiny --n 200 --sprint 0.75 --json bench.json
    omnidlm bench --model models/text-tiny --serve        # the HTTP server at 1, 4, 8, 16 and 32 clients
    omnidlm bench --systems lladao,uni                    # LLaDA-o against LLaDA2.0-Uni on held-out digits
    omnidlm bench --model models/text-tiny --sweep threshold=0.5,0.7,0.9,0.95,0.99 --plot tradeoff.png
    omnidlm bench --shape llada-60m --random-weights      # forwards at a real shape against their ceiling
    omnidlm bench --shape llada-60m --random-weights --gen-lengths 256,512,1024,2048 --prompt-lengths 64,1024,4096

Prints one table (policy x cache mode -> exact match, tokens per forward, tokens/s of non-EOS
tokens, speedup over the reference row); with `--json FILE` also writes
`{"rows": [{"policy", "cache", "accuracy", "tokens_per_forward", "tokens_per_s", "speedup", ...}], ...}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..formats.io import write_json
from .args import device, nonnegative_int, positive_float, positive_int, positive_ints, probability, shipped_model


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the inference engine against the reference sampler")
    p.add_argument("--model", default=None, help="checkpoint directory with a tokenizer.json (e.g. models/text-tiny)")
    p.add_argument("--systems", default=None, metavar="LIST",
                   help="compare omni systems on the held-out digits instead, e.g. lladao,uni "
                        "(models from --lladao-model / --uni-model)")
    p.add_argument("--lladao-model", default=shipped_model("lladao-digits"), help="--systems: the LLaDA-o model")
    p.add_argument("--uni-model", default=shipped_model("uni-digits"), help="--systems: the Uni model")
    p.add_argument("--per-digit", type=positive_int, default=5, help="--systems: drawings per digit")
    p.add_argument("--n", type=positive_int, default=100, help="held-out examples")
    p.add_argument("--max-new-tokens", type=positive_int, default=96, help="upper bound of each answer")
    p.add_argument("--threshold", type=probability, default=0.9, help="tau of the threshold policy")
    p.add_argument("--factor", type=positive_float, default=1.0, help="f of the factor policy")
    p.add_argument("--batch", type=nonnegative_int, default=8, help="batch size of the batched row (0: none)")
    p.add_argument("--sprint", type=probability, default=None, metavar="KEEP",
                   help="add a SPRINT row keeping this fraction of the prompt's cache")
    p.add_argument("--graphs", action="store_true",
                   help="--shape: also time whole generations with block steps at bucket shapes, CUDA graphs on a GPU")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="add the fast row on weight-only int8 linears (CPU): tokens/s and exact-match change; "
                        "with --shape: whole generations int8 against float")
    p.add_argument("--threads", type=nonnegative_int, default=1,
                   help="torch CPU threads (default 1: tiny models run fastest and steadiest on one; "
                        "0: torch's default)")
    p.add_argument("--serve", action="store_true",
                   help="benchmark the HTTP server instead: requests/s and tokens/s at 1, 4, 8, 16 and 32 clients")
    p.add_argument("--shape", default=None, metavar="PRESET",
                   help="time the forward kinds of a named shape (e.g. llada-60m, llada-8b) against their ceiling")
    p.add_argument("--random-weights", action="store_true", help="--shape: build the model with random weights")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="--shape: weight dtype")
    p.add_argument("--batch-sizes", type=positive_ints, default=[1], metavar="LIST", help="--shape: batch sizes, e.g. 1,8")
    p.add_argument("--prompt-length", type=positive_int, default=64, help="--shape: prompt tokens")
    p.add_argument("--gen-length", type=positive_int, default=256, help="--shape: answer tokens")
    p.add_argument("--block-length", type=positive_int, default=32, help="--shape: block length")
    p.add_argument("--steps", type=positive_int, default=8, help="--shape: denoising steps per block (whole generations, cost growth)")
    p.add_argument("--repeats", type=positive_int, default=5, help="--shape: timed repetitions (the median is kept)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="--shape: wall-clock time, or the thread's CPU time (steadier on a shared machine; "
                        "one thread on the CPU only)")
    p.add_argument("--gen-lengths", type=positive_ints, default=None, metavar="LIST",
                   help="--shape: ms per generated token for cache none/exact/approx at these answer lengths")
    p.add_argument("--prompt-lengths", type=positive_ints, default=[64], metavar="LIST", help="--shape: prompt lengths of --gen-lengths")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--sweep", type=sweep, default=None, metavar="KEY=V1,V2,...",
                   help="instead of the policy x cache grid, one fast threshold row per value of threshold "
                        "or block_length (e.g. threshold=0.5,0.7,0.9,0.95,0.99), interleaved with the reference")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="with --sweep: draw accuracy against tokens/s (e.g. tradeoff.png)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=run)


def sweep(text: str) -> tuple[str, tuple]:
    """`threshold=0.5,0.9` -> ("threshold", (0.5, 0.9)); `block_length=8,16,32` -> integers."""
    key, _, values = text.partition("=")
    key = key.strip().replace("-", "_")
    if key not in ("threshold", "block_length") or not values.strip():
        raise argparse.ArgumentTypeError(f"must be threshold=V1,V2,... or block_length=V1,V2,..., got {text!r}")
    kind = probability if key == "threshold" else positive_int
    return key, tuple(kind(v.strip()) for v in values.split(",") if v.strip())


def run(args) -> int:
    import torch

    from .. import systems
    from ..eval.bench import BenchSettings, format_table, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.systems:
        return run_systems(args)
    if args.shape:
        return run_shape(args)
    if not args.model:
        raise ValueError("--model is required (or --systems lladao,uni)")
    loaded = systems.open(args.model, device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise ValueError(f"{args.model} ships no tokenizer.json: bench needs the model's tokenizer")
    if args.serve:
        return run_serve(model, tokenizer, args)
    if args.plot and not args.sweep:
        raise ValueError("--plot draws a sweep: add --sweep threshold=... or --sweep block_length=...")
    settings = BenchSettings(n=args.n, max_new_tokens=args.max_new_tokens, threshold=args.threshold,
                             factor=args.factor, batch=args.batch, sprint_keep=args.sprint,
                             quantize=args.quantize, sweep=args.sweep)
    rows = run_bench(model, tokenizer, settings, progress=lambda m: print(m, file=sys.stderr))
    print(f"model {args.model}, {args.n} held-out examples, max_new_tokens {args.max_new_tokens}, "
          f"block {model.config.block_size}, {torch.get_num_threads()} threads, device {args.device}")
    print(format_table(rows))
    if args.json:
        meta = {"model": str(args.model), "n": args.n, "max_new_tokens": args.max_new_tokens,
                "block_length": model.config.block_size, "threads": torch.get_num_threads(), "device": args.device}
        write_json(args.json, {"rows": rows, **meta})
    if args.plot:
        from ..eval.plots import tradeoff_png

        tradeoff_png(rows, args.sweep[0], args.plot, title=f"{Path(args.model).name}: accuracy against speed, "
                                                           f"{args.n} held-out examples")
        print(args.plot)
    return 0


def run_serve(model, tokenizer, args) -> int:
    from ..eval.serve_bench import bench_serve, format_table

    rows = bench_serve(model, tokenizer, requests_per_level=args.n, max_tokens=args.max_new_tokens)
    print(f"server on loopback, model {args.model}, {args.n} requests per level, max_tokens {args.max_new_tokens}")
    print(format_table(rows))
    if args.json:
        write_json(args.json, {"serve_rows": rows, "model": str(args.model)})
    return 0


def run_systems(args) -> int:
    import torch

    from ..eval.systems import SYSTEMS, compare_systems, format_systems

    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise ValueError(f"--systems: unknown system(s) {unknown}; valid systems: {', '.join(SYSTEMS)}")
    models = {"lladao": args.lladao_model, "uni": args.uni_model}
    rows = compare_systems(names, models, n=args.n, per_digit=args.per_digit,
                           progress=lambda m: print(m, file=sys.stderr))
    print(f"held-out digits 1500-1796: {args.n} questions, {10 * args.per_digit} drawings per system, "
          f"{torch.get_num_threads()} thread(s)")
    print(format_systems(rows))
    if args.json:
        write_json(args.json, {"systems": rows})
    return 0



def run_shape(args) -> int:
    import torch

    from ..eval.generation import (bench_generation, bench_graphs, bench_int8, format_generation, format_graphs,
                                   format_int8)
    from ..eval.shapes import bench_shapes, cost_growth, format_growth, format_kinds, random_model, set_clock

    if not args.random_weights:
        raise ValueError("--shape builds a model of a named shape: pass --random-weights (no weights are read)")
    if args.clock == "cpu" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        raise ValueError("--clock cpu counts the calling thread only: use it on --device cpu with --threads 1")
    set_clock(args.clock)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no GPU (torch.cuda.is_available() is False)")
    model = random_model(args.shape, args.device, getattr(torch, args.dtype))
    cfg = model.config
    print(f"shape {args.shape} ({model.num_parameters() / 1e6:.1f} M parameters, random weights), "
          f"{args.dtype} on {args.device}, {torch.get_num_threads()} thread(s); prompt {args.prompt_length}, "
          f"answer {args.gen_length}, block {args.block_length}; {args.clock} clock")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    out = {"shape": args.shape, "dtype": args.dtype, "device": args.device, "threads": torch.get_num_threads(),
           "clock": args.clock, "config": cfg.to_dict()}
    if args.gen_lengths:
        rows = cost_growth(model, args.gen_lengths, args.prompt_lengths,
                           args.block_length, args.steps, max(1, args.repeats // 2), log)
        print(format_growth(rows))
        out["growth"] = rows
    else:
        result = bench_shapes(model, args.batch_sizes, args.prompt_length, args.gen_length,
                              args.block_length, args.repeats, log)
        print(format_kinds(result))
        out.update(result)
        sections = [("generation", f"whole generations ({args.steps} steps per block, fixed steps, no EOS stop):",
                     bench_generation, format_generation, (model,))]
        if args.graphs:
            sections.append(("graphs", "block steps at bucket shapes (graphs=True) against eager, whole generations:",
                             bench_graphs, format_graphs, (model,)))
        if args.quantize == "int8":
            from ..nn.quantize import quantize_int8

            sections.append(("int8", "weight-only int8 against float, whole generations:", bench_int8, format_int8,
                             (model, quantize_int8(model))))
        for key, title, bench, table, models in sections:
            rows = [row for b in args.batch_sizes
                    for row in bench(*models, b, args.prompt_length, args.gen_length, args.block_length,
                                     args.steps, max(1, args.repeats // 2), log)]
            print(f"\n{title}")
            print(table(rows))
            out[key] = rows
    if args.json:
        write_json(args.json, out)
    return 0
