"""The `llm` CLI: the router as an extra OpenAI model (extra-openai-models.yaml in a private LLM_USER_PATH),
`--functions` with a Python tool (llm chains the call and the answer itself); `--schema` for structured output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import CAPITAL_QUESTION, WEATHER_DOC, Capital, main

LLM = Path(sys.executable).parent / "llm"


def run_llm(model: str, base: str, *args: str, user_dir: Path) -> str:
    (user_dir / "extra-openai-models.yaml").write_text(
        f"- model_id: {model}\n  model_name: {model}\n  api_base: {base}/v1\n  api_key_name: none\n"
        "  supports_tools: true\n  supports_schema: true\n"
    )
    (user_dir / "keys.json").write_text(json.dumps({"none": "none"}))
    env = {**os.environ, "LLM_USER_PATH": str(user_dir)}
    done = subprocess.run([str(LLM), "-m", model, "--no-log", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"llm exited {done.returncode}: {done.stderr[-1500:]}")
    return done.stdout.strip()


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        calls, result = Path(tmp) / "calls", get_weather.result
        functions = (
            f"def get_weather(city: str) -> str:\n"
            f'    """{WEATHER_DOC}"""\n'
            f"    open({str(calls)!r}, 'a').write(city + '\\n')\n"
            f"    return {result!r}\n"
        )
        answer = run_llm(model, base, "--functions", functions, "-o", "temperature", "0", question, user_dir=Path(tmp))
        for city in calls.read_text().splitlines() if calls.exists() else []:
            get_weather(city)
        return answer


def structured(model: str, base: str, seed: int) -> Capital:
    with tempfile.TemporaryDirectory() as tmp:
        out = run_llm(
            model, base, "--schema", json.dumps(Capital.model_json_schema()), "-o", "temperature", "1", "-o", "seed", str(seed),
            CAPITAL_QUESTION, user_dir=Path(tmp),
        )  # fmt: skip
    return Capital.model_validate_json(out)


if __name__ == "__main__":
    main(tool_loop, structured)
