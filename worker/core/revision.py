"""Config revisions and what a reload changes (SPEC §11), over plain data.

A revision names what a process runs: a short hash of the validated settings, so the same
effective content (comments, key order, a `${VAR}` that resolves alike) is the same revision.
`ConfigChange` says what a reload changes, for its one log line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REVISION_LENGTH = 12  # hex digits: short enough to read in `status`, long enough never to collide


def config_revision(settings: Mapping[str, Any]) -> str:
    """A short sha256 of the settings (as JSON data: `Settings.model_dump(mode="json")`)."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:REVISION_LENGTH]


@dataclass(frozen=True)
class ConfigShape:
    """What a reload compares: the feeds by name with their fingerprints, and the other
    sections a reload applies, each as plain data."""

    feeds: Mapping[str, str]  # name -> FeedConfig.fingerprint
    sections: Mapping[str, Any]  # "alerts", "channels", ... -> the section as JSON data


@dataclass(frozen=True)
class ConfigChange:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]  # feeds kept whose entry changed (they start afresh, state kept)
    sections: tuple[str, ...]  # other sections that changed, in the order of the config

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.sections)

    def describe(self) -> str:
        """'+2 feeds, -1 feed, 1 feed changed, alerts changed', or 'nothing changed'."""
        feeds = (("+", self.added, ""), ("-", self.removed, ""), ("", self.changed, " changed"))
        parts = [
            f"{sign}{len(names)} feed{'s' if len(names) != 1 else ''}{suffix}"
            for sign, names, suffix in feeds
            if names
        ]
        parts += [f"{section} changed" for section in self.sections]
        return ", ".join(parts) or "nothing changed"


def diff(old: ConfigShape, new: ConfigShape) -> ConfigChange:
    added = tuple(name for name in new.feeds if name not in old.feeds)
    removed = tuple(name for name in old.feeds if name not in new.feeds)
    changed = tuple(name for name in new.feeds if name in old.feeds and old.feeds[name] != new.feeds[name])
    names = list(old.sections) + [name for name in new.sections if name not in old.sections]
    sections = tuple(name for name in names if old.sections.get(name) != new.sections.get(name))
    return ConfigChange(added, removed, changed, sections)
