"""Realistic German news items and the feeds that carry them, made up deterministically."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from html import escape

COMPANIES = [
    "DeepSeek", "Huawei", "Nvidia", "SAP", "Siemens", "Infineon", "BASF", "Allianz", "Deutsche Bank",
    "Commerzbank", "Volkswagen", "BMW", "Mercedes-Benz", "Bayer", "Porsche", "Zalando", "Rheinmetall",
    "Alibaba", "Tencent", "SMIC", "TSMC", "Apple", "Microsoft", "Meta", "Tesla", "Airbus", "Lufthansa",
]  # fmt: skip
TOPICS = [
    "Finanzen",
    "KI",
    "Halbleiter",
    "Autoindustrie",
    "Banken",
    "Energie",
    "Krypto",
    "Immobilien",
    "Börse",
]
VERBS = [
    "verschiebt",
    "meldet",
    "erhöht",
    "senkt",
    "übernimmt",
    "prüft",
    "startet",
    "verliert",
    "gewinnt",
    "plant",
]
NOUNS = [
    "Modellstart", "Quartalszahlen", "Prognose", "Dividende", "Chipfertigung", "Übernahme", "Kapitalerhöhung",
    "Großauftrag", "Stellenabbau", "Zinsentscheidung", "Rückkauf", "Börsengang", "Kooperation", "Sparprogramm",
]  # fmt: skip
PHRASES = [
    "Der Konzern kehrt nach Problemen mit der Lieferkette zu seinem alten Partner zurück.",
    "Analysten sehen weiteres Kurspotenzial, warnen aber vor Risiken im China-Geschäft.",
    "Die Verzögerung kostete das Unternehmen wertvolle Zeit im Wettbewerb mit Konkurrenten.",
    "Künstliche Intelligenz verändert die Branche schneller als erwartet.",
    "Nach Angaben aus Unternehmenskreisen könnte die Entscheidung in den kommenden Wochen fallen.",
    "Die Aktie legte im frühen Handel in Frankfurt um mehr als drei Prozent zu.",
    "Gründer und Vorstand drängen intern auf eine schnellere Umsetzung der Strategie.",
    "Exportbeschränkungen der US-Regierung treffen die Halbleiterindustrie besonders hart.",
]  # fmt: skip


def item(feed: int, n: int, rng: random.Random, published: datetime) -> dict[str, str]:
    company, other = rng.sample(COMPANIES, 2)
    title = f"{company} {rng.choice(VERBS)} {rng.choice(NOUNS)} – {other} reagiert"
    paragraphs = rng.sample(PHRASES, 3)
    description = (
        f"<p><strong>{escape(company)}</strong> {escape(paragraphs[0])}</p>"
        f'<p>{escape(paragraphs[1])} <a href="https://example.org/{feed}/{n}">Mehr&nbsp;dazu</a></p>'
        f"<p>{escape(paragraphs[2])} &amp; {escape(other)}s Antwort bleibt offen.</p>"
    )
    categories = " / ".join([*rng.sample(TOPICS, 3), company])
    return {
        "title": title,
        "link": f"https://news.example.org/feed{feed}/artikel-{n}?utm_source=rss",
        "guid": f"feed{feed}-item{n}",
        "description": description,
        "category": categories,
        "pubDate": published.strftime("%a, %d %b %Y %H:%M:%S +0000"),
    }


def feed_items(feed: int, count: int, start: int = 0, now: datetime | None = None) -> list[dict[str, str]]:
    rng = random.Random(feed * 1_000_003 + start)
    now = now or datetime.now(UTC)
    return [item(feed, n, rng, now - timedelta(minutes=n)) for n in range(start, start + count)]


def rss(items: list[dict[str, str]], title: str) -> bytes:
    parts = [f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
             "<link>https://news.example.org/</link><description>Finanznachrichten</description>"]  # fmt: skip
    for entry in items:
        parts.append(
            f"<item><title>{escape(entry['title'])}</title><link>{escape(entry['link'])}</link>"
            f'<guid isPermaLink="false">{entry["guid"]}</guid><description>{escape(entry["description"])}</description>'
            f"<category>{escape(entry['category'])}</category><pubDate>{entry['pubDate']}</pubDate></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


# Alert rules a newsroom would run against such feeds; they match about a quarter of the items.
ALERTS = [
    ("deepseek", "DeepSeek"),
    ("china-chips", "(Huawei OR SMIC) AND (Chip* OR Halbleiter*)"),
    ("banken-zinsen", '(Commerzbank OR "Deutsche Bank") AND Zins*'),
    ("ki", '"Künstliche Intelligenz" -Krypto'),
    ("autos", "title:(Volkswagen OR BMW OR Porsche) Stellenabbau"),
]


def alert_terms(count: int) -> list[str]:
    """`count` distinct one-word alert queries, most of which never match (as in real setups)."""
    vocabulary = [w for w in COMPANIES if " " not in w and "-" not in w] + ["Chip*", "Zins*", "Dividende"]
    queries = list(vocabulary[: min(count, len(vocabulary))])
    queries += [f"Begriff{n}" for n in range(count - len(queries))]
    return queries[:count]
