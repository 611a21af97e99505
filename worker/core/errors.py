"""One exception hierarchy for everything newswatch raises on purpose."""


class NewswatchError(Exception):
    """Base of every expected newswatch failure."""


class ConfigError(NewswatchError):
    """The configuration is invalid; `problems` lists each one as 'key.path: message'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class QuerySyntaxError(NewswatchError):
    """An alert or topic query does not parse."""


class FetchError(NewswatchError):
    """A feed could not be fetched; the message is meant for people (status, logs)."""


class TransientFetchError(FetchError):
    """The fetch failed on the way (timeout, refused or dropped connection, DNS): the same
    request may well succeed later."""


class FeedParseError(NewswatchError):
    """A body was fetched but is not a feed we can read."""


class DeliveryError(NewswatchError):
    """An alert could not be delivered through a channel; it will be retried.

    `retry_after` (seconds) is the receiver's own wish (HTTP Retry-After), honoured if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClaimHeldError(DeliveryError):
    """Another worker holds this delivery's claim (or held it and died): try again when the
    claim's lease ends. Not a failed try: it does not use up the delivery's retries."""


class PermanentDeliveryError(DeliveryError):
    """An alert can never be delivered through this channel (e.g. HTTP 410): do not retry."""


class FeedGoneError(FetchError):
    """The feed answered 410 Gone: it is disabled until the config changes."""
