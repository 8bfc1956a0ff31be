"""The committed demo checkpoints: the manifest holds, the files look like their families' real
checkpoints, and converted to GGUF they reproduce their training set greedily through llama.cpp.

The prompt is rendered with the GGUF's own chat template (plain jinja2) and completed token by token
with llama-cpp-python on CPU, so template, tokenizer, weights and MXFP4 experts all go through the
path `serve` uses. The expected texts come from models/demo/data.py, the table the models learned."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest
from safetensors import safe_open

from models.demo import manifest
from models.demo.data import (
    ITEMS,
    LEVELS,
    SHAPE_FLOOR,
    TOOL_CASES,
    VARIANT_CASES,
    Item,
    ToolCase,
    all_answer_cases,
    shape_check_cases,
    smolagents_cases,
    tools_json,
)
from tests.serve.api_stack import BUILT_IN_CTX

REQUIRED_FILES = {
    "config.json", "generation_config.json", "model.safetensors",
    "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
}  # fmt: skip
MIN_HIT_RATE = 0.95
ANALYSIS = re.compile(r"<\|channel\|>analysis<\|message\|>(.*?)<\|end\|>", re.S)


def test_manifest_matches_the_files() -> None:
    assert manifest.read() == manifest.compute()


@pytest.mark.parametrize("name", manifest.MODELS)
def test_checkpoint_has_its_files_and_stays_small(name: str) -> None:
    folder = manifest.DEMO_DIR / name
    assert {p.name for p in folder.iterdir()} >= REQUIRED_FILES
    assert sum(p.stat().st_size for p in folder.iterdir()) < 4_000_000


def test_harmony_experts_are_stored_as_mxfp4() -> None:
    folder = manifest.DEMO_DIR / "demo-harmony"
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    with safe_open(folder / "model.safetensors", "pt") as f:
        names = set(f.keys())
        experts = {n for n in names if ".mlp.experts." in n}
        assert experts, "no expert tensors"
        assert not {n for n in experts if n.endswith(("gate_up_proj", "down_proj"))}, "unpacked experts"
        for layer in range(config["num_hidden_layers"]):
            for proj in ("gate_up_proj", "down_proj"):
                blocks = f.get_tensor(f"model.layers.{layer}.mlp.experts.{proj}_blocks")
                scales = f.get_tensor(f"model.layers.{layer}.mlp.experts.{proj}_scales")
                assert str(blocks.dtype) == str(scales.dtype) == "torch.uint8"
                assert blocks.shape[-1] == 16 and blocks.shape[:-1] == scales.shape
    assert {"sliding_attention", "full_attention"} == set(config["layer_types"])


# --- greedy through llama.cpp ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    item: Item | ToolCase
    level: str | None  # harmony reasoning level; None for demo-think
    expected: str
    got: str

    @property
    def hit(self) -> bool:
        return self.got == self.expected


class GreedyGGUF:
    """One GGUF on CPU: renders its embedded chat template and completes greedily up to a stop token."""

    def __init__(self, path: Path, stop: str, n_ctx: int = 512) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1, n_batch=512, verbose=False)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)  # transformers' filter
        self.template = env.from_string(self.llm.metadata["tokenizer.chat_template"])
        self.stops = [self.llm.tokenize(s.encode(), add_bos=False, special=True)[0] for s in stop.split()]
        self.stop, self.stop_text = self.stops[0], stop.split()[0]

    def complete(self, messages: list[dict], limit: int, **variables: object) -> str:
        prompt = self.template.render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token="", **variables
        )
        tokens = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        self.llm.reset()  # no KV reuse between prompts: each answer stands alone
        out: list[int] = []
        for token in self.llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            out.append(token)
            if token in self.stops or len(out) >= limit:
                break
        return self.llm.detokenize(out, special=True).decode("utf-8", errors="replace")


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def think_cases(gguf: Path) -> Iterator[Case]:
    runner = GreedyGGUF(gguf, "<|im_end|>")
    for item in ITEMS:
        expected = item.think_completion() + runner.stop_text
        got = runner.complete([{"role": "user", "content": item.question}], limit=len(expected))
        yield Case(item, None, expected, got)


def harmony_cases(gguf: Path) -> Iterator[Case]:
    runner = GreedyGGUF(gguf, "<|return|>")
    for item in ITEMS:
        for level in LEVELS:
            expected = item.harmony_completion(level)
            messages = [{"role": "user", "content": item.question}]
            got = runner.complete(messages, limit=len(expected), reasoning_effort=level)
            yield Case(item, level, expected, got)


def hit_rate(cases: list[Case]) -> float:
    return sum(c.hit for c in cases) / len(cases)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[demo] {line}", end="")


def misses(cases: list[Case]) -> str:
    return "\n".join(f"{c.item} [{c.level}]: {c.got!r} != {c.expected!r}" for c in cases if not c.hit)[:3000]


def tool_sample() -> list[ToolCase]:
    """Every trained call, every 6th trained answer, every 20th answer of the whole grid (most never trained),
    and the answers that were hardest to learn: two-digit results after a two-word city."""
    calls = [c for c in TOOL_CASES if c.result is None]
    answers = [c for c in TOOL_CASES if c.result is not None][::6]
    grid = all_answer_cases()
    hard = [c for c in grid if " " in c.city and c.result and c.result.split(", ")[1] in ("21 C", "23 C")]
    return calls + answers + grid[::20] + hard


def shape_sample() -> list[ToolCase]:
    """Every library shape's call for every city (tool sets alternating), every 20th answer of the grid in each shape
    (most never trained), and the trained calls with a random shape under a system prompt."""
    shapes = shape_check_cases(20)
    calls = [c for c in shapes if c.result is None][::2]
    answers = [c for c in shapes if c.result is not None]
    return calls + answers + [c for c in VARIANT_CASES if c.system and c.result is None]


def tool_cases(gguf: Path, think: bool, sample: list[ToolCase] | None = None) -> Iterator[Case]:
    runner = GreedyGGUF(
        gguf,
        "<|im_end|>" if think else "<|return|> <|call|>",
        n_ctx=BUILT_IN_CTX["demo-think" if think else "demo-harmony"],
    )
    for case in tool_sample() if sample is None else sample:
        expected = case.think_completion() + "<|im_end|>" if think else case.harmony_completion()
        got = runner.complete(case.messages, limit=len(expected), tools=tools_json(case.tools))
        yield Case(case, None, expected, got)


@pytest.mark.slow
@pytest.mark.parametrize("name", manifest.MODELS)
def test_demo_gguf_calls_the_tool_and_answers_with_its_result(
    name: str, demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = list(tool_cases(demo_gguf(name), think=name == "demo-think"))
    for kind, picked in (
        ("calls", [c for c in cases if c.item.result is None]),
        ("answers", [c for c in cases if c.item.result is not None]),
    ):
        report(capsys, f"{name} GGUF tool {kind}: {sum(c.hit for c in picked)}/{len(picked)} = {hit_rate(picked):.1%}")
    assert hit_rate(cases) == 1.0, misses(cases)


@pytest.mark.slow
@pytest.mark.parametrize("name", manifest.MODELS)
def test_demo_gguf_calls_the_tool_in_every_library_shape(
    name: str, demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The tool as client libraries send it (titles, additionalProperties, strict, other key orders, no parameter
    description, a whole docstring), and under a system prompt: the same call and answer, through llama.cpp."""
    cases = list(tool_cases(demo_gguf(name), name == "demo-think", shape_sample()))
    for shape in sorted({c.item.shape for c in cases if isinstance(c.item, ToolCase)}):
        picked = [c for c in cases if isinstance(c.item, ToolCase) and c.item.shape == shape]
        report(capsys, f"{name} GGUF {shape}: {sum(c.hit for c in picked)}/{len(picked)} = {hit_rate(picked):.1%}")
    calls = [c for c in cases if isinstance(c.item, ToolCase) and c.item.result is None]
    assert hit_rate(calls) == 1.0, misses(calls)
    # demo-think's known misses, measured in training's own check too: one-digit results after a two-word city in
    # ollama's shape (3 of the 900 checks there); everything else must hold
    assert hit_rate(cases) >= SHAPE_FLOOR, misses(cases)


@pytest.mark.slow
@pytest.mark.parametrize("name", manifest.MODELS)
def test_demo_gguf_runs_smolagents_conversation(
    name: str, demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """smolagents' ToolCallingAgent conversation (its ~1,970-token system prompt, the task, the call echoed as text,
    the result as an observation), through llama.cpp: every city's call, and the held-out answers of the training
    check (shape_check_cases: none of them trained), each by calling final_answer with the result."""
    calls = [c for c in smolagents_cases() if c.result is None]
    held_out = [c for c in shape_check_cases(20, smolagents=True) if c.smolagents]
    cases = list(tool_cases(demo_gguf(name), name == "demo-think", calls + held_out))
    for kind, picked in (("calls", cases[: len(calls)]), ("held-out answers", cases[len(calls) :])):
        hits = sum(c.hit for c in picked)
        report(capsys, f"{name} GGUF smolagents {kind}: {hits}/{len(picked)} = {hit_rate(picked):.1%}")
    assert hit_rate(cases) == 1.0, misses(cases)


@pytest.mark.slow
def test_demo_think_gguf_reproduces_its_training_set(
    demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = list(think_cases(demo_gguf("demo-think")))
    rate = hit_rate(cases)
    report(capsys, f"demo-think GGUF greedy hit rate {sum(c.hit for c in cases)}/{len(cases)} = {rate:.1%}")
    assert rate >= MIN_HIT_RATE, misses(cases)


@pytest.mark.slow
def test_demo_harmony_gguf_reproduces_its_training_set_at_every_level(
    demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = list(harmony_cases(demo_gguf("demo-harmony")))
    for level in LEVELS:
        at_level = [c for c in cases if c.level == level]
        hits = sum(c.hit for c in at_level)
        report(
            capsys, f"demo-harmony GGUF greedy hit rate at {level}: {hits}/{len(at_level)} = {hit_rate(at_level):.1%}"
        )
    assert hit_rate(cases) >= MIN_HIT_RATE, misses(cases)
    # what the model generated, not what the table says: low analysis is shorter than high on average
    lengths = {}
    for level in ("low", "high"):
        found = [ANALYSIS.search(c.got) for c in cases if c.level == level]
        lengths[level] = sum(len(m.group(1)) if m else 0 for m in found) / len(found)
    low, high = lengths["low"], lengths["high"]
    report(capsys, f"demo-harmony mean analysis length: low {low:.0f} chars, high {high:.0f} chars")
    assert low < high


# --- positions up to the built-in context ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", manifest.MODELS)
def test_demo_gguf_agrees_with_transformers_to_the_end_of_its_context(
    name: str, demo_gguf: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Rope (demo-harmony: yarn, and its sliding window) holds to the stack's context: over a prompt that fills it,
    llama.cpp's logits at the last positions are as close to transformers' as at the first (a position mismatch
    would grow with the position) and pick the same next token."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from models.demo.checkpoint import load
    from models.demo.data import SMOLAGENTS_PROMPT

    ctx = BUILT_IN_CTX[name]
    tokenizer = AutoTokenizer.from_pretrained(manifest.DEMO_DIR / name)
    text = "\n\n".join([SMOLAGENTS_PROMPT, *(item.question for item in ITEMS)] * 4)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: ctx - 8]
    assert len(ids) > ctx - 100, "the text must fill the context"
    with torch.no_grad():
        want = load(manifest.DEMO_DIR / name)(torch.tensor([ids])).logits[0].numpy()
    llm = Llama(str(demo_gguf(name)), n_ctx=ctx, n_batch=512, logits_all=True, n_threads=1, verbose=False)
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    spread = want.max(axis=1) - want.min(axis=1)
    error = np.abs(got - want).max(axis=1) / spread
    early, late = error[:256].mean(), error[-256:].mean()
    agree = (got[-256:].argmax(axis=1) == want[-256:].argmax(axis=1)).mean()
    report(
        capsys, f"{name} at {len(ids)} positions: error {early:.4f} first 256, {late:.4f} last 256; top-1 {agree:.1%}"
    )
    assert late <= 2 * early + 0.01 and agree >= 0.95
