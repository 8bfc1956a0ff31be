"""`previous_response_id` whichever router replica answers and whichever model server (issue 22), with real
processes: Redis, two routers sharing state in it (testkit/cluster.py), and model servers given the same Redis
(`python -m serve --shared-state`). The first response comes from a server that is then stopped; its continuation,
through the other router, is answered by a server that never saw it (serve/api/responses_shared.py).

The oracle for the continuation is the demo model's own template rendered by transformers over the whole
conversation (the prompt's token count), as in tests/serve/test_responses_sdk.py; for the lost case, the API's own
error (400 previous_response_not_found)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from hearth_common.procs import free_port
from models.demo.data import by_question
from testkit.cluster import ADMIN, ADMIN_KEY, RouterProcess
from testkit.procs import ServerProcess, wait_until
from testkit.redis import RedisServer, redis_missing
from testkit.stack import demo_models_missing
from tests.serve.api_stack import prompt_ids
from tests.serve.test_responses_sdk import FRANCE, SUM, expected_reasoning

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
    pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing())),
]
MODEL = "demo-harmony"


def model_server(gguf: Path, router: RouterProcess, redis: RedisServer, log: Path) -> ServerProcess:
    """A server of MODEL registered with `router`, keeping stored responses in `redis` too."""
    port = free_port()
    args = ["--model-path", str(gguf), "--model-name", MODEL, "--ctx-size", "1024", "--threads", "1"]
    args += ["--port", str(port), "--router", router.url, "--shared-state", redis.url]
    env = {**os.environ, "HEARTH_SERVE_ROUTER_KEY": ADMIN_KEY}
    return ServerProcess.module("serve", *args, env=env, ready_url=f"http://127.0.0.1:{port}/health", log=log)


def healthy(router: RouterProcess) -> set[str]:
    backends = httpx.get(router.url + "/backends", headers=ADMIN, timeout=10).json()["backends"]
    return {b["url"] for b in backends if b["healthy"]}


def test_previous_response_id_through_one_router_then_the_other(
    demo_gguf: Callable[[str], Path], tmp_path: Path
) -> None:
    gguf = demo_gguf(MODEL)
    with (
        RedisServer() as redis,
        RouterProcess(redis.url, tmp_path / "r1.log") as one,
        RouterProcess(redis.url, tmp_path / "r2.log") as two,
    ):
        clients = [openai.OpenAI(base_url=r.url + "/v1", api_key="none", max_retries=0) for r in (one, two)]
        with model_server(gguf, one, redis, tmp_path / "a.log") as first_server:
            stream = clients[0].responses.create(model=MODEL, input=FRANCE, temperature=0, stream=True)
            done = [e.response for e in stream if e.type == "response.completed"]
            assert len(done) == 1
            first = done[0]
        with model_server(gguf, two, redis, tmp_path / "b.log") as second_server:
            # the first server is gone from both routers: only the second one can answer
            assert wait_until(lambda: healthy(one) == healthy(two) == {second_server.ready_url.removesuffix("/health")})
            assert first_server.ready_url != second_server.ready_url
            second = clients[1].responses.create(
                model=MODEL, input=SUM, previous_response_id=first.id, temperature=0, max_output_tokens=5
            )
            reasoning = expected_reasoning(MODEL, by_question(FRANCE))
            oracle = [
                {"role": "user", "content": FRANCE},
                {
                    "role": "assistant",
                    "content": first.output_text,
                    "thinking": reasoning,
                    "reasoning_content": reasoning,
                },
                {"role": "user", "content": SUM},
            ]
            assert second.previous_response_id == first.id
            assert second.usage is not None
            assert second.usage.input_tokens == len(prompt_ids(MODEL, oracle, reasoning_effort="medium"))
            # and the continuation of the continuation, through the first router, as any client would
            third = clients[0].responses.create(
                model=MODEL, input="And 2 + 2?", previous_response_id=second.id, temperature=0, max_output_tokens=2
            )
            assert third.usage is not None and third.usage.input_tokens > second.usage.input_tokens
            # Redis gone: the server goes on with what it holds itself; what it never held gets the API's own error
            redis.stop()
            kept = clients[1].responses.create(
                model=MODEL, input=SUM, previous_response_id=second.id, temperature=0, max_output_tokens=2
            )
            assert kept.previous_response_id == second.id
            with pytest.raises(openai.BadRequestError) as caught:
                clients[0].responses.create(model=MODEL, input=SUM, previous_response_id="resp_" + "0" * 32)
            assert caught.value.code == "previous_response_not_found"
            assert caught.value.param == "previous_response_id"
