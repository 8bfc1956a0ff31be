"""The router's `prefix` strategy sends a conversation to the replica that has it cached: two real servers of
one model behind a real router, conversations whose history only grows, the `openai` client. Under `prefix`
every later turn stays on its replica and reuses at least the whole previous prompt; under `round_robin` the
turns alternate replicas and reuse less (figures in bench/RESULTS.md: python -m bench.cache router)."""

from __future__ import annotations

import concurrent.futures
import itertools
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from testkit.servers import running_router, running_server
from testkit.tiny_gguf import build_tiny_gguf

pytestmark = pytest.mark.slow
KEY = "router-admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}
WORDS = ["river", "market", "salt", "wool", "hills", "trader", "bridge", "winter", "harvest", "stone", "tower", "road"]


def conversation(client: openai.OpenAI, seed: int, turns: int) -> list[tuple[str, int, int]]:
    """(backend, prompt tokens, cached tokens) of each turn."""
    history = " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(60)) + "\n"
    out = []
    for t in range(turns):
        history += f"Q{t}: " + " ".join(WORDS[(seed + t * 3 + i) % len(WORDS)] for i in range(8)) + "\nA:"
        raw = client.completions.with_raw_response.create(model="m", prompt=history, max_tokens=6, temperature=0)
        r = raw.parse()
        out.append((raw.headers["x-backend"], r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens))
        history += r.choices[0].text + "\n"
    return out


def routed(strategy: str, tmp: Path) -> list[list[tuple[str, int, int]]]:
    gguf = str(build_tiny_gguf())
    with ExitStack() as stack:
        url = stack.enter_context(
            running_router(
                "--strategy",
                strategy,
                "--state-file",
                str(tmp / f"{strategy}.json"),
                env={"HEARTH_ROUTE_ADMIN_KEY": KEY},
            )
        )
        for name in "ab":
            backend = stack.enter_context(
                running_server("--model-path", gguf, "--model-name", "m", "--max-concurrent", "2", "--ctx-size", "2048")
            )
            httpx.post(
                url + "/backends/register", json={"name": name, "url": backend, "models": ["m"]}, headers=ADMIN
            ).raise_for_status()
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda seed: conversation(client, seed, 4), range(4)))


def test_prefix_keeps_each_conversation_on_its_cache(tmp_path: Path) -> None:
    prefix, rr = routed("prefix", tmp_path), routed("round_robin", tmp_path)
    for turns in prefix:
        assert len({backend for backend, _, _ in turns}) == 1  # one replica for the whole conversation
        for (_, prompt, _), (_, _, cached) in itertools.pairwise(turns):
            assert cached >= prompt - 2  # everything the last turn sent, bar the two tokens always decoded
    assert any(len({backend for backend, _, _ in turns}) == 2 for turns in rr)

    def rate(runs: list[list[tuple[str, int, int]]]) -> float:
        return sum(c for turns in runs for _, _, c in turns) / sum(p for turns in runs for _, p, _ in turns)

    assert rate(prefix) > rate(rr)
