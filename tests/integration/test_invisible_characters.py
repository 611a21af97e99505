"""Invisible characters, unusual spaces and dashes through the real pipeline (issue 19).

A real feed on 127.0.0.1 carries, for each character, one item with it inside "DeepSeek" and
inside the words of "künstliche Intelligenz", in the title (as the character itself), the
summary (HTML, as a character reference) and the categories. It is polled, the worker drains
the queues against the real Redis, and the webhook receiver sees which alerts fired, with the
item's text as the feed wrote it; normalize_mapped points each hit back at those characters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import LocalServer, RedisServer, Response, rss
from tests.integration.helpers import drain_settled, make_runtime
from worker.core.matcher import normalize_mapped
from worker.polling import poll_feed

INVISIBLE = {
    "soft-hyphen": "\u00ad",
    "zero-width-space": "\u200b",
    "zero-width-non-joiner": "\u200c",
    "zero-width-joiner": "\u200d",
    "word-joiner": "\u2060",
    "bom": "\ufeff",
    "arabic-letter-mark": "\u061c",
    "left-to-right-mark": "\u200e",
    "right-to-left-mark": "\u200f",
    "left-to-right-embedding": "\u202a",
    "right-to-left-override": "\u202e",
    "pop-directional-formatting": "\u202c",
    "first-strong-isolate": "\u2068",
    "pop-directional-isolate": "\u2069",
    "variation-selector-1": "\ufe00",
    "variation-selector-16": "\ufe0f",
    "variation-selector-17": "\U000e0100",
    "combining-grapheme-joiner": "\u034f",
    "hangul-filler": "\u3164",
    "mongolian-vowel-separator": "\u180e",
    "tag-latin-small-a": "\U000e0061",
}
SPACES = {
    "no-break-space": "\u00a0",
    "narrow-no-break-space": "\u202f",
    "figure-space": "\u2007",
    "ideographic-space": "\u3000",
}
DASHES = {
    "non-breaking-hyphen": "\u2011",
    "en-dash": "\u2013",
    "em-dash": "\u2014",
    "hyphen": "\u2010",
}
Received = dict[str, list[dict[str, Any]]]
# One rule reports every field term an item matched (its payload lists them), two more check
# topics: one term-matched, one a category whose name holds the character.
WORD_TERMS = ["title:DeepSeek", "summary:DeepSeek", "category:DeepSeek"]
PHRASE_TERMS = [
    'title:"künstliche Intelligenz"',
    'summary:"künstliche Intelligenz"',
    'category:"künstliche Intelligenz"',
]

# Every item is the same text but for one invisible character, which matching ignores: with
# stories on they would be one story and alert once. Here each item is checked on its own.
CONFIG = """
stories: off
feeds:
  - {{name: news, url: "{url}"}}
topics:
  KI: ["künstliche Intelligenz"]
alerts:
  - {{name: fields, query: '{fields}', channels: [hook]}}
  - {{name: ki-topic, query: Meldung, topics: [KI], channels: [hook]}}
  - {{name: category-topic, query: Meldung, topics: [DeepSeek], channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{hook}"}}
"""


def words(name: str, char: str) -> tuple[str, str]:
    """The word and phrase of one item: the character inside the words, or (a space or dash)
    between them."""
    if name in INVISIBLE:
        return f"Deep{char}Seek", f"künst{char}liche{char} Intel{char}ligenz"
    return f"Deep{char}Seek", f"künstliche{char}Intelligenz"


def feed_item(name: str, char: str) -> dict[str, str]:
    word, phrase = words(name, char)
    # The summary is HTML in the XML: its characters arrive as references (&shy; as its name).
    reference = "&amp;shy;" if char == "\u00ad" else f"&amp;#x{ord(char):x};"
    summary_word, summary_phrase = (part.replace(char, reference) for part in words(name, char))
    return {
        "title": f"{name}: {word} Meldung zu {phrase}",
        "link": f"https://news.example.org/{name}",
        "guid": name,
        "description": f"&lt;p&gt;{summary_word} und {summary_phrase}&lt;/p&gt;",
        "category": f"Finanzen / {word} / {phrase}",
    }


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Received]:
    """Each item's guid -> the alert payloads the webhook receiver got for it; the pipeline runs
    once for all the tests of this module."""
    redis.Redis.from_url(redis_server.url).flushall()
    server = LocalServer()
    try:
        yield _run_pipeline(tmp_path_factory.mktemp("invisible"), redis_server.url, server)
    finally:
        server.close()


def _run_pipeline(tmp_path: Path, redis_url: str, http_server: LocalServer) -> Received:
    every = {**INVISIBLE, **SPACES, **DASHES}
    items = [feed_item(name, char) for name, char in every.items()]
    items.append(
        {  # no invisible character: words apart stay apart
            "title": "control: Deep Seek Meldung zu künstliche Intelli genz",
            "link": "https://news.example.org/control",
            "guid": "control",
            "description": "Deep Seek",
            "category": "Deep Seek",
        }
    )
    http_server.routes["/feed.rss"] = Response(rss(items), headers={"Content-Type": "application/rss+xml"})
    http_server.routes["/hook"] = Response(b"ok")
    fields = " OR ".join(WORD_TERMS + PHRASE_TERMS).replace("'", "''")
    body = CONFIG.format(url=http_server.url("/feed.rss"), hook=http_server.url("/hook"), fields=fields)
    rt = make_runtime(tmp_path, redis_url, body)
    assert poll_feed(rt, rt.settings.feeds[0]).enqueued == len(items)
    drain_settled(rt)
    by_item: Received = {name: [] for name in [*every, "control"]}
    for request in http_server.received("/hook"):
        data = request.json()["data"]
        by_item[data["item"]["title"].split(":")[0]].append(data)
    return by_item


def alerts(payloads: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Alert -> the terms it matched."""
    return {p["alert"]: set(p["matched"]) for p in payloads}


@pytest.mark.parametrize("name", INVISIBLE)
def test_an_invisible_character_in_every_field_matches_as_if_absent(received: Received, name: str) -> None:
    assert alerts(received[name]) == {
        "fields": {*WORD_TERMS, *PHRASE_TERMS},
        "ki-topic": {"Meldung"},
        "category-topic": {"Meldung"},
    }
    word, phrase = words(name, INVISIBLE[name])
    item = received[name][0]["item"]
    # The payload shows the text as the feed wrote it, invisible characters included ...
    assert item["title"] == f"{name}: {word} Meldung zu {phrase}"
    assert item["summary"] == f"{word} und {phrase}"
    assert item["categories"] == ["Finanzen", word, phrase]
    # ... and a hit in the normalised text maps back onto exactly those characters.
    for text in (item["title"], item["summary"], *item["categories"][1:]):
        mapped = normalize_mapped(text)
        for found, original in (("deepseek", word), ("kuenstliche intelligenz", phrase)):
            if found in mapped.text:
                start = mapped.text.index(found)
                begin, end = mapped.original_span(start, start + len(found))
                assert text[begin:end] == original


@pytest.mark.parametrize("name", [*SPACES, *DASHES])
def test_spaces_and_dashes_separate_words(received: Received, name: str) -> None:
    """ "künstliche<space or dash>Intelligenz" is the phrase; "Deep<space or dash>Seek" is no DeepSeek."""
    assert alerts(received[name]) == {"fields": set(PHRASE_TERMS), "ki-topic": {"Meldung"}}
    char = {**SPACES, **DASHES}[name]
    word, phrase = words(name, char)
    if name in SPACES:  # the parser collapses whitespace into " " for the payload, as it always did
        word, phrase = word.replace(char, " "), phrase.replace(char, " ")
    title = received[name][0]["item"]["title"]
    assert title == f"{name}: {word} Meldung zu {phrase}"
    mapped = normalize_mapped(title)
    start = mapped.text.index("kuenstliche intelligenz")
    begin, end = mapped.original_span(start, start + len("kuenstliche intelligenz"))
    assert title[begin:end] == phrase


def test_words_set_apart_by_real_spaces_match_nothing(received: Received) -> None:
    assert received["control"] == []
