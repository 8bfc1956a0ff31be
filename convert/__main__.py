"""`python -m convert SRC [OUT] [--type T] [--force] [--verify]` and `python -m convert verify SRC GGUF`.

Every failure a user can cause prints one line on stderr and exits 2; Ctrl-C and SIGTERM exit 130/143 after
the temporary file is removed.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import NoReturn

from convert.errors import ConvertError
from convert.write import OUT_TYPES
from hearth_common.logs import setup
from hearth_common.version import version_line


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like ConvertError
        raise _Usage(message)


def _convert_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m convert", description="Convert a HuggingFace safetensors folder to one GGUF file.")
    p.add_argument(
        "--version", action="version", version=version_line("hearth-convert"), help="print the version and exit"
    )
    p.add_argument("src", type=Path, help="HuggingFace model folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("out", type=Path, nargs="?", help="output .gguf (default: beside SRC, named SRC.TYPE.gguf)")
    p.add_argument("--type", dest="out_type", choices=OUT_TYPES, help="output type (default: the checkpoint's own)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--text-only",
        action="store_true",
        help="a multimodal checkpoint: leave out the image projector (OUT.mmproj.gguf)",
    )
    p.add_argument("--verify", action="store_true", help="compare llama.cpp's logits with transformers' afterwards")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--pooling",
        choices=("mean", "cls", "last", "rank"),
        help="an embedding model's pooling (default: a sentence-transformers folder's own); rank: a reranker "
        "(Qwen3-Reranker: by default when its model card or name says so)",
    )
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m convert verify", description="Compare a GGUF's logits with the HF checkpoint's.")
    p.add_argument("src", type=Path)
    p.add_argument("gguf", type=Path)
    return p


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the writer, which removes its temporary file


def _verify(src: Path, gguf: Path) -> int:
    from convert.verify import verify

    report = verify(src, gguf)
    print(report.summary())
    return 0 if report.ok else 1


def run(argv: list[str]) -> int:
    if argv[:1] == ["verify"]:
        args = _verify_parser().parse_args(argv[1:])
        return _verify(args.src, args.gguf)
    args = _convert_parser().parse_args(argv)
    from convert import convert_checkpoint

    out = convert_checkpoint(
        args.src,
        args.out,
        args.out_type,
        force=args.force,
        progress=not args.quiet,
        pooling=args.pooling,
        text_only=args.text_only,
    )
    print(out)
    return _verify(args.src, out) if args.verify else 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # The converter's warnings in the programs' one format; gguf-py's chatter (its writer's INFO lines, its
    # vocabulary helpers' guesses) stays out: our own checks decide what is an error, and a failure stays one line.
    setup("convert", "info")
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (ConvertError, _Usage) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
