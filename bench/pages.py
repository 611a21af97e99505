"""What reading a web page costs (SPEC §8 sources): per listing page and per article page, on the
fixture site and our own layouts (tests/sites.py), in one warm process, split by library.

    python -m bench.pages [REPEAT]    prints a table of milliseconds per page (median of REPEAT)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tests.sites import finanzpost_site, fixture_site, kurier_site
from worker.config import FeedConfig
from worker.sources import Page, read_items, structured
from worker.sources.article import _article_region, read_article
from worker.sources.document import parse_html
from worker.sources.maintext import main_text
from worker.sources.teasers import article_links


def _median_ms(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _archive() -> tuple[bytes, str]:
    links = "".join(
        f'<li><a href="/a/meldung-nummer-{n}-aus-dem-archiv-{10000 + n}">Meldung Nummer {n} aus dem Archiv</a></li>'
        for n in range(2000)
    )
    return f"<html><body><main><ul>{links}</ul></main></body></html>".encode(), "text/html"


def main() -> int:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    base = "http://127.0.0.1:8000"
    fixture, fp, nk = fixture_site(), finanzpost_site(), kurier_site()
    listings = {
        "fixture /de/news": fixture["/de/news"],
        "Finanzpost (JSON-LD)": fp["/fp/nachrichten"],
        "Nordsee-Kurier (no structured data)": nk["/nk/wirtschaft/"],
        "2,000 links": _archive(),
    }
    articles = {
        "fixture DeepSeek (German text date)": next(v for k, v in fixture.items() if "deepseek" in k),
        "fixture Infineon (JSON-LD)": next(v for k, v in fixture.items() if "infineon" in k),
        "Finanzpost article": next(v for k, v in fp.items() if "chipkonzern" in k),
        "Nordsee-Kurier article": next(v for k, v in nk.items() if "hafen" in k),
    }
    now = datetime.now(UTC)
    feed = FeedConfig(name="bench", url=base + "/", type="html")
    read_article(Page(base, *articles["fixture Infineon (JSON-LD)"]))  # imports and caches, once
    print(f"{'listing page':40} {'bytes':>8} {'whole':>8} {'parse':>8} {'extruct':>8} {'links':>8}")
    for name, (body, content_type) in listings.items():
        tree = parse_html(body, content_type)
        print(
            f"{name:40} {len(body):8d} "
            f"{_median_ms(lambda b=body, c=content_type: read_items(feed, Page(base + '/', b, c), now), repeat):8.2f} "
            f"{_median_ms(lambda b=body, c=content_type: parse_html(b, c), repeat):8.2f} "
            f"{_median_ms(lambda t=tree: structured.things(t, base), repeat):8.2f} "
            f"{_median_ms(lambda t=tree: article_links(t, base + '/'), repeat):8.2f}"
        )
    print(f"\n{'article page':40} {'bytes':>8} {'whole':>8} {'parse':>8} {'extruct':>8} {'text':>8}")
    for name, (body, content_type) in articles.items():
        tree = parse_html(body, content_type)
        print(
            f"{name:40} {len(body):8d} "
            f"{_median_ms(lambda b=body, c=content_type: read_article(Page(base, b, c)), repeat):8.2f} "
            f"{_median_ms(lambda b=body, c=content_type: parse_html(b, c), repeat):8.2f} "
            f"{_median_ms(lambda t=tree: structured.things(t, base), repeat):8.2f} "
            f"{_median_ms(lambda t=tree: main_text(t, _article_region(t)), repeat):8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
