"""`omnidlm chat --model PATH`: an interactive chat in the terminal, streaming each committed block.

Commands inside the chat: `/image FILE` attaches an image to the next message (vision models),
`/draw PROMPT` draws (models with an image generator), `/reset` forgets the conversation, `/quit`.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal (streaming)")
    p.add_argument("--model", required=True, help="checkpoint directory with a tokenizer.json")
    p.add_argument("--max-tokens", type=int, default=256, help="upper bound of an answer (it stops at EOS)")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def stream_answer(engine, tokenizer, prompt_ids, max_tokens, out=sys.stdout) -> list[int]:
    """Run one request through the engine, printing text as blocks are committed; -> answer ids."""
    from ..sampling.engine import Request

    request_id = engine.add(Request(prompt_ids, max_tokens))
    shown, eos = "", engine.eos_id
    while engine.busy:
        finished = {r.id: r for r in engine.step()}
        tokens = finished[request_id].tokens if request_id in finished else engine.progress().get(request_id, [])
        text = tokenizer.decode([t for t in tokens if t != eos])
        out.write(text[len(shown):])
        out.flush()
        shown = text
        if request_id in finished:
            out.write("\n")
            return tokens
    return []


def read_lines(prompt: str = "> "):
    """Lines typed at the terminal until end of input."""
    while True:
        try:
            yield input(prompt)
        except (EOFError, KeyboardInterrupt):
            return


def run(args, lines=None, out=sys.stdout) -> int:
    from .. import load
    from ..sampling.engine import BatchEngine, SamplingConfig
    from ..sampling.policies import Threshold
    from ..sequence.tokenizer import Tokenizer

    model = load(args.model, device=args.device)
    tokenizer = Tokenizer.from_file(args.model)
    cache = "exact" if model.config.attention == "block" else "approx"
    config = SamplingConfig(max_new_tokens=args.max_tokens, cache=cache,
                            policy=Threshold(args.threshold, model.config.block_size))
    engine = BatchEngine(model, config, max_batch=1)
    messages: list[dict] = []
    out.write("omnidlm chat: type a message; /reset, /quit; /image FILE and /draw PROMPT need an omni model\n")
    for line in lines if lines is not None else read_lines():
        line = line.strip()
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            messages.clear()
            continue
        if line.startswith("/image") or line.startswith("/draw"):
            out.write(f"{line.split()[0]}: {args.model} is a text-only model\n")
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        prompt = tokenizer.encode_chat(messages)
        budget = min(args.max_tokens, model.config.max_seq_len - len(prompt))
        if budget <= 0:
            out.write(f"the conversation ({len(prompt)} tokens) fills the model's context; /reset to start over\n")
            messages.pop()
            continue
        answer = stream_answer(engine, tokenizer, prompt, budget, out)
        messages.append({"role": "assistant", "content": tokenizer.decode(answer)})
    return 0
