"""Adapters: one module per outside thing (HTTP, feed parsing, Redis, RQ, webhook, log sink)."""
