"""A hostile-but-fair world around the workspace: damaged settings and catalogs, a read-only folder, a full disk,
two writers at once, a writer killed mid-way, a moved folder, markup in labels, a bug. Real files, real processes.

Each test names the fault it pins down; docs/reliability.md states the policy they check.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.errors import WorkspaceBusyError
from curato.lock import WorkspaceLock
from curato.workspace import Workspace, write_json
from tests.conftest import run

CURATO = [sys.executable, "-m", "curato"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def curato(*args: object, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    """``curato ARGS`` in a real second process."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CURATO, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          **options)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> Path:
    """One PNG per image under ``root/<prefix><label>/``: an image-folder dataset."""
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"{prefix}{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return root


def runs(ws: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(ws / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, kind, status FROM runs ORDER BY id").fetchall()


@pytest.fixture()
def workspace(tmp_path, image_folder) -> Path:
    ws = tmp_path / "ws"
    result = run("ingest", image_folder, "-w", ws)
    assert result.returncode == 0, result.stderr
    return ws


# ---- 1. one error policy ----------------------------------------------------------------------------------


def test_help_and_docs_state_the_same_exit_codes():
    shown = run("--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for code, words in ((0, "success"), (1, "--fail-on"), (2, "bad input or usage"), (3, "damaged"),
                        (4, "internal error"), (130, "interrupted")):
        assert f"{code} " in text and words in text, (code, text)
    policy = DOCS.read_text().split("## Error policy", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^\| {code} \|", policy, re.M), code


@pytest.mark.parametrize("settings", ['{"format": "x", "catalog": "sqlite:///{workspace}/catalog.sqlite"}',
                                      '{"format": 1}', "[1, 2]", '{"format": 99, "catalog": "sqlite:///x"}', "{"])
def test_damaged_workspace_json_is_one_line_and_exit_3(workspace, settings):
    (workspace / "workspace.json").write_text(settings)
    for command in (("info", "-w", workspace), ("audit", "-w", workspace), ("ingest", workspace, "-w", workspace)):
        result = run(*command)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert "workspace.json" in one_line(result.stderr)


def test_usage_errors_stay_exit_2(tmp_path, workspace):
    assert run("info", "--no-such-option").returncode == 2
    assert run("info", "-w", tmp_path / "nothing-here").returncode == 2
    assert run("audit", "-w", workspace, "--fail-on", "extreme").returncode == 2


def test_an_internal_error_is_exit_4_with_the_traceback_in_a_log(workspace):
    import curato

    def broken(data, params):
        raise RuntimeError("planted bug in a plug-in check")

    curato.register_check("broken_check", broken)
    try:
        result = run("audit", "-w", workspace, "--checks", "broken_check")
    finally:
        curato.unregister_check("broken_check")
    assert result.returncode == 4
    line = one_line(result.stderr)
    assert "internal error (RuntimeError: planted bug in a plug-in check)" in line
    log = Path(re.search(r"traceback is in (\S+);", line).group(1))
    assert log.parent == workspace / "logs"
    assert "Traceback" in log.read_text() and "planted bug" in log.read_text()


def test_without_a_workspace_logs_go_to_the_user_cache(tmp_path, monkeypatch):
    from curato.cli import log_folders

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert log_folders(tmp_path / "not-a-workspace")[0] == tmp_path / "cache" / "curato" / "logs"
    assert log_folders(None)[0] == tmp_path / "cache" / "curato" / "logs"


def test_labels_ids_and_paths_with_markup_are_printed_literally(tmp_path, image_folder):
    manifest = tmp_path / "[red]data" / "m.csv"
    manifest.parent.mkdir()
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "label"])
        for index, path in enumerate(sorted(image_folder.rglob("*.png"))[:30]):
            shutil.copy(path, manifest.parent / f"{index}.png")
            writer.writerow([f"[bold]s{index}", f"{index}.png", ("[/]", "[bold]x", "ok")[index % 3]])
    ws = tmp_path / "[/]ws"
    assert run("ingest", manifest, "-w", ws).returncode == 0
    shown = run("info", "-w", ws)
    assert shown.returncode == 0, shown.stderr
    assert "[/]" in shown.stdout and "[bold]x" in shown.stdout and "[/]ws" in shown.stdout


def _as_another_user() -> list[str]:
    """A command prefix that makes the workspace read-only for the child: root ignores permissions, so drop to
    nobody (65534) when the tests run as root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only for curato")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_read_only_workspace_is_one_line_and_exit_3(image_folder):
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # /tmp/pytest-of-* is closed to other users
        os.chmod(tmp, 0o755)
        ws = Path(tmp) / "ws"
        assert curato("ingest", image_folder, "-w", ws).returncode == 0  # a process that ends: no -wal, -shm left
        for path in [ws, *ws.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222 | 0o444 | (0o111 if path.is_dir() else 0))
        try:
            for command in (("info",), ("embed", "--embedder", "pixels"), ("audit",)):
                result = subprocess.run([*_as_another_user(), *CURATO, *command, "-w", str(ws)], cwd=tmp,
                                        capture_output=True, text=True, timeout=300)
                assert result.returncode == 3, (command, result.stderr)
                assert "make the workspace folder writable by this user" in one_line(result.stderr)
        finally:
            for path in [ws, *ws.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


FULL_DISK_SCRIPT = r"""
import os, subprocess, sys
mount, small, big, out = sys.argv[1:5]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], check=True)
ws = os.path.join(mount, "ws")
def curato(name, *args):
    done = subprocess.run([sys.executable, "-m", "curato", *args], capture_output=True, text=True)
    open(os.path.join(out, name + ".rc"), "w").write(str(done.returncode))
    open(os.path.join(out, name + ".err"), "w").write(done.stderr)
curato("first", "ingest", small, "-w", ws)
stats = os.statvfs(mount)
with open(os.path.join(mount, "filler"), "wb") as handle:  # leave 96 KiB: the next ingest starts, then the disk fills
    handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - 96 * 1024))
curato("full", "ingest", big, "-w", ws)
os.remove(os.path.join(mount, "filler"))
curato("again", "ingest", big, "-w", ws)
curato("check", "check", "-w", ws)
subprocess.run(["cp", "-a", ws, os.path.join(out, "ws")])
"""


def test_a_full_disk_is_one_line_exit_3_and_the_same_command_then_finishes(tmp_path, fashion_mnist):
    if not _can_mount_tmpfs():
        pytest.skip("unshare cannot mount a tmpfs here (no unprivileged user namespaces)")
    images, labels = fashion_mnist
    small = write_pngs(tmp_path / "small", images[:40], labels[:40], "s")
    big = write_pngs(tmp_path / "big", images[40:440], labels[40:440], "b")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "mnt").mkdir()
    (tmp_path / "full.py").write_text(FULL_DISK_SCRIPT)
    subprocess.run(["unshare", "-rm", sys.executable, tmp_path / "full.py", tmp_path / "mnt", small, big, out],
                   check=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    read = {name: ((out / f"{name}.rc").read_text(), (out / f"{name}.err").read_text())
            for name in ("first", "full", "again", "check")}
    assert read["first"][0] == "0", read["first"][1]
    assert read["full"][0] == "3", read["full"][1]
    line = one_line(read["full"][1])
    assert "No space left on device" in line or "disk full" in line
    assert "run the same command again" in line
    assert read["again"][0] == "0", read["again"][1]
    assert read["check"][0] == "0", read["check"][1]
    statuses = [status for _, _, status in runs(out / "ws")]
    assert statuses[0] == "done" and statuses[1] in ("failed", "interrupted") and statuses[2] == "done", statuses


# ---- 2. a catalog is never silently re-created --------------------------------------------------------------


def _damage(catalog: Path, how: str) -> None:
    if how == "deleted":
        catalog.unlink()
    elif how == "empty":
        catalog.write_bytes(b"")
    elif how == "truncated":
        with catalog.open("r+b") as handle:
            handle.truncate(8192)
    else:
        with catalog.open("r+b") as handle:
            handle.write(os.urandom(100))


@pytest.mark.parametrize("how", ["deleted", "empty", "truncated", "garbage"])
def test_a_missing_or_damaged_catalog_is_exit_3_never_a_new_empty_one(image_folder, tmp_path, how):
    workspace, manifest = tmp_path / "ws", tmp_path / "clean.csv"
    # real processes: they end, so no connection of this one writes its journal back into the damaged file
    assert curato("ingest", image_folder, "-w", workspace).returncode == 0
    assert curato("export", manifest, "-w", workspace).returncode == 0
    exported = manifest.read_text()
    catalog = workspace / "catalog.sqlite"
    assert not list(workspace.glob("catalog.sqlite-*"))
    _damage(catalog, how)
    for command in (("info", "-w", workspace), ("export", manifest, "-w", workspace),
                    ("embed", "-w", workspace, "--embedder", "pixels"), ("ingest", tmp_path, "-w", workspace)):
        result = run(*command)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert "catalog.sqlite" in one_line(result.stderr)
    assert manifest.read_text() == exported  # the earlier export was not overwritten with an empty one
    assert catalog.exists() == (how != "deleted")  # nothing re-created it


# ---- 3. one writer at a time --------------------------------------------------------------------------------


def _wait_until(ready, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            pytest.fail(f"the writer ended (rc {process.returncode}) before it was seen {what}")
        time.sleep(0.005)
    pytest.fail(f"the writer was never seen {what}")


def _holds_lock(ws: Path, pid: int) -> bool:
    return (WorkspaceLock(ws).holder() or {}).get("pid") == pid


@pytest.fixture()
def two_sources(tmp_path, fashion_mnist) -> tuple[Path, Path]:
    images, labels = fashion_mnist
    first = write_pngs(tmp_path / "first", images[:1500], labels[:1500], "a")
    second = write_pngs(tmp_path / "second", images[1500:1700], labels[1500:1700], "b")
    return first, second


# A second `curato ingest` that has started (imports done) and waits for a line on stdin before it runs, so that
# it asks for the lock while the first one surely still holds it.
POISED = "import sys\nfrom curato.cli import app\nsys.stdin.readline()\napp(sys.argv[1:], prog_name='curato')"


def test_two_concurrent_ingests_one_writes_the_other_is_told_busy(workspace, two_sources):
    first, second = two_sources
    env = {**os.environ, "COLUMNS": "200"}
    poised = subprocess.Popen([sys.executable, "-c", POISED, "ingest", str(second), "-w", str(workspace)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    writer = subprocess.Popen([*CURATO, "ingest", str(first), "-w", str(workspace), "--workers", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_until(lambda: _holds_lock(workspace, writer.pid), writer, "holding the workspace lock")
        refused_out, refused_err = poised.communicate("go\n", timeout=300)
        reader = curato("info", "-w", workspace)  # readers are never refused
        checked = curato("check", "-w", workspace)
    finally:
        _, err = writer.communicate(timeout=300)
        poised.kill()
    assert writer.returncode == 0, err
    assert poised.returncode == 3, (refused_out, refused_err)
    assert f"workspace busy: PID {writer.pid} (ingest) since " in one_line(refused_err)
    assert reader.returncode == 0, reader.stderr
    # check reads beside the writer but gives no verdict on its unfinished work (unless the writer just ended)
    assert (checked.returncode == 3 and f"workspace busy: PID {writer.pid} (ingest)" in checked.stderr) or (
        checked.returncode == 0 and "consistent" in checked.stdout), (checked.stdout, checked.stderr)
    after = curato("check", "-w", workspace)
    assert after.returncode == 0 and "consistent" in after.stdout, after.stdout  # nobody lost properties
    info = run("info", "-w", workspace).stdout
    assert "1580 samples" in info and "properties: 1580 x" in info and "thumbnails: 1580 x" in info


def test_a_killed_writer_leaves_a_lock_the_next_writer_takes_and_its_run_becomes_interrupted(workspace,
                                                                                              two_sources):
    first, _ = two_sources
    writer = subprocess.Popen([*CURATO, "ingest", str(first), "-w", str(workspace), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until(lambda: _holds_lock(workspace, writer.pid) and runs(workspace)[-1][2] == "running", writer,
                "running")
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=60)
    assert runs(workspace)[-1][2] == "running"  # what a crash leaves behind
    checked = curato("check", "-w", workspace)
    assert checked.returncode == 3
    assert "was left `running` by a process that is gone" in checked.stdout
    resumed = curato("ingest", first, "-w", workspace)  # the stale lock is taken over
    assert resumed.returncode == 0, resumed.stderr
    statuses = [status for _, kind, status in runs(workspace) if kind == "ingest"]
    assert statuses == ["done", "interrupted", "done"]
    assert curato("check", "-w", workspace).returncode == 0


def test_the_lock_is_reentrant_here_and_refuses_another_process(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writing("outer"), ws.writing("inner"):  # curato demo: its ingest and audit re-enter
        assert ws.lock.holder()["command"] == "outer"
        holder = [sys.executable, "-c", "from curato.workspace import Workspace; import sys\n"
                  "try:\n  Workspace.open(sys.argv[1]).writing('probe').__enter__()\n"
                  "except Exception as e: print(type(e).__name__, e)", str(ws.root)]
        probe = subprocess.run(holder, capture_output=True, text=True, timeout=60)
        assert probe.stdout.startswith("WorkspaceBusyError workspace busy: PID ")
    assert ws.lock.holder() is None  # released: the note is cleared
    script = ("from curato.workspace import Workspace; import sys, time\n"
              "with Workspace.open(sys.argv[1]).writing('sleeper'):\n  print('held', flush=True); time.sleep(60)")
    sleeper = subprocess.Popen([sys.executable, "-c", script, str(ws.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusyError, match=rf"PID {sleeper.pid} \(sleeper\)"), ws.writing("second"):
            pass
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)
    with ws.writing("third"):  # the dead sleeper's lock is taken over
        assert ws.lock.holder()["command"] == "third"


def test_json_documents_written_by_two_writers_at_once_never_vanish(tmp_path):
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        for step in range(200):
            try:
                write_json(tmp_path / "audit-latest.json", {"worker": worker, "step": step, "pad": "x" * 4000})
            except BaseException as error:  # collected and asserted below
                failures.append(error)
                return

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert json.loads((tmp_path / "audit-latest.json").read_text())["step"] == 199
    assert not list(tmp_path.glob("*.tmp"))


# ---- 4. curato check --------------------------------------------------------------------------------------


def test_check_finds_each_disagreement_and_names_the_fix(workspace, image_folder, tmp_path):
    clean = run("check", "-w", workspace)
    assert clean.returncode == 0 and "consistent" in clean.stdout, clean.stdout
    assert run("audit", "-w", workspace, "--checks", "unreadable,imbalance").returncode == 0
    ws = Workspace.open(workspace)
    properties = ws.features.load("properties")  # as if a concurrent writer had dropped one sample's row
    kept = properties.ids[1:].tolist()
    ws.features.write_part("properties", kept, properties.hashes[1:].tolist(), np.asarray(properties.vectors[1:]))
    ws.features.finalize("properties", {k: properties.meta[k] for k in ("settings", "columns")}, keep_ids=kept)
    lost = str(properties.ids[0])
    document = json.loads(ws.latest_path("audit").read_text())
    document["checks"][0].setdefault("issues", []).append({"sample_id": "ghost.png"})
    write_json(ws.latest_path("audit"), document)
    run_id = ws.catalog.start_run("embed", "pixels")
    with sqlite3.connect(workspace / "catalog.sqlite") as conn:  # as if its process died on another pid
        conn.execute("UPDATE runs SET summary = json_set(summary, '$.pid', 999999999) WHERE id = ?", (run_id,))
    moved = sorted(image_folder.rglob("*.png"))[0]
    moved.rename(tmp_path / "moved.png")
    result = curato("check", "-w", workspace, "--json", tmp_path / "check.json")
    assert result.returncode == 3
    found = json.loads((tmp_path / "check.json").read_text())
    problems = " | ".join(f"{p['what']} -> {p['fix']}" for p in found["problems"])
    assert f"1 lack properties (e.g. '{lost}')" in problems and f"curato ingest {image_folder}" in problems
    assert "audit-latest.json names 1 sample(s) the catalog does not know (e.g. 'ghost.png')" in problems
    assert f"run {run_id} (embed pixels" in problems and "was left `running`" in problems
    assert "1 sample file(s) are missing" in problems and "NEW_PATH" in problems
    assert len(found["problems"]) == 4 and found["consistent"] is False


# ---- 6. a moved workspace -----------------------------------------------------------------------------------


def test_a_moved_workspace_with_its_data_inside_keeps_working(tmp_path, image_folder):
    ws = tmp_path / "project" / "ws"
    shutil.copytree(image_folder, ws / "data")  # like `curato demo`: the data lives in the workspace
    assert run("ingest", ws / "data", "-w", ws).returncode == 0
    assert run("embed", "-w", ws, "--embedder", "classic").returncode == 0
    moved = tmp_path / "elsewhere" / "ws"
    moved.parent.mkdir()
    (tmp_path / "project" / "ws").rename(moved)
    embedded = run("embed", "-w", moved, "--embedder", "pixels")
    assert embedded.returncode == 0, embedded.stderr
    assert "80 computed" in embedded.stdout
    checked = run("check", "-w", moved)
    assert checked.returncode == 0, checked.stdout
    with sqlite3.connect(moved / "catalog.sqlite") as conn:
        uris = [row[0] for row in conn.execute("SELECT uri FROM samples")]
    assert all(uri.startswith("{workspace}/data/") for uri in uris)


def test_moved_data_is_named_by_embed_and_check(tmp_path, image_folder):
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    ws = tmp_path / "ws"
    assert run("ingest", data, "-w", ws).returncode == 0
    data.rename(tmp_path / "data-moved")
    embedded = run("embed", "-w", ws, "--embedder", "pixels")
    assert embedded.returncode == 3
    assert "have the data files moved?" in one_line(embedded.stderr)
    checked = run("check", "-w", ws)
    assert checked.returncode == 3 and "80 sample file(s) are missing" in checked.stdout
    assert run("ingest", tmp_path / "data-moved", "--source", "data", "-w", ws).returncode == 0
    assert run("check", "-w", ws).returncode == 0
