"""llama.cpp's own C++ server as a same-run baseline: built once from the llama.cpp vendored in the pinned
llama-cpp-python sdist (so both sides run the same llama.cpp), cached under .cache/llama-server/.

The build takes about 15 minutes on 2 cores (cmake, target llama-server, niced). Without cmake, or when the
sdist cannot be had, `binary()` prints one skip line and returns None; benchmarks then leave llama-server out.
    python -m bench.llama_server     # build now (for example in the background before `just bench`)
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testkit.procs import ServerProcess

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".cache" / "llama-server"
VERSION = importlib.metadata.version("llama_cpp_python")
SOURCE = HOME / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
BUILD = HOME / f"build-{VERSION}"
BINARY = BUILD / "bin" / "llama-server"


def skip(reason: str) -> None:
    print(f"bench: llama-server skipped: {reason}", file=sys.stderr, flush=True)


def binary(build: bool = True) -> Path | None:
    """The llama-server binary, built on first use; None (after one skip line) when it cannot be built."""
    if BINARY.is_file():
        return BINARY
    if not build:
        return None
    if shutil.which("cmake") is None:
        skip("cmake is not installed (it builds llama-server from the pinned llama.cpp)")
        return None
    try:
        _fetch_source()
    except (OSError, subprocess.CalledProcessError, tarfile.TarError) as err:
        skip(f"cannot get the llama-cpp-python {VERSION} sdist: {err}")
        return None
    log = HOME / "build.log"
    print(
        f"bench: building llama-server from llama.cpp in llama-cpp-python {VERSION} (once, ~15 min on 2 cores; "
        f"log: {log})",
        file=sys.stderr,
        flush=True,
    )
    jobs = str(os.cpu_count() or 2)
    steps = [
        [
            "cmake",
            "-S",
            str(SOURCE),
            "-B",
            str(BUILD),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        ["cmake", "--build", str(BUILD), "--target", "llama-server", "-j", jobs],
    ]
    with open(log, "w") as out:
        for step in steps:
            if subprocess.run(["nice", "-n", "10", *step], stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                skip(f"the build failed (see {log})")
                return None
    return BINARY if BINARY.is_file() else None


def _fetch_source() -> None:
    if SOURCE.is_dir():
        return
    HOME.mkdir(parents=True, exist_ok=True)
    sdist = HOME / f"llama_cpp_python-{VERSION}.tar.gz"
    if not sdist.is_file():  # pip's cache usually has it: it compiled the installed wheel from it
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"llama-cpp-python=={VERSION}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(HOME),
            ],
            check=True,
            capture_output=True,
        )
    with tarfile.open(sdist) as tar:
        tar.extractall(HOME, filter="data")


@contextmanager
def running(
    model: Path,
    port: int,
    *,
    parallel: int,
    ctx_per_seq: int,
    threads: int,
    flash_attn: bool = False,
    cache_ram_mib: int | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """llama-server on 127.0.0.1:port with one slot per sequence (its own KV stream each, as ours) and the same
    thread count and flash-attention setting as ours; yields its URL once /health answers 200."""
    exe = binary()
    assert exe is not None
    argv = [
        str(exe),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(parallel),
        "-c",
        str(ctx_per_seq * parallel),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-fa",
        "on" if flash_attn else "off",
        "--no-webui",
    ]
    if cache_ram_mib is not None:
        argv += ["--cache-ram", str(cache_ram_mib)]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LD_LIBRARY_PATH": str(exe.parent)}
    with ServerProcess(
        argv, ready_url=url + "/health", env=env, log=log, label="llama-server", ready_timeout=120, grace=20
    ):
        yield url


if __name__ == "__main__":
    sys.exit(0 if binary() else 1)
