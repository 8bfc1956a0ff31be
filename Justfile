# Recipes for a fresh machine: Python 3.11+, a C compiler and cmake.
set positional-arguments

venv := ".venv"
py := venv / "bin" / "python"

# Create .venv and install the project with its dev extra (fast when nothing changed).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x {{py}} ] || python3 -m venv {{venv}}
    stamp={{venv}}/.hearth-setup
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        {{py}} -m pip install -q --upgrade pip
        # pip caches the llama-cpp-python wheel it compiles, so only the first setup takes minutes.
        {{py}} -m pip install -q -e '.[dev]'
        touch "$stamp"
    fi

# Convert a HuggingFace folder to GGUF: just convert SRC [OUT] [--type TYPE] [--force] [--verify]
convert *args: setup
    {{py}} -m convert "$@"

# Serve a stack of models behind one router: just serve [STACK_FILE] [--port P] [--plan-only]
# (the built-in demo models when no stack file is given; see stack.example.toml).
serve *args: setup
    exec {{py}} -m stack "$@"

# Run the test suite.
test *args: setup
    {{py}} -m pytest "$@"

# Run the benchmarks and write bench/RESULTS.md.
bench *args: setup
    {{py}} -m bench "$@"
