"""The alert query language of SPEC §5, as a table of real German cases."""

from __future__ import annotations

import pytest

from worker.core.errors import QuerySyntaxError
from worker.core.matcher import ItemText, TermIndex
from worker.core.query import Node, all_terms, evaluate, matched_terms, parse_query, parse_term_list

DEEPSEEK_TITLE = "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"
DEEPSEEK_SUMMARY = (
    "Die Verzögerung kostete das Unternehmen wertvolle Zeit im Wettbewerb mit Konkurrenten wie Alibaba, "
    "dessen Modell Qwen3 wesentliche DeepSeek-Konzepte übernommen hat. Gründer Liang Wenfeng drängt "
    "auf eine Version, um DeepSeeks Position im KI-Sektor zu sichern."
)


def text(node: Node, title: str = "", summary: str = "", categories: tuple[str, ...] = ()) -> ItemText:
    """The item as the matcher sees it, with an index of this query's terms."""
    return TermIndex.of(t.key for t in all_terms(node)).scan(title, [summary], categories)


def matches(query: str, title: str = "", summary: str = "", categories: tuple[str, ...] = ()) -> bool:
    node = parse_query(query)
    return evaluate(node, text(node, title, summary, categories))


@pytest.mark.parametrize(
    ("query", "title", "expected"),
    [
        ("KI", "Neues KI-Modell vorgestellt", True),
        ("KI", "ki im Alltag", True),
        ("KI", "Hafen Kiel meldet Rekord", False),
        ("KI", "Kiwis aus Neuseeland", False),
        ("DeepSeek", "DeepSeeks Position im KI-Sektor", True),
        ("DeepSeek", "DeepSeek's model delayed", True),
        ("DeepSeek", "DeepSeek’s model delayed", True),
        ("DeepSeek", "wesentliche DeepSeek-Konzepte übernommen", True),
        ("DeepSeek", "DeepSeekers gathered", False),
        ("Deep", "DeepSeek verschiebt", False),
        ("Chip*", "Huaweis KI-Chips", True),
        ("Chip*", "Die Chipkrise geht weiter", True),
        ("Chip*", "Mikrochips werden knapp", False),
        ("Chip", "Huaweis KI-Chips", True),  # genitive/plural s
        ("Großbank", "Die Grossbank meldet Verluste", True),
        ("Grossbank", "Die Großbank meldet Verluste", True),
        ("Großbank", "Die GROSSBANK meldet Verluste", True),
        ("Müller", "Thomas Mueller wechselt", True),
        ("Mueller", "Thomas Müller wechselt", True),
        ("Börse", "Boerse Frankfurt", True),
        ("Führungskräfte", "Personalabbau trifft Manager und Führungskräfte", True),
        (
            '"künstliche Intelligenz"',
            "Der Einsatz von Künstlicher  Intelligenz",
            False,
        ),  # künstlicher ≠ künstliche+s
        ('"künstliche Intelligenz"', "Die künstliche\nIntelligenz erhöht den Leerstand", True),
        ('"Künstlicher Intelligenz"', "Der Einsatz von Künstlicher  Intelligenz", True),
        ('"KI Chips"', "Huaweis KI-Chips", True),
        ('"Chips KI"', "Huaweis KI-Chips", False),
        ("Huawei AND Chip*", DEEPSEEK_TITLE, True),
        ("Huawei Chip*", DEEPSEEK_TITLE, True),
        ("Huawei AND Smartphone", DEEPSEEK_TITLE, False),
        ("Huawei NOT Smartphone", DEEPSEEK_TITLE, True),
        ("Huawei -Smartphone", "Huawei Smartphone Verkäufe", False),
        ("Huawei AND NOT Smartphone", "Huawei Smartphone Verkäufe", False),
        ("Apple OR Huawei", DEEPSEEK_TITLE, True),
        ("(Huawei OR SMIC) AND (Chip* OR Ascend) NOT Smartphone", DEEPSEEK_TITLE, True),
        ("(Huawei OR SMIC) AND (Chip* OR Ascend) NOT Smartphone", "SMIC liefert Ascend", True),
        ("(Huawei OR SMIC) AND (Chip* OR Ascend) NOT Smartphone", "Huawei Smartphone mit Chip", False),
        ("Apple OR Samsung AND Huawei", "Apple Kurs", True),  # AND binds tighter than OR
        ("(Apple OR Samsung) AND Huawei", "Apple Kurs", False),
        ("and", "Forschung and Entwicklung", True),  # lower-case operators are words
        ("NOT Bitcoin", DEEPSEEK_TITLE, True),
        ("A19-Chip", "iPhone 17e mit Dynamic Island und A19-Chip erwartet", True),
        ("3.300", "Ethereum scheitert an der Marke von 3.300 Dollar", True),
    ],
)
def test_query_table(query: str, title: str, expected: bool) -> None:
    assert matches(query, title) is expected


def test_terms_match_summary_and_categories_without_a_field() -> None:
    assert matches("Alibaba", title=DEEPSEEK_TITLE, summary=DEEPSEEK_SUMMARY)
    assert matches("Nvidia", title="x", categories=("Finanzen", "KI", "Nvidia"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("title:DeepSeek", True),
        ("title:Alibaba", False),
        ("summary:Alibaba", True),
        ("summary:Modellstart", False),
        ("category:Nvidia", True),
        ("category:Alibaba", False),
        ('title:"Huaweis KI-Chips"', True),
        ("title:(Alibaba OR Huawei)", True),
        ("title:(Alibaba OR Tencent)", False),
        ("TITLE:DeepSeek", True),
    ],
)
def test_field_prefixes(query: str, expected: bool) -> None:
    assert matches(query, DEEPSEEK_TITLE, DEEPSEEK_SUMMARY, ("Finanzen", "KI", "Nvidia")) is expected


def test_phrase_does_not_span_two_categories() -> None:
    assert not matches('"Finanzen KI"', categories=("Finanzen", "KI"))


@pytest.mark.parametrize(
    ("query", "title", "summary", "expected"),
    [
        # A spaced dash reads as one space, however the item spells its whitespace.
        ('"Modellstart Tesla"', "Modellstart – Tesla reagiert", "", True),
        ('"Modellstart Tesla"', "Modellstart  –\nTesla reagiert", "", True),
        # Fields stay apart whether the item's text takes the fast path or the collapsing one.
        ("title:Tesla", "Modellstart\t– Tesla", "Alibaba", True),
        ("title:Alibaba", "Modellstart\t– Tesla", "Alibaba", False),
        ("summary:Alibaba", "Modellstart – Tesla", "Alibaba\n\nNvidia", True),
        ("summary:Tesla", "Modellstart – Tesla", "Alibaba", False),
    ],
)
def test_dashes_and_whitespace_keep_words_and_fields_apart(
    query: str, title: str, summary: str, expected: bool
) -> None:
    assert matches(query, title, summary, ("Finanzen",)) is expected


def test_matched_lists_positive_terms_as_written() -> None:
    query = parse_query("(Huawei OR SMIC) AND (Chip* OR Ascend) NOT Smartphone")
    assert matched_terms(query, text(query, DEEPSEEK_TITLE, "Ascend-Prozessoren")) == [
        "Huawei",
        "Chip*",
        "Ascend",
    ]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "(Huawei",
        "Huawei)",
        "AND",
        "Huawei AND",
        "NOT",
        '"open phrase',
        "()",
        "-",
        '""',
        "Huawei OR",
    ],
)
def test_bad_queries_raise_a_readable_error(query: str) -> None:
    with pytest.raises(QuerySyntaxError) as error:
        parse_query(query)
    assert str(error.value)


def test_topic_term_lists_treat_spaces_as_phrases() -> None:
    node = parse_term_list(["KI", "künstliche Intelligenz", "Chip*"])
    assert evaluate(node, text(node, "Die künstliche Intelligenz"))
    assert not evaluate(node, text(node, "Intelligenz, künstliche"))
    assert evaluate(node, text(node, "Chipkrise"))
    both = parse_term_list(["Huawei AND Chip*"])
    assert evaluate(both, text(both, DEEPSEEK_TITLE))
