"""What a newcomer meets in the first hour (issue 17), as the newcomer meets it: the `newswatch`
command in a subprocess, a real Redis, local HTTP servers."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import redis

from tests.conftest import EULERPOOL_RSS, ROOT, LocalServer, Response, children_of, stop_processes, wait_for
from tests.integration.helpers import drain, make_runtime
from worker.adapters import keys, queues, rqcompat
from worker.commands import status_data
from worker.config import load_config
from worker.core.errors import ConfigError
from worker.core.poll import GUID_CHURN_WARNING
from worker.polling import poll_feed


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NEWSWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True, text=True, cwd=cwd, env={**clean, **(env or {})}, timeout=60,
    )  # fmt: skip


def write_config(
    tmp_path: Path, redis_url: str, server: LocalServer, extra: str = "", max_age: str = "off"
) -> str:
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1m, max_age: {max_age}, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s], timeout: 3s}}
feeds:
  - {{name: eulerpool, url: "{server.url("/eulerpool.rss")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}"}}
{extra}
""",
        encoding="utf-8",
    )
    return str(path)


def test_a_receiver_that_is_down_is_one_line_per_try_and_rq_keeps_quiet(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """Each failed try of a webhook is one warning naming alert and channel; no RQ traceback,
    no RQ chatter at INFO. A bug in a job still gets its traceback; DEBUG shows RQ again."""
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(b"down for maintenance", 503)
    config = write_config(tmp_path, redis_url, http_server)
    assert cli("poll", "--config", config).returncode == 0
    deliveries = queues.queue(redis.Redis.from_url(redis_url), keys.DELIVERIES_QUEUE)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--config", config],
            stderr=out, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_for(lambda: rqcompat.failed_count(deliveries) == 1, timeout=60)
        finally:
            stop_processes(worker)
    text = log.read_text()
    assert "Traceback" not in text, text
    tries = [line for line in text.splitlines() if "alert=deepseek channel=hook" in line]
    assert len(tries) == 3, text  # the first try, the retry, the last: one line each
    assert all("HTTP 503" in line for line in tries)
    assert " rq." not in text, text  # RQ's INFO lines (subscribing, cleaning registries, Job OK)

    # A delivery job that cannot even read its arguments is a bug: RQ's traceback stays.
    deliveries.enqueue("worker.jobs.deliver", {"alert": "broken"}, result_ttl=60)
    bug = cli("worker", "--burst", "--log-level", "DEBUG", "--config", config)
    assert "Traceback" in bug.stderr and "KeyError" in bug.stderr
    assert "rq.worker" in bug.stderr  # at DEBUG, RQ says what it does again


def test_a_renamed_feed_is_not_said_to_churn_its_guids(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """The same file polled under a new feed name: its stories are known (no alert again), and
    nothing churns. A real new GUID for a known link in the same feed still warns."""
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    feed = f'{{name: eulerpool, url: "{http_server.url("/eulerpool.rss")}"}}'
    renamed = f'{{name: eulerpool-de, url: "{http_server.url("/eulerpool.rss")}"}}'
    rt = make_runtime(tmp_path, redis_url, f"feeds: [{feed}]")
    assert poll_feed(rt, rt.settings.feeds[0]).enqueued == 7
    drain(rt)
    renamed_rt = make_runtime(tmp_path, redis_url, f"feeds: [{renamed}]")
    outcome = poll_feed(renamed_rt, renamed_rt.settings.feeds[0])
    assert (outcome.items, outcome.enqueued) == (7, 0)
    assert [f["warning"] for f in status_data(renamed_rt)["feeds"]] == [None]

    text = re.sub(r"<guid[^>]*>[^<]*</guid>", "", EULERPOOL_RSS.read_text(encoding="utf-8"))
    numbers = itertools.count()
    churned = re.sub("<item>", lambda _: f"<item><guid>new-{next(numbers)}</guid>", text)
    http_server.routes["/eulerpool.rss"] = Response(churned.encode())
    rt = make_runtime(tmp_path, redis_url, f"feeds: [{feed}]")
    poll_feed(rt, rt.settings.feeds[0])
    assert [f["warning"] for f in status_data(rt)["feeds"]] == [GUID_CHURN_WARNING]


def test_items_too_old_to_alert_are_counted_in_the_log_and_in_status(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """The sample's seven items are from August 2025: with max_age 3d they are recorded, not
    alerted, and the batch's log line and `status` say how many and why."""
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    config = write_config(tmp_path, redis_url, http_server, max_age="3d")
    assert cli("poll", "--config", config).returncode == 0
    worker = cli("worker", "--burst", "--config", config)
    assert (
        "feed=eulerpool batch: 7 items, 7 new, 0 deliveries; 7 published before polling.max_age (3d): "
        "recorded, not alerted"
    ) in worker.stderr
    (feed,) = json.loads(cli("status", "--json", "--config", config).stdout)["feeds"]
    assert (feed["items_seen"], feed["too_old"]) == (7, 7)
    text = cli("status", "--config", config, env={"COLUMNS": "40"}).stdout  # piped, and narrow
    assert "7 (7 too old)" in text and "published before polling.max_age (3d)" in text
    (row,) = [line for line in text.splitlines() if line.startswith("eulerpool ")]
    assert row.split()[1] == feed["last_success"]  # whole, on the feed's one line
    assert http_server.received("/hook") == []


def test_check_config_asks_about_lower_case_operators_and_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "lower.yaml"
    path.write_text("alerts:\n  - {name: chips, query: deepseek and huawei}\n", encoding="utf-8")
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "alerts[0].query: 'and' is searched as a word; did you mean AND?" in result.stderr


def test_read_only_commands_need_no_channel_secrets(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A secret kept only where the daemon runs (${WEBHOOK_SECRET}, even a Slack-style URL)
    does not stop status or health in another shell; commands that send still refuse."""
    extra = """
  signed: {type: webhook, url: "https://hooks.example.org/x", secret: "${WEBHOOK_SECRET}"}
  slack: {type: webhook, url: "${SLACK_WEBHOOK_URL}"}
"""
    config = write_config(tmp_path, redis_url, http_server, extra=extra)
    status = cli("status", "--json", "--config", config)
    assert status.returncode == 0, status.stderr
    assert [f["name"] for f in json.loads(status.stdout)["feeds"]] == ["eulerpool"]
    assert cli("health", "--config", config).returncode == 1  # unhealthy (nothing runs), not exit 2
    for sending in (["test-alert", "hook"], ["poll"], ["check-config"]):
        refused = cli(*sending, "--config", config)
        assert refused.returncode == 2
        assert "channels.signed.secret: environment variable WEBHOOK_SECRET is not set" in refused.stderr
        assert "channels.slack.url: environment variable SLACK_WEBHOOK_URL is not set" in refused.stderr


def test_a_read_only_config_says_which_channels_lack_what(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
alerts: [{name: a, query: DeepSeek, channels: [signed, slack, console]}]
channels:
  signed: {type: webhook, url: "https://hooks.example.org/x", secret: "${WEBHOOK_SECRET}"}
  slack: {type: webhook, url: "${SLACK_WEBHOOK_URL}"}
  mail: {type: email, to: ["${OPS_MAIL}"], from: a@example.org}
""",
        encoding="utf-8",
    )
    config = load_config(str(path), {}, read_only=True)
    assert dict(config.unavailable) == {
        "signed": "WEBHOOK_SECRET", "slack": "SLACK_WEBHOOK_URL", "mail": "OPS_MAIL"
    }  # fmt: skip
    assert set(config.settings.channels) == {"signed"}  # usable for reading; the others are left out
    assert config.rules.alerts[0].channels == ("signed", "slack", "console")
    with pytest.raises(ConfigError):
        load_config(str(path), {})


def test_unknown_names_exit_2_everywhere(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    config = write_config(tmp_path, redis_url, http_server)
    for args, name in [
        (["replay-failed", "--channel", "nosuch"], "channel 'nosuch'"),
        (["poll", "--feed", "nosuch"], "feed 'nosuch'"),
        (["test-alert", "nosuch"], "channel 'nosuch'"),
        (["alerts", "--alert", "nosuch"], "alert 'nosuch'"),
        (["alerts", "--channel", "nosuch"], "channel 'nosuch'"),
    ]:
        result = cli(*args, "--config", config)
        assert result.returncode == 2 and name in result.stderr, (args, result.stderr)
    assert cli("replay-failed", "--channel", "console", "--config", config).returncode == 0


def test_alerts_and_status_say_where_each_delivery_stands(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """`alerts` lists what fired with each delivery's state (sent; retrying, with the next try;
    failed, with the reason); `status` lists failed deliveries with their reasons."""
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(b"maintenance", 503)
    config = write_config(tmp_path, redis_url, http_server)
    Path(config).write_text(
        Path(config).read_text().replace("channels: [hook]", "channels: [hook, console]"), encoding="utf-8"
    )
    assert cli("poll", "--config", config).returncode == 0
    assert cli("worker", "--burst", "--config", config).returncode == 0

    def deliveries() -> dict[str, dict[str, str]]:
        (fired,) = json.loads(cli("alerts", "--json", "--config", config).stdout)["alerts"]
        assert (fired["alert"], fired["feed"]) == ("deepseek", "eulerpool")
        assert fired["title"].startswith("DeepSeek verschiebt Modellstart")
        return {d["channel"]: d for d in fired["deliveries"]}

    first = deliveries()
    assert first["console"]["state"] == "sent"
    assert first["hook"]["state"] == "retrying" and first["hook"]["next_try"].endswith("Z")
    text = cli("alerts", "--config", config).stdout
    assert "deepseek  feed=eulerpool  DeepSeek verschiebt" in text and "hook: retrying, next try 20" in text

    def failed() -> dict[str, str] | None:
        cli("worker", "--burst", "--config", config)  # runs the retries that are due
        hook = deliveries()["hook"]
        return hook if hook["state"] == "failed" else None

    hook = wait_for(failed, timeout=60, interval=0.5)
    assert hook["reason"] == "webhook hook: HTTP 503"
    assert "hook: failed: webhook hook: HTTP 503" in cli("alerts", "--config", config).stdout

    status = json.loads(cli("status", "--json", "--config", config).stdout)
    (entry,) = status["failed_deliveries"]
    assert (entry["alert"], entry["channel"]) == ("deepseek", "hook") and "HTTP 503" in entry["reason"]
    assert entry["title"].startswith("DeepSeek") and entry["failed_at"].endswith("Z")
    text = cli("status", "--config", config).stdout
    assert "Failed deliveries" in text and "webhook hook: HTTP 503" in text and "replay-failed" in text
    assert "no alerts in the last 1s" in cli("alerts", "--since", "1s", "--config", config).stdout


def test_the_editable_install_prints_no_warning_block(tmp_path: Path) -> None:
    """`make` installs newswatch editable; setuptools used to print a 10-line "Editable
    installation" block each time (its meta-path finder mode). Built here with the build
    backend pyproject.toml names, from a copy of the project, warnings shown."""
    for name in ("pyproject.toml", "README.md", "scheduler.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "worker", tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    build = "import setuptools.build_meta as backend; print(backend.build_editable('dist'))"
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", build], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Editable installation" not in result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "dist" / result.stdout.split()[-1]) as wheel:
        (pth,) = [n for n in wheel.namelist() if n.endswith(".pth")]
        assert wheel.read(pth).decode().strip() == str(tmp_path)  # the project root on sys.path


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('stubborn child ignores SIGTERM', flush=True); time.sleep(120)"
SUPERVISE = f"""
import sys
from worker.logs import configure_logging
from worker.supervisor import Supervisor
configure_logging()
sys.exit(Supervisor({{"stubborn": [sys.executable, "-c", {STUBBORN!r}]}}).run())
"""


def test_a_second_ctrl_c_while_stopping_leaves_no_child_behind(tmp_path: Path) -> None:
    """The supervisor's children run in their own sessions, out of Ctrl-C's reach: a second
    Ctrl-C while it waits for them to stop must kill them, not abandon them."""
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISE], cwd=ROOT, stdout=out, stderr=out)
    children: list[int] = []
    try:
        # The child's own line: "up" was also in the supervisor's ("newswatch.supervisor: started
        # stubborn"), and a Ctrl-C sent before the child ignored SIGTERM ended it at once.
        wait_for(lambda: "stubborn child ignores SIGTERM" in log.read_text(), timeout=30)
        children += children_of(supervisor.pid)
        assert len(children) == 1
        supervisor.send_signal(signal.SIGINT)  # Ctrl-C: SIGTERM to the child, which ignores it
        wait_for(lambda: "stopping 1 processes" in log.read_text(), timeout=30)
        supervisor.send_signal(signal.SIGINT)  # Ctrl-C again
        assert supervisor.wait(timeout=30) == 0
        assert not Path(f"/proc/{children[0]}").exists()  # killed, and reaped by the supervisor
        assert "asked again: killing the processes still running" in log.read_text()
    finally:
        stop_processes(supervisor)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
