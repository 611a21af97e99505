"""The pure parts of issue 20's fixes: printable text, item caps, query nesting, YAML limits,
secret spellings and structural Sentry scrubbing, literal private addresses."""

from __future__ import annotations

import json
import logging

from worker.core.text import printable
from worker.logs import JsonFormatter, TextFormatter


def test_printable_escapes_what_steers_a_terminal_and_keeps_the_rest() -> None:
    assert printable("text/\x1b[2J\x9b31m\x07") == "text/\\x1b[2J\\x9b31m\\x07"
    assert printable("a\u202eb\u2066c\u2069d\u200fe\u061cf") == "a\\u202eb\\u2066c\\u2069d\\u200fe\\u061cf"
    assert printable("line\nbreak\r\tand\u2028sep\ud800") == "line\\nbreak\\r\\tand\\u2028sep\\ud800"
    kept = "Grüße, 東京, 👨‍👩‍👧 (ZWJ), Trenn\u00adstrich, ß"
    assert printable(kept) is kept


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("newswatch", logging.WARNING, __file__, 1, message, args, exc_info)


def test_log_formatters_make_message_arguments_and_tracebacks_printable() -> None:
    try:
        raise ValueError("bad \x1b[2J value")
    except ValueError as e:
        error = e
    record = _record("feed=%s failed: %s\n%s", "f\u202e", "text/\x1b]8;;x\x07", "line two", exc=error)
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "feed=f\\u202e failed: text/\\x1b]8;;x\\x07\nline two" in text  # our own line break stays
    assert "ValueError: bad \\x1b[2J value" in text
    entry = json.loads(JsonFormatter().format(_record("C1 \x9b and bidi \u2066", exc=error)))
    assert entry["message"] == "C1 \\x9b and bidi \\u2066" and "\\x1b[2J" in entry["exception"]
