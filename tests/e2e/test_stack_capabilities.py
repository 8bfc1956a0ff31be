"""The router's /v1/models says what each model of a real stack does (`capabilities`: chat, embeddings, rerank,
vision), loaded or not, under every name: a chat model loaded at start, a Gemma 3 with its image projector, a BERT
embedding model and a BERT cross-encoder reranker loaded on demand. What the router says is what each model's own
server says once it runs (serve's /v1/models is the oracle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testkit.procs import wait_until
from testkit.stack import StackProcess

pytestmark = pytest.mark.slow

WANT = {
    "chat": ["chat"],
    "g3v": ["chat", "vision"],
    "embed": ["embeddings"],
    "rerank": ["rerank"],
    "cross-encoder": ["rerank"],  # an alias
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    from convert import convert_checkpoint
    from hearth_common.paths import mmproj_path
    from testkit.fixtures.bert import build_bert_fixture
    from testkit.fixtures.llama_sdist import SdistUnavailable, llama_cpp_source
    from testkit.fixtures.vision import build_gemma3_vision
    from testkit.tiny_gguf import build_tiny_gguf

    try:
        src = llama_cpp_source()
    except SdistUnavailable as e:
        pytest.skip(f"llama.cpp's sdist files are not available: {e}")
    folder = tmp_path_factory.mktemp("capabilities")
    ggufs = {
        "embed": convert_checkpoint(build_bert_fixture("embed", src), folder / "embed.gguf", "f32", progress=False),
        "rerank": convert_checkpoint(build_bert_fixture("rerank", src), folder / "rerank.gguf", "f32", progress=False),
        "g3v": convert_checkpoint(build_gemma3_vision(), folder / "g3v.gguf", "f32", progress=False),
    }
    assert mmproj_path(ggufs["g3v"]).is_file()
    models = [
        f'[[models]]\nname = "chat"\nsource = "{build_tiny_gguf()}"\nctx_size = 256\nthreads = 1\n',
        f'[[models]]\nname = "g3v"\nsource = "{ggufs["g3v"]}"\nctx_size = 256\nthreads = 1\npreload = false\n',
        f'[[models]]\nname = "embed"\nsource = "{ggufs["embed"]}"\nembeddings = true\nctx_size = 128\n'
        "threads = 1\npreload = false\n",
        f'[[models]]\nname = "rerank"\naliases = ["cross-encoder"]\nsource = "{ggufs["rerank"]}"\nrerank = true\n'
        "ctx_size = 128\nthreads = 1\npreload = false\n",
    ]
    path = folder / "stack.toml"
    path.write_text("[router]\nport = 0\n" + "".join(models))
    proc = StackProcess([str(path)], folder / "state")
    yield proc
    proc.stop()
    assert proc.orphans == []


def listing(stack: StackProcess) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in httpx.get(stack.api + "/models", timeout=10).json()["data"]}


def test_capabilities_loaded_or_not(stack: StackProcess) -> None:
    before = listing(stack)
    assert {name: m.get("capabilities") for name, m in before.items()} == WANT
    assert before["chat"]["status"] == "loaded" and before["rerank"]["status"] == "unloaded"
    # loading the reranker and the vision model on demand changes their status, not what they do
    r = httpx.post(
        stack.api + "/rerank", json={"model": "cross-encoder", "query": "q", "documents": ["a"]}, timeout=120
    )
    assert r.status_code == 200, r.text
    httpx.post(stack.router + "/models/load", json={"model": "g3v"}, headers=stack.admin, timeout=120)
    after = listing(stack)
    assert after["rerank"]["status"] == after["g3v"]["status"] == "loaded"
    assert {name: m.get("capabilities") for name, m in after.items()} == WANT
    # what each running server says of itself
    for name in ("chat", "g3v", "rerank"):
        server = stack.server(name)
        assert wait_until(lambda s=server: httpx.get(s["url"] + "/health").status_code == 200, timeout=30)
        own = httpx.get(server["url"] + "/v1/models", headers=stack.backend_auth, timeout=10).json()["data"]
        assert own[0]["capabilities"] == WANT[name], name
