"""The curato command as a user runs it: real process, real files, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import run as run_here

CURATO = [sys.executable, "-m", "curato"]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CURATO, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_ingest_embed_info(tmp_path, image_folder):
    ws = tmp_path / "ws"
    result = run("ingest", image_folder, "-w", ws)
    assert result.returncode == 0, result.stderr
    assert "ingested 80 samples (imagefolder)" in result.stdout
    result = run("embed", "-w", ws, "--embedder", "classic")
    assert result.returncode == 0, result.stderr
    assert "classic" in result.stdout and "80 computed" in result.stdout
    result = run("info", "-w", ws)
    assert result.returncode == 0, result.stderr
    assert "by split: test: 18, train: 62" in result.stdout
    assert "features classic: 80 x" in result.stdout and "features properties: 80 x" in result.stdout


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    missing = run("ingest", tmp_path / "missing", "-w", tmp_path / "ws")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error:") and len(missing.stderr.strip().splitlines()) == 1
    assert "no such file" in missing.stderr and "Traceback" not in missing.stderr
    not_ws = run("info", "-w", tmp_path / "nothing-here")
    assert not_ws.returncode == 2 and "not a curato workspace" in not_ws.stderr
    (tmp_path / "m.csv").write_text("id,label\n1,a\n")
    bad = run("ingest", tmp_path / "m.csv", "-w", tmp_path / "ws2")
    assert bad.returncode == 2 and "missing required column 'path'" in bad.stderr
    unknown = run("ingest", tmp_path / "m.csv", "-w", tmp_path / "ws2", "--format", "parquet")
    assert unknown.returncode == 2 and "--format 'parquet' is unknown" in unknown.stderr


def test_workspace_from_environment_and_a_clear_error_without_one(tmp_path, image_folder):
    ws = tmp_path / "ws"
    assert run_here("ingest", image_folder, "-w", ws).returncode == 0
    from_env = subprocess.run([*CURATO, "info"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "COLUMNS": "200", "CURATO_WORKSPACE": str(ws)})
    assert from_env.returncode == 0, from_env.stderr
    assert "80 samples" in from_env.stdout and "by split: test: 18, train: 62" in from_env.stdout
    env = {key: value for key, value in os.environ.items() if key != "CURATO_WORKSPACE"}
    missing = subprocess.run([*CURATO, "size", "--target", "0.9"], capture_output=True, text=True, timeout=300,
                             env=env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no workspace given" in missing.stderr and "CURATO_WORKSPACE" in missing.stderr


def test_audit_takes_finding_names_and_shows_a_stage_per_check(tmp_path, image_folder):
    ws = tmp_path / "ws"
    assert run_here("ingest", image_folder, "-w", ws).returncode == 0
    assert run_here("embed", "-w", ws, "--embedder", "classic").returncode == 0
    result = run_here("audit", "-w", ws, "--checks", "split_leakage,blurry", "--embedder", "classic")
    assert result.returncode == 0, result.stderr
    # the finding names picked their checks, and each check was a stage of its own
    assert "check 1/2: duplicates" in result.stdout and "check 2/2: image_quality" in result.stdout
    assert "split_leakage" in result.stdout and "near_duplicates" in result.stdout and "dark" in result.stdout
    assert "embedding" not in result.stdout  # the embeddings were cached: no bar for work not done
    wrong = run_here("audit", "-w", ws, "--checks", "split_leak")
    assert wrong.returncode == 2 and "unknown check 'split_leak'" in wrong.stderr
    assert "checks: unreadable," in wrong.stderr and "split_leakage" in wrong.stderr.split("findings:")[1]
