"""Deliveries side by side (SPEC §9): real `newswatch worker` processes, a real Redis, and
receivers that answer slowly, as real ones do. Overlap is measured at the receiver, as the
number of requests it holds at once, never as elapsed time."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, LocalServer, Response, feed_items, rss, stop_processes, wait_for
from tests.integration.receivers import Answer, SlowReceiver
from worker import delivery
from worker.adapters import keys, queues, rqcompat
from worker.adapters.smtp import SmtpSessions, SmtpTarget
from worker.config import load_config
from worker.core.errors import DeliveryError
from worker.pipeline import process_items
from worker.polling import poll_feed
from worker.runtime import Runtime, connect


def stories(count: int, title: str = "DeepSeek Meldung") -> list[dict[str, str]]:
    """`count` items, newest first as feeds list them, one minute apart."""
    now = datetime.now(UTC)
    return [
        {
            "title": f"{title} {n:04d}",
            "guid": f"{title}-{n}",
            "link": f"https://n.example/{title.replace(' ', '-')}/{n}",
            "pubDate": (now - timedelta(minutes=n)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }
        for n in range(count)
    ]


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    server = SlowReceiver()
    yield server
    server.close()


def write_config(tmp_path: Path, redis_url: str, feed: str, body: str, delivery: str = "") -> Path:
    """`delivery` adds keys to (or overrides keys of) the delivery section."""
    section = {"retries": ["1s", "1s"], "timeout": "10s"} | yaml.safe_load("{" + delivery + "}")
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1h, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true}}
stories: off  # the items differ only by their number: grouped, they would be one story
delivery: {json.dumps(section)}
feeds:
  - {{name: news, url: "{feed}"}}
{body}
""",
        encoding="utf-8",
    )
    return path


def runtime(config: Path) -> Runtime:
    return connect(load_config(str(config), {}))


def start_worker(config: Path, tmp_path: Path, name: str = "worker") -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("ab")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip


def idle(rt: Runtime) -> bool:
    """No job queued, running or held: every delivery is settled."""
    counts = queues.queue_counts(rt.redis)
    held = sum(rqcompat.scheduled_count(queues.queue(rt.redis, c.name)) for c in counts)
    return held == 0 and all(c.queued == 0 and c.started == 0 for c in counts)


def run_burst(
    tmp_path: Path, redis_url: str, server: LocalServer, items: list[dict[str, str]], body: str, delivery: str
) -> tuple[Runtime, subprocess.Popen[bytes]]:
    """One worker process running, then a poll that finds `items`."""
    server.routes["/feed"] = Response(rss(items))
    rt = runtime(write_config(tmp_path, redis_url, server.url("/feed"), body, delivery))
    worker = start_worker(Path(rt.config.path), tmp_path)
    try:
        wait_for(lambda: rqcompat.live_workers(rt.redis) == 1, timeout=30)
        poll_feed(rt, rt.settings.feeds[0])
    except BaseException:
        worker.kill()  # the caller's finally never sees it
        worker.wait()
        raise
    return rt, worker


def hook_config(receiver: SlowReceiver, *names: str, extra: dict[str, str] | None = None) -> str:
    """One alert to webhook channels of these names, each on the receiver's path /<name>;
    `extra` adds keys to a channel."""
    channels = "\n".join(
        f'  {name}: {{type: webhook, url: "{receiver.url("/" + name)}"{(extra or {}).get(name, "")}}}'
        for name in names
    )
    return f"""
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [{", ".join(names)}]}}
channels:
{channels}
"""


def test_deliveries_overlap_up_to_delivery_concurrency_and_no_further(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    receiver.answer = lambda path, payload, tries: Answer(delay=0.2)
    _, worker = run_burst(
        tmp_path, redis_url, http_server, stories(40), hook_config(receiver, "hook"), "concurrency: 6"
    )
    try:
        wait_for(lambda: len(receiver.delivered("/hook")) == 40, timeout=60)
    finally:
        stop_processes(worker)
    assert receiver.peak["/hook"] == 6  # six at once, never seven
    assert sorted(receiver.titles("/hook")) == [f"DeepSeek Meldung {n:04d}" for n in range(40)]


def test_retries_go_out_side_by_side_too(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    """Every first try meets a 503; the retries (RQ delivery jobs) overlap like first tries."""
    receiver.answer = lambda path, payload, tries: (
        Answer(503, delay=0, tag="first") if tries == 1 else Answer(200, delay=0.3, tag="retry")
    )
    rt, worker = run_burst(
        tmp_path, redis_url, http_server, stories(20), hook_config(receiver, "hook"), "concurrency: 6"
    )
    try:
        wait_for(lambda: len(receiver.delivered("/hook")) == 20, timeout=60)
        wait_for(lambda: idle(rt), timeout=30)
    finally:
        stop_processes(worker)
    assert receiver.peak["/hook#retry"] == 6
    assert set(receiver.tries.values()) == {2}  # one failed try and one retry for each, no more
    assert collections.Counter(receiver.titles("/hook")).most_common(1)[0][1] == 1


def test_retries_handed_to_the_sender_keep_rqs_tries_failed_registry_and_replay(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    """Through the worker's sender, a retry that meets a 410 fails for good at once, one that
    keeps failing gets exactly 1 + len(retries) tries; both land in the failed registry with
    their reason, and replay-failed sends them again under their original ids."""
    healed = {"yes": False}

    def answer(path: str, payload: dict[str, object], tries: int) -> Answer:
        if healed["yes"]:
            return Answer(200, delay=0.05)
        if path == "/gone":
            return Answer(503 if tries == 1 else 410, delay=0.05)
        return Answer(503, delay=0.05)

    receiver.answer = answer
    rt, worker = run_burst(
        tmp_path, redis_url, http_server, stories(3), hook_config(receiver, "gone", "down"), ""
    )
    try:
        wait_for(lambda: rqcompat.failed_count(rt.deliveries_queue) == 6 and idle(rt), timeout=60)
        reasons = {
            job.args[0]["channel"]: rqcompat.failure_reason(job)
            for job in rqcompat.failed_jobs(rt.deliveries_queue)
        }
        assert reasons == {"gone": "PermanentDeliveryError: webhook gone: HTTP 410 Gone, receiver refuses alerts",
                           "down": "DeliveryError: webhook down: HTTP 503"}  # fmt: skip
        assert {
            path: tries for path, tries in collections.Counter(a.path for a in receiver.arrivals).items()
        } == {
            "/gone": 3 * 2,  # a 503, then the 410: no further try
            "/down": 3 * 3,  # one try and the two retries of the test config
        }
        failed_ids = {job.id for job in rqcompat.failed_jobs(rt.deliveries_queue)}
        healed["yes"] = True
        from worker import commands

        assert commands.replay_failed(rt.config, None) == 0
        wait_for(lambda: len(receiver.delivered("/gone")) + len(receiver.delivered("/down")) == 6, timeout=60)
        wait_for(lambda: idle(rt) and rqcompat.failed_count(rt.deliveries_queue) == 0, timeout=30)
    finally:
        stop_processes(worker)
    replayed = {a.headers["webhook-id"] for a in receiver.delivered("/gone") + receiver.delivered("/down")}
    assert replayed == failed_ids


def test_a_channel_cap_holds_while_other_channels_use_the_rest(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    receiver.answer = lambda path, payload, tries: Answer(delay=0.2)
    body = hook_config(receiver, "fragile", "hook", extra={"fragile": ", concurrency: 2"})
    _, worker = run_burst(tmp_path, redis_url, http_server, stories(30), body, "")
    try:
        wait_for(
            lambda: len(receiver.delivered("/fragile")) == len(receiver.delivered("/hook")) == 30, timeout=60
        )
    finally:
        stop_processes(worker)
    assert receiver.peak["/fragile"] == 2
    assert receiver.peak["/hook"] > 2  # the other channel was not held to the fragile one's cap


def test_a_dead_receiver_does_not_delay_another_channel(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    """A receiver that accepts connections and never answers holds its sends until their
    timeout. It has taken every slot it may before the other channel's alerts come; those
    still all arrive while the dead receiver's sends hang."""
    receiver.answer = lambda path, payload, tries: Answer(delay=0.1)
    receiver.hold("/dead")
    body = f"""
alerts:
  - {{name: doomed, query: "title:Marktbericht", channels: [dead]}}
  - {{name: deepseek, query: DeepSeek, channels: [live]}}
channels:
  dead: {{type: webhook, url: "{receiver.url("/dead")}"}}
  live: {{type: webhook, url: "{receiver.url("/live")}"}}
"""
    doomed, wanted = stories(20, "Marktbericht"), stories(20)
    rt, worker = run_burst(tmp_path, redis_url, http_server, doomed, body, "concurrency: 8, timeout: 60s")
    try:
        wait_for(lambda: receiver.in_flight["/dead"] >= 7, timeout=30)  # every slot it may take
        http_server.routes["/feed"] = Response(rss(doomed + wanted))
        poll_feed(rt, rt.settings.feeds[0])
        wait_for(lambda: len(receiver.delivered("/live")) == 20, timeout=30)
        # Every alert for the live channel arrived while the dead one's sends all still hung ...
        assert receiver.delivered("/dead") == [] and receiver.in_flight["/dead"] >= 7
        receiver.release("/dead")
        wait_for(lambda: len(receiver.delivered("/dead")) == 20, timeout=60)  # ... and none was lost
    finally:
        stop_processes(worker)
    assert receiver.peak["/dead"] == 7  # of 8 slots: one stays free for a channel with none in flight


def test_one_alert_with_many_items_holds_up_another_by_one_turn(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    receiver.answer = lambda path, payload, tries: Answer(delay=0.1)
    body = f"""
alerts:
  - {{name: broad, query: "title:Marktbericht", channels: [hook]}}
  - {{name: narrow, query: "title:Eilmeldung", channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{receiver.url("/hook")}"}}
"""
    rt = runtime(write_config(tmp_path, redis_url, http_server.url("/feed"), body, "concurrency: 4"))
    delivery.start_sender(rt)  # as a worker process has it
    url = rt.settings.feeds[0].url
    broad = [i.to_dict() for i in feed_items("news", rss(stories(200, "Marktbericht")), url)]
    narrow = [i.to_dict() for i in feed_items("news", rss(stories(1, "Eilmeldung")), url)]
    try:
        process_items(rt, "news", broad)  # 200 alerts wait for 4 slots
        process_items(rt, "news", narrow)
        wait_for(lambda: len(receiver.delivered("/hook")) == 201, timeout=60)
    finally:
        delivery.stop_sender(rt, finish=True)
    position = receiver.titles("/hook").index("Eilmeldung 0000")
    assert position < 2 * 4, position  # the next free slot, not after the 200


def test_alerts_of_one_feed_reach_a_channel_in_publication_order(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    """One at a time (the channel's cap), across batches: the feed lists newest first, the
    receiver gets oldest first."""
    receiver.answer = lambda path, payload, tries: Answer(delay=0.01)
    items = stories(120)  # three batches of 50
    body = hook_config(receiver, "hook", extra={"hook": ", concurrency: 1"})
    _, worker = run_burst(tmp_path, redis_url, http_server, items, body, "")
    try:
        wait_for(lambda: len(receiver.delivered("/hook")) == 120, timeout=60)
    finally:
        stop_processes(worker)
    assert receiver.titles("/hook") == [i["title"] for i in reversed(items)]


def test_sigterm_with_a_thousand_deliveries_waiting_loses_and_doubles_none(
    tmp_path: Path, redis_url: str, http_server: LocalServer, receiver: SlowReceiver
) -> None:
    """A receiver that takes 1.2 s per alert: the worker takes every batch of a 1,000-item burst
    (what waits for so slow a receiver does not hold it back) and is stopped with 16 sends in
    flight and the rest waiting. Those in flight end and are recorded; the rest go back to
    their jobs, and another worker sends them, each once."""
    delay = {"now": 1.2}
    receiver.answer = lambda path, payload, tries: Answer(delay=delay["now"])
    items = stories(1000)
    rt, first = run_burst(tmp_path, redis_url, http_server, items, hook_config(receiver, "hook"), "")
    second = None
    try:
        items_queue = queues.queue(rt.redis, keys.ITEMS_QUEUE)
        wait_for(lambda: items_queue.count == 0 and not rqcompat.started_count(items_queue), timeout=60)
        wait_for(lambda: receiver.in_flight["/hook"] == 16, timeout=30, interval=0.02)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        log = (tmp_path / "worker.log").read_text(errors="replace")
        handed_back = re.search(r"stopping: (\d+) deliveries not started went back to their jobs", log)
        assert handed_back and int(handed_back.group(1)) >= 900, log[-2000:]
        sent_by_first = len(receiver.delivered("/hook"))
        assert sent_by_first + int(handed_back.group(1)) == 1000  # ended in flight, or given back
        delay["now"] = 0.05
        second = start_worker(Path(rt.config.path), tmp_path, "second")
        wait_for(lambda: len(receiver.delivered("/hook")) >= 1000, timeout=120, interval=0.2)
        wait_for(lambda: idle(rt), timeout=60, interval=0.2)
    finally:
        stop_processes(*[p for p in (first, second) if p is not None])
    counts = collections.Counter(receiver.titles("/hook"))
    assert set(counts) == {i["title"] for i in items}
    assert max(counts.values()) == 1
    assert receiver.peak["/hook"] <= 16


# --- email ----------------------------------------------------------------------------------------


def test_email_goes_out_side_by_side_on_reused_sessions(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    from tests.integration.mail_servers import RecordingHandler, start_mail_server

    mail = start_mail_server("plain", tmp_path, RecordingHandler(delay=0.2))
    body = f"""
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [mail]}}
channels:
  mail:
    type: email
    to: [ops@example.org]
    from: newswatch@example.org
    concurrency: 4
    smtp: {{host: 127.0.0.1, port: {mail.port}, starttls: false}}
"""
    try:
        _, worker = run_burst(tmp_path, redis_url, http_server, stories(24), body, "")
        try:
            wait_for(lambda: len(mail.handler.received) == 24, timeout=60)
        finally:
            stop_processes(worker)
    finally:
        mail.stop()
    assert mail.handler.peak_in_data == 4  # four messages in flight at once, the channel's cap
    assert len(mail.handler.sessions) <= 4  # one SMTP session per slot, reused for the rest


def _smtp_target(port: int, timeout: float = 5.0) -> SmtpTarget:
    return SmtpTarget("127.0.0.1", port, False, False, True, None, None, None, timeout, allow_private=True)


def _mail(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, "newswatch@example.org", "ops@example.org"
    message.set_content("DeepSeek")
    return message


def test_an_smtp_session_the_server_dropped_is_replaced_without_a_failure(tmp_path: Path) -> None:
    from tests.integration.mail_servers import start_mail_server

    first = start_mail_server("plain", tmp_path)
    sessions = SmtpSessions()
    sessions.send(_smtp_target(first.port), _mail("one"), "newswatch@example.org", ["ops@example.org"])
    first.stop()  # a restart drops the session we keep open
    second = start_mail_server("plain", tmp_path, port=first.port)
    try:
        sessions.send(_smtp_target(first.port), _mail("two"), "newswatch@example.org", ["ops@example.org"])
    finally:
        second.stop()
    assert [r.message["Subject"] for r in first.handler.received + second.handler.received] == ["one", "two"]


def test_an_smtp_server_that_drips_is_cut_off_at_the_message_deadline() -> None:
    """Each line of its greeting comes well within the socket timeout, forever; the message as
    a whole still ends at `timeout`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            while not stop.wait(0.2):
                connection.sendall(b"220-still here\r\n")

    threading.Thread(target=drip, daemon=True).start()
    try:
        with pytest.raises(DeliveryError, match="timed out"):
            SmtpSessions().send(
                _smtp_target(listener.getsockname()[1], timeout=1.0),
                _mail("x"),
                "a@example.org",
                ["b@example.org"],
            )
    finally:
        stop.set()
        listener.close()
