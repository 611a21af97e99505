"""Delivery you can trust: misbehaving webhook receivers, real SMTP servers, digests, caps,
claims and replays. Each test asserts exactly what the receiver got."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from standardwebhooks import Webhook

from tests.conftest import LocalServer, Request, Response, rss
from tests.integration.helpers import drain, drain_until, flush_held_digest, make_runtime, meldung, settled
from tests.integration.mail_servers import RecordingHandler, start_mail_server
from worker import commands, jobs
from worker.adapters import keys
from worker.core.models import Delivery
from worker.delivery import deliver, deliver_new
from worker.polling import poll_feed
from worker.runtime import Runtime

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def setup(
    tmp_path: Path,
    redis_url: str,
    server: LocalServer,
    items: list[dict[str, str]],
    alert: str = "",
    channels: str = "",
) -> Runtime:
    server.routes["/feed"] = Response(rss(items))
    alert = alert or "{name: deepseek, query: DeepSeek, channels: [hook]}"
    body = f"""
feeds:
  - {{name: news, url: "{server.url("/feed")}"}}
alerts:
  - {alert}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}", secret: "{SECRET}"}}
{channels}
"""
    return make_runtime(tmp_path, redis_url, body)


ONE = [{"title": "DeepSeek R2 verschoben", "guid": "1", "link": "https://n.example/1"}]


def verified(server: LocalServer) -> list[dict]:  # type: ignore[type-arg]
    return [Webhook(SECRET).verify(r.body, r.headers) for r in server.received("/hook")]


def test_429_retry_after_is_honoured(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    answers = iter([Response(status=429, headers={"Retry-After": "3"}), Response(b"ok")])
    http_server.routes["/hook"] = lambda request: next(answers)
    rt = setup(tmp_path, redis_url, http_server, ONE)
    now = rt.clock()
    rt.clock = lambda: now  # the retry's time is decided from the runtime's clock
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    (first,) = http_server.received("/hook")
    (held,) = ScheduledJobRegistry(queue=rt.deliveries_queue).get_job_ids()
    retry_at = rt.redis.zscore(ScheduledJobRegistry(queue=rt.deliveries_queue).key, held)
    assert retry_at == now.timestamp() + 3  # the receiver's wish, not the configured 1 s
    drain_until(rt, lambda: len(http_server.received("/hook")) == 2)
    _, second = http_server.received("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == held
    assert len(verified(http_server)) == 2


def test_410_stops_at_once_and_replay_failed_sends_with_the_original_id(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(status=410)
    rt = setup(tmp_path, redis_url, http_server, ONE)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)  # the first try meets the 410 and fails the delivery for good at once
    (gone,) = http_server.received("/hook")
    registry = FailedJobRegistry(queue=rt.deliveries_queue)
    (job_id,) = registry.get_job_ids()
    job = rt.deliveries_queue.fetch_job(job_id)
    assert job is not None and "HTTP 410 Gone" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]

    http_server.routes["/hook"] = Response(b"ok")
    assert commands.replay_failed(rt.config, "other-channel") == 2  # no such channel: say so
    assert commands.replay_failed(rt.config, "console") == 0
    assert registry.count == 1  # another channel's replay leaves it alone
    assert commands.replay_failed(rt.config, "hook") == 0
    drain(rt)
    _, replayed = http_server.received("/hook")
    assert replayed.headers["webhook-id"] == gone.headers["webhook-id"] == job_id
    assert registry.count == 0
    Webhook(SECRET).verify(replayed.body, replayed.headers)


def test_redirects_are_not_followed(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    http_server.routes["/hook"] = Response(status=301, headers={"Location": http_server.url("/elsewhere")})
    http_server.routes["/elsewhere"] = Response(b"ok")
    rt = setup(tmp_path, redis_url, http_server, ONE)
    poll_feed(rt, rt.settings.feeds[0])
    drain_until(rt, lambda: FailedJobRegistry(queue=rt.deliveries_queue).count == 1)
    assert len(http_server.received("/hook")) == 3  # 1 try + 2 retries (test config), never followed
    assert http_server.received("/elsewhere") == []


def test_slow_receiver_times_out_and_is_retried(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    calls = {"n": 0}

    def slow_then_fast(request):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(4)  # beyond delivery.timeout (3s in the test config)
        return Response(b"ok")

    http_server.routes["/hook"] = slow_then_fast
    rt = setup(tmp_path, redis_url, http_server, ONE)
    poll_feed(rt, rt.settings.feeds[0])
    drain_until(rt, lambda: len(http_server.received("/hook")) == 2 and settled(rt))
    hooks = http_server.received("/hook")
    assert len(hooks) == 2 and hooks[0].headers["webhook-id"] == hooks[1].headers["webhook-id"]
    assert rt.redis.get(keys.delivery_state(hooks[0].headers["webhook-id"])) == b"sent"


def test_connection_reset_is_retried(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    accepted = {"n": 0}

    def reset_twice_then_proxy() -> None:
        while accepted["n"] < 2:
            conn, _ = listener.accept()
            accepted["n"] += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()  # RST

    threading.Thread(target=reset_twice_then_proxy, daemon=True).start()
    http_server.routes["/feed"] = Response(rss(ONE))
    body = f"""
feeds:
  - {{name: news, url: "{http_server.url("/feed")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [flaky]}}
channels:
  flaky: {{type: webhook, url: "http://127.0.0.1:{port}/hook"}}
"""
    rt = make_runtime(tmp_path, redis_url, body)
    poll_feed(rt, rt.settings.feeds[0])
    drain_until(rt, lambda: FailedJobRegistry(queue=rt.deliveries_queue).count == 1)
    assert accepted["n"] == 2
    listener.close()
    # 3 tries in all: the third found nothing listening; all of it is in the failed registry
    job = rt.deliveries_queue.fetch_job(FailedJobRegistry(queue=rt.deliveries_queue).get_job_ids()[0])
    assert "DeliveryError" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]


def _the_delivery(rt: Runtime) -> Delivery:
    """The one delivery the ONE feed causes, rebuilt the way the worker builds it (same id)."""
    from tests.conftest import feed_items
    from worker.core.render import deliveries_for
    from worker.core.rules import classify

    (item,) = feed_items("news", rss(ONE), rt.settings.feeds[0].url)
    (delivery,) = deliveries_for(classify(item, rt.config.rules), rt.clock())
    return delivery


def test_a_delivery_job_run_twice_sends_once(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    rt = setup(tmp_path, redis_url, http_server, ONE)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)  # the batch job; its worker makes the first try itself
    assert len(http_server.received("/hook")) == 1
    delivery = _the_delivery(rt)
    assert delivery.delivery_id == http_server.received("/hook")[0].headers["webhook-id"]
    assert deliver(rt, delivery) == "already delivered"
    assert rt.redis.hget(keys.METRICS_DELIVERIES, "deepseek\x1fhook\x1fdelivered") == b"1"
    with rt.redis.pipeline() as pipe:  # a replayed or re-run job for the same delivery
        rt.outbox.enqueue(pipe, [delivery])
        pipe.execute()
    drain(rt)
    assert len(http_server.received("/hook")) == 1


def test_digest_collects_a_window_into_one_message(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    items = [meldung(n) for n in range(3)]
    rt = setup(
        tmp_path,
        redis_url,
        http_server,
        items,
        alert="{name: deepseek, query: DeepSeek, channels: [hook], digest: 3s}",
    )
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert http_server.received("/hook") == []
    assert ScheduledJobRegistry(queue=rt.deliveries_queue).count == 1
    drain_until(rt, lambda: len(http_server.received("/hook")) == 1 and settled(rt), timeout=20)
    (payload,) = verified(http_server)
    assert payload["type"] == "newswatch.digest"
    assert payload["data"]["alert"] == "deepseek" and payload["data"]["count"] == 3
    assert sorted(e["item"]["title"] for e in payload["data"]["items"]) == [
        f"DeepSeek Meldung {n}" for n in range(3)
    ]
    assert all(e["matched"] == ["DeepSeek"] for e in payload["data"]["items"])


def test_a_second_flush_of_the_same_window_sends_what_came_after_the_first(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A batch that began before the window's end commits after its flush: its items land in the
    emptied buffer and the flush runs again for the same window. That digest is a new one, not
    the one already sent (same window, other items): nothing held is lost."""
    http_server.routes["/hook"] = Response(b"ok")
    first = [meldung(n) for n in range(2)]
    rt = setup(
        tmp_path, redis_url, http_server, first, alert="{name: deepseek, query: DeepSeek, channels: [hook], digest: 1h}"
    )  # fmt: skip
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    flush = flush_held_digest(rt)
    drain(rt)
    late = [*first, {"title": "DeepSeek Meldung spät", "guid": "late", "link": "https://n.example/late"}]
    http_server.routes["/feed"] = Response(rss(late))
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    jobs.flush_digest(*flush)  # the same window's end, run again
    drain(rt)
    payloads = verified(http_server)
    assert [p["data"]["count"] for p in payloads] == [2, 1]
    assert payloads[1]["data"]["items"][0]["item"]["title"] == "DeepSeek Meldung spät"
    ids = [r.headers["webhook-id"] for r in http_server.received("/hook")]
    assert len(set(ids)) == 2


def test_max_per_hour_folds_the_excess_into_a_digest(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    items = [meldung(n) for n in range(5)]
    rt = setup(
        tmp_path,
        redis_url,
        http_server,
        items,
        alert="{name: deepseek, query: DeepSeek, channels: [hook], max_per_hour: 2}",
    )
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert len(http_server.received("/hook")) == 2  # immediate, up to the cap
    assert rt.redis.llen(keys.digest_buffer("deepseek", "hook")) == 3  # nothing dropped
    flush_held_digest(rt)  # what RQ runs at the end of the hour
    drain(rt)
    payloads = verified(http_server)
    assert [p["type"] for p in payloads] == ["newswatch.alert", "newswatch.alert", "newswatch.digest"]
    titles = {p["data"]["item"]["title"] for p in payloads[:2]} | {
        e["item"]["title"] for e in payloads[2]["data"]["items"]
    }
    assert titles == {f"DeepSeek Meldung {n}" for n in range(5)}


# --- email ---------------------------------------------------------------------------------------

EVIL_TITLE = "DeepSeek\r\nBcc: victim@example.org\r\nX-Injected: 1 =?utf-8?q?Subject:_x?= \u2028 end\x00"


def email_setup(
    tmp_path: Path, redis_url: str, server: LocalServer, smtp_yaml: str, title: str = "DeepSeek R2"
) -> Runtime:
    items = [{"title": title.replace("&", "&amp;").replace("<", "&lt;"), "guid": "1", "link": "https://n.example/1",
              "description": "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src='http://track.example/p.gif'&gt;"
              "&lt;a href='javascript:alert(2)'&gt;klick&lt;/a&gt; DeepSeek"}]  # fmt: skip
    channels = f"""  mail:
    type: email
    to: [ops@example.org, desk@example.org]
    from: newswatch@example.org
    smtp: {smtp_yaml}"""
    return setup(
        tmp_path,
        redis_url,
        server,
        items,
        alert="{name: deepseek, query: DeepSeek, channels: [mail]}",
        channels=channels,
    )


def test_email_plain_smtp_with_hostile_title_and_html(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    mail = start_mail_server("plain", tmp_path)
    try:
        rt = email_setup(
            tmp_path,
            redis_url,
            http_server,
            f"{{host: 127.0.0.1, port: {mail.port}, starttls: false}}",
            EVIL_TITLE,
        )
        poll_feed(rt, rt.settings.feeds[0])
        drain(rt)
        (received,) = mail.handler.received
    finally:
        mail.stop()
    assert sorted(received.recipients) == ["desk@example.org", "ops@example.org"]
    message = received.message
    assert sorted(message.keys()) == sorted(
        ["Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"]
    )
    subject = str(message["Subject"])
    assert subject.startswith("[newswatch] deepseek: DeepSeek Bcc: victim@example.org X-Injected: 1")
    assert "\n" not in subject and "\r" not in subject and "\x00" not in subject and "\u2028" not in subject
    assert message["Message-ID"].startswith("<msg_")
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html and "<img" not in html and "javascript:" not in html
    # The feed's script is dropped with its content; the text around it stays, as text.
    assert "alert(" not in html and "alert(" not in text and "klick <mark>DeepSeek</mark>" in html
    assert 'href="https://n.example/1"' in html
    assert "https://n.example/1" in text


def test_email_starttls_verified_with_login(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    mail = start_mail_server("starttls", tmp_path)
    try:
        smtp = (
            f"{{host: 127.0.0.1, port: {mail.port}, starttls: true, tls_verify: true,"
            f" ca_file: '{mail.ca_file}', username: alerts, password: s3cret}}"
        )
        rt = email_setup(tmp_path, redis_url, http_server, smtp)
        poll_feed(rt, rt.settings.feeds[0])
        drain(rt)
        assert len(mail.handler.received) == 1
        # Without our CA the certificate is not trusted: nothing is sent, the delivery is retried.
        rt2 = email_setup(tmp_path, redis_url, http_server, smtp.replace(f" ca_file: '{mail.ca_file}',", ""))
        rt2.redis.flushall()
        poll_feed(rt2, rt2.settings.feeds[0])
        drain(rt2)
        assert len(mail.handler.received) == 1
        assert ScheduledJobRegistry(queue=rt2.deliveries_queue).count == 1
    finally:
        mail.stop()


def test_email_implicit_tls(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    mail = start_mail_server("implicit", tmp_path)
    try:
        login = "username: alerts, password: s3cret"
        smtp = f"{{host: 127.0.0.1, port: {mail.port}, ssl: true, ca_file: '{mail.ca_file}', {login}}}"
        rt = email_setup(tmp_path, redis_url, http_server, smtp)
        poll_feed(rt, rt.settings.feeds[0])
        drain(rt)
        assert len(mail.handler.received) == 1
    finally:
        mail.stop()


@pytest.mark.parametrize(
    ("handler", "sent", "failed"),
    [
        (RecordingHandler(refuse_data=["421 Try again later"]), 1, 0),
        (RecordingHandler(refuse_rcpt="550 No such user"), 0, 1),
    ],
    ids=["421-then-ok", "550"],
)
def test_smtp_4xx_is_retried_5xx_is_permanent(
    tmp_path: Path,
    redis_url: str,
    http_server: LocalServer,
    handler: RecordingHandler,
    sent: int,
    failed: int,
) -> None:
    mail = start_mail_server("plain", tmp_path, handler)
    try:
        rt = email_setup(
            tmp_path, redis_url, http_server, f"{{host: 127.0.0.1, port: {mail.port}, starttls: false}}"
        )
        poll_feed(rt, rt.settings.feeds[0])
        drain_until(rt, lambda: settled(rt), timeout=20)
        assert len(mail.handler.received) == sent
        assert FailedJobRegistry(queue=rt.deliveries_queue).count == failed
    finally:
        mail.stop()


def test_a_claim_left_by_a_dead_worker_delays_but_does_not_use_up_retries(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    rt = setup(tmp_path, redis_url, http_server, ONE)
    delivery_id = _the_delivery(rt).delivery_id
    # A worker died mid-send: its claim stays for its lease (here 4 s, longer than all retries).
    rt.redis.set(keys.delivery_state(delivery_id), "sending:dead-worker", px=4000)
    claim_at_send: list[bytes | None] = []

    def receiver(request: Request) -> Response:
        claim_at_send.append(rt.redis.get(keys.delivery_state(delivery_id)))
        return Response(b"ok")

    http_server.routes["/hook"] = receiver
    with rt.redis.pipeline() as pipe:  # its job comes due (a retry, or the held job of the dead worker)
        rt.outbox.enqueue(pipe, [_the_delivery(rt)])
        pipe.execute()
    drain_until(rt, lambda: len(http_server.received("/hook")) == 1, timeout=20)
    # Sent only once the dead worker's claim had lapsed, under a claim of its own.
    assert claim_at_send[0] is not None and claim_at_send[0] != b"sending:dead-worker"
    assert FailedJobRegistry(queue=rt.deliveries_queue).count == 0
    assert rt.redis.get(keys.delivery_state(delivery_id)) == b"sent"


def test_a_batch_claim_tells_free_sent_and_held_deliveries_apart(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    rt = setup(tmp_path, redis_url, http_server, ONE)
    free, sent, held = (Delivery(f"d-{n}", "deepseek", "hook", {}) for n in ("free", "sent", "held"))
    rt.redis.set(keys.delivery_state("d-sent"), b"sent")
    rt.redis.set(keys.delivery_state("d-held"), b"sending:another-worker", px=60_000)  # claims have leases
    token, gone, busy = rt.outbox.claim_many([free, sent, held], timedelta(seconds=60))
    assert token and rt.redis.get(keys.delivery_state("d-free")) == f"sending:{token}".encode()
    assert gone is None and busy == ""
    assert rt.redis.get(keys.delivery_state("d-held")) == b"sending:another-worker"  # left alone
    # Given back unsent, in one go: ours are free again, the other worker's claim stays.
    rt.outbox.release_many([(free, token), (held, "not-ours")])
    assert rt.redis.get(keys.delivery_state("d-free")) is None
    assert rt.redis.get(keys.delivery_state("d-held")) == b"sending:another-worker"


def test_a_first_try_finds_a_delivery_already_sent_and_cancels_its_held_job(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    rt = setup(tmp_path, redis_url, http_server, ONE)
    http_server.routes["/hook"] = Response(b"ok")
    delivery = Delivery("d-sent-before", "deepseek", "hook", {"type": "alert", "data": {}})
    with rt.redis.pipeline() as pipe:
        pipe.multi()
        rt.outbox.enqueue(pipe, [delivery], hold_until=rt.clock() + timedelta(minutes=1))
        pipe.execute()
    rt.redis.set(keys.delivery_state("d-sent-before"), b"sent")  # its job got there first
    deliver_new(rt, [delivery])
    assert http_server.received("/hook") == []
    assert ScheduledJobRegistry(queue=rt.deliveries_queue).get_job_ids() == []


def test_waiting_deliveries_keep_their_claims_and_holds_and_go_back_due_at_once(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """While a delivery waits in a worker's sender, neither its claim lapses nor its held job
    runs; a stopping worker gives it back, due now, for any worker."""
    rt = setup(tmp_path, redis_url, http_server, ONE)
    delivery = Delivery("d-waits", "deepseek", "hook", {"type": "alert", "data": {}})
    now = rt.clock()
    with rt.redis.pipeline() as pipe:
        pipe.multi()
        rt.outbox.enqueue(pipe, [delivery], hold_until=now + rt.outbox.hold)
        pipe.execute()
    (token,) = rt.outbox.claim_many([delivery], timedelta(seconds=2))
    registry = ScheduledJobRegistry(queue=rt.deliveries_queue)
    state = keys.delivery_state("d-waits")
    later = now + timedelta(minutes=5)
    rt.outbox.keep([(delivery, "another-workers-token")], later)
    assert rt.redis.pttl(state) <= 2000  # a claim that is not ours is left alone
    rt.outbox.keep([(delivery, token)], later)  # type: ignore[list-item]
    assert rt.redis.pttl(state) > rt.outbox.lease.total_seconds() * 1000 - 2000
    assert rt.redis.zscore(registry.key, "d-waits") == int((later + rt.outbox.hold).timestamp())
    rt.outbox.hand_back([(delivery, token)], now)  # type: ignore[list-item]
    assert rt.redis.get(state) is None
    assert rt.redis.zscore(registry.key, "d-waits") == int(now.timestamp())
    drain(rt)  # due: RQ's scheduler takes it, and it goes out
    assert [r.headers["webhook-id"] for r in http_server.received("/hook")] == ["d-waits"]
