"""A real browser for the pages the project serves or writes (the gateway's
console, the ledger's statement): Debian's headless chromium driven through
its chromedriver with selenium.

    reason = browser_missing()        # None, or one line for pytest.skip()
    with Browser() as b:
        b.open(url)                    # http://... or file:///...
        b.text("#rides")               # innerText of the first match
        b.screenshot(tmp / "page.png")
        assert b.console_errors() == []

`console_errors()` is what the page's console logged at level SEVERE since
`open()`: console.error() calls, uncaught exceptions, failed loads (a page that
reaches for a CDN it cannot have shows up here).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LOAD_TIMEOUT = 30.0


def browser_missing() -> str | None:
    """Why no browser check can run here, or None when one can."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return "%s is not installed (Debian package %s; scripts/setup.sh installs it)" % (path, pkg)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extras; scripts/setup.sh installs them)"
    return None


class BrowserError(Exception):
    pass


class Browser:
    """One headless chromium window; close() (or the with block) ends it and its driver."""

    def __init__(self, width: int = 1280, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        reason = browser_missing()
        if reason:
            raise BrowserError(reason)
        self._profile = tempfile.mkdtemp(prefix="liftcard-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--window-size=%d,%d" % (width, height),
            "--user-data-dir=%s" % self._profile,
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
        try:
            self.driver = webdriver.Chrome(service=service, options=opts)
        except Exception as e:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise BrowserError("chromium did not start: %s" % str(e).splitlines()[0]) from None
        self.driver.set_page_load_timeout(LOAD_TIMEOUT)
        self._errors: list[str] = []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def open(self, url: str) -> None:
        """Load `url` (a Path is taken as a file) and wait until the document is complete."""
        if isinstance(url, Path):
            url = url.resolve().as_uri()
        self._drain()
        self._errors = []
        self.driver.get(url)
        deadline = time.monotonic() + LOAD_TIMEOUT
        while self.driver.execute_script("return document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError("%s did not finish loading in %.0f s" % (url, LOAD_TIMEOUT))
            time.sleep(0.05)

    def _elements(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self._elements(css)
        if not found:
            raise BrowserError("no element matches %r" % css)
        return found[0].get_attribute("innerText")

    def texts(self, css: str) -> list[str]:
        return [e.get_attribute("innerText") for e in self._elements(css)]

    def count(self, css: str) -> int:
        return len(self._elements(css))

    def script(self, js: str, *args):
        return self.driver.execute_script(js, *args)

    def screenshot(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise BrowserError("could not write the screenshot %s" % path)
        return path

    def _drain(self) -> None:
        for entry in self.driver.get_log("browser"):
            if entry.get("level") == "SEVERE":
                self._errors.append(entry.get("message", ""))

    def console_errors(self) -> list[str]:
        self._drain()
        return list(self._errors)
