"""A real headless Chromium (Debian's) driven by Playwright, for pages curato writes or serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium_page() -> Iterator[object]:
    """A fresh page in Debian's chromium; fails (not skips) when the browser is missing."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian chromium is missing: apt-get install chromium (as .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def curato_serve(workspace: object, log_path: object, *extra: str) -> Iterator[str]:
    """A real ``curato serve`` subprocess on a free loopback port; yields its URL once /login answers, and stops
    it (terminate, then kill) at the end. Fails (not skips) when it exits or does not answer within 60 s."""
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    curato = Path(sys.executable).with_name("curato")
    port = free_port()
    log_file = Path(str(log_path))
    with log_file.open("w") as log:
        process = subprocess.Popen([curato, "serve", "-w", str(workspace), "--host", "127.0.0.1", "--port", str(port),
                                    *extra], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    pytest.fail(f"curato serve exited with {process.returncode}: {log_file.read_text()}")
                try:
                    with urllib.request.urlopen(url + "/login", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"curato serve did not answer in 60 s: {log_file.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
