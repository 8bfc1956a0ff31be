"""gpt-oss harmony calls: a message whose header names a recipient, `to=functions.NAME`, after the channel
(`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`) or in the role position
(`<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{...}<|call|>`).

serve/chat/channels.py already reads harmony headers (tolerantly, split anywhere) and tags every event with its
message's recipient and number; this adapter turns each addressed message into one call and passes every
other event on. `<|call|>` is an end-of-generation token, so generation stops after the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.chat.channels import Event
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, openai_id

FUNCTIONS = "functions."


@dataclass
class HarmonyCalls:
    new_id: IdMaker = openai_id
    calls: int = field(init=False, default=0)
    _message: int | None = field(init=False, default=None)  # the message the current call came from

    def feed(self, events: list[Event]) -> list[Event | CallStart | CallArgs]:
        out: list[Event | CallStart | CallArgs] = []
        for e in events:
            if e.recipient is None:
                out.append(e)
                continue
            if e.message != self._message:
                self._message = e.message
                out.append(CallStart(self.calls, self.new_id(self.calls), e.recipient.removeprefix(FUNCTIONS)))
                self.calls += 1
            if e.text:
                out.append(CallArgs(self.calls - 1, e.text))
        return out
