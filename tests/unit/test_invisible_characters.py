"""Invisible characters, unusual spaces and dashes in items and queries (issue 19), and the
offset map from normalised text back to the text as the feed wrote it (for highlights)."""

from __future__ import annotations

import random
import unicodedata

import pytest

from worker.core.charsets import DASHES, IGNORABLE_RANGES
from worker.core.mail import subject_line
from worker.core.matcher import (
    TermIndex,
    _mapped_by_characters,
    _mapped_in_place,
    normalize,
    normalize_mapped,
)
from worker.core.query import all_terms, evaluate, make_term, parse_query, parse_term_list
from worker.core.text import fold, one_line

# One of each kind the issue names, and the odd ones of the property (marks, fillers, astral).
INVISIBLE = {
    "soft hyphen": "\u00ad",
    "zero width space": "\u200b",
    "zero width non-joiner": "\u200c",
    "zero width joiner": "\u200d",
    "word joiner": "\u2060",
    "BOM": "\ufeff",
    "left-to-right mark": "\u200e",
    "right-to-left override": "\u202e",
    "first strong isolate": "\u2068",
    "variation selector 16": "\ufe0f",
    "combining grapheme joiner": "\u034f",
    "hangul filler": "\u3164",
    "mongolian vowel separator": "\u180e",
    "tag latin small a": "\U000e0061",
    "variation selector 17": "\U000e0100",
}
SPACES = {
    "no-break space": "\u00a0",
    "narrow no-break space": "\u202f",
    "figure space": "\u2007",
    "thin space": "\u2009",
    "ideographic space": "\u3000",
    "line separator": "\u2028",
}
DASH = {"non-breaking hyphen": "\u2011", "en dash": "\u2013", "em dash": "\u2014", "hyphen": "\u2010"}


def matches(query: str, title: str = "", summary: str = "", categories: tuple[str, ...] = ()) -> bool:
    node = parse_query(query)
    found = TermIndex.of(t.key for t in all_terms(node)).scan(title, [summary], categories)
    return evaluate(node, found)


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_an_invisible_character_inside_a_word_or_phrase_is_not_there(char: str) -> None:
    word, phrase = f"Deep{char}Seek", f"künst{char}liche{char} Intel{char}ligenz"
    placements = {
        "title": (f"{word} und {phrase}", "", ()),
        "summary": ("", f"{word} und {phrase}", ()),
        "category": ("", "", (word, phrase)),
    }
    for field, (title, summary, categories) in placements.items():
        assert matches(f"{field}:DeepSeek", title, summary, categories), field
        assert matches(f'{field}:"künstliche Intelligenz"', title, summary, categories), field
        assert matches("DeepSeek", title, summary, categories), field
    assert not matches("Deep", word)  # still one word, not two
    assert not matches("DeepSeek", f"Deep{char} Seek")  # a real space stays a space


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_an_invisible_character_in_a_query_or_topic_term_is_not_there(char: str) -> None:
    assert matches(f"Deep{char}Seek", "DeepSeek verschiebt Start")
    assert matches(f'"künst{char}liche Intelligenz"', "Die künstliche Intelligenz")
    assert matches(f"Chip*{char}", "Die Chipkrise")
    topic = parse_term_list([f"künstliche Intel{char}ligenz"])
    found = TermIndex.of(t.key for t in all_terms(topic)).scan("Künstliche Intelligenz", [], ())
    assert evaluate(topic, found)


@pytest.mark.parametrize("space", SPACES.values(), ids=SPACES.keys())
def test_every_space_separator_is_a_space(space: str) -> None:
    assert matches('"künstliche Intelligenz"', f"künstliche{space}Intelligenz")
    assert matches('"künstliche Intelligenz"', "", "", (f"künstliche{space}Intelligenz",))
    assert matches(f'"künstliche{space}Intelligenz"', "künstliche Intelligenz")
    assert not matches("DeepSeek", f"Deep{space}Seek")


@pytest.mark.parametrize("dash", DASH.values(), ids=DASH.keys())
def test_every_dash_separates_words_as_the_hyphen_does(dash: str) -> None:
    assert matches("KI", f"Neues KI{dash}Modell")
    assert matches('"KI Modell"', f"Neues KI{dash}Modell")
    assert matches('"DeepSeek verschiebt"', f"DeepSeek {dash} verschiebt")
    assert matches(f"KI{dash}Modell", "Neues KI-Modell")
    assert not matches("KIModell", f"Neues KI{dash}Modell")


def test_fold_drops_ignorables_before_joining_a_letter_and_its_mark() -> None:
    assert fold("Deep\u00adSeek") == "deepseek"
    assert fold("Gr\u200bo\u00ad\u0308\u00dfe") == "groesse"  # o + SHY + combining diaeresis = ö
    assert fold("\ufeffBörse\ufe0f") == "boerse"


def test_one_line_keeps_invisible_characters_but_drops_bidi_controls() -> None:
    """Subjects and log lines show the title as written, not "Deep Seek"; but no text reversed."""
    assert one_line("Deep\u00adSeek\u200b verschiebt\r\nStart") == "Deep\u00adSeek\u200b verschiebt Start"
    assert (
        one_line("Familie \U0001f468\u200d\U0001f469\u200d\U0001f467")
        == "Familie \U0001f468\u200d\U0001f469\u200d\U0001f467"
    )
    assert one_line("Rechnung\u202e fdp.exe\u202c\u2066 ok\u2069") == "Rechnung fdp.exe ok"
    assert (
        subject_line("deepseek", "Deep\u00adSeek\u2028verschiebt")
        == "[newswatch] deepseek: Deep\u00adSeek verschiebt"
    )


# --- normalize_mapped: where each character of the normalised text came from ------------------


def spans_of(original: str, query_text: str) -> str:
    """The original characters behind the first occurrence of query_text in normalised text."""
    mapped = normalize_mapped(original)
    start = mapped.text.index(query_text)
    begin, end = mapped.original_span(start, start + len(query_text))
    return original[begin:end]


def test_a_soft_hyphen_inside_the_word_is_inside_its_span() -> None:
    title = "Analyse: Deep\u00adSeek ver\u00adschiebt Start"
    assert normalize_mapped(title).text == "analyse: deepseek verschiebt start"
    assert spans_of(title, "deepseek") == "Deep\u00adSeek"
    assert spans_of(title, "deepseek verschiebt") == "Deep\u00adSeek ver\u00adschiebt"


def test_invisible_characters_around_a_word_stay_outside_its_span() -> None:
    assert spans_of("\u200b\u00a0DeepSeek\u2060 ", "deepseek") == "DeepSeek"


def test_umlaut_and_sharp_s_folding_changes_length_but_not_the_span() -> None:
    text = "Ärger über die Straßenbahn in Köln"
    mapped = normalize_mapped(text)
    assert mapped.text == "aerger ueber die strassenbahn in koeln"
    assert spans_of(text, "ueber") == "über"
    assert spans_of(text, "strassenbahn") == "Straßenbahn"
    assert spans_of(text, "koeln") == "Köln"
    assert spans_of(text, "ae") == "Ä"  # both letters of "ae" come from the one Ä


def test_a_decomposed_umlaut_maps_to_both_of_its_characters() -> None:
    assert spans_of("Bo\u0308rse Frankfurt", "boerse") == "Bo\u0308rse"


def test_collapsed_whitespace_and_dashes_map_to_the_original_words() -> None:
    text = "  KI\u2011Modell \u2014 Start\n\n\tvon  Deep\u00a0Seek – heute "
    mapped = normalize_mapped(text)
    assert mapped.text == "ki modell start von deep seek heute"
    assert spans_of(text, "ki modell") == "KI\u2011Modell"
    assert spans_of(text, "modell start") == "Modell \u2014 Start"
    assert spans_of(text, "von deep seek") == "von  Deep\u00a0Seek"
    assert spans_of(text, "heute") == "heute"


def test_the_mapped_text_is_what_the_matcher_reads() -> None:
    """normalize_mapped must agree with the hot path's normalize on any text, however odd:
    combining marks NFC reorders or composes (Tibetan II holds two), Hangul jamo, Kannada vowels."""
    alphabet = (
        list("aAoOuUsSiI  \n\t-–.'’")
        + ["ä", "Ä", "ß", "ẞ", "İ", "ﬃ", "Σ", "ς", "\u212b", "\u0308", "\u0301", "\u0323", "\u0345"]
        + ["\u1100", "\u1161", "\u11a8", "\u0f73", "\u0cc6", "\u0cc2", "\u09c7", "\u09be"]
        + ["\x01", "\x1c", "\u2064", "\u2069", "\U0001f600"]
        + [chr(first) for first, _ in IGNORABLE_RANGES]
        + list(DASHES[:12])
        + list(SPACES.values())
    )
    rng = random.Random(19)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        mapped = normalize_mapped(text)
        assert mapped.text == normalize(text), ascii(text)
        assert len(mapped.starts) == len(mapped.ends) == len(mapped.text)
        for ch, start, end in zip(mapped.text, mapped.starts, mapped.ends, strict=True):
            source = text[start:end]
            assert 0 <= start < end <= len(text)
            assert ch == " " or ch in fold(unicodedata.normalize("NFC", source)), ascii(text)


def test_the_in_place_mapping_is_the_character_by_character_one() -> None:
    """The quick way (words by ranges) gives exactly what the long way gives, and it is the way
    the usual German headline takes: umlauts, ß, a hyphen and a spaced dash."""
    headline = "Ärger über KI-Chips: DeepSeek verschiebt Modellstart – Straße, Köln "
    assert _mapped_in_place(headline) == _mapped_by_characters(headline)
    assert _mapped_in_place(headline) is not None
    assert _mapped_in_place("Deep\u00adSeek") is None  # an invisible character: the long way
    alphabet = [
        *"aAoOuUsSiI  \n\t-–.'’",
        *["ä", "Ä", "ß", "ẞ", "İ", "ﬃ", "Σ", "ς", "\u212b", "\u0308", "\u0301", "\u1100", "\u1161"],
        *["\x01", "\U0001f600", "\u00a0", "\u2014", "\u2011", "\u00ad", "\u0f73", "\u3000"],
    ]
    rng = random.Random(23)
    taken = 0
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        quick = _mapped_in_place(text)
        if quick is not None:
            taken += 1
            assert quick == _mapped_by_characters(text), ascii(text)
    assert taken > 1000  # the comparison ran on many texts, not on none


def test_terms_are_normalised_like_the_text() -> None:
    assert make_term("Deep\u00adSeek").pattern == "deepseek"
    assert make_term("Chip*\u200b").prefix
    assert make_term("KI\u2014Modell").pattern == "ki modell"
