# Run from the repository root (needs Debian's fortunes package: apt-get install fortunes):
#   .venv/bin/python benchmarks/text_audit.py --texts 3000 --seed 0
"""Duplicates on real text, end to end through the CLI: fortune cookies with planted copies and label flips.

Data: Debian's ``fortunes`` (10 category files = labels; 40-400 characters; the collection's own variants of a
saying left out, see ``tests/test_text_duplicates.py``), ``--texts`` of them plus 10% planted copies (exact,
case, punctuation, whitespace, one word changed; 30% of the copies relabelled). ``curato ingest --format text``,
``curato embed`` (MiniLM) and ``curato audit --checks duplicates`` run in a fresh workspace; then:

* pair recall / precision: the pairs inside one ``exact_duplicates`` or ``near_duplicates`` group against the
  planted (original, copy) pairs;
* ``near_duplicates`` / ``conflicting_duplicates``: samples flagged and the share of them in a planted pair.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_text_duplicates import fortune_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = fortune_dataset(n=args.texts, seed=args.seed)
    ids, texts, labels, planted = data["ids"], data["texts"], data["labels"], data["planted"]
    curato = [sys.executable, "-m", "curato"]
    with tempfile.TemporaryDirectory() as tmp:
        source, ws, out = Path(tmp) / "texts.csv", Path(tmp) / "ws", Path(tmp) / "audit.json"
        with source.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "label"])
            writer.writerows(zip(ids, texts, labels, strict=True))
        seconds = {}
        for step, command in (("ingest", ["ingest", str(source), "--format", "text", "-w", str(ws)]),
                              ("embed", ["embed", "-w", str(ws)]),
                              ("audit", ["audit", "-w", str(ws), "--checks", "duplicates", "--json", str(out)])):
            start = time.perf_counter()
            subprocess.run([*curato, *command], check=True, capture_output=True)
            seconds[step] = round(time.perf_counter() - start, 1)
        report = json.loads(out.read_text())
    findings = {f["check"]: f for f in report["checks"]}
    found = set()
    for name in ("exact_duplicates", "near_duplicates"):
        for row in findings[name]["issues"]:  # the evidence lists only the largest 200 groups
            found.update(combinations(sorted(row["members"]), 2))
    truth = {tuple(sorted((ids[a], ids[b]))) for a, b in planted}
    in_pair = set(ids[planted.ravel()])
    result = {"texts": len(ids), "planted_pairs": len(truth), "pairs_found": len(found),
              "pair_recall": round(len(truth & found) / len(truth), 4),
              "pair_precision": round(len(truth & found) / max(len(found), 1), 4), "seconds": seconds}
    for name in ("near_duplicates", "conflicting_duplicates"):
        flagged = {row["sample_id"] for row in findings[name].get("issues", [])}
        result[name] = {"severity": findings[name]["severity"], "flagged": len(flagged),
                        "share_in_planted_pair": round(len(flagged & in_pair) / max(len(flagged), 1), 4),
                        "message": findings[name]["message"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
