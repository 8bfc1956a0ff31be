"""On-demand loading: cold start (request to first token, the model's load included) against the same request warm,
for the demo model and the 330M bench model (bench/serve.py's synthetic qwen2 q8_0); and the memory an unload really
frees (RSS of the stack's processes before and after), against that server's RSS and against the size the budget
charges for it.

One stack (`python -m stack`), both models `preload = false`; each cold start follows an admin unload, so the
model's server starts from nothing (its GGUF is in the page cache after the first run, as on a laptop that used it
recently). Streamed /v1/completions, first token = first chunk that carries text. Run: python -m bench.ondemand
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Row
from bench.streams import PROMPT, THREADS, build_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5  # medians: the cores are often shared


def first_token_ms(api: str, model: str) -> float:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True}
    began = time.perf_counter()
    with httpx.stream("POST", api + "/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and any(c.get("text") for c in json.loads(line[6:]).get("choices", [])):
                return (time.perf_counter() - began) * 1000
    raise RuntimeError(f"{model}: the stream carried no text")


def rss(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, TypeError):
        pass
    return 0


def admin(stack: Any, action: str, model: str) -> None:
    """POST /models/load or /models/unload with the admin key the stack made."""
    r = httpx.post(f"{stack.router}/models/{action}", json={"model": model}, headers=stack.admin, timeout=300)
    r.raise_for_status()


def run() -> list[Row]:
    from testkit.stack import StackProcess

    demo = ROOT / "models" / "demo" / "demo-think"
    if not (demo / "config.json").is_file():
        from testkit.fixtures.build import build_fixture

        demo = build_fixture("qwen3")
    models = {"demo-think": demo, "bench-330m": build_model()}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.toml"
        path.write_text(
            "[router]\nport = 0\n"
            + "".join(
                f'[[models]]\nname = "{name}"\nsource = "{source}"\nctx_size = 1024\nmax_concurrent = 2\n'
                f"threads = {THREADS}\npreload = false\n"
                for name, source in models.items()
            )
        )
        stack = StackProcess([str(path)], Path(tmp) / "state")
        try:
            for name in models:
                cold, warm = [], []
                for _ in range(RUNS):
                    admin(stack, "unload", name)
                    cold.append(first_token_ms(stack.api, name))
                    warm.append(statistics.median(first_token_ms(stack.api, name) for _ in range(3)))
                c, w = statistics.median(cold), statistics.median(warm)
                rows += [
                    Row("ondemand", f"{name}: warm request to first token", w, "ms", None, "", None),
                    Row(
                        "ondemand",
                        f"{name}: cold start to first token (load included) vs warm",
                        c,
                        "ms",
                        c / w,
                        "",
                        None,
                    ),
                ]
            # Memory: the 330M model loaded and used, then unloaded.
            name = "bench-330m"
            admin(stack, "load", name)
            first_token_ms(stack.api, name)
            server = stack.server(name)["pid"]
            assert stack.proc is not None  # started by the with above
            pids = [stack.proc.pid, stack.state()["router"]["pid"], *(s["pid"] for s in stack.state()["servers"])]
            before, held = sum(rss(p) for p in pids), rss(server)
            planned = next(m for m in httpx.get(stack.api + "/models", timeout=10).json()["data"] if m["id"] == name)
            admin(stack, "unload", name)
            after = sum(rss(p) for p in pids)
        finally:
            stack.stop()
    freed = before - after
    mb = 1e6
    return [
        *rows,
        Row(
            "ondemand",
            f"RSS of the stack's processes with {name} loaded (supervisor, router, servers)",
            before / mb,
            "MB",
            None,
            "",
            None,
        ),
        Row(
            "ondemand",
            f"RSS freed by unloading {name} vs its server's RSS",
            freed / mb,
            "MB",
            freed / held,
            ">= 0.95 x",
            freed / held >= 0.95,
        ),
        Row(
            "ondemand",
            f"RAM the budget charges {name} vs its server's RSS",
            planned["ram_bytes"] / mb,
            "MB",
            planned["ram_bytes"] / held,
            ">= 1 x",
            planned["ram_bytes"] >= held,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row.markdown())
