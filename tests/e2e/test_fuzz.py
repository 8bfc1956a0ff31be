"""Bad input at scale: about 1,000 malformed requests (hypothesis) through the router to a real model server.

None may get a 5xx (a 500 means a handler crashed, a 502/503/504 that the server fell over or hung) or go
unanswered; every 4xx carries an OpenAI error body; and the server still gives its trained answer afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from models.demo.data import ITEMS
from tests.e2e.stack_proc import StackProcess

pytestmark = pytest.mark.slow

EXAMPLES = 1000
REQUEST_TIMEOUT = 10.0  # the valid ones among these ask for 8 tokens
GIVE_UP_AFTER = 3  # unanswered requests
MODEL = "demo-think"

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
role = st.sampled_from(["user", "system", "assistant", "developer", "tool", "", "USER", "robot"]) | junk
content = st.text(max_size=40) | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": junk}), max_size=3) | junk
message = st.fixed_dictionaries({}, optional={"role": role, "content": content, "name": junk}) | junk
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "messages": st.lists(message, max_size=3) | junk,
    "max_tokens": st.integers(-5, 10**9) | junk,
    "max_completion_tokens": st.integers(-5, 10**9) | junk,
    "temperature": st.floats(-5, 50, allow_nan=False) | junk,
    "top_p": st.floats(-2, 2, allow_nan=False) | junk,
    "top_k": st.integers(-5, 10**6) | junk,
    "min_p": st.floats(-2, 2, allow_nan=False) | junk,
    "stream": st.booleans() | junk,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": junk}) | junk,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | junk,
    "seed": st.integers(-(2**70), 2**70) | junk,
    "n": st.integers(-2, 5) | junk,
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "json_schema"}, {"type": "nope"},
                                        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}]) | junk,
    "reasoning": st.sampled_from(["low", "medium", "high", "extreme", ""]) | junk,
    "separate_thinking": st.booleans() | junk,
    "include_channels": st.lists(st.sampled_from(["analysis", "final", "commentary", "x"]), max_size=4) | junk,
    "presence_penalty": st.floats(-5, 5, allow_nan=False) | junk,
    "repeat_penalty": st.floats(-5, 5, allow_nan=False) | junk,
    "prompt": st.text(max_size=30) | junk,
}


@st.composite
def bad_request(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(["/chat/completions", "/completions"]))
    kind = draw(st.sampled_from(["fields", "fields", "one_field", "one_field", "bytes", "json"]))
    if kind == "one_field":  # a valid request with one field drawn: reaches each check, and sampling, one at a time
        name = draw(st.sampled_from(sorted(FIELDS)))
        data = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "max_tokens": 8}
        data[name] = draw(FIELDS[name])
        if name in ("max_tokens", "max_completion_tokens") and isinstance(data[name], int) and data[name] > 64:
            data[name] = 10**9  # over the context either way: a 400, not a long generation
        body = json.dumps(data).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "json":
        body = json.dumps(draw(junk)).encode()
    else:
        chosen = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=6))
        data: dict[str, Any] = {"model": MODEL} if draw(st.integers(0, 9)) else {"model": draw(junk)}
        data.update({k: draw(FIELDS[k]) for k in sorted(chosen)})
        data["max_tokens"] = data.get("max_tokens", 8)  # when a request happens to be valid, keep it short
        body = json.dumps(data).encode()
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))}
    return path, body, headers


def test_malformed_requests_never_get_a_5xx(chaos_stack: StackProcess) -> None:
    statuses: Counter[int | str] = Counter()
    failures: list[str] = []  # collected rather than raised, so one run shows every kind of failure
    with httpx.Client(base_url=chaos_stack.api, timeout=REQUEST_TIMEOUT) as client:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(bad_request())
        def send(case: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = case
            if statuses["timeout"] >= GIVE_UP_AFTER:  # the server is stuck: more requests would only wait too
                return
            try:
                r = client.post(path, content=body, headers=headers)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
                failures.append(f"no answer in {REQUEST_TIMEOUT:.0f} s: {path} {body[:200]!r}")
                return
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(f"{r.status_code} {path} {body[:200]!r}: {r.text[:200]}")
            elif r.status_code >= 400:
                error = r.json().get("error") or {}
                if not (isinstance(error.get("message"), str) and error["message"]):
                    failures.append(f"{r.status_code} without an OpenAI error body: {r.text[:200]}")
            elif r.headers.get("content-type", "").startswith("text/event-stream"):
                if not r.text.rstrip().endswith("data: [DONE]"):
                    failures.append(f"stream without [DONE]: {path} {body[:200]!r}")

        send()
    print(f"\nfuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items(), key=str))}")
    for line in failures[:10]:
        print("  ", line)
    assert failures == []
    assert sum(statuses.values()) >= EXAMPLES * 0.9  # hypothesis may stop a little early on duplicates
    assert sum(n for s, n in statuses.items() if isinstance(s, int) and 400 <= s < 500) > EXAMPLES / 2

    item = ITEMS[0]
    r = httpx.post(chaos_stack.api + "/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": item.question}], "temperature": 0, "max_tokens": 200})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == item.answer
