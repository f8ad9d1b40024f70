"""The demo runs end to end on real Fashion-MNIST and writes a report a person can read."""

from __future__ import annotations

import re

from curato.commands.demo import run_demo
from curato.workspace import Workspace


def test_demo_end_to_end_and_rerun(tmp_path, fashion_mnist):
    result = run_demo(tmp_path / "demo", n_train=120)
    assert result.dataset == "Fashion-MNIST"
    html = result.report_path.read_text()
    assert "Summary" in html and "Examples per class" in html and "Ankle boot" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 10 * 3  # thumbnails per class, inline
    assert not re.search(r'(src|href)="(https?:)?//|url\((https?:)?//|<link ', html)  # nothing fetched
    assert len(result.headlines) == 3 and all(result.headlines)
    ws = Workspace.open(result.workspace)
    assert ws.catalog.group_counts("split") == {"test": 40, "train": 120}
    assert set(ws.features.names()) == {"efficientnet-lite0-112", "properties", "thumbnails",
                                        "oof-probs-efficientnet-lite0-112"}
    # The planted shortcut (Bag images mostly JPEG) is caught and leads the headlines.
    assert result.headlines[0].startswith("shortcuts:") and "'Bag'" in result.headlines[0]
    assert "format" in result.headlines[0]
    again = run_demo(tmp_path / "demo", n_train=120)
    assert again.report_path == result.report_path
    ingests = ws.catalog.runs("ingest")
    assert ingests[-1]["summary"]["scanned"] == 0 and ingests[-1]["summary"]["new"] == 0
