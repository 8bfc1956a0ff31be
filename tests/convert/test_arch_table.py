"""The architecture table: every GGUF arch it writes is one the pinned llama.cpp loads, and the types module
stands apart from the table and the planner (no import cycle between convert.archs and convert.plan)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from convert.archs import table

ROOT = Path(__file__).resolve().parents[2]


def test_every_gguf_arch_is_one_the_pinned_llama_cpp_knows(llama_src):
    source = (llama_src / "src" / "llama-arch.cpp").read_text(encoding="utf-8")
    known = set(re.findall(r'\{\s*LLM_ARCH_\w+,\s*"([^"]+)"\s*\}', source))
    assert {"llama", "qwen3moe", "phi3", "smollm3", "granite", "mistral3"} <= known
    missing = sorted({arch.name for arch in table().values()} - known)
    assert not missing, f"llama.cpp does not know {missing}"


def module_imports(path: Path, name: str) -> set[str]:
    """The convert.* modules a module imports at its top level, `if TYPE_CHECKING:` blocks included (a cycle
    there is one too, for the type checker and the reader), with the packages Python runs on the way
    (importing convert.archs.common runs convert/archs/__init__.py). Imports inside functions are not counted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    top = [n for node in tree.body for n in ([*node.body, *node.orelse] if isinstance(node, ast.If) else [node])]
    for node in top:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1) if parts[0] == "convert"}
    found.discard(name)
    return found


def test_convert_modules_import_without_cycles():
    modules = {}
    for path in (ROOT / "convert").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name != "convert":  # the package's own __init__ runs first, whoever imports what
            modules[name] = module_imports(path, name)

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(modules.get(node, ())):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [c for m in sorted(modules) if (c := cycle_from(m, m, (m,)))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
    assert "convert.plan" not in modules["convert.archs"] and "convert.archs" not in modules["convert.plan"]
