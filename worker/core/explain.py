"""Why an alert fired for an item, or did not (`newswatch explain`), and what a query matches
(`newswatch try`). Pure: it reads archived records and the rules, and says per alert what
happened when the item was processed (sent, digested, capped, held for quiet hours, held by its
story, quiet) and why
its query and filters match or not under the current config: each term, in which field, which
words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.core.archive import ArchivedItem, Outcome
from worker.core.highlights import item_marks, payload_highlights, query_terms
from worker.core.models import Item
from worker.core.query import Node, evaluate
from worker.core.rules import AlertRule, RuleSet, item_text
from worker.core.topics import fold_name

FIRED = frozenset({"sent", "digest", "capped", "quiet_hours"})


@dataclass(frozen=True)
class TermFinding:
    term: str  # as written in the query
    counts: bool  # False: the term is under a NOT, so finding it speaks against the alert
    words: dict[str, list[str]]  # field -> the words it matched there (empty: not found)

    @property
    def found(self) -> bool:
        return any(self.words.values())


@dataclass(frozen=True)
class Filter:
    wanted: tuple[str, ...]
    ok: bool


@dataclass(frozen=True)
class AlertReason:
    alert: str
    query: str
    fired: bool  # when the item was processed: a delivery was made (now, or in a digest)
    outcome: Outcome | None  # what was recorded then; None: the alert did not match then
    query_matches: bool  # under the current config
    terms: list[TermFinding] = field(default_factory=list)
    feeds: Filter | None = None
    topics: Filter | None = None

    @property
    def reason(self) -> str:
        """One line: why it fired or not."""
        if self.outcome is not None:
            return _recorded(self.outcome)
        if not self.query_matches:
            return "the query does not match"
        if self.feeds and not self.feeds.ok:
            return "the item's feed is not among the alert's feeds"
        if self.topics and not self.topics.ok:
            return "the item has none of the alert's topics"
        return (
            "matches under the current config, but did not when the item was processed (config changed since)"
        )


_OUTCOMES = {
    "sent": "sent",
    "digest": "held for the alert's digest",
    "capped": "over the alert's max_per_hour",
    "quiet_hours": "held for the alert's quiet hours",
    "story": "not sent: the story was already alerted",
    "quiet": "not sent",
}


def _recorded(outcome: Outcome) -> str:
    words = _OUTCOMES.get(outcome.outcome, outcome.outcome)
    return f"{words} ({outcome.detail})" if outcome.detail else words


def term_findings(item: Item, query: Node) -> list[TermFinding]:
    """Each term of the query once: whether it counts for or (under NOT) against the query,
    and the words it matched per field (summary and content both count as summary)."""
    terms = query_terms(query)
    marks = item_marks(item, [term for term, _ in terms], content=True)
    findings = []
    for term, counts in terms:
        words: dict[str, list[str]] = {}
        for mark in marks:
            if mark.term == term.source:
                words.setdefault(mark.field, []).append(mark.text)
        findings.append(TermFinding(term.source, counts, words))
    return list({f.term: f for f in findings}.values())


def explain_alert(record: ArchivedItem, alert: AlertRule, source: str, rules: RuleSet) -> AlertReason:
    item = record.item
    feeds = Filter(tuple(sorted(alert.feeds)), item.feed in alert.feeds) if alert.feeds is not None else None
    topics = None
    if alert.topics is not None:
        have = {fold_name(t) for t in record.topics}
        topics = Filter(tuple(sorted(alert.topics)), bool(alert.topics & have))
    outcome = record.alerts.get(alert.name)
    return AlertReason(
        alert=alert.name,
        query=source,
        fired=outcome is not None and outcome.outcome in FIRED,
        outcome=outcome,
        query_matches=evaluate(alert.query, item_text(item, rules)),
        terms=term_findings(item, alert.query),
        feeds=feeds,
        topics=topics,
    )


def explain_alerts(record: ArchivedItem, rules: RuleSet, sources: dict[str, str]) -> list[AlertReason]:
    """Every configured alert, in config order, for one archived item."""
    return [explain_alert(record, alert, sources.get(alert.name, ""), rules) for alert in rules.alerts]


def try_rules(query: Node) -> RuleSet:
    """A rule set that holds one query, as an alert without filters or channels."""
    return RuleSet((), (AlertRule("try", query, ()),), {})


def matching(records: Sequence[ArchivedItem], query: Node, rules: RuleSet) -> list[ArchivedItem]:
    """The records whose item the query matches (one automaton pass for all of them)."""
    texts = rules.index.scan_many(
        [(r.item.title, (r.item.summary, r.item.content), r.item.categories) for r in records]
    )
    return [record for record, text in zip(records, texts, strict=True) if evaluate(query, text)]


def highlights(record: ArchivedItem, query: Node) -> dict[str, list[dict[str, object]]]:
    return payload_highlights(record.item, query)
