"""Sources that are not feeds (SPEC §8): listing pages, article pages, JSON APIs, German dates.

Pages are the fixture site (config/demo/site) and two layouts of our own (tests/sites.py) that
the extraction was not written against; all are read the way a poll reads them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.sites import finanzpost_site, fixture_site, kurier_site
from worker.config import FeedConfig, JsonMap, SelectConfig
from worker.core.dates import parse_date
from worker.core.errors import FeedParseError
from worker.core.items import merge_article
from worker.core.models import Item
from worker.sources import Page, read_items
from worker.sources.article import read_article
from worker.sources.discovery import feed_links
from worker.sources.document import parse_html
from worker.sources.teasers import MAX_TEASERS

NOW = datetime(2025, 8, 16, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"


def listing(routes: dict[str, tuple[bytes, str]], path: str, **config: object) -> list[Item]:
    body, content_type = routes[path]
    feed = FeedConfig.model_validate({"name": "site", "url": BASE + path, "type": "html", **config})
    return read_items(feed, Page(BASE + path, body, content_type), NOW).items


def with_article(routes: dict[str, tuple[bytes, str]], item: Item) -> Item:
    assert item.link
    path = item.link.removeprefix(BASE).split("?")[0]
    return merge_article(item, read_article(Page(item.link, *routes[path])), NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15. August 2025, 15:51 Uhr", "2025-08-15T13:51:00+00:00"),  # summer time: UTC+2
        ("[Eulerpool News] · 15.08.2025 · 15:51 Uhr · 0 Kommentare", "2025-08-15T13:51:00+00:00"),
        ("15.01.2025, 15:51 Uhr", "2025-01-15T14:51:00+00:00"),  # winter time: UTC+1
        ("3. März 2024 um 9.05 Uhr", "2024-03-03T08:05:00+00:00"),
        ("15. Aug. 2025 15:51", "2025-08-15T13:51:00+00:00"),
        ("15.08.2025", "2025-08-14T22:00:00+00:00"),  # a day without a time: its start, in Berlin
        ("Fri, 15 Aug 2025 15:51:00 MESZ", "2025-08-15T13:51:00+00:00"),
        ("31.02.2025, 10:00 Uhr", None),
        ("vor 12 Minuten", None),
        ("Version 1.2.2025.3", None),
    ],
)
def test_german_text_dates_are_read_in_berlin_time(text: str, expected: str | None) -> None:
    moment = parse_date(text)
    assert (moment.isoformat() if moment else None) == expected


def test_fixture_listing_yields_exactly_its_six_articles() -> None:
    items = listing(fixture_site(), "/de/news")
    assert [i.title for i in items] == [
        "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
        "Ethereum scheitert erneut an kritischer Widerstandszone",
        "Personalabbau trifft Manager und Führungskräfte mit voller Wucht",
        "Infineon-Aktie gefragt: Bernstein sieht weiter Kurspotenzial",
        "Künstliche Intelligenz könnte den Leerstand von Büroimmobilien erhöhen",
        "iPhone 17e mit Dynamic Island und A19-Chip erwartet",
    ]
    assert all(i.link and "/de/news/" in i.link for i in items)
    assert items[2].canonical_link and "utm_source" not in items[2].canonical_link
    assert items[0].summary.startswith("DeepSeek hat die Einführung")


def test_the_same_listing_read_with_select() -> None:
    select = {"item": "div.news-card", "title": "h3", "summary": "p"}
    items = listing(fixture_site(), "/de/news", select=select)
    assert len(items) == 6 and items[0].title.startswith("DeepSeek verschiebt")


def test_json_ld_layout_uses_its_item_list_not_the_sidebar() -> None:
    items = listing(finanzpost_site(), "/fp/nachrichten")
    assert [i.title for i in items] == [
        "Chipkonzern meldet Rekordumsatz dank KI-Servern",
        "Dax schließt mit leichtem Plus – Anleger warten auf die Fed",
        "Reederei bestellt zwölf neue Containerschiffe in Südkorea",
        "Bundesregierung plant neue Förderung für Rechenzentren",
    ]
    assert items[0].published == datetime(2025, 8, 15, 15, 20, tzinfo=UTC)
    assert items[3].published is None  # its JSON-LD says 2099: a mistake, not news from the future


def test_layout_without_structured_data_yields_one_item_per_story() -> None:
    """Image link, headline, "Mehr lesen", #kommentare and ?utm_ links are one item; kicker,
    author, pagination, login, newsletter, advertising, sidebar and footer links are none."""
    items = listing(kurier_site(), "/nk/wirtschaft/")
    assert [i.title for i in items] == [
        "Hafen Hamburg meldet Rekordumschlag im ersten Halbjahr",
        "Werft in Husum sichert 300 Arbeitsplätze",  # windows-1252, declared only in <meta>
        "Start-up aus Kiel baut Übersetzungsdienst für Reedereien",
        "Krabbenfischer klagen über niedrige Preise an der Küste",
    ]
    assert len({i.id for i in items}) == 4


def test_article_pages_give_date_tags_author_and_main_text() -> None:
    site = fixture_site()
    deepseek, _, _, infineon, _, _ = [with_article(site, i) for i in listing(site, "/de/news")]
    assert deepseek.published == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    assert deepseek.categories == ("Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia")
    assert "Liang Wenfeng" in deepseek.content
    assert infineon.published == datetime(2025, 8, 15, 11, 5, tzinfo=UTC)
    assert infineon.categories == ("Aktien", "Halbleiter", "Infineon", "Analysten")
    assert infineon.author == "Eulerpool News"


def test_article_pages_of_our_own_layouts() -> None:
    fp = finanzpost_site()
    chip, _, _, lying = [with_article(fp, i) for i in listing(fp, "/fp/nachrichten")]
    assert "DeepSeek" in chip.content and "DeepSeek" not in chip.title + chip.summary
    assert chip.author == "Katrin Vogel, Jens Ohm"
    assert lying.title == "Bundesregierung plant neue Förderung für Rechenzentren" and lying.published is None
    nk = kurier_site()
    hafen, werft, kiel, _ = [with_article(nk, i) for i in listing(nk, "/nk/wirtschaft/")]
    assert hafen.categories == ("Hafen", "Logistik", "Hamburg")
    assert hafen.published == datetime(2025, 8, 15, 14, 12, tzinfo=UTC)
    assert werft.categories == ("Werften", "Arbeitsplätze")
    assert "DeepSeek" in kiel.content


def test_script_injected_titles_are_text_and_scripts_are_dropped() -> None:
    page = b"""<html><body><main>
    <div><a href="/news/politik/ein-titel-mit-skript-12345"><h2>Ein Titel <script>alert(1)</script>mit &lt;img src=x onerror=alert(2)&gt; darin</h2></a></div>
    <div><a href="/news/politik/noch-ein-titel-mit-skript-12346" onclick="alert(3)">Noch ein Titel <b>fett</b> und lang genug</a></div>
    </main></body></html>"""
    items = listing({"/news": (page, "text/html")}, "/news")
    assert [i.title for i in items] == [
        "Ein Titel mit <img src=x onerror=alert(2)> darin",
        "Noch ein Titel fett und lang genug",
    ]


def test_broken_nesting_still_yields_the_stories() -> None:
    page = b"""<html><body><div class="list"><div><a href="/a/erste-geschichte-ueber-alles-1001"><h2>Erste Geschichte
    ueber alles</div></a><p>Teaser ohne Ende <div><a href="/a/zweite-geschichte-ueber-vieles-1002">Zweite Geschichte ueber
    vieles und mehr</span></p></td></table><a href="/a/dritte-geschichte-ueber-manches-1003"><h3>Dritte Geschichte ueber manches"""
    items = listing({"/news": (page, "text/html")}, "/news")
    assert [i.title for i in items] == [
        "Erste Geschichte ueber alles",
        "Zweite Geschichte ueber vieles und mehr",
        "Dritte Geschichte ueber manches",
    ]


def test_a_listing_of_2000_links_is_read_up_to_the_cap_with_a_warning() -> None:
    links = "".join(
        f'<li><a href="/n/meldung-nummer-{n}-aus-dem-archiv-{10000 + n}">Meldung Nummer {n} aus dem Archiv</a></li>'
        for n in range(2000)
    )
    body = f"<html><body><main><ul>{links}</ul></main></body></html>".encode()
    feed = FeedConfig(name="big", url=BASE + "/n", type="html")
    parsed = read_items(feed, Page(BASE + "/n", body, "text/html"), NOW)
    assert len(parsed.items) == MAX_TEASERS
    assert parsed.warning == f"the page links to 2000 articles; only the first {MAX_TEASERS} are read"


def test_invalid_json_ld_is_skipped_and_lists_where_objects_belong_are_read() -> None:
    page = b"""<html><head>
    <script type="application/ld+json">{"@type": "ItemList", "itemListElement": [</script>
    <script type="application/ld+json">[{"@type": ["NewsArticle"], "url": ["/s/eine-geschichte-1"], "headline": [["Eine Geschichte aus Listen"]], "datePublished": [2025]}, "nonsense", 7]</script>
    <script type="application/ld+json">{"@type": "ItemList", "itemListElement": {"@type": "ListItem", "url": "/s/zwei-geschichte-2", "name": {"@value": "Zweite Geschichte"}}}</script>
    </head><body></body></html>"""
    items = listing({"/s/": (page, "text/html")}, "/s/")
    assert [(i.title, i.link) for i in items] == [
        ("Eine Geschichte aus Listen", BASE + "/s/eine-geschichte-1"),
        ("Zweite Geschichte", BASE + "/s/zwei-geschichte-2"),
    ]
    assert items[0].published is None


@pytest.mark.parametrize("reader", ["html", "article", "discovery"])
def test_a_body_naming_a_local_file_is_never_opened(tmp_path: Path, reader: str) -> None:
    """Issue 20, point 1, for every HTML reader: a page whose body is a local path (or a URL) is
    that text, nothing more; no library opens or fetches it. (The JSON reader is json.loads,
    which opens nothing by construction.)"""
    secret = tmp_path / "secret.html"
    secret.write_text(
        '<html><head><meta property="og:title" content="SECRET-TITLE"></head><body><main><article>'
        '<h1>SECRET-TITLE</h1><a href="/x/secret-story-link-12345"><h2>SECRET-TITLE in a link</h2></a>'
        "<p>SECRET-TEXT</p></article></main></body></html>"
    )
    for body in (str(secret).encode(), f"file://{secret}".encode()):
        page = Page(BASE + "/p", body, "text/html")
        try:
            if reader == "html":
                seen = repr(read_items(FeedConfig(name="h", url=BASE + "/p", type="html"), page, NOW))
            elif reader == "article":
                seen = repr(read_article(page))
            else:
                seen = repr(feed_links(parse_html(body), BASE))
        except FeedParseError as e:
            seen = str(e)
        assert "SECRET" not in seen


EULERPOOL_API = {
    "data": [
        {
            "headline": "DeepSeek verschiebt Modellstart",
            "realUrl": "https://eulerpool.example/de/news/deepseek-4711",
            "url": "https://api.example/n/4711",
            "datetime": 1755265860,
            "summary": "<p>Huawei-Chips</p>",
            "category": "Finanzen / KI / DeepSeek",
        },
        {
            "headline": "Ohne realUrl",
            "url": "https://eulerpool.example/n/2",
            "datetime": "2025-08-15T13:00:00Z",
        },
        "not an object",
    ]
}


def test_json_source_maps_an_api_with_jmespath() -> None:
    config = FeedConfig(
        name="api",
        url="https://api.example/news",
        type="json",
        map=JsonMap(
            items="data",
            title="headline",
            link="realUrl || url",
            published="datetime",
            summary="summary",
            categories="category",
        ),
    )
    page = Page(config.url, json.dumps(EULERPOOL_API).encode(), "application/json")
    first, second = read_items(config, page, NOW).items
    assert first.link == "https://eulerpool.example/de/news/deepseek-4711"
    assert first.published == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)  # epoch seconds
    assert first.categories == ("Finanzen", "KI", "DeepSeek") and first.summary == "Huawei-Chips"
    assert second.link == "https://eulerpool.example/n/2" and second.published is not None


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"<html><body>Wartung</body></html>", "text/html", "not JSON: text/html"),
        (
            b'{"error": {"message": "invalid API key"}}',
            "application/json",
            "the API answered an error: invalid API key",
        ),
        (
            b'{"status": 401, "message": "Unauthorized"}',
            "application/json",
            "the API answered an error: Unauthorized",
        ),
        (b"{not json", "application/json", "invalid JSON"),
        (b'{"data": {"items": 3}}', "application/json", "no list of items in the JSON (check map.items)"),
    ],
)
def test_json_source_says_what_is_wrong(body: bytes, content_type: str, message: str) -> None:
    config = FeedConfig(name="api", url="https://api.example/news", type="json", map=JsonMap(items="data"))
    with pytest.raises(FeedParseError) as error:
        read_items(config, Page(config.url, body, content_type), NOW)
    assert str(error.value).startswith(message)


def test_a_feed_url_answering_html_names_the_feeds_the_page_links_to() -> None:
    page = b'<html><head><link rel="alternate" type="application/rss+xml" href="/de/rss"></head><body>News</body></html>'
    with pytest.raises(FeedParseError) as error:
        read_items(FeedConfig(name="f", url=BASE + "/de"), Page(BASE + "/de", page, "text/html"), NOW)
    assert str(error.value) == f"not a feed: text/html (the page links to {BASE}/de/rss)"


def test_select_config_is_checked_at_load() -> None:
    with pytest.raises(ValueError, match="invalid CSS selector"):
        SelectConfig(item="div[")


CARD_LAYOUT = b"""<!doctype html><html lang="de"><body>
<header><a href="/">Startseite</a><ul class="navigation"><li><a href="/inland">Inland</a></li><li><a href="/wirtschaft">Wirtschaft</a></li></ul></header>
<main><div class="teaser-grid">
  <div class="teaser"><a class="teaser__link" href="/wirtschaft/unternehmen/deepseek-100.html">
    <div class="teaser__topline">KI-Entwickler</div>
    <div class="teaser__headline">DeepSeek verschiebt Start seines neuen Modells</div>
    <p class="teaser__shorttext">Der chinesische KI-Entwickler hat Probleme mit Huawei-Chips. Nun greift er wieder auf Nvidia zur\xc3\xbcck, berichten Insider aus dem Umfeld des Unternehmens.</p></a></div>
  <div class="teaser"><a class="teaser__link" href="/wirtschaft/konjunktur/ifo-index-102.html">
    <span>Konjunktur</span><span>Ifo-Index steigt zum dritten Mal in Folge</span></a></div>
  <div class="teaser"><a class="teaser__link" href="/wirtschaft/index.html"><span>Alle Meldungen aus der Wirtschaft im \xc3\x9cberblick</span></a></div>
</div></main>
<footer><a href="/impressum.html">Impressum</a></footer></body></html>"""

WORDPRESS_LAYOUT = b"""<!doctype html><html><body class="blog">
<div id="page"><header id="masthead"><nav id="site-navigation" class="main-navigation"><a href="/category/maerkte/">M\xc3\xa4rkte</a></nav></header>
<div id="primary" class="content-area"><main id="main">
<article class="post"><header class="entry-header"><h2 class="entry-title"><a href="https://127.0.0.1:8000/2025/08/15/zinsen/" rel="bookmark">Warum die Zinsen jetzt wieder steigen</a></h2>
  <div class="entry-meta"><a href="/author/anna/">Anna</a> in <a href="/category/maerkte/">M\xc3\xa4rkte</a></div></header>
  <div class="entry-summary"><p>Die Notenbanken sind sich uneins, und die Anleihem\xc3\xa4rkte reagieren nerv\xc3\xb6s auf jede Andeutung.</p>
  <a class="more-link" href="https://127.0.0.1:8000/2025/08/15/zinsen/#more-123">Weiterlesen <span>\xe2\x80\x9eWarum die Zinsen\xe2\x80\x9c</span></a></div></article>
<article class="post"><header class="entry-header"><h2 class="entry-title"><a href="https://127.0.0.1:8000/2025/08/14/gold/">Gold bleibt gefragt wie lange nicht</a></h2></header></article>
<nav class="navigation pagination"><a class="page-numbers" href="/page/2/">2</a> <a class="next page-numbers" href="/page/2/">N\xc3\xa4chste Beitr\xc3\xa4ge aus dem Blog</a></nav>
</main></div>
<aside id="secondary" class="widget-area"><section class="widget"><h2>Neueste Beitr\xc3\xa4ge</h2><ul><li><a href="/2025/08/01/alte-geschichte/">Eine alte Geschichte vom Anfang des Monats</a></li></ul></section></aside>
</div></body></html>"""


def test_card_links_and_short_html_slugs_of_a_broadcaster_layout() -> None:
    items = listing({"/wirtschaft": (CARD_LAYOUT, "text/html")}, "/wirtschaft")
    assert [i.title for i in items] == [
        "DeepSeek verschiebt Start seines neuen Modells",
        "Ifo-Index steigt zum dritten Mal in Folge",
    ]
    assert items[0].summary.startswith("Der chinesische KI-Entwickler")


def test_a_blog_layout_with_widgets_and_pagination() -> None:
    items = listing({"/": (WORDPRESS_LAYOUT, "text/html")}, "/")
    assert [i.title for i in items] == [
        "Warum die Zinsen jetzt wieder steigen",
        "Gold bleibt gefragt wie lange nicht",
    ]


def test_an_item_list_naming_only_some_stories_or_only_their_links() -> None:
    teasers = "".join(
        f'<div><h2><a href="/n/geschichte-nummer-{n}-1000{n}">Geschichte Nummer {n} des Tages</a></h2></div>'
        for n in range(4)
    )
    item_list = {"@type": "ItemList", "itemListElement": [
        {"@type": "ListItem", "position": 1, "url": "/n/geschichte-nummer-2-10002"},
        "/n/geschichte-nummer-3-10003",
        {"@type": "ListItem", "position": 3, "url": "/n/nur-im-json-ld-ohne-titel-999"},
    ]}  # fmt: skip
    page = f'<html><head><script type="application/ld+json">{json.dumps(item_list)}</script></head><body><main>{teasers}</main></body></html>'
    items = listing({"/n/": (page.encode(), "text/html")}, "/n/")
    assert [i.title for i in items] == [
        "Geschichte Nummer 2 des Tages",  # the publisher's list first, titled by the teasers
        "Geschichte Nummer 3 des Tages",
        "Geschichte Nummer 0 des Tages",  # then what else the page shows: nothing is dropped
        "Geschichte Nummer 1 des Tages",
    ]


def test_a_microdata_item_list() -> None:
    page = b"""<html><body><div itemscope itemtype="https://schema.org/ItemList">
    <div itemprop="itemListElement" itemscope itemtype="https://schema.org/NewsArticle"><a itemprop="url" href="/x/a">
      <span itemprop="headline">Mikrodaten: die erste Geschichte</span></a>
      <time itemprop="datePublished" datetime="2025-08-15T10:00:00+02:00">15.08.</time></div>
    <div itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><a itemprop="url" href="/x/b">
      <span itemprop="name">Mikrodaten: die zweite Geschichte</span></a></div></div></body></html>"""
    items = listing({"/x/": (page, "text/html")}, "/x/")
    assert [(i.title, i.link) for i in items] == [
        ("Mikrodaten: die erste Geschichte", BASE + "/x/a"),
        ("Mikrodaten: die zweite Geschichte", BASE + "/x/b"),
    ]
    assert items[0].published == datetime(2025, 8, 15, 8, tzinfo=UTC)


def test_a_date_the_story_mentions_is_not_its_publication_date() -> None:
    page = """<html><body><article><h1>Neues Gesetz für Rechenzentren beschlossen</h1>
    <p>Am 3. März 2024 hatte das Kabinett den ersten Entwurf vorgelegt; seitdem wurde über jede Einzelheit
    gestritten, bis der Bundestag am Donnerstag zustimmte und die Länder keinen Einspruch erhoben.</p>
    <div class="byline">Von Max Muster · 14.08.2025, 18:05 Uhr</div></article></body></html>""".encode()
    article = read_article(Page(BASE + "/a", page, "text/html"))
    from worker.core.dates import first_date

    assert first_date(article.dates, NOW) == datetime(2025, 8, 14, 16, 5, tzinfo=UTC)


def test_relative_links_follow_the_pages_base_href() -> None:
    """`<base href="/de/">` on /start/seite: "news/…" is /de/news/…, not /start/news/…."""
    body = b"""<html><head><base href="/de/"></head><body><main>
    <article><a href="news/ki/deepseek-verschiebt-modellstart-4711.html"><h2>DeepSeek verschiebt
    Modellstart nach Problemen mit Huaweis KI-Chips</h2></a></article></main></body></html>"""
    feed = FeedConfig(name="base", url=BASE + "/start/seite", type="html")
    (item,) = read_items(feed, Page(BASE + "/start/seite", body, "text/html"), NOW).items
    assert item.link == BASE + "/de/news/ki/deepseek-verschiebt-modellstart-4711.html"
