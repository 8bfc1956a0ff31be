"""The serve tests' servers keep no prompt cache on disk unless a test asks for it (--cache-disk): they share the
checkout's cache folder and the same models, so a state one test's server kept at its stop would be restored by
the next one's, and a prompt a test means to be cold would not be."""

from __future__ import annotations

import os

os.environ.setdefault("HEARTH_SERVE_CACHE_DISK", "0")
