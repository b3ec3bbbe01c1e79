#!/usr/bin/env python3
"""Regenerate the report screenshots in docs/ from the synthetic demo history.

    python scripts/report_screenshot.py            # docs/report.png and docs/report-versions.png

Writes the demo report (``cds-service report --demo-history --html``) to a temporary file and renders it
with Chromium headless through Playwright (``/usr/bin/chromium`` or ``CDS_TEST_CHROMIUM``; Playwright never
downloads a browser here), JavaScript off and every request outside the file refused, as a reader opening
the file would see it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def chromium() -> str:
    for candidate in (os.environ.get("CDS_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("no Chromium executable (apt-get install chromium, or set CDS_TEST_CHROMIUM)")


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-m", "cds_service", "report", "--demo-history", "--html", str(report)],
                       check=True, cwd=tmp)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=ARGS)
            context = browser.new_context(viewport={"width": 1100, "height": 1500}, java_script_enabled=False)
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                          else route.abort())
            page = context.new_page()
            page.goto(report.as_uri())
            page.screenshot(path=str(REPO / "docs" / "report.png"))
            page.locator('[id="rule-ivig.safety.renal"]').screenshot(path=str(REPO / "docs" / "report-versions.png"))
            browser.close()
    print("wrote docs/report.png and docs/report-versions.png")


if __name__ == "__main__":
    main()
