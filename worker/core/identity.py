"""Item identity: which items are 'the same story' (SPEC §4), as short versioned hashes.

The hash input starts with a version tag; changing how identity is computed means a new
version, so old seen-keys simply expire instead of being misread.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from worker.core.models import utc_iso

IDENTITY_VERSION = "v1"


def _digest(*parts: str, size: int = 12) -> str:
    data = "\x1f".join((IDENTITY_VERSION, *parts)).encode("utf-8", "surrogatepass")
    raw = hashlib.blake2b(data, digest_size=size).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def primary_identity(
    feed: str, guid: str | None, link: str | None, title: str, published: datetime | None
) -> str:
    """Feed + GUID; without a GUID, feed + link; without either, feed + title + published date."""
    if guid:
        return _digest("guid", feed, guid)
    if link:
        return _digest("link", feed, link)
    return _digest("text", feed, title, utc_iso(published) if published else "")


def link_identity(canonical: str | None) -> str | None:
    """The second identity, shared across feeds: the canonical link."""
    return _digest("canonical", canonical) if canonical else None


def story_id(primary: str, link: str | None) -> str:
    """The item id shown to users and receivers, and the identity that decides 'seen': the
    canonical link when there is one (a new GUID on a known link is the same story; a known GUID
    on a new link is another story), else the primary identity."""
    return link or primary


_TAG_BITS = 31
_TAG_MASK = (1 << _TAG_BITS) - 1


def _fingerprint(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & _TAG_MASK


def seen_tag(feed: str, guid: str | None, link: str | None, title: str, published: datetime | None) -> int:
    """The value stored under a story's seen-key: which feed saw it (the high 31 bits, never 0)
    and under which GUID (else link, else title and date: the low 31 bits). A later sighting of
    the story compares its own tag with it (see `guid_changed`). One integer below 2**62: Redis
    keeps it in the key's own object, no allocation; a string would cost ~16 bytes per item."""
    if guid:
        own = f"guid\x1f{guid}"
    elif link:
        own = f"link\x1f{link}"
    else:
        own = f"text\x1f{title}\x1f{utc_iso(published) if published else ''}"
    return (_fingerprint(feed) or 1) << _TAG_BITS | _fingerprint(own)


def guid_changed(stored: int, tag: int) -> bool:
    """GUID churn: the same feed shows a story it showed before under another GUID. The same
    story in another feed (syndication, or a feed renamed in the config) is no churn. Tags
    written before the feed was part of them (below 2**31) never count."""
    return stored >> _TAG_BITS == tag >> _TAG_BITS and stored != tag


def delivery_id(alert: str, item: str, channel: str) -> str:
    """Same (alert, item, channel) -> same id on every try, so receivers can drop repeats."""
    return "msg_" + _digest("delivery", alert, item, channel, size=15)
