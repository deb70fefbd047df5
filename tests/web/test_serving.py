"""The built admin page is served under /app/ with deep links; the API keeps its JSON 404s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.main import create_app
from tests.conftest import App


@pytest.fixture
async def client(app: App, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>Nexus Backup</title>")
    (dist / "assets" / "app.js").write_text("console.log('hi')")
    (tmp_path / "secret.txt").write_text("outside dist")
    fastapi = create_app(app.settings(scheduler_enabled=False), web_dist=dist)
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_root_redirects_to_the_app(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/app/"


@pytest.mark.parametrize("path", ["/app", "/app/", "/app/settings/backup", "/app/a/b/c"])
async def test_deep_links_load_the_page(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert "<title>Nexus Backup</title>" in response.text


async def test_assets_are_served_and_missing_assets_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/app/assets/app.js")).text == "console.log('hi')"
    missing = await client.get("/app/assets/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"


async def test_nothing_outside_dist_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/app/../secret.txt")
    assert "outside dist" not in response.text
    encoded = await client.get("/app/%2e%2e/secret.txt")
    assert "outside dist" not in encoded.text


async def test_unknown_api_paths_stay_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/backupz")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


async def test_an_unbuilt_page_says_how_to_build_it(app: App, tmp_path: Path) -> None:
    fastapi = create_app(app.settings(scheduler_enabled=False), web_dist=tmp_path / "none")
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/app/")
    assert response.status_code == 503
    assert "make web" in response.json()["detail"]
