"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven through Debian's
/usr/bin/chromedriver (`.ci/run` installs both; browsers that Python packages download do not run
here, and Selenium Manager is never asked to download anything: the driver path is explicit).

    with chromium(width=1280) as driver:
        driver.get(path.as_uri())
        console_errors(driver), network_requests(driver), print_pdf(driver), screenshot(driver, png)

The console ("browser") and network ("performance") logs are enabled; both are drained when read,
so call `clear_logs(driver)` before loading the page whose entries you want.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions",
)
# A4 in inches, for Page.printToPDF (the page's own `@page { size }` wins: preferCSSPageSize)
A4_INCHES = (8.27, 11.69)
PAGE_LOAD_TIMEOUT_S = 180  # a loaded 2-core CI machine can be slow


class ChromiumMissing(RuntimeError):
    """Debian's chromium / chromium-driver are not installed (the message says how to install)."""


def require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise ChromiumMissing(
            f"{' and '.join(missing)} not found: the browser tests need Debian's Chromium and ChromeDriver. "
            "Install them with `apt-get update && apt-get install -y --no-install-recommends chromium "
            "chromium-driver` (`.ci/run` does this)."
        )


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900, log_path: Path | None = None) -> Iterator:
    """A headless Chromium WebDriver with a fresh profile; always quit, profile removed, on exit."""
    require_chromium()
    os.environ.setdefault("SE_AVOID_STATS", "true")  # no Selenium Manager statistics
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mvt-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(log_path) if log_path else subprocess.DEVNULL)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        driver.set_script_timeout(PAGE_LOAD_TIMEOUT_S)
        set_window_size(driver, width, height)
        driver.get("about:blank")
        clear_logs(driver)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_window_size(driver, width: int, height: int) -> None:
    """In headless Chromium the window is the viewport (a vertical scrollbar takes ~15 px of it)."""
    driver.set_window_size(int(width), int(height))


def clear_logs(driver) -> None:
    """Drop the console and network entries collected so far (reading a log drains it)."""
    for kind in ("browser", "performance"):
        driver.get_log(kind)


def console_errors(driver) -> list[str]:
    """The SEVERE console entries since the last read (errors, CSP violations, failed loads)."""
    return [entry.get("message", "") for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def network_requests(driver, include_browser_ui: bool = False) -> list[str]:
    """URLs of every `Network.requestWillBeSent` since the last read of the performance log.

    Requests made by the browser's own chrome:// pages (its start page, before the test navigates)
    are left out unless `include_browser_ui`; everything a page requested is kept, data: URLs too."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"]).get("message", {})
        if message.get("method") != "Network.requestWillBeSent":
            continue
        params = message.get("params", {})
        document = str(params.get("documentURL", ""))
        if not include_browser_ui and document.startswith(("chrome://", "chrome-untrusted://", "devtools://")):
            continue
        urls.append(str(params.get("request", {}).get("url", "")))
    return urls


def emulate_media(driver, media: str = "") -> None:
    """CSS media emulation: "print" or "screen"; "" restores the default."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": media})


def print_pdf(driver, background: bool = False) -> bytes:
    """The page printed as a user would (A4, the page's `@page` size and margins honoured), as PDF bytes.

    `background=False` is the print dialog's default ("Background graphics" off): colours and shading
    still print only where the CSS asks for `print-color-adjust: exact`."""
    width, height = A4_INCHES
    result = driver.execute_cdp_cmd("Page.printToPDF", {
        "paperWidth": width, "paperHeight": height, "preferCSSPageSize": True,
        "printBackground": background, "marginTop": 0.4, "marginBottom": 0.4, "marginLeft": 0.4,
        "marginRight": 0.4, "transferMode": "ReturnAsBase64",
    })
    return base64.b64decode(result["data"])


def document_height(driver) -> int:
    return int(driver.execute_script(
        "return Math.ceil(Math.max(document.documentElement.scrollHeight, document.body ? "
        "document.body.scrollHeight : 0));"))


def screenshot(driver, path: Path, max_height: int = 20000) -> Path:
    """A full-page PNG: the window grows to the document's height (capped), then is restored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    try:
        set_window_size(driver, size["width"], min(max(document_height(driver), size["height"]), max_height))
        if not driver.save_screenshot(str(path)):
            raise RuntimeError(f"screenshot to {path} failed")
    finally:
        set_window_size(driver, size["width"], size["height"])
    return path
