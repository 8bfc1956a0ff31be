"""Which llama.cpp pre-tokenizer a byte-level BPE tokenizer.json needs, decided from what the file says.

llama.cpp splits text with its own copy of each pre-tokenizer's regexes, chosen by the name written to
`tokenizer.ggml.pre`. The facts about every name the pinned llama.cpp knows (its regexes, the tokenizer.json
spellings they were adapted from, the flags each name sets, its converter's check-text hashes) are in
convert/data/llama_pre.json, extracted from llama.cpp's source by convert.pretok_source.

The decision:
1. tokenizer.json's pre-tokenizer becomes a *program*: its splitting steps in order, each a regex
   (Split's pattern; ByteLevel's built-in GPT-2 regex; Digits and Punctuation as the regexes llama.cpp uses
   for them). Spellings that differ only in form (`(?i:'s|...)` vs `(?:'[sS]|...)`) are made equal.
2. Every llama.cpp type whose regexes equal the program is a candidate, with all its names.
3. Among the candidates, the name whose llama.cpp behaviour matches the tokenizer wins: `ignore_merges`
   (tokenizer.json's BPE model says it) first, then the flags the file cannot ask for (an added separator,
   no BOS id, lowercasing) counting against a name, then `clean_up_tokenization_spaces`. Names llama.cpp's
   converter itself writes come before aliases, and the check-text hash breaks the remaining ties.
4. llama.cpp's check-text hash is a second opinion: when the structure matches nothing but the hash is
   known, the hash's name is used (llama.cpp's maintainers tested that exact tokenizer); a hash that names a
   type other than the structure's is reported in `Identified.note`.
5. Nothing matches: UnsupportedError naming the program's regexes and the closest known names.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convert.errors import UnsupportedError

DATA = Path(__file__).with_name("data") / "llama_pre.json"

# HF's ByteLevel pre-tokenizer (use_regex) splits with the GPT-2 regex; llama.cpp spells the same split without
# the final `|\s+` (its GPT-2 splitter is hand-written and handles trailing spaces as HF does).
HF_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# HF's Punctuation pre-tokenizer: Unicode punctuation or ASCII punctuation (which adds $ + < = > ^ ` | ~).
PUNCTUATION = r"[\p{P}\$\+<=>\^~\|`]"
# HF's Digits pre-tokenizer (Rust char::is_numeric, i.e. \p{N}).
DIGITS = {True: r"\p{N}", False: r"\p{N}+"}

# tokenizer.json spellings llama.cpp's source does not record next to the regexes it adapted them into.
# FALCON: tiiuae/falcon-7b's tokenizer.json (Punctuation contiguous, ByteLevel, Digits, Split on three digits);
# llama.cpp drops the Digits step, which falcon's merges make a no-op on its own test strings (its converter
# writes "falcon" for that exact file).
EXTRA_SPELLINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "FALCON": ((PUNCTUATION + "+", LLAMA_GPT2_REGEX, DIGITS[False], "[0-9][0-9][0-9]"),),
}

# Regexes llama.cpp uses as switches for hand-written splitters that do something else (Kimi-K2's patterns,
# AFMoE's digit grouping): a type holding one is chosen only by its check-text hash, never by structure.
TRIGGERS = frozenset({r"\p{Han}+", r"\p{AFMoE_digits}"})

_CONTRACTIONS_I = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

# Flags a name may set that no byte-level tokenizer.json asks for: such a name is chosen only when nothing else
# fits. (special_bos_id is set to "none" by the GLM names.)
UNASKED_FLAGS = ("add_sep", "lowercase", "escape_whitespaces")


def canonical(regex: str) -> str:
    """One spelling per split: control characters as escapes, case-insensitive contractions spelled out."""
    out = regex.replace("\r", r"\r").replace("\n", r"\n").replace("\t", r"\t")
    out = out.replace(_CONTRACTIONS_I, _CONTRACTIONS)
    return LLAMA_GPT2_REGEX if out == HF_GPT2_REGEX else out


@dataclass(frozen=True)
class PreType:
    type: str  # LLAMA_VOCAB_PRE_TYPE_<type>
    id: int
    names: tuple[str, ...]
    regexes: tuple[str, ...]  # as llama.cpp runs them
    hf_regexes: tuple[str, ...]  # as tokenizer.json spells them (where llama.cpp adapted one)
    byte_encode: bool

    @property
    def spellings(self) -> tuple[tuple[str, ...], ...]:
        """Every way a tokenizer.json may spell this type's splits, canonical."""
        forms = (self.regexes, self.hf_regexes, *EXTRA_SPELLINGS.get(self.type, ()))
        return tuple(tuple(map(canonical, f)) for f in forms)

    def matches(self, program: tuple[str, ...]) -> bool:
        return not TRIGGERS.intersection(self.regexes) and program in self.spellings


@dataclass(frozen=True)
class Known:
    """The pinned llama.cpp's pre-tokenizers, as convert/data/llama_pre.json records them."""

    types: tuple[PreType, ...]
    flags: dict[str, dict[str, Any]]  # name -> flags its branch in llama_vocab::load sets
    name_type: dict[str, str]  # name -> type
    check_text: str
    check_hashes: dict[str, list[dict[str, str]]]

    @property
    def written_by_converter(self) -> set[str]:
        return {e["name"] for entries in self.check_hashes.values() for e in entries}


def load_known(path: Path = DATA) -> Known:
    data = json.loads(path.read_text(encoding="utf-8"))
    types = tuple(
        PreType(t["type"], t["id"], tuple(t["names"]), tuple(t["regexes"]), tuple(t["hf_regexes"]), t["byte_encode"])
        for t in data["types"]
    )
    return Known(
        types=types,
        flags={n: v["flags"] for n, v in data["names"].items()},
        name_type={n: v["type"] for n, v in data["names"].items()},
        check_text=data["check_text"],
        check_hashes=data["check_hashes"],
    )


# --- tokenizer.json -> program --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """What a tokenizer.json pre-tokenizer does: its split regexes in order, and whether it is byte-level."""

    steps: tuple[str, ...]
    byte_level: bool
    problems: tuple[str, ...] = ()  # parts llama.cpp has no equivalent for


def _steps(pre: dict[str, Any] | None) -> tuple[list[str], bool, list[str]]:
    if not pre:
        return [], False, []
    kind = pre.get("type")
    if kind == "Sequence":
        steps: list[str] = []
        byte_level, problems = False, []
        for p in pre.get("pretokenizers") or []:
            s, b, q = _steps(p)
            steps += s
            byte_level |= b
            problems += q
        return steps, byte_level, problems
    if kind == "ByteLevel":
        problems = (
            ["ByteLevel add_prefix_space=true (llama.cpp adds no prefix space to BPE text)"]
            if pre.get("add_prefix_space")
            else []
        )
        return ([LLAMA_GPT2_REGEX] if pre.get("use_regex", True) else []), True, problems
    if kind == "Split":
        pattern = pre.get("pattern") or {}
        regex = pattern.get("Regex")
        behavior, invert = pre.get("behavior"), pre.get("invert", False)
        if regex is None:
            return (
                [f"<Split string {pattern.get('String')!r}>"],
                False,
                [f"Split on the string {pattern.get('String')!r}"],
            )
        if behavior != "Isolated" or invert:
            return (
                [regex],
                False,
                [f"Split behavior {behavior}{' inverted' if invert else ''} (llama.cpp isolates matches)"],
            )
        return [regex], False, []
    if kind == "Digits":
        return [DIGITS[bool(pre.get("individual_digits"))]], False, []
    if kind == "Punctuation":
        behavior = pre.get("behavior", "Isolated")
        if behavior == "Contiguous":
            return [PUNCTUATION + "+"], False, []
        if behavior == "Isolated":
            return [PUNCTUATION], False, []
        return [PUNCTUATION], False, [f"Punctuation behavior {behavior}"]
    return [f"<{kind}>"], False, [f"{kind} pre-tokenizer"]


def program_of(tokenizer: dict[str, Any]) -> Program:
    steps, byte_level, problems = _steps(tokenizer.get("pre_tokenizer"))
    return Program(tuple(canonical(s) for s in steps), byte_level, tuple(problems))


# --- choosing a name ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identified:
    name: str
    type: str
    by: str  # "structure", "structure+hash", "hash"
    note: str | None = None
    candidates: tuple[str, ...] = field(default=())


def check_hash(ids: list[int]) -> str:
    """llama.cpp's converter's fingerprint: sha256 of str(token ids of the check text)."""
    return hashlib.sha256(str(ids).encode()).hexdigest()


def _rank(known: Known, name: str, wants: dict[str, Any], hash_names: set[str]) -> tuple[int, ...]:
    flags = known.flags.get(name, {})
    return (
        int(bool(flags.get("ignore_merges", False)) != wants["ignore_merges"]),
        sum(flags.get(f) is True for f in UNASKED_FLAGS) + int("special_bos_id" in flags),
        int(wants["clean_spaces"] is not None and flags.get("clean_spaces", True) != wants["clean_spaces"]),
        int(name not in known.written_by_converter),
        int(name not in hash_names),
    )


def identify(
    tokenizer: dict[str, Any],
    *,
    clean_spaces: bool | None = None,
    hash_ids: list[int] | None = None,
    known: Known | None = None,
) -> Identified:
    """The tokenizer.ggml.pre name for a byte-level BPE tokenizer.json (see the module docstring)."""
    known = known or load_known()
    program = program_of(tokenizer)
    wants = {
        "ignore_merges": bool((tokenizer.get("model") or {}).get("ignore_merges", False)),
        "clean_spaces": clean_spaces,
    }
    hashed = known.check_hashes.get(check_hash(hash_ids), []) if hash_ids is not None else []
    hash_names = {e["name"] for e in hashed if e["name"] in known.name_type}

    types = [t for t in known.types if t.byte_encode and t.names and not program.problems and t.matches(program.steps)]
    if types:
        names = [n for t in sorted(types, key=lambda t: -len(t.names)) for n in t.names]
        best = min(names, key=lambda n: (_rank(known, n, wants, hash_names), names.index(n)))
        note = None
        if hash_names and not hash_names & set(names):
            note = (
                f"llama.cpp's converter would write {', '.join(sorted(hash_names))} (check-text hash), whose regexes "
                f"differ from this tokenizer.json's; using {best}, which splits as the file says"
            )
        by = "structure+hash" if best in hash_names else "structure"
        return Identified(best, known.name_type[best], by, note, tuple(names))
    if hash_names:
        name = next(e["name"] for e in reversed(hashed) if e["name"] in hash_names)  # llama.cpp's own pick: the last
        return Identified(name, known.name_type[name], "hash", "tokenizer.json's pre-tokenizer is not one llama.cpp spells; "
                          "its check-text hash is known", (name,))  # fmt: skip
    raise UnsupportedError(_refusal(known, program))


def _refusal(known: Known, program: Program) -> str:
    shown = " + ".join(program.steps) or "none"
    why = f" ({'; '.join(program.problems)})" if program.problems else ""
    closest = closest_names(known, program.steps)
    return (
        f"tokenizer.json's pre-tokenizer is not one llama.cpp knows{why}: splits {shown[:300]}; "
        f"closest llama.cpp pre-tokenizers: {', '.join(closest)}"
    )


def closest_names(known: Known, steps: tuple[str, ...], n: int = 3) -> list[str]:
    """The names whose regexes look most like `steps` (by text similarity of the joined regexes)."""
    joined = " + ".join(steps)

    def score(t: PreType) -> float:
        return max(difflib.SequenceMatcher(None, joined, " + ".join(spelled)).ratio() for spelled in t.spellings)

    ranked = sorted((t for t in known.types if t.names), key=score, reverse=True)
    return [f"{t.names[0]} ({' + '.join(t.hf_regexes)[:80]})" for t in ranked[:n]]
