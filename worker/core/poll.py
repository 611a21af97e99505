"""Deciding a poll: from a feed's state, its config and what the fetch brought, what to do and
what to write. Pure: the adapter (worker.polling) reads the state, fetches, and writes what
these functions return.

A poll is planned (`plan_poll`: fetch, wait or stay disabled, and from which state), then
settled with one state update (`after_success` or `after_failure`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from worker.core.timing import wait_after_error, wait_after_success

GUID_CHURN_WARNING = "GUIDs change on every poll; items are matched by their links"
LAYOUT_WARNING = "no items found on the page: has its layout changed?"


@dataclass(frozen=True)
class FeedState:
    """What is remembered about one feed between polls."""

    url: str | None = None  # where the feed now lives, when a permanent redirect moved it
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_poll: datetime | None = None
    last_success: datetime | None = None
    error: str | None = None
    error_count: int = 0
    items_seen: int = 0
    too_old: int = 0  # of those, published before polling.max_age: recorded, never alerted
    disabled: bool = False
    not_before: datetime | None = None  # backoff, Retry-After or cache lifetime: no poll before
    moved_from: str | None = None  # the configured URL that answered with a permanent redirect
    gone_url: str | None = None  # the URL that answered 410 Gone (disabled until the config changes)
    warning: str | None = None  # something odd but not an error (e.g. GUID churn)
    config: str | None = None  # fingerprint of the feed's config entry at the last write
    lateness: float | None = None  # seconds the last poll started after its time (scheduler polls)
    polled_by: str | None = None  # the scheduler process that made the last poll
    items_found: int | None = None  # items the last changed page yielded (html and json sources)
    repaired: str | None = None  # garbage a poll found in this state in Redis and replaced, in words
    repaired_at: datetime | None = None  # when
    # Feed health (worker/core/ops.py): when the current run of failures began, the feed's
    # rhythm of new items, and the silent and failing episodes already told (their start).
    error_since: datetime | None = None
    last_new: datetime | None = None  # the last poll that found new items (or the first poll)
    gap_longest: float | None = None  # seconds: the longest recent gap between new items, decayed
    gaps_seen: int = 0
    failing_told: datetime | None = None
    silent_told: datetime | None = None
    # Garbage in the store's copy of this state (a key of another type, fields that do not
    # read), in words, as the store found it (and, reading for a poll, replaced it); those
    # fields read as unset. Not stored.
    garbage: str | None = field(default=None, compare=False)
    unreadable: tuple[str, ...] = field(default=(), compare=False)  # the fields that did not read
    # A new random token with every write (see the state store); "" before the first.
    revision: str = field(default="", compare=False)
    # From the process's memory of its last read or write, not read from the store just now.
    remembered: bool = field(default=False, compare=False)


class _Keep:
    """An update field left as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class StateUpdate:
    """The fields of FeedState one write sets; KEEP leaves a field as it is, None clears it.
    Typed, so a misspelt field is an error where it is written, not a new field in the store."""

    url: str | None = KEEP
    etag: str | None = KEEP
    last_modified: str | None = KEEP
    body_hash: str | None = KEEP
    last_poll: datetime | None = KEEP
    last_success: datetime | None = KEEP
    error: str | None = KEEP
    error_count: int = KEEP
    disabled: bool = KEEP
    not_before: datetime | None = KEEP
    moved_from: str | None = KEEP
    gone_url: str | None = KEEP
    warning: str | None = KEEP
    config: str | None = KEEP
    lateness: float | None = KEEP
    polled_by: str | None = KEEP
    items_found: int | None = KEEP
    repaired: str | None = KEEP
    repaired_at: datetime | None = KEEP
    error_since: datetime | None = KEEP
    last_new: datetime | None = KEEP
    gap_longest: float | None = KEEP
    gaps_seen: int = KEEP
    failing_told: datetime | None = KEEP
    silent_told: datetime | None = KEEP

    def values(self) -> dict[str, Any]:
        """The fields this update sets, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not KEEP}

    def then(self, later: StateUpdate) -> StateUpdate:
        """This update followed by `later`: where both set a field, `later` wins."""
        return replace(self, **later.values())


def config_fingerprint(entry: dict[str, Any]) -> str:
    """A short hash of a feed's config entry: a changed entry starts the feed afresh."""
    text = json.dumps(entry, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class PollPlan:
    action: Literal["fetch", "wait", "disabled"]
    state: FeedState  # what the poll counts from (a fresh state after a config change)
    url: str  # where to fetch: the configured URL, or where a permanent redirect moved it
    start: StateUpdate  # written with the poll's result, whatever it is
    configured: str  # the URL in the config


def plan_poll(state: FeedState, url: str, fingerprint: str, now: datetime, force: bool) -> PollPlan:
    """Fetch, wait (backoff, Retry-After, cache lifetime; `force` ignores them) or stay
    disabled (410 Gone). A changed config entry starts afresh: no backoff, no errors, no
    remembered move or validators; the feed's count and last success stay."""
    if _config_changed(state, url, fingerprint):
        fresh = FeedState(
            items_seen=state.items_seen,
            too_old=state.too_old,
            last_success=state.last_success,
            # Its rhythm and the episodes told are the feed's, whatever its entry says now.
            last_new=state.last_new,
            gap_longest=state.gap_longest,
            gaps_seen=state.gaps_seen,
            failing_told=state.failing_told,
            silent_told=state.silent_told,
            revision=state.revision,
            remembered=state.remembered,
        )
        return PollPlan("fetch", fresh, url, _FRESH_START.then(StateUpdate(config=fingerprint)), url)
    start = StateUpdate(config=fingerprint)
    if state.disabled:
        return PollPlan("disabled", state, url, start, url)
    if not force and state.not_before is not None and now < state.not_before:
        return PollPlan("wait", state, url, start, url)
    moved = state.url if state.url and state.moved_from == url else None
    return PollPlan("fetch", state, moved or url, start, url)


_FRESH_START = StateUpdate(
    url=None, etag=None, last_modified=None, body_hash=None, error=None, error_count=0,
    disabled=False, not_before=None, moved_from=None, gone_url=None, warning=None,
)  # fmt: skip


def _config_changed(state: FeedState, url: str, fingerprint: str) -> bool:
    if state.config is not None:
        return state.config != fingerprint
    # A state written before fingerprints: only a new URL re-enables a gone feed.
    return state.disabled and state.gone_url not in (None, url)


@dataclass(frozen=True)
class Fetched:
    """What a successful fetch brought, as far as the feed's state is concerned."""

    changed: bool  # False: 304 Not Modified, or the same body as last time
    permanent_redirect: str | None = None  # where a chain of 301/308 ended
    fresh_for: float | None = None  # seconds the server says the document stays fresh
    ttl_minutes: float | None = None  # RSS <ttl>
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    # False when some of the page's new items wait for a later poll (`max_articles`): then its
    # validators are not stored, or the next poll would skip the unchanged page and lose them.
    complete: bool = True
    items_found: int | None = None  # items the page yielded, for sources whose layout may change
    problem: str | None = None  # something a person should see (e.g. article pages that failed)


def after_success(
    plan: PollPlan,
    fetched: Fetched,
    now: datetime,
    interval: timedelta,
    churn: bool = False,
) -> StateUpdate:
    """The state a successful poll leaves: no error, a cache lifetime longer than the interval
    as `not_before`, a permanent move remembered, and for a changed body its validators."""
    wait = wait_after_success(interval, fetched.fresh_for, fetched.ttl_minutes)
    update = StateUpdate(
        last_poll=now,
        last_success=now,
        error=None,
        error_count=0,
        not_before=now + wait if wait > interval else None,
    )
    if fetched.permanent_redirect and fetched.permanent_redirect != plan.url:
        update = update.then(StateUpdate(url=fetched.permanent_redirect, moved_from=plan.configured))
    if fetched.changed:
        complete = fetched.complete
        update = update.then(
            StateUpdate(
                etag=fetched.etag if complete else None,
                last_modified=fetched.last_modified if complete else None,
                body_hash=fetched.body_hash if complete else None,
                warning=_warning(plan.state, fetched, churn),
                items_found=fetched.items_found,
            )
        )
    return plan.start.then(update)


def _warning(state: FeedState, fetched: Fetched, churn: bool) -> str | None:
    """What status shows beside a successful poll, the most telling first. A page that yielded
    items and now yields none keeps its warning for the whole episode, until items come back."""
    if fetched.items_found == 0 and (state.items_found or state.warning == LAYOUT_WARNING):
        return LAYOUT_WARNING
    if fetched.problem:
        return fetched.problem
    return GUID_CHURN_WARNING if churn else None


def layout_change_began(before: FeedState, update: StateUpdate) -> bool:
    """This poll starts a layout-change episode: log and report it now, once."""
    return update.warning == LAYOUT_WARNING and before.warning != LAYOUT_WARNING


@dataclass(frozen=True)
class Failure:
    message: str
    gone: bool = False  # 410 Gone: disabled until the config changes
    retry_after: float | None = None  # the server's Retry-After, in seconds


def after_failure(
    plan: PollPlan,
    failure: Failure,
    now: datetime,
    interval: timedelta,
    unit_random: float,
) -> tuple[StateUpdate, timedelta]:
    """The state a failed poll leaves (one more error in a row, a backoff) and the backoff."""
    count = plan.state.error_count + 1
    wait = wait_after_error(interval, count, unit_random, failure.retry_after)
    update = StateUpdate(error=failure.message, error_count=count, last_poll=now, not_before=now + wait)
    if failure.gone:
        update = update.then(StateUpdate(disabled=True, gone_url=plan.configured))
    return plan.start.then(update), wait


def rebaseline(state: FeedState, polled_here_before: bool) -> bool:
    """A feed this process polled before has no last success in the store: the store was wiped
    (flushed, a new volume). Its items now are recorded, not alerted. A state that held garbage
    was not wiped but damaged: its new items are alerted as usual."""
    return polled_here_before and state.last_success is None and state.garbage is None


def garbage_repaired(state: FeedState, now: datetime) -> StateUpdate:
    """What a poll writes beside its result when its read replaced garbage in the feed's state:
    a note `status` shows for a while (REPAIR_SHOWN)."""
    if state.garbage is None:
        return StateUpdate()
    return StateUpdate(repaired=state.garbage, repaired_at=now)


REPAIR_SHOWN = timedelta(days=1)  # how long `status` shows that a feed's state was repaired


def guid_churn(known_under_other_guid: int, items: int) -> bool:
    """Most of a feed's items are known stories under new GUIDs: the feed churns its GUIDs."""
    return known_under_other_guid >= max(2, items // 2)
