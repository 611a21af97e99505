"""`newswatch try` and `newswatch explain`: queries against the archive, and why alerts fired.

Both read the archive (worker.adapters.archive) and never write. On a terminal, outside text
reaches rich only as Text objects built piece by piece (each piece made printable), never as a
string rich would read as markup; matched words are bold. `--json` gives the same as data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.text import Text

from worker.config import Config, query_problem
from worker.core.archive import ArchivedItem
from worker.core.explain import AlertReason, explain_alerts, highlights, matching, try_rules
from worker.core.highlights import Mark, marks_in, query_terms
from worker.core.models import utc_iso
from worker.core.query import Node, Term, parse_query
from worker.core.text import one_line, printable
from worker.core.units import format_duration, parse_duration
from worker.runtime import connect

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_CHUNK = 500
_SNIPPET = 160  # characters of summary shown around its first match


def try_query(config: Config, query_text: str, since: str, feed: str | None, as_json: bool) -> int:
    problem = query_problem(query_text)
    if problem:
        print(f"newswatch: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        window = parse_duration(since)
    except ValueError as e:
        print(f"newswatch: --since: {e}", file=sys.stderr)
        return EXIT_USAGE
    rt = connect(config)
    query = parse_query(query_text)
    found, searched = _search(rt.archive.newest_first(rt.clock() - window), query, feed)
    found.sort(key=_newest, reverse=True)
    if as_json:
        items = [_try_entry(record, query) for record in found]
        data = {
            "query": query_text,
            "since": since,
            "searched": searched,
            "matched": len(found),
            "items": items,
        }
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    console = Console(highlight=False)
    terms = [term for term, counts in query_terms(query) if counts]
    for record in found:
        console.print(_try_text(record, terms))
    console.print(Text(f"{len(found)} of {searched} archived items from the last {since} match"))
    return EXIT_OK


def _search(records: Iterable[ArchivedItem], query: Node, feed: str | None) -> tuple[list[ArchivedItem], int]:
    rules = try_rules(query)
    found: list[ArchivedItem] = []
    searched = 0
    chunk: list[ArchivedItem] = []
    for record in records:
        if feed is not None and record.item.feed != feed:
            continue
        chunk.append(record)
        if len(chunk) == _CHUNK:
            found += matching(chunk, query, rules)
            searched, chunk = searched + len(chunk), []
    found += matching(chunk, query, rules)
    return found, searched + len(chunk)


def _newest(record: ArchivedItem) -> datetime:
    return record.item.published or record.seen


def _try_entry(record: ArchivedItem, query: Node) -> dict[str, Any]:
    item = record.item
    return {
        "id": item.id,
        "feed": item.feed,
        "title": item.title,
        "link": item.link,
        "published": utc_iso(item.published) if item.published else None,
        "seen": utc_iso(record.seen),
        "summary": item.summary,
        "categories": list(item.categories),
        "story": record.story,
        "highlights": highlights(record, query),
    }


def _marked(text: str, marks: list[Mark], field: str) -> Text:
    """The text with its marks in bold, every piece made printable on its own."""
    result = Text()
    position = 0
    for mark in sorted((m for m in marks if m.field == field), key=lambda m: m.start):
        if mark.start < position:
            continue
        result.append(printable(text[position : mark.start]))
        result.append(printable(text[mark.start : mark.end]), style="bold")
        position = mark.end
    result.append(printable(text[position:]))
    return result


def _snippet(text: str, marks: list[Mark]) -> tuple[str, list[Mark]]:
    """About _SNIPPET characters of the summary around its first match, marks moved along."""
    first = min((m.start for m in marks if m.field == "summary"), default=0)
    start = max(0, first - _SNIPPET // 4)
    end = min(len(text), start + _SNIPPET)
    moved = [
        Mark(m.field, m.start - start, m.end - start, m.text, m.term)
        for m in marks
        if m.field == "summary" and m.start >= start and m.end <= end
    ]
    return text[start:end], moved


def _try_text(record: ArchivedItem, terms: list[Term]) -> Text:
    item = record.item
    when = utc_iso(item.published) if item.published else f"seen {utc_iso(record.seen)}"
    # Marks are found in the text as shown (one line), so they point at what is printed.
    shown = one_line(item.summary)
    summary, summary_marks = _snippet(shown, marks_in(shown, "summary", terms)) if shown else ("", [])
    title_marks = marks_in(item.title, "title", terms)
    heading = _marked(item.title, title_marks, "title")
    lines = [
        Text.assemble(Text(when, style="dim"), "  ", Text(printable(item.feed), style="cyan"), "  ", heading),
        Text("    ") + _marked(summary, summary_marks, "summary") if summary else None,
        Text("    " + printable(item.link or "(no link)") + "  id " + item.id, style="dim"),
    ]  # fmt: skip
    return Text("\n").join(line for line in lines if line is not None)


def explain_item(config: Config, item_id: str, as_json: bool) -> int:
    rt = connect(config)
    record = rt.archive.get(item_id)
    if record is None:
        archive = config.settings.archive
        print(
            f"newswatch: item {printable(item_id)!r} is not in the archive "
            f"(it keeps {format_duration(archive.keep)} and at most {archive.max_items} items)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    sources = {alert.name: alert.query for alert in config.settings.alerts}
    reasons = explain_alerts(record, config.rules, sources)
    reports: dict[str, int] = {}
    if rt.story_index is not None:
        reports = rt.story_index.story_of(record.story)[1]
    others = rt.archive.get_many([i for i in sorted(reports, key=reports.__getitem__) if i != item_id])
    data = _explain_data(record, reports, others, reasons)
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        _print_explain(data)
    return EXIT_OK


def _explain_data(
    record: ArchivedItem, reports: dict[str, int], others: list[ArchivedItem], reasons: list[AlertReason]
) -> dict[str, Any]:
    item = record.item
    return {
        "item": {
            "id": item.id,
            "feed": item.feed,
            "title": item.title,
            "link": item.link,
            "published": utc_iso(item.published) if item.published else None,
            "seen": utc_iso(record.seen),
            "categories": list(item.categories),
            "topics": list(record.topics),
            "summary": item.summary,
        },
        "story": {
            "id": record.story,
            "report": record.report,
            "reports": max([record.report, *reports.values()]),
            "others": [_other(o, reports) for o in others],
        },
        "alerts": [_reason_data(r) for r in reasons],
    }


def _other(record: ArchivedItem, reports: dict[str, int]) -> dict[str, Any]:
    item = record.item
    return {
        "id": item.id,
        "feed": item.feed,
        "title": item.title,
        "link": item.link,
        "report": reports.get(item.id),
        "seen": utc_iso(record.seen),
    }


def _reason_data(reason: AlertReason) -> dict[str, Any]:
    return {
        "alert": reason.alert,
        "query": reason.query,
        "fired": reason.fired,
        "outcome": reason.outcome.outcome if reason.outcome else None,
        "detail": reason.outcome.detail if reason.outcome else None,
        "reason": reason.reason,
        "query_matches": reason.query_matches,
        "terms": [
            {"term": t.term, "negated": not t.counts, "matched": t.found, "fields": t.words}
            for t in reason.terms
        ],
        "feeds": {"only": list(reason.feeds.wanted), "ok": reason.feeds.ok} if reason.feeds else None,
        "topics": {"only": list(reason.topics.wanted), "ok": reason.topics.ok} if reason.topics else None,
    }


def _print_explain(data: dict[str, Any]) -> None:
    console = Console(highlight=False)
    item, story = data["item"], data["story"]
    for label, value in (
        ("item", item["id"]), ("title", item["title"]), ("feed", item["feed"]), ("link", item["link"] or "-"),
        ("published", item["published"] or "-"), ("seen", item["seen"]),
        ("categories", ", ".join(item["categories"]) or "-"), ("topics", ", ".join(item["topics"]) or "-"),
        ("story", f"{story['id']}, report {story['report']} of {story['reports']}"),
    ):  # fmt: skip
        console.print(Text.assemble((f"{label:>10}: ", "bold"), printable(str(value))))
    for other in story["others"]:
        line = f"    report {other['report']}: {other['feed']}  {other['title']}  ({other['id']})"
        console.print(Text(printable(line), style="dim"))
    for alert in data["alerts"]:
        mark = ("fired", "green") if alert["fired"] else ("not fired", "red")
        console.print(
            Text.assemble("\n", (alert["alert"], "bold"), ": ", mark, " — ", printable(alert["reason"]))
        )
        console.print(Text("    query: " + printable(alert["query"]), style="dim"))
        for term in alert["terms"]:
            console.print(Text("    " + printable(_term_line(term))))
        for kind in ("feeds", "topics"):
            if alert[kind]:
                verdict = "ok" if alert[kind]["ok"] else "no"
                console.print(Text(f"    {kind}: only {', '.join(alert[kind]['only'])}: {verdict}"))


def _term_line(term: dict[str, Any]) -> str:
    name = ("NOT " if term["negated"] else "") + term["term"]
    if not term["matched"]:
        return f"{name}: not found"
    found = "; ".join(
        f"{field} {', '.join(repr(w) for w in words)}" for field, words in term["fields"].items()
    )
    return f"{name}: found in {found}"
