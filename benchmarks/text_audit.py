# Run from the repository root (needs Debian's fortunes and man pages; cleanlab in its own virtualenv, see
# benchmarks/label_issues.py):
#   .venv/bin/python benchmarks/text_audit.py --texts 2000 --seed 0 [--embedder e5-small] [--planted-only]
#       [--json out.json]
"""The text audit end to end through the CLI, on two real labelled text sets with planted problems.

Data (both offline on Debian):

* ``fortunes``: Debian's ``fortunes`` package, 10 category files = labels (40-400 characters; the collection's
  own variants of a saying left out, see ``tests/test_text_duplicates.py``);
* ``manpages``: the first paragraph of the DESCRIPTION of the installed manual pages (``/usr/share/man``,
  roff markup stripped, 60-600 characters), labelled by manual section (1 commands, 2 system calls,
  3 library functions, 5 file formats, 7 overviews, 8 administration); at most ``--per-class`` per section, and
  pages that share 30% of their words with an earlier one left out (``_exit``/``_Exit``), as for the fortunes.

Per dataset, ``--texts`` originals and two workspaces, each through ``curato ingest --format text``,
``curato embed`` (the default text embedder, or ``--embedder``) and ``curato audit --json``:

* **planted**: label flips (``--label-flips`` of the originals, to a random other class), copies (10% of the
  originals: exact, case, punctuation, whitespace, one word changed; 30% of the copies relabelled), and two
  shortcuts by true class -- one class's texts open with "ADVERTISEMENT:" (90%), another's end with a web
  address (80%). Measured: duplicate pair recall / precision (pairs inside one exact or near-duplicate group
  against the planted (original, copy) pairs), conflicting-duplicate precision (flagged samples that belong to
  a planted pair with two labels), label-issue precision / recall / F1 of curato and of cleanlab 2.9.0's
  ``filter.find_label_issues`` (default ``prune_by_noise_rate``) on the same out-of-fold probabilities
  (the workspace's cached ``oof-probs``), truth = flipped originals + relabelled copies; which cues and classes
  the ``shortcuts`` check flags.
* **control**: the same originals, nothing planted but 12 texts made mojibake (UTF-8 read as Windows-1252) and 8
  emptied: the ``shortcuts`` check must stay quiet; ``empty_text`` / ``encoding_damage`` must find the planted
  ones (what else they flag is listed).

``--languages`` instead measures the ``language`` property on the installed programs' translated messages.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.test_text_duplicates import _edit, _fortunes  # noqa: E402

from label_issues import run_cleanlab, scores  # noqa: E402

MAN = Path("/usr/share/man")
SECTIONS = ("1", "2", "3", "5", "7", "8")
CHECKS = "duplicates,label_issues,shortcuts,image_quality"
PREFIX = "ADVERTISEMENT: "

# roff: font changes (\fB, \f[I], \f(CW), size changes (\s-1), named characters (\(em, \[aq]), strings (\*(Aq).
_FONT = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|\\s[-+]?\d")
_NAMED = re.compile(r"\\\((..)|\\\[([^\]]*)\]")
_STRING = re.compile(r"\\\*(?:\[[^\]]*\]|\(..|.)")
_GLYPHS = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
           "bu": "\u2022", "co": "\u00a9", "hy": "-", "mi": "-", "ti": "~", "ha": "^", "rs": "\\"}
_INLINE = re.compile(r"^\.(?:B|I|BR|RB|BI|IB|IR|RI|SM|SB|Nm|Ar|Fl|Xr|Em|Sy|Li|Pa|Dv|Ev|Va|Fn|Fa|Cm|Ic|Ql|Dq|Sq"
                     r"|Tn)\b ?(.*)$")
_PARAGRAPH = re.compile(r"^\.(?:PP|P|LP|Pp|TP|IP|SH|Sh|SS|Ss|HP|sp|br|Bl|Bd|nf|RS|RE|El|It|TS)\b")


def _roff_text(line: str) -> str:
    line = _FONT.sub("", line)
    line = _NAMED.sub(lambda m: _GLYPHS.get(m.group(1) or m.group(2), ""), line)
    line = _STRING.sub("", line)
    for escape, text in (("\\-", "-"), ("\\&", ""), ("\\e", "\\"), ("\\ ", " "), ("\\|", ""), ("\\^", ""),
                         ("\\%", "")):
        line = line.replace(escape, text)
    return re.sub(r"\\[a-zA-Z]", "", line)


def man_description(path: Path) -> str | None:
    """The first paragraph of a manual page's DESCRIPTION section as plain text (None without one)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="strict") as handle:
            raw = handle.read()
    except (UnicodeDecodeError, OSError, EOFError):
        return None
    lines = raw.splitlines()
    if raw.lstrip().startswith(".so "):  # a link to another page
        return None
    start = next((i for i, line in enumerate(lines) if re.match(r'^\.S[Hh]\s+"?DESCRIPTION"?\s*$', line)), None)
    if start is None:
        return None
    words: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if _PARAGRAPH.match(line):
            if words:
                break
            continue
        inline = _INLINE.match(line)
        if inline:
            line = " ".join(part.strip('"') for part in re.findall(r'"[^"]*"|\S+', inline.group(1)))
        elif line.startswith("."):
            continue
        words.append(_roff_text(line).strip())
    return re.sub(r"\s+", " ", " ".join(words)).strip() or None


def without_variants(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Texts that share under 30% of their words with every earlier one (the first of each family is kept)."""
    from scipy.sparse import csr_matrix

    from curato.checks.duplicates.text import normalise_text

    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for row, text in enumerate(texts):
        for word in set(normalise_text(text).split()):
            rows.append(row)
            cols.append(vocabulary.setdefault(word, len(vocabulary)))
    words = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(vocabulary)))
    shared = (words @ words.T).tocoo()
    sizes = np.asarray(words.sum(axis=1)).ravel()
    jaccard = shared.data / (sizes[shared.row] + sizes[shared.col] - shared.data)
    later = set(np.unique(shared.col[(shared.row < shared.col) & (jaccard >= 0.3)]).tolist())
    keep = [i for i in range(len(texts)) if i not in later]
    return [texts[i] for i in keep], [labels[i] for i in keep]


def manpages(per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """Manual-page descriptions labelled by section (see the module docstring)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for section in SECTIONS:
        files = sorted((MAN / f"man{section}").glob("*.gz"))
        found = []
        for path in files:
            text = man_description(path)
            if text and 60 <= len(text) <= 600:
                found.append(text)
        picked = rng.choice(len(found), size=min(per_class * 2, len(found)), replace=False)
        texts += [found[i] for i in sorted(picked)]
        labels += [f"man{section}"] * len(picked)
    texts, labels = without_variants(texts, labels)
    out_texts, out_labels = [], []
    for section in SECTIONS:
        members = [i for i, label in enumerate(labels) if label == f"man{section}"][:per_class]
        out_texts += [texts[i] for i in members]
        out_labels += [labels[i] for i in members]
    return out_texts, out_labels


def planted_set(texts: list[str], labels: list[str], n: int, seed: int, label_flips: float) -> dict[str, object]:
    """The 'planted' workspace of the module docstring: texts, given labels, and what was planted where."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(texts), size=min(n, len(texts)), replace=False))
    texts = [texts[i] for i in chosen]
    truth = [labels[i] for i in chosen]
    classes = sorted(set(truth))
    prefix_class, url_class = (str(c) for c in rng.choice(classes, size=2, replace=False))
    for i, label in enumerate(truth):
        if label == prefix_class and rng.random() < 0.9:
            texts[i] = PREFIX + texts[i]
        elif label == url_class and rng.random() < 0.8:
            texts[i] = f"{texts[i]} More: https://example.org/{label}/{i}"
    given = list(truth)
    order = rng.permutation(len(texts))
    flipped = order[:round(label_flips * len(texts))]
    sources = order[len(flipped):len(flipped) + round(0.1 * len(texts))]
    for i in flipped:
        given[i] = str(rng.choice([c for c in classes if c != truth[i]]))
    vocabulary = sorted({w for t in texts for w in t.split() if w.isalpha() and len(w) >= 4})
    kinds = ["exact", "case", "punctuation", "whitespace", "word", "word"]
    pairs, relabelled = [], []
    for number, source in enumerate(sources.tolist()):
        kind = kinds[number % len(kinds)]
        copy = texts[source] if kind == "exact" else _edit(texts[source], kind, rng, vocabulary)
        label = given[source]
        if rng.random() < 0.3:
            label = str(rng.choice([c for c in classes if c != label]))
            relabelled.append(len(texts))
        pairs.append((source, len(texts)))
        texts.append(copy)
        given.append(label)
    return {"texts": texts, "labels": given, "pairs": pairs, "flipped": flipped.tolist(), "relabelled": relabelled,
            "prefix_class": prefix_class, "url_class": url_class}


def control_set(texts: list[str], labels: list[str], n: int, seed: int) -> dict[str, object]:
    """The 'control' workspace: the same originals, 12 made mojibake and 8 emptied."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(texts), size=min(n, len(texts)), replace=False))
    texts = [texts[i] for i in chosen]
    labels = [labels[i] for i in chosen]
    quoted = [i for i, text in enumerate(texts) if "'" in text or '"' in text]
    damaged = rng.choice(quoted, size=min(12, len(quoted)), replace=False).tolist()
    for i in damaged:  # typographic quotes saved as UTF-8, read back as Windows-1252: "It’s" -> "Itâ€™s"
        texts[i] = texts[i].replace("'", "\u2019").replace('"', "\u201c").encode("utf-8").decode("cp1252", "replace")
    emptied = rng.choice(sorted(set(range(len(texts))) - set(damaged)), size=8, replace=False).tolist()
    for number, i in enumerate(emptied):
        texts[i] = ["", " ", "\n\n", "-", "...", "\t", "?", ""][number]
    return {"texts": texts, "labels": labels, "damaged": damaged, "emptied": emptied}


def run_workspace(folder: Path, name: str, texts: list[str], labels: list[str],
                  embedder: str | None = None) -> tuple[dict, dict, Path]:
    """ingest, embed and audit one workspace; returns (findings by name, seconds per step, workspace path)."""
    source, ws, out = folder / f"{name}.csv", folder / f"{name}-ws", folder / f"{name}.json"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows((f"t{i:05d}", text, label) for i, (text, label) in enumerate(zip(texts, labels,
                                                                                          strict=True)))
    curato = [sys.executable, "-m", "curato"]
    named = ["--embedder", embedder] if embedder else []
    seconds = {}
    for step, command in (("ingest", ["ingest", str(source), "--format", "text", "-w", str(ws)]),
                          ("embed", ["embed", "-w", str(ws), *named]),
                          ("audit", ["audit", "-w", str(ws), "--checks", CHECKS, "--json", str(out), *named])):
        start = time.perf_counter()
        done = subprocess.run([*curato, *command], capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"curato {step} failed ({done.returncode}): {done.stderr[-2000:]}")
        seconds[step] = round(time.perf_counter() - start, 1)
    report = json.loads(out.read_text())
    return {f["check"]: f for f in report["checks"]}, seconds, ws


def flagged_ids(finding: dict) -> set[str]:
    return {row["sample_id"] for row in finding.get("issues", [])}


def cue_summary(finding: dict) -> list[dict]:
    """The flagged cues of a shortcuts finding, with the classes singled out."""
    return [{"cue": row["cue"], "classes": [c["class"] for c in row.get("classes", [])],
             "balanced_accuracy": row["balanced_accuracy"], "share_of_signal": row.get("share_of_signal")}
            for row in finding.get("evidence", {}).get("cues", []) if row.get("flagged")]


def measure_planted(data: dict, findings: dict, ws: Path, cleanlab_python: str) -> dict:
    from curato.workspace import Workspace

    ids = [f"t{i:05d}" for i in range(len(data["texts"]))]
    found = set()
    for name in ("exact_duplicates", "near_duplicates"):
        for row in findings[name].get("issues", []):
            found.update(combinations(sorted(row["members"]), 2))
    truth_pairs = {tuple(sorted((ids[a], ids[b]))) for a, b in data["pairs"]}
    conflicting = {ids[m] for a, b in data["pairs"] for m in (a, b) if data["labels"][a] != data["labels"][b]}
    flagged_conflicts = flagged_ids(findings["conflicting_duplicates"])
    result = {
        "texts": len(ids), "planted_pairs": len(truth_pairs), "pairs_found": len(found),
        "pair_recall": round(len(truth_pairs & found) / len(truth_pairs), 4),
        "pair_precision": round(len(truth_pairs & found) / max(len(found), 1), 4),
        "conflicting": {"flagged": len(flagged_conflicts), "planted": len(conflicting),
                        "precision": round(len(flagged_conflicts & conflicting) / max(len(flagged_conflicts), 1), 4),
                        "recall": round(len(flagged_conflicts & conflicting) / max(len(conflicting), 1), 4)},
    }
    errors = np.zeros(len(ids), dtype=bool)
    errors[data["flipped"] + data["relabelled"]] = True
    workspace = Workspace.open(ws)
    oof = next(name for name in workspace.features.names() if name.startswith("oof-probs-"))
    stored = workspace.features.load(oof)
    probs, present = stored.align(ids)
    classes = list(stored.meta["columns"])
    codes = np.array([classes.index(label) for label in data["labels"]])
    curato_flags = np.isin(ids, sorted(flagged_ids(findings["label_issues"])))
    cleanlab = run_cleanlab(cleanlab_python, {"text": (codes[present], np.asarray(probs)[present])})
    cleanlab_flags = _spread(cleanlab["prune_by_noise_rate|text"], present)
    accuracy = float((np.asarray(probs)[present].argmax(axis=1) == codes[present]).mean())
    result["label_issues"] = {
        "planted": int(errors.sum()), "oof_accuracy_on_given_labels": round(accuracy, 4),
        "curato": {k: round(v, 4) for k, v in scores(curato_flags, errors).items()},
        "cleanlab": {k: round(v, 4) for k, v in scores(cleanlab_flags, errors).items()},
        "cleanlab_best_f1": max(round(scores(_spread(cleanlab[key], present), errors)["f1"], 4) for key in cleanlab),
    }
    result["shortcuts"] = {"planted": {"prefix": data["prefix_class"], "url": data["url_class"]},
                           "severity": findings["shortcuts"]["severity"], "flagged": cue_summary(findings["shortcuts"]),
                           "message": findings["shortcuts"]["message"]}
    return result


def _spread(mask: np.ndarray, present: np.ndarray) -> np.ndarray:
    """A mask over the rows with probabilities, as a mask over all rows."""
    full = np.zeros(len(present), dtype=bool)
    full[np.flatnonzero(present)] = mask
    return full


def measure_control(data: dict, findings: dict) -> dict:
    ids = [f"t{i:05d}" for i in range(len(data["texts"]))]
    result = {"texts": len(ids), "shortcuts": {"severity": findings["shortcuts"]["severity"],
                                               "flagged": cue_summary(findings["shortcuts"]),
                                               "message": findings["shortcuts"]["message"]}}
    for name, planted in (("empty_text", data["emptied"]), ("encoding_damage", data["damaged"])):
        flagged = flagged_ids(findings[name])
        truth = {ids[i] for i in planted}
        extra = sorted(flagged - truth)
        result[name] = {"planted": len(truth), "found": len(flagged & truth), "also_flagged": len(extra),
                        "also_flagged_texts": [data["texts"][int(sid[1:])][:90] for sid in extra[:5]],
                        "message": findings[name]["message"]}
    for name in ("odd_length", "mostly_markup", "other_language"):
        flagged = sorted(flagged_ids(findings[name]))
        result[name] = {"flagged": len(flagged), "texts": [data["texts"][int(sid[1:])][:90] for sid in flagged[:5]],
                        "message": findings[name]["message"]}
    return result


LOCALES = {"de": "german", "fr": "french", "es": "spanish", "it": "italian", "pt": "portuguese", "nl": "dutch"}


def language_check() -> dict[str, dict[str, float]]:
    """How often the ``language`` property names a language, and how often rightly, on the translated messages
    of the installed programs (``/usr/share/locale/<ll>/LC_MESSAGES/*.mo``, strings of 40+ characters without
    ``%`` placeholders; English: the untranslated originals of the German catalogues)."""
    import gettext

    from curato.features.text_properties import LANGUAGES, TEXT_PROPERTY_COLUMNS, text_properties

    texts, truth = [], []
    for locale, language in [*LOCALES.items(), ("de", "english")]:
        for path in sorted(Path(f"/usr/share/locale/{locale}/LC_MESSAGES").glob("*.mo")):
            try:
                with path.open("rb") as handle:
                    catalogue = gettext.GNUTranslations(handle)._catalog
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            for key, value in catalogue.items():
                text = (key[0] if isinstance(key, tuple) else key) if language == "english" else value
                if isinstance(text, str) and len(text) >= 40 and "%" not in text:
                    texts.append(text)
                    truth.append(language)
    start = time.perf_counter()
    codes = text_properties(texts)[:, TEXT_PROPERTY_COLUMNS.index("language")]
    seconds = time.perf_counter() - start
    named = np.array([LANGUAGES[int(c)] if np.isfinite(c) else "" for c in codes], dtype=object)
    truth_array = np.array(truth, dtype=object)
    result: dict[str, dict[str, float]] = {"all": {"texts": len(texts),
                                                   "texts_per_second": round(len(texts) / seconds)}}
    for language in sorted(set(truth)):
        members = truth_array == language
        said = members & (named != "")
        result[language] = {"texts": int(members.sum()), "named": round(float(said.sum() / members.sum()), 3),
                            "right_when_named": round(float((named[said] == language).mean()), 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="originals per dataset")
    parser.add_argument("--per-class", type=int, default=450, help="manual pages per section at most")
    parser.add_argument("--label-flips", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="fortunes,manpages")
    parser.add_argument("--cleanlab-python", default=str(REPO / ".bench" / "cleanlab-venv" / "bin" / "python"))
    parser.add_argument("--embedder", help="text embedder for embed and audit (default: curato's choice, minilm)")
    parser.add_argument("--planted-only", action="store_true", help="skip the control workspaces")
    parser.add_argument("--languages", action="store_true", help="only measure the language property")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.languages:
        print(json.dumps(language_check(), indent=2))
        return
    results = {}
    for dataset in args.datasets.split(","):
        texts, labels = _fortunes() if dataset == "fortunes" else manpages(args.per_class, args.seed)
        results[dataset] = {"available": len(texts), "classes": dict(Counter(labels))}
        with tempfile.TemporaryDirectory() as tmp:
            planted = planted_set(texts, labels, args.texts, args.seed, args.label_flips)
            findings, seconds, ws = run_workspace(Path(tmp), "planted", planted["texts"], planted["labels"],
                                                  args.embedder)
            results[dataset]["planted"] = {**measure_planted(planted, findings, ws, args.cleanlab_python),
                                           "seconds": seconds, "embedder": args.embedder or "minilm"}
            if args.planted_only:
                print(json.dumps({dataset: results[dataset]}, indent=2, ensure_ascii=False), flush=True)
                continue
            control = control_set(texts, labels, args.texts, args.seed)
            findings, seconds, _ = run_workspace(Path(tmp), "control", control["texts"], control["labels"],
                                                 args.embedder)
            results[dataset]["control"] = {**measure_control(control, findings), "seconds": seconds}
        print(json.dumps({dataset: results[dataset]}, indent=2, ensure_ascii=False), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
