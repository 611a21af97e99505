"""docker-compose.yml as podman-compose reads it, held to what README ("Running it as a service")
and SPEC §9 promise: two schedulers, workers that scale, Redis with AOF and noeviction behind a
password, the dashboard behind basic auth and published on 127.0.0.1 only.

The file goes through podman-compose's own loader (`.env` interpolation, the x-newswatch anchor,
profiles, `deploy` and `--scale` turned into containers), so what is checked is what
`podman-compose up` would create, not what PyYAML sees. Redis's flags and the dashboard's
environment are then tried on a real redis-server and a real `newswatch dashboard`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import podman_compose
import pytest
import redis

from tests.conftest import ROOT, free_port, stop_processes, wait_for
from worker.adapters.queues import JOB_TIMEOUT
from worker.cli import build_parser

COMPOSE_VARIABLES = ("REDIS_PASSWORD", "DASHBOARD_USER", "DASHBOARD_PASSWORD", "WEBHOOK_SECRET", "SENTRY_DSN")


@pytest.fixture(autouse=True)
def _only_dot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """podman-compose lets the process environment override .env: keep ours out of it."""
    for name in os.environ:
        if name.startswith(("COMPOSE_", "PODMAN_")) or name in COMPOSE_VARIABLES:
            monkeypatch.delenv(name)


def compose(
    project_dir: Path, *up_args: str, profiles: tuple[str, ...] = (), dot_env: str | None = None
) -> Any:
    """The project as `podman-compose [--profile P] up UP_ARGS` sees it, after
    `cp .env.example .env` (or with the given .env). Uses podman-compose's parser, not podman."""
    project_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "docker-compose.yml", project_dir)
    env_file = project_dir / ".env"
    env_file.write_text(dot_env if dot_env is not None else (ROOT / ".env.example").read_text())
    project = podman_compose.PodmanCompose()
    project.commands = podman_compose.podman_compose.commands  # the registered `up` and its options
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    project._parse_args(["-f", str(project_dir / "docker-compose.yml"), *profile_args, "up", *up_args])
    project._parse_compose_file()
    return project


def containers(project: Any, service: str) -> list[dict[str, Any]]:
    return [project.container_by_name[name] for name in project.container_names_by_service[service]]


def dot_env_value(name: str) -> str:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith(f"{name}="))


def test_two_schedulers_and_workers_that_scale(tmp_path: Path) -> None:
    project = compose(tmp_path / "default")
    assert len(containers(project, "scheduler")) == 2  # SPEC §9: compose runs two
    assert len(containers(project, "worker")) == 2
    scaled = containers(compose(tmp_path / "scaled", "--scale", "worker=5"), "worker")
    assert len({c["name"] for c in scaled}) == 5
    for service in ("scheduler", "worker"):
        for container in containers(project, service):
            # what would stop a second copy from starting: a fixed name or a published port
            assert "container_name" not in container and container["ports"] == []
    # podman-compose stops a container with its stop_grace_period: a worker may finish its job
    worker_grace = podman_compose.str_to_seconds(containers(project, "worker")[0]["stop_grace_period"])
    assert worker_grace is not None and worker_grace > JOB_TIMEOUT


def test_each_role_is_a_newswatch_command_on_the_password_protected_redis(tmp_path: Path) -> None:
    project = compose(tmp_path)
    password = dot_env_value("REDIS_PASSWORD")
    for service in ("scheduler", "worker", "dashboard"):
        container = containers(project, service)[0]
        assert container["image"] == "newswatch:latest" and container["build"]["context"] == str(tmp_path)
        assert build_parser().parse_args(container["command"]).command == service
        url = urlsplit(container["environment"]["REDIS_URL"])
        assert (url.hostname, url.port, url.password) == ("redis", 6379, password)
        assert container["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """redis-server started with compose's own command line (on a free loopback port): a client
    without the password and one with the password newswatch's REDIS_URL carries."""
    project = compose(tmp_path / "project")
    (service,) = containers(project, "redis")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; `make test` installs it")
    assert service["command"][0] == "redis-server" and service["volumes"] == ["redis-data:/data"]
    assert "redis-data" in project.vols  # a named volume: the AOF outlives the container
    port = free_port()
    server = subprocess.Popen(
        [binary, *service["command"][1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    password = urlsplit(containers(project, "worker")[0]["environment"]["REDIS_URL"]).password
    anonymous = redis.Redis(port=port)
    client = redis.Redis(port=port, password=password)
    try:
        wait_for(lambda: _answers(client), timeout=15)
        yield anonymous, client
    finally:
        stop_processes(server)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_keeps_everything_and_wants_the_password(
    compose_redis: tuple[redis.Redis, redis.Redis],
) -> None:
    anonymous, client = compose_redis
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    config = client.config_get("appendonly", "appendfsync", "maxmemory-policy")
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


def test_only_loopback_ports_and_the_dashboard_needs_its_password(tmp_path: Path) -> None:
    project = compose(tmp_path / "dev", profiles=("dev",))
    published = {c["name"]: c["ports"] for c in project.containers if c["ports"]}
    assert published == {"dev_dashboard_1": ["127.0.0.1:9181:9181"], "dev_mailpit_1": ["127.0.0.1:8025:8025"]}
    assert "mailpit" not in compose(tmp_path / "default").container_names_by_service  # dev profile only
    without_password = (ROOT / ".env.example").read_text().replace("DASHBOARD_PASSWORD=", "UNUSED=")
    with pytest.raises(ValueError, match="DASHBOARD_PASSWORD"):  # podman-compose refuses to start
        compose(tmp_path / "no-password", dot_env=without_password)


def test_env_example_names_every_variable_compose_uses() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= {
        line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    }


def test_dashboard_with_the_compose_environment_asks_for_basic_auth(tmp_path: Path, redis_url: str) -> None:
    (dashboard,) = containers(compose(tmp_path / "project"), "dashboard")
    assert build_parser().parse_args(dashboard["command"]).bind == "0.0.0.0"  # inside its container
    port = free_port()  # here: loopback, a free port
    env = {**os.environ, **dashboard["environment"], "REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dashboard", "--bind", "127.0.0.1", "--port", str(port)],
        stdout=(tmp_path / "dashboard.log").open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: _status(url) is not None, timeout=30)
        assert _status(url) == 401
        user, password = dot_env_value("DASHBOARD_USER"), dot_env_value("DASHBOARD_PASSWORD")
        assert _status(url, auth=(user, password)) == 200
    finally:
        stop_processes(process)


def _status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    try:
        return httpx.get(url, auth=auth, timeout=5).status_code
    except httpx.HTTPError:
        return None
