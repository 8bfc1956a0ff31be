"""The one exception tree of `convert`.

Every failure a user can cause (a bad folder, a bad file, an unsupported model) is a `ConvertError` whose
message is one line; the CLI prints it and exits 2. Anything else is a bug and keeps its traceback.

    ConvertError
    ├── SourceError        config.json / safetensors / tokenizer files missing, truncated or corrupt
    ├── UnsupportedError   an architecture, dtype, tokenizer or output type we do not convert
    ├── ShapeError         a tensor whose shape does not match config.json, or missing/unmapped tensors
    └── OutputError        the target exists (no --force), cannot be written, or quantization failed
"""

from __future__ import annotations


class ConvertError(Exception):
    """A user-facing conversion failure; str(e) is one line."""

    def __str__(self) -> str:
        # One line, whatever the message was built from.
        return " ".join(super().__str__().split())


class SourceError(ConvertError):
    pass


class UnsupportedError(ConvertError):
    pass


class ShapeError(ConvertError):
    pass


class OutputError(ConvertError):
    pass
