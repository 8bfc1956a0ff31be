"""`embeddings = true` and `aliases` in the stack file reach the model server's command line."""

from __future__ import annotations

from pathlib import Path

from serve.config import from_args
from stack.commands import serve_argv
from stack.config import load_stack

STACK = """
[[models]]
name = "chat"
source = "chat.gguf"

[[models]]
name = "embed"
aliases = ["text-embedding-3-small", "qwen3-embedding"]
source = "embed.gguf"
embeddings = true
ctx_size = 1024
"""


def test_embeddings_and_aliases_reach_serve(tmp_path: Path) -> None:
    for name in ("chat.gguf", "embed.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    (tmp_path / "stack.toml").write_text(STACK)
    chat, embed = load_stack(tmp_path / "stack.toml").models
    chat_cfg = from_args(serve_argv(chat, tmp_path / "chat.gguf", 9101, 0)[3:])  # past `python -m serve`
    embed_cfg = from_args(serve_argv(embed, tmp_path / "embed.gguf", 9102, 0)[3:])
    assert (chat_cfg.embeddings, chat_cfg.alias) == (False, ())
    assert embed_cfg.embeddings and embed_cfg.alias == ("text-embedding-3-small", "qwen3-embedding")
    assert (embed_cfg.model_name, embed_cfg.ctx_size) == ("embed", 1024)
