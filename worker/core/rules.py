"""Classify an item (topics) and decide which alert rules fire for it. Pure: no I/O, no clock.

Every term of every rule is found in one automaton pass (see matcher); then only the rules
that one of the found terms could make true are evaluated, so the cost per item does not grow
with the number of rules that cannot fire.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.core.matcher import ItemText, TermIndex, TermKey
from worker.core.models import AlertMatch, Item
from worker.core.query import Node, Term, all_terms, evaluate, matched_terms, positive_terms
from worker.core.topics import fold_name, merge_topics


@dataclass(frozen=True)
class TopicRule:
    name: str
    query: Node


@dataclass(frozen=True)
class AlertRule:
    name: str
    query: Node
    channels: tuple[str, ...]
    topics: frozenset[str] | None = None  # folded names; None means any item
    feeds: frozenset[str] | None = None  # None means every feed


@dataclass(frozen=True)
class Anchors:
    """Which rules (by position) a found term can make true, and which are true with no term."""

    by_term: dict[TermKey, tuple[int, ...]]
    always: tuple[int, ...]  # e.g. "NOT Bitcoin": true without any term present

    @classmethod
    def of(cls, queries: Iterable[Node]) -> Anchors:
        by_term: dict[TermKey, list[int]] = defaultdict(list)
        always = []
        for position, query in enumerate(queries):
            if evaluate(query, ItemText(set())):
                always.append(position)
            for key in {t.key for t in positive_terms(query)}:
                by_term[key].append(position)
        return cls({k: tuple(v) for k, v in by_term.items()}, tuple(always))

    def candidates(self, found: set[TermKey]) -> list[int]:
        """Positions of the rules that may be true for these found terms, in config order."""
        get = self.by_term.get
        chosen = [p for key in found if (positions := get(key)) for p in positions]
        if self.always:
            chosen += self.always
        return sorted(set(chosen)) if len(chosen) > 1 else chosen


@dataclass(frozen=True)
class RuleSet:
    topics: tuple[TopicRule, ...]
    alerts: tuple[AlertRule, ...]
    feed_tags: dict[str, tuple[str, ...]]
    index: TermIndex = field(init=False, compare=False)
    topic_anchors: Anchors = field(init=False, compare=False)
    alert_anchors: Anchors = field(init=False, compare=False)
    # Per alert: the match itself when the rule is one plain term (true whenever it is a
    # candidate, since only its own term makes it one), else None (evaluate the query).
    sure_matches: tuple[AlertMatch | None, ...] = field(init=False, compare=False)
    sure_topics: tuple[bool, ...] = field(init=False, compare=False)
    filters_topics: bool = field(init=False, compare=False)

    @property
    def alert_queries(self) -> dict[str, Node]:
        """Each alert's query by name (highlights, explain)."""
        return {alert.name: alert.query for alert in self.alerts}

    def __post_init__(self) -> None:
        queries = [r.query for r in self.topics] + [r.query for r in self.alerts]
        # Frozen: what is derived from the rules is computed once, here.
        object.__setattr__(self, "index", TermIndex.of(t.key for q in queries for t in all_terms(q)))
        object.__setattr__(self, "topic_anchors", Anchors.of(r.query for r in self.topics))
        object.__setattr__(self, "alert_anchors", Anchors.of(r.query for r in self.alerts))
        sure = tuple(
            AlertMatch(a.name, (a.query.source,), a.channels) if isinstance(a.query, Term) else None
            for a in self.alerts
        )
        object.__setattr__(self, "sure_matches", sure)
        object.__setattr__(self, "sure_topics", tuple(isinstance(t.query, Term) for t in self.topics))
        object.__setattr__(self, "filters_topics", any(a.topics is not None for a in self.alerts))


@dataclass(frozen=True)
class Classified:
    item: Item
    topics: tuple[str, ...]
    matches: tuple[AlertMatch, ...]


def item_text(item: Item, rules: RuleSet) -> ItemText:
    return rules.index.scan(item.title, (item.summary, item.content), item.categories)


def classify(item: Item, rules: RuleSet) -> Classified:
    return _classified(item, item_text(item, rules), rules)


def classify_many(items: Sequence[Item], rules: RuleSet) -> list[Classified]:
    """classify() for a batch: one automaton pass over all of its items (see TermIndex.scan_many)."""
    texts = rules.index.scan_many([(i.title, (i.summary, i.content), i.categories) for i in items])
    return [_classified(item, text, rules) for item, text in zip(items, texts, strict=True)]


def _classified(item: Item, text: ItemText, rules: RuleSet) -> Classified:
    """Topics from feed tags, categories and topic terms; then every alert rule that fires.

    The hot path of the match stage, after the automaton pass: only the rules a found term can
    make true are looked at, and a rule that is one plain term needs no evaluation at all."""
    found = text.found
    matched_topics = [
        rules.topics[i].name
        for i in rules.topic_anchors.candidates(found)
        if rules.sure_topics[i] or evaluate(rules.topics[i].query, text)
    ]
    topics = merge_topics(matched_topics, rules.feed_tags.get(item.feed, ()), item.categories)
    folded_topics = {fold_name(t) for t in topics} if rules.filters_topics else set()
    matches = []
    for position in rules.alert_anchors.candidates(found):
        alert = rules.alerts[position]
        if alert.feeds is not None and item.feed not in alert.feeds:
            continue
        if alert.topics is not None and not (alert.topics & folded_topics):
            continue
        sure = rules.sure_matches[position]
        if sure is not None:
            matches.append(sure)
        elif evaluate(alert.query, text):
            terms = tuple(matched_terms(alert.query, text))
            matches.append(AlertMatch(alert.name, terms, alert.channels))
    return Classified(item, topics, tuple(matches))


def too_old_to_alert(item: Item, now: datetime, max_age: timedelta | None) -> bool:
    """Items published before now - max_age are remembered but never alerted (polling.max_age)."""
    if max_age is None or item.published is None:
        return False
    return item.published < now - max_age
