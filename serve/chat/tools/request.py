"""The tool part of a validated chat request: cross-field checks pydantic cannot make alone (a tool_choice
naming an unknown tool, a tool message answering no earlier call, two tools of one name), each a 400 naming
the field, and the `ToolRequest` the template and the grammar read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve.errors import InvalidRequest


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict[str, Any]]  # the client's tool objects, as the template renders them
    choice: str = "auto"  # auto, required or named
    name: str | None = None  # the tool a named choice names
    parallel: bool = True

    @property
    def offered(self) -> list[dict[str, Any]]:
        """The tools a call may name."""
        if self.name is None:
            return self.tools
        return [t for t in self.tools if t["function"]["name"] == self.name]


def tool_request(req: Any) -> ToolRequest | None:
    """None when the model may call no tool (no tools, or tool_choice none)."""
    check_history(req.messages)
    tools = req.tools or []
    names = [t.function.name for t in tools]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise InvalidRequest(f"two tools are named {name!r}", param=f"tools.{i}.function.name")
        seen.add(name)
    choice = req.tool_choice
    if choice is None or choice == "none" or choice == "auto":
        if not tools or choice == "none":
            return None
        return ToolRequest([t.as_sent for t in tools], "auto", None, req.parallel_tool_calls)
    if not tools:
        raise InvalidRequest("tool_choice asks for a tool call, but the request offers no tools", param="tool_choice")
    if choice == "required":
        return ToolRequest([t.as_sent for t in tools], "required", None, req.parallel_tool_calls)
    name = choice.function.name
    if name not in seen:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return ToolRequest([t.as_sent for t in tools], "named", name, False)


def check_history(messages: list[Any]) -> None:
    """Every tool message answers a call made earlier in the conversation."""
    calls: set[str] = set()
    for i, m in enumerate(messages):
        for c in m.tool_calls or ():
            calls.add(c.id)
        if m.role == "tool" and m.tool_call_id not in calls:
            raise InvalidRequest(
                f"this tool message answers {m.tool_call_id!r}, which no earlier assistant message called",
                param=f"messages.{i}.tool_call_id",
            )
