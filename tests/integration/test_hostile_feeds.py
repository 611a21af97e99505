"""Every bad input of SPEC §7 gets a clear error in status and the log, while every other feed
goes on and nothing is alerted twice or lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, LocalServer, Response, rss
from tests.integration.helpers import drain, make_runtime
from tests.integration.hostile import GOOD_RSS, HostileServer
from worker.adapters.net import BlockedAddressError, GuardedBackend, blocked_reason
from worker.commands import status_data
from worker.polling import poll_feed
from worker.runtime import Runtime


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


def runtime_for(
    tmp_path: Path, redis_url: str, feeds: dict[str, str], hook: str, polling: str = ""
) -> Runtime:
    lines = "\n".join(f'  - {{name: "{name}", url: "{url}"}}' for name, url in feeds.items())
    body = f"""
feeds:
{lines}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{hook}"}}
"""
    return make_runtime(
        tmp_path, redis_url, body, polling=polling or "timeout: 2s, max_bytes: 1MB, max_redirects: 4"
    )


def errors(rt: Runtime) -> dict[str, str | None]:
    return {f["name"]: f["error"] for f in status_data(rt)["feeds"]}


def test_socket_level_misbehaviour(
    tmp_path: Path, redis_url: str, hostile: HostileServer, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    http_server.routes["/good"] = Response(GOOD_RSS)
    names = ["drip-body", "drip-headers", "silent", "huge", "gzip-bomb", "reset", "garbage"]
    feeds = {name: hostile.url(f"/{name}") for name in names} | {"good": http_server.url("/good")}
    rt = runtime_for(tmp_path, redis_url, feeds, http_server.url("/hook"))
    with ThreadPoolExecutor(max_workers=len(feeds)) as pool:  # side by side, as the scheduler polls
        list(pool.map(lambda feed: poll_feed(rt, feed), rt.settings.feeds))
    drain(rt)
    assert errors(rt) == {
        "drip-body": "timed out after 2s",
        "drip-headers": "timed out after 2s",
        "silent": "timed out after 2s",
        "huge": "response larger than 1MB",
        "gzip-bomb": "response larger than 1MB",
        "reset": "server broke the HTTP protocol or closed the connection early",
        "garbage": "server broke the HTTP protocol or closed the connection early",
        "good": None,
    }
    # The deadline is total: a drip of one byte a second is cut off after about two bytes, not
    # read for the minute it would go on (a per-read timeout would never fire).
    assert 0 < hostile.dripped["/drip-body"] <= 8 and 0 < hostile.dripped["/drip-headers"] <= 8, (
        hostile.dripped
    )
    assert len(http_server.received("/hook")) == 1  # the good feed's DeepSeek item, umlauts and all


def test_lying_content_length_reads_only_what_was_announced(
    tmp_path: Path, redis_url: str, hostile: HostileServer, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    rt = runtime_for(tmp_path, redis_url, {"liar": hostile.url("/lying-length")}, http_server.url("/hook"))
    assert poll_feed(rt, rt.settings.feeds[0]).status == "new"
    drain(rt)
    (hook,) = http_server.received("/hook")
    assert hook.json()["data"]["item"]["title"] == "Grüße aus München: DeepSeek"


def test_http_level_problems(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    s.routes["/loop"] = Response(status=302, headers={"Location": "/loop"})
    for n in range(10):
        s.routes[f"/chain{n}"] = Response(status=301, headers={"Location": f"/chain{n + 1}"})
    s.routes["/chain10"] = Response(rss([{"title": "end of chain"}]))
    s.routes["/json"] = Response(b'{"items": []}', headers={"Content-Type": "application/json"})
    s.routes["/html"] = Response(
        b"<!doctype html><html><body><p>Hi</p></body></html>",
        headers={"Content-Type": "text/html; charset=utf-8"},
    )
    s.routes["/503"] = Response(status=503, headers={"Retry-After": "3600"})
    s.routes["/403"] = Response(status=403)
    s.routes["/empty"] = Response(b"")
    feeds = {n: s.url(f"/{n}") for n in ("loop", "chain0", "json", "html", "503", "403", "empty")}
    feeds["dns"] = "http://newswatch-test.invalid/feed"
    feeds["refused"] = "http://127.0.0.1:9/feed"
    rt = runtime_for(tmp_path, redis_url, feeds, s.url("/hook"))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    found = errors(rt)
    assert found["loop"] == found["chain0"] == "too many redirects"
    assert found["json"] == "not a feed: application/json"
    assert found["html"] == "not a feed: text/html"
    assert found["503"] == "HTTP 503"
    assert found["403"] == "HTTP 403"
    assert found["empty"] is not None and found["empty"].startswith(("malformed XML", "not a feed"))
    assert found["dns"] in (
        "DNS lookup failed for newswatch-test.invalid",
        "cannot connect to newswatch-test.invalid",
    )
    assert found["refused"] == "connection refused by 127.0.0.1"
    # Retry-After: 3600 pushes the next poll an hour out, and the next scheduled run skips it.
    feed503 = next(f for f in status_data(rt)["feeds"] if f["name"] == "503")
    assert feed503["next_poll"] > status_data(rt)["feeds"][0]["last_poll"]
    assert poll_feed(rt, rt.settings.feed("503")).status == "waiting"
    assert len(s.received("/503")) == 1


def test_xml_attacks_expand_nothing_read_nothing_request_nothing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    s.routes["/secret"] = Response(b"TOP-SECRET")
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    s.routes["/bomb"] = Response(
        (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{laughs}]>'
         "<rss version='2.0'><channel><title>t</title><item><title>DeepSeek &l9;</title><guid>b</guid></item></channel></rss>").encode()
    )  # fmt: skip
    s.routes["/xxe"] = Response(
        (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY file SYSTEM "file:///etc/hostname">'
         f'<!ENTITY web SYSTEM "{s.url("/secret")}">]>'
         "<rss version='2.0'><channel><title>t</title><item><title>DeepSeek &file; &web;</title><guid>x</guid>"
         "</item></channel></rss>").encode()
    )  # fmt: skip
    rt = runtime_for(tmp_path, redis_url, {"bomb": s.url("/bomb"), "xxe": s.url("/xxe")}, s.url("/hook"))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    assert s.received("/secret") == []
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else "\0"
    for hook in s.received("/hook"):
        title = hook.json()["data"]["item"]["title"]
        assert (
            len(title) < 1000
            and "lollol" not in title
            and hostname not in title
            and "TOP-SECRET" not in title
        )
    # Both hostile feeds are read: their DeepSeek items alerted, with nothing expanded or fetched.
    alerted = {h.json()["data"]["item"]["feed"] for h in s.received("/hook")}
    assert alerted == {"bomb", "xxe"} and errors(rt) == {"bomb": None, "xxe": None}


def test_encodings_and_dates(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    item = "<item><title>{title}</title><guid>{guid}</guid><pubDate>{date}</pubDate></item>"

    def feed(prolog: str, items: str) -> str:
        return f"{prolog}<rss version='2.0'><channel><title>t</title>{items}</channel></rss>"

    latin = feed(
        "<?xml version='1.0' encoding='iso-8859-1'?>",
        item.format(title="DeepSeek: Börse in München", guid="l1", date="Fri, 15 Aug 2025 15:51:00 MESZ"),
    )
    s.routes["/latin1"] = Response(
        latin.encode("iso-8859-1"), headers={"Content-Type": "application/rss+xml"}
    )
    s.routes["/latin1-undeclared"] = Response(
        feed("", item.format(title="DeepSeek: Größe zählt", guid="u1", date="Fri, 15 Aug 2025 15:51:00 CET")).encode("iso-8859-1"),
        headers={"Content-Type": "text/xml"},
    )  # fmt: skip
    s.routes["/utf8-no-charset"] = Response(
        feed("", item.format(title="DeepSeek: Übernahme", guid="n1", date="Fri, 30 Feb 2025 10:00:00 GMT")).encode(),
        headers={"Content-Type": "text/xml"},
    )  # fmt: skip
    s.routes["/future"] = Response(
        feed("<?xml version='1.0' encoding='utf-8'?>", item.format(title="DeepSeek 2099", guid="f1", date="Thu, 01 Jan 2099 00:00:00 GMT")).encode()
    )  # fmt: skip
    feeds = {n: s.url(f"/{n}") for n in ("latin1", "latin1-undeclared", "utf8-no-charset", "future")}
    rt = runtime_for(tmp_path, redis_url, feeds, s.url("/hook"))
    for f in rt.settings.feeds:
        poll_feed(rt, f)
    drain(rt)
    got = {
        h.json()["data"]["item"]["title"]: h.json()["data"]["item"]["published"] for h in s.received("/hook")
    }
    assert got == {
        "DeepSeek: Börse in München": "2025-08-15T13:51:00Z",  # MESZ is UTC+2
        "DeepSeek: Größe zählt": "2025-08-15T14:51:00Z",  # CET is UTC+1
        "DeepSeek: Übernahme": None,  # 30 February does not exist
        "DeepSeek 2099": None,  # a date far in the future is a mistake, not news
    }


def test_identity_under_abuse(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    rt = runtime_for(
        tmp_path, redis_url, {"churn": s.url("/churn"), "reuse": s.url("/reuse")}, s.url("/hook")
    )
    stories = [{"title": f"DeepSeek {n}", "link": f"https://c.example/{n}"} for n in range(4)]
    for poll in range(3):  # new GUIDs on every poll, items reordered, one vanishing and returning
        shown = [dict(st, guid=f"p{poll}-{i}") for i, st in enumerate(stories) if not (poll == 1 and i == 2)]
        s.routes["/churn"] = Response(rss(list(reversed(shown)) if poll % 2 else shown))
        s.routes["/reuse"] = Response(
            rss([{"title": f"DeepSeek reuse {poll}", "guid": "same", "link": f"https://r.example/{poll}"}])
        )
        for feed in rt.settings.feeds:
            poll_feed(rt, feed)
        drain(rt)
    titles = sorted(h.json()["data"]["item"]["title"] for h in s.received("/hook"))
    assert titles == sorted([f"DeepSeek {n}" for n in range(4)] + [f"DeepSeek reuse {n}" for n in range(3)])
    warnings = {f["name"]: f["warning"] for f in status_data(rt)["feeds"]}
    assert warnings == {
        "churn": "GUIDs change on every poll; items are matched by their links",
        "reuse": None,
    }


def test_url_guard_refuses_internal_addresses(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    for address, reason in [
        ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"), ("100.64.0.1", "non-public (e.g. CGNAT)"),
        ("224.0.0.1", "multicast"), ("::1", "loopback"), ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
        ("fd00::1", "private"), ("0.0.0.0", "reserved"),
    ]:  # fmt: skip
        assert blocked_reason(address) == reason, address
    assert blocked_reason("93.184.216.34") is None
    with pytest.raises(BlockedAddressError):
        GuardedBackend(allow_private=False)._public_addresses("localhost", 80)

    http_server.routes["/feed"] = Response(rss([{"title": "DeepSeek"}]))
    port = http_server.httpd.server_address[1]
    feeds = {
        "loopback": http_server.url("/feed"),
        "hex": f"http://0x7f000001:{port}/feed",
        "decimal": f"http://2130706433:{port}/feed",
        "mapped": "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "name": f"http://localhost:{port}/feed",
    }
    rt = runtime_for(
        tmp_path, redis_url, feeds, "https://hooks.example/x", polling="allow_private_addresses: false"
    )
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    for name, error in errors(rt).items():
        assert error is not None and error.startswith("refused:") and "address" in error, (name, error)
    assert http_server.received("/feed") == []


def test_scheduler_memory_stays_bounded_through_bombs(
    tmp_path: Path, redis_url: str, hostile: HostileServer
) -> None:
    """Measured, not timed: the peak RSS of a `newswatch poll` process fetching bombs and huge
    bodies with max_bytes 10MB stays far below what the bodies would need."""
    config = tmp_path / "bombs.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{timeout: 20s, max_bytes: 10MB, allow_private_addresses: true}}
feeds:
  - {{name: bomb1, url: "{hostile.url("/gzip-bomb")}"}}
  - {{name: bomb2, url: "{hostile.url("/gzip-bomb")}"}}
  - {{name: huge, url: "{hostile.url("/huge")}"}}
""",
        encoding="utf-8",
    )
    probe = (
        "import resource, subprocess, sys;"
        f"r = subprocess.run([sys.executable, '-m', 'worker.cli', 'poll', '--config', {str(config)!r}], capture_output=True, text=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stdout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    ).stdout
    peak_kib = int(out.splitlines()[0])
    assert (
        "bomb1: error: response larger than 10MB" in out and "huge: error: response larger than 10MB" in out
    )
    # 200 MB would be needed to inflate a bomb; python + the libraries take ~60-80 MB on their own.
    assert peak_kib < 160_000, f"peak RSS {peak_kib} KiB"
    print(f"newswatch poll peak RSS through bombs: {peak_kib / 1024:.0f} MiB")


def test_permanent_redirects_move_the_feed_temporary_ones_do_not(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    s.routes["/old"] = Response(status=301, headers={"Location": "/older"})  # relative Location
    s.routes["/older"] = Response(status=308, headers={"Location": s.url("/new")})
    s.routes["/new"] = Response(rss([{"title": "moved for good"}]))
    s.routes["/away"] = Response(status=301, headers={"Location": "/holiday"})
    s.routes["/holiday"] = Response(status=302, headers={"Location": "/new"})
    rt = runtime_for(tmp_path, redis_url, {"moved": s.url("/old"), "away": s.url("/away")}, s.url("/hook"))
    for feed in rt.settings.feeds:
        assert poll_feed(rt, feed).status == "new"
    assert rt.feed_states.get("moved").url == s.url("/new")
    assert rt.feed_states.get("away").url is None  # a 302 on the way: the old address stays
    poll_feed(rt, rt.settings.feed("moved"), force=True)
    poll_feed(rt, rt.settings.feed("away"), force=True)
    assert len(s.received("/old")) == 1  # the moved feed is polled at its new home only
    assert len(s.received("/away")) == 2


def test_a_body_that_names_a_local_file_is_parsed_as_text_never_opened(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """feedparser treats a bytes or str argument as a file name or URL first: a feed answering
    with a path must not make us read our own disk (or /dev/zero until memory runs out)."""
    s = http_server
    s.routes["/hook"] = Response(b"ok")
    secret = tmp_path / "secret-feed.xml"
    secret.write_bytes(rss([{"title": "DeepSeek TOP-SECRET local file", "guid": "local-1"}]))
    for name, body in (("path", str(secret)), ("passwd", "/etc/passwd"), ("zero", "/dev/zero")):
        s.routes[f"/{name}"] = Response(body.encode(), headers={"Content-Type": "application/rss+xml"})
    s.routes["/good"] = Response(GOOD_RSS)
    feeds = {name: s.url(f"/{name}") for name in ("path", "passwd", "zero", "good")}
    rt = runtime_for(tmp_path, redis_url, feeds, s.url("/hook"))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    titles = [h.json()["data"]["item"]["title"] for h in s.received("/hook")]
    assert titles == ["Grüße aus München: DeepSeek"]  # only the good feed's item
    problems = errors(rt)
    assert problems["good"] is None
    assert all(problems[name] for name in ("path", "passwd", "zero")), problems
