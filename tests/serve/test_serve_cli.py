"""`python -m serve`: settings from flags (llama.cpp's spellings too) and HEARTH_SERVE_* variables; bad settings
refused with one line on stderr and exit status 2, before loading anything; its log: one format, one access line
per request, no key."""

from __future__ import annotations

import io
import logging
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from hearth_common.logs import setup
from hearth_common.paths import demo_dir
from hearth_common.procs import CODE_ROOT, child_env
from hearth_common.version import version
from serve.__main__ import main
from serve.config import build_parser, from_args
from testkit.servers import running_server


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model-path", "/no/such/model"], "no such file or folder"),
        (["--max-concurrent", "0"], "--max-concurrent"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=CODE_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_not_a_checkpoint_folder(tmp_path: Path) -> None:
    from serve.errors import ConfigError
    from serve.gguf_cache import resolve_model

    with pytest.raises(ConfigError, match=re.escape("config.json")):
        resolve_model(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=re.escape("not a .gguf")):
        resolve_model(tmp_path / "notes.txt")


def test_flags_come_from_the_settings_model() -> None:
    flags = {a.option_strings[0] for a in build_parser()._actions if a.option_strings}
    assert {
        "--model-path",
        "--max-concurrent",
        "--max-queue",
        "--device-map",
        "--n-gpu-layers",
        "--router",
        "--api-key-file",
        "--ctx-size",
        "--kv-type",
        "--flash-attn",
    } <= flags
    config = from_args(["--max-concurrent", "4", "--flash-attn", "--device-map", "cpu"])
    assert config.max_concurrent == 4 and config.flash_attn and config.device_map == "cpu"
    assert config.host == "127.0.0.1" and config.port == 8000  # API.md's defaults


def test_an_environment_variable_sets_a_field_and_the_command_line_wins() -> None:
    env = {"HEARTH_SERVE_CTX_SIZE": "8192", "HEARTH_SERVE_ALIAS": "a,b", "HEARTH_SERVE_FLASH_ATTN": "true"}
    assert (c := from_args([], env)).ctx_size == 8192 and c.alias == ("a", "b") and c.flash_attn
    assert from_args(["--ctx-size", "1024", "--no-flash-attn"], env).ctx_size == 1024
    assert not from_args(["--no-flash-attn"], env).flash_attn


def test_llama_cpp_spellings_parse_to_the_same_config(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    ours = from_args(
        [
            "--model-path",
            str(model),
            "--alias",
            "x,y",
            "--n-gpu-layers",
            "7",
            "--max-concurrent",
            "3",
            "--threads",
            "2",
            "--flash-attn",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
        ]
    )
    theirs = from_args(
        [
            "-m",
            str(model),
            "-a",
            "x,y",
            "-ngl",
            "7",
            "-np",
            "3",
            "-t",
            "2",
            "-fa",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
        ]
    )
    longer = from_args(
        [
            "--model",
            str(model),
            "-a",
            "x,y",
            "--gpu-layers",
            "7",
            "--parallel",
            "3",
            "-t",
            "2",
            "-fa",
            "on",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
        ]
    )
    assert ours == theirs == longer
    assert not from_args(["-fa", "off"]).flash_attn


def test_flash_attention_defaults_on_for_encoders_only() -> None:
    """bench/retrieval.py: an encoder's embeddings and rerank batches ran 1.15x and 1.12x llama-server with it,
    0.71x and 0.36x without (llama-server's own default is on); chat keeps it off unless asked."""
    assert not from_args([]).use_flash_attn and from_args(["-fa", "on"]).use_flash_attn
    assert from_args(["--embeddings"]).use_flash_attn and from_args(["--rerank"]).use_flash_attn
    assert not from_args(["--embeddings", "--no-flash-attn"]).use_flash_attn


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--api-key", "sk-on-the-command-line"], ["--api-key-file", "HEARTH_SERVE_API_KEY"]),
        (["--router-key=sk-on-the-command-line"], ["--router-key-file", "HEARTH_SERVE_ROUTER_KEY"]),
        (["-c", "8192"], ["--ctx-size", "per sequence"]),
        (["--max-concurrent", "0"], ["--max-concurrent"]),
        (["--ctx-sizes", "1"], ["unrecognized arguments"]),
    ],
)
def test_refused_in_one_line_exit_2(argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("serve: ") and err.count("\n") == 1 and all(n in err for n in needles), err
    assert "sk-on-the-command-line" not in err


def test_an_environment_mistake_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_SERVE_PORT", "eighty")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("serve: HEARTH_SERVE_PORT: ")


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hearth-serve {version()}\n"
    text = " ".join(build_parser().format_help().split())
    assert "(default: None)" not in text and "default: default" not in text
    assert "-ngl N" in text and "-np N" in text and "--router URL" in text and "--max-body-bytes BYTES" in text
    assert "llama.cpp's -c is the total over its slots" in text


def test_converting_a_folder_logs_one_line(tmp_path: Path) -> None:
    """serve given a HuggingFace folder says it converts it, once, and nothing of the converter's own chatter."""
    from serve.gguf_cache import resolve_model

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup("serve", "info", stream)
        resolve_model(demo_dir() / "demo-think", cache=tmp_path)
    finally:
        root.handlers, root.level = saved
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and " INFO serve: converting " in lines[0], lines


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


@pytest.mark.slow  # a real server
def test_log_access_lines_one_banner_no_key_clean_stop(
    demo_gguf: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, wrong = "sk-good-" + secrets.token_hex(8), "sk-wrong-" + secrets.token_hex(8)
    monkeypatch.setenv("HEARTH_SERVE_API_KEY", key)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with running_server("--model-path", str(demo_gguf("demo-think")), "--model-name", "demo-think") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        whole = client.chat.completions.create(model="demo-think", messages=question, max_tokens=40)
        chunks = list(
            client.chat.completions.create(
                model="demo-think",
                messages=question,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        refused = httpx.post(
            url + "/v1/completions", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {wrong}"}
        )
        assert refused.status_code == 401
        port = url.rsplit(":", 1)[1]
    log = url.process.log_text()  # the whole run, to its last line after Ctrl-C
    assert key not in log and wrong not in log
    lines = log.splitlines()
    assert all(LINE.match(line) for line in lines), log
    assert [line.split(": ", 1)[1] for line in lines if "listening" in line or "Running" in line] == [
        f"listening on http://127.0.0.1:{port}"
    ]
    assert lines[-1].endswith(" INFO serve: stopped") and "Traceback" not in log
    access = [line.split("serve.access: ", 1)[1] for line in lines if "serve.access: " in line]
    assert len(access) == 3, access
    streamed = chunks[-1].usage
    assert whole.usage is not None and streamed is not None
    for line, usage in zip(access, (whole.usage, streamed), strict=False):  # the third line is the refused one
        assert re.fullmatch(
            rf"POST /v1/chat/completions 200 \d+ ms model=demo-think "
            rf"prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens}",
            line,
        )
    assert re.fullmatch(r"POST /v1/completions 401 \d+ ms", access[2])
