"""The wheel works outside the checkout: built from the package folders alone, installed with --no-deps into a
fresh virtualenv (which sees this environment's dependencies through a .pth file), run from a folder outside the
checkout: every CLI's --version, and `hearth` serving the built-in demo stack, asked through the `openai` client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest
from openai import OpenAI

from models.demo.data import ITEMS
from testkit.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def package_folder(package: str) -> Path:
    """Where `package` lives in the checkout (pyproject's package-dir maps hearth_demo to models/demo)."""
    top, *rest = package.split(".")
    return ROOT / SETUPTOOLS.get("package-dir", {}).get(top, top) / Path(*rest)


def test_every_package_folder_is_listed() -> None:
    """pyproject lists the packages (setuptools does not find hearth_demo): a new subpackage must be added there, or
    the wheel would lack it."""
    listed = set(SETUPTOOLS["packages"])
    for package in [p for p in listed if "." not in p]:
        root = package_folder(package)
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            if any(folder.glob("*.py")):
                name = ".".join([package, *folder.relative_to(root).parts])
                assert name in listed, f"{folder.relative_to(ROOT)} is not in pyproject.toml's packages"


def copy_sources(dest: Path) -> Path:
    """pyproject.toml, the README it names and the package folders: nothing else of the checkout (no .cache, no
    stale build/) can leak into the wheel."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.gguf", "*.gguf.*")
    for package in [p for p in SETUPTOOLS["packages"] if "." not in p]:
        source = package_folder(package)
        shutil.copytree(source, dest / source.relative_to(ROOT), ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = copy_sources(tmp_path_factory.mktemp("src"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp / "dist").glob("hearth-*.whl"))

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (and pip) from this environment, after the venv's own site-packages; a plain path in a .pth
    # does not run that folder's own .pth files, so an editable install of the checkout stays out of sight.
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "hearth-test-deps.pth").write_text("".join(f"{p}\n" for p in ours))
    done = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python.parent


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything that would put the checkout on the path."""
    return {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}, **extra}


@pytest.mark.slow
@pytest.mark.parametrize("program", ["hearth", "hearth-serve", "hearth-route", "hearth-convert"])
def test_version(installed: Path, tmp_path: Path, program: str) -> None:
    out = subprocess.run(
        [installed / program, "--version"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert (out.returncode, out.stdout.strip()) == (0, f"{program} {PYPROJECT['project']['version']}"), out.stderr


@pytest.mark.slow
def test_demo_stack_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """`hearth` with no stack file serves the demo models shipped in the wheel, converting them into HEARTH_CACHE."""
    cache, cwd = tmp_path / "cache", tmp_path / "elsewhere"
    cwd.mkdir()
    with ServerProcess(
        [installed / "hearth", "--port", "0"],
        ready_line="stack: ready",
        cwd=cwd,
        env=clean_env(HEARTH_CACHE=str(cache)),
        log=tmp_path / "hearth.log",
        ready_timeout=240,
        grace=40,
    ) as hearth:
        state = json.loads((cache / "stack" / "state.json").read_text())
        item = ITEMS[0]
        client = OpenAI(base_url=state["api"], api_key="unused", max_retries=0, timeout=60)
        answer = client.chat.completions.create(
            model="demo-think", temperature=0, max_tokens=200, messages=[{"role": "user", "content": item.question}]
        )
        assert answer.choices[0].message.content == item.answer
        assert hearth.stop() == 0, hearth.tail()
    records = [json.loads(p.read_text()) for p in (cache / "gguf").glob("*.gguf.json")]
    site = Path(
        subprocess.run(
            [installed / "python", "-c", "import hearth_demo; print(hearth_demo.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            env=clean_env(),
        ).stdout.strip()
    ).parent
    assert sorted(Path(r["source"]) for r in records) == [
        site / n for n in ("demo-harmony", "demo-think", "demo-vision")
    ]
    assert not any(site.parent.glob(".cache")), "nothing is written into site-packages"
