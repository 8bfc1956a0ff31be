"""Test strings for tokenizer equality: generated from a few hand-written groups, well over 200 in all."""

from __future__ import annotations

import itertools

from testkit.fixtures.build import CORPUS

HAND = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \t \n ", "a", " a", "a ", "  a  b   c    d",
    "Hello world", "Hello  world", "Hello\nworld", "Hello\n\n\nworld", "hello\r\nworld", " leading", "trailing ",
    "0", "1", "12", "123", "1234", "12345", "123456789", "3.14159", "-42", "1,000,000", "2026-11-25", "0x1F",
    "😀", "😀😀", "👨‍👩‍👧", "🇫🇷🇩🇪", "❤️", "a😀b", " 😀 ", "🚀 launch", "☕️café",
    "日本語", "こんにちは世界", "你好，世界！", "안녕하세요", "中文English混合123", "東京に行きます。",
    "Привет мир", "Καλημέρα", "مرحبا", "नमस्ते", "สวัสดี", "Ünïcödé façade naïve", "ß ẞ ﬁ ﬀ", "e\u0301",
    "def f(x):\n    return x * 2\n", "if (a && b) { c(); }", "x = [i**2 for i in range(10)]", "#include <stdio.h>",
    "SELECT * FROM t;", '{"a": [1, 2, {"b": null}]}', "<div>text</div>", "https://example.com/a?b=c&d=e",
    "don't", "I'm", "they'll", "we've", "she'd", "DON'T", "It'S", "'s", "'''", "...", "!!!", "???", "--", "—",
    "    indented", "\t\ttabbed", "a\u00a0b", "a\u2003b", "line1\nline2\n", "x\u200by", "\u3000full width space",
]  # fmt: skip


def strings(specials: list[str]) -> list[str]:
    """Hand-written cases, every corpus line and pairs of them, and text around each special token."""
    lines = [ln for ln in CORPUS.read_text(encoding="utf-8").splitlines() if ln]
    out = list(HAND)
    out += lines
    out += [a + "\n" + b for a, b in itertools.pairwise(lines)][:40]
    out += [ln[: len(ln) // 2] for ln in lines]
    for s in specials:
        out += [s, f"{s}hello", f"hello{s}", f" {s} ", f"{s}\n{s}", f"a {s}b{s} c", f"{s}日本語 😀 {s}"]
    return out
