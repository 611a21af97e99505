"""News websites without a feed, for `type: html` tests: the Eulerpool-style fixture site (the
copy in config/demo/site) and two layouts of our own that the extraction has never been tuned
on. Each site is a dict of routes, path -> (body, content type), served by conftest's
LocalServer from 127.0.0.1.

- "Finanzpost" (/fp/…): a German finance portal with JSON-LD everywhere (an ItemList on the
  listing, NewsArticle on each article), a header menu, a "Meistgelesen" sidebar, a footer; one
  article names DeepSeek only in its body; one has JSON-LD that lies (a future date, lists where
  objects belong).
- "Nordsee-Kurier" (/nk/…): a regional paper with no structured data at all, no semantic tags
  (div soup), windows-1252 declared only in a <meta> tag; teasers with image links, "Mehr
  lesen", "#kommentare" and ?utm_ links to the same story, headlines outside their links,
  kicker, author, pagination, login, newsletter and advertising links, a "Meistgelesen" box.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, LocalServer, Response

Routes = dict[str, tuple[bytes, str]]
HTML = "text/html; charset=utf-8"
SITE_DIR = ROOT / "config" / "demo" / "site"


def fixture_site() -> Routes:
    """config/demo/site: /de/news and its six articles (each file is its path + .html)."""
    routes: Routes = {}
    for path in SITE_DIR.rglob("*.html"):
        routes["/" + str(path.relative_to(SITE_DIR))[: -len(".html")]] = (path.read_bytes(), HTML)
    return routes


def serve(server: LocalServer, routes: Routes) -> None:
    for path, (body, content_type) in routes.items():
        server.routes[path] = Response(body, headers={"Content-Type": content_type})


# --- Finanzpost: JSON-LD ---------------------------------------------------------------------

FP_STORIES = [
    # slug, headline, published (ISO, Berlin), keywords, body paragraphs
    (
        "unternehmen/2025/08/15/chipkonzern-meldet-rekordumsatz-dank-ki-servern-8812",
        "Chipkonzern meldet Rekordumsatz dank KI-Servern",
        "2025-08-15T17:20:00+02:00",
        ["Halbleiter", "Quartalszahlen"],
        [
            "Der Münchner Chipkonzern hat im zweiten Quartal so viel umgesetzt wie nie zuvor.",
            "Vorstandschef Weber verwies auf die Nachfrage chinesischer Kunden: Seit DeepSeek sein "
            "jüngstes Sprachmodell vorgestellt habe, bestellten Rechenzentren deutlich mehr Leistungselektronik.",
        ],
    ),
    (
        "maerkte/2025/08/15/dax-schliesst-mit-leichtem-plus-8810",
        "Dax schließt mit leichtem Plus – Anleger warten auf die Fed",
        "2025-08-15T17:45:00+02:00",
        ["Börse", "Dax"],
        [
            "Der deutsche Leitindex hat den Handel mit einem Plus von 0,3 Prozent beendet.",
            "Im Fokus stand die Notenbank.",
        ],
    ),
    (
        "unternehmen/2025/08/15/reederei-bestellt-zwoelf-neue-containerschiffe-8807",
        "Reederei bestellt zwölf neue Containerschiffe in Südkorea",
        "2025-08-15T14:02:00+02:00",
        ["Logistik", "Schifffahrt"],
        [
            "Die Hamburger Reederei investiert Milliarden in ihre Flotte.",
            "Die Schiffe sollen ab 2028 geliefert werden.",
        ],
    ),
    (
        "politik/2025/08/15/bundesregierung-plant-neue-foerderung-fuer-rechenzentren-8803",
        "Bundesregierung plant neue Förderung für Rechenzentren",
        "2099-01-01T00:00:00+01:00",  # lies: a date in the future
        ["Politik", "Digitales"],
        ["Das Wirtschaftsministerium will den Bau von Rechenzentren mit einem neuen Programm fördern."],
    ),
]
FP_POPULAR = [
    ("maerkte/2025/08/01/gold-auf-rekordhoch-8501", "Gold auf Rekordhoch: Was Anleger jetzt wissen müssen"),
    (
        "ratgeber/2025/07/20/so-sparen-sie-steuern-mit-etfs-8310",
        "So sparen Sie Steuern mit ETFs – fünf Tipps",
    ),
]


def _fp_listing() -> bytes:
    item_list = {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": n + 1,
                "item": {
                    "@type": "NewsArticle",
                    "url": f"/fp/{slug}",
                    "headline": title,
                    "datePublished": date,
                },
            }
            for n, (slug, title, date, _, _) in enumerate(FP_STORIES)
        ],
    }
    org = {"@context": "https://schema.org", "@type": "Organization", "name": "Finanzpost", "url": "/fp/"}
    teasers = "\n".join(
        f"""      <li class="grid__cell"><figure><a href="/fp/{slug}"><img src="/fp/img/{n}.jpg" alt=""></a></figure>
        <div class="cell__body"><a class="cell__kicker" href="/fp/ressort/{slug.split("/")[0]}">{slug.split("/")[0].title()}</a>
        <a href="/fp/{slug}"><span class="cell__headline">{title}</span></a></div></li>"""
        for n, (slug, title, _, _, _) in enumerate(FP_STORIES)
    )
    popular = "\n".join(f'<li><a href="/fp/{slug}">{title}</a></li>' for slug, title in FP_POPULAR)
    return f"""<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Nachrichten | Finanzpost</title>
<script type="application/ld+json">{json.dumps(org)}</script>
<script type="application/ld+json">{json.dumps(item_list)}</script>
<script type="application/ld+json">{{ "this is": not json }}</script>
</head><body>
<div class="skiplinks"><a href="#content">Zum Inhalt springen</a></div>
<header class="masthead"><a href="/fp/"><img src="/fp/logo.svg" alt="Finanzpost"></a>
  <ul class="masthead__ressorts"><li><a href="/fp/ressort/maerkte">Märkte</a></li><li><a href="/fp/ressort/unternehmen">Unternehmen</a></li>
  <li><a href="/fp/ressort/politik">Politik</a></li><li><a href="/fp/ressort/ratgeber">Ratgeber</a></li></ul>
  <a href="/fp/konto/anmelden">Anmelden</a> <a href="/fp/abo/digital-jetzt-testen">Jetzt 4 Wochen Finanzpost Digital testen</a></header>
<div id="content" class="layout">
  <h1>Nachrichten</h1>
  <ul class="grid">
{teasers}
  </ul>
  <aside class="layout__side"><h2>Meistgelesen</h2><ol>{popular}</ol></aside>
</div>
<footer class="colophon"><a href="/fp/impressum">Impressum</a> <a href="/fp/datenschutz">Datenschutz</a>
  <a href="/fp/kontakt">Kontakt</a> <a href="/fp/mediadaten">Mediadaten</a></footer>
</body></html>""".encode()


def _fp_article(slug: str, title: str, date: str, keywords: list[str], paragraphs: list[str]) -> bytes:
    lying = date.startswith("2099")
    article = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "headline": [title, "ein zweiter Titel"] if lying else title,  # a list where text belongs
        "datePublished": date,
        "author": [{"@type": "Person", "name": "Katrin Vogel"}, {"@type": "Person", "name": "Jens Ohm"}],
        "keywords": keywords,
        "articleSection": slug.split("/")[0].title(),
        "publisher": {"@type": "Organization", "name": "Finanzpost"},
    }
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>{title} | Finanzpost</title>
<meta name="description" content="{paragraphs[0]}">
<script type="application/ld+json">{json.dumps(article)}</script>
</head><body>
<header class="masthead"><a href="/fp/">Finanzpost</a><ul class="masthead__ressorts"><li><a href="/fp/ressort/maerkte">Märkte</a></li></ul></header>
<div class="layout"><div class="story"><h1>{title}</h1><div class="story__byline">Von Katrin Vogel und Jens Ohm</div>
{body}
</div><aside class="layout__side"><h2>Meistgelesen</h2><a href="/fp/{FP_POPULAR[0][0]}">{FP_POPULAR[0][1]}</a></aside></div>
<footer class="colophon"><a href="/fp/impressum">Impressum</a></footer>
</body></html>""".encode()


def finanzpost_site() -> Routes:
    routes: Routes = {"/fp/nachrichten": (_fp_listing(), HTML)}
    for slug, title, date, keywords, paragraphs in FP_STORIES:
        routes[f"/fp/{slug}"] = (_fp_article(slug, title, date, keywords, paragraphs), HTML)
    return routes


# --- Nordsee-Kurier: no structured data, windows-1252 -------------------------------------------

NK_STORIES = [
    # slug, headline, date line, tags, paragraphs; "in_link": the headline is the link's text
    (
        "wirtschaft/hafen-hamburg-meldet-rekordumschlag-id41235.html",
        "Hafen Hamburg meldet Rekordumschlag im ersten Halbjahr",
        "15.08.2025 · 16:12 Uhr",
        ["Hafen", "Logistik", "Hamburg"],
        [
            "Der Hamburger Hafen hat im ersten Halbjahr so viele Container umgeschlagen wie nie.",
            "Die Hafenwirtschaft zeigt sich zufrieden.",
        ],
    ),
    (
        "wirtschaft/werft-in-husum-sichert-300-arbeitsplaetze-id41230.html",
        "Werft in Husum sichert 300 Arbeitsplätze",
        "15.08.2025 · 14:40 Uhr",
        ["Werften", "Arbeitsplätze"],
        [
            "Die Werft hat einen Großauftrag für Offshore-Schiffe erhalten.",
            "Die Landesregierung begrüßt die Entscheidung.",
        ],
    ),
    (
        "wirtschaft/start-up-aus-kiel-setzt-auf-chinesische-ki-id41228.html",
        "Start-up aus Kiel baut Übersetzungsdienst für Reedereien",
        "15. August 2025, 11:05 Uhr",
        ["Start-ups", "Kiel"],
        [
            "Ein junges Unternehmen aus Kiel übersetzt Frachtpapiere automatisch.",
            "Dafür nutzt es ein offenes Sprachmodell des chinesischen Anbieters DeepSeek, das auf eigenen Servern läuft.",
        ],
    ),
    (
        "wirtschaft/krabbenfischer-klagen-ueber-niedrige-preise-id41221.html",
        "Krabbenfischer klagen über niedrige Preise an der Küste",
        "14.08.2025 · 18:30 Uhr",
        ["Fischerei"],
        ["Die Krabbenfischer an der Nordseeküste bekommen für ihren Fang so wenig wie seit Jahren nicht."],
    ),
]


def _nk_teaser(n: int, slug: str, title: str) -> str:
    link = f"/nk/{slug}"
    if n == 1:  # headline outside the link; only "Weiterlesen" and the image point to the story
        return f"""<div class="box"><a href="{link}"><img src="/nk/bilder/{n}.jpg" alt="Foto: dpa"></a>
  <div class="dachzeile"><a href="/nk/wirtschaft/">Wirtschaft</a></div><h3>{title}</h3>
  <p>Gute Nachrichten für die Region: Der Auftrag sichert die Beschäftigung für mindestens drei Jahre.</p>
  <a href="{link}">Weiterlesen</a></div>"""
    href = f"{link}?utm_source=startseite&amp;utm_medium=teaser" if n == 2 else link
    return f"""<div class="box"><a href="{link}"><img src="/nk/bilder/{n}.jpg" alt=""></a>
  <div class="dachzeile"><a href="/nk/wirtschaft/">Wirtschaft</a></div>
  <h2><a href="{href}">{title}</a></h2>
  <p>Ein Überblick über die wichtigsten Entwicklungen in der Wirtschaft an der Nordseeküste und im Land.</p>
  <div class="info">Von <a href="/nk/autor/jana-peters/">Jana Peters</a> | <a href="{link}#kommentare">3 Kommentare</a> | <a href="{link}">Mehr lesen</a></div></div>"""


def _nk_listing() -> bytes:
    teasers = "\n".join(_nk_teaser(n, slug, title) for n, (slug, title, _, _, _) in enumerate(NK_STORIES))
    return f"""<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">
<title>Wirtschaft – Nordsee-Kurier</title></head><body>
<div class="kopf"><a href="/nk/"><img src="/nk/logo.gif" alt="Nordsee-Kurier"></a>
<div class="leiste"><a href="/nk/politik/">Politik</a> <a href="/nk/wirtschaft/">Wirtschaft</a> <a href="/nk/sport/">Sport</a>
<a href="/nk/lokales/">Lokales</a> <a href="/nk/login/">Einloggen</a> <a href="/nk/suche/">Suche</a></div></div>
<div class="inhalt"><div class="spalte-links">
<h1>Wirtschaft</h1>
{teasers}
<div class="box"><span>Anzeige</span><h2><a href="/nk/partner/die-besten-tagesgeldkonten-im-vergleich-id99001.html">Die besten Tagesgeldkonten im Vergleich</a></h2></div>
<div class="box"><a href="/nk/newsletter/">Jetzt den Newsletter abonnieren und nichts mehr verpassen</a></div>
<div class="seiten"><a href="/nk/wirtschaft/seite-2/">2</a> <a href="/nk/wirtschaft/seite-3/">3</a> <a href="/nk/wirtschaft/seite-2/">Nächste Seite</a></div>
</div>
<div class="spalte-rechts"><div class="kasten"><h4>Meistgelesen</h4>
<a href="/nk/lokales/sturmflut-an-der-kueste-erwartet-id41100.html">Sturmflut an der Küste erwartet: Deiche werden kontrolliert</a><br>
<a href="/nk/sport/holstein-kiel-gewinnt-nordderby-id41090.html">Holstein Kiel gewinnt Nordderby in letzter Minute</a></div></div>
</div>
<div id="fuss"><a href="/nk/impressum/">Impressum</a> <a href="/nk/datenschutz/">Datenschutz</a> <a href="/nk/agb/">AGB</a>
<a href="/nk/kontakt/">Kontakt und Leserservice des Nordsee-Kuriers</a></div>
</body></html>""".encode("cp1252")


def _nk_article(title: str, date: str, tags: list[str], paragraphs: list[str]) -> bytes:
    body = "\n".join(f'<div class="absatz">{p}</div>' for p in paragraphs)
    tag_links = " | ".join(f'<a href="/nk/thema/{t.lower()}/">{t}</a>' for t in tags)
    return f"""<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">
<title>{title} – Nordsee-Kurier</title></head><body>
<div class="kopf"><a href="/nk/">Nordsee-Kurier</a> <a href="/nk/wirtschaft/">Wirtschaft</a></div>
<div class="inhalt"><div class="spalte-links">
<div class="artikel"><div class="datum">{date}</div><h1>{title}</h1>
{body}
<div class="themen">Themen: {tag_links}</div></div></div></div>
<div id="fuss"><a href="/nk/impressum/">Impressum</a></div>
</body></html>""".encode("cp1252")


def kurier_site() -> Routes:
    # Served without a charset: the page's <meta> is the only word on its encoding.
    routes: Routes = {"/nk/wirtschaft/": (_nk_listing(), "text/html")}
    for slug, title, date, tags, paragraphs in NK_STORIES:
        routes[f"/nk/{slug}"] = (_nk_article(title, date, tags, paragraphs), "text/html")
    return routes


def write_site(routes: Routes, directory: Path) -> None:
    """The routes as files (path + .html), the way config/demo/site keeps the fixture site."""
    for path, (body, _) in routes.items():
        target = directory / (path.strip("/") + ".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
