"""`type: apprise` channels end to end: real Apprise plugins (json://, form://, ntfy://) posting
to local receivers on 127.0.0.1, through the same claims, retries, failed registry, replays and
digests as webhooks. Apprise's json:// and form:// targets carry the delivery id in a
`webhook-id` header, so a test sees the same id on every try."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from rq.registry import FailedJobRegistry

from tests.conftest import LocalServer, Response, feed_items, rss
from tests.integration.helpers import drain, drain_until, flush_held_digest, make_runtime, meldung, settled
from tests.integration.test_delivery import ONE
from worker import channels, commands
from worker.adapters import apprise_send, keys
from worker.config import load_config
from worker.core.errors import DeliveryError
from worker.core.models import AlertMatch
from worker.core.render import deliveries_for
from worker.core.rules import Classified, classify
from worker.runtime import Runtime

# A token as Apprise URLs carry them: in the password and in the path.
TOKEN = "tok3nS3cretPathValue9f8e7d6c"
PASSWORD = "pw-Qx81Lm0Zr7Tk"


def json_url(server: LocalServer, path: str = "/hook", secret: bool = False) -> str:
    port = server.httpd.server_address[1]
    auth = f"bot:{PASSWORD}@" if secret else ""
    return f"json://{auth}127.0.0.1:{port}{path}"


def setup(
    tmp_path: Path, redis_url: str, server: LocalServer, items: list[dict[str, str]], channels_yaml: str,
    alert: str = "{name: deepseek, query: DeepSeek, channels: [chat]}", polling: str = "",
) -> Runtime:  # fmt: skip
    server.routes["/feed"] = Response(rss(items))
    body = f"""
feeds:
  - {{name: news, url: "{server.url("/feed")}"}}
alerts:
  - {alert}
channels:
{channels_yaml}
"""
    return make_runtime(tmp_path, redis_url, body, polling)


def hook_ids(server: LocalServer, path: str = "/hook") -> list[str]:
    return [r.headers["webhook-id"] for r in server.received(path)]


def test_an_alert_reaches_json_form_and_ntfy_targets(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    port = http_server.httpd.server_address[1]
    http_server.routes["/hook"] = Response(b"ok")
    http_server.routes["/form"] = Response(b"ok")
    http_server.routes["/"] = Response(b'{"id": "n1"}')  # ntfy posts its JSON to the server root
    item = {**ONE[0], "description": "DeepSeek kehrt zu Nvidia zurück", "category": "KI"}
    rt = setup(
        tmp_path, redis_url, http_server, [item],
        f"""  chat: {{type: apprise, url: "{json_url(http_server)}"}}
  form: {{type: apprise, url: "form://127.0.0.1:{port}/form"}}
  phone: {{type: apprise, url: "ntfy://127.0.0.1:{port}/newsroom"}}""",
        alert="{name: deepseek, query: DeepSeek, channels: [chat, form, phone]}",
    )  # fmt: skip
    from worker.polling import poll_feed

    poll_feed(rt, rt.settings.feeds[0])
    drain_until(rt, lambda: len(http_server.received()) >= 4 and settled(rt))  # feed + three targets

    (posted,) = http_server.received("/hook")
    message = posted.json()
    assert message["title"] == "DeepSeek R2 verschoben"
    assert "https://n.example/1" in message["message"]
    assert "news" in message["message"] and "KI" in message["message"]
    assert "DeepSeek kehrt zu Nvidia zurück" in message["message"]
    assert posted.headers["webhook-id"] == deliveries_of(rt, "chat")

    (form,) = http_server.received("/form")
    fields = parse_qs(form.body.decode())
    assert fields["title"] == ["DeepSeek R2 verschoben"]
    assert form.headers["webhook-id"] == deliveries_of(rt, "form")

    (ntfy,) = http_server.received("/")
    sent = ntfy.json()
    assert sent["topic"] == "newsroom" and sent["title"] == "DeepSeek R2 verschoben"
    assert "https://n.example/1" in sent["message"]
    for channel in ("chat", "form", "phone"):
        assert rt.redis.hget(keys.METRICS_DELIVERIES, f"deepseek\x1f{channel}\x1fdelivered") == b"1"


def deliveries_of(rt: Runtime, channel: str) -> str:
    """The id of the ONE item's delivery to a channel, rebuilt the way the worker builds it."""
    (item,) = feed_items("news", rss(ONE), rt.settings.feeds[0].url)
    deliveries = deliveries_for(classify(item, rt.config.rules), rt.clock())
    (found,) = [d.delivery_id for d in deliveries if d.channel == channel]
    return found


def test_a_500_is_retried_and_delivered_once_with_one_delivery_id(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([Response(b"down", 500), Response(b"ok")])
    http_server.routes["/hook"] = lambda request: next(answers, Response(b"ok"))
    rt = setup(
        tmp_path, redis_url, http_server, ONE, f'  chat: {{type: apprise, url: "{json_url(http_server)}"}}'
    )
    from worker.polling import poll_feed

    poll_feed(rt, rt.settings.feeds[0])
    drain_until(rt, lambda: len(http_server.received("/hook")) == 2 and settled(rt))
    first, second = hook_ids(http_server)
    assert first == second
    assert rt.redis.get(keys.delivery_state(first)) == b"sent"
    assert rt.redis.hget(keys.METRICS_DELIVERIES, "deepseek\x1fchat\x1fretried") == b"1"
    assert rt.redis.hget(keys.METRICS_DELIVERIES, "deepseek\x1fchat\x1fdelivered") == b"1"
    assert FailedJobRegistry(queue=rt.deliveries_queue).count == 0
    drain(rt)
    assert len(http_server.received("/hook")) == 2  # never again once accepted
    assert commands.alerts(rt.config, timedelta(hours=1), True, None, None) == 0
    (entry,) = json.loads(capsys.readouterr().out)["alerts"]
    assert [(d["channel"], d["state"]) for d in entry["deliveries"]] == [("chat", "sent")]


def test_a_401_fails_for_good_with_its_reason_and_replay_failed_resends_it(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/hook"] = Response(b"bad token", 401)
    rt = setup(
        tmp_path, redis_url, http_server, ONE, f'  chat: {{type: apprise, url: "{json_url(http_server)}"}}'
    )
    from worker.polling import poll_feed

    poll_feed(rt, rt.settings.feeds[0])
    registry = FailedJobRegistry(queue=rt.deliveries_queue)
    drain_until(rt, lambda: registry.count == 1 and settled(rt))
    assert len(http_server.received("/hook")) == 1  # permanent: no retries
    (job_id,) = registry.get_job_ids()
    job = rt.deliveries_queue.fetch_job(job_id)
    reason = job.latest_result().exc_string or ""  # type: ignore[union-attr]
    assert "PermanentDeliveryError" in reason and "HTTP 401" in reason

    assert commands.status(rt.config, as_json=True) == 0
    status = json.loads(capsys.readouterr().out)
    (failed,) = status["failed_deliveries"]
    assert failed["channel"] == "chat" and "HTTP 401" in failed["reason"]

    http_server.routes["/hook"] = Response(b"ok")
    assert commands.replay_failed(rt.config, "chat") == 0
    drain(rt)
    gone, replayed = hook_ids(http_server)
    assert gone == replayed == job_id
    assert registry.count == 0
    assert rt.redis.get(keys.delivery_state(job_id)) == b"sent"


def test_a_digest_goes_out_as_one_apprise_message(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    items = [meldung(n) for n in range(3)]
    rt = setup(
        tmp_path, redis_url, http_server, items, f'  chat: {{type: apprise, url: "{json_url(http_server)}"}}',
        alert="{name: deepseek, query: DeepSeek, channels: [chat], digest: 3s}",
    )  # fmt: skip
    from worker.polling import poll_feed

    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert http_server.received("/hook") == []
    drain_until(rt, lambda: len(http_server.received("/hook")) == 1 and settled(rt), timeout=20)
    (posted,) = http_server.received("/hook")
    message = posted.json()
    assert message["title"] == "3 alerts for deepseek"
    for n in range(3):
        assert f"DeepSeek Meldung {n}" in message["message"]
        assert f"https://n.example/{n}" in message["message"]
    assert rt.redis.get(keys.delivery_state(posted.headers["webhook-id"])) == b"sent"


def test_max_per_hour_folds_the_excess_into_an_apprise_digest(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    items = [meldung(n) for n in range(4)]
    rt = setup(
        tmp_path, redis_url, http_server, items, f'  chat: {{type: apprise, url: "{json_url(http_server)}"}}',
        alert="{name: deepseek, query: DeepSeek, channels: [chat], max_per_hour: 2}",
    )  # fmt: skip

    from worker.polling import poll_feed

    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert len(http_server.received("/hook")) == 2
    flush_held_digest(rt)  # what RQ runs at the end of the hour
    drain(rt)
    titles = [r.json()["title"] for r in http_server.received("/hook")]
    assert len(titles) == 3 and titles[2] == "2 alerts for deepseek"


def test_the_url_token_never_shows_in_logs_status_or_failures(
    tmp_path: Path, redis_url: str, http_server: LocalServer,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    http_server.routes[f"/hook/{TOKEN}"] = Response(b"no", 500)
    url = json_url(http_server, f"/hook/{TOKEN}", secret=True)
    rt = setup(tmp_path, redis_url, http_server, ONE, f'  chat: {{type: apprise, url: "{url}"}}')
    from worker.polling import poll_feed

    caplog.set_level(logging.DEBUG)
    poll_feed(rt, rt.settings.feeds[0])
    registry = FailedJobRegistry(queue=rt.deliveries_queue)
    drain_until(rt, lambda: registry.count == 1 and settled(rt))
    assert len(http_server.received(f"/hook/{TOKEN}")) == 3  # the try and two retries, all failed
    assert http_server.received(f"/hook/{TOKEN}")[0].headers["authorization"]  # the password was used
    (job_id,) = registry.get_job_ids()
    reason = rt.deliveries_queue.fetch_job(job_id).latest_result().exc_string or ""  # type: ignore[union-attr]
    assert "HTTP 500" in reason

    assert commands.status(rt.config, as_json=False) == 0
    assert commands.test_alert(rt.config, "chat") == 1  # fails (500) and says so
    printed = capsys.readouterr()
    text = "\n".join([caplog.text, printed.out, printed.err, reason])
    assert "HTTP 500" in printed.out
    assert TOKEN not in text and PASSWORD not in text
    # Apprise's lines quote URLs: they go to nothing that prints (pytest attaches its own
    # capture to every logger that does not propagate, so look at the logger, not at caplog).
    quiet = logging.getLogger("apprise")
    assert not quiet.propagate
    assert not [h for h in quiet.handlers if type(h) in (logging.StreamHandler, logging.FileHandler)]
    # What Sentry gets passes through the same redaction.
    assert TOKEN not in rt.config.redact(f"POST {url} http://127.0.0.1/hook/{TOKEN}")
    assert PASSWORD not in rt.config.redact(json.dumps({"url": url}))


def test_test_alert_sends_through_an_apprise_channel(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    rt = setup(
        tmp_path, redis_url, http_server, ONE, f'  chat: {{type: apprise, url: "{json_url(http_server)}"}}'
    )
    assert commands.test_alert(rt.config, "chat") == 0
    assert "delivered (accepted by JSON)" in capsys.readouterr().out
    (posted,) = http_server.received("/hook")
    assert posted.json()["title"].startswith("DeepSeek verschiebt Modellstart")


def test_the_url_guard_refuses_a_loopback_target_when_private_addresses_are_off(
    tmp_path: Path, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f'channels:\n  chat: {{type: apprise, url: "{json_url(http_server)}"}}\n', encoding="utf-8"
    )
    config = load_config(str(path), {})
    rt = Runtime(config, redis=None)  # type: ignore[arg-type]  # sending needs no Redis
    match = AlertMatch("deepseek", ("DeepSeek",), ("chat",))
    (delivery,) = deliveries_for(Classified(commands.sample_item(), (), (match,)), rt.clock())
    with pytest.raises(DeliveryError, match="loopback address"):
        channels.send(rt, delivery)
    # The guard inside Apprise's own connections (redirects, DNS answers): refused there too.
    with apprise_send._sending(allow_private=False), pytest.raises(requests.ConnectionError):
        requests.get(http_server.url("/hook"), timeout=3)
    assert http_server.received("/hook") == []
    # Other threads' and other code's connections are left alone.
    assert requests.get(http_server.url("/hook"), timeout=3).status_code == 200


def test_a_worker_process_sends_side_by_side_retries_with_one_id_and_logs_no_token(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A real `newswatch worker`: its sender threads send through Apprise at once, each reading
    only the failures it caused; every item's first try meets a 500."""
    from tests.conftest import stop_processes, wait_for
    from tests.integration.test_delivery_concurrency import idle, runtime, start_worker, stories, write_config
    from worker.adapters import rqcompat
    from worker.polling import poll_feed

    tries: dict[str, int] = {}

    def first_fails(request):  # type: ignore[no-untyped-def]
        with http_server.lock:
            tries[request.headers["webhook-id"]] = tries.get(request.headers["webhook-id"], 0) + 1
            first = tries[request.headers["webhook-id"]] == 1
        return Response(b"busy", 500) if first else Response(b"ok")

    path = f"/hook/{TOKEN}"
    http_server.routes[path] = first_fails
    http_server.routes["/feed"] = Response(rss(stories(8)))
    body = f"""
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [chat]}}
channels:
  chat: {{type: apprise, url: "{json_url(http_server, path, secret=True)}", concurrency: 4}}
"""
    rt = runtime(write_config(tmp_path, redis_url, http_server.url("/feed"), body, "concurrency: 4"))
    worker = start_worker(Path(rt.config.path), tmp_path)
    try:
        wait_for(lambda: rqcompat.live_workers(rt.redis) == 1, timeout=30)
        poll_feed(rt, rt.settings.feeds[0])
        wait_for(lambda: len(http_server.received(path)) == 16 and idle(rt), timeout=60)
    finally:
        stop_processes(worker)
    assert sorted(tries.values()) == [2] * 8  # one failed try and one accepted, per delivery
    assert all(rt.redis.get(keys.delivery_state(i)) == b"sent" for i in tries)
    titles = sorted(r.json()["title"] for r in http_server.received(path))
    assert titles == sorted(f"DeepSeek Meldung {n:04d}" for n in range(8) for _ in range(2))
    log = (tmp_path / "worker.log").read_text(encoding="utf-8")
    assert "apprise chat: JSON answered HTTP 500" in log
    assert TOKEN not in log and PASSWORD not in log


def test_a_receiver_that_drips_its_answer_cannot_hold_a_send_past_the_timeout() -> None:
    """Each byte comes well within the read timeout, the whole answer long after the timeout:
    without the send's deadline Apprise would wait for all of it and call it delivered."""
    import socket
    import threading

    from worker.core.models import Delivery

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    dripped = {"bytes": 0}

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
            for _ in range(40):  # 40 bytes, 0.25 s apart: 10 s in all, bounded
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                dripped["bytes"] += 1
                threading.Event().wait(0.25)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    item = {"title": "t", "link": "https://n.example/1", "feed": "news", "topics": [], "summary": "s"}
    payload = {"type": "newswatch.alert", "data": {"alert": "a", "matched": ["t"], "item": item}}
    try:
        with pytest.raises(DeliveryError, match="timed out after 2s"):
            apprise_send.send_apprise(
                f"json://127.0.0.1:{port}/hook", Delivery("d1", "a", "chat", payload), 2.0, True
            )
    finally:
        thread.join(timeout=15)
        listener.close()
    assert 0 < dripped["bytes"] < 40


def test_a_feed_health_event_reaches_an_apprise_ops_channel(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/feed"] = Response(b"gone", 410)  # told at once: failing for good
    http_server.routes["/hook"] = Response(b"ok")
    body = f"""
feeds:
  - {{name: börse, url: "{http_server.url("/feed")}"}}
channels:
  chat: {{type: apprise, url: "{json_url(http_server)}"}}
ops: {{channels: [chat], failing_after: 1h}}
"""
    rt = make_runtime(tmp_path, redis_url, body)
    from worker.polling import poll_feed

    assert poll_feed(rt, rt.settings.feeds[0]).status == "error"
    drain_until(rt, lambda: len(http_server.received("/hook")) == 1 and settled(rt))
    (posted,) = http_server.received("/hook")
    message = posted.json()
    assert message["title"].startswith("feed börse is failing since ")
    assert "Last error: HTTP 410 Gone: feed disabled" in message["message"]
    assert rt.redis.get(keys.delivery_state(posted.headers["webhook-id"])) == b"sent"
