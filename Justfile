# Recipes for a fresh machine: Python 3.11+, a C compiler and cmake.
set positional-arguments

venv := ".venv"
py := venv / "bin" / "python"

# Create .venv and install what serving needs (fast when nothing changed).
setup: (_install "runtime" ".")

# The runtime plus the dev extra: torch (CPU), transformers, pytest and the API SDKs.
setup-dev: (_install "dev" ".[dev]")

_install kind spec:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x {{py}} ] || { echo "hearth: creating {{venv}}"; python3 -m venv {{venv}}; }
    stamp={{venv}}/.hearth-{{kind}}
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        {{py}} -m pip install -q --upgrade pip
        if ! {{py}} -c 'import llama_cpp' 2>/dev/null; then
            echo "hearth: installing llama-cpp-python; the first time pip compiles llama.cpp (about 4 minutes on 2 cores)"
        fi
        echo "hearth: installing the {{kind}} dependencies into {{venv}}"
        {{py}} -m pip install -q -e '{{spec}}'
        touch "$stamp"
    fi

# Convert a HuggingFace folder to GGUF: just convert SRC [OUT] [--type TYPE] [--force] [--verify] (--verify: after just setup-dev)
convert *args: setup
    {{py}} -m convert "$@"

# The built-in demo models when no stack file is given; see stack.example.toml.
# Serve a stack of models behind one router: just serve [STACK_FILE] [--port P] [--plan-only]
serve *args: setup
    exec {{py}} -m stack "$@"

# Lint, check the formatting and the types (CI runs this before the tests).
lint: setup-dev
    {{venv}}/bin/ruff check .
    {{venv}}/bin/ruff format --check .
    {{venv}}/bin/mypy

# Debian's chromium, which the web page's browser tests drive through Playwright (never `playwright install`: it
# downloads a browser). Nothing to do when a chromium is there (or HEARTH_CHROMIUM names one).
browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${HEARTH_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ] || command -v chromium >/dev/null; then exit 0; fi
    if ! command -v apt-get >/dev/null; then
        echo "hearth: no chromium and no apt-get: the browser tests will be skipped (set HEARTH_CHROMIUM to run them)"
        exit 0
    fi
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "hearth: installing Debian's chromium for the browser tests"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null

# Debian's redis-server, which the shared-state tests and bench/cluster.py start on a free loopback port themselves
# (never as a service). Nothing to do when one is there.
redis:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v redis-server >/dev/null; then exit 0; fi
    if ! command -v apt-get >/dev/null; then
        echo "hearth: no redis-server and no apt-get: the shared-state tests will be skipped"
        exit 0
    fi
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "hearth: installing Debian's redis-server for the shared-state tests (not started as a service)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # Debian's package may start its own service; the tests start theirs on free ports
    if command -v systemctl >/dev/null && systemctl is-active -q redis-server 2>/dev/null; then
        $sudo systemctl disable --now -q redis-server || true
    fi

# Run the test suite.
test *args: setup-dev browser redis
    {{py}} -m pytest "$@"

# The client matrix alone: eleven client libraries' agent loops and structured output against the demo stack
# (instructor in its own virtualenv under .cache/clients/, made on first use).
clients *args: setup-dev
    {{py}} -m pytest tests/clients "$@"

# Regenerate docs/ui.png, the README's picture of the web page (the demo stack in chromium).
screenshot: setup-dev browser
    {{py}} -m testkit.screenshot

# Run the benchmarks and write bench/RESULTS.md.
bench *args: setup-dev redis
    {{py}} -m bench "$@"
