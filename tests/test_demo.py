"""The demo runs end to end on real Fashion-MNIST, writes a report a person can read, and leaves a workspace where
the other commands have something to show: two sources to tell apart, an unlabelled pool to pick from."""

from __future__ import annotations

import json
import re

from curato.commands.demo import run_demo
from curato.commands.info import workspace_overview
from curato.workspace import Workspace
from tests.conftest import run


def test_demo_end_to_end_and_rerun(tmp_path, fashion_mnist):
    result = run_demo(tmp_path / "demo", n_train=150)
    assert result.dataset == "Fashion-MNIST"
    html = result.report_path.read_text()
    assert "Summary" in html and "Ankle boot" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 10 * 3  # thumbnails per class, inline
    assert not re.search(r'(src|href)="(https?:)?//|url\((https?:)?//|<link ', html)  # nothing fetched
    assert len(result.headlines) == 3 and all(result.headlines)
    ws = Workspace.open(result.workspace)
    assert ws.catalog.group_counts("split") == {"test": 50, "train": 150}
    sources = ws.catalog.group_counts("source")
    assert set(sources) == {"studio", "phone"} and 40 <= sources["phone"] <= 95  # a third of 200
    unlabelled = workspace_overview(ws)["unlabeled"]
    assert 15 <= unlabelled <= 45  # a fifth of the 150 training images
    assert set(ws.features.names()) == {"efficientnet-lite0-112", "properties", "thumbnails",
                                        "oof-probs-efficientnet-lite0-112"}
    # The planted shortcut (Bag images mostly JPEG) is caught and leads the headlines.
    assert result.headlines[0].startswith("shortcuts:") and "'Bag'" in result.headlines[0]
    assert "format" in result.headlines[0]
    assert len(result.planted) == 4 and "JPEG" in result.planted[0] and "phone" in result.planted[1]
    assert [command.split()[1] for command, _ in result.next_commands][:3] == ["bias", "select", "size"]
    # Severity agrees with what is flagged: nothing flagged under "none", nothing "low" with 0 flagged.
    document = json.loads((result.workspace / "reports" / "audit-latest.json").read_text())
    for finding in document["checks"]:
        assert (finding["severity"] == "none") == (len(finding["issues"]) == 0), finding["check"]

    again = run_demo(tmp_path / "demo", n_train=150)
    assert again.report_path == result.report_path
    ingests = ws.catalog.runs("ingest")
    assert all(run["summary"]["scanned"] == 0 and run["summary"]["new"] == 0 for run in ingests[-2:])

    # The commands it suggests show something: the pool to pick from, the sources to tell apart.
    picked = run("select", "-w", result.workspace, "--budget", "5")
    assert picked.returncode == 0, picked.stderr
    assert "5 samples queued by auto" in picked.stdout and f"{unlabelled} unlabelled" in picked.stdout
    told = run("bias", "-w", result.workspace, "--by", "source")
    assert told.returncode == 0, told.stderr
    assert "phone vs studio" in told.stdout and "contrast" in told.stdout
    # they rebuilt the workspace report, which keeps the demo's title
    assert "<h1>curato report — Fashion-MNIST demo</h1>" in (result.workspace / "reports" / "report.html").read_text()
