"""`type: apprise` channels: config validation by key path, the URL's tokens as secrets, and the
chat message (title, Markdown or plain body) built from alert and digest payloads."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_config import load, problems, run_cli
from worker.config import AppriseChannel, address_warnings
from worker.core.chat import chat_message, markdown_link, markdown_text, plain_title

SLACK = "slack://T0AAAAAAA/B0BBBBBBB/Xq9vLm2Pz8Rt4Yw6Ua1Sb3Dc"
WORKFLOW = "workflows://prod-10.westus.logic.azure.com:443/3d6c8a1f0b2e4c7d/Sig-aP9qR2sT4uV6wX8yZ0bC2dE"


def test_an_apprise_channel_loads_with_its_options(tmp_path: Path) -> None:
    config = load(tmp_path, f'channels:\n  slack: {{type: apprise, url: "{SLACK}", concurrency: 2}}\n')
    channel = config.settings.channel("slack")
    assert isinstance(channel, AppriseChannel) and channel.url == SLACK and channel.concurrency == 2


def test_a_url_apprise_cannot_use_is_refused_by_its_key_path_without_quoting_it(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """channels:
  bad: {type: apprise, url: "nosuchservice://T0AAAA/secret-token-value"}
  short: {type: apprise, url: "slack://"}
  empty: {type: apprise}
  odd: {type: apprise, url: "slack://T0AAAAAAA/B0BBBBBBB/Xq9vLm2Pz8Rt4Yw6Ua1Sb3Dc", retries: 3}
""",
    )
    text = "\n".join(found)
    assert any(p.startswith("channels.bad.url: not an Apprise URL") for p in found), found
    assert any(p.startswith("channels.short.url: not an Apprise URL") for p in found), found
    assert "channels.empty.url: Field required" in found
    assert "channels.odd.retries: unknown key" in found
    assert "secret-token-value" not in text and "Xq9vLm2Pz8Rt4Yw6Ua1Sb3Dc" not in text


def test_check_config_names_a_bad_apprise_url_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('channels:\n  chat: {type: apprise, url: "slack://only-one-token-here"}\n')
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "channels.chat.url: not an Apprise URL" in result.stderr
    assert "only-one-token-here" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_an_unknown_channel_type_lists_apprise(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "channels:\n  x: {type: carrier-pigeon}\n")
    assert found.startswith("channels.x: unknown channel type") and "apprise" in found


def test_every_token_of_an_apprise_url_is_a_secret(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""channels:
  slack: {{type: apprise, url: "{SLACK}"}}
  teams: {{type: apprise, url: "{WORKFLOW}"}}
  own: {{type: apprise, url: "jsons://bot:pw-Qx81Lm0Zr7Tk@hooks.example.org/in/9f8e7d6c5b4a39281706"}}
""",
    )
    # Apprise sends Slack's tokens in a URL of its own (hooks.slack.com/services/T/B/X): each
    # token is redacted on its own, wherever it shows up.
    line = "POST https://hooks.slack.com/services/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 failed"
    redacted = config.redact(line)
    assert "T0AAAAAAA" not in redacted and "Xq9vLm2Pz8Rt4Yw6Ua1Sb3Dc" not in redacted
    assert "hooks.slack.com" in redacted  # the service's own host is no secret
    assert config.redact(SLACK) == "***"
    teams = config.redact(f"{WORKFLOW} and workflow 3d6c8a1f0b2e4c7d sig Sig-aP9qR2sT4uV6wX8yZ0bC2dE")
    assert "3d6c8a1f0b2e4c7d" not in teams and "Sig-aP9qR2sT4uV6wX8yZ0bC2dE" not in teams
    own = config.redact("POST https://hooks.example.org/in/9f8e7d6c5b4a39281706 (pw-Qx81Lm0Zr7Tk)")
    assert "9f8e7d6c5b4a39281706" not in own and "pw-Qx81Lm0Zr7Tk" not in own


def test_a_loopback_apprise_target_is_warned_about_while_private_addresses_are_off(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""channels:
  local: {{type: apprise, url: "ntfy://127.0.0.1:8080/alerts"}}
  slack: {{type: apprise, url: "{SLACK}"}}
""",
    )
    (warning,) = address_warnings(config.settings)  # Slack's tokens are no host to look up
    assert warning.startswith("channels.local.url: a loopback address")


# --- the message ---------------------------------------------------------------------------------


def alert_payload(**item: object) -> dict[str, object]:
    base = {
        "id": "i1",
        "feed": "heise",
        "title": "DeepSeek R2 verschoben",
        "link": "https://n.example/1",
        "published": "2025-08-15T13:51:00Z",
        "summary": "DeepSeek kehrt zu Nvidia zurück.",
        "topics": ["KI", "Halbleiter"],
    }
    return {
        "type": "newswatch.alert",
        "data": {"alert": "deepseek", "matched": ["DeepSeek"], "item": {**base, **item}},
    }


def test_an_alert_message_has_title_summary_link_feed_topics_and_matches() -> None:
    title, body = chat_message(alert_payload())
    assert title == "DeepSeek R2 verschoben"
    assert body == (
        "DeepSeek kehrt zu Nvidia zurück.\n\n<https://n.example/1>\n\n"
        "_heise · topics: KI, Halbleiter · matched: DeepSeek_"
    )
    title, plain = chat_message(alert_payload(), markdown=False)
    assert plain == (
        "DeepSeek kehrt zu Nvidia zurück.\n\nhttps://n.example/1\n\nheise · topics: KI, Halbleiter · matched: DeepSeek"
    )


def test_feed_text_cannot_make_markup_links_or_mentions() -> None:
    hostile = alert_payload(
        title="@everyone **R2** [klick](https://evil.example)",
        summary="# Head ![pixel](https://track.example/p.gif) <b>x</b> `code` ~~s~~ | a |",
        link="javascript:alert(1)",
        topics=["_KI_"],
    )
    title, body = chat_message(hostile)
    assert title == "@\u200beveryone **R2** [klick](https://evil.example)"  # a title field is plain text
    summary = r"\# Head !\[pixel\](https://track.example/p.gif) \<b\>x\</b\> \`code\` \~\~s\~\~ \| a \|"
    assert body.split("\n\n")[0] == summary
    assert "javascript" not in body
    assert r"\_KI\_" in body
    assert markdown_text("1. Mai") == r"1\. Mai" and markdown_text("- x") == r"\- x"
    assert markdown_text("ping @here") == "ping @\u200bhere"
    # "_" inside a word is no emphasis: news_de stays readable where backslashes show (Slack)
    assert markdown_text("news_de snake_case") == "news_de snake_case"
    assert markdown_text("_KI_ __init__") == r"\_KI\_ \_\_init\_\_"


def test_a_link_cannot_break_out_of_its_autolink() -> None:
    assert markdown_link("https://n.example/a b>c\n") == "<https://n.example/a%20b%3Ec%0A>"
    assert markdown_link("ftp://n.example/x") == "" and markdown_link(None) == ""


def test_a_title_is_one_line_and_capped() -> None:
    assert plain_title("a\nb\u2028c") == "a b c"
    assert len(plain_title("x" * 1000)) == 250


def test_a_digest_message_lists_every_item_with_its_link() -> None:
    entries = [
        {
            "matched": ["DeepSeek"],
            "item": alert_payload(title=f"Meldung {n}", link=f"https://n.example/{n}")["data"]["item"],
        }  # type: ignore[index]
        for n in range(3)
    ]
    payload = {"type": "newswatch.digest", "data": {"alert": "deepseek", "count": 3, "items": entries}}
    title, body = chat_message(payload)
    assert title == "3 alerts for deepseek"
    lines = body.split("\n")
    assert lines[0] == "- **Meldung 0** <https://n.example/0>  "
    assert lines[1] == "  _heise · topics: KI, Halbleiter · matched: DeepSeek_"
    assert len(lines) == 6
    title, plain = chat_message(payload, markdown=False)
    assert plain.split("\n")[:2] == [
        "- Meldung 0 https://n.example/0",
        "  heise · topics: KI, Halbleiter · matched: DeepSeek",
    ]
    one = {"type": "newswatch.digest", "data": {"alert": "deepseek", "count": 1, "items": entries[:1]}}
    assert chat_message(one)[0] == "1 alert for deepseek"


def test_a_long_digest_counts_what_it_does_not_list() -> None:
    item = alert_payload()["data"]["item"]  # type: ignore[index]
    payload = {
        "type": "newswatch.digest",
        "data": {"alert": "a", "items": [{"matched": [], "item": item}] * 60},
    }
    title, body = chat_message(payload)
    assert title == "60 alerts for a"
    assert body.endswith("- … and 10 more") and body.count("**DeepSeek R2 verschoben**") == 50


def test_an_item_with_only_a_title_still_has_a_body() -> None:
    """Apprise sends nothing without a body."""
    bare = {
        "type": "newswatch.alert",
        "data": {"alert": "a", "matched": [], "item": {"title": "Nur *Titel*"}},
    }
    assert chat_message(bare) == ("Nur *Titel*", r"Nur \*Titel\*")
    assert chat_message(bare, markdown=False) == ("Nur *Titel*", "Nur *Titel*")
    empty = {"type": "newswatch.digest", "data": {"alert": "a", "items": []}}
    assert chat_message(empty) == ("0 alerts for a", "0 alerts for a")


def test_a_feed_health_event_is_a_message_too() -> None:
    from datetime import UTC, datetime

    from worker.core.ops import FAILING, FeedEvent

    at = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    event = FeedEvent(FAILING, "börse", "failing", at, at, error="HTTP 500 <script>", failures=3)
    title, body = chat_message(event.payload())
    assert title == "feed börse is failing since 2026-11-29T08:00:00Z"
    assert body == "3 polls in a row failed since 2026-11-29T08:00:00Z.\n\nLast error: HTTP 500 \\<script\\>"
