"""`omnidlm chat --model PATH`: an interactive chat in the terminal, streaming each committed block,
for every system the server serves (the same backends: `serve/backends.py`).

Commands inside the chat: `/image FILE` attaches an image to the next message (systems that see),
`/draw PROMPT` draws and writes `draw-N.png` in the current directory (systems that draw),
`/reset` forgets the conversation, `/quit`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .args import device, positive_int, probability


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal (streaming)")
    p.add_argument("--model", required=True, help="checkpoint directory with a tokenizer.json")
    p.add_argument("--max-tokens", type=positive_int, default=256, help="upper bound of an answer (it stops at EOS; default: 256)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="commit tokens at least this confident (default: the system's, as the server)")
    p.add_argument("--device", type=device, default="cpu", help="device to run on (default: cpu)")
    p.set_defaults(func=run)


def stream_answer(engine, decode, prompt, max_tokens, out=sys.stdout, settings=None) -> list[int]:
    """Run one request (a `serve.backends.Prompt`) through the engine, printing text as blocks are
    committed; -> answer ids."""
    from ..sampling.engine import Request
    from ..sampling.prefix import resolve

    prefix = resolve([prompt.prefix])[0]  # a deferred prefix (LLaDA-o's image question) built now
    request_id = engine.add(Request(prompt.ids, max_tokens, settings=settings, prefix=prefix))
    shown = ""
    while engine.busy:
        finished = {r.id: r for r in engine.step()}
        tokens = finished[request_id].tokens if request_id in finished else engine.progress().get(request_id, [])
        text = decode(tokens)
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


class Session:
    """One conversation: its messages, the image for the next message, the engine."""

    def __init__(self, backend, args, out):
        from ..sampling.engine import BatchEngine

        self.backend, self.args, self.out = backend, args, out
        self.messages: list[dict] = []
        self.image = None
        self.drawn = 0
        self.threshold = backend.default_threshold if args.threshold is None else args.threshold
        self.engine = BatchEngine(backend.engine_model, backend.engine_config(backend.config.block_size), max_batch=1)

    def command(self, line: str) -> None:
        """`/image FILE` or `/draw PROMPT`."""
        name, _, rest = line.partition(" ")
        needs = {"/image": "see", "/draw": "draw"}[name]
        if needs not in self.backend.capabilities:
            kind = "a text-only model" if self.backend.capabilities == ("text",) else f"a model that cannot {needs}"
            self.out.write(f"{name}: {self.args.model} is {kind}\n")
        elif name == "/image":
            from .ask import read_image

            self.image = read_image(rest.strip(), mode=self.backend.image_mode)
            self.out.write(f"attached {rest.strip()} to the next message\n")
        else:
            self.draw(rest.strip())

    def draw(self, prompt: str) -> None:
        from PIL import Image

        image = self.backend.draw(prompt, 1, self.drawn, None, None)[0]
        self.drawn += 1
        path = Path(f"draw-{self.drawn}.png")
        Image.fromarray((image * 255).clip(0, 255).astype("uint8"), mode="L").save(path)
        self.out.write(f"drew {path}\n")

    def say(self, line: str) -> None:
        self.messages.append({"role": "user", "content": line})
        images, self.image = ([self.image] if self.image is not None else []), None
        prompt = self.backend.chat_prompt(self.messages, images)
        budget = min(self.args.max_tokens, self.backend.config.max_seq_len - prompt.length)
        if budget <= 0:
            self.out.write(f"the conversation ({prompt.length} tokens) fills the model's context; /reset to start over\n")
            self.messages.pop()
            return
        answer = stream_answer(self.engine, self.backend.decode, prompt, budget, self.out, self.row(prompt))
        self.messages.append({"role": "assistant", "content": self.backend.decode(answer)})

    def row(self, prompt):
        """The answer's row: a server request's defaults (`serve.scheduler.Settings.row`), this threshold."""
        from ..serve.scheduler import Settings

        return Settings(threshold=self.threshold, ban_ids=prompt.ban_ids).row(self.backend.config.block_size)


def run(args, lines=None, out=sys.stdout) -> int:
    from ..serve.backends import open_backend

    backend = open_backend(args.model, args.device)
    session = Session(backend, args, out)
    can = ", ".join(f"{c} FILE" if c == "/image" else f"{c} PROMPT" for c, need in (("/image", "see"), ("/draw", "draw"))
                    if need in backend.capabilities)
    out.write(f"omnidlm chat: type a message; /reset, /quit{'; ' + can if can else ''}\n")
    for line in lines if lines is not None else read_lines():
        line = line.strip()
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            session.messages.clear()
        elif line.startswith("/image") or line.startswith("/draw"):
            session.command(line)
        elif line:
            session.say(line)
    return 0
