"""A small Hugging Face Hub-compatible HTTP server for tests (127.0.0.1 only, in memory, stdlib only).

It speaks the part of the Hub protocol that ``huggingface_hub`` 2.x calls (``reference/ecosystem-facts.md``):
repo creation, repo info, tree and paths-info listings, preupload, NDJSON commits, the git-LFS batch API with
basic PUT uploads, ``resolve`` downloads (HEAD and GET) and ``whoami-v2``; model and dataset repos alike. It is
a test fixture, not part of the package.

Use it through the ``local_hub`` fixture (``tests/conftest.py``) or directly::

    with LocalHub(token="hf_write") as hub:
        ...  # HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET=1

Faults for failure tests: ``hub.refuse_writes = 401 | 403`` answers every write with that status;
``hub.die_on = "commit" | "lfs_upload"`` makes the server drop the connection in the middle of that request
and stop serving (as a crashed server would). ``hub.requests`` logs ``(method, path)`` of every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["LocalHub", "HubRepo", "git_blob_sha1"]

_PREFIX = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_MAX_BODY = 512 * 1024 * 1024
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid/ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        return git_blob_sha1(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def entry(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": path, "size": len(self.data), "oid": self.oid}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return out


@dataclass
class HubRepo:
    """One repository: commits (sha -> files) and refs (branch -> sha)."""

    repo_type: str
    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # commit shas, oldest first
    refs: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, _File], message: str, branch: str = "main") -> str:
        sha = hashlib.sha1(f"{self.repo_id}:{len(self.history)}:{time.time_ns()}".encode()).hexdigest()
        self.commits[sha] = files
        self.history.append(sha)
        self.messages[sha] = message
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        matches = [sha for sha in self.commits if len(revision) >= 7 and sha.startswith(revision)]
        return matches[0] if len(matches) == 1 else None

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """``{path: content}`` at a revision (for assertions in tests)."""
        sha = self.resolve(revision)
        return {} if sha is None else {p: f.data for p, f in self.commits[sha].items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalHub:
    """An in-memory Hub on ``127.0.0.1:<free port>``; start/stop explicitly or use it as a context manager.

    Args:
        token: when set, writes (create, preupload, commit, LFS) need ``Authorization: Bearer <token>``;
            reads stay anonymous for public repos.
        read_token: a token that authenticates but may not write (writes answer 403).
        lfs_threshold: files at least this big, or that are not UTF-8 text, are uploaded through LFS.
    """

    def __init__(self, *, token: str | None = None, read_token: str | None = None, lfs_threshold: int = 10 << 20):
        self.token = token
        self.read_token = read_token
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.refuse_writes: int | None = None
        self.die_on: str | None = None
        self.dead = False
        self._lock = threading.RLock()
        self._stop_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._stop_lock:
            thread, self._thread = self._thread, None
            if self._server is not None and thread is not None:
                self._server.shutdown()
                self._server.server_close()
                thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _die(self) -> None:
        self.dead = True
        threading.Thread(target=self.stop, daemon=True).start()

    # ------------------------------------------------------------------------------------------ state
    def repo(self, repo_id: str, repo_type: str = "model") -> HubRepo | None:
        return self.repos.get((repo_type, repo_id))

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> HubRepo:
        with self._lock:
            repo = HubRepo(repo_type, repo_id, private)
            repo.commit({".gitattributes": _File(_GITATTRIBUTES, False)}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
            return repo


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet)
        pass

    # ------------------------------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            ctype = "application/json"
        else:
            data = body
            ctype = "application/octet-stream"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code} if code else None, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("body too large")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(length) if length else b""

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _can_write(self) -> bool:
        hub = self.hub
        if hub.refuse_writes is not None:
            code = "Unauthorized" if hub.refuse_writes == 401 else None
            self._error(hub.refuse_writes, "refused by the test server", code)
            return False
        if hub.token is None:
            return True
        token = self._token()
        if token == hub.token:
            return True
        if token is not None and token == hub.read_token:
            self._error(403, "You don't have the rights to write to this repository (read-only token)")
            return False
        self._error(401, "Invalid credentials in Authorization header", "Unauthorized")
        return False

    def _drop(self) -> None:
        """Simulate a crash: no answer, connection reset, server stops."""
        self.hub._die()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _repo(self, repo_type: str, repo_id: str, head: bool = False) -> HubRepo | None:
        repo = self.hub.repo(repo_id, repo_type)
        if repo is None or (repo.private and self._token() not in (self.hub.token, self.hub.read_token)):
            self._error(401, f"Repository Not Found for url: {self.path}", "RepoNotFound", head=head)
            return None
        return repo

    def _rev(self, repo: HubRepo, revision: str, head: bool = False) -> str | None:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound", head=head)
        return sha

    # ------------------------------------------------------------------------------------------ dispatch
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        self.hub.requests.append((method, path))
        if self.hub.dead:
            self._drop()
            return
        try:
            with self.hub._lock:
                self._route(method, path, query)
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            self._error(400, f"bad request: {e}")

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        types = "(models|datasets|spaces)"
        repo = r"(?P<repo>[^/]+/[^/]+?)"
        m = None

        def match(pattern: str) -> bool:
            nonlocal m
            m = re.fullmatch(pattern, path)
            return m is not None

        if method == "GET" and path == "/api/whoami-v2":
            return self._whoami()
        if method == "POST" and path == "/api/repos/create":
            return self._create()
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        if method == "PUT" and match(r"/_lfs_upload/(?P<oid>[0-9a-f]{64})"):
            return self._lfs_put(m["oid"])
        if method == "POST" and match(rf"/(?P<prefix>datasets/|spaces/)?{repo}\.git/info/lfs/objects/batch"):
            return self._lfs_batch(_PREFIX.get((m["prefix"] or "models/").rstrip("/") or "models", "model"))
        resolve = rf"/(?P<prefix>datasets/|spaces/)?{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)"
        if method in ("GET", "HEAD") and match(resolve):
            rtype = {"datasets/": "dataset", "spaces/": "space"}.get(m["prefix"] or "", "model")
            return self._resolve(rtype, m["repo"], m["rev"], unquote(m["file"]), head=method == "HEAD")
        if match(rf"/api/{types}/{repo}(?:/revision/(?P<rev>[^/]+))?"):
            if method == "GET":
                return self._info(_PREFIX[m[1]], m["repo"], m["rev"] or "main")
        if method == "GET" and match(rf"/api/{types}/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?"):
            return self._tree(_PREFIX[m[1]], m["repo"], m["rev"], unquote(m["sub"] or ""), query)
        if method == "POST" and match(rf"/api/{types}/{repo}/paths-info/(?P<rev>[^/]+)"):
            return self._paths_info(_PREFIX[m[1]], m["repo"], m["rev"])
        if method == "POST" and match(rf"/api/{types}/{repo}/preupload/(?P<rev>[^/]+)"):
            return self._preupload(_PREFIX[m[1]], m["repo"], m["rev"])
        if method == "POST" and match(rf"/api/{types}/{repo}/commit/(?P<rev>[^/]+)"):
            return self._commit(_PREFIX[m[1]], m["repo"], m["rev"])
        self._error(404, f"no route for {method} {path}")

    # ------------------------------------------------------------------------------------------ routes
    def _whoami(self) -> None:
        token = self._token()
        if self.hub.token is not None and token not in (self.hub.token, self.hub.read_token):
            return self._error(401, "Invalid credentials in Authorization header", "Unauthorized")
        role = "write" if token == self.hub.token else "read"
        self._send(200, {"type": "user", "name": "tester", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})

    def _create(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._can_write():
            return
        name = body["name"]
        org = body.get("organization") or "tester"
        repo_id = name if "/" in name else f"{org}/{name}"
        rtype = body.get("type") or "model"
        url = f"{self.hub.url}/{_URL_PREFIX[rtype]}{repo_id}"
        if self.hub.repo(repo_id, rtype) is not None:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.hub.create_repo(repo_id, rtype, bool(body.get("private")))
        self._send(200, {"url": url, "name": repo_id})

    def _validate_yaml(self) -> None:
        content = json.loads(self._body() or b"{}").get("content", "")
        try:
            import yaml  # a huggingface_hub dependency

            meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        except Exception as e:  # noqa: BLE001  (any YAML failure is a client error)
            return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []})
        if meta is not None and not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _info(self, rtype: str, repo_id: str, revision: str) -> None:
        repo = self._repo(rtype, repo_id)
        if repo is None:
            return
        sha = self._rev(repo, revision)
        if sha is None:
            return
        files = repo.commits[sha]
        self._send(200, {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "sha": sha,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p, "size": len(f.data), "blobId": f.oid,
                          **({"lfs": {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})}
                         for p, f in sorted(files.items())],
        })

    def _entries(self, files: dict[str, _File], sub: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = sub.rstrip("/") + "/" if sub else ""
        out, dirs = [], set()
        for p, f in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0})
            if recursive or len(parts) == 1:
                out.append(f.entry(p))
        return out

    def _tree(self, rtype: str, repo_id: str, revision: str, sub: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(rtype, repo_id)
        if repo is None:
            return
        sha = self._rev(repo, revision)
        if sha is None:
            return
        files = repo.commits[sha]
        if sub and not any(p.startswith(sub.rstrip("/") + "/") for p in files):
            return self._error(404, f"Entry not found: {sub}", "EntryNotFound")
        recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
        self._send(200, self._entries(files, sub, recursive))

    def _paths_info(self, rtype: str, repo_id: str, revision: str) -> None:
        raw = self._body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(raw).get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        repo = self._repo(rtype, repo_id)
        if repo is None:
            return
        sha = self._rev(repo, revision)
        if sha is None:
            return
        files = repo.commits[sha]
        out = []
        for p in paths:
            if p in files:
                out.append(files[p].entry(p))
            elif any(q.startswith(p.rstrip("/") + "/") for q in files):
                out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0})
        self._send(200, out)

    def _preupload(self, rtype: str, repo_id: str, revision: str) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._can_write():
            return
        repo = self._repo(rtype, repo_id)
        if repo is None:
            return
        sha = repo.resolve(revision)
        current = repo.commits[sha] if sha else {}
        out = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            try:
                sample.decode("utf-8")
                binary = b"\0" in sample
            except UnicodeDecodeError:
                binary = True
            lfs = binary or int(f.get("size", 0)) >= self.hub.lfs_threshold or f["path"].endswith(
                (".safetensors", ".parquet", ".png", ".arrow", ".bin"))
            existing = current.get(f["path"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": existing.oid if existing is not None else None})
        self._send(200, {"files": out, "commitOid": sha})

    def _lfs_batch(self, rtype: str) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._can_write():
            return
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs_upload/{oid}", "expires_in": 3600}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str) -> None:
        if self.hub.die_on == "lfs_upload":
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1024))
            return self._drop()
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 of the uploaded content does not match its oid")
        self.hub.lfs_objects[oid] = data
        self._send(200, b"")

    def _commit(self, rtype: str, repo_id: str, revision: str) -> None:
        if self.hub.die_on == "commit":
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 256))
            return self._drop()
        raw = self._body()
        if not self._can_write():
            return
        repo = self._repo(rtype, repo_id)
        if repo is None:
            return
        branch = unquote(revision)
        parent = repo.resolve(branch)
        if parent is None:
            return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files = dict(repo.commits[parent])
        message = "commit"
        for line in raw.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", message)
                if value.get("parentCommit") and value["parentCommit"] != parent:
                    return self._error(412, "parentCommit is not the head of the branch")
            elif key == "file":
                files[value["path"]] = _File(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    return self._error(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = _File(data, True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            else:
                return self._error(400, f"unknown commit operation {key!r}")
        sha = repo.commit(files, message, branch)
        url_prefix = _URL_PREFIX[rtype]
        self._send(200, {"success": True, "commitOid": sha,
                         "commitUrl": f"{self.hub.url}/{url_prefix}{repo_id}/commit/{sha}"})

    def _resolve(self, rtype: str, repo_id: str, revision: str, file: str, head: bool) -> None:
        repo = self._repo(rtype, repo_id, head=head)
        if repo is None:
            return
        sha = self._rev(repo, revision, head=head)
        if sha is None:
            return
        f = repo.commits[sha].get(file)
        if f is None:
            return self._error(404, f"Entry not found: {file}", "EntryNotFound", head=head)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.sha256 if f.lfs else f.oid}"',
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(file.split('/')[-1])}"}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(len(f.data))
        self._send(200, f.data, headers, head=head)


# ---------------------------------------------------------------------------------------------- client side
WRITE_TOKEN = "hf_test_write_token"
READ_TOKEN = "hf_test_read_token"


def client_env(hub: LocalHub, hf_home: str, *, token: str | None = WRITE_TOKEN,
               offline: bool = False) -> dict[str, str]:
    """Environment for a subprocess that drives the real client against ``hub`` (read at import by the client)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=hub.url if hub._server is not None else "http://127.0.0.1:9", HF_HOME=str(hf_home),
               HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="1" if offline else "0", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="10",
               METANTK_NO_PROGRESS="1")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def patch_client(monkeypatch: Any, hub: LocalHub, cache_dir: str, *, token: str | None = WRITE_TOKEN) -> None:
    """Point the already-imported client at ``hub`` for one test (constants are read at import time)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 5)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache_dir) + "/no-token")
    else:
        monkeypatch.setenv("HF_TOKEN", token)
