"""Stories, highlights and archive records in the pure core: no Redis, no clock."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from worker.config import ConfigError, Settings, load_config
from worker.core.archive import ArchivedItem, Outcome, outcomes
from worker.core.highlights import item_marks, marks_in, payload_highlights
from worker.core.models import Delivery, Item
from worker.core.outbox import Digested
from worker.core.query import all_terms, parse_query
from worker.core.stories import (
    Fingerprint,
    Report,
    StoryState,
    alone,
    assign,
    closest,
    fingerprint,
    headline_core,
    lsh_shape,
    opening_words,
    place,
    similarity,
)

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "stories.json"
NOW = datetime(2025, 8, 15, 14, 0, tzinfo=UTC)


def item(title: str, summary: str = "", item_id: str = "x", categories: tuple[str, ...] = ()) -> Item:
    return Item("feed", None, None, None, title, summary, "", categories, NOW, item_id)


def group(items: list[Item], threshold: float = 0.8) -> list[str]:
    """Stories as the pipeline decides them: one item after another, against all before it."""
    members: dict[str, list[str]] = {}
    known: dict[str, Report] = {}
    stories = []
    for entry in items:
        fp = fingerprint(entry, threshold)
        (story,) = assign([(entry.id, fp)], members, known, threshold)
        stories.append(story)
        if fp:
            known[entry.id] = Report(entry.id, story, fp)
            for band in fp.bands:
                members.setdefault(band, []).append(entry.id)
    return stories


def test_the_labelled_corpus_is_grouped_without_merging_different_stories() -> None:
    data = json.loads(CORPUS.read_text(encoding="utf-8"))["items"]
    assert len(data) >= 60
    labels = [entry["story"] for entry in data]
    items = [item(e["title"], e["summary"], f"i{n:03d}") for n, e in enumerate(data)]
    stories = group(items)
    pairs = list(itertools.combinations(range(len(items)), 2))
    truth = {p for p in pairs if labels[p[0]] == labels[p[1]]}
    found = {p for p in pairs if stories[p[0]] == stories[p[1]]}
    assert found <= truth  # precision 1.0: no two different stories merged
    assert len(found & truth) / len(truth) >= 0.9  # recall, measured 0.932 (docs/performance.md)


def test_two_deepseek_stories_stay_apart_and_syndicated_copies_join() -> None:
    delay = "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"
    text = (
        "DeepSeek hat die Einführung seines KI-Modells R2 verschoben, nachdem Trainingsläufe auf "
        "Huaweis Ascend-Chips wiederholt fehlschlugen. Das chinesische Start-up kehrt für das "
        "Training zu Nvidia-Prozessoren zurück."
    )
    items = [
        item(delay, text, "a"),
        item(
            "DeepSeek stellt neues Modell vor",
            "Das Start-up DeepSeek hat ein neues Sprachmodell vorgestellt, das mit den besten US-Modellen mithalten soll.",
            "b",
        ),
        item(f"ROUNDUP: {delay}", "PEKING (dpa-AFX) - " + text, "c"),
        item(f"dpa-AFX: {delay} - Aktie", text[:120] + "…", "d"),
        item(f"{delay} | Finanzportal", "", "e"),
        item("DeepSeek verschiebt Start von R2 – Huawei-Chips machen Probleme", text, "f"),
    ]
    assert group(items) == ["a", "b", "a", "a", "a", "a"]


def test_headline_markers_are_dropped_but_a_name_before_a_colon_is_kept() -> None:
    assert (
        headline_core("ROUNDUP 2/Aktie: Nvidia übertrifft Erwartungen - Aktie")
        == "Nvidia übertrifft Erwartungen"
    )
    assert headline_core("dpa-AFX: X steigt | Nachricht | finanzen.net") == "X steigt"
    assert headline_core("Aktien Frankfurt Schluss: Dax schließt fester") == "Dax schließt fester"
    assert headline_core("Dax schließt fester - boerse.de") == "Dax schließt fester"
    assert headline_core("DeepSeek: Neues Modell kommt") == "DeepSeek: Neues Modell kommt"
    assert (
        headline_core("Dax schließt fester - Anleger optimistisch")
        == "Dax schließt fester - Anleger optimistisch"
    )


def test_opening_skips_the_dateline_and_a_word_cut_in_half() -> None:
    assert opening_words("FRANKFURT (dpa-AFX) - Der Dax stieg deutlich")[:2] == ["dax", "stieg"]
    assert opening_words("Der Dax stieg um drei Prozent auf Rekordhö…")[-1] == "prozent"
    assert opening_words("Der Dax stieg um drei Prozent …")[-1] == "prozent"


def test_too_few_words_make_no_fingerprint_and_a_story_of_its_own() -> None:
    assert fingerprint(item("Dax im Plus"), 0.8) is None
    assert assign([("a", None)], {}, {}, 0.8) == ["a"]


def test_teaser_compared_as_far_as_it_goes() -> None:
    words = " ".join(f"Wort{n}" for n in range(20))
    whole, teaser = (
        fingerprint(item("A", words), 0.8),
        fingerprint(item("B", " ".join(words.split()[:9]) + " …"), 0.8),
    )
    assert whole and teaser and similarity(whole, teaser) == 1.0
    assert set(whole.bands) & set(teaser.bands)  # found through the index, too


def test_fingerprints_pack_small_and_unpack_equal() -> None:
    fp = fingerprint(
        item(
            "Nvidia übertrifft mit Quartalszahlen die Erwartungen",
            "Der Chipkonzern Nvidia hat im zweiten Quartal mehr umgesetzt als Analysten erwartet hatten und hebt die Prognose.",
        ),
        0.8,
    )
    assert fp is not None
    packed = fp.pack()
    assert len(packed) <= 2 + 4 * (len(fp.title) + len(fp.lead))
    assert Fingerprint.unpack(packed) == fp


def test_lsh_shape_finds_items_at_the_threshold_almost_always() -> None:
    for threshold in (0.5, 0.7, 0.8, 0.9, 1.0):
        shape = lsh_shape(threshold)
        assert shape.bands * shape.rows <= 64
        assert 1 - (1 - threshold**shape.rows) ** shape.bands >= 0.99
    assert (lsh_shape(0.8).bands, lsh_shape(0.8).rows) == (12, 5)


def test_closest_picks_the_most_similar_and_breaks_ties_alike() -> None:
    fp = Fingerprint(frozenset({1, 2, 3, 4, 5}), ())
    near = Report("n", "s2", Fingerprint(frozenset({1, 2, 3, 4, 5}), ()))
    tie = Report("t", "s1", Fingerprint(frozenset({1, 2, 3, 4, 5}), ()))
    far = Report("f", "s0", Fingerprint(frozenset({1, 2, 3, 9, 8}), ()))
    assert closest(fp, [near, far], 0.8) is near
    assert closest(fp, [near, tie], 0.8) is tie
    assert closest(fp, [far], 0.8) is None


def test_an_alert_fires_once_per_story_and_later_reports_count() -> None:
    states = {"s": StoryState(2, {"deepseek": "first"})}
    placed = place(
        [("x", "s", ("deepseek", "chips")), ("y", "s", ("deepseek", "chips")), ("z", "z", ("deepseek",))],
        states,
    )
    assert [(p.story, p.report, p.fire) for p in placed] == [
        ("s", 3, ("chips",)),
        ("s", 4, ()),
        ("z", 1, ("deepseek",)),
    ]
    assert placed[0].held == {"deepseek": "first"} and placed[1].held == {"deepseek": "first", "chips": "x"}
    assert states["s"].reports == 2  # the state read is not changed
    assert alone("x", ["a", "a"]).fire == ("a",)


def test_highlights_point_at_the_characters_as_written() -> None:
    title = "Deep\u00adSeek verschiebt Modellstart: Probleme mit Huaweis KI\u2011Chips"
    summary = "Die  Straße der künstlichen Intelligenz: DeepSeek’s Plan, nicht Kiel."
    entry = item(title, summary, categories=("Finanzen", "DeepSeek"))
    marks = payload_highlights(
        entry, parse_query('DeepSeek OR Chip* OR Strasse OR KI OR "künstlichen Intelligenz" OR title:Huawei')
    )
    assert [(m["text"], title[m["start"] : m["end"]]) for m in marks["title"]] == [
        ("Deep\u00adSeek", "Deep\u00adSeek"),
        ("Huaweis", "Huaweis"),
        ("KI", "KI"),
        ("Chips", "Chips"),
    ]
    assert [summary[m["start"] : m["end"]] for m in marks["summary"]] == [
        "Straße", "künstlichen Intelligenz", "DeepSeek’s",
    ]  # fmt: skip
    assert marks["categories"] == [{"index": 1, "start": 0, "end": 8, "text": "DeepSeek", "term": "DeepSeek"}]


def test_highlights_skip_negated_terms_and_fields_a_term_is_not_for() -> None:
    entry = item("Huawei Smartphone", "Huawei Chips")
    assert [m.text for m in item_marks(entry, [t for t in all_terms(parse_query("title:Huawei"))])] == [
        "Huawei"
    ]
    marks = payload_highlights(entry, parse_query("Huawei NOT Smartphone"))
    assert [m["text"] for m in marks["title"]] == ["Huawei"]
    assert marks_in("Kiel", "title", all_terms(parse_query("KI"))) == []


def test_archived_item_round_trips_compressed() -> None:
    record = ArchivedItem(
        item("DeepSeek verschiebt Modellstart", "Text " * 50, "a", ("KI",)),
        ("KI",),
        NOW,
        "s",
        2,
        {"deepseek": Outcome("story", "fired with b")},
    )
    blob = record.pack()
    assert len(blob) < len(json.dumps(record.item.to_dict()))
    assert ArchivedItem.unpack(blob) == record


DELIVERY = Delivery("d", "b", "hook", {"data": {"item": {"id": "i"}}})


def test_outcomes_say_why_each_matching_alert_went_or_not() -> None:
    end = NOW + timedelta(hours=1)
    placed = place([("i", "s", ("a", "b", "c", "d"))], {"s": StoryState(1, {"d": "first"})})[0]
    digested = {"b": Digested(DELIVERY, end, "digest"), "c": Digested(DELIVERY, end, "capped")}
    found = outcomes(["a", "b", "c", "d"], None, placed, {"a"}, digested)
    assert {k: v.outcome for k, v in found.items()} == {
        "a": "sent",
        "b": "digest",
        "c": "capped",
        "d": "story",
    }
    assert outcomes(["a"], "too old", placed, set(), {}) == {"a": Outcome("quiet", "too old")}


def test_stories_and_archive_settings(tmp_path: Path) -> None:
    assert Settings.model_validate({}).stories.threshold == 0.8
    assert not Settings.model_validate({"stories": False}).stories.enabled  # YAML's `off`
    assert Settings.model_validate({"stories": {"threshold": "85%"}}).stories.threshold == 0.85
    assert Settings.model_validate({}).archive.max_items == 200_000
    path = tmp_path / "c.yaml"
    path.write_text("stories: {threshold: 2, window: 0s}\narchive: {max_items: 0, keep: nope}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path), {})
    problems = "\n".join(e.value.problems)
    for key in ("stories.threshold", "stories.window", "archive.max_items", "archive.keep"):
        assert key in problems
    path.write_text("stories: off\n")
    assert not load_config(str(path), {}).settings.stories.enabled


def test_band_keys_are_the_same_in_every_process_and_release() -> None:
    """Band keys outlive processes in Redis: the same words must give the same keys in every
    worker, in any order, whatever PYTHONHASHSEED, and after an upgrade of rensa within its
    pinned range. A change here must come with a new FEATURES_VERSION."""
    from worker.core.stories import _band_keys, lsh_shape

    words = ["deepseek", "verschiebt", "modellstart", "huawei", "chips"]
    expected = ["t0:eO_ucPLV", "t1:RDV2QpRs", "t2:PnygaVuW", "t3:F50ctN1J", "t4:rM-zZ5S5", "t5:wBrESYpv",
                "t6:EdU6SXB-", "t7:76V4VUPb", "t8:_JAUgQXo", "t9:K1atBXgn", "t10:8QxZNoKx", "t11:cQJGUrdc"]  # fmt: skip
    assert _band_keys("t", words, lsh_shape(0.8)) == expected
    assert _band_keys("t", [*reversed(words), "chips"], lsh_shape(0.8)) == expected
