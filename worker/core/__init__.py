"""The pure core: plain functions over plain data. No Redis, RQ, HTTP, SMTP or feedparser here."""
