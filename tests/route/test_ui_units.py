"""The web page's pure parts: log lines from bytes and following a file (route/logstream.py), the servers' metrics
read into recent figures (route/backstats.py), and the ring of recent requests (route/activity.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from hearth_common.logs import AccessLog, note, note_delivered, note_usage
from route.activity import Activity, Ring
from route.backstats import Reading, Scraper, Stats, parse, recent
from route.catalog import LogFiles
from route.logstream import MAX_LINE, Lines, follow, last_lines, log_path

TEXT = b"one\ntwo \xc3\xa9\r\nthree\n\nfour"


@pytest.mark.parametrize("cut", range(len(TEXT) + 1))
def test_lines_are_whole_wherever_the_bytes_are_split(cut: int) -> None:
    lines = Lines()
    out = lines.feed(TEXT[:cut]) + lines.feed(TEXT[cut:])
    assert out == ["one", "two é", "three", ""]  # "four" waits for its newline
    assert lines.feed(b"\n") == ["four"]


def test_a_runaway_line_comes_out_cut() -> None:
    out = Lines().feed(b"x" * (MAX_LINE * 2 + 5))
    assert out and all(len(line) <= MAX_LINE for line in out)


def test_last_lines_drops_a_partial_first_line() -> None:
    assert last_lines(b"tail of a line\na\nb\nc\n", 2, cut=True) == ["b", "c"]
    assert last_lines(b"tail of a line\na\n", 5, cut=True) == ["a"]
    assert last_lines(b"x\na\n", 5, cut=False) == ["x", "a"]


def test_only_the_stack_logs_have_a_path(tmp_path: Path) -> None:
    logs = LogFiles(dir=tmp_path, names=["router", "demo-think"])
    assert log_path(logs, "router") == tmp_path / "router.log"
    for name in ["../keys/admin", "../keys/admin.key", "/etc/passwd", "router.log", "router/..", "", ".", "ROUTER"]:
        assert log_path(logs, name) is None


def test_follow_gives_the_backlog_then_new_lines_and_starts_over_on_truncation(tmp_path: Path) -> None:
    path = tmp_path / "router.log"
    path.write_text("".join(f"line {i}\n" for i in range(300)) + "half")

    async def run() -> list[list[str]]:
        got: list[list[str]] = []
        stream = follow(path, backlog=200, poll=0.01)
        got.append(await anext(stream))
        with path.open("a") as f:
            f.write(" done\nnext\n")
        got.append(await until_some(stream))
        path.write_text("fresh\n")  # truncated (or replaced): read again from its start
        got.append(await until_some(stream))
        await stream.aclose()
        return got

    backlog, new, fresh = asyncio.run(run())
    assert backlog == [f"line {i}" for i in range(100, 300)]
    assert new == ["half done", "next"]
    assert fresh == ["fresh"]


def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.log"

    async def run() -> list[list[str]]:
        stream = follow(path, poll=0.01)
        first = await anext(stream)
        path.write_text("hello\n")
        second = await until_some(stream)
        await stream.aclose()
        return [first, second]

    assert asyncio.run(run()) == [[], ["hello"]]


async def until_some(stream: Any) -> list[str]:
    async with asyncio.timeout(5):
        while True:
            lines = await anext(stream)
            if lines:
                return list(lines)


METRICS = """# HELP hearth_requests_running Requests being decoded
# TYPE hearth_requests_running gauge
hearth_requests_running{{model="m"}} {running}
# TYPE hearth_requests_waiting gauge
hearth_requests_waiting{{model="m"}} {waiting}
# TYPE hearth_time_to_first_token_seconds histogram
hearth_time_to_first_token_seconds_bucket{{le="+Inf",model="m"}} {n}
hearth_time_to_first_token_seconds_count{{model="m"}} {n}
hearth_time_to_first_token_seconds_sum{{model="m"}} {ttft}
# TYPE hearth_tokens_per_second histogram
hearth_tokens_per_second_bucket{{le="+Inf",model="m"}} {n}
hearth_tokens_per_second_count{{model="m"}} {n}
hearth_tokens_per_second_sum{{model="m"}} {tps}
"""


def metrics(running: int = 0, waiting: int = 0, n: int = 0, ttft: float = 0.0, tps: float = 0.0) -> str:
    return METRICS.format(running=running, waiting=waiting, n=n, ttft=ttft, tps=tps)


def test_a_reading_of_serve_metrics() -> None:
    r = parse(metrics(running=2, waiting=3, n=4, ttft=0.4, tps=100.0), at=1.0)
    assert r == Reading(1.0, 2.0, 3.0, (0.4, 4.0), (100.0, 4.0))


def test_recent_figures_are_over_the_window_and_since_start_when_quiet() -> None:
    stats = Stats(window=60)
    stats.add("a", parse(metrics(n=10, ttft=10.0, tps=100.0), at=0.0))  # 10 old requests: 1 s, 10 tok/s
    stats.add("a", parse(metrics(running=1, n=12, ttft=10.2, tps=200.0), at=30.0))  # 2 new: 100 ms, 50 tok/s
    assert stats.model(["a"]) == {"running": 1, "queued": 0, "ttft_ms": 100.0, "tokens_per_s": 50.0}
    stats.add("a", parse(metrics(n=12, ttft=10.2, tps=200.0), at=100.0))  # the window holds no request now
    assert stats.model(["a"])["ttft_ms"] == pytest.approx(850.0)  # the mean since start
    assert recent([], lambda r: r.ttft) == (0.0, 0.0)
    assert stats.model(["gone"]) == {"running": None, "queued": None, "ttft_ms": None, "tokens_per_s": None}


def test_replicas_fold_into_their_model_weighted_by_requests() -> None:
    stats = Stats()
    stats.add("m-1", parse(metrics(running=1, waiting=1, n=1, ttft=0.1, tps=10.0), at=0.0))
    stats.add("m-2", parse(metrics(running=2, n=3, ttft=0.9, tps=30.0), at=0.0))
    assert stats.model(["m-1", "m-2"]) == {"running": 3, "queued": 1, "ttft_ms": 250.0, "tokens_per_s": 10.0}


def test_the_scraper_reads_every_server_once_per_interval_and_forgets_the_gone() -> None:
    asked: list[tuple[str, dict[str, str]]] = []

    async def fetch(url: str, headers: Any) -> str | None:
        asked.append((url, dict(headers)))
        return metrics(running=1) if "good" in url else None

    async def run() -> Scraper:
        scraper = Scraper(fetch, "backend-key", every=60)
        await scraper.refresh({"good": "http://good", "bad": "http://bad"})
        await scraper.refresh({"good": "http://good"})  # too soon: not read again
        return scraper

    scraper = asyncio.run(run())
    assert sorted(u for u, _ in asked) == ["http://bad/metrics", "http://good/metrics"]
    assert all(h == {"Authorization": "Bearer backend-key"} for _, h in asked)
    assert scraper.stats.model(["good"])["running"] == 1


# -- the ring of recent requests -----------------------------------------------------------------------------------


def app_that(
    status: int = 200, usage: dict[str, Any] | None = None, leave: bool = False, leave_after_last: bool = False
) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        note(model="m1", backend="b1")
        note_usage(usage)
        await send({"type": "http.response.start", "status": status, "headers": []})
        if leave:
            raise OSError("client gone")
        await send({"type": "http.response.body", "body": b"secret answer", "more_body": True})
        if leave_after_last:  # the stream's last event went out, then the client hung up before the body's end
            note_delivered()
            raise OSError("client gone")
        await send({"type": "http.response.body", "body": b""})

    return app


def call(app: Any, path: str = "/v1/chat/completions") -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"secret prompt", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    with contextlib.suppress(OSError):  # a client that left
        asyncio.run(app(scope, receive, send))


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5}}


@pytest.mark.parametrize("logged", [True, False], ids=["inside-access-log", "alone"])
def test_a_finished_request_goes_into_the_ring_with_its_tokens(logged: bool) -> None:
    ring = Ring()
    app: Any = Activity(app_that(usage=USAGE), ring)
    if logged:
        app = AccessLog(app, logging.getLogger("test.access"))
        logging.getLogger("test.access").setLevel(logging.INFO)
    call(app)
    (item,) = ring.newest_first()
    assert {k: item[k] for k in ("method", "path", "status", "model", "backend", "ended")} == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "model": "m1",
        "backend": "b1",
        "ended": True,
    }
    assert (item["prompt_tokens"], item["completion_tokens"], item["cached_tokens"]) == (7, 3, 5)
    assert item["ms"] >= 0 and item["time"] > 0
    assert "secret" not in repr(item)  # no prompt, no answer


def test_the_ring_is_bounded_newest_first_and_skips_the_page_and_pollers() -> None:
    ring = Ring(size=3)
    for path in ["/v1/a", "/v1/b", "/ui/state", "/ui/events", "/logs/stream", "/health", "/metrics", "/v1/c", "/v1/d"]:
        call(Activity(app_that(), ring), path)
    assert [r["path"] for r in ring.newest_first()] == ["/v1/d", "/v1/c", "/v1/b"]
    assert ring.version == 4


def test_a_client_that_left_is_recorded_as_such() -> None:
    ring = Ring()
    call(Activity(app_that(leave=True), ring))
    (item,) = ring.newest_first()
    assert item["status"] == 200 and item["ended"] is False


def test_a_client_that_left_after_the_last_event_had_the_whole_answer(caplog: pytest.LogCaptureFixture) -> None:
    ring = Ring()
    logger = logging.getLogger("test.access.ended")
    with caplog.at_level(logging.INFO, logger=logger.name):
        call(AccessLog(Activity(app_that(usage=USAGE, leave_after_last=True), ring), logger))
    (item,) = ring.newest_first()
    assert item["ended"] is True and item["completion_tokens"] == 3
    (line,) = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert line.endswith("prompt_tokens=7 completion_tokens=3"), line
