"""Which thinking budget a chat gets (the engine enforces it: serve/engine/budget.py).

A request may set one (`thinking_budget_tokens`; Anthropic's `thinking.budget_tokens`). Without one, thinking is
unbounded, except where a grammar holds the answer (a forced tool call, a JSON response format): there the answer
can only begin once the thinking ends, so a model that never ends it would spend max_tokens and give nothing.
Such a chat may think for half of its max_tokens; the other half is the answer's.
"""

from __future__ import annotations

from serve.chat.channels import THINK_TAGS, Format, Thinking, ThinkTags
from serve.engine.budget import ThinkBudget

# (open, close, starts inside) for each way an output thinks; a thinking block's markers are its family's
MARKERS = {
    Thinking.OPEN: ("<think>", "</think>", True),
    Thinking.MAY: ("<think>", "</think>", False),
    Thinking.HARMONY: ("<|channel|>analysis<|message|>", "<|end|>", False),
}
BLOCK = {Thinking.OPEN, Thinking.MAY}
# harmony without tools: the end of the analysis and the final message's header, so the answer follows (a tiny or
# confused model may open another analysis after <|end|>); with tools the model (or a forced call's grammar) picks
# the next message
HARMONY_TO_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"


def think_budget(
    requested: int | None,
    thinking: Thinking,
    forced_answer: bool,
    max_tokens: int,
    tools: bool,
    tags: ThinkTags = THINK_TAGS[Format.THINK],
    sealed: bool = False,
) -> ThinkBudget | None:
    """`sealed`: a grammar holds the answer, so once it begins a thinking marker in it is text (the channel parser's
    rule, ChannelParser.for_output): only the first block is thinking. Otherwise the budget covers every block the
    parser takes for thinking, and one opened after it is spent is closed at once."""
    markers = MARKERS.get(thinking)
    if markers is None:
        return None
    tokens = requested if requested is not None else max_tokens // 2 if forced_answer else None
    if tokens is None:
        return None
    open_, close, inside = (tags.open, tags.close, markers[2]) if thinking in BLOCK else markers
    if thinking is Thinking.HARMONY and not tools:
        close = HARMONY_TO_FINAL
    return ThinkBudget(tokens, open_, close, inside, only_first=sealed and thinking is not Thinking.HARMONY)
