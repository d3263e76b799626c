"""`omnidlm convert SRC DST --format F`: re-write a checkpoint in another published layout."""

from __future__ import annotations

from .args import nonnegative_int, positive_float


def register(sub) -> None:
    from ..formats import FORMATS

    p = sub.add_parser("convert", help="convert a checkpoint between formats (bit-exact)")
    p.add_argument("src", help="checkpoint directory to read")
    p.add_argument("dst", help="directory to write (written atomically)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="layout to write")
    p.add_argument("--shard-size-mb", type=positive_float, default=None, help="split weights into shards of this size")
    p.add_argument("--mask-id", type=nonnegative_int, default=None, help="mask token id, when the source config lacks it")
    p.add_argument("--force", action="store_true", help="write into an existing DST, replacing its checkpoint files only (other files stay)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..formats import convert

    shard = int(args.shard_size_mb * 2**20) if args.shard_size_mb else None
    overrides = {"mask_id": args.mask_id} if args.mask_id is not None else {}
    out = convert(args.src, args.dst, args.format, shard, args.force, **overrides)
    print(f"wrote {out} ({args.format})")
    return 0
