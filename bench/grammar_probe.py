"""Where llama.cpp's grammar code breaks: a ladder of values per JSON-schema shape through llama-cpp-python's
converter and llama.cpp's sampler, each probe in a capped worker process (testkit/grammar_probe.py). The table
behind serve/chat/schema_limits' limits.

    python -m bench.grammar_probe VOCAB.gguf            # the table of shapes (ladder of values per shape)
    python -m bench.grammar_probe VOCAB.gguf --json     # the same as JSON lines
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testkit.grammar_probe import MEMORY_LIMIT, Outcome, Prober

# ---------------------------------------------------------------- the shapes measured


def _nested(depth: int, leaf: dict[str, Any], wrap: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    s = leaf
    for _ in range(depth):
        s = wrap(s)
    return s


SHAPES: dict[str, Callable[[int], Any]] = {
    "pattern a{1,n}": lambda n: {"type": "string", "pattern": f"^a{{1,{n}}}$"},
    "pattern [a-z]{0,n}": lambda n: {"type": "string", "pattern": f"^[a-z]{{0,{n}}}$"},
    "pattern a{n} (exact)": lambda n: {"type": "string", "pattern": f"^a{{{n}}}$"},
    "pattern [a-z]{n} (exact)": lambda n: {"type": "string", "pattern": f"^[a-z]{{{n}}}$"},
    "pattern (a{1,10}){1,n}": lambda n: {"type": "string", "pattern": f"^(a{{1,10}}){{1,{n}}}$"},
    "pattern (a{1,n}){1,n}": lambda n: {"type": "string", "pattern": f"^(a{{1,{n}}}){{1,{n}}}$"},
    "pattern ((a{1,n}){1,n}){1,n}": lambda n: {"type": "string", "pattern": f"^((a{{1,{n}}}){{1,{n}}}){{1,{n}}}$"},
    "pattern (a*)*... n deep": lambda n: {"type": "string", "pattern": "^" + "(" * n + "a*" + ")*" * n + "$"},
    "enum n codes (AA..)": lambda n: {
        "enum": [chr(65 + i // 26 % 26) + chr(65 + i % 26) + str(i // 676 or "") for i in range(n)]
    },
    "anyOf n of enum 16 (product)": lambda n: {"anyOf": [{"enum": [f"v{j}" for j in range(16)]} for _ in range(n)]},
    "pattern (x|y){0,n}": lambda n: {"type": "string", "pattern": f"^(x|y){{0,{n}}}$"},
    "pattern length (abc)*n": lambda n: {"type": "string", "pattern": "^" + "abc" * (n // 3) + "$"},
    "maxLength n": lambda n: {"type": "string", "maxLength": n},
    "minLength n": lambda n: {"type": "string", "minLength": n},
    "maxItems n": lambda n: {"type": "array", "items": {"type": "integer"}, "maxItems": n},
    "minItems n": lambda n: {"type": "array", "items": {"type": "integer"}, "minItems": n},
    "minItems n, maxItems n": lambda n: {"type": "array", "items": {"type": "integer"}, "minItems": n, "maxItems": n},
    "maxItems n of maxLength 100": lambda n: {
        "type": "array",
        "items": {"type": "string", "maxLength": 100},
        "maxItems": n,
    },
    "nesting depth n (arrays)": lambda n: _nested(n, {"type": "integer"}, lambda s: {"type": "array", "items": s}),
    "nesting depth n (objects)": lambda n: _nested(
        n, {"type": "integer"}, lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]}
    ),
    "properties n (required)": lambda n: {
        "type": "object",
        "properties": {f"p{i}": {"type": "integer"} for i in range(n)},
        "required": [f"p{i}" for i in range(n)],
    },
    "properties n (optional)": lambda n: {
        "type": "object",
        "properties": {f"p{i}": {"type": "integer"} for i in range(n)},
    },
    "enum n strings": lambda n: {"enum": [f"value-{i}" for i in range(n)]},
    "anyOf n": lambda n: {
        "anyOf": [
            {"type": "object", "properties": {f"k{i}": {"type": "integer"}}, "required": [f"k{i}"]} for i in range(n)
        ]
    },
    "minProperties/maxProperties n": lambda n: {"type": "object", "minProperties": n, "maxProperties": n},
    "integer minimum/maximum +-n": lambda n: {"type": "integer", "minimum": -n, "maximum": n},
}

LADDER = (1, 10, 100, 500, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000, 100_000, 10_000_000, 1_000_000_000)
SHORT = (1, 10, 30, 50, 100, 150, 200, 300, 500, 1000, 3000)  # shapes whose schema text grows with n
LADDERS = {
    "nesting depth n (arrays)": SHORT,
    "nesting depth n (objects)": SHORT,
    "pattern length (abc)*n": LADDER[:-1],
    "pattern (a{1,n}){1,n}": SHORT,
    "pattern ((a{1,n}){1,n}){1,n}": (2, 5, 10, 20, 50, 100, 300),
    "pattern (a*)*... n deep": (1, 2, 5, 10, 20, 50, 100, 300),
    "enum n codes (AA..)": (16, 32, 64, 128, 256, 512, 1024),
    "anyOf n of enum 16 (product)": (1, 2, 4, 8, 16, 32, 64),
    "properties n (required)": LADDER[:-3],
    "properties n (optional)": LADDER[:-3],
    "enum n strings": (8, 16, 32, 64, 128, 256, 512, 1000, 1500, 10_000),
    "anyOf n": LADDER[:-3],
}


def _ladder(prober: Prober, shape: str, make: Callable[[int], Any]) -> list[tuple[int, Outcome]]:
    rows = []
    for n in LADDERS.get(shape, LADDER):
        try:
            out = prober.probe(make(n))
        except RecursionError:  # json.dumps of the schema, here in the parent
            out = Outcome("convert_error", "RecursionError in json.dumps (no converter reached)")
        rows.append((n, out))
        if out.status in ("crash", "hang", "oom") and n >= 10_000_000:
            break
    return rows


def bisect(prober: Prober, make: Callable[[int], Any], lo: int, hi: int) -> tuple[int, Outcome]:
    """The largest n in [lo, hi] whose probe is fast (lo assumed good), and the outcome at n + 1."""
    bad = prober.probe(make(hi))
    if bad.fast:
        return hi, bad
    while hi - lo > 1:
        mid = (lo + hi) // 2
        out = prober.probe(make(mid), tokens=3)
        if out.fast:
            lo = mid
        else:
            hi, bad = mid, out
    return lo, bad


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    vocab = Path(argv[0])
    as_json = "--json" in argv
    if "--bisect" in argv:  # --bisect SHAPE LO HI: the largest n in [LO, HI] that is ok and fast, and what HI+ does
        i = argv.index("--bisect")
        shape, lo, hi = argv[i + 1], int(argv[i + 2]), int(argv[i + 3])
        with Prober(vocab) as prober:
            good, first_bad = bisect(prober, SHAPES[shape], lo, hi)
            print(f"{shape}: largest ok {good}; {good + 1}: {first_bad}")
        return 0
    only = [a for a in argv[1:] if not a.startswith("--")]
    with Prober(vocab) as prober:
        prober._start()
        print(f"# {vocab.name}: {prober.n_vocab} tokens; RLIMIT_AS {MEMORY_LIMIT >> 20} MiB", flush=True)
        for shape, make in SHAPES.items():
            if only and not any(o in shape for o in only):
                continue
            for n, out in _ladder(prober, shape, make):
                if as_json:
                    print(json.dumps({"shape": shape, "n": n, **asdict(out)}), flush=True)
                    continue
                print(
                    f"{shape:32} n={n:<11} {out.verdict():14} build {out.build_s * 1000:8.1f} ms  token {out.token_med_ms:6.1f}/{out.token_ms:6.1f} ms "
                    f"conv {out.convert_s * 1000:8.1f} ms  {out.gbnf_bytes:>9} B {out.rules:>6} rules nest {out.nest:>6}"
                    f"  {out.detail}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
