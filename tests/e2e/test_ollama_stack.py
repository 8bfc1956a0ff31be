"""Apps that speak only Ollama, on the stack's port: the official `ollama` Python client (and the `ollama` npm
package under node, when npm can install it) against `python -m stack` with the demo models, demo-harmony loaded on
demand (preload = false).

What it checks: /api/tags lists both models with their GGUF's details; chat and generate whole and streamed through
the router (the streamed text joins to the whole one, which is the trained answer); /api/show; /api/ps with an
expiry from keep_alive; a generate with only `model` loads an unloaded model and one with keep_alive 0 unloads it
(then /api/ps and /v1/models agree); a request with keep_alive 0 unloads after it; an unknown model's 404; pull
refused; bad input at every /api/ path is never a 5xx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import ollama
import pytest

from models.demo.data import ITEMS
from testkit.procs import wait_until
from testkit.stack import DEMO, StackProcess, demo_models_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
]

THINK, HARMONY = "demo-think", "demo-harmony"
ITEM = ITEMS[0]
GREEDY = {"temperature": 0, "num_predict": 200}
PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    folder = tmp_path_factory.mktemp("ollama-stack")
    models = "".join(
        f'[[models]]\nname = "{name}"\nsource = "{DEMO / name}"\nctx_size = 512\nmax_concurrent = 2\nthreads = 1\n'
        f"preload = {'true' if name == THINK else 'false'}\n"
        for name in (THINK, HARMONY)
    )
    path = folder / "stack.toml"
    path.write_text("[router]\nport = 0\n" + models)
    proc = StackProcess([str(path)], folder / "state")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(stack: StackProcess) -> ollama.Client:
    return ollama.Client(host=stack.router, timeout=120)


def status(stack: StackProcess, name: str) -> str:
    models = httpx.get(stack.api + "/models", timeout=10).json()["data"]
    return str(next(m["status"] for m in models if m["id"] == name))


def loaded(client: ollama.Client) -> set[str]:
    return {m.model for m in client.ps().models if m.model}


def test_list_names_every_stack_model_with_its_gguf_details(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert set(models) == {f"{THINK}:latest", f"{HARMONY}:latest"}  # demo-harmony too, not loaded
    for m in models.values():
        assert m.details is not None and m.details.format == "gguf"
        assert m.details.family and m.details.parameter_size and m.details.quantization_level
        assert m.size and m.size > 0 and m.digest and len(m.digest) == 64
        assert m.modified_at is not None
    assert models[f"{THINK}:latest"].digest != models[f"{HARMONY}:latest"].digest


def test_chat_whole_and_streamed_through_the_router(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": ITEM.question}]
    whole = client.chat(model=f"{THINK}:latest", messages=messages, options=GREEDY, think=True)
    assert whole.message.content == ITEM.answer
    assert whole.message.thinking and ITEM.topic.lower() in whole.message.thinking.lower()
    content, thinking = [], []
    for part in client.chat(model=THINK, messages=messages, options=GREEDY, think=True, stream=True):
        content.append(part.message.content or "")
        thinking.append(part.message.thinking or "")
    assert part.done and part.done_reason == "stop"
    assert "".join(content) == whole.message.content and "".join(thinking) == whole.message.thinking


def test_generate_whole_and_streamed_through_the_router(client: ollama.Client) -> None:
    whole = client.generate(model=THINK, prompt=ITEM.question, options=GREEDY)
    assert whole.response == ITEM.answer and whole.done
    pieces = [p.response for p in client.generate(model=THINK, prompt=ITEM.question, options=GREEDY, stream=True)]
    assert "".join(pieces) == whole.response


def test_show(client: ollama.Client) -> None:
    shown = client.show(f"{THINK}:latest")
    assert shown.details is not None and shown.details.format == "gguf"
    assert shown.capabilities and "completion" in shown.capabilities and "thinking" in shown.capabilities


def test_ps_lists_a_loaded_model_with_its_keep_alive_expiry(client: ollama.Client) -> None:
    client.generate(model=THINK, prompt=ITEM.question, options=GREEDY, keep_alive="10m")
    entry = next(m for m in client.ps().models if m.model == f"{THINK}:latest")
    assert entry.expires_at is not None
    left = (entry.expires_at - datetime.now(UTC)).total_seconds()
    assert 540 < left <= 601, left
    assert entry.context_length == 512 and entry.details and entry.details.format == "gguf"
    client.generate(model=THINK, prompt=ITEM.question, options=GREEDY, keep_alive=-1)  # forever: far away
    entry = next(m for m in client.ps().models if m.model == f"{THINK}:latest")
    assert entry.expires_at is not None and entry.expires_at.year > datetime.now(UTC).year + 100


def test_generate_with_only_model_loads_it_and_keep_alive_0_unloads_it(
    stack: StackProcess, client: ollama.Client
) -> None:
    assert status(stack, HARMONY) == "unloaded"
    r = client.generate(model=HARMONY)
    assert r.done and r.done_reason == "load"
    assert f"{HARMONY}:latest" in loaded(client) and status(stack, HARMONY) == "loaded"
    r = client.generate(model=f"{HARMONY}:latest", keep_alive=0)
    assert r.done and r.done_reason == "unload"
    assert f"{HARMONY}:latest" not in loaded(client) and status(stack, HARMONY) == "unloaded"


def test_a_request_with_keep_alive_0_unloads_the_model_after_it(stack: StackProcess, client: ollama.Client) -> None:
    messages = [{"role": "user", "content": ITEM.question}]
    r = client.chat(model=HARMONY, messages=messages, options=GREEDY, keep_alive=0)  # loads it on demand first
    assert r.message.content == ITEM.answer
    assert wait_until(lambda: status(stack, HARMONY) == "unloaded", timeout=30)
    assert f"{HARMONY}:latest" not in loaded(client)


def test_unknown_model_is_404_and_pull_is_refused(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope:latest", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and err.value.error == "model 'nope:latest' not found"
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3")
    assert err.value.status_code == 400 and "stack file" in err.value.error


def test_version_and_root(stack: StackProcess) -> None:
    assert httpx.get(stack.router + "/api/version", timeout=10).json()["version"].count(".") == 2
    assert httpx.head(stack.router + "/", timeout=10).status_code == 200
    assert httpx.get(stack.router + "/", timeout=10).text == "Ollama is running"


BAD = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"x"',
    b'{"model": 5}',
    b'{"model": ""}',
    b'{"model": "demo-think", "messages": "hi"}',
    b'{"model": "demo-think", "messages": [{"role": "wizard", "content": "x"}]}',
    b'{"model": "demo-think", "messages": [5]}',
    b'{"model": "demo-think", "prompt": 5}',
    b'{"model": "demo-think", "prompt": "x", "stream": "yes"}',
    b'{"model": "demo-think", "prompt": "x", "keep_alive": "forever"}',
    b'{"model": "demo-think", "prompt": "x", "keep_alive": true}',
    b'{"model": "demo-think", "prompt": "x", "keep_alive": {}}',
    b'{"model": "demo-think", "prompt": "x", "options": "hot"}',
    b'{"model": "demo-think", "prompt": "x", "options": {"temperature": "hot", "num_predict": 1e400}}',
    b'{"model": "demo-think", "prompt": "x", "format": 5, "think": "very"}',
    b'{"model": "demo-think", "input": [1, 2], "truncate": "no"}',
    b'{"model": "demo-think", "verbose": "yes"}',
    b'{"model": "demo-think", "prompt": "\\ud800", "images": ["!!"]}',
    b'{"model": "demo-think:q4", "prompt": "x"}',
    b'{"model": ["demo-think"], "prompt": "x"}',
    b"\xff\xfe",
]


def test_bad_input_at_every_api_path_is_never_a_5xx(stack: StackProcess) -> None:
    with httpx.Client(base_url=stack.router, timeout=60) as http:
        for path in PATHS:
            for body in BAD:
                r = http.post(path, content=body, headers={"Content-Type": "application/json"})
                assert r.status_code < 500, (path, body, r.status_code, r.text)
                if r.status_code >= 400:
                    assert isinstance(r.json().get("error"), str), (path, body, r.text)
        for method, path in [("GET", "/api/chat"), ("DELETE", "/api/tags"), ("POST", "/api/nope"), ("GET", "/api/")]:
            r = http.request(method, path)
            assert 400 <= r.status_code < 500 and isinstance(r.json().get("error"), str), (method, path, r.text)


NODE_SCRIPT = """
import { Ollama } from 'ollama'
const ollama = new Ollama({ host: process.env.OLLAMA_HOST })
const list = await ollama.list()
const whole = await ollama.chat({ model: 'demo-think', messages: [{ role: 'user', content: process.argv[2] }],
  options: { temperature: 0, num_predict: 200 } })
let streamed = ''
for await (const part of await ollama.generate({ model: 'demo-think', prompt: process.argv[2], stream: true,
  options: { temperature: 0, num_predict: 200 } })) streamed += part.response
const version = await ollama.version()
console.log(JSON.stringify({ names: list.models.map(m => m.name).sort(), chat: whole.message.content, streamed,
  version: version.version }))
"""


@pytest.fixture(scope="module")
def node_ollama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the `ollama` npm package installed (skips when node or the registry is not there)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    folder = tmp_path_factory.mktemp("node-ollama")
    (folder / "package.json").write_text('{"name": "probe", "version": "1.0.0", "type": "module", "private": true}')
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "ollama"], cwd=folder, capture_output=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm install ollama timed out")
    if done.returncode != 0:
        pytest.skip(f"npm install ollama failed: {done.stderr.decode(errors='replace')[-300:]}")
    (folder / "probe.mjs").write_text(NODE_SCRIPT)
    return folder


def test_the_ollama_npm_package_under_node(stack: StackProcess, node_ollama: Path) -> None:
    started = time.monotonic()
    out = subprocess.run(
        ["node", "probe.mjs", ITEM.question],
        cwd=node_ollama,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OLLAMA_HOST": stack.router},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["names"] == [f"{HARMONY}:latest", f"{THINK}:latest"]
    assert got["chat"] == ITEM.answer and got["streamed"] == ITEM.answer
    assert got["version"], time.monotonic() - started
