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
from models.demo.data import ITEMS, LEVELS, TOOL_CASES, Item, ToolCase, all_answer_cases, tools_json

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

    def __init__(self, path: Path, stop: str) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=512, n_threads=1, n_threads_batch=1, n_batch=512, verbose=False)
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


def tool_cases(gguf: Path, think: bool) -> Iterator[Case]:
    runner = GreedyGGUF(gguf, "<|im_end|>" if think else "<|return|> <|call|>")
    for case in tool_sample():
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
