"""A small stand-in for Kaggle's API, for tests of the real `kaggle` client.

The client runs with KAGGLE_API_ENVIRONMENT=LOCALHOST (set before `kaggle` is imported), so it
sends plain-HTTP requests to http://localhost/api/v1/...; `http_proxy` points at this server, which
therefore receives absolute-form request targets, as a proxy does. It answers the RPCs the
installed client sends (kaggle 2.2.5): competition and dataset downloads (HTTP 302 to a file),
submission upload (start, one PUT, create) and the submissions list, and records every request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API = "/api/v1/"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class KaggleTestServer:
    files: dict[str, bytes] = field(default_factory=dict)  # name under /files/ -> content
    requests: list[Recorded] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # token -> uploaded bytes
    submissions: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # RPC method or "PUT" -> HTTP status to answer with
    public_score: str = "0.91234"

    def start(self) -> int:
        server_state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(
                    self.command,
                    urlsplit(self.path).path,
                    dict(self.headers.items()),
                    self.rfile.read(length) if length else b"",
                )
                server_state.requests.append(recorded)
                return recorded

            def _send(
                self,
                status: int,
                body: bytes = b"",
                content_type: str = "application/json",
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, content: Any, status: int = 200) -> None:
                self._send(status, json.dumps(content).encode())

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                recorded = self._record()
                name = recorded.path.removeprefix("/files/")
                if recorded.path.startswith("/files/") and name in server_state.files:
                    self._send(
                        200,
                        server_state.files[name],
                        "application/zip",
                        {"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"},
                    )
                else:
                    self._send(404, b"not found", "text/plain")

            def do_PUT(self) -> None:  # noqa: N802
                recorded = self._record()
                if "PUT" in server_state.fail:
                    self._send(server_state.fail["PUT"], b"upload failed", "text/plain")
                    return
                server_state.uploads[recorded.path.rsplit("/", 1)[-1]] = recorded.body
                self._json({})

            def do_POST(self) -> None:  # noqa: N802
                recorded = self._record()
                if not recorded.path.startswith(API):
                    self._send(404, b"not found", "text/plain")
                    return
                method = recorded.path.rsplit("/", 1)[-1]
                body = recorded.json()
                if method in server_state.fail:
                    self._json(
                        {"code": server_state.fail[method], "message": f"{method} refused by the test server"},
                        server_state.fail[method],
                    )
                    return
                if method == "DownloadDataFiles":
                    self._send(302, headers={"Location": f"http://localhost/files/{body['competitionName']}.zip"})
                elif method == "DownloadDataset":
                    self._send(302, headers={"Location": f"http://localhost/files/{body['datasetSlug']}.zip"})
                elif method == "GetDatasetMetadata":
                    self._json(
                        {
                            "info": {
                                "ownerSlug": body.get("ownerSlug"),
                                "datasetSlug": body.get("datasetSlug"),
                                "licenses": [{"name": "CC0-1.0"}],
                            }
                        }
                    )
                elif method == "StartSubmissionUpload":
                    token = f"token{len(server_state.uploads) + len(server_state.submissions) + 1}"
                    self._json({"token": token, "createUrl": f"http://localhost/upload/{token}"})
                elif method == "CreateSubmission":
                    ref = 1000 + len(server_state.submissions)
                    server_state.submissions.insert(
                        0,
                        {
                            "ref": ref,
                            "description": body.get("submissionDescription", ""),
                            "token": body.get("blobFileTokens"),
                        },
                    )
                    self._json({"message": "Successfully submitted to the test competition", "ref": ref})
                elif method == "ListSubmissions":
                    listed = [
                        {
                            "ref": s["ref"],
                            "description": s["description"],
                            "status": "COMPLETE",
                            "publicScore": server_state.public_score,
                        }
                        for s in server_state.submissions
                    ]
                    self._json({"submissions": listed})
                elif method == "GetSubmissionLimits":
                    self._json({})
                else:
                    self._json({"code": 404, "message": f"unknown method {method}"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(f"/{method}")]
