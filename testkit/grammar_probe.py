"""Where llama.cpp's grammar code breaks: JSON schemas through llama-cpp-python's converter and llama.cpp's sampler.

Each probe runs in a worker process (RLIMIT_AS capped, a deadline per probe) that loads a vocabulary only
(`vocab_only`, no weights), converts the schema with `llama_cpp.llama_grammar.json_schema_to_gbnf`, builds the
sampler with `llama_sampler_init_grammar` and samples a few tokens through it: random logits over the whole
vocabulary, `llama_sampler_apply`, the best token left, `llama_sampler_accept` (the grammar's stacks expand at
sample time, so a schema that builds can still blow up there). The worker answers one JSON line per probe and
is restarted after a crash or a hang, which the parent reports as such.

Shared by bench/grammar_probe.py (the table of shapes behind serve/chat/schema_limits' limits) and
tests/serve/test_schema_fuzz.py (the property that an accepted schema never crashes or hangs llama.cpp).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth_common.procs import CODE_ROOT, child_env

MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of the worker: a runaway conversion or grammar cannot take the machine
BUILD_BUDGET_S = 1.0  # "works": the sampler builds in under this ...
TOKEN_BUDGET_MS = 50.0  # ... and no sampled token takes longer than this
DEFAULT_TIMEOUT_S = 8.0


@dataclass
class Outcome:
    status: str  # ok | rejected (NULL sampler) | convert_error | crash | hang | oom
    detail: str = ""
    convert_s: float = 0.0
    build_s: float = 0.0
    token_ms: float = 0.0  # the slowest sampled token
    token_med_ms: float = 0.0  # the median one (the slowest is noisy on a shared machine)
    tokens: int = 0
    gbnf_bytes: int = 0
    rules: int = 0
    nest: int = 0  # deepest parenthesis nesting in the GBNF text

    @property
    def fast(self) -> bool:
        return self.status == "ok" and self.build_s < BUILD_BUDGET_S and self.token_med_ms < TOKEN_BUDGET_MS

    def verdict(self) -> str:
        if self.status != "ok":
            return self.status
        return "ok" if self.fast else "slow"


# ---------------------------------------------------------------- worker (the child process)


def _worker(vocab_path: str) -> None:
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from serve.chat.schema_limits import grammar_nesting

    llama_cpp.llama_backend_init()
    # llama.cpp logs each rejected grammar in full to stderr; keep the pipe quiet (stderr is /dev/null anyway)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(vocab_path.encode(), params)
    if not model:
        raise SystemExit(f"cannot load {vocab_path}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    data = (llama_cpp.llama_token_data * n_vocab)()
    view = np.frombuffer(data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
    view["id"] = np.arange(n_vocab)
    out = sys.stdout
    out.write(json.dumps({"ready": n_vocab}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        res: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            gbnf = req["gbnf"] if "gbnf" in req else json_schema_to_gbnf(json.dumps(req["schema"]))
        except RecursionError as err:
            res = {"status": "convert_error", "detail": f"RecursionError {str(err)[:80]}"}
        except MemoryError:
            res = {"status": "oom", "detail": "MemoryError in the converter"}
        except Exception as err:  # noqa: BLE001 - the converter's AssertionError, ValueError, KeyError ...
            res = {"status": "convert_error", "detail": f"{type(err).__name__} {str(err)[:80]}"}
        if res:
            out.write(json.dumps(res) + "\n")
            out.flush()
            continue
        res["convert_s"] = time.perf_counter() - t0
        res["gbnf_bytes"] = len(gbnf.encode())
        res["rules"] = gbnf.count("::=")
        res["nest"] = grammar_nesting(gbnf)
        out.write(json.dumps({"phase": "converted", **res}) + "\n")  # a crash after this line is llama.cpp's
        out.flush()
        t0 = time.perf_counter()
        smpl = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        res["build_s"] = time.perf_counter() - t0
        if not smpl:
            res["status"] = "rejected"
            res["detail"] = "llama_sampler_init_grammar returned NULL"
            out.write(json.dumps(res) + "\n")
            out.flush()
            continue
        rng = np.random.default_rng(req.get("seed", 0))
        times = []
        n = 0
        for _ in range(req.get("tokens", 8)):
            view["logit"] = rng.random(n_vocab, dtype=np.float32)
            arr = llama_cpp.llama_token_data_array(data, n_vocab, -1, False)
            t0 = time.perf_counter()
            llama_cpp.llama_sampler_apply(smpl, ctypes.byref(arr))
            # the grammar sampler only sets rejected logits to -inf, in place
            assert ctypes.cast(arr.data, ctypes.c_void_p).value == ctypes.addressof(data) and arr.size == n_vocab
            i = int(np.argmax(view["logit"]))
            best = int(view["id"][i]) if np.isfinite(view["logit"][i]) else -1
            if best < 0 or llama_cpp.llama_vocab_is_eog(vocab, best):
                times.append(time.perf_counter() - t0)
                break
            llama_cpp.llama_sampler_accept(smpl, best)
            times.append(time.perf_counter() - t0)
            n += 1
        llama_cpp.llama_sampler_free(smpl)
        times.sort()
        med = times[len(times) // 2] if times else 0.0
        res.update(status="ok", token_ms=max(times, default=0.0) * 1000, token_med_ms=med * 1000, tokens=n)
        out.write(json.dumps(res) + "\n")
        out.flush()


# ---------------------------------------------------------------- parent


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class Prober:
    """One worker process at a time; `probe()` restarts it after a crash or a hang."""

    def __init__(self, vocab: Path, python: str = sys.executable) -> None:
        self.vocab = vocab
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.n_vocab = 0

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            self._buf = b""
            self.proc = subprocess.Popen(
                [self.python, "-m", "testkit.grammar_probe", "--worker", str(self.vocab)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                preexec_fn=_limit_memory,
                env={**child_env(), "PYTHONUNBUFFERED": "1"},
                cwd=CODE_ROOT,
            )
            line = self._read(self.proc, 60.0)
            if line is None:
                self.close()
                raise RuntimeError(f"the probe worker did not start on {self.vocab}")
            self.n_vocab = json.loads(line)["ready"]
        return self.proc

    def _read(self, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
        """One line from the worker, or None at the deadline or when it is gone. Reads the pipe's fd itself: a
        buffered reader would hold a second line where select() cannot see it."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + max(timeout, 0.0)
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # EOF: the worker is gone; reap it so its exit status is known
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def probe(
        self, schema: Any = None, *, gbnf: str | None = None, tokens: int = 8, seed: int = 0, timeout: float = 0.0
    ) -> Outcome:
        proc = self._start()
        assert proc.stdin is not None
        req = {"gbnf": gbnf} if gbnf is not None else {"schema": schema}
        proc.stdin.write((json.dumps({**req, "tokens": tokens, "seed": seed}) + "\n").encode())
        proc.stdin.flush()
        deadline = time.monotonic() + (timeout or DEFAULT_TIMEOUT_S)
        seen: dict[str, Any] = {}
        while True:
            line = self._read(proc, deadline - time.monotonic())
            if line is None:
                return self._lost(proc, seen)
            msg = json.loads(line)
            if msg.pop("phase", None) == "converted":
                seen = msg
                continue
            fields = {k: v for k, v in msg.items() if k in Outcome.__dataclass_fields__}
            return Outcome(**fields)

    def _lost(self, proc: subprocess.Popen[bytes], seen: dict[str, Any]) -> Outcome:
        where = "in llama.cpp" if seen else "in the converter"
        if proc.poll() is None:
            self.close()
            return Outcome("hang", f"past the deadline {where}", **seen)
        code = proc.returncode
        self.proc = None
        if code < 0:
            name = signal.Signals(-code).name
            status = "oom" if name == "SIGABRT" else "crash"  # bad_alloc under RLIMIT_AS ends in abort()
            return Outcome(status, f"{name} {where}", **seen)
        return Outcome("crash", f"exit {code} {where}", **seen)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2])
