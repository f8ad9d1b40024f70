"""The labelling server over real HTTP on loopback (uvicorn in a thread), on SQLite and PostgreSQL: access control,
bad input, the review and labelling workflows, many annotators, the live loop, and kill -9 durability."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from curato.api import Workspace
from curato.catalog.schema import assignments, decisions, labels
from curato.ingest.readers import FASHION_MNIST_CLASSES
from tests.browser import free_port

CLASSES = (0, 1, 7)  # T-shirt/top, Trouser, Sneaker: the head separates them well from 40 labels each


def _write_dataset(root: Path, fashion_mnist) -> Path:
    """Real Fashion-MNIST PNGs: 60 train (40 labelled, 20 unlabelled) + 10 test per class, six planted label errors
    and one train image copied into test (a leak); returns the manifest."""
    images, targets = fashion_mnist
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for klass in CLASSES:
        members = np.flatnonzero(targets == klass)[:70]
        for position, index in enumerate(members):
            Image.fromarray(images[index]).save(root / f"{index:05d}.png")
            split = "test" if position >= 60 else "train"
            labelled = split == "test" or position < 40
            rows.append({"id": f"{split}/{index:05d}.png", "path": f"{index:05d}.png", "split": split,
                         "label": FASHION_MNIST_CLASSES[klass] if labelled else ""})
    for row in rows[:6]:  # planted label errors: six T-shirts labelled Trouser or Sneaker
        row["label"] = FASHION_MNIST_CLASSES[1] if len(row["id"]) % 2 else FASHION_MNIST_CLASSES[7]
    shutil.copy(root / rows[8]["path"], root / "leak.png")
    rows.append({"id": "test/leak.png", "path": "leak.png", "split": "test", "label": rows[8]["label"]})
    path = root / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _build(root: Path, manifest: Path, db_url: str | None = None) -> Path:
    ws = Workspace.create(root, db_url=db_url)
    ws.ingest(manifest)
    ws.embed("classic")
    ws.audit(["label_issues", "duplicates", "outliers"], embedder="classic")
    ws.select(30, strategy="margin", embedder="classic")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, fashion_mnist) -> Path:
    base = tmp_path_factory.mktemp("labelling")
    return _build(base / "ws", _write_dataset(base / "data", fashion_mnist))


def _fresh_postgres(postgres_url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"t{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def workspace(request, built, tmp_path, postgres_url, fashion_mnist) -> Path:
    """A fresh copy of the built workspace (SQLite), or the same data in a PostgreSQL catalog."""
    if request.param == "sqlite":
        return Path(shutil.copytree(built, tmp_path / "ws"))
    if not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    return _build(tmp_path / "ws", _write_dataset(tmp_path / "data", fashion_mnist), _fresh_postgres(postgres_url))


@contextmanager
def serving(root: Path, *, live_loop: bool = False) -> Iterator[str]:
    """The app on a real uvicorn server on loopback, in a thread; yields its base URL."""
    import uvicorn

    from curato.label.server import create_app

    app = create_app(Workspace.open(root), live_loop=live_loop)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _client(base: str, token: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _tokens(root: Path) -> dict[str, str]:
    ws = Workspace.open(root)
    return {role: ws.add_user(f"{role}1", role) for role in ("admin", "reviewer", "annotator")}


def _counts(root: Path) -> tuple[int, int, int]:
    engine = Workspace.open(root).catalog.engine
    with engine.connect() as conn:
        return tuple(int(conn.execute(select(func.count()).select_from(table)).scalar())
                     for table in (decisions, labels, assignments))


# -- access control and bad input --------------------------------------------------------------------------------


def test_every_api_endpoint_refuses_requests_without_credentials(built, tmp_path):
    from curato.label.server import create_app

    root = Path(shutil.copytree(built, tmp_path / "ws"))
    routes = [(method, route.path) for route in create_app(Workspace.open(root), live_loop=False).routes
              if route.path.startswith("/api/") and route.path != "/api/login" for method in route.methods]
    assert len(routes) >= 15
    before = _counts(root)
    with serving(root) as base, _client(base) as anonymous, _client(base, "not-a-token") as forged:
        for method, path in routes:
            url = path.replace("{kind}", "label_issues").replace("{decision_id}", "1")
            for client in (anonymous, forged):
                response = client.request(method, url, json={} if method == "POST" else None)
                assert response.status_code == 401, (method, url, response.text)
                assert "token" in response.json()["detail"]
    assert _counts(root) == before


def test_roles_are_enforced(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "ws"))
    tokens = _tokens(root)
    with serving(root) as base, _client(base, tokens["annotator"]) as annotator, \
            _client(base, tokens["reviewer"]) as reviewer:
        for path in ("/api/admin/users", "/api/admin/agreement", "/api/admin/settings", "/api/review"):
            assert annotator.get(path).status_code == 403, path
        assert annotator.post("/api/admin/users", json={"name": "mallory", "role": "admin"}).status_code == 403
        assert annotator.post("/api/review/label_issues/decide",
                              json={"item": "x", "action": "keep"}).status_code == 403
        assert reviewer.get("/api/admin/users").status_code == 403
        assert reviewer.get("/api/review").status_code == 200 and annotator.get("/api/label/next").status_code == 200
    assert [user["name"] for user in Workspace.open(root).users()] == ["admin1", "reviewer1", "annotator1"]


def test_cookie_sessions_need_the_csrf_header(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "ws"))
    tokens = _tokens(root)
    with serving(root) as base, _client(base) as browser:
        assert browser.post("/api/login", json={"token": "wrong"}).status_code == 401
        login = browser.post("/api/login", json={"token": tokens["reviewer"]})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = login.json()["csrf"]
        assert browser.get("/api/me").json()["user"] == "reviewer1"  # reads need no CSRF token
        item = browser.get("/api/review/label_issues").json()["items"][0]["item"]
        before = _counts(root)
        forged = browser.post("/api/review/label_issues/decide", json={"item": item, "action": "exclude"})
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
        wrong = browser.post("/api/review/label_issues/decide", json={"item": item, "action": "exclude"},
                             headers={"x-csrf-token": "guess"})
        assert wrong.status_code == 403 and _counts(root) == before
        done = browser.post("/api/review/label_issues/decide", json={"item": item, "action": "exclude"},
                            headers={"x-csrf-token": csrf})
        assert done.status_code == 200 and _counts(root)[0] == before[0] + 1
        assert browser.post("/api/logout", json={}, headers={"x-csrf-token": csrf}).status_code == 200
        assert browser.get("/api/me").status_code == 401


def test_hostile_requests_get_4xx_and_write_nothing(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "ws"))
    tokens = _tokens(root)
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    with serving(root) as base, _client(base, tokens["admin"]) as admin:
        item = admin.get("/api/review/label_issues").json()["items"][0]["item"]
        before = _counts(root)
        for sample_id in ("../../../etc/passwd", str(secret), "/etc/passwd", "train/../../secret.png", "\x00"):
            response = admin.get("/api/image", params={"id": sample_id})
            assert response.status_code == 404 and "not an image in this workspace" in response.json()["detail"]
        cases = [
            ("/api/review/label_issues/decide", {"item": item, "action": "relabel", "label": "Unicorn"}, 400,
             "not a class"),
            ("/api/review/label_issues/decide", {"item": item, "action": "keep_one", "keep": "x"}, 400, "keep_one"),
            ("/api/review/label_issues/decide", {"item": "no/such.png", "action": "keep"}, 404, "not in"),
            ("/api/review/nothing/decide", {"item": item, "action": "keep"}, 404, "no review queue"),
            ("/api/review/label_issues/decide", {"item": item, "action": "keep", "extra": 1}, 422, "extra"),
            ("/api/review/label_issues/decide", {"item": item, "action": "keep", "duration_ms": -5}, 400,
             "duration_ms"),
            ("/api/label/submit", {"assignment": "one", "action": "label"}, 422, "assignment"),
            ("/api/label/submit", {"assignment": 99999, "action": "label", "label": "Trouser"}, 404, "does not exist"),
            ("/api/admin/users", {"name": "../root", "role": "admin"}, 400, "user name"),
            ("/api/admin/users", {"name": "eve", "role": "superuser"}, 400, "role"),
            ("/api/admin/settings", {"overlap": 0}, 400, "overlap"),
            ("/api/admin/gold", {"items": [{"sample_id": "../x", "label": "Trouser"}]}, 404, "not in the catalog"),
            ("/api/decisions/424242/undo", {}, 404, "does not exist"),
        ]
        for path, body, status, words in cases:
            response = admin.post(path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert words in response.json()["detail"], (path, response.json())
        malformed = admin.post("/api/review/label_issues/decide", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert malformed.status_code == 422
        huge = admin.post("/api/review/label_issues/decide", json={"item": "x" * 70_000, "action": "keep"})
        assert huge.status_code == 413 and "KiB" in huge.json()["detail"]

        def chunks():
            for _ in range(100):
                yield b"x" * 1024

        streamed = admin.post("/api/label/submit", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert _counts(root) == before
        assert [user["name"] for user in admin.get("/api/admin/users").json()] == ["admin1", "reviewer1",
                                                                                    "annotator1"]
        page = admin.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert admin.get("/static/../server.py").status_code == 404


# -- review ------------------------------------------------------------------------------------------------------


def test_review_decisions_change_the_curated_labels_and_undo_restores_them(workspace):
    tokens = _tokens(workspace)
    ws = Workspace.open(workspace)
    with serving(workspace) as base, _client(base, tokens["reviewer"]) as reviewer:
        overview = reviewer.get("/api/review").json()
        kinds = {queue["kind"]: queue for queue in overview["queues"]}
        assert {"label_issues", "split_leakage"} <= set(kinds) and overview["audit_run"] is not None
        page = reviewer.get("/api/review/label_issues", params={"limit": 3}).json()
        first, second, third = page["items"]
        scores = [item["score"] for item in page["items"]]
        assert scores == sorted(scores, reverse=True)
        evidence = first["evidence"]
        assert evidence["suggested_label"] != first["samples"][0]["label"] and 0 <= evidence["probability"] <= 1
        sid1, sid2, sid3 = (item["samples"][0]["sample_id"] for item in (first, second, third))
        before = ws.catalog.curated_labels()

        accepted = reviewer.post("/api/review/label_issues/decide",
                                 json={"item": first["item"], "action": "accept", "duration_ms": 1200}).json()
        assert accepted["effects"]["labels"] == {sid1: evidence["suggested_label"]}
        other = next(name for name in reviewer.get("/api/me").json()["classes"]
                     if name != second["samples"][0]["label"])
        relabel = reviewer.post("/api/review/label_issues/decide",
                                json={"item": second["item"], "action": "relabel", "label": other}).json()
        excluded = reviewer.post("/api/review/label_issues/decide",
                                 json={"item": third["item"], "action": "exclude"}).json()
        assert ws.catalog.curated_label_problems() == []  # the maintained table equals the rule over the history
        curated = ws.catalog.curated_labels()
        assert (curated[sid1].label, curated[sid1].origin, curated[sid1].how) == (
            evidence["suggested_label"], "human", "review")
        assert curated[sid2].label == other and ws.catalog.sample_states() == {sid3: "excluded"}
        decided = reviewer.get("/api/review/label_issues", params={"status": "decided", "limit": 10}).json()
        assert {item["item"] for item in decided["items"]} == {first["item"], second["item"], third["item"]}
        assert reviewer.get("/api/review").json()["queues"][0]["open"] < kinds[overview["queues"][0]["kind"]]["items"] \
            or decided["open"] == page["open"] - 3

        assert reviewer.post(f"/api/decisions/{relabel['decision']}/undo", json={}).status_code == 200
        assert reviewer.post(f"/api/decisions/{relabel['decision']}/undo", json={}).status_code == 409
        assert reviewer.post(f"/api/decisions/{excluded['decision']}/undo", json={}).status_code == 200
        assert ws.catalog.curated_labels()[sid2] == before[sid2] and ws.catalog.sample_states() == {}
        assert ws.catalog.curated_label_problems() == []
        reopened = reviewer.get("/api/review/label_issues", params={"limit": 200}).json()["items"]
        assert second["item"] in {item["item"] for item in reopened}
        with ws.catalog.engine.connect() as conn:  # history is kept: the undone label is retracted, not deleted
            rows = conn.execute(select(labels.c.label, labels.c.retracted_at, labels.c.duration_ms).where(
                labels.c.sample_id.in_([sid1, sid2]), labels.c.origin == "human").order_by(labels.c.id)).all()
        assert [(row[0], row[1] is not None) for row in rows] == [(evidence["suggested_label"], False), (other, True)]
        assert rows[0][2] == 1200
        assert accepted["decision"] < relabel["decision"]
        kept = reviewer.post("/api/review/label_issues/decide", json={"item": second["item"], "action": "keep"})
        assert kept.json()["effects"]["labels"] == {sid2: before[sid2].label}
        assert ws.catalog.curated_labels()[sid2].how == "review"
        assert ws.catalog.curated_label_problems() == []


def test_duplicate_groups_keep_one_or_move_into_one_split(workspace):
    tokens = _tokens(workspace)
    ws = Workspace.open(workspace)
    with serving(workspace) as base, _client(base, tokens["reviewer"]) as reviewer:
        items = reviewer.get("/api/review/split_leakage", params={"limit": 20}).json()["items"]
        (leak,) = [item for item in items if "test/leak.png" in item["item"]]  # the planted copy
        members = {sample["sample_id"]: sample["split"] for sample in leak["samples"] if sample["role"] == "member"}
        assert sorted(members.values()) == ["test", "train"] and leak["group"]
        moved = reviewer.post("/api/review/split_leakage/decide",
                              json={"item": leak["item"], "action": "move_split", "split": "train"})
        assert moved.status_code == 200
        splits = dict(zip(*(ws.catalog.samples(("sample_id", "split"))[c].tolist() for c in ("sample_id", "split")),
                          strict=True))
        assert all(splits[sid] == "train" for sid in members)
        assert ws.catalog.curated_label_problems() == []  # the table's split moved with the samples
        reviewer.post(f"/api/decisions/{moved.json()['decision']}/undo", json={})
        splits = dict(zip(*(ws.catalog.samples(("sample_id", "split"))[c].tolist() for c in ("sample_id", "split")),
                          strict=True))
        assert {sid: splits[sid] for sid in members} == members
        assert ws.catalog.curated_label_problems() == []
        dropped = reviewer.post("/api/review/split_leakage/decide",
                                json={"item": leak["item"], "action": "drop_copies"})
        test_copy = next(sid for sid, split in members.items() if split == "test")
        assert dropped.json()["effects"]["excluded"] == [test_copy]
    assert ws.catalog.sample_states() == {test_copy: "excluded"}
    from curato.commands.rows import load_samples

    assert test_copy not in set(load_samples(ws, pixels=False).sample_ids.tolist())


# -- labelling ---------------------------------------------------------------------------------------------------


def test_annotators_never_share_an_item_and_labels_are_stored_with_durations(workspace):
    tokens = _tokens(workspace)
    ws = Workspace.open(workspace)
    second = ws.add_user("annotator2", "annotator")
    with serving(workspace) as base, _client(base, tokens["annotator"]) as one, _client(base, second) as two:
        classes = one.get("/api/me").json()["classes"]
        seen: dict[str, list[str]] = {"annotator1": [], "annotator2": []}
        first_decision = None
        for step in range(14):
            for name, client in (("annotator1", one), ("annotator2", two)):
                item = client.get("/api/label/next").json()
                assert item["assignment"] is not None and item["suggestion"] in classes
                again = client.get("/api/label/next").json()
                assert again["assignment"] == item["assignment"]  # a reload gives the same unfinished item
                seen[name].append(item["sample_id"])
                body = {"assignment": item["assignment"], "action": "label", "label": item["suggestion"],
                        "duration_ms": 800 + step}
                answer = client.post("/api/label/submit", json=body).json()
                assert answer["duplicate"] is False
                first_decision = first_decision or answer["decision"]
                replay = client.post("/api/label/submit", json=body).json()
                assert replay == {"decision": answer["decision"], "duplicate": True}
        assert not set(seen["annotator1"]) & set(seen["annotator2"])
        assert two.post("/api/label/submit", json={"assignment": 1, "action": "skip"}).status_code in (403, 409)
        skipped = one.get("/api/label/next").json()
        one.post("/api/label/submit", json={"assignment": skipped["assignment"], "action": "skip"})
        assert two.get("/api/label/next").json()["sample_id"] == skipped["sample_id"]  # the skip freed it
        undo = one.post(f"/api/decisions/{first_decision}/undo", json={})
        assert undo.status_code == 200
        assert one.get("/api/label/next").json()["sample_id"] == seen["annotator1"][0]  # the undone item comes back
    with ws.catalog.engine.connect() as conn:
        stored = conn.execute(select(labels.c.annotator, labels.c.duration_ms, labels.c.retracted_at).where(
            labels.c.origin == "human")).all()
    assert len(stored) == 28 and sum(row[2] is not None for row in stored) == 1
    with ws.catalog.engine.connect() as conn:  # every answer says which `select` run queued its item
        sources = {row[0] for row in conn.execute(select(decisions.c.source_run).where(
            decisions.c.queue == "labelling", decisions.c.action == "label"))}
    assert sources == {run["id"] for run in ws.catalog.runs("select")}
    assert {row[0] for row in stored} == {"annotator1", "annotator2"} and all(row[1] >= 800 for row in stored)
    status = {entry["sample_id"]: entry["status"] for entry in ws.catalog.queued(None)}
    assert sum(value == "labelled" for value in status.values()) == 27


def test_overlap_gold_items_and_agreement(workspace):
    tokens = _tokens(workspace)
    ws = Workspace.open(workspace)
    names = ["annotator2", "annotator3"]
    extra = {name: ws.add_user(name, "annotator") for name in names}
    truth = {row["sample_id"]: row for row in ws.catalog.queued()}
    with serving(workspace) as base, _client(base, tokens["admin"]) as admin:
        assert admin.post("/api/admin/settings", json={"overlap": 2, "gold_every": 4}).json()["overlap"] == 2
        curated = ws.catalog.curated_labels()
        gold_ids = sorted(sid for sid, label in curated.items() if sid.startswith("train/") and
                          label.origin == "imported")[:5]
        admin.post("/api/admin/gold", json={"items": [{"sample_id": sid, "label": curated[sid].label}
                                                      for sid in gold_ids]})
        served: dict[str, list[str]] = {}
        gold_answers = 0
        for name, token in [("annotator1", tokens["annotator"]), *extra.items()]:
            with _client(base, token) as client:
                for _ in range(8):
                    item = client.get("/api/label/next").json()
                    if item["assignment"] is None:
                        break
                    served.setdefault(item["sample_id"], []).append(name)
                    is_gold = item["sample_id"] in gold_ids
                    gold_answers += is_gold
                    # annotator3 answers gold items wrong: its gold accuracy must show it
                    label = curated[item["sample_id"]].label if is_gold and name != "annotator3" else (
                        "Trouser" if name != "annotator3" else "Sneaker")
                    client.post("/api/label/submit", json={"assignment": item["assignment"], "action": "label",
                                                           "label": label})
        report = admin.get("/api/admin/agreement").json()
    queued_served = {sid: who for sid, who in served.items() if sid in truth}
    assert max(len(who) for who in queued_served.values()) == 2  # overlap 2: never a third annotator
    assert all(len(set(who)) == len(who) for who in served.values())
    assert gold_answers >= 3
    gold = report["gold"]
    assert gold["annotator3"]["accuracy"] == 0.0 and gold["annotator1"]["accuracy"] == 1.0
    assert report["overlap"] == 2 and report["items_with_overlap"] >= 1
    assert {"annotator1", "annotator2", "annotator3"} <= set(report["per_annotator"])


def test_live_loop_refits_suggests_and_reports(workspace):
    tokens = _tokens(workspace)
    Workspace.open(workspace).add_user("loop-admin", "admin")
    from curato.commands.labelling import write_app_settings

    write_app_settings(Workspace.open(workspace), {"refit_every": 3})
    with serving(workspace, live_loop=True) as base, _client(base, tokens["annotator"]) as annotator:
        deadline = time.monotonic() + 60
        while annotator.get("/api/status").json()["loop"]["refits"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first = annotator.get("/api/status").json()["loop"]
        assert first["estimated_accuracy"] is not None and first["estimated_accuracy"] > 0.8
        for _ in range(3):
            item = annotator.get("/api/label/next").json()
            assert item["suggestion"] is not None and 0 < item["confidence"] <= 1
            annotator.post("/api/label/submit", json={"assignment": item["assignment"], "action": "label",
                                                      "label": item["suggestion"]})
        while annotator.get("/api/status").json()["loop"]["refits"] < 2:
            assert time.monotonic() < deadline, "no refit after refit_every new labels"
            time.sleep(0.2)
        status = annotator.get("/api/status").json()
    assert status["labels"]["human"] == 3 and status["loop"]["reranked"] > 0 and status["loop"]["error"] is None


# -- durability --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_labelling_loses_and_duplicates_nothing(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "ws"))
    token = _tokens(root)["annotator"]
    port = free_port()
    command = [sys.executable, "-m", "curato", "serve", "-w", str(root), "--port", str(port), "--no-loop"]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
                return process
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read().decode()
                time.sleep(0.1)

    acknowledged: list[int] = []
    process = start()
    killer = threading.Timer(1.5, lambda: os.kill(process.pid, signal.SIGKILL))
    killer.start()
    with _client(f"http://127.0.0.1:{port}", token) as client:
        for _ in range(400):  # bounded: stops when the server dies
            try:
                item = client.get("/api/label/next").json()
                if item["assignment"] is None:
                    break
                answer = client.post("/api/label/submit", json={"assignment": item["assignment"], "action": "label",
                                                                "label": item["suggestion"] or "Trouser"})
                acknowledged.append(answer.json()["decision"])
            except httpx.TransportError:
                break
    killer.join()
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL and acknowledged
    process = start()
    try:
        with _client(f"http://127.0.0.1:{port}", token) as client:
            pending = client.get("/api/label/next").json()  # the item in flight at the kill comes back, once
            if pending["assignment"] is not None:
                client.post("/api/label/submit", json={"assignment": pending["assignment"], "action": "label",
                                                       "label": "Trouser"})
    finally:
        process.kill()
        process.wait(timeout=10)
    with Workspace.open(root).catalog.engine.connect() as conn:
        stored = conn.execute(select(decisions.c.id, decisions.c.item).where(decisions.c.queue == "labelling")).all()
        human = conn.execute(select(labels.c.sample_id).where(labels.c.origin == "human")).all()
    ids = {row[0] for row in stored}
    assert set(acknowledged) <= ids  # nothing acknowledged was lost
    assert len({row[1] for row in stored}) == len(stored)  # one decision per assignment: nothing duplicated
    assert len({row[0] for row in human}) == len(human) == len(stored)


def test_cli_users_add_prints_a_working_token_once_and_refuses_bad_input(built, tmp_path):
    from tests.conftest import run

    root = Path(shutil.copytree(built, tmp_path / "ws"))
    result = run("users", "add", "ana", "--role", "reviewer", "-w", root)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    ws = Workspace.open(root)
    assert ws.users()[0]["name"] == "ana" and ws.users()[0]["role"] == "reviewer"
    from curato.commands.labelling import user_for_token

    assert user_for_token(ws, token).name == "ana"
    with ws.catalog.engine.connect() as conn:  # only the digest is stored
        from curato.catalog.schema import users

        assert token not in str(conn.execute(select(users)).all())
    again = run("users", "add", "ana", "-w", root)
    assert again.returncode == 2 and "exists already" in again.stderr
    bad_role = run("users", "add", "bo", "--role", "root", "-w", root)
    assert bad_role.returncode == 2 and "--role" in bad_role.stderr
    listed = run("users", "list", "-w", root)
    assert listed.returncode == 0 and "ana" in listed.stdout and "reviewer" in listed.stdout
    mismatch = run("serve", "-w", root, "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert mismatch.returncode == 2 and "keeps its catalog" in mismatch.stderr
