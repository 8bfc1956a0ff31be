"""Bounds on client JSON schemas and the GBNF made from them, checked before llama.cpp sees either.

A `response_format` json_schema or a tool's `parameters` goes through llama-cpp-python's JSON-schema converter
(`llama_cpp.llama_grammar`) into a GBNF grammar for llama.cpp's grammar sampler. Unbounded, one request can
take the whole server down: the converter writes a repetition `x{m,n}` (a pattern quantifier, `maxLength`,
`maxItems`) as m copies of x and then n-m nested optional groups `(x (x (...)?)?)?`, and llama.cpp parses
nested groups by recursion. Measured in the pinned build (0.3.36) with bench/grammar_probe.py, 151,936-token
qwen2 vocabulary, sampler built and sampled as serve/engine does (grammar first in the chain, whole vocabulary):

- nesting of groups: 1,000 optional levels build; 1,001 to ~18,700 are refused (NULL sampler: a quantified
  group holding more than 2,000 rules, llama.cpp's MAX_REPETITION_THRESHOLD); from ~18,700 on (8 MiB stack)
  llama.cpp's parser overflows the stack: SIGSEGV, the process dies (`maxItems: 30000`, `a{1,30000}`);
- copies: the converter builds them in Python (`minItems: 10**7` runs for seconds, `maxLength: 10**9` hangs
  or exhausts memory before llama.cpp is reached); a 10 MB grammar takes ~0.5 s to build, 70 MB over 8 s;
- alternatives alive at once (an enum, anyOf, optional properties) cost a full vocabulary scan each, every
  token: ~1.5-3 ms per live alternative per token (enum of 100 values sharing a prefix: 160 ms a token;
  1,000: 1.9 s; 10,000: over 7 s), and the one engine thread samples for every stream.

`check_schema(schema, where)` walks the schema (iteratively, with its own caps) and `check_grammar(gbnf, where)`
bounds the converter's output as a second line; both raise SchemaTooComplex, a ValueError whose message names
the place and the limit, for the caller's 400. No llama.cpp import: pure logic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

# Nested optional repetitions: llama.cpp refuses a quantified group of more than 2,000 rules (2 per level), so
# 1,000 levels is where it stops building (maxItems/maxLength/{0,n}: 1,000 builds, 1,001 is NULL); it segfaults
# from ~18,700 levels (stack overflow in its recursive parser). 1,000 is therefore llama.cpp's own boundary (a
# count, not a timing), 18x below the crash; a larger span would only ever get a NULL sampler.
MAX_REPEAT_SPAN = 1_000  # n - m of one repetition: maxItems - minItems, maxLength - minLength, {m,n} in a pattern
MAX_PATTERN_SPAN = 1_000  # the sum over one pattern's quantifiers: inline groups `(...)?` add their spans up
# Mandatory copies (minItems, minLength, {m} / {m,} / {m,n}): written out m times by the converter in Python.
# minItems 100,000 built in 7 ms (1.8 MB grammar), 10**7 hung the converter; 10,000 keeps any one repetition
# under ~0.5 MB of grammar text even with long rule names.
MAX_REPEAT_MIN = 10_000
# Nested quantifiers in a pattern multiply the ways a string parses: the product of the upper bounds along one
# nesting path ({m,} counts m, * and + count 1), measured by bench/grammar_probe.py:
# ((a{1,100}){1,100}){1,100} (10**6): at most 0.6 s a token, like ((a{1,300}){1,300}){1,300}: llama.cpp's
# stacks do not multiply here as they do for unions; the bound keeps such nesting from growing unmeasured.
MAX_REPEAT_PRODUCT = 1_000_000
# Variable-length repetitions (*, +, {m,}, {m,n} with n-m >= 2) in sequence split one token's text many ways,
# and llama.cpp keeps a stack per split: ^.*.*$ 21 ms a token, ^.*.*.*$ 127 ms, ^(.*)(.*)(.*)(.*)$ or
# ^(.*){0,4}$ 2.2 s, five past a 20 s deadline for 6 tokens. A repetition inside a bounded one counts once per
# copy (^(.*){0,4}$ is 4); `?` and spans of 1 do not count (^.?.?.?.?.?.?.?.?$: 10 ms).
MAX_PATTERN_VARIABLE_REPEATS = 3
# Worse, a repeated group holding a variable-length repetition: ^(.?.?.?)*$, ^(.{0,8}){3,}$, ^(.{0,16})+.?$,
# ^(x|yz){1}(.{1,})+$ each ran past a 20 s deadline for 6 tokens (every way to split the text into iterations
# is a stack). Some are cheap (^(.*)+$ 39 ms, ^([a-z0-9]+-)*[a-z0-9]+$ 24 ms, delimited by a class the inner
# part cannot match), but telling them apart needs character-set analysis: a variable repetition ({m,n} with
# n > m and n > 1, *, +, {m,}) of a group holding any variable repetition is refused; a fixed count
# ((\d{1,3}\.){3}) is not a loop.
# Pattern text: the converter walks it in Python (a 10 MB pattern: 2.4 s); real patterns are under 1 kB.
MAX_PATTERN_LENGTH = 4_096
MAX_TOTAL_PATTERN_LENGTH = 32_768

# Alternatives alive at one position cost a vocabulary scan each, every token (~1.5-3 ms each over a 152k
# vocabulary on 2 shared cores; a plain grammar's token: ~12 ms). Enum of values sharing a prefix: 100, 160 ms a
# token; 1,000, 1.9 s; 10,000, over 7 s (4 tokens past a 30 s deadline). Distinct two-letter codes: 256, 0.4 s
# for the first token. anyOf branches add up: 16 enums of 16 (256 alive), 0.36 s a token; 64 of 16, 1.7 s;
# anyOf of 2,000 objects, 2.8 s. The one engine thread samples for every stream, so each such token stalls all.
MAX_ENUM_VALUES = 256
MAX_UNION_BRANCHES = 64  # anyOf / oneOf / a list of types
# The most alternatives alive at once, counted as llama.cpp's stacks grow: a union's branches add up, an
# object's optional properties each count, an enum counts its values (Optional[Literal[256 values]]: 257).
MAX_ALTERNATIVES = 320
MAX_OPTIONAL_PROPERTIES = 128  # each an alternative after `{` and after every property (128: 0.19 s a token)
# Required properties cost text only (30,000 built in 23 ms); a bound keeps the walk and conversion small.
MAX_PROPERTIES = 1_000
MAX_LITERAL_BYTES = 65_536  # enum / const values, as JSON, over the whole schema (written into the grammar)

# The walk itself, and the converter's Python recursion (it recurses per level; RecursionError from ~300
# nested objects or ~1,000 optional properties). Rule names grow with depth: 500 nested arrays made 1.9 MB.
MAX_DEPTH = 64
MAX_NODES = 10_000  # subschemas walked (allOf components' properties are walked again, as the converter does)

# The grammar as a second line: a 10 MB grammar took ~0.5 s to build and 70 MB over 8 s; 1 MiB builds in
# milliseconds. Rules: 30,000 built in 23 ms. Group nesting: see MAX_REPEAT_SPAN (NULL past ~1,000 optional
# levels, SIGSEGV at ~18,700); 2,000 leaves room for the groups around a 1,000 span.
MAX_GRAMMAR_BYTES = 1 << 20
MAX_GRAMMAR_RULES = 20_000
MAX_GRAMMAR_NESTING = 2_000


class SchemaTooComplex(ValueError):
    """A schema or grammar over one of this module's limits; the message names where and which limit."""


def _fail(where: str, what: str, value: object, limit: int) -> SchemaTooComplex:
    return SchemaTooComplex(f"{where}: {what} {value} is over the limit of {limit}")


# ---------------------------------------------------------------------------------------------- schemas

SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> subschema
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_ONE = ("items", "additionalProperties", "not")  # a subschema (items may also be a list)
UNIONS = ("anyOf", "oneOf")


def check_schema(schema: object, where: str) -> None:
    """Raise SchemaTooComplex when the schema could make a grammar llama.cpp cannot take safely."""
    if not isinstance(schema, dict):
        return  # not a schema object: the converter reports it
    nodes = 0
    literal_bytes = 0
    pattern_chars = 0
    todo: list[tuple[Any, str, int]] = [(schema, where, 0)]  # (subschema, its path for messages, depth)
    while todo:
        node, path, depth = todo.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise _fail(where, "subschema count", f"over {MAX_NODES}", MAX_NODES)
        if depth > MAX_DEPTH:
            raise _fail(path, "nesting depth", depth, MAX_DEPTH)
        _check_branches(node, path)
        for key in ("enum", "const"):
            if key in node:
                literal_bytes += len(_dumps(node[key]))
                if literal_bytes > MAX_LITERAL_BYTES:
                    raise _fail(path, "enum/const text (bytes)", literal_bytes, MAX_LITERAL_BYTES)
        _check_bounds(node, path)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            pattern_chars += len(pattern)
            if pattern_chars > MAX_TOTAL_PATTERN_LENGTH:
                raise _fail(where, "total pattern length", pattern_chars, MAX_TOTAL_PATTERN_LENGTH)
            check_pattern(pattern, f"{path}.pattern")
        props = node.get("properties")
        if isinstance(props, dict):
            if len(props) > MAX_PROPERTIES:
                raise _fail(path, "properties", len(props), MAX_PROPERTIES)
            optional = len(props) - len(_required(node, props))
            if optional > MAX_OPTIONAL_PROPERTIES:
                raise _fail(path, "optional properties", optional, MAX_OPTIONAL_PROPERTIES)
        for child, child_path in _children(node, path, schema):
            todo.append((child, child_path, depth + 1))
    alive = _Alternatives(schema).of(schema, 0)
    if alive > MAX_ALTERNATIVES:
        raise _fail(where, "alternatives alive at once (enum values, anyOf branches, optional properties)", alive,
                    MAX_ALTERNATIVES)  # fmt: skip


def _required(node: dict[str, Any], props: dict[str, Any]) -> set[str]:
    required = node.get("required")
    if not isinstance(required, list):
        return set()
    return {name for name in required if isinstance(name, str) and name in props}


def _dumps(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _check_branches(node: dict[str, Any], path: str) -> None:
    for key in UNIONS:
        alts = node.get(key)
        if isinstance(alts, list) and len(alts) > MAX_UNION_BRANCHES:
            raise _fail(path, f"{key} branches", len(alts), MAX_UNION_BRANCHES)
    types = node.get("type")
    if isinstance(types, list) and len(types) > MAX_UNION_BRANCHES:
        raise _fail(path, "types", len(types), MAX_UNION_BRANCHES)
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM_VALUES:
        raise _fail(path, "enum values", len(enum), MAX_ENUM_VALUES)


class _Alternatives:
    """The most alternatives a schema keeps alive at one position (an upper bound on llama.cpp's stacks, as if
    every branch shared its prefix): a union sums its branches, an object takes its widest property or its
    optional properties (+1), an array its items, a $ref its target. Runs after the walk bounded the depth."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.memo: dict[int, int] = {}
        self.busy: set[int] = set()

    def of(self, node: object, depth: int) -> int:
        if not isinstance(node, dict) or depth > MAX_DEPTH * 2:
            return 1
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if key in self.busy:  # a recursive $ref: its alternatives are counted where it starts
            return 1
        self.busy.add(key)
        n = self._of(node, depth)
        self.busy.discard(key)
        self.memo[key] = n
        return n

    def _of(self, node: dict[str, Any], depth: int) -> int:
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self.of(_resolve(self.root, ref), depth + 1)
        for key in UNIONS:  # the converter reads oneOf, else anyOf
            alts = node.get(key)
            if isinstance(alts, list):
                return max(sum(self.of(a, depth + 1) for a in alts), 1)
        if isinstance(node.get("type"), list):
            return len(node["type"])
        if "const" in node:
            return 1
        if isinstance(node.get("enum"), list):
            return max(len(node["enum"]), 1)
        widest = 1
        props = node.get("properties")
        if isinstance(props, dict):
            optional = len(props) - len(_required(node, props))
            extra = node.get("additionalProperties")
            widest = optional + 1 + (1 if extra is True or isinstance(extra, dict) else 0)
            for child in props.values():
                widest = max(widest, self.of(child, depth + 1))
        if isinstance(node.get("additionalProperties"), dict):
            widest = max(widest, self.of(node["additionalProperties"], depth + 1))
        items = node.get("items", node.get("prefixItems"))
        for child in items if isinstance(items, list) else [items]:
            widest = max(widest, self.of(child, depth + 1))
        all_of = node.get("allOf")
        if isinstance(all_of, list):
            widest = max([widest, *(self.of(c, depth + 1) for c in all_of)])
        return widest


def _int(value: object) -> int | None:
    """An integer bound as the converter would read it (JSON numbers; bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return MAX_REPEAT_MIN + MAX_REPEAT_SPAN + 1  # inf: over every limit
    return int(value)


def _check_bounds(node: dict[str, Any], path: str) -> None:
    for lo_key, hi_key in (("minItems", "maxItems"), ("minLength", "maxLength")):
        lo, hi = _int(node.get(lo_key)), _int(node.get(hi_key))
        if lo is not None and lo > MAX_REPEAT_MIN:
            raise _fail(path, lo_key, lo, MAX_REPEAT_MIN)
        if hi is not None and hi - max(lo or 0, 0) > MAX_REPEAT_SPAN:
            if lo:
                raise _fail(path, f"{hi_key} - {lo_key}", hi - lo, MAX_REPEAT_SPAN)
            raise _fail(path, hi_key, hi, MAX_REPEAT_SPAN)


def _children(node: dict[str, Any], path: str, root: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    for key in SCHEMA_MAPS:
        sub = node.get(key)
        if isinstance(sub, dict):
            for name, child in sub.items():
                yield child, f"{path}.{key}.{name}"
    for key in SCHEMA_LISTS:
        sub = node.get(key)
        if isinstance(sub, list):
            for i, child in enumerate(sub):
                yield child, f"{path}.{key}[{i}]"
    for key in SCHEMA_ONE:
        sub = node.get(key)
        if isinstance(sub, dict):
            yield sub, f"{path}.{key}"
        elif isinstance(sub, list):
            for i, child in enumerate(sub):
                yield child, f"{path}.{key}[{i}]"
    # allOf: the converter copies each component's properties into this object (a $ref's target's too), and
    # visits them again under this object's name; walk them again so the node budget counts that work.
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        comps = [c for c in all_of if isinstance(c, dict)]
        comps += [cc for c in comps if isinstance(c.get("anyOf"), list) for cc in c["anyOf"] if isinstance(cc, dict)]
        for comp in comps:
            ref = comp.get("$ref")
            target = _resolve(root, ref) if isinstance(ref, str) else None
            if isinstance(target, dict) and isinstance(target.get("properties"), dict):
                for name, child in target["properties"].items():
                    yield child, f"{path}.allOf({ref}).{name}"


def _resolve(root: dict[str, Any], ref: str) -> object:
    """A local JSON pointer (`#/$defs/x`); anything else is None (the converter refuses remote refs)."""
    if not ref.startswith("#"):
        return None
    node: object = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# ---------------------------------------------------------------------------------------------- patterns


def check_pattern(pattern: str, where: str) -> None:
    """Bound one regex `pattern`: each quantifier, the sum of their spans, products along nesting, and the
    variable-length repetitions that can split one token's text many ways."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _fail(where, "pattern length", len(pattern), MAX_PATTERN_LENGTH)
    scan = _PatternScan(pattern, where)
    scan.run()
    if scan.variable > MAX_PATTERN_VARIABLE_REPEATS:
        raise _fail(
            where, "variable-length repetitions (*, +, {m,}, {m,n})", scan.variable, MAX_PATTERN_VARIABLE_REPEATS
        )


class _PatternScan:
    """One pass over a pattern. Per open group: the largest repetition product inside it, and the weight of
    its variable-length repetitions; the last item's (an atom's or a closed group's) wait for a quantifier."""

    def __init__(self, pattern: str, where: str) -> None:
        self.pattern, self.where = pattern, where
        # per open group: [largest product inside, variable weight of finished items, holds a bounded variable
        # repetition (? or {m,n} with n > m)]
        self.frames: list[list[int]] = [[1, 0, 0]]
        self.last = 1  # the last item's repetition product
        self.pending = 0  # the last item's variable weight
        self.last_bounded = 0  # the last item holds a bounded variable repetition
        self.span_total = 0
        self.variable = 0

    def _item(self, product: int = 1, weight: int = 0, bounded: int = 0) -> None:
        self.frames[-1][1] += self.pending
        self.last, self.pending, self.last_bounded = product, weight, bounded

    def run(self) -> None:
        p, i, n = self.pattern, 0, len(self.pattern)
        while i < n:
            c = p[i]
            if c == "\\":
                self._item()
                i += 2
            elif c == "[":
                self._item()
                i = _class_end(p, i)
            elif c == "(":
                self._item()
                self.frames.append([1, 0, 0])
                i += 1
            elif c == ")":
                if len(self.frames) > 1:
                    self.frames[-1][1] += self.pending
                    self.pending = 0
                    product, weight, bounded = self.frames.pop()
                    self._item(product, weight, bounded)
                    self.frames[-1][2] |= bounded
                else:
                    self._item()
                i += 1
            elif c in "*+?":
                self._repeat(0 if c != "+" else 1, 1 if c == "?" else None, c)
                i += 1
            elif c == "{":
                close = p.find("}", i)
                bounds = _quantifier(p[i + 1 : close]) if close > 0 else None
                if bounds is None:  # not a quantifier: the converter fails on it or reads a literal
                    self._item()
                    i += 1
                else:
                    self._repeat(*bounds, p[i : close + 1])
                    i = close + 1
            else:
                if c not in "|^$":
                    self._item()
                i += 1
        self.frames[0][1] += self.pending
        self.variable = self.frames[0][1]

    def _repeat(self, lo: int, hi: int | None, text: str) -> None:
        if lo > MAX_REPEAT_MIN:
            raise _fail(self.where, f"repetition {text} minimum", lo, MAX_REPEAT_MIN)
        if hi is not None:
            if hi - lo > MAX_REPEAT_SPAN:
                raise _fail(self.where, f"repetition {text} span", hi - lo, MAX_REPEAT_SPAN)
            self.span_total += hi - lo
            if self.span_total > MAX_PATTERN_SPAN:
                raise _fail(self.where, "sum of repetition spans", self.span_total, MAX_PATTERN_SPAN)
        self.last *= max(hi if hi is not None else lo, 1)
        if self.last > MAX_REPEAT_PRODUCT:
            raise _fail(self.where, "product of nested repetitions", self.last, MAX_REPEAT_PRODUCT)
        self.frames[-1][0] = max(self.frames[-1][0], self.last)
        repeats = hi is None or (hi > 1 and hi > lo)  # a loop or a chain of optional copies
        if repeats and self.last_bounded:
            raise SchemaTooComplex(
                f"{self.where}: repetition {text} of a group holding a variable-length repetition (?, *, +, {{m,n}}) "
                "is over the limit of what llama.cpp samples in bounded time"
            )
        # copies: {m,n} writes n, {m,} m and a loop
        copies = hi if hi is not None else lo + 1
        self.pending = self.pending * copies + (1 if hi is None or hi - lo >= 2 else 0)
        if hi is None or hi > lo:
            self.last_bounded = 1
            self.frames[-1][2] = 1


def _class_end(pattern: str, i: int) -> int:
    i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _quantifier(body: str) -> tuple[int, int | None] | None:
    """`m`, `m,`, `m,n` or `,n` (as the converter reads them) -> (m, n or None); None when not a quantifier."""
    parts = [p.strip() for p in body.split(",")]
    if len(parts) > 2 or not all(p.isdigit() for p in parts if p) or not any(parts):
        return None
    lo = int(parts[0]) if parts[0] else 0
    if len(parts) == 1:
        return lo, lo
    return lo, int(parts[1]) if parts[1] else None


# ---------------------------------------------------------------------------------------------- grammar


def check_grammar(gbnf: str, where: str) -> None:
    """Bound the GBNF text itself (bytes, rules, group nesting) before llama.cpp parses it."""
    size = len(gbnf.encode())
    if size > MAX_GRAMMAR_BYTES:
        raise _fail(where, "grammar size (bytes)", size, MAX_GRAMMAR_BYTES)
    rules = gbnf.count("::=")
    if rules > MAX_GRAMMAR_RULES:
        raise _fail(where, "grammar rules", rules, MAX_GRAMMAR_RULES)
    nesting = grammar_nesting(gbnf)
    if nesting > MAX_GRAMMAR_NESTING:
        raise _fail(where, "grammar nesting", nesting, MAX_GRAMMAR_NESTING)


def grammar_nesting(gbnf: str) -> int:
    """The deepest ( ) nesting in GBNF text, outside "string" literals and [character classes]."""
    depth = deepest = 0
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c == '"' or c == "[":
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and gbnf[i] != close:
                i += 2 if gbnf[i] == "\\" else 1
        elif c == "#":  # a comment runs to the end of the line
            while i < n and gbnf[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth = max(depth - 1, 0)
        i += 1
    return deepest
