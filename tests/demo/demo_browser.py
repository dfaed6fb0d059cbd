"""Driving Debian's chromium (apt-get install chromium chromium-driver) with Selenium, for the
demo's end-to-end test and the README's screenshots. No browser is downloaded: the binary and
its driver are the system's, or the test is skipped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--disable-extensions",
        "--disable-sync", "--window-size=1280,900",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")  # a microphone that beeps


def missing() -> str | None:
    """Why the browser test cannot run here (None: it can)."""
    for name in ("gradio", "selenium"):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed (pip install -e '.[dev,demo]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is absent (apt-get install -y chromium chromium-driver)"
    return None


def start_browser(width: int = 1280, height: int = 900):
    """A headless chromium driven through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS:
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    return driver


def wait_for(check: Callable[[], object], timeout: float = 120.0, what: str = "") -> object:
    """Poll `check()` until it returns something truthy (its value) or raise after `timeout` s."""
    end = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 — elements come and go while gradio renders
            last_error = err
        time.sleep(0.25)
    raise TimeoutError(f"waited {timeout:.0f} s for {what or check}; last error: {last_error!r}")


def css(driver, selector: str):
    """Every element matching a CSS selector."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    """The visible text of every element matching `selector`, joined by newlines."""
    return "\n".join(e.text for e in css(driver, selector))


def upload(driver, container: str, path: Path) -> None:
    """Put `path` into the file input inside the component `container` (a CSS selector); a
    component that holds a file already is cleared first (its file input comes back)."""
    file_input, clear = f"{container} input[type=file]", f"{container} button[aria-label=Clear]"
    wait_for(lambda: css(driver, file_input) or css(driver, clear), 120, f"{container} to be drawn")
    if not css(driver, file_input):
        click(driver, clear)
    inputs = wait_for(lambda: css(driver, f"{container} input[type=file]"), 60, f"a file input in {container}")
    inputs[0].send_keys(str(Path(path).resolve()))


def type_into(driver, selector: str, text: str) -> None:
    """Type `text` into the first textarea/input inside `selector`."""
    field = wait_for(lambda: css(driver, f"{selector} textarea, {selector} input"), 60, selector)[0]
    field.clear()
    field.send_keys(text)


def click(driver, selector: str) -> None:
    """Click the first element matching `selector` (scrolled into view)."""
    element = wait_for(lambda: css(driver, selector), 60, selector)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def open_tab(driver, title: str) -> None:
    """Select the page's tab called `title`."""
    buttons = wait_for(lambda: [b for b in css(driver, "button[role=tab]") if b.text.strip() == title], 60,
                       f"the tab {title!r}")
    buttons[0].click()


def free_port() -> int:
    """A TCP port of 127.0.0.1 free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(url: str, server: subprocess.Popen) -> bool:
    """Whether `url` answers 200; a RuntimeError with its stderr when the server process ended."""
    if server.poll() is not None:
        raise RuntimeError(f"the server exited with status {server.returncode}: {server.stderr.read()}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
