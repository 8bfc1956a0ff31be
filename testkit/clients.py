"""The client libraries of the client matrix (tests/clients), each pinned, and the interpreter that runs each one.

A library that installs beside our own pins is in pyproject's dev extra and runs in this interpreter; one whose pins
clash with ours (instructor pins an older openai and jiter) gets its own virtualenv, .cache/clients/NAME, made from
its pinned requirement line. pip's cache makes a rebuild fast; a stamp holding the requirement line rebuilds the
virtualenv when the pin changes. An install that fails (offline, say) raises ClientUnavailable with pip's last words,
and the tests skip that library with them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / ".cache" / "clients"
DRIVERS = REPO / "tests" / "clients" / "drivers"


class ClientUnavailable(Exception):
    """The library cannot run here (not installed, or its own virtualenv could not be built); the message says why."""


@dataclass(frozen=True)
class Client:
    name: str  # the row of the matrix
    module: str  # what the driver imports (checks that the library is there)
    driver: str  # tests/clients/drivers/DRIVER.py
    requirement: str | None = None  # a pip requirement line: its own virtualenv; None: the dev extra (this venv)


CLIENTS: dict[str, Client] = {
    c.name: c
    for c in (
        Client("openai", "openai", "openai_sdk"),
        Client("anthropic", "anthropic", "anthropic_sdk"),
        Client("ollama", "ollama", "ollama_client"),
        Client("openai-agents", "agents", "openai_agents"),
        Client("pydantic-ai", "pydantic_ai", "pydantic_ai_agent"),
        Client("langchain-openai", "langchain_openai", "langchain_openai_chat"),
        Client("langchain-anthropic", "langchain_anthropic", "langchain_anthropic_chat"),
        Client("litellm", "litellm", "litellm_completion"),
        Client("smolagents", "smolagents", "smolagents_agent"),
        Client("llm", "llm", "llm_cli"),
        # instructor 1.17 pins openai<3 and jiter<0.15; our dev extra has openai 3.63 and jiter 0.19
        Client("instructor", "instructor", "instructor_client", requirement="instructor==1.17.0"),
    )
}


def driver_path(client: Client) -> Path:
    return DRIVERS / f"{client.driver}.py"


def client_python(client: Client, *, timeout: float = 900) -> Path:
    """The interpreter that runs CLIENT's driver: this one, or its own virtualenv (built or rebuilt as needed)."""
    if client.requirement is None:
        if importlib.util.find_spec(client.module) is None:
            raise ClientUnavailable(f"{client.name} is not installed here: `just setup-dev` installs the dev extra")
        return Path(sys.executable)
    return _own_venv(client, timeout)


def _own_venv(client: Client, timeout: float) -> Path:
    assert client.requirement is not None
    venv = VENVS / client.name
    python, stamp = venv / "bin" / "python", venv / ".hearth-requirement"
    if python.is_file() and stamp.is_file() and stamp.read_text() == client.requirement:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", client.requirement],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ClientUnavailable(f"{client.name}: `{' '.join(step[-3:])}` ran past {timeout:.0f} s") from None
        if done.returncode:
            lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
            last = [line for line in lines if line.startswith("ERROR")][-2:] or lines[-3:]  # not pip's warnings
            raise ClientUnavailable(f"{client.name}: {client.requirement!r} did not install: {' / '.join(last)}")
    stamp.write_text(client.requirement)
    return python
