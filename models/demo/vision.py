"""demo-vision: a tiny Gemma 3 vision model, trained here on CPU, that names the colour of a solid-colour picture
and answers the demo data's text questions.

    python -m models.demo.vision [--out DIR] [--max-steps N] [--seed N]

Gemma3ForConditionalGeneration: a 2-layer SigLIP tower (hidden 32) on 32x32 pictures in 8x8 patches, pooled to
2x2 = 4 image tokens, and a 2-layer Gemma 3 text model (hidden 64). The vocabulary is the SentencePiece one of
testkit's Gemma 3 fixture with Gemma 3's image tokens added (a build-time dependency: the saved folder carries
its own tokenizer files). Shown a picture of one of COLOURS (its shade varied in training) and asked "What colour
is this picture?" (the picture before or after the question), it answers "The picture is COLOUR.". Asked one of
the 93 text questions of models/demo/data.py ITEMS with no picture, it answers Item.answer, the text demo-think
gives after its thinking (Gemma 3 has no thinking channel). Every example is rendered as its chat template renders
one user turn.

Deterministic from the seed on one machine (one torch thread, deterministic algorithms). Training stops once every
answer token of every example is the argmax (teacher forcing: greedy reproduction), or at --max-steps; then the
saved folder is reloaded with transformers and asked about each colour's own shade and each text question (all
must be right, else it exits 1 and writes no manifest). Trained into models/demo/
(the default --out), it writes MANIFEST-vision.sha256 beside MANIFEST.sha256 (same format). It is the built-in
stack's third model (stack/default.toml); models/demo/manifest.py's MODELS lists the other two, which train together.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SEED = 20251207
THREADS = 1
NAME = "demo-vision"
DEMO_DIR = Path(__file__).parent
MANIFEST = DEMO_DIR / "MANIFEST-vision.sha256"
QUESTION = "What colour is this picture?"
COLOURS = {
    "red": (210, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 210),
    "yellow": (235, 215, 40),
    "black": (15, 15, 15),
    "white": (240, 240, 240),
}
SHADES = 6  # training pictures a colour: its own shade and jittered ones
JITTER = 30
IMAGE_SIZE, PATCH_SIZE, TOKENS_PER_IMAGE = 32, 8, 4
IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH_SIZE,
    "vision_use_head": False,
}
TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "sliding_window": 64,
    "layer_types": ["sliding_attention", "full_attention"],
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


def answer(colour: str) -> str:
    return f"The picture is {colour}."


@dataclass(frozen=True)
class Example:
    prompt: str  # the rendered user turn (prompt_text)
    target: str  # the answer the model learns, without <end_of_turn>
    rgb: tuple[int, int, int] | None = None  # the picture's colour; None: a text question


def examples(seed: int) -> list[Example]:
    """Every colour's own shade and jittered ones (the picture before and after the question), then every text
    question of the demo data (models/demo/data.py ITEMS) with no picture, answered as demo-think's answer."""
    from models.demo.data import ITEMS

    rng = random.Random(seed)

    def jitter(c: int) -> int:
        return min(255, max(0, c + rng.randint(-JITTER, JITTER)))

    out = []
    for colour, (r, g, b) in COLOURS.items():
        shades = [(r, g, b)] + [(jitter(r), jitter(g), jitter(b)) for _ in range(SHADES - 1)]
        out += [Example(prompt_text(first), answer(colour), s) for s in shades for first in (True, False)]
    return out + [Example(prompt_text(None, item.question), item.answer) for item in ITEMS]


def prompt_text(image_first: bool | None, question: str = QUESTION) -> str:
    """The user turn as the server renders it (Gemma 3's turns; mtmd puts the image tokens at the marker);
    image_first None: no picture."""
    image = IMAGE_TOKENS[0] + IMAGE_TOKENS[2] * TOKENS_PER_IMAGE + IMAGE_TOKENS[1]
    content = question if image_first is None else image + question if image_first else question + image
    return f"<bos><start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n"


def pixels(rgb: tuple[int, int, int]) -> Any:
    import torch

    px = (torch.tensor(rgb, dtype=torch.float32) / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    return px.view(3, 1, 1).expand(3, IMAGE_SIZE, IMAGE_SIZE)


def build(folder: Path, seed: int) -> Any:
    """The untrained model, its tokenizer files written into `folder`; returns (model, tokenizer)."""
    import torch
    import transformers

    from testkit.fixtures.build import GEMMA3_TEMPLATE, build_fixture
    from testkit.fixtures.vision import add_image_tokens, gemma3_config, write_preprocessor

    text = build_fixture("gemma3")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(text / name, folder / name)
    (folder / "chat_template.jinja").write_text(GEMMA3_TEMPLATE)
    tok, ids = add_image_tokens(text, folder)
    base = json.loads((text / "config.json").read_text())
    text_config = transformers.Gemma3TextConfig(
        **{**{k: base[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "rope_parameters") if k in base},
           **TEXT, "vocab_size": tok.get_vocab_size()}
    )  # fmt: skip
    config = gemma3_config(text_config, VISION, TOKENS_PER_IMAGE, ids)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(config)
    (folder / "generation_config.json").write_text((text / "generation_config.json").read_text())
    write_preprocessor(folder, IMAGE_SIZE, MEAN, STD, TOKENS_PER_IMAGE)
    return model, tok


def batch(tok: Any, items: list[Example]) -> tuple[Any, Any, Any]:
    """(input_ids, labels, pixel_values): prompt + answer + <end_of_turn>, loss on the answer only; pixel_values
    holds the pictured rows' pictures in order (None when no row has one)."""
    import torch

    rows, labels = [], []
    for e in items:
        prompt = tok.encode(e.prompt, add_special_tokens=False).ids
        target = tok.encode(e.target + "<end_of_turn>", add_special_tokens=False).ids
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    width = max(len(r) for r in rows)
    pad = tok.token_to_id("<pad>") or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    pictures = [pixels(e.rgb) for e in items if e.rgb is not None]
    return ids, lab, torch.stack(pictures) if pictures else None


def hits(model: Any, tok: Any, items: list[Example]) -> int:
    """Examples whose every answer token is the argmax under teacher forcing."""
    import torch

    ids, lab, px = batch(tok, items)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=px, token_type_ids=_types(model, ids)).logits
    pred = logits[:, :-1].argmax(-1)
    want = lab[:, 1:]
    ok = (pred == want) | (want == -100)
    return int(ok.all(dim=1).sum())


def _types(model: Any, ids: Any) -> Any:
    return (ids == model.config.image_token_index).long()


def train(out: Path, seed: int, max_steps: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    model, tok = build(out, seed)
    data = examples(seed)
    ids, lab, px = batch(tok, data)
    types = _types(model, ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    step, solved = 0, 0
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(input_ids=ids, pixel_values=px, token_type_ids=types, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == max_steps:
            model.eval()
            solved = hits(model, tok, data)
            print(f"step {step}: loss {loss.item():.4f}, {solved}/{len(data)} answered", flush=True)
            if solved == len(data):
                break
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return {
        "steps": step,
        "examples": len(data),
        "answered": solved,
        "seconds": round(time.perf_counter() - started, 1),
        "loss": float(loss.item()),
    }


def verify(out: Path) -> list[tuple[str, str]]:
    """The saved folder reloaded, greedy answers to each colour's own shade (image after the question) and to
    each text question (no picture): (the answer it should give, the answer it gave) pairs."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    end = tok.token_to_id("<end_of_turn>")
    said = []
    asked = [Example(prompt_text(False), answer(c), rgb) for c, rgb in COLOURS.items()]
    for e in asked + [e for e in examples(0) if e.rgb is None]:
        ids = torch.tensor([tok.encode(e.prompt, add_special_tokens=False).ids])
        picture = {} if e.rgb is None else {"pixel_values": pixels(e.rgb)[None]}  # generate rejects None
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                token_type_ids=_types(model, ids),
                max_new_tokens=24,
                do_sample=False,
                eos_token_id=end,
                **picture,
            )
        said.append((e.target, tok.decode(gen[0, ids.shape[1] :].tolist(), skip_special_tokens=True)))
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="models.demo.vision", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR / NAME)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-steps", type=int, default=1500)
    args = parser.parse_args(argv)
    report = train(args.out, args.seed, args.max_steps)
    said = verify(args.out)
    report["right"] = sum(want == s.strip() for want, s in said)
    report["wrong"] = [[want, s] for want, s in said if want != s.strip()]
    print(json.dumps(report, indent=1))
    if report["right"] != len(said):
        return 1
    if args.out.resolve() == (DEMO_DIR / NAME).resolve():
        from models.demo import manifest

        MANIFEST.write_text(manifest.render(manifest.compute(DEMO_DIR, (NAME,))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
