"""GET /docs in a real browser (Debian's Chromium driven by Playwright): Swagger UI renders one
block per operation of /openapi.json, a deep link opens its operation, and no request leaves
loopback (the UI's files are served by inferd itself)."""

from __future__ import annotations

import shutil
import tempfile
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Server
from tests.test_openapi import operations

CHROMIUM = "/usr/bin/chromium"
# Never `playwright install`: the browser is Debian's (the Makefile installs it).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEEP_LINKED = "inference_v1_inference__model__post"


def test_swagger_ui_renders_every_operation_offline(null_server: Server) -> None:
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    document = httpx.get(null_server.url + "/openapi.json").json()
    expected = sorted(op["operationId"] for _, _, op in operations(document))
    assert DEEP_LINKED in expected
    requested: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{null_server.url}/docs#/default/{DEEP_LINKED}")
            page.wait_for_selector(".opblock", timeout=30_000)
            blocks = page.locator(".opblock")
            # Swagger UI ids its blocks `operations-{tag}-{operationId}`.
            rendered = sorted(
                (blocks.nth(i).get_attribute("id") or "").removeprefix("operations-default-")
                for i in range(blocks.count())
            )
            assert rendered == expected
            opened = page.locator(f"#operations-default-{DEEP_LINKED}.is-open")
            opened.wait_for(timeout=10_000)
            assert opened.locator(".opblock-body").count() == 1
            assert page.locator(".opblock.is-open").count() == 1
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()
    assert f"{null_server.url}/openapi.json" in requested
    hosts = {urlsplit(url).hostname for url in requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, requested
