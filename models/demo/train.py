"""Train the two built-in demo models on CPU and save them as HF checkpoints plus MANIFEST.sha256.

    python -m models.demo.train [--out DIR] [--seed N] [--only demo-think|demo-harmony] [--no-verify]

Deterministic from the seed on a given machine (fixed thread count, deterministic torch algorithms).
Both models train with their storage precision in the loop (fit.py): every weight is rounded to bf16,
and demo-harmony's experts go through MXFP4 pack/unpack (convert.mxfp4). Training stops once every
target token of every example is the argmax by a margin (teacher forcing, which is greedy
reproduction); the saved folders are then reloaded with transformers and generated from greedily.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from transformers import GptOssConfig, GptOssForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from models.demo import manifest
from models.demo.checkpoint import greedy_hits, load, pack_experts, save
from models.demo.data import (
    ITEMS,
    JSON_CASES,
    JSON_OPEN,
    LEVELS,
    SHAPE_FLOOR,
    THINK_EXTRA_CASES,
    THINK_TWO_WORD_GRID,
    TOOL_CASES,
    VARIANT_CASES,
    Level,
    ToolCase,
    all_answer_cases,
    shape_check_cases,
    smolagents_cases,
    think_shaped_extra_cases,
    tools_json,
)
from models.demo.fit import Example, Recipe, fit, margins
from models.demo.vocab import HARMONY, TEMPLATES, THINK, Flavour, render_chat, token_id, train_tokenizer

SEED = 20251125
CONTEXT = 4096  # trained positions reach ~1,900 (smolagents' prompt); rope is set for 4,096 (stack ctx_size)
THREADS = 1  # results depend on the thread count; fixed so a rerun reproduces the committed bytes.
# One thread is also the fastest here: tiny matmuls on shared cores lose more to thread sync than they gain.


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    label: str
    messages: list[dict]
    tools: list[dict] | None
    level: str | None  # harmony reasoning level; None: the template's default
    completion: str
    prefix: str = ""  # output before the completion that is not trained here (the thinking of a JSON answer)
    # steps a grammar holds: (completion token index, the pattern a token's text must match to be allowed there)
    held: tuple[tuple[int, re.Pattern[str]], ...] = ()


def render_prompt(tok, conv: Conversation) -> str:
    kwargs = {} if conv.level is None else {"reasoning_effort": conv.level}
    return tok.apply_chat_template(
        conv.messages, tools=conv.tools, tokenize=False, add_generation_prompt=True, **kwargs
    )


def conversations(flavour: Flavour, smolagents: bool = False) -> list[Conversation]:
    """Every training example of a flavour: the questions, then the tool round trips."""
    if flavour is THINK:
        out = [
            Conversation(
                item.question,
                [{"role": "user", "content": item.question}],
                None,
                None,
                item.think_completion() + THINK.eos,
            )
            for item in ITEMS
        ]
    else:
        out = [
            Conversation(
                f"{item.question} [{level}]",
                [{"role": "user", "content": item.question}],
                None,
                level,
                item.harmony_completion(level),
            )
            for item in ITEMS
            for level in LEVELS
        ]
    out += json_conversations(flavour)
    # demo-think's hardest answers (two-word cities) also in library shapes: the JSON stage moved it to 891/900 shape
    # checks without them (README)
    think_extra = THINK_EXTRA_CASES + think_shaped_extra_cases() + THINK_TWO_WORD_GRID
    cases = TOOL_CASES + (think_extra if flavour is THINK else ()) + VARIANT_CASES
    if smolagents:  # the second stage (README): smolagents' conversation
        cases += smolagents_cases()
    return out + [tool_conversation(flavour, case) for case in cases]


def json_conversations(flavour: Flavour) -> list[Conversation]:
    """The answers as JSON objects (data.JSON_CASES): after the usual thinking, from the answer's first token on,
    which the grammar holds to JSON_OPEN. The client matrix's shape (a capital's country and city) also at every
    harmony level, and once more from a lone `{` (the grammar lets a sampled answer start with it too)."""
    out = []
    for case in JSON_CASES:
        item, text, both = case.item, case.text(), case.keys == ("country", "city")
        levels: tuple[str | None, ...] = (None,) if flavour is THINK else LEVELS if both else ("medium",)
        for level in levels:
            if flavour is THINK:
                prefix, end = item.think_prefix(), THINK.eos
            else:
                prefix, end = item.harmony_prefix(cast(Level, level)), HARMONY.eos
            label = f"json {'+'.join(case.keys)}{f' [{level}]' if level else ''}: {item.question}"
            messages = [{"role": "user", "content": item.question}]
            # the first key, which only the schema names: held to the tokens that begin it (`{"` is one token)
            key = ((1, literal_prefix(case.keys[0] + '"')),)
            out.append(Conversation(label, messages, None, level, text + end, prefix, ((0, JSON_OPEN), *key)))
            if both and level in (None, "medium"):
                rest = ((0, FROM_BRACE), *key)
                out.append(Conversation(label + " from {", messages, None, level, text[1:] + end, prefix + "{", rest))
    return out


FROM_BRACE = re.compile(r' ?"')  # what a schema grammar lets follow a lone `{` (an object's first key opens)


def literal_prefix(literal: str) -> re.Pattern[str]:
    """Token texts a grammar allows where it must write `literal`: its non-empty prefixes."""
    return re.compile("|".join(re.escape(literal[:n]) for n in range(1, len(literal) + 1)))


def tool_conversation(flavour: Flavour, case: ToolCase, prefix: str = "") -> Conversation:
    label = f"{prefix}tools {len(case.tools)} {case.shape}{' +system' if case.system else ''}: {case.city}"
    label += f" <- {case.result}" if case.result else ""
    completion = case.think_completion() + THINK.eos if flavour is THINK else case.harmony_completion()
    return Conversation(label, case.messages, tools_json(case.tools), None, completion)


def tokenizer_corpus(flavour: Flavour, smolagents: bool = False) -> list[str]:
    """The texts the BPE learns from: rendered prompts and completions with the marker tokens cut out."""
    markers = re.compile("|".join(re.escape(t) for t in flavour.special + flavour.plain_added))
    texts = []
    for conv in conversations(flavour, smolagents):
        variables: dict[str, object] = {"reasoning_effort": conv.level} if conv.level else {}
        if conv.tools:
            variables["tools"] = conv.tools
        rendered = render_chat(flavour, conv.messages, add_generation_prompt=True, **variables)
        texts.append(rendered + conv.prefix + conv.completion)
    return [piece for text in texts for piece in markers.split(text) if piece]


def encode(tok, flavour: Flavour, convs: list[Conversation] | None = None) -> list[Example]:
    examples = []
    texts: list[str] = []
    for conv in convs if convs is not None else conversations(flavour):
        prompt = tok(render_prompt(tok, conv), add_special_tokens=False)["input_ids"]
        if conv.prefix:  # tokenized apart, as the completion: the model wrote it, its own tokens
            prompt += tok(conv.prefix, add_special_tokens=False)["input_ids"]
        target = tok(conv.completion, add_special_tokens=False)["input_ids"]
        held: list[tuple[int, tuple[int, ...]]] = []
        for k, pattern in conv.held:
            texts = texts or [tok.decode([i]) for i in range(len(tok))]
            held.append((k, tuple(i for i, t in enumerate(texts) if pattern.fullmatch(t))))
            assert target[k] in held[-1][1], f"{conv.label}: token {k} is not one the grammar allows"
        examples.append(Example(prompt, target, conv.label, tuple(held)))
    return examples


def trained_answers(flavour: Flavour) -> set[tuple[str, int, str | None]]:
    """The grid answers a flavour trains on, as (city, tool count, result)."""
    extra = THINK_EXTRA_CASES + THINK_TWO_WORD_GRID if flavour is THINK else ()
    return {(c.city, len(c.tools), c.result) for c in TOOL_CASES + extra}


def forced_ok(model, tok, flavour: Flavour, convs: list[Conversation]) -> list[bool]:
    """Teacher-forced greedy check: whether every target token of each conversation is the argmax."""
    examples = encode(tok, flavour, convs)
    gaps = margins(model, examples, tok.convert_tokens_to_ids(flavour.pad), 64).tolist()
    ok, at = [], 0
    for e in examples:
        ok.append(all(g > 0 for g in gaps[at : at + len(e.completion)]))
        at += len(e.completion)
    return ok


def forced_hits(model, tok, flavour: Flavour, convs: list[Conversation]) -> tuple[int, list[str]]:
    """How many conversations the model gets right (forced_ok), and the labels of those it misses."""
    ok = forced_ok(model, tok, flavour, convs)
    return sum(ok), [c.label for c, hit in zip(convs, ok, strict=True) if not hit]


def unseen_hits(folder: Path, tok, flavour: Flavour, smolagents: bool) -> dict[str, object]:
    """The saved model on every library's tool shape (every call, answers across the grid, smolagents' conversation)
    and on the whole answer grid, the answers it was never trained on counted apart: teacher-forced greedy checks."""
    model = load(folder)
    shapes = [tool_conversation(flavour, c, "shape ") for c in shape_check_cases(SHAPE_EVERY, smolagents)]
    shape_hits, shape_misses = forced_hits(model, tok, flavour, shapes)
    # the whole answer grid (10,800), trained or not, in one pass; the unseen answers are those it did not train
    cases = all_answer_cases()
    grid = [tool_conversation(flavour, c, "grid ") for c in cases]
    grid_ok = forced_ok(model, tok, flavour, grid)
    trained = trained_answers(flavour)
    unseen = [hit for c, hit in zip(cases, grid_ok, strict=True) if (c.city, len(c.tools), c.result) not in trained]
    return {
        "unseen_tool_answers": len(unseen),
        "unseen_hits": sum(unseen),
        "grid_answers": len(grid),  # every one must be right
        "grid_hits": sum(grid_ok),
        "first_grid_misses": [c.label for c, hit in zip(grid, grid_ok, strict=True) if not hit][:10],
        "shape_checks": len(shapes),
        "shape_hits": shape_hits,
        "first_shape_misses": shape_misses[:10],
    }


# --- models -------------------------------------------------------------------------------------


def think_model(tok) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=CONTEXT,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids(THINK.eos),
        pad_token_id=tok.convert_tokens_to_ids(THINK.pad),
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(config)


def harmony_model(tok) -> GptOssForCausalLM:
    ids = tok.convert_tokens_to_ids
    # gpt-oss's own rope: yarn stretched 32x from 4096 positions
    rope = {
        "rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "truncate": False, "original_max_position_embeddings": 4096,
    }  # fmt: skip
    config = GptOssConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        sliding_window=48,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=CONTEXT,
        rope_parameters=rope,
        tie_word_embeddings=False,
        eos_token_id=ids(HARMONY.eos),
        pad_token_id=ids(HARMONY.pad),
        bos_token_id=ids(HARMONY.bos),
    )
    return GptOssForCausalLM(config)


THINK_RECIPE = Recipe(steps=6000, batch=16, lr=3e-3, margin=3.0, check_every=200)
HARMONY_RECIPE = Recipe(steps=6000, batch=24, lr=3e-3, margin=3.0, check_every=200)
SHAPE_EVERY = 20  # the shape checks take every 20th grid answer in each library shape


# --- driver -------------------------------------------------------------------------------------


def build(
    name: str,
    out: Path,
    seed: int,
    verify: bool,
    log: Callable[[str], None],
    max_steps: int | None = None,
    init: Path | None = None,
    smolagents: bool = False,
) -> dict[str, object]:
    torch.manual_seed(seed)
    flavour, make, recipe = {
        "demo-think": (THINK, think_model, THINK_RECIPE),
        "demo-harmony": (HARMONY, harmony_model, HARMONY_RECIPE),
    }[name]
    started = time.perf_counter()
    if init is None:
        tok = train_tokenizer(flavour, tokenizer_corpus(flavour, smolagents), vocab_size=4096)
        model = make(tok)
    else:  # fine-tune an earlier model: its tokenizer and weights, today's template and data
        tok = PreTrainedTokenizerFast.from_pretrained(init / name)
        tok.chat_template = (TEMPLATES / flavour.template).read_text()
        model = load(init / name)
        model.config.max_position_embeddings = CONTEXT
    tok.model_max_length = CONTEXT
    examples = encode(tok, flavour, conversations(flavour, smolagents))
    if flavour is HARMONY:
        model.set_experts_implementation("eager")  # transformers' default grouped_mm is far slower on CPU
    params = sum(p.numel() for p in model.parameters())
    log(f"{name}: vocab {len(tok)}, {params:,} parameters, {len(examples)} examples")
    if init is not None:  # a fine-tune: start on what the model misses, at a third of the rate
        recipe = dataclasses.replace(recipe, check_first=True, lr=recipe.lr / 3, steps=3000, check_every=100)
    if max_steps:
        recipe = dataclasses.replace(recipe, steps=min(recipe.steps, max_steps))
    steps = fit(model, examples, token_id(tok, flavour.pad), recipe, seed, log)
    seconds = time.perf_counter() - started
    folder = out / name
    stop = [token_id(tok, flavour.eos)]
    if flavour is HARMONY:
        stop += [token_id(tok, t) for t in ("<|call|>", "<|endoftext|>")]
    save(model, tok, folder, stop)
    if flavour is HARMONY:
        pack_experts(folder)
    size = sum(p.stat().st_size for p in folder.iterdir())
    report: dict[str, object] = {"params": params, "bytes": size, "steps": steps, "train_s": round(seconds, 1)}
    if verify:
        hits, misses = greedy_hits(folder, examples, stop)
        report.update(greedy_hits=hits, examples=len(examples), misses=len(misses), first_misses=misses[:10])
        report.update(unseen_hits(folder, tok, flavour, smolagents))
    log(f"{name}: {json.dumps(report)}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=manifest.DEMO_DIR, help="folder that receives both models")
    parser.add_argument("--seed", type=int, default=SEED, help="seeds weights and batch order (default %(default)s)")
    parser.add_argument("--only", choices=manifest.MODELS, help="retrain one model (the manifest covers both)")
    parser.add_argument("--no-verify", action="store_true", help="skip the greedy check in transformers")
    parser.add_argument("--max-steps", type=int, help="stop training after N steps (a smoke run of the whole script)")
    parser.add_argument(
        "--smolagents",
        action="store_true",
        help="the second stage: also train smolagents' conversation (its ~1,970-token prompt)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="fine-tune the models in this folder (their tokenizers and weights) instead of new ones",
    )
    args = parser.parse_args(argv)
    others = [n for n in manifest.MODELS if n != args.only and not (args.out / n).is_dir()] if args.only else []
    if others:  # the manifest covers both models, so the other one must already be there
        parser.error(f"--only {args.only}: {args.out / others[0]} is missing; train both first")
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    names = [args.only] if args.only else list(manifest.MODELS)
    reports = {
        name: build(name, args.out, args.seed, not args.no_verify, print, args.max_steps, args.init, args.smolagents)
        for name in names
    }
    print(f"wrote {manifest.write(args.out)}")
    failed = [
        n
        for n, r in reports.items()
        if r.get("misses")
        or r.get("unseen_hits") != r.get("unseen_tool_answers")
        or r.get("grid_hits") != r.get("grid_answers")
        or cast(int, r.get("shape_hits", 0)) < SHAPE_FLOOR * cast(int, r.get("shape_checks", 0))
    ]
    if failed:
        print(f"greedy check failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
