"""Classify an item (topics) and decide which alert rules fire for it. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.core.models import AlertMatch, Item
from worker.core.query import ItemText, Node, evaluate, matched_terms
from worker.core.text import fold
from worker.core.topics import merge_topics


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
class RuleSet:
    topics: tuple[TopicRule, ...]
    alerts: tuple[AlertRule, ...]
    feed_tags: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Classified:
    item: Item
    topics: tuple[str, ...]
    matches: tuple[AlertMatch, ...]


def item_text(item: Item) -> ItemText:
    return ItemText.of(item.title, (item.summary, item.content), item.categories)


def classify(item: Item, rules: RuleSet) -> Classified:
    """Topics from feed tags, categories and topic terms; then every alert rule that fires."""
    text = item_text(item)
    matched_topics = [rule.name for rule in rules.topics if evaluate(rule.query, text)]
    topics = merge_topics(matched_topics, rules.feed_tags.get(item.feed, ()), item.categories)
    folded_topics = {fold(t) for t in topics}
    matches = []
    for alert in rules.alerts:
        if alert.feeds is not None and item.feed not in alert.feeds:
            continue
        if alert.topics is not None and not (alert.topics & folded_topics):
            continue
        if evaluate(alert.query, text):
            matches.append(AlertMatch(alert.name, tuple(matched_terms(alert.query, text)), alert.channels))
    return Classified(item, topics, tuple(matches))


def too_old_to_alert(item: Item, now: datetime, max_age: timedelta | None) -> bool:
    """Items published before now - max_age are remembered but never alerted (polling.max_age)."""
    if max_age is None or item.published is None:
        return False
    return item.published < now - max_age
