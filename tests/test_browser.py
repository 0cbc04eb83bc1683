"""The browser the page checks rely on (liftcard_testing.browser): it reads what
the page shows, and it does see a console error or a failed load, so a page
check that finds none means something."""

from __future__ import annotations

import pytest

from liftcard_testing.browser import Browser, browser_missing

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def test_reads_a_clean_page(tmp_path, browser):
    page = tmp_path / "clean.html"
    page.write_text("<!doctype html><title>t</title><p id=n>1 234 fen</p><ul><li>a<li>b</ul>")
    browser.open(page)
    assert browser.text("#n") == "1 234 fen"
    assert browser.texts("li") == ["a", "b"]
    assert browser.console_errors() == []
    shot = browser.screenshot(tmp_path / "shots" / "clean.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sees_console_errors_and_exceptions(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><title>t</title><script>console.error('boom'); undefinedFn();</script>")
    browser.open(page)
    errors = browser.console_errors()
    assert any("boom" in e for e in errors), errors
    assert any("undefinedFn" in e for e in errors), errors


def test_sees_a_failed_load(tmp_path, browser):
    page = tmp_path / "cdn.html"
    page.write_text('<!doctype html><title>t</title><script src="http://127.0.0.1:9/chart.js"></script>')
    browser.open(page)
    assert browser.console_errors(), "a script that cannot load must show as an error"


def test_errors_are_per_page(tmp_path, browser):
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><script>console.error('x')</script>")
    good = tmp_path / "good.html"
    good.write_text("<!doctype html><p>ok</p>")
    browser.open(bad)
    browser.open(good)
    assert browser.console_errors() == []
