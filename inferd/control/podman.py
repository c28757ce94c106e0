"""Podman, driven through its CLI with JSON output (research/containers.md is the recipe).

Every call passes `--network-config-dir` (our CNI network lives under the server's home, not in
/etc) and every call that starts something `--runtime runc` (crun fails on hybrid cgroups).
Images are only ever local (`--pull=never`): no registry is contacted.

The network is a CNI bridge on a loopback-range subnet: the host reaches every container, a
container reaches nothing. No masquerade and no default route inside; nftables rules drop what
a container sends to the host (unless it answers the host's own connection), anything routed
through the bridge, and traffic between containers; IPv6 is off inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

LABEL_ID = "inferd.container"
LABEL_NODE = "inferd.node"
FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
WHAT_TO_INSTALL = (
    "GPU containers need podman, runc and nftables on the server "
    "(Debian: `apt-get install podman runc nftables`) and the base image "
    "(`inferd containers build-image`)."
)


class PodmanError(Exception):
    """A podman command failed; the message is its last line of stderr."""


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    bridge: str
    subnet: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def table(self) -> str:
        return "inferd_" + "".join(c if c.isalnum() else "_" for c in self.bridge)


@dataclass(frozen=True, slots=True)
class Observed:
    """One of our podman containers, as `podman ps` shows it."""

    container_id: str
    state: str  # created, running, exited, stopped, ...
    exit_code: int


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpus: float
    pids: int


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "nft") if shutil.which(tool) is None]


def _ulimits() -> list[str]:
    # Without CAP_SYS_RESOURCE podman's defaults fail to apply: ask for exactly the hard limits.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1_048_576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


class Podman:
    def __init__(self, config_dir: Path, network: Network) -> None:
        self.config_dir = config_dir
        self.network = network
        self._forwarding: str | None = None  # the host's ip_forward, as the operator set it

    async def _run(self, *args: str, stdin: bytes | None = None, timeout: float = 60) -> str:
        return await run(
            "podman", "--network-config-dir", str(self.config_dir), *args,
            stdin=stdin, timeout=timeout,
        )  # fmt: skip

    async def prepare(self) -> None:
        """Our CNI network and its firewall (idempotent; at every start)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        net = self.network
        conflist = {
            "cniVersion": "0.4.0",
            "name": net.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.subnet, "gateway": net.gateway}]],
                    },
                },
                {
                    "type": "tuning",
                    "sysctl": {
                        "net.ipv4.conf.eth0.route_localnet": "1",
                        "net.ipv6.conf.all.disable_ipv6": "1",
                        "net.ipv6.conf.default.disable_ipv6": "1",
                    },
                },
            ],
        }
        path = self.config_dir / f"{net.name}.conflist"
        path.write_text(json.dumps(conflist, indent=1))
        await run("nft", "-f", "-", stdin=firewall(net).encode())
        self._forwarding = FORWARDING.read_text().strip()
        self.bridge_up()

    def bridge_up(self) -> None:
        """The bridge exists once a container joined it: let the host reach loopback-range
        addresses through it (else connect() fails with EINVAL). CNI's gateway mode turns the
        host's IP forwarding on: put back what the operator had."""
        knob = Path(f"/proc/sys/net/ipv4/conf/{self.network.bridge}/route_localnet")
        if knob.exists() and knob.read_text().strip() != "1":
            knob.write_text("1")
        if self._forwarding is not None and FORWARDING.read_text().strip() != self._forwarding:
            FORWARDING.write_text(self._forwarding)

    async def image_exists(self, image: str) -> bool:
        try:
            await self._run("image", "exists", image)
        except PodmanError:
            return False
        return True

    async def create(
        self, container_id: str, node: str, image: str, seed: Path, limits: Limits
    ) -> None:
        await self._run(
            "--runtime", "runc", "create", "--pull=never",
            "--name", name_of(container_id), "--hostname", container_id,
            "--network", self.network.name,
            *_ulimits(),
            "--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m",
            "--cpus", f"{limits.cpus:g}", "--pids-limit", str(limits.pids),
            "--label", f"{LABEL_ID}={container_id}", "--label", f"{LABEL_NODE}={node}",
            "-v", f"{seed}:/seed:ro", "--entrypoint", "/seed/init.sh",
            image,
        )  # fmt: skip

    async def start(self, container_id: str) -> None:
        await self._run("--runtime", "runc", "start", name_of(container_id))
        self.bridge_up()

    async def observe(self, node: str) -> dict[str, Observed]:
        """Our containers on this node, by container id."""
        out = await self._run(
            "ps", "-a", "--format", "json", "--filter", f"label={LABEL_NODE}={node}"
        )
        seen = {}
        for item in json.loads(out or "[]"):
            container_id = (item.get("Labels") or {}).get(LABEL_ID)
            if container_id:
                seen[container_id] = Observed(
                    container_id, str(item.get("State", "")), int(item.get("ExitCode") or 0)
                )
        return seen

    async def ip(self, container_id: str) -> str | None:
        out = await self._run("inspect", "--format", "json", name_of(container_id))
        networks = json.loads(out)[0].get("NetworkSettings", {}).get("Networks") or {}
        address = (networks.get(self.network.name) or {}).get("IPAddress")
        return address or None

    async def remove(self, container_id: str) -> None:
        """Stop (SIGTERM, then SIGKILL after 5 s) and remove; nothing if it is gone."""
        await self._run("rm", "--force", "--time", "5", "--ignore", name_of(container_id))


def name_of(container_id: str) -> str:
    return f"inferd-{container_id}"


def firewall(net: Network) -> str:
    """nftables rules for the bridge, replacing any earlier ones atomically."""
    t, br, subnet = net.table, net.bridge, net.subnet
    return f"""
table inet {t}
delete table inet {t}
table inet {t} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{br}" ct state established,related accept
    iifname "{br}" drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{br}" drop
    oifname "{br}" drop
  }}
}}
table bridge {t}
delete table bridge {t}
table bridge {t} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    ip saddr {subnet} ip daddr {subnet} drop
  }}
}}
"""


async def run(*argv: str, stdin: bytes | None = None, timeout: float = 60) -> str:
    """A command's stdout; PodmanError with the last line of its stderr when it fails.

    Output goes through files, not pipes: `podman start` leaves conmon running with the
    descriptors it inherited, so a pipe would never reach end-of-file."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        except OSError as exc:  # the tool is gone (uninstalled while serving)
            raise PodmanError(f"`{argv[0]}` cannot run: {exc.strerror}") from None
        try:
            await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise PodmanError(
                f"`{' '.join(argv[:3])}` did not finish within {timeout:g} s"
            ) from None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        raise PodmanError(lines[-1] if lines else f"{argv[0]} exited with {proc.returncode}")
    return stdout.decode()
