"""Choosing llama.cpp's pre-tokenizer from tokenizer.json (convert.pretok), and the table it chooses from.

The table (convert/data/llama_pre.json) must equal what the pinned llama.cpp's source says; every type in it
is found again from its own tokenizer.json spelling; ties between names that share regexes go to the name whose
flags match the file; unknown pre-tokenizers are refused with the regexes and the closest names.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from convert.errors import UnsupportedError
from convert.pretok import (
    DATA,
    HF_GPT2_REGEX,
    TRIGGERS,
    check_hash,
    identify,
    load_known,
    program_of,
)

KNOWN = load_known()
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def tokenizer_json(*pre: dict, ignore_merges: bool = False) -> dict:
    return {
        "model": {"type": "BPE", "ignore_merges": ignore_merges, "vocab": {}, "merges": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": list(pre)},
        "decoder": {"type": "ByteLevel"},
    }


def type_of(kind: str):
    return next(t for t in KNOWN.types if t.type == kind)


def test_table_is_what_the_pinned_llama_cpp_says(llama_src):
    from convert.pretok_source import extract

    assert json.loads(DATA.read_text(encoding="utf-8")) == json.loads(json.dumps(extract(llama_src)))


def test_table_covers_every_type_and_name():
    assert len(KNOWN.types) == 60 and KNOWN.types[0].type == "DEFAULT"
    assert [t.id for t in KNOWN.types] == list(range(60))
    assert {"llama-bpe", "qwen2", "qwen35", "gpt-2", "falcon", "deepseek-llm", "tekken", "gpt-4o"} <= set(
        KNOWN.name_type
    )
    written = {e["name"] for entries in KNOWN.check_hashes.values() for e in entries}
    assert {"llama-bpe", "qwen2", "gpt-2", "falcon"} <= written and len(KNOWN.check_hashes) > 90


STRUCTURAL = [t.type for t in KNOWN.types if t.names and t.byte_encode and not TRIGGERS.intersection(t.regexes)]


@pytest.mark.parametrize("kind", STRUCTURAL)
def test_every_type_is_found_from_its_tokenizer_json_spelling(kind):
    """A tokenizer.json that splits as llama.cpp says the release does gets a name of a type that splits the same."""
    t = type_of(kind)
    found = identify(
        tokenizer_json(
            *map(split, t.hf_regexes), BYTE_LEVEL, ignore_merges=bool(KNOWN.flags[t.names[0]].get("ignore_merges"))
        )
    )
    assert type_of(found.type).regexes == t.regexes
    assert found.name in found.candidates


def test_switch_regexes_are_never_matched_by_structure():
    """Kimi-K2's and AFMoE's regexes only switch on llama.cpp's hand-written splitters: refused without a hash."""
    for kind in ("KIMI_K2", "AFMOE"):
        with pytest.raises(UnsupportedError):
            identify(tokenizer_json(*map(split, type_of(kind).regexes), BYTE_LEVEL))


def test_byte_level_regex_is_gpt2():
    found = identify({**tokenizer_json(), "pre_tokenizer": {**BYTE_LEVEL, "use_regex": True}})
    assert found.name == "gpt-2"
    # the same split spelled as a Split regex, as some files do
    assert identify(tokenizer_json(split(HF_GPT2_REGEX), BYTE_LEVEL)).name == "gpt-2"


def test_llama3_needs_ignore_merges_to_be_llama_bpe():
    regex = type_of("LLAMA3").hf_regexes[0]
    assert identify(tokenizer_json(split(regex), BYTE_LEVEL, ignore_merges=True)).name == "llama-bpe"
    # without ignore_merges, a name of the same regexes that does not ignore merges
    plain = identify(tokenizer_json(split(regex), BYTE_LEVEL))
    assert plain.type in ("DBRX", "SMAUG", "CHATGLM4") and not KNOWN.flags[plain.name].get("ignore_merges")


def test_clean_up_spaces_picks_between_names_of_one_regex():
    regex = type_of("QWEN2").hf_regexes[0]
    assert identify(tokenizer_json(split(regex), BYTE_LEVEL), clean_spaces=False).name == "qwen2"
    cleaning = identify(tokenizer_json(split(regex), BYTE_LEVEL), clean_spaces=True)
    assert type_of(cleaning.type).regexes == type_of("QWEN2").regexes
    assert KNOWN.flags[cleaning.name].get("clean_spaces", True) is True


def test_qwen35_marks_are_not_qwen2():
    assert identify(tokenizer_json(split(type_of("QWEN35").hf_regexes[0]), BYTE_LEVEL)).name == "qwen35"


def test_falcon_as_its_release_spells_it():
    pre = [
        {"type": "Punctuation", "behavior": "Contiguous"},
        {**BYTE_LEVEL, "use_regex": True},
        {"type": "Digits", "individual_digits": False},
        split("[0-9][0-9][0-9]"),
    ]
    assert identify(tokenizer_json(*pre)).name == "falcon"


def test_unknown_pre_tokenizer_is_refused_with_regexes_and_closest_names():
    odd = r"(?i:'s|'t)|\p{L}+|\p{N}{1,4}|\s+"
    with pytest.raises(UnsupportedError) as e:
        identify(tokenizer_json(split(odd), BYTE_LEVEL))
    msg = str(e.value)
    assert "not one llama.cpp knows" in msg and r"\p{N}{1,4}" in msg and "closest llama.cpp pre-tokenizers:" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("part", "why"),
    [
        ({**BYTE_LEVEL, "use_regex": True, "add_prefix_space": True}, "add_prefix_space"),
        ({**split(r"\s+"), "behavior": "Removed"}, "behavior Removed"),
        ({"type": "WhitespaceSplit"}, "WhitespaceSplit"),
    ],
)
def test_parts_llama_cpp_cannot_do_are_named(part, why):
    with pytest.raises(UnsupportedError, match=why):
        identify(tokenizer_json(part, BYTE_LEVEL))


def test_check_text_hash_is_a_second_opinion():
    ids = [1, 2, 3]
    hashed = replace(KNOWN, check_hashes={check_hash(ids): [{"name": "gpt-2", "ref": "test"}]})
    # structure unknown, hash known: llama.cpp's own pick
    found = identify(tokenizer_json(split(r"\p{L}+x"), BYTE_LEVEL), hash_ids=ids, known=hashed)
    assert (found.name, found.by) == ("gpt-2", "hash")
    # structure and hash agree: the hash breaks the tie among same-behaving names
    same = identify(
        {**tokenizer_json(), "pre_tokenizer": {**BYTE_LEVEL, "use_regex": True}}, hash_ids=ids, known=hashed
    )
    assert (same.name, same.by) == ("gpt-2", "structure+hash")
    # they disagree: the structure wins, and the disagreement is reported
    qwen = identify(tokenizer_json(split(type_of("QWEN2").hf_regexes[0]), BYTE_LEVEL), hash_ids=ids, known=hashed)
    assert qwen.type == "QWEN2" and qwen.note and "gpt-2" in qwen.note


def test_program_spells_digits_and_punctuation_as_llama_cpp():
    prog = program_of(tokenizer_json({"type": "Digits", "individual_digits": True}, {**BYTE_LEVEL, "use_regex": True}))
    assert prog.steps == type_of("STARCODER").regexes and prog.byte_level and not prog.problems
