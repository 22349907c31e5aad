"""A local stand-in for the Hugging Face hub: the few HTTP routes huggingface_hub uses to download a model.

Serves each repo from a folder, the way huggingface.co does (checked against huggingface_hub 2.4):
  GET  /api/models/{repo}[/revision/{rev}]?blobs=True    model_info: commit sha, siblings (size, blob id, LFS sha256)
  GET  /api/models/{repo}/tree/{rev}?recursive=True      list_repo_tree, used by snapshot_download
  HEAD/GET /{repo}/resolve/{rev}/{file}                  small files: the bytes, ETag = git blob sha1, X-Repo-Commit
                                                         LFS files (*.safetensors): 302 to the CDN with X-Linked-Etag,
                                                         X-Linked-Size and X-Repo-Commit, like the real hub
  GET  /cdn/{sha256}  (on a second port)                 the LFS bytes, with Range for resumed downloads
A missing repo answers 404 with X-Error-Code: RepoNotFound (huggingface_hub raises RepositoryNotFoundError).
The CDN listens on another port because huggingface_hub follows a redirect only within one origin: a different
origin is what makes it read the file's metadata from the 302, as it does with the real CDN.

Every request is recorded in `requests`; one that matches no route is also printed and kept in `unknown`, so a
change in what huggingface_hub asks for shows up at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")
_POINTER_SIZE = 134  # a git-lfs pointer file's size, as the hub reports it


@dataclass
class _File:
    data: bytes
    blob_id: str  # git blob sha1 of what git stores: the bytes, or the LFS pointer
    sha256: str | None  # set for LFS files


@dataclass
class FakeRepo:
    files: dict[str, _File]
    sha: str
    advertised_sizes: dict[str, int] = field(default_factory=dict)  # sizes model_info claims instead of the real ones


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Two local HTTP servers (hub and CDN) in threads; use as a context manager, point HF_ENDPOINT at `url`."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in the order they came
        self.unknown: list[tuple[str, str]] = []
        # file name -> "once": the first download of it stops halfway, later ones are served (a resume works);
        # "always": the first stops halfway and every later one right after the headers (the link stays down).
        self.drop: dict[str, str] = {}
        self._dropped: set[str] = set()
        self.fail: dict[str, int] = {}  # a request whose path contains the key gets that status (an outage)
        self._lock = threading.Lock()
        self._hub = _Server(self, cdn=False)
        self._cdn = _Server(self, cdn=True)
        self.url = f"http://127.0.0.1:{self._hub.server_port}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_port}"

    def add_repo(self, repo_id: str, folder: Path, advertised_sizes: dict[str, int] | None = None) -> FakeRepo:
        """Serve the files of folder (top level) as repo_id; its commit sha is derived from the contents."""
        files = {}
        for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
            data = path.read_bytes()
            if path.name.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
                files[path.name] = _File(data, _git_blob_sha1(pointer.encode()), sha256)
            else:
                files[path.name] = _File(data, _git_blob_sha1(data), None)
        sha = hashlib.sha1(b"".join(f.blob_id.encode() for f in files.values()) + repo_id.encode()).hexdigest()
        self.repos[repo_id] = FakeRepo(files, sha, dict(advertised_sizes or {}))
        return self.repos[repo_id]

    def downloads(self) -> list[str]:
        """Paths of the requests that fetched file contents (GET on /resolve or the CDN)."""
        return [p for m, p in self.requests if m == "GET" and ("/resolve/" in p or p.startswith("/cdn/"))]

    def __enter__(self) -> FakeHub:
        for server in (self._hub, self._cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _drop_mode(self, name: str) -> str | None:
        """'half', 'headers' or None: how this download of name ends."""
        mode = self.drop.get(name)
        with self._lock:
            if mode is None or (mode == "once" and name in self._dropped):
                return None
            first = name not in self._dropped
            self._dropped.add(name)
        return "half" if first else "headers"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub, cdn: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub, self.cdn = hub, cdn


_MODEL_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<sha256>[0-9a-f]{64})$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects from the hub
    server: _Server

    def log_message(self, format, *args):  # quiet: requests are recorded in FakeHub.requests instead
        pass

    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool) -> None:
        hub = self.server.hub
        path = unquote(urlsplit(self.path).path)
        hub._record(self.command, path)
        if status := next((code for part, code in hub.fail.items() if part in path), None):
            return self._send(status, {}, b"upstream unavailable", head)
        match = None
        if self.server.cdn:
            if match := _CDN.match(path):
                return self._cdn(match["repo"], match["sha256"], head)
        elif not head and (match := _TREE_API.match(path)):
            return self._tree(match["repo"], match["rev"])
        elif not head and (match := _MODEL_API.match(path)):
            return self._model_info(match["repo"], match["rev"])
        elif match := _RESOLVE.match(path):
            return self._resolve(match["repo"], match["rev"], match["file"], head)
        hub.unknown.append((self.command, self.path))
        print(f"fake hub: no route for {self.command} {self.path}", file=sys.stderr)
        self._send(404, {"X-Error-Code": "EntryNotFound"}, b'{"error": "no such route on the fake hub"}', head)

    def _repo(self, repo_id: str, rev: str | None, head: bool) -> FakeRepo | None:
        """The repo at rev, or None once the 404 the hub gives for it is sent."""
        repo = self.server.hub.repos.get(repo_id)
        if repo is None:
            self._send(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                       b'{"error": "Repository not found"}', head)
            return None
        if rev not in (None, "main", repo.sha):
            self._send(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id: " + rev},
                       b'{"error": "Invalid rev id"}', head)
            return None
        return repo

    def _model_info(self, repo_id: str, rev: str | None) -> None:
        if not (repo := self._repo(repo_id, rev, head=False)):
            return
        siblings = []
        for name, f in repo.files.items():
            size = repo.advertised_sizes.get(name, len(f.data))
            sibling = {"rfilename": name, "size": size, "blobId": f.blob_id}
            if f.sha256:
                sibling["lfs"] = {"size": size, "sha256": f.sha256, "pointerSize": _POINTER_SIZE}
            siblings.append(sibling)
        body = {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                "gated": False, "disabled": False, "tags": ["safetensors"], "siblings": siblings}
        self._send_json(body)

    def _tree(self, repo_id: str, rev: str) -> None:
        if not (repo := self._repo(repo_id, rev, head=False)):
            return
        entries = []
        for name, f in repo.files.items():
            entry = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": name}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": _POINTER_SIZE}
            entries.append(entry)
        self._send_json(entries)

    def _resolve(self, repo_id: str, rev: str, name: str, head: bool) -> None:
        if not (repo := self._repo(repo_id, rev, head)):
            return
        f = repo.files.get(name)
        if f is None:
            return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha},
                              b'{"error": "Entry not found"}', head)
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if f.sha256:
            headers.update({"Location": f"{self.server.hub.cdn_url}/cdn/{repo_id}/{f.sha256}", "ETag": f'"{f.blob_id}"',
                            "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))})
            return self._send(302, headers, b"", head)
        headers["ETag"] = f'"{f.blob_id}"'
        self._send_file(name, f.data, headers, head)

    def _cdn(self, repo_id: str, sha256: str, head: bool) -> None:
        repo = self.server.hub.repos.get(repo_id)
        found = [(n, f) for n, f in (repo.files.items() if repo else ()) if f.sha256 == sha256]
        if not found:
            return self._send(404, {}, b"NoSuchKey", head)
        name, f = found[0]
        self._send_file(name, f.data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}, head)

    def _send_file(self, name: str, data: bytes, headers: dict, head: bool) -> None:
        status, start = 200, 0
        if (ranged := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))) and not head:
            start = int(ranged[1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        drop = None if head else self.server.hub._drop_mode(name)
        if drop is None:
            return self._send(status, headers, body, head)
        # The link goes down mid-transfer: the full Content-Length is promised, part of it sent, the socket closed.
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if drop == "half":
            self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _send_json(self, obj) -> None:
        self._send(200, {"Content-Type": "application/json"}, json.dumps(obj).encode(), head=False)

    def _send(self, status: int, headers: dict, body: bytes, head: bool) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
