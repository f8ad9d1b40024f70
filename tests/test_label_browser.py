"""The labelling app in Debian's chromium against a real ``curato serve`` on loopback, on real Fashion-MNIST.

The workspace is built the way a user builds it: a manifest with planted label errors, a train/test copy and an
unlabelled pool, ``curato ingest``, ``embed`` (classic), ``audit`` and ``select``. Every decision is made with
the keyboard in the page; what it changed is read back through the API, the catalog and ``curato export``.
Set CURATO_SCREENSHOTS=1 to refresh the screenshots in docs/img/.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from curato.catalog.schema import labels as labels_table
from curato.workspace import Workspace
from tests.browser import chromium_page, curato_serve
from tests.conftest import run

XSS = "<img src=x onerror=alert(1)>"
CLASSES = {0: "T-shirt/top", 1: "Trouser", 7: "Sneaker", 9: XSS}  # Fashion-MNIST code -> the name given here
PLANTED = ((1, "Sneaker"), (7, "Trouser"), (0, "Trouser"), (9, "Trouser"), (1, "T-shirt/top"))
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
CURATO = Path(sys.executable).with_name("curato")


def _build_dataset(root: Path, fashion_mnist) -> tuple[Path, str]:
    """A manifest of real PNGs: 30 train + 8 test per class, 12 unlabelled per class, planted label errors and
    one exact copy of a training image in the test split; returns (manifest, the copied sample's id)."""
    images, labels = fashion_mnist
    root.mkdir(parents=True)
    rows = []
    for klass, name in CLASSES.items():
        for position, index in enumerate(np.flatnonzero(labels == klass)[:50]):
            Image.fromarray(images[index]).save(root / f"{index:05d}.png")
            labelled = position < 38
            rows.append({"id": f"img{index:05d}", "path": f"{index:05d}.png", "label": name if labelled else "",
                         "split": "test" if 30 <= position < 38 else "train"})
    planted: set[str] = set()
    for klass, wrong in PLANTED:
        row = next(r for r in rows if r["label"] == CLASSES[klass] and r["split"] == "train" and r["id"] not in planted)
        row["label"] = wrong
        planted.add(row["id"])
    original = next(r for r in rows if r["label"] == "Sneaker" and r["split"] == "train" and r["id"] not in planted)
    shutil.copy(root / original["path"], root / "copy.png")
    rows.append({"id": "copy-" + original["id"], "path": "copy.png", "label": "Sneaker", "split": "test"})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, original["id"]


class Server:
    """A running ``curato serve`` and an admin's token; ``api`` calls it as a script would (Bearer token)."""

    def __init__(self, url: str, token: str, workspace: Path, copy_of: str) -> None:
        self.url, self.token, self.workspace, self.copy_of = url, token, workspace, copy_of

    def api(self, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(self.url + path, method="GET" if body is None else "POST",
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def export(self, out: Path) -> dict[str, dict[str, str]]:
        result = run("export", out, "-w", self.workspace)
        assert result.returncode == 0, result.stderr
        with out.open() as handle:
            return {row["id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fashion_mnist):
    root = tmp_path_factory.mktemp("labelling")
    manifest, original = _build_dataset(root / "data", fashion_mnist)
    workspace = root / "ws"
    for args in (("ingest", manifest, "-w", workspace), ("embed", "-w", workspace, "--embedder", "classic"),
                 ("audit", "-w", workspace), ("select", "-w", workspace, "--budget", "10")):
        result = run(*args)
        assert result.returncode == 0, f"curato {args[0]}: {result.stderr}"
    added = subprocess.run([CURATO, "users", "add", "ada", "--role", "admin", "-w", workspace],
                           capture_output=True, text=True, check=True)
    token = added.stdout.strip().splitlines()[-1]
    with curato_serve(workspace, root / "serve.log") as url:
        yield Server(url, token, workspace, original)


def _open_app(page, server: Server, dialogs: list[str], errors: list[str]) -> None:
    """Sign in through login.html the way a person does; dialogs and script errors are collected."""
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_viewport_size({"width": 1100, "height": 760})
    page.goto(server.url + "/")
    page.wait_for_url("**/login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    page.wait_for_selector("#review-queues")


def _item_changes(page, attribute: str, before: str | None) -> str | None:
    """Wait until the shown item is another one (or none is left after one was shown); its id, None if none."""
    page.wait_for_function("([attribute, before]) => { const item = document.querySelector('#item');"
                           " return item ? item.dataset[attribute] !== before"
                           " : before !== null && !!document.querySelector('.empty'); }", arg=[attribute, before])
    item = page.query_selector("#item")
    return None if item is None else item.get_attribute(f"data-{attribute}")


def _screenshot(page, name: str) -> None:
    if os.environ.get("CURATO_SCREENSHOTS"):
        path = SCREENSHOTS / f"labelling-{name}.png"
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.set_viewport_size({"width": 1100, "height": 900})
        page.screenshot(path=str(path))
        page.set_viewport_size({"width": 1100, "height": 760})
        assert path.stat().st_size < 200_000


def _no_injection(page, dialogs: list[str], errors: list[str]) -> None:
    assert dialogs == [] and errors == []
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0


def test_login_and_overview(server):
    dialogs: list[str] = []
    errors: list[str] = []
    with chromium_page() as page:
        _open_app(page, server, dialogs, errors)
        assert page.text_content("#user") == "ada" and page.text_content("#role") == "admin"
        queues = page.inner_text("#review-queues")
        assert "label_issues" in queues and "exact_duplicates" in queues
        assert not page.is_hidden("#nav-admin")
        page.click("#nav-admin")
        page.wait_for_selector("#agreement")
        page.fill("#new-user-name", "bea")
        page.click("#add-user button[type=submit]")
        page.wait_for_selector("#new-token:not([hidden])")
        assert len(page.text_content("#new-token code").strip()) >= 20  # the token, shown once
        page.wait_for_function("() => document.querySelector('#users').innerText.includes('bea')")
        page.fill("#setting-refit_every", "25")
        page.click("#settings button[type=submit]")
        page.wait_for_selector("#toast:has-text('settings saved')")
        assert server.api("/api/admin/settings")["refit_every"] == 25
        page.fill("#gold-sample", server.copy_of)
        page.select_option("#gold-label", "Sneaker")
        page.click("#add-gold button[type=submit]")
        page.wait_for_selector("#toast:has-text('gold items: 1')")
        _no_injection(page, dialogs, errors)


def test_review_label_issues_by_keyboard(server, tmp_path):
    classes = server.api("/api/me")["classes"]
    assert XSS in classes
    queue = server.api("/api/review/label_issues?status=open&limit=5")
    assert len(queue["items"]) >= 2
    first, second = queue["items"][:2]
    dialogs: list[str] = []
    errors: list[str] = []
    with chromium_page() as page:
        _open_app(page, server, dialogs, errors)
        page.goto(server.url + "/#/review/label_issues")
        page.wait_for_selector("#item")
        assert page.get_attribute("#item", "data-item") == first["item"]
        image = page.locator("#item img.sample").first
        assert image.bounding_box()["width"] >= 280
        assert image.evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
        assert page.locator(f"ol.classes li[data-class='{XSS}']").inner_text().endswith(XSS)  # as text, not a tag
        _screenshot(page, "review")
        page.wait_for_timeout(20)
        page.keyboard.press("a")  # accept the suggestion
        assert _item_changes(page, "item", first["item"]) == second["item"]
        given, suggested = second["samples"][0]["label"], second["evidence"]["suggested_label"]
        target = next(name for name in classes[:10] if name not in (given, suggested))
        key = str((classes.index(target) + 1) % 10)
        page.keyboard.press(key)  # relabel with a number key
        third = _item_changes(page, "item", second["item"])
        page.keyboard.press("u")  # undo: the item comes back
        assert _item_changes(page, "item", third) == second["item"]
        reopened = server.api("/api/review/label_issues?status=open&limit=50")["items"]
        assert second["item"] in {i["item"] for i in reopened}
        page.wait_for_timeout(20)
        page.keyboard.press(key)
        _item_changes(page, "item", second["item"])
        _no_injection(page, dialogs, errors)

    decided = {i["item"]: i for i in server.api("/api/review/label_issues?status=decided&limit=50")["items"]}
    assert decided[first["item"]]["decision"]["action"] == "accept"
    assert decided[second["item"]]["decision"]["action"] == "relabel"
    curated = Workspace.open(server.workspace).catalog.curated_labels()
    first_id, second_id = first["samples"][0]["sample_id"], second["samples"][0]["sample_id"]
    assert (curated[first_id].label, curated[first_id].how) == (first["evidence"]["suggested_label"], "review")
    assert (curated[second_id].label, curated[second_id].how) == (target, "review")
    exported = server.export(tmp_path / "out.csv")
    assert exported[first_id]["label"] == first["evidence"]["suggested_label"]
    assert exported[second_id]["label"] == target
    if "original_label" in exported[second_id]:
        assert exported[second_id]["original_label"] == given
        assert exported[second_id]["origin"] == "human" and exported[second_id]["changed"].lower() in ("true", "1")


def test_duplicate_group_keep_one_and_drop_copies(server, tmp_path):
    copy = "copy-" + server.copy_of
    dialogs: list[str] = []
    errors: list[str] = []
    with chromium_page() as page:
        _open_app(page, server, dialogs, errors)
        page.goto(server.url + "/#/review/exact_duplicates")
        page.wait_for_selector("#item .member")
        members = [m.get_attribute("data-sample") for m in page.query_selector_all("#item .member")]
        assert sorted(members) == sorted([server.copy_of, copy])
        assert {page.inner_text(f"#item .member[data-sample='{m}'] .split-badge") for m in members} == {"train", "test"}
        _screenshot(page, "duplicates")
        page.keyboard.press("s")  # the split prompt lists the members' splits; Escape closes it
        page.wait_for_selector("#split-prompt:not([hidden])")
        assert "train" in page.inner_text("#split-prompt") and "test" in page.inner_text("#split-prompt")
        page.keyboard.press("Escape")
        page.wait_for_selector("#split-prompt", state="hidden")
        group = page.get_attribute("#item", "data-item")
        page.keyboard.press(str(members.index(server.copy_of) + 1))  # keep the training copy
        _item_changes(page, "item", group)
        page.goto(server.url + "/#/review/split_leakage")
        page.wait_for_selector("#item .member")
        leak = page.get_attribute("#item", "data-item")
        page.keyboard.press("d")  # drop copies: the training copy stays
        _item_changes(page, "item", leak)
        _no_injection(page, dialogs, errors)

    decided = server.api("/api/review/exact_duplicates?status=decided&limit=50")["items"]
    assert [item["decision"]["action"] for item in decided] == ["keep_one"]
    assert server.api("/api/review/split_leakage?status=decided&limit=50")["items"][0]["decision"]["action"] == \
        "drop_copies"
    assert Workspace.open(server.workspace).catalog.sample_states() == {copy: "excluded"}
    exported = server.export(tmp_path / "out.csv")
    assert copy not in exported and server.copy_of in exported


def test_labelling_queue_by_keyboard(server, tmp_path):
    classes = server.api("/api/me")["classes"]
    dialogs: list[str] = []
    errors: list[str] = []
    answers: dict[str, str] = {}
    with chromium_page() as page:
        _open_app(page, server, dialogs, errors)
        page.goto(server.url + "/#/label")
        page.wait_for_selector("#item img.sample")
        remaining = page.text_content("#remaining")
        assert remaining.endswith("remaining")
        _screenshot(page, "queue")
        shown = page.get_attribute("#item", "data-sample")
        suggested = page.query_selector("ol.classes li.selected")
        unsure = None
        for step, key in enumerate(["Enter", "2", "s", "n", "u", "3"]):
            if key == "Enter" and suggested is None:
                key = "1"  # no model suggestion yet: pick the first class
            page.wait_for_timeout(30)  # a person looks at the image before answering
            page.keyboard.press(key)
            if key == "Enter":
                answers[shown] = suggested.get_attribute("data-class")
            elif key.isdigit():
                answers[shown] = classes[int(key) - 1]
            previous = shown
            shown = _item_changes(page, "sample", shown)
            if key == "u":
                assert shown == unsure  # undoing "not sure" gives that item back
            if key == "n":
                unsure = previous
            if step < 5:
                assert shown is not None
            suggested = page.query_selector("ol.classes li.selected")
        _no_injection(page, dialogs, errors)

    workspace = Workspace.open(server.workspace)
    with workspace.catalog.engine.connect() as conn:
        stored = conn.execute(select(labels_table.c.sample_id, labels_table.c.label, labels_table.c.annotator,
                                     labels_table.c.duration_ms)
                              .where(labels_table.c.origin == "human", labels_table.c.retracted_at.is_(None),
                                     labels_table.c.sample_id.in_(list(answers)))).all()
    assert {row.sample_id: row.label for row in stored} == answers and len(stored) == 3
    assert all(row.annotator == "ada" and row.duration_ms and row.duration_ms > 0 for row in stored)
    exported = server.export(tmp_path / "out.csv")
    for sample_id, label in answers.items():
        assert exported[sample_id]["label"] == label
        if "origin" in exported[sample_id]:
            assert exported[sample_id]["origin"] == "human" and exported[sample_id]["original_label"] == ""
