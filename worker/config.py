"""The one typed configuration: YAML + ${VAR} interpolation -> validated Settings -> compiled rules.

Everything the daemon reads from its environment is read here, once; the result is passed down.
Every problem is reported by its key path (`alerts[1].channels[0]: unknown channel 'slak'`). A
message may quote a value written in the file, never one written with ${VAR}, which may be a
secret (see `_hide_interpolated`), so secrets from the environment cannot leak through errors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.adapters.http_fetch import request_url
from worker.adapters.net import literal_blocked_reason
from worker.config_yaml import read_yaml
from worker.core.errors import ConfigError, QuerySyntaxError
from worker.core.poll import config_fingerprint
from worker.core.query import is_plain_term, lowercase_operators, parse_query, parse_term_list
from worker.core.quiet import QuietHours, parse_quiet_hours
from worker.core.render import secret_key
from worker.core.rules import AlertRule, RuleSet, TopicRule
from worker.core.text import fold
from worker.core.units import parse_duration, parse_fraction, parse_size

DEFAULT_CONFIG = "config/newswatch.yaml"
# Set by `newswatch run` for its children: a private copy of the last config the supervisor
# found valid. A child that starts (or restarts after a crash) while the file is invalid runs
# that one instead of exiting, until the file is fixed (worker.supervisor.ConfigSnapshot).
CONFIG_SNAPSHOT_ENV = "NEWSWATCH_CONFIG_SNAPSHOT"
DEFAULT_CHANNEL = "console"
# `make run` writes the URL of the Redis it runs here (relative to the checkout, the working
# directory of every command run next to it) and removes it when it stops; see load_config.
LOCAL_REDIS_RECORD = "var/redis.url"

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Fraction = Annotated[float, BeforeValidator(parse_fraction)]


def _optional_duration(value: object) -> timedelta | None:
    if value in (None, "", 0, "0", "off", False):
        return None
    return parse_duration(value)


OptionalDuration = Annotated[timedelta | None, BeforeValidator(_optional_duration)]


def _http_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a URL is required")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    # The fetcher's own parsing (httpx), so a URL it would refuse (`0177.0.0.1`, a bad port) is
    # a config error here, not a crash of the scheduler at start.
    try:
        target = request_url(value.strip())
    except httpx.InvalidURL as e:
        # httpx's message quotes the offending part after a colon or comma; only the kind is shown.
        raise ValueError(f"not a URL newswatch can fetch: {re.split('[:,]', str(e))[0]}") from e
    if not target.host or not 0 < (target.port or 80) < 65536:
        raise ValueError("not a URL newswatch can fetch: it needs a host and a port from 1 to 65535")
    return value.strip()


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Model):
    url: str = "redis://localhost:6379/0"

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
            raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
        return value


class SentrySettings(_Model):
    dsn: str | None = None
    environment: str = "production"

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: str | None) -> str | None:
        """Checked with sentry_sdk's own parser, which would otherwise fail every command at
        start. Its message quotes parts of the DSN, a secret, so it is not repeated."""
        if not value:
            return None
        import sentry_sdk.utils  # only with a DSN: ~40 ms of every process's start otherwise

        try:
            sentry_sdk.utils.Dsn(value)
        except ValueError as e:  # BadDsn, or a port out of range
            raise ValueError("not a Sentry DSN (like https://<public key>@<host>/<project id>)") from e
        return value


class MetricsSettings(_Model):
    port: int = Field(default=9108, ge=0, le=65535)
    bind: str = "127.0.0.1"  # 0.0.0.0 in a container, so Prometheus can scrape it


class PollingSettings(_Model):
    interval: Duration = timedelta(minutes=5)
    jitter: Fraction = 0.1
    timeout: Duration = timedelta(seconds=20)
    max_bytes: Size = 10_000_000
    max_age: OptionalDuration = timedelta(days=3)
    max_redirects: int = Field(default=5, ge=0, le=30)
    allow_private_addresses: bool = False
    batch_size: int = Field(default=50, ge=1, le=1000)
    concurrency: int = Field(default=100, ge=1, le=10_000)  # polls in flight per scheduler process
    per_host: int = Field(default=2, ge=1, le=10_000)  # polls in flight against one host
    lease: Duration = timedelta(seconds=30)  # a dead scheduler's feeds are taken over after this

    @field_validator("lease")
    @classmethod
    def _lease_outlives_heartbeats(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=15):
            raise ValueError("must be at least 15s (leases are renewed every 5s)")
        return value


class DedupeSettings(_Model):
    ttl: Duration = timedelta(days=30)


class DeliverySettings(_Model):
    retries: list[Duration] = Field(
        default_factory=lambda: [parse_duration(d) for d in ("10s", "1m", "5m", "15m", "1h")]
    )
    timeout: Duration = timedelta(seconds=10)
    # Deliveries in flight at once per worker process, first tries and retries alike (SPEC §9).
    concurrency: int = Field(default=16, ge=1, le=256)


# --- stories and archive (SPEC §10) ---------------------------------------------------------------


def _stories_switch(value: object) -> object:
    """`stories: off` (YAML reads it as false) turns grouping off; `on` or nothing keeps defaults."""
    if value is False or value == "off":
        return {"enabled": False}
    if value is True or value is None or value == "on":
        return {}
    return value


def _similarity(value: object) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        return parse_fraction(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a similarity between 0 and 1, such as 0.8 (or 80%)")
    if not 0 < value <= 1:
        raise ValueError("must be above 0 and at most 1")
    return float(value)


class StoriesSettings(_Model):
    """Near-duplicate items within `window` whose similarity reaches `threshold` are one story."""

    enabled: bool = True
    window: Duration = timedelta(days=2)
    threshold: Annotated[float, BeforeValidator(_similarity)] = 0.8

    @field_validator("window")
    @classmethod
    def _window_positive(cls, value: timedelta) -> timedelta:
        return _positive(value)


class ArchiveSettings(_Model):
    """The last `keep` of items (at most `max_items`), compressed, for `try` and `explain`."""

    keep: Duration = timedelta(days=7)
    max_items: int = Field(default=200_000, ge=1, le=100_000_000)

    @field_validator("keep")
    @classmethod
    def _keep_positive(cls, value: timedelta) -> timedelta:
        return _positive(value)


def _positive(value: timedelta) -> timedelta:
    """Windows are key lifetimes in Redis, which must be at least a second."""
    if value < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return value


Stories = Annotated[StoriesSettings, BeforeValidator(_stories_switch)]


def _css_selector(value: object) -> str:
    """A CSS selector, checked the way worker/sources will compile it (cssselect)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a CSS selector is required")
    from cssselect import SelectorError, parse  # only configs with `select` need it

    try:
        parse(value)
    except SelectorError as e:
        raise ValueError(f"invalid CSS selector: {e}") from e
    return value.strip()


def _jmespath(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a JMESPath expression is required")
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(value)
    except JMESPathError as e:
        raise ValueError(f"invalid JMESPath: {str(e).splitlines()[0][:200]}") from e
    return value.strip()


CssSelector = Annotated[str, BeforeValidator(_css_selector)]
JmesPath = Annotated[str, BeforeValidator(_jmespath)]


class SelectConfig(_Model):
    """`type: html` with CSS selectors: `item` finds each teaser, the others look inside it."""

    item: CssSelector
    link: CssSelector = "a[href]"
    title: CssSelector | None = None
    date: CssSelector | None = None
    summary: CssSelector | None = None
    tags: CssSelector | None = None


class JsonMap(_Model):
    """`type: json`: JMESPath expressions; `items` finds the list, the others look inside an item.
    Unset ones try the usual names (worker/sources/json_api.py)."""

    items: JmesPath | None = None
    id: JmesPath | None = None
    title: JmesPath | None = None
    link: JmesPath | None = None
    published: JmesPath | None = None
    summary: JmesPath | None = None
    categories: JmesPath | None = None
    author: JmesPath | None = None


class FeedConfig(_Model):
    name: str = Field(min_length=1)
    url: HttpUrl
    type: Literal["feed", "html", "json"] = "feed"  # which source adapter reads it (worker/sources)
    interval: Duration | None = None
    tags: list[str] = Field(default_factory=list)
    # Sources that are not feeds (SPEC §8), kept together here.
    articles: bool = False  # fetch each new item's own page once (html and json sources)
    max_articles: int = Field(default=20, ge=1, le=500)  # article pages per poll; the rest wait
    select: SelectConfig | None = None  # html only; without it extraction is automatic
    headers: dict[str, str] = Field(default_factory=dict)  # sent with the source's own request
    map: JsonMap | None = None  # json only
    robots: Literal["obey", "ignore"] = "obey"
    # No new item for this long while the feed answers: `newswatch.feed_silent` on ops.channels
    # (default: learned from the feed's own rhythm; see worker/core/ops.py).
    expect_every: OptionalDuration = None

    @model_validator(mode="after")
    def _keys_fit_the_type(self) -> FeedConfig:
        if self.select is not None and self.type != "html":
            raise ValueError("select: only for type: html")
        if self.map is not None and self.type != "json":
            raise ValueError("map: only for type: json")
        if self.articles and self.type == "feed":
            raise ValueError("articles: only for type: html or json")
        return self

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the entry does (its name aside): a changed feed starts afresh. The
        keys of sources that are not feeds count only when set, so the feeds of an older config
        keep their fingerprint (and their validators, backoff and 410 state) across the upgrade."""
        # expect_every only says when silence is told: changing it must not restart the feed.
        entry = self.model_dump(exclude={"name", "expect_every"})
        for key in _SOURCE_KEYS:
            if entry[key] == FeedConfig.model_fields[key].get_default(call_default_factory=True):
                del entry[key]
        return config_fingerprint(entry)


_SOURCE_KEYS = ("articles", "max_articles", "select", "headers", "map", "robots")


def _quiet_hours(value: object) -> QuietHours | None:
    if value is None or isinstance(value, QuietHours):
        return value
    return parse_quiet_hours(value)


# Written and shown as the text; held as the parsed window (AlertConfig.quiet).
QuietHoursSetting = Annotated[
    QuietHours | None,
    PlainValidator(_quiet_hours),
    PlainSerializer(lambda quiet: None if quiet is None else str(quiet)),
]


class AlertConfig(_Model):
    name: str = Field(min_length=1)
    query: str
    channels: list[str] = Field(default_factory=list)
    topics: list[str] | None = None
    feeds: list[str] | None = None
    digest: OptionalDuration = None
    max_per_hour: int | None = Field(default=None, ge=1)
    quiet: QuietHoursSetting = None  # "22:00-07:00 Europe/Berlin": held, then one digest

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str) -> str:
        problem = query_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def query_problem(query: str) -> str | None:
    """What check-config says about a query that does not parse (`newswatch try` says the same)."""
    try:
        parse_query(query)
    except QuerySyntaxError as e:
        return f"query does not parse: {e}"
    return None


class WebhookChannel(_Model):
    type: Literal["webhook"]
    url: HttpUrl
    secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # At most this many deliveries in flight to this receiver per worker process (default:
    # delivery.concurrency); spares a fragile receiver.
    concurrency: int | None = Field(default=None, ge=1)

    @field_validator("secret")
    @classmethod
    def _secret_format(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            secret_key(value)
        except ValueError as e:
            raise ValueError('must be a Standard Webhooks secret: "whsec_" followed by base64') from e
        return value


class SmtpSettings(_Model):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    tls_verify: bool = True
    ca_file: str | None = None  # trust this CA bundle instead of the system ones (private CAs)
    username: str | None = None
    password: str | None = None


def _mail_address(value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value.strip()):
        raise ValueError("must be one email address like name@example.org")
    return value.strip()


_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
MailAddress = Annotated[str, BeforeValidator(_mail_address)]


class EmailChannel(_Model):
    type: Literal["email"]
    to: list[MailAddress] = Field(min_length=1)
    from_: MailAddress = Field(alias="from")
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    concurrency: int | None = Field(default=None, ge=1)  # SMTP sessions at once, as for webhooks


class LogChannel(_Model):
    type: Literal["log"]


def _apprise_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an Apprise URL is required (slack://..., ntfy://..., json://...)")
    from worker.adapters.apprise_send import url_problem  # Apprise loads only for apprise channels

    problem = url_problem(value.strip())
    if problem:
        raise ValueError(problem)
    return value.strip()


class AppriseChannel(_Model):
    """Any service Apprise knows, by its URL (the URL carries the service's tokens: a secret)."""

    type: Literal["apprise"]
    url: Annotated[str, BeforeValidator(_apprise_url)]
    concurrency: int | None = Field(default=None, ge=1)  # sends at once, as for webhooks


AnyChannel = WebhookChannel | EmailChannel | LogChannel | AppriseChannel
Channel = Annotated[AnyChannel, Field(discriminator="type")]


class OpsSettings(_Model):
    """Feeds that fail or fall silent are told to `channels` (SPEC §11, worker/core/ops.py)."""

    channels: list[str] = Field(default_factory=list)  # configured channel names; checked to exist
    failing_after: Duration = timedelta(hours=1)
    # A feed without expect_every is silent after this many times its longest recent gap
    # between new items (and never before max(6 intervals, 1h)).
    silent_factor: float = Field(default=2.0, ge=1.0, le=100.0)


class Settings(_Model):
    redis: RedisSettings = Field(default_factory=RedisSettings)
    sentry: SentrySettings = Field(default_factory=SentrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    stories: Stories = Field(default_factory=StoriesSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    feeds: list[FeedConfig] = Field(default_factory=list)
    topics: dict[str, list[str]] = Field(default_factory=dict)
    alerts: list[AlertConfig] = Field(default_factory=list)
    channels: dict[str, Channel] = Field(default_factory=dict)
    ops: OpsSettings = Field(default_factory=OpsSettings)

    @field_validator("topics")
    @classmethod
    def _topic_terms_parse(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, terms in value.items():
            try:
                parse_term_list(terms)
            except QuerySyntaxError as e:
                raise ValueError(f"topic {name!r}: {e}") from e
        return value

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    def feed_interval(self, feed: FeedConfig) -> timedelta:
        return feed.interval or self.polling.interval

    def channel(self, name: str) -> AnyChannel:
        if name in self.channels:
            return self.channels[name]
        if name == DEFAULT_CHANNEL:
            return LogChannel(type="log")
        raise KeyError(name)


@dataclass(frozen=True)
class Config:
    """Validated settings plus what is derived from them once: compiled rules, secrets to scrub."""

    settings: Settings
    rules: RuleSet
    secrets: tuple[str, ...]
    path: str
    # Read-only commands only (load_config(read_only=True)): channels whose ${VAR}s are not set
    # here, each with the variables it lacks; a channel that is invalid without them is left out.
    unavailable: Mapping[str, str] = field(default_factory=dict)
    # Where redis.url came from, for messages: the file, REDIS_URL, or make run's record.
    redis_source: str = "redis.url"

    def redact(self, text: str) -> str:
        """The text with every configured secret and any URL password replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


# --- loading -------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(
    node: Any,
    env: Mapping[str, str],
    path: str,
    problems: list[str],
    written: dict[str, tuple[str, str]] | None = None,
    unset: list[tuple[str, str]] | None = None,
) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of the YAML tree. `written` gets,
    per key path interpolated, the value as written and as it came out; `unset`, the key path
    and name of each variable that is not set and has no default."""
    written = {} if written is None else written
    unset = [] if unset is None else unset
    if isinstance(node, dict):
        return {k: interpolate(v, env, _join(path, k), problems, written, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{path}[{i}]", problems, written, unset) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set (write ${{{name}:-default}})")
        unset.append((path, name))
        return ""

    value = _VAR.sub(replace, node)
    if value != node:
        written[path] = (node, value)
    # A whole value that came out empty means "not set" (e.g. secret: ${WEBHOOK_SECRET:-}).
    return None if value == "" and _VAR.fullmatch(node) else value


_QUOTED = re.compile(r"'((?:[^'\\]|\\.)+)'|\"((?:[^\"\\]|\\.)+)\"")


def _hide_interpolated(problems: list[str], written: dict[str, tuple[str, str]]) -> list[str]:
    """Problems about a value written with ${VAR} show it as written, never as it came out: it
    may be a secret put in the wrong place (`timeout: ${SMTP_PASSWORD}`). A message that still
    quotes any part of the value says only that the value is invalid."""
    shown = []
    for problem in problems:
        path, colon, message = problem.partition(": ")
        for where, (template, value) in written.items():
            if not value or not (_within(path, where) or _within(where, path)):
                continue
            message = message.replace(repr(value), repr(template))
            if _quotes_part_of(message, value):
                message = f"invalid value (written {template!r}; not shown: it comes from the environment)"
                break
        shown.append(path + colon + message)
    return shown


def _within(path: str, outer: str) -> bool:
    return path == outer or path.startswith((outer + ".", outer + "["))


def _quotes_part_of(message: str, value: str) -> bool:
    spelled = repr(value)[1:-1]
    if value in message or spelled in message:
        return True
    for match in _QUOTED.finditer(message):
        quoted = match.group(1) or match.group(2)
        if quoted in value or quoted in spelled:
            return True
    return False


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    parts = list(loc)
    for index, part in enumerate(parts):
        # Discriminated unions add the tag to the location; it is not a key the user wrote.
        if index == 2 and parts[0] == "channels" and part in ("webhook", "email", "log", "apprise"):
            continue
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path or "(top level)"


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for err in error.errors(include_input=False, include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "union_tag_invalid":
            message = f"unknown channel type; expected one of {err['ctx']['expected_tags']}"
        elif err["type"] == "union_tag_not_found":
            message = "missing 'type' (webhook, email, log or apprise)"
        problems.append(f"{_error_path(err['loc'])}: {message}")
    return problems


def _names(raw: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    items = raw.get(key)
    if not isinstance(items, list):
        return []
    return [(i, entry.get("name")) for i, entry in enumerate(items) if isinstance(entry, dict)]


def _cross_check(raw: dict[str, Any]) -> list[str]:
    """References between sections: channel and feed names, duplicates. Tolerates malformed shapes."""
    problems = []
    seen: dict[Any, int] = {}
    for i, name in _names(raw, "feeds"):
        if name in seen:
            problems.append(f"feeds[{i}].name: duplicate feed name {name!r} (also feeds[{seen[name]}])")
        seen.setdefault(name, i)
    seen_alerts: dict[Any, int] = {}
    for i, name in _names(raw, "alerts"):
        if name in seen_alerts:
            problems.append(f"alerts[{i}].name: duplicate alert name {name!r}")
        seen_alerts.setdefault(name, i)
    channels = raw.get("channels") if isinstance(raw.get("channels"), dict) else {}
    known_channels = set(channels or {}) | {DEFAULT_CHANNEL}
    alerts = raw.get("alerts") if isinstance(raw.get("alerts"), list) else []
    for i, alert in enumerate(alerts or []):
        if not isinstance(alert, dict):
            continue
        for key, known, what in (("channels", known_channels, "channel"), ("feeds", set(seen), "feed")):
            refs = alert.get(key)
            for j, ref in enumerate(refs if isinstance(refs, list) else []):
                if ref not in known:
                    problems.append(f"alerts[{i}].{key}[{j}]: unknown {what} {ref!r}")
    return problems + _ops_channel_problems(raw, known_channels)


def _ops_channel_problems(raw: dict[str, Any], known_channels: set[Any]) -> list[str]:
    """ops.channels name configured channels, as alerts' channels do."""
    ops = raw.get("ops") if isinstance(raw.get("ops"), dict) else {}
    refs = (ops or {}).get("channels")
    return [
        f"ops.channels[{j}]: unknown channel {ref!r}"
        for j, ref in enumerate(refs if isinstance(refs, list) else [])
        if isinstance(ref, str) and ref not in known_channels
    ]


def _secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret of the config, in each spelling it can take in text, longest first."""
    found: list[str | None] = [settings.sentry.dsn, urlsplit(settings.redis.url).password]
    for feed in settings.feeds:  # an API key in a json source's headers ("Bearer <key>")
        found += [_credential(value) for value in feed.headers.values()]
    for channel in settings.channels.values():
        if isinstance(channel, WebhookChannel):
            # The whole URL is a secret: Slack-, Teams- and Discord-style webhook URLs carry their
            # token in the path, which also travels on its own (httpcore's request target). A
            # short path ("/hook", "/api") is no token, and would be redacted from file names.
            target = request_url(channel.url).target.decode("ascii")
            found += [channel.secret, channel.url, str(httpx.URL(channel.url))]
            found += [target] if len(target) >= _MIN_TOKEN_PATH else []
            found += [urlsplit(channel.url).password, *channel.headers.values()]
        elif isinstance(channel, EmailChannel):
            found.append(channel.smtp.password)
        elif isinstance(channel, AppriseChannel):
            from worker.adapters.apprise_send import url_secrets

            found += url_secrets(channel.url)  # the URL, and each of its tokens on its own
    spellings = {spelling for s in found if s and len(s) >= 4 for spelling in _spellings(s)}
    return tuple(sorted(spellings, key=len, reverse=True))


def _credential(header: str) -> str | None:
    """A header value as a secret; "Bearer" alone (its key unset) is no secret, only a word."""
    value = header.strip()
    return None if value.lower() in _AUTH_SCHEMES else value


_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "apikey", "digest"})
_MIN_TOKEN_PATH = 16  # characters: Slack's, Teams' and Discord's webhook paths are 50 to 150


def _spellings(secret: str) -> set[str]:
    """A secret as text can hold it: as is, inside a Python repr in either quoting (how frame
    variables reach Sentry: a backslash doubled), inside JSON, percent-encoded."""
    return {
        secret,
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # the quoting repr picks when a text holds both quotes
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
    }


def address_warnings(settings: Settings) -> list[str]:
    """Feeds and channels written with a loopback or private address (or `localhost`), which the
    URL guard will refuse while polling.allow_private_addresses is off. Literal addresses only:
    check-config looks nothing up in DNS. No message repeats the address (it may come from the
    environment); the key path says where it is."""
    if settings.polling.allow_private_addresses:
        return []
    hosts = [
        (f"feeds[{i}].url", request_url(feed.url).host.decode()) for i, feed in enumerate(settings.feeds)
    ]
    for name, channel in settings.channels.items():
        if isinstance(channel, WebhookChannel):
            hosts.append((f"channels.{name}.url", request_url(channel.url).host.decode()))
        elif isinstance(channel, EmailChannel):
            hosts.append((f"channels.{name}.smtp.host", channel.smtp.host))
        elif isinstance(channel, AppriseChannel):
            from worker.adapters.apprise_send import url_host

            hosts += [(f"channels.{name}.url", host)] if (host := url_host(channel.url)) else []
    return [
        f"{path}: a {reason} address; newswatch will refuse to connect to it while "
        "polling.allow_private_addresses is off"
        for path, host in hosts
        if (reason := literal_blocked_reason(host))
    ]


def query_warnings(settings: Settings) -> list[str]:
    """Queries that use `and`, `or` or `not` in lower case: valid, and searched as words, which
    is rarely what was meant. check-config asks; the meaning stays as written."""
    queries = [(f"alerts[{i}].query", alert.query) for i, alert in enumerate(settings.alerts)]
    for name, terms in settings.topics.items():
        queries += [(f"topics.{name}[{j}]", t) for j, t in enumerate(terms) if not is_plain_term(t)]
    return [
        f"{path}: {word!r} is searched as a word; did you mean {word.upper()}? (operators are upper "
        f'case; write "{word}" in quotes to search the word and silence this)'
        for path, query in queries
        for word in dict.fromkeys(lowercase_operators(query))
    ]


def build_rules(settings: Settings) -> RuleSet:
    alerts = tuple(
        AlertRule(
            name=alert.name,
            query=parse_query(alert.query),
            channels=tuple(alert.channels) or (DEFAULT_CHANNEL,),
            topics=frozenset(fold(t) for t in alert.topics) if alert.topics is not None else None,
            feeds=frozenset(alert.feeds) if alert.feeds is not None else None,
        )
        for alert in settings.alerts
    )
    topics = tuple(TopicRule(name, parse_term_list(terms)) for name, terms in settings.topics.items())
    return RuleSet(topics, alerts, {feed.name: tuple(feed.tags) for feed in settings.feeds})


# Commands that only read newswatch's state and send nothing: they need no channel secrets.
READ_ONLY_COMMANDS = frozenset({"status", "health", "dashboard", "explain", "try", "preview", "alerts"})


def _spare_channels(
    raw: dict[str, Any], problems: list[str], unset: list[tuple[str, str]]
) -> tuple[list[str], dict[str, str]]:
    """For read-only commands: a ${VAR} of a channel that is not set here (a secret kept only
    where the daemon runs) is no problem. Returns the remaining problems and, per channel, the
    variables it lacks; a channel that does not validate without them is taken out of `raw`
    (references to it were checked already)."""
    channels = raw.get("channels") if isinstance(raw.get("channels"), dict) else None
    lacking: dict[str, list[str]] = {}
    for path, variable in unset:
        for name in channels or {}:
            if _within(path, f"channels.{name}"):
                lacking.setdefault(name, []).append(variable)
    if not lacking or channels is None:
        return problems, {}
    spared = [f"channels.{name}" for name in lacking]
    problems = [p for p in problems if not any(_within(p.split(": ", 1)[0], s) for s in spared)]
    for name in lacking:
        try:
            _CHANNEL.validate_python(channels[name])
        except ValidationError:
            del channels[name]
    return problems, {name: ", ".join(dict.fromkeys(v)) for name, v in lacking.items()}


_CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)


def _use_local_redis(
    raw: dict[str, Any], env: Mapping[str, str], written: dict[str, tuple[str, str]], record: str | None
) -> str:
    """The Redis of a running `make run` for the commands next to it: when REDIS_URL is unset
    and the file leaves redis.url to it (`${REDIS_URL:-…}`, or says nothing), the URL in
    `record` is used, as if REDIS_URL held it. Returns where redis.url comes from."""
    if env.get("REDIS_URL"):
        return "REDIS_URL"
    given = raw.get("redis")
    section: dict[str, Any] = given if isinstance(given, dict) else {}
    template = written.get("redis.url", ("",))[0]
    if record is None or ("url" in section and "${REDIS_URL" not in template):
        return "redis.url"
    try:
        url = Path(record).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError):
        return "redis.url"
    if not url:
        return "redis.url"
    raw["redis"] = {**section, "url": url}
    written["redis.url"] = (f"(the URL in {record})", url)
    return f"{record}, written by `make run`"


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    read_only: bool = False,
    local_redis: str | None = None,
) -> Config:
    """Load, interpolate and validate a config file; raises ConfigError listing every problem.
    `read_only` (status, health, ...: commands that send nothing) spares channels whose ${VAR}s
    are not set; Config.unavailable names them. `local_redis`: the file where a running
    `make run` left its Redis URL; with the process's own environment (env None) that is
    LOCAL_REDIS_RECORD, while an `env` given is taken as all there is."""
    if env is None:
        env, local_redis = os.environ, local_redis or LOCAL_REDIS_RECORD
    path = path or env.get("NEWSWATCH_CONFIG") or DEFAULT_CONFIG
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (redis, feeds, ...)"])
    problems: list[str] = []
    written: dict[str, tuple[str, str]] = {}
    unset: list[tuple[str, str]] = []
    raw = interpolate(raw, env, "", problems, written, unset)
    unset_paths = {p.split(": ", 1)[0] for p in problems}
    redis_source = _use_local_redis(raw, env, written, local_redis)
    for section, key, var in (("redis", "url", "REDIS_URL"), ("sentry", "dsn", "SENTRY_DSN")):
        if env.get(var):
            section_value = raw.get(section)
            raw[section] = {**(section_value if isinstance(section_value, dict) else {}), key: env[var]}
            written[f"{section}.{key}"] = (f"${{{var}}}", env[var])
    problems += _cross_check(raw)
    unavailable: dict[str, str] = {}
    if read_only:
        problems, unavailable = _spare_channels(raw, problems, unset)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        # A value whose variable is unset already has its problem; do not report it twice.
        problems = [p for p in _pydantic_problems(e) if p.split(": ", 1)[0] not in unset_paths] + problems
        settings = None
    if problems or settings is None:
        raise ConfigError(_hide_interpolated(problems, written))
    return Config(settings, build_rules(settings), _secrets_of(settings), path, unavailable, redis_source)
