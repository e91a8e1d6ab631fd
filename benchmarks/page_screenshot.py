"""A trained run served by `s2s serve`, its page used in a real browser: lines typed into it,
translated, the first one's attention drawn, and a screenshot taken.

Usage: python benchmarks/page_screenshot.py RUN_DIR --line TEXT [--line TEXT ...]
       [--output page.png] [--port 8093]

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`) and
the serve extra. The server listens on 127.0.0.1 only and is stopped at the end. Prints each
line with the translation the page shows, so the screenshot can be checked against text.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script, s2s_command  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--line", action="append", required=True)
    parser.add_argument("--output", type=Path, default=Path("page.png"))
    parser.add_argument("--port", type=int, default=8093)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and chromedriver (apt-get install chromium "
                         "chromium-driver)")
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([*s2s_command(), "serve", "--run", str(args.run_dir),
                               "--port", str(args.port)], stderr=subprocess.DEVNULL)
    try:
        _wait_for(url + "/health", server)
        shown = _use_the_page(url, chromium, driver, args.line, args.output)
    finally:
        server.terminate()
        server.wait(timeout=60)
    for line, translation in zip(args.line, shown):
        print(f"{line}\t{translation}")
    print(f"screenshot: {args.output}")


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"s2s serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url}: no answer after {seconds:.0f} s")


def _use_the_page(url: str, chromium: str, driver: str, lines: list[str], output: Path
                  ) -> list[str]:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1200,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    try:
        browser.get(url + "/")
        browser.find_element(By.ID, "source").send_keys("\n".join(lines))
        browser.find_element(By.ID, "translate").click()
        WebDriverWait(browser, 120).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#output li")) == len(lines))
        browser.find_element(By.CSS_SELECTOR, "#output li").click()  # its attention heatmap
        time.sleep(1)
        browser.save_screenshot(str(output))
        return [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#output li")]
    finally:
        browser.quit()


if __name__ == "__main__":
    run_script(main)
