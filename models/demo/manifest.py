"""MANIFEST.sha256 of the committed demo checkpoints: `sha256sum` format, paths relative to models/demo/.

`cd models/demo && sha256sum -c MANIFEST.sha256` checks it without Python.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DEMO_DIR = Path(__file__).parent
MANIFEST = DEMO_DIR / "MANIFEST.sha256"
MODELS = ("demo-think", "demo-harmony")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute(root: Path = DEMO_DIR, models: tuple[str, ...] = MODELS) -> dict[str, str]:
    """sha256 of every file in each model folder, keyed by `model/relative/path` (sorted)."""
    entries: dict[str, str] = {}
    for name in models:
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"demo model folder missing: {folder}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            entries[path.relative_to(root).as_posix()] = file_sha256(path)
    return dict(sorted(entries.items()))


def render(entries: dict[str, str]) -> str:
    return "".join(f"{sha}  {path}\n" for path, sha in entries.items())


def read(manifest: Path = MANIFEST) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        sha, sep, path = line.partition("  ")
        if not sep or len(sha) != 64:
            raise ValueError(f"{manifest}:{number}: not a sha256sum line: {line!r}")
        entries[path] = sha
    return entries


def write(root: Path = DEMO_DIR) -> Path:
    """Hash both model folders under `root` and write root/MANIFEST.sha256 (temp file + rename)."""
    target = root / MANIFEST.name
    tmp = target.with_suffix(".tmp")
    tmp.write_text(render(compute(root)))
    tmp.replace(target)
    return target


def model_digest(name: str, manifest: Path = MANIFEST) -> str:
    """One hash for one model's manifest lines: it changes whenever any of its files does."""
    if name not in MODELS:
        raise KeyError(f"unknown demo model {name!r}; expected one of {', '.join(MODELS)}")
    lines = {path: sha for path, sha in read(manifest).items() if path.startswith(f"{name}/")}
    if not lines:
        raise KeyError(f"{manifest} lists no files of {name}")
    return hashlib.sha256(render(lines).encode()).hexdigest()
