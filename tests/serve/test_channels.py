"""The channel parser alone: same channels for every way the text is split, no marker ever in the output."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from serve.chat.channels import (
    ANALYSIS,
    FINAL,
    HARMONY_MARKERS,
    THINK_MARKERS,
    THINK_TAGS,
    ChannelParser,
    Format,
    Thinking,
    collect,
    parse,
)
from serve.chat.core import ChatResult, Generation

# Text that may contain '<', '|', '>' and pieces of tags, but never a whole marker.
plain = st.text(alphabet=st.sampled_from(list('ab <|>/think\n{}"é')), max_size=40).filter(
    lambda s: not any(m in s for m in HARMONY_MARKERS + THINK_MARKERS)
)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def _run(fmt: Format, pieces: list[str], start_in_thinking: bool = False) -> dict[str, str]:
    parser = ChannelParser(fmt, start_in_thinking)
    events = [e for p in pieces for e in parser.feed(p)] + parser.finish()
    return collect(events)


def harmony(analysis: str, final: str, commentary: str | None = None) -> str:
    out = f"<|channel|>analysis<|message|>{analysis}<|end|>"
    if commentary is not None:
        out += (
            f"<|start|>assistant<|channel|>commentary to=functions.get <|constrain|>json<|message|>{commentary}<|call|>"
        )
    return out + f"<|start|>assistant<|channel|>final<|message|>{final}<|return|>"


def _clean(d: dict[str, str]) -> dict[str, str]:
    return {k: v.strip() for k, v in d.items() if v.strip()}


def test_harmony_whole() -> None:
    got = parse(harmony("The capital is Paris.", "Paris", '{"x": 1}'), Format.HARMONY)
    assert got == {"analysis": "The capital is Paris.", "commentary": '{"x": 1}', "final": "Paris"}


def test_think_whole_and_template_opened_block() -> None:
    assert parse("<think>\nhmm, 2+2\n</think>\n\n4", Format.THINK) == {"analysis": "hmm, 2+2\n", "final": "4"}
    # The template wrote "<think>\n" itself: output starts inside the block.
    assert parse("hmm\n</think>\n\n4", Format.THINK, start_in_thinking=True) == {"analysis": "hmm\n", "final": "4"}
    assert parse("just an answer", Format.THINK) == {"final": "just an answer"}


@given(
    analysis=plain,
    commentary=st.one_of(st.none(), plain),
    final=plain,
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
@settings(max_examples=300, deadline=None)
def test_harmony_any_split(analysis: str, commentary: str | None, final: str, cuts: list[int]) -> None:
    text = harmony(analysis, final, commentary)
    whole = _run(Format.HARMONY, [text])
    assert _run(Format.HARMONY, _split(text, cuts)) == whole
    expected = {"analysis": analysis, "commentary": commentary or "", "final": final}
    assert _clean(whole) == _clean(expected)
    for value in whole.values():
        assert not any(m in value for m in HARMONY_MARKERS)


@given(thinking=plain, answer=plain, opened=st.booleans(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
@settings(max_examples=300, deadline=None)
def test_think_any_split(thinking: str, answer: str, opened: bool, cuts: list[int]) -> None:
    text = ("" if opened else "<think>") + thinking + "</think>\n\n" + answer
    whole = _run(Format.THINK, [text], opened)
    assert _run(Format.THINK, _split(text, cuts), opened) == whole
    assert _clean(whole) == _clean({"analysis": thinking, "final": answer})
    for value in whole.values():
        assert not any(m in value for m in THINK_MARKERS)


def test_every_single_split_position() -> None:
    text = harmony("a <| b |> c", "x<y", "{}")
    whole = _run(Format.HARMONY, [text])
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert _run(Format.HARMONY, [text[:i], text[i:j], text[j:]]) == whole


def test_char_by_char_streams_before_finish() -> None:
    parser = ChannelParser(Format.HARMONY)
    events = [e for ch in "<|channel|>final<|message|>Hello wor" for e in parser.feed(ch)]
    assert "".join(e.text for e in events if e.channel == "final") == "Hello wor"


# Malformed harmony, as gpt-oss produces it at temperature 1: never an error, never a marker in the text.
MALFORMED = {
    # <|end|> then a header with no <|start|>
    "<|channel|>analysis<|message|>think<|end|><|channel|>final<|message|>Paris": {
        "analysis": "think",
        "final": "Paris",
    },
    # no channel in the header at all
    "<|message|>Paris": {"final": "Paris"},
    # the body opens a new channel without closing the old one
    "<|channel|>analysis<|message|>think<|channel|>final<|message|>Paris": {"analysis": "think", "final": "Paris"},
    # garbage header, never reaching <|message|>
    "assistant final: Paris is the capital": {"final": " final: Paris is the capital"},
    # header broken by <|end|>
    "<|channel|>analysis oops<|end|><|start|>assistant<|channel|>final<|message|>Paris": {
        "analysis": "oops",
        "final": "Paris",
    },
    # an unknown channel name
    "<|channel|>summary<|message|>Paris": {"final": "Paris"},
    # text between messages
    "<|channel|>analysis<|message|>t<|end|>stray<|return|>": {"analysis": "t", "final": "stray"},
}


def test_malformed_harmony_is_tolerated() -> None:
    for text, expected in MALFORMED.items():
        got = parse(text, Format.HARMONY)
        assert _clean(got) == _clean(expected), text
        for cut in range(len(text) + 1):
            assert _run(Format.HARMONY, [text[:cut], text[cut:]]) == got


# -- a grammar holds the answer (response_format): the answer, once begun, is text to its end -------------------

ANSWER = '{"a": "x <think> y </think> z", "b": "</think>", "c": "<think>"}'
BEFORE = {
    Thinking.NONE: ("", ""),  # the grammar holds the answer from the first token
    Thinking.OPEN: ("Let me see.</think>\n\n", "Let me see."),  # the prompt opened the thinking
    Thinking.MAY: ("<think>Let me see.</think>\n\n", "Let me see."),  # the model opens it
}


def _generated(thinking: Thinking, pieces: list[str], fmt: Format = Format.THINK) -> dict[str, str]:
    gen = Generation(ChannelParser.for_output(fmt, thinking, answer_grammar=True))
    result = ChatResult()
    for event in [e for p in pieces for e in gen.piece(p)] + gen.end("stop", 1, 1)[:-1]:
        result.add(event)
    return result.channels


def test_a_grammar_answer_keeps_think_tags_in_its_text_at_every_split() -> None:
    for thinking, (before, reasoning) in BEFORE.items():
        text = before + ANSWER
        want = {ANALYSIS: reasoning, FINAL: ANSWER} if reasoning else {FINAL: ANSWER}
        assert _generated(thinking, list(text)) == want, thinking
        for cut in range(len(text) + 1):
            for cut2 in range(cut, len(text) + 1, 7):
                assert _generated(thinking, [text[:cut], text[cut:cut2], text[cut2:]]) == want, (thinking, cut, cut2)


def test_without_a_grammar_think_tags_still_open_thinking() -> None:
    parser = ChannelParser.for_output(Format.THINK, Thinking.NONE)
    assert collect(parser.feed("<think>hm</think>ok") + parser.finish()) == {ANALYSIS: "hm", FINAL: "ok"}


# -- each family's own thinking markers (THINK_TAGS: Gemma 4, MiniMax-M3, Kimi K3, Hy3) -------------------------

FAMILIES = [f for f in THINK_TAGS if f is not Format.THINK]
ALL_MARKERS = HARMONY_MARKERS + tuple(m for tags in THINK_TAGS.values() for m in tags.markers)
# Text with the families' marker characters and pieces of their markers, never a whole one.
family_plain = st.text(alphabet=st.sampled_from(list('ab <|>/think:mchanel\n{}"é')), max_size=40).filter(
    lambda s: not any(m in s for m in ALL_MARKERS)
)


def family_output(fmt: Format, thinking: str, answer: str, opened: bool) -> str:
    """The turn as the family's template writes it: the thinking block, then the answer in its markup (if any)."""
    tags = THINK_TAGS[fmt]
    before = tags.lead[0] if tags.lead else ""  # the markup that opens the answer
    after = tags.answer[-1] if tags.answer else ""  # and one that ends it
    return ("" if opened else tags.open + "\n") + thinking + "\n" + tags.close + before + answer + after


@pytest.mark.parametrize("fmt", FAMILIES)
@given(
    thinking=family_plain, answer=family_plain, opened=st.booleans(), cuts=st.lists(st.integers(0, 10_000), max_size=12)
)
@settings(max_examples=150, deadline=None)
def test_family_any_split(fmt: Format, thinking: str, answer: str, opened: bool, cuts: list[int]) -> None:
    text = family_output(fmt, thinking, answer, opened)
    whole = _run(fmt, [text], opened)
    assert _run(fmt, _split(text, cuts), opened) == whole
    assert _clean(whole) == _clean({"analysis": thinking, "final": answer})
    for value in whole.values():
        assert not any(m in value for m in ALL_MARKERS)


@pytest.mark.parametrize("fmt", FAMILIES)
def test_family_every_single_split_position(fmt: Format) -> None:
    for opened in (False, True):
        text = family_output(fmt, "a <| b |> c </think", "x<y", opened)
        whole = _run(fmt, [text], opened)
        assert whole == {ANALYSIS: "a <| b |> c </think\n", FINAL: "x<y"}
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                assert _run(fmt, [text[:i], text[i:j], text[j:]], opened) == whole


@pytest.mark.parametrize("fmt", FAMILIES)
def test_family_grammar_answer_keeps_markers_in_its_text_at_every_split(fmt: Format) -> None:
    tags = THINK_TAGS[fmt]
    answer = json.dumps({"a": f"x {tags.open} y {tags.close} z", "b": "<think>"})
    text = family_output(fmt, "Let me see.", answer, opened=True)
    want = {ANALYSIS: "Let me see.", FINAL: answer}  # the turn's texts are trimmed
    assert _generated(Thinking.OPEN, list(text), fmt) == want
    for cut in range(len(text) + 1):
        for cut2 in range(cut, len(text) + 1, 7):
            assert _generated(Thinking.OPEN, [text[:cut], text[cut:cut2], text[cut2:]], fmt) == want, (cut, cut2)


# -- Solar Open and Muse Glimmer: the thinking is a message of its own, the answer another ---------------------------

HEADERED_TURNS = [
    # Solar Open: the prompt ends in `<|begin|>assistant`; the answer's message ends in `<|flush|>`
    (Format.SOLAR, "<|think|>It is 4.<|end|><|begin|>assistant<|content|>Four.<|flush|>", "It is 4.", "Four."),
    (Format.SOLAR, "<|content|>Four.<|flush|>", None, "Four."),  # no thinking (reasoning_effort low)
    # Muse Glimmer: the prompt ends in `<|start|>assistant`; two reasoning messages, then the answer to the user
    (
        Format.MUSE,
        " to=self<|message|>It is 4.<|eom|><|start|>assistant to=self<|message|> Sure.<|eom|>"
        "<|start|>assistant to=user<|message|>Four.<|eot|>",
        "It is 4. Sure.",
        "Four.",
    ),
    (Format.MUSE, " to=user<|message|>Four.<|eot|>", None, "Four."),
]


@pytest.mark.parametrize(("fmt", "text", "thinking", "answer"), HEADERED_TURNS)
def test_a_message_of_thinking_then_the_answer_at_every_split(
    fmt: Format, text: str, thinking: str | None, answer: str
) -> None:
    want = {ANALYSIS: thinking, FINAL: answer} if thinking else {FINAL: answer}
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert _run(fmt, [text[:i], text[i:j], text[j:]]) == want, (i, j)
