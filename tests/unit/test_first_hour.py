"""Pure pieces behind issue 17 (the first hour): GUID churn per feed, query hints, log levels."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.text import Text

from worker.config import Settings, load_config, query_warnings
from worker.core.identity import guid_changed, seen_tag
from worker.core.query import And, Term, lowercase_operators, parse_query
from worker.logs import rq_level
from worker.tables import print_table

DATE = datetime(2025, 8, 15, 13, 51, tzinfo=UTC)


def test_guid_churn_is_a_new_guid_for_a_known_link_in_the_same_feed_only() -> None:
    first = seen_tag("eulerpool", "g1", "https://e.example/1", "T", DATE)
    assert not guid_changed(first, seen_tag("eulerpool", "g1", "https://e.example/1", "T", DATE))
    assert guid_changed(first, seen_tag("eulerpool", "g2", "https://e.example/1", "T", DATE))
    # The same story under the same or another GUID in another feed (renamed, or syndicated)
    assert not guid_changed(first, seen_tag("eulerpool-renamed", "g1", "https://e.example/1", "T", DATE))
    assert not guid_changed(first, seen_tag("other", "g2", "https://e.example/1", "T", DATE))
    # A tag written before feeds were part of it (31 bits) never counts as churn
    assert not guid_changed(12345, first) and not guid_changed(first & (2**31 - 1), first)
    assert 2**31 <= first < 2**62  # an integer Redis stores without allocating


def test_lower_case_operators_are_found_and_keep_meaning_a_word() -> None:
    assert lowercase_operators("deepseek and huawei") == ["and"]
    assert lowercase_operators("(a Or b) not c AND d") == ["Or", "not"]
    assert lowercase_operators('deepseek "and" title:or NOT x') == []  # plainly meant as words
    assert lowercase_operators('unclosed "quote') == []
    query = parse_query("deepseek and huawei")  # unchanged: three terms, "and" among them
    assert isinstance(query, And) and [t.source for t in query.operands if isinstance(t, Term)] == [
        "deepseek",
        "and",
        "huawei",
    ]


def test_query_warnings_name_the_key_and_ask() -> None:
    settings = Settings.model_validate(
        {
            "alerts": [
                {"name": "a", "query": "DeepSeek"},
                {"name": "b", "query": "deepseek and huawei and x"},
            ],
            "topics": {"KI": ["KI and AI", "(LLM or GPT)"]},  # a plain entry is a phrase: no question
        }
    )
    assert query_warnings(settings) == [
        "alerts[1].query: 'and' is searched as a word; did you mean AND? (operators are upper case; "
        'write "and" in quotes to search the word and silence this)',
        "topics.KI[1]: 'or' is searched as a word; did you mean OR? (operators are upper case; "
        'write "or" in quotes to search the word and silence this)',
    ]


def test_rq_logs_at_warning_unless_ours_is_debug() -> None:
    assert [rq_level(level) for level in ("DEBUG", "INFO", "warning", "ERROR")] == [
        "DEBUG",
        "WARNING",
        "WARNING",
        "ERROR",
    ]


def table_output(width: int, terminal: bool) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    rows = [
        [
            Text("eulerpool"),
            Text("2026-11-29T16:20:01Z"),
            Text("not a feed: text/html (see https://e.example/rss)"),
        ]
    ]
    print_table(console, "Feeds", ("feed", "last success", "problem"), rows, fold={"problem"})
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_tables_show_whole_timestamps_on_narrow_terminals_and_in_files() -> None:
    for width, terminal in [(200, True), (60, True), (30, True), (40, False)]:
        text = table_output(width, terminal)
        assert "2026-11-29T16:20:01Z" in text, (width, terminal, text)
        assert "https://e.example/rss" in text
    piped = table_output(40, False)
    assert piped.splitlines()[2].split() == [
        "eulerpool",
        "2026-11-29T16:20:01Z",
        "not",
        "a",
        "feed:",
        "text/html",
        "(see",
        "https://e.example/rss)",
    ]
    assert "┃" not in piped  # plain columns for files and pipes
    assert "┃" in table_output(200, True)


def test_make_run_s_redis_is_used_when_neither_redis_url_nor_the_file_names_one(tmp_path: Path) -> None:
    record = tmp_path / "redis.url"
    record.write_text("redis://127.0.0.1:6390/0\n")
    deferring = tmp_path / "deferring.yaml"
    deferring.write_text('redis: {url: "${REDIS_URL:-redis://localhost:6379/0}"}\n')
    silent = tmp_path / "silent.yaml"
    silent.write_text("feeds: []\n")
    literal = tmp_path / "literal.yaml"
    literal.write_text('redis: {url: "redis://redis.example.org:6379/0"}\n')

    def url(path: Path, env: dict[str, str], local: Path | None = record) -> tuple[str, str]:
        config = load_config(str(path), env, local_redis=str(local) if local else None)
        return config.settings.redis.url, config.redis_source

    made_by_run = ("redis://127.0.0.1:6390/0", f"{record}, written by `make run`")
    assert url(deferring, {}) == made_by_run
    assert url(silent, {}) == made_by_run
    assert url(literal, {}) == ("redis://redis.example.org:6379/0", "redis.url")
    assert url(deferring, {"REDIS_URL": "redis://r:1/0"}) == ("redis://r:1/0", "REDIS_URL")
    assert url(deferring, {}, tmp_path / "absent") == ("redis://localhost:6379/0", "redis.url")
    assert url(deferring, {}, None) == ("redis://localhost:6379/0", "redis.url")  # env given: hermetic
