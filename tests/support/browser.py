"""A real Chromium for the browser tests: Debian's chromium driven by Playwright
(its Python sync API), headless, with a fake microphone that "says" a WAV file.

The browser's path is passed explicitly (``executable_path``), so Playwright
never needs a browser of its own: install the package with
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and never run `playwright install` (the
test machines have no internet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"

# Quiet, deterministic and CI-friendly: no sandbox (root in a container), no
# GPU, no /dev/shm (small in containers), and none of Chromium's own traffic.
# (Playwright gives every launch a fresh temporary profile of its own.)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
VIEWPORT = {"width": 1280, "height": 900}


def screenshot_folder(default: Path) -> Path:
    """Where a test's step screenshots go: $BROWSER_SCREENSHOTS when set (kept
    as artifacts), else `default` (a pytest temporary folder)."""
    folder = os.environ.get("BROWSER_SCREENSHOTS")
    if not folder:
        return default
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def snap(page: Page, path: Path) -> None:
    """A screenshot of a test step, with CSS transitions finished first: the
    phone drawer slides in over 150 ms, and a picture taken mid-slide shows
    the page half-drawn although it is fine."""
    page.screenshot(path=path, animations="disabled")


def missing_binaries() -> list[str]:
    """The browser binaries that are not installed (empty when all are)."""
    return [path for path in (CHROMIUM,) if not Path(path).is_file()]


@contextmanager
def chromium(fake_audio: Path | None = None, *, navigation_timeout: float = 60) -> Iterator[Page]:
    """Start a fresh headless Chromium and yield a page of a new context; close all on exit.

    ``fake_audio``: a 16-bit PCM WAV that the fake microphone plays (in a loop)
    whenever the page calls getUserMedia; the permission prompt is answered
    "allow" automatically. Self-signed certificates are accepted
    (``ignore_https_errors``), so the stack's HTTPS port works, where the page
    may open the microphone. The context is reachable as ``page.context``.
    """
    args = list(CHROMIUM_FLAGS)
    if fake_audio is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_audio}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_navigation_timeout(navigation_timeout * 1000)
            yield page
        finally:
            browser.close()
