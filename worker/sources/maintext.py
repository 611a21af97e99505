"""An article's main text: the words of the story, not of the page around it, so an alert on
"DeepSeek" fires for a story that names DeepSeek in its body and not for one whose sidebar
links to it.

First the article's region without chrome (worker/sources/chrome.py: navigation, sidebars,
"Meistgelesen" boxes, ads, captions). Then justext sorts its paragraphs into text and
boilerplate by length, link density and the share of the language's stop words, working on
that tree (never on a string: see worker/sources/document.py). An article too short for
justext to judge (a few short paragraphs) keeps the region's text as it is.
"""

from __future__ import annotations

import functools
import logging

import lxml.html

from worker.sources.chrome import without_chrome
from worker.sources.document import text_of

log = logging.getLogger(__name__)

MAX_TEXT = 100_000  # characters kept: any article, bounded for the rest
ENOUGH = 200  # characters of text justext must find for its judgement to be taken
# <html lang> -> justext's stop-word list; other languages are judged without stop words.
_STOPLISTS = {
    "de": "German", "en": "English", "fr": "French", "it": "Italian", "es": "Spanish",
    "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "sv": "Swedish", "da": "Danish",
    "fi": "Finnish", "cs": "Czech", "no": "Norwegian_Bokmal", "nb": "Norwegian_Bokmal",
}  # fmt: skip


def main_text(tree: lxml.html.HtmlElement, region: lxml.html.HtmlElement) -> str:
    """The story's text: justext's paragraphs of the cleaned region, else the region's text."""
    cleaned = without_chrome(region)
    try:
        text = _justext(cleaned, (tree.get("lang") or "").split("-")[0].lower())
    except Exception as e:  # justext failing on one odd page must not cost the item its text
        log.warning("main text extraction failed: %s", e.__class__.__name__)
        text = ""
    return (text if len(text) >= ENOUGH else text_of(cleaned))[:MAX_TEXT]


@functools.cache
def _stoplist(name: str) -> frozenset[str]:
    """justext reads and builds a stop list on every call (a fifth of an article's reading)."""
    import justext

    return frozenset(justext.get_stoplist(name))


def _justext(region: lxml.html.HtmlElement, language: str) -> str:
    # justext is imported here: only processes that read article pages load its stop words.
    from justext.core import (
        ParagraphMaker,
        classify_paragraphs,
        preprocessor,
        revise_paragraph_classification,
    )

    name = _STOPLISTS.get(language)
    stoplist = _stoplist(name) if name else frozenset()
    threshold = {} if name else {"stopwords_low": 0, "stopwords_high": 0}  # language-independent
    paragraphs = ParagraphMaker.make_paragraphs(preprocessor(region))
    classify_paragraphs(paragraphs, stoplist, **threshold)
    revise_paragraph_classification(paragraphs)
    return "\n".join(p.text for p in paragraphs if not p.is_boilerplate)
