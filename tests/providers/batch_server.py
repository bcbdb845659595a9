"""The loopback OpenAI-compatible server plus the files and batches endpoints (batch mode tests).

  POST /v1/files                  multipart upload (purpose=batch) -> {"id": "file-..."}
  POST /v1/batches                {"input_file_id", "endpoint", "completion_window"} -> batch object
  GET  /v1/batches/{id}           batch object (status validating -> in_progress -> completed)
  GET  /v1/files/{id}/content     the JSONL output / error file
Each batch line is answered through the same `plan` as online requests (so per-prompt counts cover
both paths): ok -> the output file, a status action -> the error file. With `hold=True` batches
stay in_progress until `release()` (a test kills the client while it polls).
"""
from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
import uuid

from tests.providers.openai_server import (
    LoopbackServer,
    _completion,
    _Handler,
    _Server,
    always_ok,
)


class _BatchHandler(_Handler):
    def do_POST(self) -> None:  # noqa: N802
        srv: BatchServer = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/files"):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            return self._json(200, srv.upload(self.headers.get("Content-Type", ""), raw))
        if path.endswith("/batches"):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            return self._json(200, srv.create(body))
        return super().do_POST()

    def do_GET(self) -> None:  # noqa: N802
        srv: BatchServer = self.server.owner  # type: ignore[attr-defined]
        parts = self.path.split("?")[0].strip("/").split("/")
        with srv.lock:
            srv.gets.append(self.path)
        if len(parts) >= 3 and parts[-2] == "batches" and parts[-1] in srv.batches:
            return self._json(200, srv.batches[parts[-1]])
        if len(parts) >= 4 and parts[-3] == "files" and parts[-1] == "content" and parts[-2] in srv.files:
            return self._send(200, srv.files[parts[-2]])
        self._json(404, {"error": {"message": f"not found: {self.path}", "type": "loopback"}})

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode())


class BatchServer(LoopbackServer):
    def __init__(self, plan=always_ok, *, hold: bool = False, process_s: float = 0.05, port: int = 0):
        super().__init__(plan, port=port)
        self.httpd.server_close()  # rebuilt with the batch handler
        self.httpd = _Server(("127.0.0.1", port), _BatchHandler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.created: list[str] = []  # batch ids in creation order (tests: never two for one request set)
        self.gets: list[str] = []
        self.held = threading.Event()
        if not hold:
            self.held.set()
        self.process_s = process_s

    def release(self) -> None:
        self.held.set()

    def upload(self, content_type: str, raw: bytes) -> dict:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        data = next((p.get_payload(decode=True) for p in msg.iter_parts() if p.get_filename()), b"")
        fid = f"file-{uuid.uuid4().hex[:12]}"
        with self.lock:
            self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "input.jsonl", "purpose": "batch", "status": "processed"}

    def create(self, body: dict) -> dict:
        bid = f"batch_{uuid.uuid4().hex[:12]}"
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body.get("input_file_id"), "completion_window": body.get("completion_window"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        with self.lock:
            self.batches[bid] = batch
            self.created.append(bid)
        threading.Thread(target=self._process, args=(bid,), daemon=True).start()
        return dict(batch)

    def _process(self, bid: str) -> None:
        batch = self.batches[bid]
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        batch["request_counts"]["total"] = len(lines)
        batch["status"] = "in_progress"
        self.held.wait()
        time.sleep(self.process_s)
        out, err = [], []
        for line in lines:
            body = line["body"]
            prompt = (body.get("messages") or [{}])[-1].get("content", "")
            action = self.arrive(prompt, body)
            self.leave()
            if action.kind == "ok":
                resp = {"status_code": 200, "request_id": uuid.uuid4().hex,
                        "body": _completion(body, action.text or f"echo: {prompt}")}
                out.append({"id": uuid.uuid4().hex, "custom_id": line["custom_id"], "response": resp, "error": None})
            else:
                resp = {"status_code": action.status, "request_id": uuid.uuid4().hex,
                        "body": {"error": {"message": f"loopback {action.status}", "type": "loopback"}}}
                err.append({"id": uuid.uuid4().hex, "custom_id": line["custom_id"], "response": resp, "error": None})
        with self.lock:
            for name, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    fid = f"file-{uuid.uuid4().hex[:12]}"
                    self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = fid
            batch["request_counts"].update(completed=len(out), failed=len(err))
            batch["status"] = "completed"
