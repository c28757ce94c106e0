"""Model repositories from a Hugging Face hub (huggingface.co, a mirror, `HF_ENDPOINT`), for
deployments. A version pins its revision to a commit (`resolve_commit`); `fetch` downloads that
commit once into the model cache, atomically, so a folder at its final path is complete by
construction and later fetches need no network. Every request goes through `huggingface_hub`;
this module adds the atomic layout, one progress callback and errors a user can act on.

The token is handed to the client calls only: it is never logged, never part of a path, and
scrubbed from every `FetchError`. Without a token nothing is sent, not even a token saved on
this machine: a deployment must not borrow the operator's access to private repositories.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from tqdm import tqdm

from inferd.weights.cache import cache_root

__all__ = [
    "FetchError",
    "Progress",
    "RepoKind",
    "fetch",
    "gguf_files",
    "repo_kind",
    "resolve_commit",
]

RepoKind = Literal["safetensors", "gguf", "lora"]
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

_COMMIT = re.compile(r"[0-9a-f]{40}")
# Weight formats inferd never loads (pickles, ONNX, TensorFlow, Flax): fetching them would only
# double the download, and a pickle must not even reach the disk of a server that never runs one.
_SKIPPED = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".onnx_data", ".ot")
_NO_WEIGHTS = "holds no weights inferd can load (expected *.safetensors, *.gguf, or a PEFT adapter)"


class FetchError(Exception):
    """A repository that cannot be resolved or fetched as asked. `reason` is one sentence for
    the person who deployed it (it never holds the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve_commit(repo: str, revision: str | None, token: str | None, endpoint: str | None) -> str:
    """The commit `revision` (a branch, tag or sha; None: the default branch) points at now.
    A version stores it, so a branch that moves later never changes what a version runs."""
    endpoint = endpoint.rstrip("/") if endpoint else None
    with _errors(repo, revision or "main", token, endpoint):
        validate_repo_id(repo)
        info = _api(endpoint).model_info(repo, revision=revision, token=token or False)
    if info.sha is None or not _COMMIT.fullmatch(info.sha):
        raise FetchError(f"The hub gave no commit for revision `{revision or 'main'}` of `{repo}`.")
    return info.sha


def repo_kind(folder: Path) -> RepoKind:
    """What a downloaded repository holds, which decides how it is loaded; FetchError if none."""
    kind = _kind(_files(folder))
    if kind is None:
        raise FetchError(f"`{folder}` {_NO_WEIGHTS}.")
    return kind


def gguf_files(folder: Path) -> list[Path]:
    """The GGUF files of a "gguf" repository: quantizations of one model, the caller picks one."""
    return sorted(p for p in folder.rglob("*.gguf") if p.is_file())


def fetch(
    repo: str,
    commit: str,
    token: str | None,
    *,
    endpoint: str | None = None,
    dest_root: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """`repo` at `commit` (a full sha, from `resolve_commit`) as the folder
    `dest_root/<namespace>--<name>/<commit>/` (default root: `cache_root()/"hub"`).

    The download goes to a temporary sibling that is renamed into place only once every file
    is there and the repository holds loadable weights; a cut download, a missing file or a bad
    repository leaves nothing at the final path, and an existing folder is reused without any
    request. Weight formats inferd cannot load (PyTorch pickles, ONNX, TF, Flax) are skipped.
    `progress(done, total)` is called in this thread as bytes arrive; raising from it aborts.
    """
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"fetch takes a full commit sha (see resolve_commit), not {commit!r}")
    endpoint = endpoint.rstrip("/") if endpoint else None
    with _errors(repo, commit, token, endpoint):
        validate_repo_id(repo)  # also keeps the name from reaching outside dest_root
    root = dest_root if dest_root is not None else cache_root() / "hub"
    final = root / repo.replace("/", "--") / commit  # "--" never occurs in a repo id
    if final.is_dir():
        return final

    with _errors(repo, commit, token, endpoint):
        info = _api(endpoint).model_info(
            repo, revision=commit, files_metadata=True, token=token or False
        )
    if info.sha != commit:
        raise FetchError(f"The hub answered commit `{info.sha}` when asked for `{commit}`.")
    sizes = {  # an LFS file's own size, not its pointer's
        s.rfilename: s.lfs.size if s.lfs is not None else s.size
        for s in info.siblings or ()
        if not s.rfilename.endswith(_SKIPPED)
    }
    if _kind(sizes) is None:  # before downloading anything
        raise FetchError(f"`{repo}` {_NO_WEIGHTS}.")
    if any(name.startswith("/") or ".." in name.split("/") for name in sizes):
        raise FetchError(f"`{repo}` lists file names that point outside the repository.")

    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f".{commit}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir()
    try:
        counter = _ByteCounter(sum(s or 0 for s in sizes.values()), progress)
        with _errors(repo, commit, token, endpoint, downloading=True, where=root):
            for name, size in sizes.items():
                path = hf_hub_download(
                    repo,
                    name,
                    revision=commit,
                    local_dir=partial,
                    token=token or False,
                    endpoint=endpoint,
                    library_name="inferd",
                    tqdm_class=counter.bar_class(),
                )
                if size is not None and os.path.getsize(path) != size:
                    raise FetchError(f"The download of `{repo}` was interrupted; retry.")
                counter.file_done(size)
        shutil.rmtree(partial / ".cache")  # huggingface_hub's bookkeeping for local_dir
        # Every listed file and nothing else: with _kind(sizes) above, repo_kind(final) holds.
        if sorted(_files(partial)) != sorted(sizes):
            raise FetchError(f"The download of `{repo}` was interrupted; retry.")
        _fsync_tree(partial)
        try:
            partial.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            # Another fetch of this commit finished first; its folder is as complete as ours.
        _fsync(final.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def _api(endpoint: str | None) -> HfApi:
    return HfApi(endpoint=endpoint, library_name="inferd")


def _files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def _kind(names: Iterable[str]) -> RepoKind | None:
    names = set(names)
    top = {n for n in names if "/" not in n}
    if {"adapter_config.json", "adapter_model.safetensors"} <= top:
        return "lora"
    if any(n.endswith(".gguf") for n in names):
        return "gguf"
    if "config.json" in top and any(n.endswith(".safetensors") for n in top):
        return "safetensors"
    return None


class _ByteCounter:
    """Adds up the per-file byte counts huggingface_hub reports into one `progress(done, total)`."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.finished = self.current = 0
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            done = self.finished + self.current
            self.progress(done, max(done, self.total))

    def add(self, n: int) -> None:
        self.current += n
        self._report()

    def file_done(self, size: int | None) -> None:
        # The listed size, also when the file came from a local HF cache with no bytes reported.
        self.finished += self.current if size is None else size
        self.current = 0
        self._report()

    def bar_class(self) -> type[tqdm]:
        """A tqdm class for `hf_hub_download(tqdm_class=)`: it draws nothing (a server log is
        no terminal) and feeds this counter. A resumed download reuses its bar: no double count."""
        counter = self

        class Bar(tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **{**kwargs, "disable": True})

            def update(self, n: float | None = 1) -> bool | None:
                counter.add(int(n or 0))
                return None

            def update_transfer(self, n: float | None = 1) -> None:
                """Network bytes of a Xet download; `update` counts them as they reach the disk.
                Having this method also makes huggingface_hub draw one bar per file, not two."""

        return Bar


@contextmanager
def _errors(
    repo: str,
    revision: str,
    token: str | None,
    endpoint: str | None,
    *,
    downloading: bool = False,
    where: Path | None = None,
) -> Iterator[None]:
    """Turns what huggingface_hub raises into a FetchError with a reason (and no token)."""
    try:
        yield
    except FetchError:
        raise
    except Exception as exc:
        reason = _reason(exc, repo, revision, bool(token), endpoint, downloading, where)
        if reason is None:
            raise
        if token:
            reason = reason.replace(token, "***")
        raise FetchError(reason) from exc


def _reason(
    exc: Exception,
    repo: str,
    revision: str,
    has_token: bool,
    endpoint: str | None,
    downloading: bool,
    where: Path | None,
) -> str | None:
    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    interrupted = f"The download of `{repo}` was interrupted; retry."
    match exc:
        case HFValidationError():
            return f"`{repo}` is not a repository name (expected namespace/name)."
        case GatedRepoError():
            return f"`{repo}` is gated: accept its conditions on the hub with the token's account."
        case RepositoryNotFoundError():
            return (
                f"The repository `{repo}` does not exist or is private;"
                " check the name and the token."
            )
        case RevisionNotFoundError():
            return f"Revision `{revision}` does not exist in `{repo}`."
        case DisabledRepoError():
            return f"`{repo}` has been disabled on the hub."
        case RemoteEntryNotFoundError():
            return f"The hub lists a file of `{repo}` that it does not serve; retry later."
        case HfHubHTTPError() if exc.response.status_code in (401, 403):
            return (
                f"The token was refused for `{repo}`." if has_token else f"`{repo}` needs a token."
            )
        case HfHubHTTPError() if exc.response.status_code == 429:
            return f"The hub at {hub} is rate-limiting requests for `{repo}`; retry later."
        case HfHubHTTPError():
            return f"The hub at {hub} answered HTTP {exc.response.status_code} for `{repo}`."
        case OfflineModeIsEnabled():
            return "Downloads are turned off on this machine (HF_HUB_OFFLINE is set)."
        case FileMetadataError():
            return f"{hub} does not answer like a Hugging Face hub; check HF_ENDPOINT."
        case OSError() if exc.errno == errno.ENOSPC:
            return f"The disk holding {where} is full; `{repo}` does not fit."
        case httpx2.TransportError() | LocalEntryNotFoundError() if downloading:
            return interrupted
        case OSError() if downloading and str(exc).startswith("Consistency check failed"):
            return interrupted  # fewer bytes than the metadata announced
        case httpx2.TransportError():
            return f"The hub at {hub} cannot be reached; check the network and HF_ENDPOINT."
    return None


def _fsync_tree(folder: Path) -> None:
    """Files and folders on disk before the rename that publishes them, so that a power cut
    cannot leave a complete-looking folder of empty files."""
    for path in sorted(folder.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
