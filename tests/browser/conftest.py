"""The headless browser the tests under tests/browser drive, and where their screenshots go."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Debian's packages (`make browser` installs them); the fonts make Chinese text and emoji render in the pages.
INSTALL_HINT = (
    "run `make browser` (as root: apt-get update && apt-get install -y chromium chromium-driver fonts-wqy-microhei "
    "fonts-noto-color-emoji)"
)


def missing_browser_parts() -> list[str]:
    """What the browser tests need and this machine lacks."""
    missing = [name for name in ("chromium", "chromedriver", "fc-list") if shutil.which(name) is None]
    if "fc-list" not in missing:
        fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False)
        if not fonts.stdout.strip():
            missing.append("a Chinese font")
    return missing


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven through Debian's chromedriver; fails (never skips) when they are not installed."""
    missing = missing_browser_parts()
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    # --no-sandbox: Chromium refuses to start as root with its sandbox; /dev/shm is small in containers.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where this test's screenshots go: $LABELFLOW_SCREENSHOTS, else the test's tmp_path."""
    folder = Path(os.environ.get("LABELFLOW_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
