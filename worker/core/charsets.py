"""The Unicode character classes that matching reads specially, with where each comes from.

- IGNORABLE: the Default_Ignorable_Code_Point property, copied from the Unicode Character
  Database's DerivedCoreProperties.txt (Unicode 18.0, as the tests' copy has it): soft hyphen,
  zero-width space, (non-)joiners, word joiner, bidi marks and controls, BOM, variation
  selectors, Hangul fillers, tag characters and the unassigned code points reserved for more.
  Renderers show none of them, so matching drops them.
- DASHES: the Dash_Punctuation (Pd) category of UnicodeData.txt: hyphen-minus, hyphen,
  non-breaking hyphen, figure dash, en and em dash, and their kin in other scripts. Matching
  reads each as a word separator, as it always read "-".
- BIDI_CONTROL: the Bidi_Control property of PropList.txt, the ignorables that can reorder
  what a line shows; one-line output (subjects, log lines) drops them.
- Spaces need no table: str.isspace() and str.split() know Unicode's White_Space property
  (NBSP, narrow NBSP, figure space, ideographic space, line and paragraph separators, ...).

tests/unit/test_charsets.py checks the tables against the `regex` package's copy of the
Unicode database (and DASHES against unicodedata), so a Unicode update that adds a character
fails there loudly instead of silently missing it here. Python's unicodedata lacks the
Default_Ignorable_Code_Point property, and deriving Pd from it at import would walk all
1.1 million code points in every process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# (first, last) code points, inclusive, as DerivedCoreProperties.txt lists them.
IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER, JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS, VOWEL SEPARATOR
    (0x200B, 0x200F),  # ZERO WIDTH SPACE, ZWNJ, ZWJ, LEFT-TO-RIGHT MARK, RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # WORD JOINER, invisible operators, bidi isolates, deprecated format chars
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16 (16: emoji presentation)
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE (BOM)
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # SHORTHAND FORMAT controls
    (0x1D173, 0x1D17A),  # MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0000, 0xE0FFF),  # tags, VARIATION SELECTOR-17..256, reserved
)

# The Bidi_Control property (PropList.txt): invisible, and able to make a line read backwards.
BIDI_CONTROL_RANGES: tuple[tuple[int, int], ...] = (
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x200E, 0x200F),  # LEFT-TO-RIGHT MARK, RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # embeddings, POP DIRECTIONAL FORMATTING, overrides
    (0x2066, 0x2069),  # isolates, POP DIRECTIONAL ISOLATE
)

# Every Dash_Punctuation character, hyphen-minus first.
DASHES: tuple[str, ...] = (
    "-",  # HYPHEN-MINUS
    "\u058a",  # ARMENIAN HYPHEN
    "\u05be",  # HEBREW PUNCTUATION MAQAF
    "\u1400",  # CANADIAN SYLLABICS HYPHEN
    "\u1806",  # MONGOLIAN TODO SOFT HYPHEN
    "\u2010",  # HYPHEN
    "\u2011",  # NON-BREAKING HYPHEN
    "\u2012",  # FIGURE DASH
    "\u2013",  # EN DASH
    "\u2014",  # EM DASH
    "\u2015",  # HORIZONTAL BAR
    "\u2e17",  # DOUBLE OBLIQUE HYPHEN
    "\u2e1a",  # HYPHEN WITH DIAERESIS
    "\u2e3a",  # TWO-EM DASH
    "\u2e3b",  # THREE-EM DASH
    "\u2e40",  # DOUBLE HYPHEN
    "\u2e5d",  # OBLIQUE HYPHEN
    "\u301c",  # WAVE DASH
    "\u3030",  # WAVY DASH
    "\u30a0",  # KATAKANA-HIRAGANA DOUBLE HYPHEN
    "\ufe31",  # PRESENTATION FORM FOR VERTICAL EM DASH
    "\ufe32",  # PRESENTATION FORM FOR VERTICAL EN DASH
    "\ufe58",  # SMALL EM DASH
    "\ufe63",  # SMALL HYPHEN-MINUS
    "\uff0d",  # FULLWIDTH HYPHEN-MINUS
    "\U00010d6e",  # GARAY HYPHEN
    "\U00010ead",  # YEZIDI HYPHENATION MARK
)


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


def _printable_runs(first: int, last: int) -> list[tuple[int, int]]:
    """The runs of printable code points (see str.isprintable) within first..last."""
    runs: list[tuple[int, int]] = []
    for code in range(first, last + 1):
        if chr(code).isprintable():
            if runs and runs[-1][1] == code - 1:
                runs[-1] = (runs[-1][0], code)
            else:
                runs.append((code, code))
    return runs


IGNORABLE = re.compile(f"[{_char_class(IGNORABLE_RANGES)}]+")
BIDI_CONTROL = re.compile(f"[{_char_class(BIDI_CONTROL_RANGES)}]+")

# How without_ignorables looks for them, on the hot path of matching. `in` per character is a
# memchr on its low byte, far faster than a regex scan of a whole batch (0.2 µs against 110 µs
# for 19,000 characters), except where the low byte is a common letter: U+2061..U+206F (invisible
# operators, isolates, deprecated format characters) cost 2-6 µs each that way. They are format
# characters, so text that is printable once the others are gone holds none of them; else a
# regex finds them. Beyond the BMP, a regex, run only when there are such characters at all.
# str.isprintable() rejects format characters, so printable text needs a look only for the
# printable ignorables (marks, fillers).
_BMP = [chr(code) for first, last in IGNORABLE_RANGES if last <= 0xFFFF for code in range(first, last + 1)]
_LETTER_LOW_BYTE = re.compile("[\u2061-\u206f]+")
_LOOK_IN_PRINTABLE = tuple(ch for ch in _BMP if ch.isprintable())
_LOOK_IN_ANY = tuple(ch for ch in _BMP if not _LETTER_LOW_BYTE.fullmatch(ch))
_BEYOND_BMP = re.compile(f"[{_char_class(r for r in IGNORABLE_RANGES if r[0] > 0xFFFF)}]+")


def without_ignorables(text: str, printable: bool | None = None) -> str:
    """`text` with every default-ignorable code point removed. `printable`: what
    text.isprintable() said, if the caller asked (the matcher does); False promises nothing.
    Looks before it works (see above)."""
    if printable is None:
        printable = text.isprintable()
    for ch in _LOOK_IN_PRINTABLE if printable else _LOOK_IN_ANY:
        if ch in text:
            text = text.replace(ch, "")
    if not printable and not text.isprintable() and _LETTER_LOW_BYTE.search(text):
        text = _LETTER_LOW_BYTE.sub("", text)
    if len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text):  # beyond the BMP
        text = _BEYOND_BMP.sub("", text)
    return text
