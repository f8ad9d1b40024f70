"""Text properties and the checks they feed, on real text: Debian's ``fortunes`` (category file = label; loaded as
in tests/test_text_duplicates.py) with planted cues -- a signature phrase opening one class's texts, web addresses
in another's, mojibake and empty texts -- which the shortcut and quality checks must find, while the clean
collection raises no alarm beyond what is really there (two fortunes really carry mojibake). Text rows never get
image rules, image rows never text rules.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from curato.arrays import encode_labels
from curato.checks.image_quality import image_quality_findings, text_quality_findings
from curato.checks.registry import run_checks
from curato.checks.shortcuts import cue_table, shortcut_finding
from curato.commands.rows import load_samples
from curato.features.text_properties import (
    BOILERPLATE_COLUMNS,
    LANGUAGES,
    TEXT_COLUMNS,
    TEXT_PROPERTIES,
    TEXT_PROPERTY_COLUMNS,
    boilerplate_columns,
    encoding_damage,
    text_properties,
    text_property_table,
)
from curato.workspace import Workspace
from tests.conftest import run
from tests.test_text_duplicates import _fortunes

COLUMN = {name: j for j, name in enumerate(TEXT_PROPERTY_COLUMNS)}


@pytest.fixture(scope="module")
def fortunes() -> tuple[list[str], np.ndarray]:
    texts, labels = _fortunes()
    return texts, np.asarray(labels, dtype=object)


def plant(texts: list[str], labels: np.ndarray, seed: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    """The cues of the module docstring: 'food' texts open with a signature phrase (90%), 'law' texts carry a web
    address (80%), 12 texts are mojibake (UTF-8 read as Windows-1252) and 9 are emptied."""
    rng = np.random.default_rng(seed)
    texts = list(texts)
    food = np.flatnonzero((labels == "food") & (rng.random(len(texts)) < 0.9))
    law = np.flatnonzero((labels == "law") & (rng.random(len(texts)) < 0.8))
    for i in food:
        texts[i] = "ADVERTISEMENT: " + texts[i]
    for i in law:
        texts[i] = f"{texts[i]} More at https://example.org/case/{i}"
    others = np.setdiff1d(np.arange(len(texts)), np.concatenate([food, law]))
    accented = [i for i in others if any(c in texts[i] for c in "'\"")]
    damaged = rng.choice(accented, size=12, replace=False)
    for i in damaged:  # curly quotes written as UTF-8, read back as Windows-1252: "It’s" -> "Itâ€™s"
        texts[i] = texts[i].replace("'", "\u2019").replace('"', "\u201c").encode("utf-8").decode("cp1252",
                                                                                                 "replace")
    emptied = rng.choice(np.setdiff1d(others, damaged), size=9, replace=False)
    for n, i in enumerate(emptied):
        texts[i] = ["", "  ", "\n", "-", "..", "\t \n", "", " ?", "ok"][n]
    return texts, {"food": food, "law": law, "damaged": damaged, "emptied": emptied}


def shortcuts_of(texts: list[str], labels: np.ndarray):
    values, columns, categories = text_property_table(texts)
    codes, names = encode_labels(labels)
    cues, cue_columns, cue_categories = cue_table(values, columns, property_categories=categories)
    ids = np.array([f"t{i}" for i in range(len(texts))], dtype=object)
    finding = shortcut_finding(ids, codes, cues, cue_columns, class_names=names, categories=cue_categories)
    return finding, values, columns


def test_properties_of_written_texts() -> None:
    texts = ["Visit https://example.org/a/b now!", "Mail me at someone@example.org please",
             "<p>Hello &amp; welcome</p>", "I love it \U0001F600\U0001F600", "THIS IS SHOUTING", "", None,
             "Der Hund und die Katze sind nicht im Haus, aber auf dem Dach.",
             "Le chat est dans la maison avec les enfants, mais pas sur le toit.",
             "The cat is in the house with the children, but not on the roof."]
    values = text_properties(texts)
    assert values.shape == (len(texts), len(TEXT_PROPERTY_COLUMNS))
    assert values[0, COLUMN["url_share"]] == pytest.approx(len("https://example.org/a/b") / len(texts[0]))
    assert values[1, COLUMN["email_share"]] == pytest.approx(len("someone@example.org") / len(texts[1]))
    assert values[2, COLUMN["html_share"]] == pytest.approx(len("<p>&amp;</p>") / len(texts[2]))
    assert values[3, COLUMN["emoji_share"]] == pytest.approx(2 / len(texts[3]))
    assert values[4, COLUMN["uppercase_share"]] == 1.0 and values[9, COLUMN["uppercase_share"]] < 0.05
    assert values[0, COLUMN["words"]] == 7 and values[4, COLUMN["chars"]] == 16
    assert values[0, COLUMN["punctuation_share"]] == pytest.approx(7 / 32)  # : / / . / / ! of 32 non-space
    # unknown stays unknown: an empty text has no shares, a missing text no row at all
    assert values[5, COLUMN["chars"]] == 0 and np.isnan(values[5, COLUMN["uppercase_share"]])
    assert np.isnan(values[6]).all()
    languages = [LANGUAGES[int(code)] if np.isfinite(code) else None for code in values[:, COLUMN["language"]]]
    assert languages[7:] == ["german", "french", "english"]
    assert np.isnan(values[4, COLUMN["language"]])  # no function word: no language named


def test_encoding_damage_marks() -> None:
    assert encoding_damage("It’s a café") == 0
    assert encoding_damage("Itâ€™s a cafÃ©") >= 2
    assert encoding_damage("broken \ufffd byte") == 1
    assert encoding_damage("control \x85 character") >= 1


def test_boilerplate_phrases_on_real_texts(fortunes) -> None:
    texts, _ = fortunes
    texts = list(texts[:1000])
    signed = list(range(0, 1000, 10))
    for i in signed:  # a source's signature closing every tenth text, and a prefix on a few
        texts[i] = texts[i] + "\n\nSent from my phone, please excuse typos"
    for i in range(5, 1000, 50):
        texts[i] = "[Reuters] " + texts[i]
    codes, prefixes, suffixes = boilerplate_columns(texts)
    assert "Sent from my phone, please excuse typos" in suffixes
    closing = np.array([suffixes[int(c)] for c in codes[:, 1]], dtype=object)
    assert set(np.flatnonzero(closing == "Sent from my phone, please excuse typos")) == set(signed)
    opening = np.array([prefixes[int(c)] for c in codes[:, 0]], dtype=object)
    assert set(np.flatnonzero(opening == "[Reuters]")) == set(range(5, 1000, 50))
    assert codes[codes[:, 0] > 0].shape[0] < 60  # common first words ("The") are no signature
    assert np.isnan(boilerplate_columns(["a b c", None])[0][1]).all()


def test_planted_text_shortcuts_are_found(fortunes) -> None:
    texts, labels = fortunes
    planted, where = plant(texts, labels)
    finding, _, _ = shortcuts_of(planted, labels)
    flagged = {row["cue"]: [c["class"] for c in row.get("classes", [])] for row in finding.evidence["cues"]
               if row["flagged"]}
    assert flagged.get("boilerplate_prefix") == ["food"] and flagged.get("url_share") == ["law"]
    assert finding.severity == "high"
    assert "of 'food' texts start with 'ADVERTISEMENT:', vs 0% of the others" in finding.message
    assert "strip what the source added" in finding.message  # the text advice, not "crop or mask the region"
    ids = set(finding.sample_ids[finding.flagged].tolist())
    assert {f"t{i}" for i in where["food"]} <= ids
    assert all(labels[int(sid[1:])] in ("food", "law") for sid in ids)


def test_clean_texts_raise_no_shortcut(fortunes) -> None:
    texts, labels = fortunes
    finding, values, columns = shortcuts_of(list(texts), labels)
    assert finding.severity == "none", finding.message
    findings = {f.check: f for f in text_quality_findings(np.arange(len(texts)).astype(str), values, columns)}
    assert {name for name, f in findings.items() if f.count} <= {"encoding_damage", "other_language"}
    # what is flagged is really there: the two fortunes that carry mojibake ("donâ\x80\x99t"), and a saying in
    # French or the mock German of the "ACHTUNG! Das machine is nicht fur gefingerpoken" sign
    damaged = [texts[int(i)] for i in findings["encoding_damage"].sample_ids[findings["encoding_damage"].flagged]]
    assert len(damaged) == 2 and all("â\x80" in text for text in damaged)
    french = [texts[int(i)] for i in findings["other_language"].sample_ids[findings["other_language"].flagged]]
    assert len(french) <= 2 and all("C'est" in text or "ACHTUNG" in text for text in french)


def test_planted_damage_and_empty_texts_are_found(fortunes) -> None:
    texts, labels = fortunes
    planted, where = plant(texts, labels)
    values = text_properties(planted)
    findings = {f.check: f for f in text_quality_findings(np.arange(len(planted)).astype(str), values,
                                                          TEXT_PROPERTY_COLUMNS)}
    empty = findings["empty_text"]
    assert set(empty.sample_ids[empty.flagged].astype(int)) == set(where["emptied"])
    assert empty.message.startswith("9 texts (0.3%) are empty or nearly empty")
    damaged = set(findings["encoding_damage"].sample_ids[findings["encoding_damage"].flagged].astype(int))
    assert set(where["damaged"]) <= damaged and len(damaged - set(where["damaged"])) <= 2  # + the 2 real ones
    assert findings["encoding_damage"].message.startswith(f"{len(damaged)} texts")
    assert not findings["mostly_markup"].count  # a link at the end of a saying is not "mostly markup"


def write_texts(path: Path, texts: list[str], labels: np.ndarray) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows([f"t{i:04d}", text, label] for i, (text, label) in enumerate(zip(texts, labels,
                                                                                           strict=True)))
    return path


def test_workspace_stores_text_properties_and_audits_by_modality(tmp_path: Path, fortunes, image_folder) -> None:
    texts, labels = fortunes
    planted, where = plant(texts, labels)
    keep = np.sort(np.concatenate([np.arange(0, len(planted), 3), where["emptied"], where["damaged"],
                                   where["food"], where["law"]]))
    keep = np.unique(keep)
    source = write_texts(tmp_path / "texts.csv", [planted[i] for i in keep], labels[keep])
    ws = tmp_path / "ws"
    assert run("ingest", source, "--format", "text", "-w", ws).returncode == 0
    workspace = Workspace.open(ws)
    stored = workspace.features.load(TEXT_PROPERTIES)
    assert len(stored) == len(keep) and list(stored.meta["columns"]) == list(TEXT_PROPERTY_COLUMNS)
    assert run("ingest", image_folder, "-w", ws).returncode == 0  # images in the same workspace

    data = load_samples(Workspace.open(ws))
    columns = data.property_columns
    assert set(BOILERPLATE_COLUMNS) <= set(columns) and "brightness_mean" in columns
    is_text = np.array([kind == "text" for kind in data.kinds], dtype=bool)
    text_at = [j for j, name in enumerate(columns) if name in TEXT_COLUMNS]
    image_at = [j for j, name in enumerate(columns) if name not in TEXT_COLUMNS]
    assert np.isnan(data.properties[np.ix_(is_text, image_at)]).all()
    assert np.isnan(data.properties[np.ix_(~is_text, text_at)]).all()
    assert "ADVERTISEMENT:" in data.property_categories["boilerplate_prefix"]

    findings = run_checks(data, ["image_quality", "shortcuts"], params={"shortcuts": {"max_samples": 2000}})
    text_ids = set(data.sample_ids[is_text].tolist())
    text_names = {"empty_text", "encoding_damage", "odd_length", "mostly_markup", "other_language"}
    for finding in findings:
        judged = set(finding.sample_ids.tolist())
        if finding.check in text_names:
            assert judged <= text_ids, finding.check
        elif finding.check != "shortcuts":
            assert not judged & text_ids, finding.check  # no image rule reads a text row
    by_name = {f.check: f for f in findings}
    empty_ids = {f"t{int(np.flatnonzero(keep == i)[0]):04d}" for i in where["emptied"]}
    assert set(by_name["empty_text"].sample_ids[by_name["empty_text"].flagged]) == empty_ids
    assert by_name["encoding_damage"].count >= 12
    shortcut = by_name["shortcuts"]
    assert "texts start with 'ADVERTISEMENT:'" in shortcut.message, shortcut.message

    # a changed text is measured again at the next ingest; the others are kept
    edited = [planted[i] for i in keep]
    edited[0] = "A brand new text with a link https://example.org/x"
    write_texts(source, edited, labels[keep])
    assert run("ingest", source, "--format", "text", "-w", ws).returncode == 0
    again = Workspace.open(ws).features.load(TEXT_PROPERTIES)
    row = again.align(["t0000"])[0][0]
    assert row[COLUMN["url_share"]] > 0 and row[COLUMN["chars"]] == len(edited[0])


def test_image_rows_get_image_rules_only(fashion_mnist) -> None:
    from curato.features.properties import PROPERTY_COLUMNS, image_properties

    images, _ = fashion_mnist
    image_values = image_properties(list(images[:40]))
    text_values = text_properties(["", "Itâ€™s broken", "A fine sentence with the words of English."])
    columns = [*PROPERTY_COLUMNS, *TEXT_PROPERTY_COLUMNS]
    properties = np.full((43, len(columns)), np.nan)
    properties[:40, :len(PROPERTY_COLUMNS)] = image_values
    properties[40:, len(PROPERTY_COLUMNS):] = text_values
    ids = np.array([f"i{k}" for k in range(40)] + ["empty", "broken", "fine"], dtype=object)
    findings = {f.check: f for f in image_quality_findings(ids, properties, columns)}
    assert set(findings["dark"].sample_ids) == {f"i{k}" for k in range(40)}
    assert set(findings["empty_text"].sample_ids) == {"empty", "broken", "fine"}
    assert findings["empty_text"].flagged.tolist() == [True, False, False]
    assert findings["encoding_damage"].flagged.tolist() == [False, True, False]
    assert findings["encoding_damage"].message.startswith("1 text (33.3%) shows encoding damage")
    # images only: the image rules alone, as before
    alone = image_quality_findings(ids[:40], image_values, PROPERTY_COLUMNS)
    assert {f.check for f in alone} == {"dark", "overexposed", "blurry", "low_information", "grayscale", "odd_size"}


def test_find_issues_on_texts_runs_the_text_rules(fortunes) -> None:
    """The array API computes text properties too: the planted empty texts and the shortcut phrase are found
    without a workspace."""
    from curato.api import find_issues

    texts, labels = fortunes
    planted, where = plant(texts, labels)
    ids = [f"t{i}" for i in range(len(planted))]
    result = find_issues(sample_ids=ids, labels=labels.tolist(), texts=planted, checks=["image_quality", "shortcuts"])
    empty = result["empty_text"]
    assert {int(sid[1:]) for sid in empty.sample_ids[empty.flagged]} == set(where["emptied"])
    assert "ADVERTISEMENT:" in result["shortcuts"].message
