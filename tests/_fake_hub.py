"""A Hugging Face hub on 127.0.0.1 that serves model repositories from local folders: the
three requests ``huggingface_hub`` makes to fetch a snapshot (revision info, file tree,
file download with ``Range`` for resuming), so ``docq models pull`` runs its real code
without the network. Records each request as (method, path, Range header)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path]):
        self.repos = repos  # "owner/name" -> folder with its files
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if repo not in self.repos:
                return self._send(h, 404, b'{"error": "Repository not found"}', body)
            files = self._files(repo)
            if parts[4] == "revision":
                data = {"id": repo, "sha": SHA, "siblings": [{"rfilename": f} for f in files]}
            else:  # tree
                data = [{"type": "file", "path": f, "size": (self.repos[repo] / f).stat().st_size,
                         "oid": hashlib.sha1((self.repos[repo] / f).read_bytes()).hexdigest()} for f in files]
            return self._send(h, 200, json.dumps(data).encode(), body, {"Content-Type": "application/json"})
        repo, rest = "/".join(parts[:2]), parts[2:]
        if repo not in self.repos or rest[:1] != ["resolve"]:
            return self._send(h, 404, b"not found", body)
        file = self.repos[repo] / "/".join(rest[2:])
        if not file.is_file():
            return self._send(h, 404, b"not found", body, {"X-Error-Code": "EntryNotFound"})
        data = file.read_bytes()
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        status = 200
        wanted = h.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and body:
            start = int(wanted[6:].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        return self._send(h, status, data, body, headers)

    @staticmethod
    def _send(h, status, data, body, headers=None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)


def cache_entry(cache: Path, name: str, files: dict[str, bytes]) -> Path:
    """One model in a cache laid out as the hub lays it out: blobs, a snapshot of links, refs/main."""
    repo = cache / ("models--" + name.replace("/", "--"))
    snap = repo / "snapshots" / SHA
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, (fname, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.write_bytes(data)
        (snap / fname).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    return snap
