"""A Hugging Face Hub on loopback: serves model repositories from local folders to the real
`huggingface_hub` client (pass `endpoint=hub.url`).

A test double for a third party we do not run (DESIGN.md, Conventions): two real HTTP servers on
127.0.0.1, the hub and the CDN its large files redirect to, speaking what `huggingface_hub` 2.4.0
reads. Implemented, with the headers and error codes the client maps to its exceptions:

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}` (`?blobs=true`: sizes, blob
  ids, LFS info), used by `model_info` / `repo_info`;
- `GET /api/models/{repo}/tree/{rev}[/{path}]` (`?recursive=true`), used by `list_repo_tree` and
  `snapshot_download`;
- `HEAD`/`GET /{repo}/resolve/{rev}/{file}`, used by `hf_hub_download`: a plain file answers 200
  with `ETag` (its git blob id), `X-Repo-Commit`, `Content-Length` and Range support; an LFS file
  (weights) answers 302 to the CDN with `X-Linked-Etag` (sha256) and `X-Linked-Size`, as the Hub
  does. The CDN is another origin, so the client drops the token there (a signed URL needs none).

Errors, as the Hub sends them: an unknown token is refused everywhere with 401 and
`X-Error-Message: Invalid credentials in Authorization header`; a missing or private repo is
`X-Error-Code: RepoNotFound` (401 without a token, 404 with one, so existence never leaks);
`RevisionNotFound` and `EntryNotFound` are 404; a gated repo's files are `GatedRepo` (401 / 403).

Faults: `cut_after_bytes` sends the full `Content-Length`, then only part of the body, then closes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

# What the Hub stores with LFS by default (its .gitattributes), plus any file over 10 MiB.
LFS_PATTERNS = ("*.safetensors", "*.gguf", "*.bin", "*.pt", "*.pth", "*.onnx", "*.msgpack", "*.h5")
LFS_MIN_SIZE = 10 * 1024 * 1024
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer the repository's git tree holds instead of an LFS file."""
        return (
            "version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{self.sha256}\nsize {len(self.data)}\n"
        ).encode()

    @property
    def blob_id(self) -> str:
        return _git_blob_id(self.pointer if self.lfs else self.data)

    def sibling(self, blobs: bool) -> dict[str, object]:
        if not blobs:
            return {"rfilename": self.path}
        out: dict[str, object] = {
            "rfilename": self.path,
            "blobId": self.blob_id,
            "size": len(self.data),
        }
        if self.lfs:
            out["lfs"] = {
                "sha256": self.sha256,
                "size": len(self.data),
                "pointerSize": len(self.pointer),
            }
        return out

    def tree_entry(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": "file",
            "oid": self.blob_id,
            "size": len(self.data),
            "path": self.path,
        }
        if self.lfs:
            out["lfs"] = {
                "oid": self.sha256,
                "size": len(self.data),
                "pointerSize": len(self.pointer),
            }
        return out


def snapshot(folder: Path) -> dict[str, RepoFile]:
    """The files under `folder`, read now: a commit never changes when the folder does."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            path = p.relative_to(folder).as_posix()
            data = p.read_bytes()
            lfs = len(data) >= LFS_MIN_SIZE or any(
                fnmatch.fnmatch(p.name, pat) for pat in LFS_PATTERNS
            )
            files[path] = RepoFile(path, data, lfs)
    return files


def commit_sha(files: dict[str, RepoFile]) -> str:
    """A deterministic 40-hex commit id from the content (paths and blob ids)."""
    listing = "".join(f"{path}\0{f.blob_id}\n" for path, f in sorted(files.items()))
    return hashlib.sha1(listing.encode()).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    gated: bool
    token: str | None
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None


@dataclass
class Cut:
    offset: int  # bytes of the file, from its start, that are ever sent
    times: int | None  # responses left to cut; None: every one


@dataclass(frozen=True)
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorized: bool
    range: str | None


class _Answer(Exception):
    """An error response, raised anywhere in a handler."""

    def __init__(self, status: int, message: str, code: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


class HubDouble:
    """`with HubDouble() as hub:` starts both servers; `hub.url` is the `endpoint` to pass."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self._cuts: dict[tuple[str, str], Cut] = {}
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = ""
        self.cdn_url = ""

    # -- repositories ---------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        private: bool = False,
        token: str | None = None,
        gated: bool = False,
        branches: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Publishes `folder` as the first commit of `repo_id`; returns its sha. `branches` (default
        `{"main": sha}`) and `tags` map names to shas of this repo's commits."""
        if repo_id.count("/") != 1:
            raise ValueError("repo ids are namespace/name here")
        if (private or gated) and not token:
            raise ValueError("a private or gated repo needs the token that may read it")
        repo = Repo(repo_id, private, gated, token)
        files = snapshot(folder)
        sha = commit_sha(files)
        repo.commits[sha] = files
        with self._lock:
            self.repos[repo_id] = repo
        for name, target in (branches or {"main": sha}).items():
            self.set_ref(repo_id, name, target)
        for name, target in (tags or {}).items():
            self.set_ref(repo_id, name, target, tag=True)
        return sha

    def add_commit(
        self, repo_id: str, folder: Path, *, branch: str | None = None, tags: Iterable[str] = ()
    ) -> str:
        """Another commit of `repo_id` (e.g. a second revision); moves `branch` and `tags` to it."""
        files = snapshot(folder)
        sha = commit_sha(files)
        with self._lock:
            self.repos[repo_id].commits[sha] = files
        if branch:
            self.set_ref(repo_id, branch, sha)
        for tag in tags:
            self.set_ref(repo_id, tag, sha, tag=True)
        return sha

    def set_ref(self, repo_id: str, name: str, sha: str, *, tag: bool = False) -> None:
        repo = self.repos[repo_id]
        if sha not in repo.commits:
            raise ValueError(f"{sha} is not a commit of {repo_id}")
        with self._lock:
            (repo.tags if tag else repo.branches)[name] = sha

    # -- faults ---------------------------------------------------------------------------------

    def cut_after_bytes(
        self, repo_id: str, filename: str, n: int, *, times: int | None = None
    ) -> None:
        """Downloads of `filename` get the full Content-Length, then the body only up to byte `n`
        of the file, then the connection closes. Every download is cut (a resumed download gets
        nothing past `n`), or only the next `times` ones."""
        with self._lock:
            self._cuts[(repo_id, filename)] = Cut(n, times)

    def _take_cut(self, repo_id: str, filename: str) -> int | None:
        with self._lock:
            cut = self._cuts.get((repo_id, filename))
            if cut is None:
                return None
            if cut.times is not None:
                cut.times -= 1
                if cut.times <= 0:
                    del self._cuts[(repo_id, filename)]
            return cut.offset

    # -- servers --------------------------------------------------------------------------------

    def start(self) -> HubDouble:
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, name))
            server.daemon_threads = True
            self._servers.append(server)
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        hub, cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        self.url, self.cdn_url = hub, cdn
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> HubDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the Hub's answers ----------------------------------------------------------------------

    def _known_token(self, token: str) -> bool:
        return any(repo.token == token for repo in list(self.repos.values()))

    def _repo(self, repo_id: str, token: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token != repo.token):
            # Without a token the Hub answers 401: it does not say whether the repo exists.
            status = 404 if token else 401
            raise _Answer(status, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _Answer(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def model_info(self, repo_id: str, revision: str, token: str | None, blobs: bool) -> object:
        repo = self._repo(repo_id, token)
        sha = self._commit(repo, revision)
        files = repo.commits[sha]
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [f.sibling(blobs) for f in files.values()],
            "usedStorage": sum(len(f.data) for f in files.values()),
        }

    def tree(
        self, repo_id: str, revision: str, path: str, token: str | None, recursive: bool
    ) -> object:
        repo = self._repo(repo_id, token)
        files = repo.commits[self._commit(repo, revision)]
        prefix = f"{path}/" if path else ""
        entries: dict[str, dict[str, object]] = {}
        for name, f in files.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            # The folders on the way down are entries too; only a recursive listing goes past one.
            for depth in range(1, len(rest) if recursive else min(2, len(rest))):
                folder = prefix + "/".join(rest[:depth])
                oid = _git_blob_id(folder.encode())
                entries.setdefault(
                    folder, {"type": "directory", "oid": oid, "size": 0, "path": folder}
                )
            if recursive or len(rest) == 1:
                entries[name] = f.tree_entry()
        if path and not entries:
            raise _Answer(404, f"{path} does not exist on {revision}", "EntryNotFound")
        return list(entries.values())


def _handler(hub: HubDouble, server: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def end_headers(self) -> None:
            # One request per connection: the client pools nothing, so stop() leaves none open.
            self.send_header("Connection", "close")
            super().end_headers()

        def _serve(self, head: bool) -> None:
            parts = urlsplit(self.path)
            token = None
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[len("bearer ") :].strip()
            wanted = self.headers.get("Range")
            hub.requests.append(Request(server, self.command, self.path, token is not None, wanted))
            try:
                query = parse_qs(parts.query)
                if server == "cdn":
                    if token is not None:  # as S3 says when a signed URL also gets a header
                        raise _Answer(400, "Only one auth mechanism allowed")
                    self._cdn(parts.path, query, head)
                    return
                if token is not None and not hub._known_token(token):
                    raise _Answer(401, INVALID_CREDENTIALS)
                if parts.path.startswith("/api/models/"):
                    self._api(parts.path[len("/api/models/") :], query, token)
                elif "/resolve/" in parts.path:
                    self._resolve(parts.path, token, head)
                else:
                    raise _Answer(404, "Not Found")
            except _Answer as answer:
                self._error(answer, head)

        # /api/models/{ns}/{name}[/revision/{rev} | /tree/{rev}[/{path}]]
        def _api(self, rest: str, query: dict[str, list[str]], token: str | None) -> None:
            segments = rest.split("/")
            repo_id = "/".join(unquote(s) for s in segments[:2])
            tail = segments[2:]
            blobs, recursive = _flag(query, "blobs"), _flag(query, "recursive")
            if not tail:
                body = hub.model_info(repo_id, "main", token, blobs)
            elif tail[0] == "revision" and len(tail) == 2:
                body = hub.model_info(repo_id, unquote(tail[1]), token, blobs)
            elif tail[0] == "tree" and len(tail) >= 2:
                path = unquote("/".join(tail[2:])).strip("/")
                body = hub.tree(repo_id, unquote(tail[1]), path, token, recursive)
            else:
                raise _Answer(404, "Not Found")
            self._json(200, body)

        # /{ns}/{name}/resolve/{rev}/{file}
        def _resolve(self, path: str, token: str | None, head: bool) -> None:
            repo_part, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            repo = hub._repo(unquote(repo_part), token)
            sha = hub._commit(repo, unquote(revision))
            filename = unquote(filename)
            commit = {"X-Repo-Commit": sha}
            f = repo.commits[sha].get(filename)
            if f is None:
                raise _Answer(404, "Entry not found", "EntryNotFound", **commit)
            if repo.gated and token != repo.token:
                restricted = f"Access to model {repo.repo_id} is restricted."
                raise _Answer(403 if token else 401, restricted, "GatedRepo")
            if f.lfs:
                query = urlencode({"repo": repo.repo_id, "file": f.path, "X-Amz-Expires": "3600"})
                location = f"{hub.cdn_url}/{f.sha256}?{query}"
                body = f"Found. Redirecting to {location}".encode()
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("X-Repo-Commit", sha)
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.data)))
                self.send_header("ETag", f'"{f.sha256}"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            self._bytes(f.data, repo.repo_id, f.path, head, {"ETag": f'"{f.blob_id}"', **commit})

        # /{sha256}?repo=..&file=..: a signed CDN URL, no token needed
        def _cdn(self, path: str, query: dict[str, list[str]], head: bool) -> None:
            repo_id = query.get("repo", [""])[0]
            filename = query.get("file", [""])[0]
            repo = hub.repos.get(repo_id)
            files = (f for c in (repo.commits.values() if repo else ()) for f in c.values())
            blob = next((f for f in files if f.lfs and f.sha256 == path.lstrip("/")), None)
            if blob is None:
                raise _Answer(403, "Access Denied")
            self._bytes(blob.data, repo_id, filename, head, {"ETag": f'"{blob.sha256}"'})

        def _bytes(
            self, data: bytes, repo_id: str, filename: str, head: bool, headers: dict[str, str]
        ) -> None:
            size = len(data)
            start, end, status = 0, size - 1, 200
            wanted = self.headers.get("Range")
            if wanted:
                span = _parse_range(wanted, size)
                if span is None:
                    raise _Answer(
                        416, "Range Not Satisfiable", **{"Content-Range": f"bytes */{size}"}
                    )
                (start, end), status = span, 206
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            cut = hub._take_cut(repo_id, filename)
            stop = end + 1 if cut is None else max(start, min(cut, end + 1))
            self.wfile.write(data[start:stop])
            self.wfile.flush()
            # After a cut the handler returns with Content-Length unmet; the server closes.

        def _error(self, answer: _Answer, head: bool) -> None:
            body = json.dumps({"error": answer.message}).encode()
            self.send_response(answer.status)
            if answer.code:
                self.send_header("X-Error-Code", answer.code)
            self.send_header("X-Error-Message", answer.message)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("1", "true")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # the last N bytes
        start, end = max(0, size - int(match[2])), size - 1
    else:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    return (start, end) if start <= end else None
