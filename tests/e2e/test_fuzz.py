"""Bad input at scale: about 1,000 malformed requests (hypothesis), each to one of both edges: the router, or a
model server directly (with the stack's backend key).

None may get a 5xx (a 500 means a handler crashed, a 502/503/504 that the server fell over or hung) or go
unanswered; every 4xx carries an OpenAI error body; no backend is ejected (a client's mistake is never the
backend's failure); and the server still gives its trained answer afterwards. Among the bodies: JSON that is valid
but crashed handlers before (lone surrogates, nesting past the recursion limit, integers past 4,300 digits,
Infinity, numbers as strings). A second test floods headers and trickles bodies at both edges.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from models.demo.data import ITEMS
from testkit.raw_http import read_all
from testkit.stack import StackProcess

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
content = (
    st.text(max_size=40) | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": junk}), max_size=3) | junk
)
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
    "response_format": st.sampled_from(
        [
            {"type": "json_object"},
            {"type": "json_schema"},
            {"type": "nope"},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}},
            # schemas that crashed or hung llama.cpp's grammar code (issue 27): now 400s naming the limit
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a{1,30000}$"}},
            },
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "maxItems": 100000}}},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "minItems": 100000000}}},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 10**9}}},
        ]
    )
    | junk,
    "reasoning": st.sampled_from(["low", "medium", "high", "extreme", ""]) | junk,
    "separate_thinking": st.booleans() | junk,
    "include_channels": st.lists(st.sampled_from(["analysis", "final", "commentary", "x"]), max_size=4) | junk,
    "presence_penalty": st.floats(-5, 5, allow_nan=False) | junk,
    "repeat_penalty": st.floats(-5, 5, allow_nan=False) | junk,
    "prompt": st.text(max_size=30) | junk,
}


NUMERIC = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
]


@st.composite
def nasty_body(draw: st.DrawFn) -> bytes:
    """Valid JSON (to Python) that crashed a handler or slipped through before: one trap in an otherwise fine request."""
    trap = draw(st.sampled_from(["surrogate", "nesting", "digits", "constant", "string_number"]))
    field = draw(st.sampled_from(NUMERIC))
    fine = f'"model": "{MODEL}", "max_tokens": 8'
    if trap == "surrogate":
        code = draw(st.integers(0xD800, 0xDFFF))
        text = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='\\"'), max_size=10))
        return (
            f'{{{fine}, "messages": [{{"role": "user", "content": "{text}\\u{code:04x}"}}], "prompt": "\\u{code:04x}"}}'
        ).encode()
    if trap == "nesting":
        depth = draw(st.integers(65, 5000))
        return ('{{{}, "messages": {}{}}}'.format(fine, "[" * depth, "]" * depth)).encode()
    if trap == "digits":
        return ('{{{}, "prompt": "hi", "{}": {}}}'.format(fine, field, "9" * draw(st.integers(4301, 6000)))).encode()
    if trap == "constant":
        value = draw(st.sampled_from(["Infinity", "-Infinity", "NaN", "1e999", "-1e400"]))
        return (
            f'{{{fine}, "prompt": "hi", "messages": [{{"role": "user", "content": "hi"}}], "{field}": {value}}}'
        ).encode()
    value = draw(st.sampled_from(['"8"', '"0.5"', '"1"', "true", "[8]", '{"v": 8}']))
    return (
        '{{"model": "{}", "prompt": "hi", "messages": [{{"role": "user", "content": "hi"}}], "{}": {}}}'.format(
            MODEL, draw(st.sampled_from(["max_tokens", "temperature", "repeat_penalty", "stream", "seed"])), value
        )
    ).encode()


@st.composite
def bad_request(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(["/chat/completions", "/completions"]))
    kind = draw(st.sampled_from(["fields", "fields", "one_field", "one_field", "bytes", "json", "nasty", "nasty"]))
    if kind == "nasty":
        body = draw(nasty_body())
    elif kind == "one_field":  # a valid request with one field drawn: reaches each check, and sampling, one at a time
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
    headers = {
        "Content-Type": draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    }
    return path, body, headers


def ejections(stack: StackProcess) -> dict[str, int]:
    backends = httpx.get(stack.router + "/status", headers=stack.admin, timeout=10).json()["backends"]
    return {b["name"]: b["ejections"] for b in backends}


def test_malformed_requests_never_get_a_5xx(chaos_stack: StackProcess) -> None:
    chaos_stack.wait_healthy()
    ejected_before = ejections(chaos_stack)
    statuses: Counter[int | str] = Counter()
    failures: list[str] = []  # collected rather than raised, so one run shows every kind of failure
    server = chaos_stack.server("demo-think-2")["url"] + "/v1"
    with (
        httpx.Client(base_url=chaos_stack.api, timeout=REQUEST_TIMEOUT) as router,
        httpx.Client(base_url=server, timeout=REQUEST_TIMEOUT, headers=chaos_stack.backend_auth) as direct,
    ):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(bad_request(), st.booleans())
        def send(case: tuple[str, bytes, dict[str, str]], at_router: bool) -> None:
            path, body, headers = case
            if statuses["timeout"] >= GIVE_UP_AFTER:  # the server is stuck: more requests would only wait too
                return
            client = router if at_router else direct
            try:
                r = client.post(path, content=body, headers=headers)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
                failures.append(f"no answer in {REQUEST_TIMEOUT:.0f} s: {path} {body[:200]!r}")
                return
            edge = "router" if at_router else "server"
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(f"{r.status_code} at the {edge} {path} {body[:200]!r}: {r.text[:200]}")
            elif r.status_code >= 400 and not openai_error(r):
                failures.append(f"{r.status_code} at the {edge} without an OpenAI error body: {r.text[:200]}")
            elif r.headers.get("content-type", "").startswith("text/event-stream") and not r.text.rstrip().endswith(
                "data: [DONE]"
            ):
                failures.append(f"stream without [DONE]: {path} {body[:200]!r}")

        send()
    print(f"\nfuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items(), key=str))}")
    for line in failures[:10]:
        print("  ", line)
    assert failures == []
    assert sum(statuses.values()) >= EXAMPLES * 0.9  # hypothesis may stop a little early on duplicates
    assert sum(n for s, n in statuses.items() if isinstance(s, int) and 400 <= s < 500) > EXAMPLES / 2
    assert ejections(chaos_stack) == ejected_before  # nobody was ejected for a client's mistake
    assert_trained_answer(chaos_stack)


def openai_error(r: httpx.Response) -> bool:
    try:
        error = r.json().get("error")
    except ValueError:
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and bool(error["message"])


def assert_trained_answer(chaos_stack: StackProcess) -> None:
    item = ITEMS[0]
    r = httpx.post(
        chaos_stack.api + "/chat/completions",
        timeout=60,
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": item.question}],
            "temperature": 0,
            "max_tokens": 200,
        },
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == item.answer


def raw_exchange(
    url: str, head: bytes, piece: bytes = b"", limit: int = 0, every: float = 0.0, wait: float = 30.0
) -> bytes:
    """Send `head`, then `piece` again and again (every `every` s, up to `limit` bytes) until the server answers or
    closes; the answer's bytes (empty when it closed without one)."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=wait)
    s.sendall(head)
    sent, deadline = 0, time.monotonic() + wait
    try:
        while sent < limit and time.monotonic() < deadline and not select.select([s], [], [], every)[0]:
            s.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    out = read_all(s, OSError)  # a timeout ends the wait as a close does
    s.close()
    return out


def test_header_floods_and_slow_bodies_at_both_edges(chaos_stack: StackProcess) -> None:
    """Neither edge gives a 5xx, grows without bound or holds a connection for long; both answer afterwards."""
    chaos_stack.wait_healthy()
    ejected_before = ejections(chaos_stack)
    edges = {"router": chaos_stack.router, "server": chaos_stack.server("demo-think-2")["url"]}
    post = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = {
        "huge header": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 64 * 2**20, 0.0),
        "many headers": (b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-H: 1\r\n", 2**20, 0.0),
        "slow headers": (b"GET /health HTTP/1.1\r\n", b"X-Slow: 1\r\n", 2**20, 0.5),
        "short body": (post + b"Content-Length: 100000\r\n\r\n{", b"", 0, 0.0),
        "slow body": (post + b"Content-Length: 100000\r\n\r\n", b" ", 2**20, 0.5),
        "endless body": (
            post + b"Transfer-Encoding: chunked\r\n\r\n",
            b"4000\r\n" + b" " * 0x4000 + b"\r\n",
            256 * 2**20,
            0.0,
        ),
    }

    def attack(edge: str, name: str) -> str | None:
        head, piece, limit, every = cases[name]
        started = time.monotonic()
        raw = raw_exchange(edges[edge], head, piece, limit, every, wait=90)
        took = time.monotonic() - started
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None
        if (status is not None and not 400 <= status < 500) or took > 75:  # closed without a word is fine too
            return f"{edge} {name}: {raw[:120]!r} after {took:.1f} s"
        if edge == "router" and (status is None or b'{"error": {"message": ' not in raw):
            return f"router {name}: no OpenAI error: {raw[:200]!r}"
        return None

    with ThreadPoolExecutor(len(edges) * len(cases)) as pool:  # the slow ones wait out their timeouts together
        results = list(pool.map(lambda job: attack(*job), [(e, n) for e in edges for n in cases]))
    assert [r for r in results if r] == []
    assert ejections(chaos_stack) == ejected_before
    for url in edges.values():
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert_trained_answer(chaos_stack)
