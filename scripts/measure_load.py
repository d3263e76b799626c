"""Write a randomly initialised preset to disk in a published format, then load it back in a fresh
process and report load time and peak host memory.

    python scripts/measure_load.py --preset llada-8b --dtype bfloat16 --format llada --dir /tmp/llada-8b

The write step builds the whole model in memory; the load step runs in a subprocess so its peak
resident memory (ru_maxrss) measures loading alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def write(args) -> None:
    import omnidlm
    from omnidlm.models.backbone import Backbone

    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    torch.set_default_dtype(dtype)  # allocate the parameters in the target dtype directly
    with torch.device("meta"):
        model = Backbone(omnidlm.preset(args.preset))
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    omnidlm.save(model, args.dir, args.format, max_shard_bytes=int(args.shard_gb * 2**30), overwrite=True)
    print(json.dumps({"step": "write", "params": model.num_parameters(), "seconds": time.perf_counter() - start}))


def load(args) -> None:
    import omnidlm

    start = time.perf_counter()
    model = omnidlm.load(args.dir, dtype=getattr(torch, args.dtype))
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(json.dumps({"step": "load", "seconds": seconds, "peak_rss_gib": peak_gib, "weights_gib": weights_gib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llada-8b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--format", default="llada")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--shard-gb", type=float, default=1.0)
    parser.add_argument("--step", choices=["both", "write", "load"], default="both")
    args = parser.parse_args()
    if args.step in ("both", "write"):
        write(args)
    if args.step == "both":
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--step", "load"], check=True)
    if args.step == "load":
        load(args)


if __name__ == "__main__":
    main()
