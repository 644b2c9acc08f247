"""A local server that speaks the Hugging Face Hub's HTTP protocol, for offline tests of push and pull.

Just what `huggingface_hub` (2.4) and `datasets` (5.2) use to create a repo, commit files (regular and LFS), list
and read them: repos live in memory, every commit is a full snapshot, and LFS objects are checked against their
sha256. It also refuses what the Hub refuses: writes without a valid token, reads of a private repo by anyone
but its owner, and repo ids that are not `namespace/name`.

    hub = FakeHub(tokens={"hf_alice": "alice"}).start()   # then HF_ENDPOINT=hub.url
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".parquet", ".safetensors", ".png", ".arrow", ".bin")
PREFIXES = {"datasets/": "dataset", "spaces/": "space", "": "model"}
REPO_PART = r"(?P<kind>datasets/|spaces/|)(?P<repo>[^/]+/[^/]+?)"
API_PART = r"/api/(?P<kind>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+)"


@dataclass
class Repo:
    owner: str
    private: bool
    commits: dict = field(default_factory=dict)  # oid -> {path: bytes}
    branches: dict = field(default_factory=dict)  # name -> commit oid
    dates: dict = field(default_factory=dict)  # oid -> ISO date


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    def __init__(self, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        self.tokens = tokens  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}  # (type, "ns/name") -> Repo
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return repo.commits[repo.branches.get(revision, revision)]

    def commit(self, repo: Repo, branch: str, files: dict[str, bytes]) -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + repr(sorted((p, git_blob_oid(c)) for p, c in files.items())).encode())
        oid = hashlib.sha1(digest.digest() + str(len(repo.commits)).encode()).hexdigest()
        repo.commits[oid] = files
        repo.dates[oid] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        repo.branches[branch] = oid
        return oid


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean; requests are in hub.requests
            pass

        # -- plumbing ------------------------------------------------------------------------------------------
        def _send(self, status, body=b"", headers=None, content_type="application/json"):
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status, code, message):
            self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _user(self):
            auth = self.headers.get("Authorization", "")
            return hub.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None

        def _repo(self, repo_type, repo_id, write=False):
            """The repo if this caller may read (or write) it; otherwise the error has been sent and None returned."""
            user = self._user()
            if self.headers.get("Authorization") and user is None:
                self._send(
                    401,
                    {"error": "Invalid credentials in Authorization header"},
                    {"X-Error-Message": "Invalid credentials in Authorization header"},
                )
                return None
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None or (repo.private and user != repo.owner):
                self._error(401 if user is None else 404, "RepoNotFound", "Repository not found")
                return None
            if write and user != repo.owner:
                self._error(401 if user is None else 403, "Forbidden", "You don't have the rights to write here")
                return None
            return repo

        def _snapshot(self, repo_type, repo_id, revision, write=False):
            """(commit oid, files) of the revision if the caller may read (write) it; else the error is sent: None."""
            repo = self._repo(repo_type, repo_id, write=write)
            if repo is None:
                return None
            oid = repo.branches.get(revision, revision if revision in repo.commits else None)
            if oid is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return oid, repo.commits[oid]

        def _entry(self, path, files):
            if path in files:
                content = files[path]
                entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}
                if path.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {
                        "oid": hashlib.sha256(content).hexdigest(),
                        "size": len(content),
                        "pointerSize": 134,
                    }
                return entry
            if any(p.startswith(path + "/") for p in files):
                return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}
            return None

        # -- routes --------------------------------------------------------------------------------------------
        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            hub.requests.append(f"{self.command} {self.path}")
            url = urlparse(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            if path == "/api/whoami-v2":
                user = self._user()
                if user is None:
                    return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                return self._send(
                    200,
                    {
                        "type": "user",
                        "name": user,
                        "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
                    },
                )
            if m := re.fullmatch(API_PART + r"(?:/revision/(?P<rev>.+))?", path):
                return self._repo_info(m["kind"][:-1], m["repo"], m["rev"] or "main")
            if m := re.fullmatch(API_PART + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", path):
                return self._tree(m["kind"][:-1], m["repo"], m["rev"], (m["path"] or "").strip("/"), query)
            if m := re.fullmatch("/" + REPO_PART + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", path):
                return self._resolve(PREFIXES[m["kind"]], m["repo"], m["rev"], m["path"])
            self._error(404, "NotFound", f"no route for {self.command} {path}")

        def do_PUT(self):
            hub.requests.append(f"PUT {self.path}")
            if m := re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.path):
                content = self._body()
                if hashlib.sha256(content).hexdigest() != m["oid"]:
                    return self._error(400, "BadRequest", "content does not match its sha256")
                hub.lfs[m["oid"]] = content
                return self._send(200, b"")
            self._error(404, "NotFound", f"no route for PUT {self.path}")

        def do_POST(self):
            hub.requests.append(f"POST {self.path}")
            url = urlparse(self.path)
            path = unquote(url.path)
            if path == "/api/repos/create":
                return self._create(json.loads(self._body()))
            if path == "/api/validate-yaml":
                self._body()
                return self._send(200, {"errors": [], "warnings": []})
            if m := re.fullmatch(API_PART + r"/preupload/(?P<rev>.+)", path):
                if self._repo(m["kind"][:-1], m["repo"], write=True) is None:
                    return
                files = json.loads(self._body())["files"]
                modes = [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
                return self._send(200, {"files": modes, "commitOid": None})
            if m := re.fullmatch("/" + REPO_PART + r"\.git/info/lfs/objects/batch", path):
                if self._repo(PREFIXES[m["kind"]], m["repo"], write=True) is None:
                    return
                objects = json.loads(self._body())["objects"]
                answer = [
                    {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] in hub.lfs
                    else {
                        "oid": o["oid"],
                        "size": o["size"],
                        "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}", "header": {}}},
                    }
                    for o in objects
                ]
                return self._send(
                    200, {"transfer": "basic", "objects": answer}, content_type="application/vnd.git-lfs+json"
                )
            if m := re.fullmatch(API_PART + r"/commit/(?P<rev>.+)", path):
                return self._commit(m["kind"][:-1], m["repo"], m["rev"])
            if m := re.fullmatch(API_PART + r"/paths-info/(?P<rev>.+)", path):
                form = parse_qs(self._body().decode())
                if snapshot := self._snapshot(m["kind"][:-1], m["repo"], m["rev"]):
                    entries = [self._entry(p.strip("/"), snapshot[1]) for p in form.get("paths", [])]
                    self._send(200, [e for e in entries if e is not None])
                return
            self._error(404, "NotFound", f"no route for POST {path}")

        def _create(self, body):
            user = self._user()
            if user is None:
                return self._error(401, "Unauthorized", "You must be authenticated to create a repo")
            namespace, name = body.get("organization"), body.get("name", "")
            if (
                not namespace
                or not re.fullmatch(r"[\w.-]{1,96}", name)
                or not re.fullmatch(r"[\w.-]{1,96}", namespace)
            ):
                return self._error(400, "BadRequest", "repo id must be namespace/name")
            if namespace != user:
                return self._error(403, "Forbidden", f"You cannot create repos in {namespace}")
            repo_type = body.get("type") or "model"
            repo_id = f"{namespace}/{name}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            answer = {"url": f"{hub.url}/{prefix}{repo_id}", "name": repo_id}
            with hub.lock:
                if (repo_type, repo_id) in hub.repos:
                    return self._send(
                        409,
                        {"error": "You already created this repo", **answer},
                        {"X-Error-Message": "You already created this repo"},
                    )
                private = body.get("visibility", "private" if body.get("private") else "public") != "public"
                repo = hub.repos[(repo_type, repo_id)] = Repo(owner=user, private=private)
                hub.commit(repo, "main", {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"})
            self._send(200, answer)

        def _repo_info(self, repo_type, repo_id, revision):
            if not (snapshot := self._snapshot(repo_type, repo_id, revision)):
                return
            oid, files = snapshot
            repo = hub.repos[(repo_type, repo_id)]
            self._send(
                200,
                {
                    "id": repo_id,
                    "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                    "author": repo.owner,
                    "sha": oid,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "lastModified": repo.dates[oid],
                    "createdAt": repo.dates[oid],
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                },
            )

        def _tree(self, repo_type, repo_id, revision, folder, query):
            if not (snapshot := self._snapshot(repo_type, repo_id, revision)):
                return
            oid, files = snapshot
            prefix = folder + "/" if folder else ""
            if folder and not any(p.startswith(prefix) for p in files):
                return self._error(404, "EntryNotFound", f"{folder} does not exist on {revision}")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            paths = set()
            for p in files:
                if not p.startswith(prefix):
                    continue
                parts = p[len(prefix) :].split("/")
                depth = len(parts) if recursive else 1
                for i in range(1, min(depth, len(parts)) + 1):
                    paths.add(prefix + "/".join(parts[:i]))
            self._send(200, [self._entry(p, files) for p in sorted(paths)])

        def _resolve(self, repo_type, repo_id, revision, path):
            if not (snapshot := self._snapshot(repo_type, repo_id, revision)):
                return
            oid, files = snapshot
            if path not in files:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            content = files[path]
            entry = self._entry(path, files)
            etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            headers = {"X-Repo-Commit": oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if "lfs" in entry:
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))}
            if m := re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "")):
                start = int(m[1]) if m[1] else max(len(content) - int(m[2]), 0)
                end = int(m[2]) if m[1] and m[2] else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{min(end, len(content) - 1)}/{len(content)}"
                return self._send(206, content[start : end + 1], headers, "application/octet-stream")
            self._send(200, content, headers, "application/octet-stream")

        def _commit(self, repo_type, repo_id, revision):
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            with hub.lock:
                if not (snapshot := self._snapshot(repo_type, repo_id, revision, write=True)):
                    return
                oid, files = snapshot
                repo = hub.repos[(repo_type, repo_id)]
                header = next(item["value"] for item in lines if item["key"] == "header")
                if header.get("parentCommit") and header["parentCommit"] != oid:
                    return self._error(412, "PreconditionFailed", "parent commit is not the head of the branch")
                files = dict(files)
                for item in lines:
                    key, value = item["key"], item["value"]
                    if key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif key == "lfsFile":
                        if value["oid"] not in hub.lfs:
                            return self._error(422, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                        files[value["path"]] = hub.lfs[value["oid"]]
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                new_oid = hub.commit(repo, revision, files)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            self._send(
                200,
                {
                    "success": True,
                    "commitOid": new_oid,
                    "commitUrl": f"{hub.url}/{prefix}{repo_id}/commit/{new_oid}",
                    "pullRequestUrl": None,
                },
            )

    return Handler
