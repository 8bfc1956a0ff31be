"""The property that proves serve/chat/schema_limits: a schema it accepts never crashes or hangs llama.cpp.

A seeded generator makes schemas of every shape the limits cover (repetitions, patterns with nested
quantifiers, enums, unions, optional properties, nesting, $refs), with sizes drawn around and past each limit.
Each one check_schema accepts is converted by llama-cpp-python's converter, checked by check_grammar, and then
built and sampled (a few tokens over the whole vocabulary) by llama.cpp in a worker process with a memory cap
and a deadline (testkit/grammar_probe.py): a crash, a hang or running out of memory fails the test. Refused
schemas are fine. The vocabulary is llama.cpp's qwen2 one (152k tokens) from its sdist, as the tokenizer tests
get it, else the demo model's; no weights are loaded.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from serve.chat import schema_limits as sl

pytestmark = pytest.mark.slow

SEED = 27
CASES = 400
BUDGET_S = 45.0  # stop generating new cases past this (2 shared cores); every case run is still checked
DEADLINE_S = 12.0  # per case in the worker: far above the worst accepted case (~1 s a token), far below a hang


def size(rng: random.Random, limit: int) -> int:
    """Mostly small, often right at or past the limit, sometimes far past it."""
    r = rng.random()
    if r < 0.5:
        return rng.randint(0, 12)
    if r < 0.8:
        return max(0, limit + rng.randint(-3, 2))
    if r < 0.9:
        return rng.randint(0, limit)
    return limit * rng.choice((2, 10, 1000))


def gen_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 3)):
        atom = rng.choice(["a", "[a-z]", "\\d", ".", "(x|yz)", "ab"])
        if depth < 3 and rng.random() < 0.35:
            atom = "(" + gen_pattern(rng, depth + 1) + ")"
        q = rng.random()
        if q < 0.3:
            atom += rng.choice(["*", "+", "?"])
        elif q < 0.8:
            lo = min(size(rng, sl.MAX_REPEAT_MIN), 20_000) if rng.random() < 0.2 else rng.randint(0, 3)
            span = size(rng, sl.MAX_REPEAT_SPAN) if depth == 0 else rng.choice((2, 5, 10, 100, 300))
            atom += rng.choice([f"{{{lo},{lo + span}}}", f"{{{lo}}}", f"{{{lo},}}"])
        parts.append(atom)
    return "".join(parts)


def gen(rng: random.Random, depth: int, defs: dict[str, Any]) -> dict[str, Any]:
    kinds = ["int", "str", "pattern", "enum", "object", "array", "union", "ref", "nest"]
    kind = rng.choice(kinds if depth < 4 else kinds[:4])
    if kind == "int":
        return {"type": rng.choice(["integer", "number", "boolean", "null"])}
    if kind == "str":
        s: dict[str, Any] = {"type": "string"}
        if rng.random() < 0.7:
            s["maxLength"] = size(rng, sl.MAX_REPEAT_SPAN)
        if rng.random() < 0.4:
            s["minLength"] = min(size(rng, sl.MAX_REPEAT_MIN), s.get("maxLength", 10**9))
        return s
    if kind == "pattern":
        return {"type": "string", "pattern": "^" + gen_pattern(rng) + "$"}
    if kind == "enum":
        shared = rng.choice(["", "value-"])  # a shared prefix keeps every value alive for several tokens
        return {"enum": [f"{shared}{i}" for i in range(max(1, size(rng, sl.MAX_ENUM_VALUES)))]}
    if kind == "object":
        n = rng.choice([rng.randint(0, 6), size(rng, sl.MAX_OPTIONAL_PROPERTIES)])
        props = {f"p{i}": gen(rng, depth + 1, defs) if i < 4 else {"type": "integer"} for i in range(n)}
        required = [k for k in props if rng.random() < 0.5]
        obj: dict[str, Any] = {"type": "object", "properties": props, "required": required}
        if rng.random() < 0.3:
            obj["additionalProperties"] = rng.choice([False, True, {"type": "string"}])
        return obj
    if kind == "array":
        a: dict[str, Any] = {"type": "array", "items": gen(rng, depth + 1, defs)}
        if rng.random() < 0.7:
            a["maxItems"] = size(rng, sl.MAX_REPEAT_SPAN)
        if rng.random() < 0.4:
            a["minItems"] = min(size(rng, 50), a.get("maxItems", 10**9))
        return a
    if kind == "union":
        n = max(1, rng.choice([rng.randint(1, 4), size(rng, sl.MAX_UNION_BRANCHES)]))
        branches = [gen(rng, depth + 2, defs) for _ in range(min(n, 8))]  # repeated past 8: same cost to build
        return {rng.choice(["anyOf", "oneOf"]): [branches[j % len(branches)] for j in range(n)]}
    if kind == "ref":
        name = f"d{len(defs)}"
        defs[name] = {}  # placeholder: a $def may refer to itself
        defs[name] = gen(rng, depth + 1, defs)
        return {"$ref": f"#/$defs/{name}"}
    inner = gen(rng, depth + 1, defs)  # "nest": a deep chain around one schema
    for _ in range(rng.choice([1, 5, sl.MAX_DEPTH - depth - 2, sl.MAX_DEPTH + 1])):
        inner = rng.choice([{"type": "array", "items": inner}, {"type": "object", "properties": {"a": inner}}])
    return inner


def schemas(seed: int, n: int):
    rng = random.Random(seed)
    for i in range(n):
        defs: dict[str, Any] = {}
        schema = gen(rng, 0, defs)
        if defs:
            schema = {**schema, "$defs": defs}
        yield i, schema


@pytest.fixture(scope="module")
def vocab(request: pytest.FixtureRequest) -> Path:
    from testkit.fixtures.llama_sdist import SdistUnavailable, llama_cpp_source

    try:
        return llama_cpp_source() / "models" / "ggml-vocab-qwen2.gguf"
    except SdistUnavailable:
        return request.getfixturevalue("demo_gguf")("demo-think")


def test_accepted_schemas_neither_crash_nor_hang(vocab):
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from testkit.grammar_probe import Prober

    start = time.monotonic()
    counts = {"refused": 0, "converter": 0, "grammar": 0, "ran": 0, "null": 0}
    failures = []
    with Prober(vocab) as prober:
        for i, schema in schemas(SEED, CASES):
            if time.monotonic() - start > BUDGET_S:
                break
            try:
                sl.check_schema(schema, f"case {i}")
            except sl.SchemaTooComplex:
                counts["refused"] += 1
                continue
            try:
                gbnf = json_schema_to_gbnf(json.dumps(schema))
            except (AssertionError, ValueError, KeyError, TypeError, RecursionError, AttributeError):
                counts["converter"] += 1  # the caller's 400 for what the converter cannot express
                continue
            try:
                sl.check_grammar(gbnf, f"case {i}")
            except sl.SchemaTooComplex:
                counts["grammar"] += 1
                continue
            out = prober.probe(gbnf=gbnf, tokens=4, seed=i, timeout=DEADLINE_S)
            counts["ran"] += 1
            counts["null"] += out.status == "rejected"  # llama.cpp's own refusal: safe, the caller's 400
            if out.status not in ("ok", "rejected"):
                failures.append((i, out.status, out.detail, json.dumps(schema)[:300]))
    print(counts)
    assert not failures, failures
    assert counts["ran"] >= 15 and counts["refused"] >= 10, counts  # both sides of the limits were exercised
