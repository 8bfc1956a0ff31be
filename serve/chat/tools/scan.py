"""The marker loop the tag-driven call parsers share: split a stream's text at the markers its current state looks
for, holding back a tail that may start one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from serve.engine.stops import first_marker, partial_tail


def split_at_markers(
    text: str,
    markers: Callable[[], Sequence[str]],
    between: Callable[[str], None],
    marker: Callable[[str], None],
) -> str:
    """Hands `between` the text before each marker and `marker` the marker itself, which may change the parser's
    state and so the markers looked for next (`markers()` is asked again after each). Returns the held tail: the
    end of `text` that may be the start of a marker, to put before the next piece."""
    while text:
        current = markers()
        found = first_marker(text, current)
        if found is None:
            keep = partial_tail(text, current)
            between(text[: len(text) - keep])
            return text[len(text) - keep :]
        pos, found_marker = found
        between(text[:pos])
        marker(found_marker)
        text = text[pos + len(found_marker) :]
    return ""
