"""Facts about llama.cpp's pre-tokenizers, read from its own source (a development tool, not used to convert).

    python -m convert.pretok_source VENDOR/llama.cpp        # rewrites convert/data/llama_pre.json

llama.cpp keeps its own copy of every BPE pre-tokenizer's split regexes (src/llama-vocab.cpp,
`llm_tokenizer_bpe`), the names a GGUF may give for each (`tokenizer_pre == "..."` in `llama_vocab::load`,
with the flags each name sets), and its converter's table of check-text hashes (conversion/base.py,
`get_vocab_base_pre`). This module extracts those into one JSON file, so the converter chooses from data and a
test can prove the data still equals the pinned llama.cpp.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data") / "llama_pre.json"
PREFIX = "LLAMA_VOCAB_PRE_TYPE_"

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def c_string(body: str) -> str:
    """The value of a C string literal's body (the text between the quotes)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2 :])
            assert m, body
            out.append(chr(int(m.group(), 16)))
            i += 2 + len(m.group())
        else:
            out.append(_ESCAPES[nxt])
            i += 2
    return "".join(out)


def _code_strings(line: str) -> list[str]:
    """The string literals of one line of C++, up to a `//` comment outside them."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if line.startswith("//", i):
            break
        if line[i] == '"':
            m = _STRING.match(line, i)
            assert m, line
            out.append(c_string(m.group(1)))
            i = m.end()
        else:
            i += 1
    return out


def enum_types(header: str) -> dict[str, int]:
    """LLAMA_VOCAB_PRE_TYPE_X -> its number, from llama-vocab.h."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"{PREFIX}(\w+)\s*=\s*(\d+)", header)}


def _function_body(source: str, signature: str) -> str:
    """The text of the braces that follow `signature` (balanced, strings and comments not special-cased)."""
    start = source.index(signature)
    open_at = source.index("{", start)
    depth = 0
    for i in range(open_at, len(source)):
        if source[i] == "{":
            depth += 1
        elif source[i] == "}":
            depth -= 1
            if depth == 0:
                return source[open_at + 1 : i]
    raise ValueError(f"unbalanced braces after {signature}")


def split_regexes(source: str) -> dict[str, dict[str, Any]]:
    """Type -> {"regexes": [...], "hf_regexes": [...], "byte_encode": bool} from llm_tokenizer_bpe's switch.

    `hf_regexes` are the spellings tokenizer.json uses where llama.cpp adapted a regex and kept the original in
    a comment ("original regex from tokenizer.json"); elsewhere they equal llama.cpp's own.
    """
    body = _function_body(source, "llm_tokenizer_bpe(const llama_vocab & vocab)")
    out: dict[str, dict[str, Any]] = {}
    pending: list[str] = []  # case labels waiting for their block
    block: dict[str, Any] | None = None
    original: str | None = None
    in_list = False
    for raw in body.splitlines():
        line = raw.strip()
        labels = re.findall(rf"case {PREFIX}(\w+):", line)
        if labels or line.startswith("default:"):
            if block is not None:  # labels after a block's break start a new group
                pending = []
                block = None
            pending += labels or ["DEFAULT"]
            original = None
            continue
        if line.startswith("regex_exprs = {"):
            block = {"regexes": [], "hf_regexes": [], "byte_encode": True}
            for name in pending:
                out[name] = block
            in_list = True
            continue
        if in_list:
            if line.startswith("};"):
                in_list = False
            elif line.startswith("//"):
                if ("original regex" in line or line.lstrip("/ ").startswith('"')) and (
                    strings := _STRING.findall(line)
                ):
                    original = c_string(strings[0])
            elif strings := _code_strings(line):
                assert block is not None  # in_list is set together with its block
                regex = "".join(strings)
                block["regexes"].append(regex)
                block["hf_regexes"].append(original if original is not None else regex)
                original = None
            continue
        if line.startswith("//") and (strings := _STRING.findall(line)):
            original = c_string(strings[0])  # an original spelled above the list (tekken)
        if block is not None and line.startswith("byte_encode = false"):
            block["byte_encode"] = False
    return out


def names(source: str) -> dict[str, dict[str, Any]]:
    """GGUF tokenizer.ggml.pre name -> {"type": X, "flags": {...}} from llama_vocab::load's if/else chain."""
    start = source.index("if (tokenizer_pre.empty())")
    end = source.index("unknown pre-tokenizer type", start)
    chain = source[start:end]
    out: dict[str, dict[str, Any]] = {}
    for branch in re.split(r"\}\s*else if\s*\(", chain)[1:]:
        found = _STRING.findall(branch.split(")")[0] if "tokenizer_pre ==" in branch else "")
        kind = re.search(rf"pre_type = {PREFIX}(\w+);", branch)
        if not found or kind is None:
            continue
        flags = {
            m.group(1): m.group(2) == "true" if m.group(2) in ("true", "false") else None
            for m in re.finditer(r"^\s*(\w+)\s*=\s*(true|false|LLAMA_TOKEN_NULL);", branch, re.M)
        }
        if "lowercase" in branch:
            flags["lowercase"] = "lowercase = true" in branch
        names_here = re.findall(r'tokenizer_pre == "([^"]+)"', branch)
        for n in names_here:
            out[n] = {"type": kind.group(1), "flags": flags}
    return out


def check_hashes(converter: str) -> dict[str, list[dict[str, str]]]:
    """sha256 of the check text's token ids -> [{"name": ..., "ref": model repository}] (conversion/base.py).

    A few hashes are shared by tokenizers that behave alike (mpt and olmo); llama.cpp's converter takes the
    last, so the list keeps its order."""
    body = converter[converter.index("def get_vocab_base_pre") :]
    body = body[: body.index("if res is None")]
    out: dict[str, list[dict[str, str]]] = {}
    for m in re.finditer(r'chkhsh == "([0-9a-f]{64})":\s*\n\s*# ref: (\S+)\s*\n\s*res = "([^"]+)"', body):
        out.setdefault(m.group(1), []).append({"name": m.group(3), "ref": m.group(2)})
    return out


def check_text(converter: str) -> str:
    m = re.search(r"chktxt = ('(?:[^'\\]|\\.)*')", converter)
    assert m, "check text not found"
    import ast

    return str(ast.literal_eval(m.group(1)))


def extract(root: Path) -> dict[str, Any]:
    """Everything the converter needs, from a llama.cpp source tree (vendor/llama.cpp of the pinned sdist)."""
    header = (root / "src" / "llama-vocab.h").read_text(encoding="utf-8")
    source = (root / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")
    converter = (root / "conversion" / "base.py").read_text(encoding="utf-8")
    numbers = enum_types(header)
    regexes = split_regexes(source)
    by_name = names(source)
    types = []
    for kind, number in sorted(numbers.items(), key=lambda kv: kv[1]):
        entry = regexes.get(kind, regexes["DEFAULT"])
        types.append(
            {
                "type": kind,
                "id": number,
                "names": [n for n, v in by_name.items() if v["type"] == kind],
                "regexes": entry["regexes"],
                "hf_regexes": entry["hf_regexes"],
                "byte_encode": entry["byte_encode"],
            }
        )
    return {
        "source": "llama.cpp vendored in llama-cpp-python (src/llama-vocab.h, src/llama-vocab.cpp, conversion/base.py)",
        "types": types,
        "names": dict(by_name),
        "check_text": check_text(converter),
        "check_hashes": check_hashes(converter),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m convert.pretok_source VENDOR/llama.cpp", file=sys.stderr)
        return 2
    data = extract(Path(argv[0]))
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{DATA}: {len(data['types'])} types, {len(data['names'])} names, {len(data['check_hashes'])} hashes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
