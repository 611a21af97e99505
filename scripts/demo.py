"""`make demo`: serve the bundled Eulerpool sample on 127.0.0.1 and show its alerts on the console,
in two parts: its RSS feed, then a copy of the fixture news site without a feed (config/demo/site,
read as `type: html` with `articles: true`), each polled once on a Redis database of its own (in
one database the site's copy of the story would be a second report of it, not a new alert).
Offline; uses a throw-away redis-server so it can run again."""

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
    """Serves config/demo (the RSS sample) and, at the root, the site in config/demo/site: a path
    without a suffix is its page (/de/news is site/de/news.html), as sites with pretty URLs answer."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def translate_path(self, path: str) -> str:
        local = super().translate_path(path)
        if Path(local).is_file():
            return local
        page = Path(super().translate_path("/site" + path).rstrip("/") + ".html")
        return str(page) if page.is_file() else local


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _part(cli: list[str], flags: list[str], env: dict[str, str], feed: str, database: int) -> list[str]:
    """Poll one feed on its own Redis database, let a worker process it; the alerts it printed."""
    env = {**env, "REDIS_URL": env["REDIS_URL"].rsplit("/", 1)[0] + f"/{database}"}
    subprocess.run([*cli, "poll", "--feed", feed, *flags], env=env, check=True)
    print("demo: a worker processes the new items; alerts follow:", flush=True)
    worker = subprocess.run(
        [*cli, "worker", "--burst", *flags], env=env, check=True, stdout=subprocess.PIPE, text=True
    )
    print(worker.stdout, end="", flush=True)
    return [
        line.split()[1].removeprefix("alert=")
        for line in worker.stdout.splitlines()
        if line.startswith("ALERT ")
    ]


def main() -> int:
    sys.path.insert(0, str(ROOT / "scripts"))
    from ensure_redis import answers, redis_server_binary

    handler = functools.partial(QuietHandler, directory=str(ROOT / "config" / "demo"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    feed_url, site_url = f"{base}/eulerpool.rss", f"{base}/de/news"

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
                "NEWSWATCH_DEMO_SITE_URL": site_url,
            }
            cli = [sys.executable, "-m", "worker.cli"]
            flags = ["--config", str(ROOT / "config" / "demo.yaml"), "--log-level", "WARNING"]
            for _ in range(50):
                if answers(env["REDIS_URL"]):
                    break
                time.sleep(0.1)
            part = functools.partial(_part, cli, flags, env)
            print(f"demo: 1. the Eulerpool sample feed at {feed_url}", flush=True)
            alerts = part("eulerpool", 0)
            # The README says what the demo shows; these lines say it again, from what happened.
            print(
                f"demo: {len(alerts)} alerts ({', '.join(alerts)}) for the one DeepSeek story of the sample"
            )
            print(
                f"demo: 2. a news site without a feed at {site_url} (type: html, articles: true)", flush=True
            )
            alerts = part("eulerpool-site", 1)
            print(f"demo: {len(alerts)} alerts ({', '.join(alerts)}) from the site's article pages")
        finally:
            redis_proc.terminate()
            redis_proc.wait()
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
