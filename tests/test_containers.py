"""GPU containers on real podman (runc), with real cloud-init and SSH: the seed page's flow, the
firewall seen from inside a container, failures and billing, and every refusal. One server
for the module; containers live on their own bridge and subnet, removed at the end."""

from __future__ import annotations

import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferd.config import Settings
from inferd.control.containers import node_name
from inferd.control.podman import LABEL_ID, LABEL_NODE, name_of
from tests.conftest import ADMIN_KEY, NULL_CATALOG, Server

pytestmark = pytest.mark.containers

IMAGE = "inferd-debian:bookworm"
BROKEN = "broken:latest"
BROKEN_LOCAL = "localhost/inferd-test-broken:latest"
BRIDGE = "inferd-test0"
SUBNET = "127.214.0.0/24"
HOST_ON_BRIDGE = "127.214.0.1"


def podman(*args: str, config_dir: Path | None = None) -> subprocess.CompletedProcess:
    net = ["--network-config-dir", str(config_dir)] if config_dir else []
    return subprocess.run(["podman", *net, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def broken_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image with no shell: its entrypoint cannot run, so `podman start` fails."""
    root = tmp_path_factory.mktemp("broken")
    (root / "README").write_text("nothing to run here\n")
    with tarfile.open(root / "rootfs.tar", "w") as tar:
        tar.add(root / "README", arcname="README")
    done = podman("import", "--quiet", str(root / "rootfs.tar"), BROKEN_LOCAL)
    assert done.returncode == 0, done.stderr
    return BROKEN_LOCAL


@pytest.fixture(scope="module")
def ct_server(tmp_path_factory: pytest.TempPathFactory, broken_image: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("containers")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_CONTAINERS": "true",
        "INFERD_GPU_QUOTA": "4",
        # $0.01 per running second of a 1xCPU config, written every second.
        "INFERD_CPU_POOL_USD_PER_HOUR": "36",
        "INFERD_UPTIME_FLUSH_S": "1",
        "INFERD_CPU_POOL_SLOTS": "4",
        "INFERD_CONTAINER_RECONCILE_S": "1",
        "INFERD_CONTAINER_BRIDGE": BRIDGE,
        "INFERD_CONTAINER_SUBNET": SUBNET,
        "INFERD_CONTAINER_MEMORY_MB_PER_GPU": "512",
    }
    srv = Server(root, env)
    (srv.home / "config.toml").write_text(
        '[[pools]]\nname = "A100-80GB"\ncount = 2\nusd_per_hour = 72.0\nemulated = true\n\n'
        f'[container_images]\n"{IMAGE}" = "localhost/inferd-debian:bookworm"\n'
        f'"{BROKEN}" = "{broken_image}"\n'
    )
    srv.start()
    yield srv
    srv.stop()
    # The server leaves containers running by design (a restart takes them up): end ours.
    node = node_name(Settings(home=srv.home))
    listed = podman("ps", "-a", "-q", "--filter", f"label={LABEL_NODE}={node}")
    for podman_id in listed.stdout.split():
        podman("rm", "-f", "-t", "0", podman_id, config_dir=srv.home / "containers" / "cni")
    table = "inferd_" + BRIDGE.replace("-", "_")
    for family in ("inet", "bridge"):
        subprocess.run(["nft", "delete", "table", family, table], check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], check=False, capture_output=True)
    podman("rmi", "-f", broken_image)


def account(server: Server, name: str, **limits: float | int) -> httpx.Client:
    created = httpx.post(
        server.url + "/v1/accounts",
        json={"name": name, **limits},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {created.json()['api_key']}"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def user_data(key: Path) -> str:
    # The seed page's cloud-config, with the key generated for the test.
    public = key.with_suffix(".pub").read_text().strip()
    return (
        "#cloud-config\nusers:\n- name: ubuntu\n  shell: /bin/bash\n"
        f"  sudo: 'ALL=(ALL) NOPASSWD:ALL'\n  ssh_authorized_keys:\n  - {public}\n"
    )


def ssh(key: Path, ip: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", f"ubuntu@{ip}", command,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def create(client: httpx.Client, key: Path, name: str, image: str = IMAGE) -> str:
    params = client.get("/v1/containers/params").json()
    assert image in params["images"]
    [gpu_config] = [c for c in params["gpu_configs"] if c.startswith("1xCPU-")]
    reply = client.post(
        "/v1/containers",
        json={
            "name": name,
            "gpu_config": gpu_config,
            "container_image": image,
            "cloud_init_user_data": user_data(key),
        },
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["container_id"]


def wait_state(client: httpx.Client, container_id: str, wanted: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        body = client.get(f"/v1/containers/{container_id}").json()
        if not seen or seen[-1] != body["state"]:
            seen.append(body["state"])
        if body["state"] == wanted:
            return body
        if body["state"] == "failed" and wanted != "failed":
            raise AssertionError(f"failed: {body['fail_reason']}")
        time.sleep(0.2)
    raise TimeoutError(f"{container_id} never {wanted}; seen {seen}")


def container_cost(client: httpx.Client, container_id: str) -> tuple[float, float]:
    rows = client.get("/v1/usage").json()["usage"]
    mine = [r for r in rows if r["model"] == f"container/{container_id}"]
    return sum(r["cost"] for r in mine), sum(r["uptime_seconds"] for r in mine)


def podman_has(container_id: str) -> bool:
    listed = podman("ps", "-a", "-q", "--filter", f"label={LABEL_ID}={container_id}")
    return bool(listed.stdout.strip())


def test_page_flow_ssh_firewall_isolation_and_billing(ct_server: Server, ssh_key: Path) -> None:
    with account(ct_server, "alice") as alice, account(ct_server, "bob") as bob:
        container_id = create(alice, ssh_key, "my-container")
        running = wait_state(alice, container_id, "running")
        ip = running["ip"]
        assert ip.startswith("127.214.0.") and running["start_ts"]
        assert running["price_per_hour"] == 36.0 and running["container_image"] == IMAGE
        login = ssh(ssh_key, ip, "id -un && sudo -n true && echo sudo-ok")
        assert login.stdout.split() == ["ubuntu", "sudo-ok"], login.stderr
        # The config's caps (512 MiB per GPU here), as the container's cgroup has them.
        memory = ssh(
            ssh_key,
            ip,
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
            " || cat /sys/fs/cgroup/memory.max",
        )
        assert memory.stdout.strip() == str(512 * 2**20), memory
        # The seed (it holds the user data) is gone from the host once the container runs.
        assert not list((ct_server.home / "containers" / "seeds").glob(container_id))

        # From inside: the host's inferd and PostgreSQL, a listener on every address of the
        # host, and the world are all out of reach.
        with socket.create_server(("0.0.0.0", 0)) as listener:
            wide_port = listener.getsockname()[1]
            probes = [
                (HOST_ON_BRIDGE, ct_server.port),
                (HOST_ON_BRIDGE, 5432),
                (HOST_ON_BRIDGE, wide_port),
                ("127.0.0.1", ct_server.port),
                ("127.0.0.1", 5432),
                ("1.1.1.1", 80),
            ]
            script = "; ".join(
                f"timeout 3 bash -c '</dev/tcp/{h}/{p}' 2>/dev/null && echo open-{h}:{p}"
                for h, p in probes
            )
            reached = ssh(ssh_key, ip, script + "; echo done")
        assert reached.stdout.split() == ["done"], reached.stdout

        # Bob's container: Alice sees none of it and her container cannot reach it.
        other = create(bob, ssh_key, "bobs")
        other_ip = wait_state(bob, other, "running")["ip"]
        for method in ("GET", "DELETE"):
            assert alice.request(method, f"/v1/containers/{other}").status_code == 404
        assert alice.patch(f"/v1/containers/{other}", json={"name": "x"}).status_code == 404
        assert [c["id"] for c in alice.get("/v1/containers").json()] == [container_id]
        crossing = ssh(ssh_key, ip, f"timeout 3 bash -c '</dev/tcp/{other_ip}/22' || echo shut")
        assert crossing.stdout.split() == ["shut"]
        assert ssh(ssh_key, other_ip, "id -un").stdout.strip() == "ubuntu"  # the host can

        renamed = alice.patch(f"/v1/containers/{container_id}", json={"name": "renamed"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"

        for client, cid in ((alice, container_id), (bob, other)):
            assert client.delete(f"/v1/containers/{cid}").status_code == 200
        gone = wait_state(alice, container_id, "deleted", timeout=30)
        wait_state(bob, other, "deleted", timeout=30)
        assert gone["stop_ts"] and gone["ip"] is None
        assert not podman_has(container_id) and not podman_has(other)
        assert [c["id"] for c in alice.get("/v1/containers?state=inactive").json()] == [
            container_id
        ]
        assert alice.get("/v1/containers").json() == []

        time.sleep(2.5)  # the last running seconds are written within a second
        cost, seconds = container_cost(alice, container_id)
        assert seconds > 0 and cost == pytest.approx(seconds * 0.01, rel=0.05)
    # Logs carry metadata: the user data (its key) never appears.
    public = ssh_key.with_suffix(".pub").read_text().split()[1]
    assert public not in ct_server.log_text()


def test_image_that_cannot_start_fails_with_a_reason(ct_server: Server, ssh_key: Path) -> None:
    with account(ct_server, "carol") as carol:
        container_id = create(carol, ssh_key, "broken", image=BROKEN)
        failed = wait_state(carol, container_id, "failed", timeout=30)
        assert "exited while starting" in failed["fail_reason"], failed
        time.sleep(1.5)
        assert not podman_has(container_id)
        assert container_cost(carol, container_id) == (0, 0)
        deleted = carol.delete(f"/v1/containers/{container_id}").json()
        assert deleted["state"] == "deleted"


def test_container_killed_behind_our_back_fails_and_stops_billing(
    ct_server: Server, ssh_key: Path
) -> None:
    with account(ct_server, "dave") as dave:
        container_id = create(dave, ssh_key, "victim")
        wait_state(dave, container_id, "running")
        time.sleep(1.5)
        killed = podman("kill", name_of(container_id))
        assert killed.returncode == 0, killed.stderr
        started = time.monotonic()
        failed = wait_state(dave, container_id, "failed", timeout=10)
        assert time.monotonic() - started < 10
        assert "stopped" in failed["fail_reason"] or "vanished" in failed["fail_reason"]
        time.sleep(2.5)
        billed = container_cost(dave, container_id)
        assert billed[0] > 0
        time.sleep(2.5)
        assert container_cost(dave, container_id) == billed  # nothing after the kill
        assert not podman_has(container_id)


def test_spending_limit_refuses_new_and_shuts_down_running(
    ct_server: Server, ssh_key: Path
) -> None:
    with account(ct_server, "erin", spending_limit=0.03) as erin:
        container_id = create(erin, ssh_key, "pricey")
        wait_state(erin, container_id, "running")
        # $0.01 a second: the limit is used up within seconds and the container shut down.
        gone = wait_state(erin, container_id, "deleted", timeout=30)
        assert "spending limit" in gone["fail_reason"]
        assert not podman_has(container_id)
        refused = erin.post(
            "/v1/containers",
            json={"name": "more", "gpu_config": "1xA100-80GB", "container_image": IMAGE},
        )
        assert refused.status_code == 402, refused.text


def test_refusals(ct_server: Server) -> None:
    with account(ct_server, "frank", gpu_quota=1) as frank:
        body = {"name": "c", "gpu_config": "1xA100-80GB", "container_image": IMAGE}

        def refused(status: int, param: str | None, **change: str) -> str:
            reply = frank.post("/v1/containers", json={**body, **change})
            assert reply.status_code == status, reply.text
            error = reply.json()["error"]
            assert error.get("param") == param, error
            return error["message"]

        assert "inferd-debian:bookworm" in refused(400, "container_image", container_image="x:1")
        assert "1xA100-80GB" in refused(400, "gpu_config", gpu_config="A100")
        refused(400, "gpu_config", gpu_config="1xH999-80GB")
        assert "2xA100-80GB" in refused(400, "gpu_config", gpu_config="3xA100-80GB")
        refused(400, "cloud_init_user_data", cloud_init_user_data="#cloud-config\nusers: [a\n")
        refused(400, "name", name="no spaces")
        assert "quota" in refused(403, None, gpu_config="2xA100-80GB")
        assert frank.get("/v1/containers/ctr-0000000000000000").status_code == 404
        listed = frank.get("/v1/containers?state=everything")
        assert listed.status_code == 400
        availability = frank.get("/v1/containers/gpu_availability").json()["gpu_configs"]
        a100 = {c["gpu_config"]: c for c in availability if "A100" in c["gpu_config"]}
        assert a100["2xA100-80GB"]["price_per_hour"] == 144.0
        assert a100["1xA100-80GB"]["available"]
    assert httpx.get(ct_server.url + "/v1/containers").status_code == 401


def test_without_podman_the_api_says_what_to_install(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("no-podman")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    (root / "bin").mkdir()
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_CONTAINERS": "true",
    }
    srv = Server(root, {**env, "PATH": str(root / "bin")}).start()
    try:
        with account(srv, "gina") as gina:
            for method, path in (("GET", "/v1/containers"), ("POST", "/v1/containers")):
                reply = gina.request(method, path, json={})
                assert reply.status_code == 503, reply.text
                assert "apt-get install podman" in reply.json()["error"]["message"]
    finally:
        srv.stop()
