"""A real Chromium for the browser tests: Debian's chromium driven through
Debian's chromedriver, headless, with a fake microphone that "says" a WAV file.

The driver path is passed explicitly, so Selenium Manager never tries to
download a browser or a driver (the test machines have no internet).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Quiet, deterministic and CI-friendly: no sandbox (root in a container), no
# GPU, no /dev/shm (small in containers), and none of Chromium's own traffic.
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


def missing_binaries() -> list[str]:
    """The browser binaries that are not installed (empty when all are)."""
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]


@contextmanager
def chromium(fake_audio: Path | None = None, *, page_load_timeout: float = 60,
             log_dir: Path | None = None) -> Iterator[webdriver.Chrome]:
    """Start a fresh headless Chromium and yield its WebDriver; quit it on exit.

    ``fake_audio``: a 16-bit PCM WAV that the fake microphone plays (in a loop)
    whenever the page calls getUserMedia; the permission prompt is answered
    "allow" automatically. The profile is a new temporary folder every time.
    Self-signed certificates are accepted (``acceptInsecureCerts``), so the
    stack's HTTPS port works, where the page may open the microphone.
    The browser console is kept: read it with ``driver.get_log("browser")``.
    ``log_dir``: where chromedriver writes its own log (for failures).
    """
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if fake_audio is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}")
    options.accept_insecure_certs = True
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})

    service_args = [f"--log-path={log_dir / 'chromedriver.log'}"] if log_dir else []
    service = Service(executable_path=CHROMEDRIVER, service_args=service_args)
    try:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(page_load_timeout)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
