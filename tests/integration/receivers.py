"""Webhook receivers that answer slowly, as real ones do: each POST is answered in its own
thread after a delay, so requests overlap; the receiver counts how many it holds at once, per
path. Overlap is measured here, as in-flight counts, never as elapsed time."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.1  # seconds the receiver works on the request
    tag: str = ""  # in-flight counts are kept per path and per tag


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    payload: dict[str, Any]
    status: int


class SlowReceiver:
    def __init__(self, answer: Callable[[str, dict[str, Any], int], Answer] | None = None) -> None:
        """`answer(path, payload, tries_of_this_webhook_id)` decides each answer."""
        self.answer = answer or (lambda path, payload, tries: Answer())
        self.arrivals: list[Arrival] = []  # in the order the answers were sent
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.tries: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.held: dict[str, threading.Event] = {}  # path -> set when its requests may be answered
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload = json.loads(body)
                answer = receiver._begin(self.path, headers, payload)
                try:
                    gate = receiver.held.get(self.path)
                    if gate is not None:
                        gate.wait()
                    threading.Event().wait(answer.delay)  # the receiver's own work
                finally:
                    receiver._end(self.path, answer, headers, payload)
                self.send_response(answer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # dozens of connections open at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _begin(self, path: str, headers: dict[str, str], payload: dict[str, Any]) -> Answer:
        with self.lock:
            self.tries[headers["webhook-id"]] += 1
            answer = self.answer(path, payload, self.tries[headers["webhook-id"]])
            for key in (path, f"{path}#{answer.tag}"):
                self.in_flight[key] += 1
                self.peak[key] = max(self.peak[key], self.in_flight[key])
        return answer

    def _end(self, path: str, answer: Answer, headers: dict[str, str], payload: dict[str, Any]) -> None:
        with self.lock:
            for key in (path, f"{path}#{answer.tag}"):
                self.in_flight[key] -= 1
            self.arrivals.append(Arrival(path, headers, payload, answer.status))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def hold(self, path: str) -> None:
        """Requests to `path` get no answer until `release` (a receiver that hangs)."""
        self.held[path] = threading.Event()

    def release(self, path: str) -> None:
        self.held.pop(path).set()

    def delivered(self, path: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.path == path and 200 <= a.status < 300]

    def titles(self, path: str) -> list[str]:
        return [a.payload["data"]["item"]["title"] for a in self.delivered(path)]

    def close(self) -> None:
        for gate in self.held.values():
            gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
