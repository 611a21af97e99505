"""`make demo`: serve the bundled Eulerpool sample on 127.0.0.1, poll it once, and let a worker
show the alerts on the console. Offline; uses a throw-away redis-server so it can run again."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    sys.path.insert(0, str(ROOT / "scripts"))
    from ensure_redis import answers, redis_server_binary

    handler = functools.partial(QuietHandler, directory=str(ROOT / "config" / "demo"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    feed_url = f"http://127.0.0.1:{server.server_address[1]}/eulerpool.rss"

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        redis_proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            env = {
                **os.environ,
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "NEWSWATCH_DEMO_FEED_URL": feed_url,
            }
            cli = [sys.executable, "-m", "worker.cli"]
            flags = ["--config", str(ROOT / "config" / "demo.yaml"), "--log-level", "WARNING"]
            for _ in range(50):
                if answers(env["REDIS_URL"]):
                    break
                time.sleep(0.1)
            print(f"demo: serving the Eulerpool sample at {feed_url}", flush=True)
            subprocess.run([*cli, "poll", *flags], env=env, check=True)
            print("demo: a worker processes the new items; alerts follow:", flush=True)
            worker = subprocess.run(
                [*cli, "worker", "--burst", *flags], env=env, check=True, stdout=subprocess.PIPE, text=True
            )
            print(worker.stdout, end="", flush=True)
            alerts = [
                line.split()[1].removeprefix("alert=")
                for line in worker.stdout.splitlines()
                if line.startswith("ALERT ")
            ]
            # The README says what the demo shows; this line says it again, from what happened.
            print(
                f"demo: {len(alerts)} alerts ({', '.join(alerts)}) for the one DeepSeek story of the sample"
            )
        finally:
            redis_proc.terminate()
            redis_proc.wait()
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
