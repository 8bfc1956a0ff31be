"""Both demo models behind a router, as real processes on loopback, for the SDK tests of the client APIs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from stack.config import load_stack
from testkit.procs import wait_until
from testkit.servers import running_router, running_server

MODELS = ("demo-think", "demo-harmony")
# each model's context as the built-in stack (stack/default.toml) runs it
BUILT_IN_CTX = {m.name: m.ctx_size for m in load_stack().models}


@contextlib.contextmanager
def demo_stack(demo_gguf: Callable[[str], Path], state_dir: Path) -> Iterator[dict[str, str]]:
    """{"demo-think": url, "demo-harmony": url, "router": url}; both servers registered with the router."""
    # --open-admin: the servers register themselves with no admin key
    with contextlib.ExitStack() as stack:
        router = stack.enter_context(running_router("--state-file", str(state_dir / "state.json"), "--open-admin"))
        think, harmony = (
            stack.enter_context(
                running_server(
                    "--model-path",
                    str(demo_gguf(name)),
                    "--model-name",
                    name,
                    "--ctx-size",
                    str(BUILT_IN_CTX[name]),
                    "--router",
                    router,
                )
            )
            for name in MODELS
        )
        assert wait_until(
            lambda: (
                {b["name"] for b in httpx.get(router + "/backends").json()["backends"] if b.get("healthy")}
                >= set(MODELS)
            )
        )
        yield {"demo-think": think, "demo-harmony": harmony, "router": router}


def prompt_ids(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    """The oracle: transformers renders the demo model's own template and tokenizes it."""
    from transformers import AutoTokenizer

    from models.demo import manifest

    tokenizer = AutoTokenizer.from_pretrained(manifest.DEMO_DIR / model)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
