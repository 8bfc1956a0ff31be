"""Cohere Command R7B / Command A / Cohere2 calls: `<|START_ACTION|>[{"tool_call_id": "0", "tool_name": ...,
"parameters": {...}}, ...]<|END_ACTION|>`. The answer is wrapped in `<|START_RESPONSE|>...<|END_RESPONSE|>`,
markers that never reach the answer text."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<|START_ACTION|>", "<|END_ACTION|>"
# markers around the answer and the plan, kept out of the answer text (the channel parser takes them first: the
# plan is the thinking, channels.THINK_TAGS)
RESPONSE = ("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_THINKING|>", "<|END_THINKING|>")

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OPEN,
        (State.AFTER, OPEN): Action.OPEN,
        (State.AFTER, CLOSE): Action.CLOSE,
        **{(state, marker): Action.CLOSE for state in (State.TEXT, State.AFTER) for marker in RESPONSE},
    },
    name_keys=("tool_name",),
    args_keys=("parameters",),
)
