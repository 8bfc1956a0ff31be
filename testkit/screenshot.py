"""`python -m testkit.screenshot [OUT]`: the README's picture of the web page (docs/ui.png by default).

Starts the built-in demo stack in a temporary folder, asks each demo model a few questions (so the table shows
speeds and the activity has rows), opens /ui/ in Debian's chromium with the stack's admin key and saves the Models
page at 1280x720. Needs `just browser` (chromium) and the demo checkpoints.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

from hearth_common.procs import CODE_ROOT, free_port
from models.demo.data import ITEMS
from testkit.browser import browser_missing, chromium
from testkit.stack import StackProcess, demo_models_missing

DEFAULT = CODE_ROOT / "docs" / "ui.png"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT
    missing = browser_missing() or demo_models_missing()
    if missing:
        print(f"screenshot: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hearth-ui-") as tmp:
        stack = StackProcess(["--port", str(free_port())], Path(tmp) / "state")
        try:
            for model in ("demo-think", "demo-harmony"):
                for item in ITEMS[:3]:
                    body = {"model": model, "messages": [{"role": "user", "content": item.question}]}
                    httpx.post(stack.api + "/chat/completions", json=body, timeout=60).raise_for_status()
            key = (Path(stack.state_at_start["keys"]) / "admin.key").read_text().strip()
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(stack.router + "/ui/")
                page.fill("#key-input", key)
                page.click("#key-form button[type=submit]")
                # a snapshot with the servers' speeds (their time to first token, in ms)
                page.wait_for_selector("tr[data-model='demo-harmony'] td:has-text(' ms')", timeout=30_000)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
        finally:
            stack.stop()
    print(f"screenshot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
