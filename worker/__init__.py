"""newswatch: poll news feeds, dedupe items in Redis, fire keyword alerts to channels."""

__version__ = "0.1.0"
