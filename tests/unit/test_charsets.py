"""The character tables of worker/core/charsets.py against two independent copies of Unicode's data."""

from __future__ import annotations

import sys
import unicodedata

import regex

from worker.core.charsets import (
    BIDI_CONTROL,
    BIDI_CONTROL_RANGES,
    DASHES,
    IGNORABLE,
    IGNORABLE_RANGES,
    without_ignorables,
)

ALL = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]


def having(unicode_property: str) -> set[str]:
    """Every code point with the property, as the regex package's Unicode database has it."""
    return set(regex.findall(rf"\p{{{unicode_property}}}", "".join(ALL)))


def test_ignorable_table_is_the_default_ignorable_property() -> None:
    expected = having("Default_Ignorable_Code_Point")
    table = {chr(code) for first, last in IGNORABLE_RANGES for code in range(first, last + 1)}
    assert table == expected
    assert {ch for ch in ALL if IGNORABLE.fullmatch(ch)} == expected


def test_bidi_control_table_is_the_bidi_control_property() -> None:
    table = {chr(code) for first, last in BIDI_CONTROL_RANGES for code in range(first, last + 1)}
    assert table == having("Bidi_Control")
    assert {ch for ch in ALL if BIDI_CONTROL.fullmatch(ch)} == table


def test_dash_table_is_the_dash_punctuation_category() -> None:
    assert set(DASHES) == having("Dash_Punctuation")
    assert {ch for ch in ALL if unicodedata.category(ch) == "Pd"} <= set(DASHES)
    assert len(DASHES) == len(set(DASHES))


def test_every_ignorable_goes_wherever_it_stands() -> None:
    """without_ignorables looks in different ways for different characters and kinds of text
    (printable or not, beyond the BMP or not); none of them may miss one."""
    for first, last in IGNORABLE_RANGES:
        for code in range(first, last + 1):
            for text in (
                f"Deep{chr(code)}Seek – „KI“ ␝",
                f"Deep{chr(code)}Seek\u00a0– „KI“\n",
                f"Deep{chr(code)}Seek \U0001f600",
                chr(code) * 3,
            ):
                assert without_ignorables(text) == text.replace(chr(code), ""), hex(code)
                assert without_ignorables(text, text.isprintable()) == text.replace(chr(code), "")


def test_text_without_ignorables_is_left_as_it_is() -> None:
    for text in ("DeepSeek – „KI“ ␝ Straße", "Emoji \U0001f600 and 漢字", "tab\tand\u00a0nbsp", ""):
        assert without_ignorables(text) is text
