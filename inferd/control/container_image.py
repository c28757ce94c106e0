"""The base image of GPU containers, built from Debian's packages without a registry.

mmdebstrap writes a minimal bookworm root file system with openssh-server, sudo and real
cloud-init (~60 s, ~68 MB compressed) from the mirror apt on this machine is configured with;
the tarball is cached under ~/.cache/inferd/images and `podman import`ed as a local image.
Done once: a present image (or cached tarball) is reused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

DEFAULT_IMAGE = "localhost/inferd-debian:bookworm"
SUITE = "bookworm"
PACKAGES = "usr-is-merged,openssh-server,iproute2,sudo,cloud-init,ifupdown"
EXCLUDED = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
CACHE = Path.home() / ".cache" / "inferd" / "images"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The first Debian archive (not the security one) apt reads from, deb822 or one-line."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M
        ):
            if "security" not in uri:
                return uri
    raise RuntimeError("No Debian mirror in apt's sources: cannot build the container image.")


def image_present(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def build(image: str = DEFAULT_IMAGE, cache: Path = CACHE, log=print) -> None:
    """Make `image` exist in podman's store, building its tarball only when none is cached."""
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found (Debian: apt-get install podman mmdebstrap).")
    if image_present(image):
        log(f"{image}: present")
        return
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"inferd-debian-{SUITE}.tar.zst"
    if not tarball.exists():
        mirror = debian_mirror()
        log(f"building {tarball.name} from {mirror} (about a minute)")
        partial = tarball.with_suffix(".partial.tar.zst")
        command = ["mmdebstrap", "--variant=minbase", f"--include={PACKAGES}", "--quiet"]
        command += [f"--dpkgopt=path-exclude={path}" for path in EXCLUDED]
        subprocess.run([*command, SUITE, str(partial), mirror], check=True)
        partial.rename(tarball)
    log(f"importing {tarball.name} as {image}")
    subprocess.run(
        ["podman", "import", "--quiet", "--change", 'CMD ["/bin/bash"]', str(tarball), image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
