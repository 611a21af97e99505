"""Running newswatch from the built image's file system, as its container would, without a runtime.

`podman run` cannot start containers on these machines (crun: cgroups in hybrid mode, setrlimit
not permitted), so a command runs with chroot in the image's file system as the image's user, in
its working directory, with its environment and nothing of the host's; /dev (read-only), a fresh
/dev/shm and /proc are mounted in a mount namespace of the command's own, so they vanish with it.
The host's network is shared: everything it talks to listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml
from ensure_redis import answers, redis_server_binary
from image_build import ROOT, CheckFailed, tail
from standardwebhooks import Webhook

DEMO_CONFIG = ROOT / "config" / "demo.yaml"
DEMO_FEED = ROOT / "config" / "demo" / "eulerpool.rss"
CONFIG_IN_IMAGE = "/tmp/newswatch-image-check.yaml"
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
IN_IMAGE = r"""root=$1 user=$2 dir=$3 mount=$4 chroot=$5; shift 5
"$mount" --bind /dev "$root/dev" && "$mount" -o remount,bind,ro "$root/dev" \
  && "$mount" -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm" \
  && "$mount" -t proc -o nosuid,nodev,noexec proc "$root/proc" \
  || { echo "image-check: cannot mount /dev and /proc in $root" >&2; exit 125; }
exec "$chroot" --userspec="$user" "$root" /bin/sh -c 'cd "$1" || exit 125; shift; exec "$@"' image "$dir" "$@"
"""
T = TypeVar("T")
LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Image:
    """The built image: its file system (a container's copy, so runs never change the image)
    and how its config says to run things in it."""

    root: Path
    user: str
    env: dict[str, str]
    workdir: str
    entrypoint: list[str]
    healthcheck: list[str]
    size: int


def spawn_in_image(image: Image, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    uid, gid, home = resolve_user(image)
    tools = [shutil.which(tool) for tool in ("unshare", "mount", "chroot")]
    if not all(tools):
        raise CheckFailed("unshare, mount and chroot are needed (Debian: util-linux, mount, coreutils)")
    unshare, mount, chroot = (str(tool) for tool in tools)
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", IN_IMAGE, "in-image",
                str(image.root), f"{uid}:{gid}", image.workdir, mount, chroot, *argv,
            ],
            env={**image.env, "HOME": home, "HOSTNAME": "newswatch-image-check", **env},
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip


def run_in_image(image: Image, argv: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run to the end (at most 2 minutes); its exit code and what it printed."""
    start = log.stat().st_size if log.exists() else 0
    process = spawn_in_image(image, argv, env, log)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop({" ".join(argv): process})
        raise CheckFailed(f"{' '.join(argv)} did not finish within 120 s") from None
    with log.open("rb") as f:
        f.seek(start)
        return code, f.read().decode(errors="replace")


def resolve_user(image: Image) -> tuple[int, int, str]:
    """USER as uid, gid and home, looked up in the image's /etc/passwd as a runtime would."""
    name, _, group = image.user.partition(":")
    passwd = [line.split(":") for line in (image.root / "etc/passwd").read_text().splitlines() if line]
    entry = next((e for e in passwd if name in (e[0], e[2])), None)
    if entry is None and not name.isdigit():
        raise CheckFailed(f"USER {image.user} is not in the image's /etc/passwd")
    uid = int(entry[2]) if entry else int(name)
    gid = int(group) if group.isdigit() else int(entry[3]) if entry else uid
    if uid == 0:
        raise CheckFailed(f"USER {image.user} is root")
    return uid, gid, entry[5] if entry else "/"


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | str]:
    """SIGTERM, as `docker stop` sends; SIGKILL what has not stopped 30 s later. Exit codes."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes: dict[str, int | str] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            codes[name] = "killed after 30 s"
    return codes


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise CheckFailed(f"no {what} within {timeout:.0f} s")


class LoopbackServer:
    """The demo's feed at /eulerpool.rss and a webhook receiver at /hook, on 127.0.0.1."""

    def __init__(self) -> None:
        self.hooks: list[tuple[dict[str, str], bytes]] = []
        feed, hooks = DEMO_FEED.read_bytes(), self.hooks

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                found = self.path == "/eulerpool.rss"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/rss+xml")
                self.end_headers()
                self.wfile.write(feed if found else b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hooks.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def local_redis(work: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", ""],
        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: answers(url) or _exited("redis-server", process), 15, "answer from redis-server")
        yield url
    finally:
        stop({"redis-server": process})


def _exited(name: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise CheckFailed(f"{name} exited with {process.returncode}")
    return False


def _die_with_parent() -> None:
    """In the child before exec: even a SIGKILLed image-check takes its redis-server with it.
    (Started before any thread, so the fork is safe.)"""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def write_check_config(image: Image, server: LoopbackServer) -> None:
    """config/demo.yaml with the deepseek alert sent to the receiver, signed; metrics off."""
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["channels"]["hook"] = {"type": "webhook", "url": server.url("/hook"), "secret": SECRET}
    for alert in config["alerts"]:
        if alert["name"] == "deepseek":
            alert["channels"] = ["hook"]
    config["metrics"] = {"port": 0}
    target = image.root / CONFIG_IN_IMAGE.lstrip("/")
    target.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    target.chmod(0o644)


def check_pipeline(image: Image, work: Path) -> str:
    with local_redis(work) as redis_url, LoopbackServer() as server:
        write_check_config(image, server)
        env = {
            "REDIS_URL": redis_url,
            "NEWSWATCH_CONFIG": CONFIG_IN_IMAGE,
            "NEWSWATCH_DEMO_FEED_URL": server.url("/eulerpool.rss"),
        }
        health_log = work / "health.log"
        before, output = run_in_image(image, image.healthcheck, env, health_log)
        if before == 0:
            raise CheckFailed(f"the HEALTHCHECK passes with no scheduler and no worker:\n{tail(output)}")
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for role in ("scheduler", "worker"):
                argv = [*image.entrypoint, role, "--log-format", "json"]
                processes[role] = spawn_in_image(image, argv, env, work / f"{role}.log")

            def alert() -> tuple[dict[str, str], bytes] | None:
                return deepseek_hook(server) if all_running(processes, work) else None

            def healthy() -> bool:
                all_running(processes, work)
                return run_in_image(image, image.healthcheck, env, health_log)[0] == 0

            title = verified_title(wait_until(alert, 90, "DeepSeek alert at the receiver"))
            wait_until(healthy, 60, "HEALTHCHECK passing with scheduler and worker running")
            uids = {role: uid_of(process.pid) for role, process in processes.items()}
            if set(uids.values()) != {resolve_user(image)[0]}:
                raise CheckFailed(f"not running as the image's user {image.user}: uids {uids}")
        finally:
            codes = stop(processes)
    if any(code != 0 for code in codes.values()):
        raise CheckFailed(f"on SIGTERM they exited with {codes}; logs:\n" + logs(processes, work))
    return (
        f"'{title}' arrived signed; health exit {before} before, 0 with both running; "
        f"ran as uid {uids}; SIGTERM: exit codes {codes}"
    )


def all_running(processes: dict[str, subprocess.Popen[bytes]], work: Path) -> bool:
    for role, process in processes.items():
        if process.poll() is not None:
            raise CheckFailed(f"{role} exited with {process.returncode}:\n" + logs({role: process}, work))
    return True


def deepseek_hook(server: LoopbackServer) -> tuple[dict[str, str], bytes] | None:
    for headers, body in list(server.hooks):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if json.loads(body)["data"]["alert"] == "deepseek":
                return headers, body
    return None


def verified_title(hook: tuple[dict[str, str], bytes]) -> str:
    headers, body = hook
    try:
        Webhook(SECRET).verify(body, headers)
    except Exception as e:  # any verification failure is the finding, whatever its class
        raise CheckFailed(f"the alert's signature does not verify: {e}") from e
    payload = json.loads(body)
    item = payload["data"]["item"]
    if payload["type"] != "newswatch.alert" or item["feed"] != "eulerpool" or "DeepSeek" not in item["title"]:
        raise CheckFailed(f"unexpected alert body: {body[:300]!r}")
    return str(item["title"])


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise CheckFailed(f"no Uid for process {pid}")


def logs(processes: dict[str, subprocess.Popen[bytes]], work: Path) -> str:
    return "\n".join(
        f"  {role}.log:\n{tail((work / f'{role}.log').read_text(errors='replace'), 15)}" for role in processes
    )
