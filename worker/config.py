"""The one typed configuration: YAML + ${VAR} interpolation -> validated Settings -> compiled rules.

Everything the daemon reads from its environment is read here, once; the result is passed down.
Every problem is reported by its key path (`alerts[1].channels[0]: unknown channel 'slak'`), and
no message ever repeats a configured value, so secrets cannot leak through errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from worker.core.errors import ConfigError, QuerySyntaxError
from worker.core.poll import config_fingerprint
from worker.core.query import parse_query, parse_term_list
from worker.core.render import secret_key
from worker.core.rules import AlertRule, RuleSet, TopicRule
from worker.core.text import fold
from worker.core.units import parse_duration, parse_fraction, parse_size

DEFAULT_CONFIG = "config/newswatch.yaml"
DEFAULT_CHANNEL = "console"

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
    return value.strip()


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Model):
    url: str = "redis://localhost:6379/0"

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class SentrySettings(_Model):
    dsn: str | None = None
    environment: str = "production"


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


class DedupeSettings(_Model):
    ttl: Duration = timedelta(days=30)


class DeliverySettings(_Model):
    retries: list[Duration] = Field(
        default_factory=lambda: [parse_duration(d) for d in ("10s", "1m", "5m", "15m", "1h")]
    )
    timeout: Duration = timedelta(seconds=10)
    # Deliveries in flight at once per worker process, first tries and retries alike (SPEC §9).
    concurrency: int = Field(default=16, ge=1, le=256)


class FeedConfig(_Model):
    name: str = Field(min_length=1)
    url: HttpUrl
    type: Literal["feed"] = "feed"  # which source adapter reads it (worker/sources)
    interval: Duration | None = None
    tags: list[str] = Field(default_factory=list)

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the entry does (its name aside): a changed feed starts afresh."""
        return config_fingerprint(self.model_dump(exclude={"name"}))


class AlertConfig(_Model):
    name: str = Field(min_length=1)
    query: str
    channels: list[str] = Field(default_factory=list)
    topics: list[str] | None = None
    feeds: list[str] | None = None
    digest: OptionalDuration = None
    max_per_hour: int | None = Field(default=None, ge=1)

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str) -> str:
        try:
            parse_query(value)
        except QuerySyntaxError as e:
            raise ValueError(f"query does not parse: {e}") from e
        return value


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


Channel = Annotated[WebhookChannel | EmailChannel | LogChannel, Field(discriminator="type")]


class Settings(_Model):
    redis: RedisSettings = Field(default_factory=RedisSettings)
    sentry: SentrySettings = Field(default_factory=SentrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    feeds: list[FeedConfig] = Field(default_factory=list)
    topics: dict[str, list[str]] = Field(default_factory=dict)
    alerts: list[AlertConfig] = Field(default_factory=list)
    channels: dict[str, Channel] = Field(default_factory=dict)

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

    def channel(self, name: str) -> WebhookChannel | EmailChannel | LogChannel:
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

    def redact(self, text: str) -> str:
        """The text with every configured secret and any URL password replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


# --- loading -------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(node: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of the YAML tree."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, _join(path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set (write ${{{name}:-default}})")
        return ""

    value = _VAR.sub(replace, node)
    # A whole value that came out empty means "not set" (e.g. secret: ${WEBHOOK_SECRET:-}).
    return None if value == "" and _VAR.fullmatch(node) else value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    parts = list(loc)
    for index, part in enumerate(parts):
        # Discriminated unions add the tag to the location; it is not a key the user wrote.
        if index == 2 and parts[0] == "channels" and part in ("webhook", "email", "log"):
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
            message = "missing 'type' (webhook, email or log)"
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
    return problems


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would silently keep only the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError([f"{path}: file not found"]) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read ({e.__class__.__name__})"]) from e
    try:
        return yaml.load(text, Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}{where}: {problem}"]) from e


def _secrets_of(settings: Settings) -> tuple[str, ...]:
    found: list[str | None] = [settings.sentry.dsn, urlsplit(settings.redis.url).password]
    for channel in settings.channels.values():
        if isinstance(channel, WebhookChannel):
            found += [channel.secret, urlsplit(channel.url).password, *channel.headers.values()]
        elif isinstance(channel, EmailChannel):
            found.append(channel.smtp.password)
    return tuple(sorted({s for s in found if s and len(s) >= 4}, key=len, reverse=True))


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


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, interpolate and validate a config file; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    path = path or env.get("NEWSWATCH_CONFIG") or DEFAULT_CONFIG
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (redis, feeds, ...)"])
    problems: list[str] = []
    raw = interpolate(raw, env, "", problems)
    unset_paths = {p.split(": ", 1)[0] for p in problems}
    for section, key, var in (("redis", "url", "REDIS_URL"), ("sentry", "dsn", "SENTRY_DSN")):
        if env.get(var):
            section_value = raw.get(section)
            raw[section] = {**(section_value if isinstance(section_value, dict) else {}), key: env[var]}
    problems += _cross_check(raw)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        # A value whose variable is unset already has its problem; do not report it twice.
        problems = [p for p in _pydantic_problems(e) if p.split(": ", 1)[0] not in unset_paths] + problems
        settings = None
    if problems or settings is None:
        raise ConfigError(problems)
    return Config(settings, build_rules(settings), _secrets_of(settings), path)
