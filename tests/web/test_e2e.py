"""The admin page end to end: the built page (web/dist) served by a real `api serve` on a fresh
demo database, driven by Playwright (web/e2e) in Debian's Chromium. Nothing is skipped: a
missing build or browser fails with what to run."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, App, serve

WEB = ROOT / "web"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = WEB / "e2e-screenshots"
EXPECTED_SCREENSHOTS = (
    "login",
    "login-error",
    "backup-completed",
    "backup-history",
    "restore-dialog",
    "recent-activity",
    "schedule-form",
    "scheduled-backups",
    "cloud-storage",
    "mobile-375",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EMAIL = "e2e-owner@gk.test"


def _create_owner(app: App, password: str) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "api", "users", "create"),
            *("--email", EMAIL, "--role", "OWNER", "--password-stdin"),
        ],
        cwd=app.root,
        env=app.env(),
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"users create failed:\n{result.stdout}\n{result.stderr}"


@contextmanager
def _serve(app: App, tmp_path: Path) -> Iterator[str]:
    """The server (scheduler off), once its page answers too; yields its base URL."""
    with serve(app, tmp_path / "server.log", SCHEDULER_ENABLED="false") as base:
        page = httpx.get(f"{base}/app/", timeout=10)
        assert page.status_code == 200, f"/app/ answered {page.status_code}: {page.text[:500]}"
        yield base


def _page_snapshot(error_context: Path, limit: int = 3000) -> str:
    """The accessibility snapshot Playwright saved of a failed test's page."""
    text = error_context.read_text(errors="replace")
    start = text.find("```yaml")
    end = text.find("```", start + 7)
    return text[start:end][:limit] if start >= 0 else text[:limit]


def _check_prerequisites() -> None:
    """The built page and the browser, before any server or database work."""
    if not (WEB / "dist" / "index.html").is_file():
        pytest.fail(f"{WEB / 'dist' / 'index.html'} is missing: run make web first")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    if not (WEB / "node_modules" / "@playwright" / "test").is_dir():
        pytest.fail("web/node_modules has no @playwright/test: run npm ci in web/")
    if shutil.which("npx") is None:
        pytest.fail("npx is missing: install Node.js")


@pytest.mark.timeout(600)
def test_admin_page_end_to_end(app: App, tmp_path: Path) -> None:
    _check_prerequisites()
    password = "e2e-" + secrets.token_urlsafe(18)
    _create_owner(app, password)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)

    env = {
        **os.environ,
        "E2E_EMAIL": EMAIL,
        "E2E_PASSWORD": password,
        "E2E_SCREENSHOTS": str(SCREENSHOTS),
        "E2E_OUTPUT": str(tmp_path / "playwright-output"),
        "CI": "1",
        "FORCE_COLOR": "0",
    }
    with _serve(app, tmp_path) as base:
        result = subprocess.run(
            ["npx", "--no-install", "playwright", "test"],
            cwd=WEB,
            env={**env, "E2E_BASE_URL": base},
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    log = (tmp_path / "server.log").read_text(errors="replace")
    contexts = "".join(
        f"\n--- {path.parent.name}: the page when it failed ---\n{_page_snapshot(path)}"
        for path in sorted((tmp_path / "playwright-output").glob("*/error-context.md"))
    )
    output = f"{result.stdout}\n{result.stderr}\nserver log (tail):\n{log[-4000:]}{contexts}"
    assert result.returncode == 0, f"playwright exited {result.returncode}:\n{output}"
    assert " passed" in result.stdout, output

    for name in EXPECTED_SCREENSHOTS:
        path = SCREENSHOTS / f"{name}.png"
        assert path.is_file(), f"no screenshot {path}:\n{output}"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), f"{path} is not a PNG"
        assert len(data) > 1000, f"{path} is nearly empty ({len(data)} bytes)"
