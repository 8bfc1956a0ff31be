"""The README's command on the built-in stack: `python -m stack` (what `just serve` runs), then the `openai` client
through the router gets demo-think's and demo-harmony's trained answers with the thinking separated, whole and
streamed, sync and async, and demo-vision's colour of a picture; the printed curl line works; Ctrl-C stops
everything."""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from hearth_common.procs import free_port
from models.demo.data import ITEMS, Item, weather_answer, weather_result
from models.demo.vision import COLOURS, QUESTION, answer
from testkit.images import png
from testkit.stack import DEMO, StackProcess, alive, demo_models_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
]

# A few of each kind: a capital, a colour, a fact, and arithmetic (which has a harmony commentary message).
PICKS = [
    ITEMS[0],
    next(i for i in ITEMS if "colour" in i.question),
    next(i for i in ITEMS if "legs" in i.question),
    next(i for i in ITEMS if i.commentary),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    proc = StackProcess(["--port", str(free_port())], tmp_path_factory.mktemp("stack"))
    yield proc
    proc.stop()


def expected(model: str, item: Item) -> dict[str, str]:
    """What the trained model thinks and answers, as API.md shapes it (harmony at the default level, medium)."""
    if model == "demo-think":
        return {"analysis": item.reasoning, "final": item.answer}
    channels = {"analysis": item.analysis("medium"), "final": item.answer}
    if item.commentary:
        channels["commentary"] = item.commentary
    return channels


def reasoning_of(channels: dict[str, str]) -> str:
    return "\n\n".join(channels[c] for c in ("analysis", "commentary") if c in channels)


@pytest.mark.parametrize("model", ["demo-think", "demo-harmony"])
def test_whole_and_streamed_answers_through_the_router(stack: StackProcess, model: str) -> None:
    client = OpenAI(base_url=stack.api, api_key="unused", max_retries=0, timeout=60)
    for item in PICKS:
        want = expected(model, item)
        messages = [{"role": "user", "content": item.question}]
        whole = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=200)
        message = whole.choices[0].message
        extra = message.model_extra or {}
        assert message.content == item.answer, (model, item.question, message)
        assert extra["channels"] == want
        assert extra["reasoning_content"] == reasoning_of(want)
        assert (whole.model_extra or {})["_routing"]["backend"] == model

        content, thinking, by_channel = [], [], {}
        stream = client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=200, stream=True
        )
        for chunk in stream:
            for choice in chunk.choices:
                delta = choice.delta.model_extra or {}
                if choice.delta.content:
                    content.append(choice.delta.content)
                if delta.get("reasoning_content"):
                    thinking.append(delta["reasoning_content"])
                    by_channel.setdefault(delta.get("channel"), []).append(delta["reasoning_content"])
        assert "".join(content) == item.answer
        assert "".join(by_channel.get("analysis", [])) == want["analysis"]
        assert "".join(by_channel.get("commentary", [])) == want.get("commentary", "")


def test_demo_vision_names_the_colour_through_the_router(stack: StackProcess) -> None:
    """A solid picture of each trained colour, as a `data:` URL through the router: its trained answer."""
    client = OpenAI(base_url=stack.api, api_key="unused", max_retries=0, timeout=60)
    for colour, rgb in COLOURS.items():
        url = "data:image/png;base64," + base64.b64encode(png(48, 48, rgb)).decode()
        content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
        said = client.chat.completions.create(
            model="demo-vision", messages=[{"role": "user", "content": content}], temperature=0, max_tokens=12
        )
        assert said.choices[0].message.content == answer(colour), colour
        assert (said.model_extra or {})["_routing"]["backend"] == "demo-vision"


def test_async_client_concurrent_across_both_models(stack: StackProcess) -> None:
    async def ask(client: AsyncOpenAI, model: str, item: Item) -> tuple[str, Item, str | None]:
        r = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": item.question}], temperature=0, max_tokens=200
        )
        return model, item, r.choices[0].message.content

    async def run() -> list[tuple[str, Item, str | None]]:
        async with AsyncOpenAI(base_url=stack.api, api_key="unused", max_retries=0, timeout=60) as client:
            jobs = [ask(client, m, i) for m in ("demo-think", "demo-harmony") for i in ITEMS[:8]]
            return await asyncio.gather(*jobs)

    results = asyncio.run(run())
    assert len(results) == 16
    assert [(m, i.answer) for m, i, _ in results] == [(m, a) for m, _, a in results]


def test_models_listed_and_curl_line_works(stack: StackProcess) -> None:
    ids = {m["id"] for m in httpx.get(stack.api + "/models", timeout=10).json()["data"]}
    assert {"demo-think", "demo-harmony", "demo-vision"} <= ids
    line = next(x for x in stack.console().splitlines() if x.startswith("curl "))
    out = subprocess.run([*shlex.split(line), "-s"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"content": "Paris"' in out.stdout.replace('":"', '": "'), out.stdout


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """Its own stack, so stopping it does not disturb the module's: exit 0, every child gone, state says stopped."""
    proc = StackProcess(["--port", str(free_port())], tmp_path / "stack")
    pids = proc.pids()
    assert len(pids) == 4  # the router and three model servers
    assert proc.stop() == 0
    assert proc.orphans == []
    assert "stack: stopped" in proc.console()
    assert {s["status"] for s in proc.state()["servers"]} == {"stopped"}


def test_readme_python_client_examples_run(stack: StackProcess) -> None:
    """The README's `openai` examples, run as written against this stack (only the URL changes)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 5
    france, seven = ITEMS[0], next(i for i in ITEMS if i.question == "What is 7 + 5?")
    weather = weather_answer("Oslo", weather_result("snowy", 3))  # the tool round trip
    red = answer("red")  # the picture
    for block, expected in zip(blocks, [france.answer, seven.answer, weather, red, france.answer], strict=True):
        code = block.replace("http://127.0.0.1:8080/v1", stack.api)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert expected in out.stdout and "None" not in out.stdout.splitlines()[0], out.stdout


def test_supervisor_killed_takes_its_children_along(tmp_path: Path) -> None:
    """Even SIGKILL of the supervisor (no chance to clean up) leaves no server running: the children get SIGTERM."""
    proc = StackProcess(["--port", str(free_port())], tmp_path / "stack")
    pids = proc.pids()
    proc.proc.kill()
    proc.proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    proc.stop()  # cleans up whatever is left, so a failure here does not leak processes
    assert left == []


def test_keys_from_the_stack_file(tmp_path: Path) -> None:
    """The router requires api_key of clients and admin_key on its cluster API; the model servers get a backend key
    of the stack's own, never the client's; no key is on a command line, printed, or in a world-readable file."""
    path = tmp_path / "stack.toml"
    path.write_text(
        f'[router]\nport = 0\napi_key = "sk-test"\nadmin_key = "adm"\n'
        f'[[models]]\nname = "demo-think"\nsource = "{DEMO / "demo-think"}"\nthreads = 1\n'
    )
    path.chmod(0o600)
    proc = StackProcess([str(path)], tmp_path / "state")
    try:
        body = {"model": "demo-think", "messages": [{"role": "user", "content": ITEMS[0].question}], "temperature": 0}
        assert httpx.post(proc.api + "/chat/completions", json=body, timeout=60).status_code == 401
        ok = OpenAI(base_url=proc.api, api_key="sk-test", max_retries=0).chat.completions.create(**body)
        assert ok.choices[0].message.content == ITEMS[0].answer
        server = proc.server("demo-think")
        direct = httpx.post(
            server["url"] + "/v1/chat/completions", json=body, timeout=60, headers={"Authorization": "Bearer sk-test"}
        )
        assert direct.status_code == 401  # the client's key is the router's business only
        assert httpx.get(proc.router + "/backends", timeout=10).status_code == 401
        assert httpx.get(proc.router + "/status", timeout=10).status_code == 401
        listed = httpx.get(proc.router + "/backends", headers={"Authorization": "Bearer adm"}, timeout=10).json()
        assert [b["name"] for b in listed["backends"]] == ["demo-think"]
        secrets = (b"sk-test", (proc.state_dir / "keys" / "backend.key").read_bytes().strip())
        for pid in proc.pids():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert not any(s in cmdline for s in secrets) and b"Bearer adm" not in cmdline, cmdline
        assert not any(s in proc.console().encode() for s in secrets)
        assert "$HEARTH_API_KEY" in next(x for x in proc.console().splitlines() if x.startswith("curl "))
        for log in (proc.state_dir / "logs").iterdir():
            assert log.stat().st_mode & 0o077 == 0, log
            assert not any(s in log.read_bytes() for s in secrets), log
    finally:
        proc.stop()
