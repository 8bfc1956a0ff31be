"""Which call format a template speaks: render a probe call through it and look at what comes out.

The probe is one tool, one assistant turn calling it and the tool's answer. What the template writes for
that turn names the format (a `to=functions.` header is harmony, `[TOOL_CALLS]` Mistral, `<tool_call>`
followed by JSON Hermes, `<function=NAME>` with `<parameter=KEY>` the XML style, `<TOOLCALL>` Nemotron, `<|tool_call_start|>[NAME(` pythonic, a
`{"name": ..., "parameters": ...}` object Llama 3.x, `<|tool_call>call:NAME{` Gemma 4, the DSML invoke tag
DeepSeek V3.2/V4, `<invoke name=` MiniMax-M2 (behind `]<]minimax[>[`, M3), a `<tool_calls>` of JSON lines
MiniMax-M1, `functions.NAME:N` call ids Kimi K2 and `<|open|>call tool=` Kimi K3; Granite 3.x renders no call but
tells the model about `<|tool_call|>`; more formats in PROBE_SIGNS). LFM2's templates list tools and write no
calls: their tool list names the format (LISTINGS), and a history's calls go into the turn's text (history.py).
A template that does not render the tool list for a plain turn knows no tools (even if it writes a history's
calls in some format: DeepSeek R1's distills, SmolLM3), and one whose call format is none of these is treated
the same way: both get the generic format, taught in the system message. A template that fails whenever it is
given tools gets none (the generic instructions list them), so a request with tools is no 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serve.chat.tools import kimi, minimax, minimax_tree, xml
from serve.chat.tools.formats import ToolFormat

PROBE_NAME = "hearth_probe_fn"
PROBE_ID = "a1b2c3d4e"  # 9 letters and digits: Mistral's templates refuse any other id
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": PROBE_NAME,
        "description": "A probe.",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
    },
}
PROBE_CALL = {"id": PROBE_ID, "type": "function", "function": {"name": PROBE_NAME, "arguments": {"x": "y"}}}
PROBE_CONVERSATIONS: tuple[list[dict[str, Any]], ...] = (
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]},
        {"role": "tool", "tool_call_id": PROBE_ID, "content": "ok"},
    ],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]}],
)

Render = Callable[[list[dict[str, Any]], list[dict[str, Any]]], str]


@dataclass(frozen=True)
class ToolSupport:
    format: ToolFormat
    native: bool  # the template renders tools, calls and results itself
    writes_calls: bool = True  # False: it lists the tools, and a history's calls go into the text (history.py)
    takes_tools: bool = True  # the template renders at all when given tools (else it gets none: generic lists them)

    @classmethod
    def generic(cls, takes_tools: bool = True) -> ToolSupport:
        return cls(ToolFormat.GENERIC, native=False, takes_tools=takes_tools)


def detect(render: Render) -> ToolSupport:
    """`render(messages, tools)`: the template's text for a conversation (no generation prompt)."""
    listing = _tool_listing(render)
    if listing is None:  # llama.cpp's DeepSeek R1 template pipes a generator into tojson, which Jinja refuses
        return ToolSupport.generic(takes_tools=False)
    text = None
    for messages in PROBE_CONVERSATIONS:
        try:
            text = render(messages, [PROBE_TOOL])
            break
        except Exception:  # noqa: BLE001 - a template may refuse a tool turn it does not know; the next probe is smaller
            continue
    if text is None or PROBE_NAME not in text or PROBE_NAME not in listing:
        return ToolSupport.generic()
    fmt = read_format(text)
    if fmt is not None:
        return ToolSupport(fmt, native=True)
    family = next((f for mark, f in LISTINGS.items() if mark in listing), None)
    if family is not None and text.count(PROBE_NAME) == listing.count(PROBE_NAME):  # the call was not written
        return ToolSupport(family, native=True, writes_calls=False)
    return ToolSupport.generic()


def _tool_listing(render: Render) -> str | None:
    """A plain turn with tools offered (where the template shows the model its tools, if it does: then the
    tool's name is in it), or None when the template fails on tools."""
    try:
        return render([{"role": "user", "content": "hi"}], [PROBE_TOOL])
    except Exception:  # noqa: BLE001 - whatever a template raises, it cannot take tools
        return None


# Templates that list tools and write no calls, known by how they list them: LFM2's (the model calls in the
# pythonic format of LFM2.5's templates, which do write calls).
LISTINGS = {"<|tool_list_start|>": ToolFormat.PYTHONIC, "List of tools: [": ToolFormat.PYTHONIC}


_MINIMAX_JSON = re.compile(re.escape(minimax.OPEN) + r"\s*\{")
_HERMES = re.compile(r"<tool_call>\s*\{")
_LLAMA3 = re.compile(r'\{\s*"name"\s*:\s*"' + PROBE_NAME + r'"\s*,\s*"parameters"\s*:')


def _sign(*parts: str) -> re.Pattern[str]:
    """The probe call's text in a format: literal parts, any whitespace between them."""
    return re.compile(r"\s*".join(re.escape(p) for p in parts))


# What more formats write for the probe call, checked in order (before pythonic and the JSON formats, whose
# signs are looser: GLM's instructions show `<tool_call>{function-name}`, which reads as Hermes).
PROBE_SIGNS: tuple[tuple[re.Pattern[str], ToolFormat], ...] = (
    (_sign("<|START_ACTION|>[", '{"tool_call_id": "0", "tool_name": "' + PROBE_NAME + '"'), ToolFormat.COHERE),
    (_sign(f"<function={PROBE_NAME}>{{"), ToolFormat.FUNCTIONARY),
    (_sign("<tool_calls>[", "{", '"name": "' + PROBE_NAME + '"'), ToolFormat.APRIEL),
    (_sign("function call<|role_sep|>", '{"name": "' + PROBE_NAME + '"'), ToolFormat.GIGACHAT),
    (_sign("<|function_call|>", '{"name": "' + PROBE_NAME + '"'), ToolFormat.GIGACHAT),
    (_sign(f'<atem:invoke name="{PROBE_NAME}">'), ToolFormat.ATEM),
    (_sign("<|tools_prefix|>[", '{"' + PROBE_NAME + '":'), ToolFormat.APERTUS),
    (_sign(f"<|tool_call:name|>{PROBE_NAME}<|tool_call:args|>"), ToolFormat.SOLAR),
    (_sign(f"<tool_call:opensource>{PROBE_NAME}<tool_sep:opensource>"), ToolFormat.HY3),
    (_sign("<tool_call>", PROBE_NAME, "<arg_key>x</arg_key>"), ToolFormat.GLM),
    (_sign(f'<function name="{PROBE_NAME}"><param name="x">'), ToolFormat.MINICPM),
)


def read_format(text: str) -> ToolFormat | None:
    """The format a rendered probe shows, or None."""
    if f"<|tool_call>call:{PROBE_NAME}{{" in text:
        return ToolFormat.GEMMA
    if xml.DEEPSEEK_V4.function_tag(PROBE_NAME) in text:  # both DeepSeek blocks hold the same invoke tag
        return ToolFormat.DEEPSEEK_V32 if xml.DEEPSEEK_V32.open in text else ToolFormat.DEEPSEEK_V4
    if f'{minimax_tree.MARK}<{minimax_tree.INVOKE}{PROBE_NAME}">' in text:
        return ToolFormat.MINIMAX_TREE
    if xml.MINIMAX.open in text and xml.MINIMAX.function_tag(PROBE_NAME) in text:
        return ToolFormat.MINIMAX_XML
    if f'{xml.KIMI_K3.function}{PROBE_NAME}" index=' in text:
        return ToolFormat.KIMI_K3
    if f"{kimi.CALL_BEGIN}{kimi.PREFIX}{PROBE_NAME}:" in text:
        return ToolFormat.KIMI
    if _MINIMAX_JSON.search(text):
        return ToolFormat.MINIMAX_JSON
    if f"to=functions.{PROBE_NAME}" in text:
        return ToolFormat.HARMONY
    if "[TOOL_CALLS]" in text:
        return ToolFormat.MISTRAL_ARGS if "[ARGS]" in text else ToolFormat.MISTRAL
    if f"<function={PROBE_NAME}>" in text and "<parameter=x>" in text:
        return ToolFormat.SEED_XML if "<seed:tool_call>" in text else ToolFormat.XML
    for sign, fmt in PROBE_SIGNS:
        if sign.search(text):
            return fmt
    if f"<|tool_call_start|>[{PROBE_NAME}(" in text:
        return ToolFormat.PYTHONIC
    if "<TOOLCALL>" in text:
        return ToolFormat.NEMOTRON
    if _HERMES.search(text):
        return ToolFormat.HERMES
    if "<|tool_call|>" in text:
        return ToolFormat.GRANITE
    if _LLAMA3.search(text) or "<|python_tag|>" in text:
        return ToolFormat.LLAMA3
    return None
