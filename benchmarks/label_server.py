# Run from the repository root (both backends, about 6 minutes on 2 cores):
#   .venv/bin/python benchmarks/label_server.py --items 100000 --annotators 20 --seconds 60 \
#       --backends sqlite,postgresql --json .bench/label_server.json
"""Load and durability of the labelling server (``curato serve``) with many simulated annotators.

Per backend (SQLite in the workspace, or a fresh PostgreSQL database created for the run and dropped after):

1. **Build** a workspace: ``--items`` queued samples plus ``--imported`` samples with imported labels of the 10
   Fashion-MNIST classes (so the app has its class list), all pointing at 10 real Fashion-MNIST PNGs written
   from /usr/share/datasets/fashion-mnist (one per class). The annotators never fetch the images (no
   ``/api/image`` calls): this measures the queue, not PNG encoding. ``--items`` queue rows (one ``select``
   run, ranked) are inserted in chunks; the build time is printed.
2. **Load**: the real server runs as a subprocess (``python -m curato serve -w WS --port P --no-loop`` on
   127.0.0.1). ``--annotators`` concurrent simulated annotators (asyncio + one ``httpx.AsyncClient`` each, each
   with its own annotator user and token) loop ``GET /api/label/next`` -> ``POST /api/label/submit`` (label = a
   class) for ``--seconds`` or ``--max-iterations`` items each, whichever ends first, with ``--think-ms``
   between items (0 = as fast as the server answers: a saturation test, 20 requests always in flight). Printed:
   p50/p95/p99/max latency of ``next`` and ``submit`` (client-side, wall clock, including the client's own CPU
   time on the same 2 cores), throughput, and errors by status. Goal: p95 < 50 ms on SQLite.
3. **kill -9**: the annotators run again for ``--kill-seconds``; at a seeded random point the server gets
   SIGKILL and is restarted on the same port. Annotators retry transport errors (bounded: ``--retry-seconds``)
   by asking ``next`` again, which hands back their unfinished item. Then the catalog is read: **lost** =
   acknowledged (HTTP 200) decision ids with no ``decisions`` row; **duplicated** = assignments with more than
   one decision + (sample, annotator) pairs with more than one human label. Goal: 0 and 0.

Everything is on loopback; every loop is bounded; server processes are killed and temporary workspaces and
databases removed in ``finally`` (``--keep`` keeps the workspace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"


# -- building the workspace --------------------------------------------------------------------------------------


def write_images(folder: Path) -> list[Path]:
    """One real Fashion-MNIST test image per class, as PNG."""
    from curato.imageio import read_idx

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    targets = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for code in range(len(CLASSES)):
        index = int(np.flatnonzero(targets == code)[0])
        path = folder / f"class{code}.png"
        Image.fromarray(images[index]).save(path)
        paths.append(path)
    return paths


def build(root: Path, db_url: str | None, items: int, imported: int, annotators: int, seed: int,
          chunk: int = 10_000) -> tuple[dict[str, str], dict[str, float]]:
    """The workspace at ``root``; returns (annotator name -> token, build timings in seconds)."""
    from curato.api import Workspace

    rng = random.Random(seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pngs = write_images(root.parent / "images")
    ws = Workspace.create(root, db_url=db_url)
    total = items + imported
    codes = [rng.randrange(len(CLASSES)) for _ in range(total)]
    rows = [{"sample_id": f"s{i:07d}", "kind": "image", "uri": str(pngs[codes[i]]), "split": "train",
             "source": "bench", "width": 28, "height": 28, "format": "png", "content_hash": f"h{i:07d}",
             "readable": True} for i in range(total)]
    t = time.perf_counter()
    for begin in range(0, total, chunk):
        with ws.catalog.transaction() as conn:
            ws.catalog.upsert_samples(conn, rows[begin:begin + chunk])
    timings["samples_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with ws.catalog.transaction() as conn:  # the first `imported` samples are labelled; the queue is the rest
        ws.catalog.sync_imported_labels(conn, {rows[i]["sample_id"]: CLASSES[codes[i]] for i in range(imported)})
    timings["labels_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run_id = ws.catalog.start_run("select", "margin")
    ranks = list(range(1, items + 1))
    for begin in range(0, items, chunk):
        batch = [{"sample_id": rows[imported + i]["sample_id"], "rank": ranks[i], "score": rng.random(),
                  "reason": "margin"} for i in range(begin, min(items, begin + chunk))]
        with ws.catalog.transaction() as conn:
            ws.catalog.queue_batch(conn, run_id, "margin", batch)
    ws.catalog.finish_run(run_id, summary={"queued": items})
    timings["queue_s"] = time.perf_counter() - t
    tokens = {f"ann{i:02d}": ws.add_user(f"ann{i:02d}", "annotator") for i in range(annotators)}
    ws.catalog.close()
    timings["total_s"] = time.perf_counter() - start
    return tokens, timings


def fresh_postgres(admin_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"curato_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


def drop_postgres(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


# -- the server ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``curato serve`` as a subprocess; ``start`` waits until it answers."""

    def __init__(self, root: Path, port: int, log: Path) -> None:
        self.command = [sys.executable, "-m", "curato", "serve", "-w", str(root), "--port", str(port), "--no-loop"]
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start the server; returns the seconds until it answered."""
        began = time.perf_counter()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=log,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/login", timeout=2).status_code == 200:
                    return time.perf_counter() - began
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start (exit {self.process.poll()}); see {self.log}:\n"
                                   + self.log.read_text()[-2000:])
            time.sleep(0.1)

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


# -- the annotators ------------------------------------------------------------------------------------------------


class Tally:
    """Latencies (seconds) of successful calls, errors by kind and status, acknowledged decisions."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"next": [], "submit": []}
        self.errors: Counter[str] = Counter()
        self.acknowledged: list[int] = []
        self.duplicates_answered = 0
        self.resumed = 0  # `next` handed back an assignment the annotator had already been given
        self.retries = 0
        self.gave_up = 0
        self.empty = 0


async def call(client: httpx.AsyncClient, kind: str, tally: Tally, pause: float,
               **request: Any) -> dict[str, Any] | None:
    """One request: the parsed JSON of a 200, None for another status (counted). A transport error (server
    down) is counted and, after ``pause`` seconds, raised as Retry."""
    began = time.perf_counter()
    try:
        answer = await client.request(**request)
    except httpx.TransportError as error:
        tally.errors[f"{kind} {type(error).__name__}"] += 1
        tally.retries += 1
        await asyncio.sleep(pause)
        raise Retry from error
    elapsed = time.perf_counter() - began
    if answer.status_code == 200:
        tally.latency[kind].append(elapsed)
        return answer.json()
    tally.errors[f"{kind} {answer.status_code}"] += 1
    return None


class Retry(Exception):
    """A transport error: the annotator asks ``next`` again (its unfinished item comes back)."""


async def annotator(base: str, token: str, tally: Tally, *, seconds: float, max_iterations: int, think_ms: int,
                    retry_seconds: float, seed: int) -> int:
    """One simulated annotator; returns the items it labelled (acknowledged)."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    seen: set[int] = set()
    done = 0
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        attempts = 0
        failing_since: float | None = None  # retries are bounded: give up after retry_seconds of failures
        while done < max_iterations and time.monotonic() < deadline and attempts < 4 * max_iterations + 100:
            attempts += 1
            pause = 0.05 if failing_since is None else min(0.5, 0.05 + (time.monotonic() - failing_since) / 4)
            try:
                item = await call(client, "next", tally, pause, method="GET", url="/api/label/next")
                failing_since = None
                if item is None:
                    await asyncio.sleep(0.05)
                    continue
                if item["assignment"] is None:
                    tally.empty += 1
                    break
                if item["assignment"] in seen:
                    tally.resumed += 1
                seen.add(item["assignment"])
                if think_ms:
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)
                body = {"assignment": item["assignment"], "action": "label", "label": rng.choice(CLASSES),
                        "duration_ms": rng.randrange(500, 5000)}
                answer = await call(client, "submit", tally, pause, method="POST", url="/api/label/submit",
                                    json=body)
                if answer is None:
                    continue
                tally.acknowledged.append(int(answer["decision"]))
                tally.duplicates_answered += bool(answer.get("duplicate"))
                done += 1
            except Retry:  # ask `next` again: an unfinished item comes back
                failing_since = failing_since if failing_since is not None else time.monotonic()
                if time.monotonic() - failing_since > retry_seconds:
                    tally.gave_up += 1
                    break
    return done


async def run_annotators(base: str, tokens: dict[str, str], args: argparse.Namespace, seconds: float, seed: int,
                         server: Server | None = None, kill_at: float | None = None) -> tuple[Tally, dict]:
    """All annotators for ``seconds``; with ``kill_at``, SIGKILL the server after that many seconds and restart
    it."""
    tally = Tally()
    events: dict[str, Any] = {}

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        events["killed_at_s"] = round(time.perf_counter() - began, 2)
        events["acknowledged_before_kill"] = len(tally.acknowledged)
        await asyncio.to_thread(server.kill9)
        events["exit"] = server.process.returncode
        events["restart_s"] = round(await asyncio.to_thread(server.start), 2)

    began = time.perf_counter()
    tasks = [annotator(base, token, tally, seconds=seconds, max_iterations=args.max_iterations,
                       think_ms=args.think_ms, retry_seconds=args.retry_seconds, seed=seed * 1000 + i)
             for i, token in enumerate(tokens.values())]
    if kill_at is not None:
        kill_task = asyncio.create_task(killer())
    labelled = await asyncio.gather(*tasks)
    if kill_at is not None:
        await kill_task
    events["wall_s"] = time.perf_counter() - began
    events["labelled"] = sum(labelled)
    return tally, events


# -- reporting -----------------------------------------------------------------------------------------------------


def summary(tally: Tally, wall: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind, values in tally.latency.items():
        ms = np.array(values) * 1000
        result[kind] = ({"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                         "p95_ms": round(float(np.percentile(ms, 95)), 1),
                         "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}
                        if ms.size else {"n": 0})
    every = np.array(tally.latency["next"] + tally.latency["submit"]) * 1000
    result["all_p95_ms"] = round(float(np.percentile(every, 95)), 1) if every.size else None
    ok = sum(len(v) for v in tally.latency.values())
    result["requests_per_s"] = round(ok / wall, 1)
    result["labels_per_s"] = round(len(tally.acknowledged) / wall, 1)
    result["errors"] = dict(sorted(tally.errors.items()))
    result["wall_s"] = round(wall, 1)
    return result


def print_summary(title: str, stats: dict[str, Any]) -> None:
    print(f"  {title}: {stats['requests_per_s']} requests/s ({stats['labels_per_s']} labels/s) over "
          f"{stats['wall_s']} s")
    for kind in ("next", "submit"):
        s = stats[kind]
        if s["n"]:
            print(f"    {kind:<6} n={s['n']:>6}  p50 {s['p50_ms']:>7.1f}  p95 {s['p95_ms']:>7.1f}  "
                  f"p99 {s['p99_ms']:>7.1f}  max {s['max_ms']:>8.1f} ms")
    print(f"    errors: {stats['errors'] or 'none'}")


def durability(root: Path, acknowledged: list[int]) -> dict[str, Any]:
    """Count, from the catalog, acknowledged decisions that are missing and anything written twice."""
    from sqlalchemy import func, select

    from curato.api import Workspace
    from curato.catalog.schema import assignments, decisions, labels, queue

    ws = Workspace.open(root)
    try:
        with ws.catalog.engine.connect() as conn:
            stored = {int(i) for (i,) in conn.execute(select(decisions.c.id).where(decisions.c.queue == "labelling"))}
            twice = conn.execute(select(func.count()).select_from(
                select(decisions.c.item).where(decisions.c.queue == "labelling", decisions.c.undone_at.is_(None))
                .group_by(decisions.c.item).having(func.count() > 1).subquery())).scalar()
            human_twice = conn.execute(select(func.count()).select_from(
                select(labels.c.sample_id, labels.c.annotator)
                .where(labels.c.origin == "human", labels.c.retracted_at.is_(None))
                .group_by(labels.c.sample_id, labels.c.annotator).having(func.count() > 1).subquery())).scalar()
            sample_twice = conn.execute(select(func.count()).select_from(
                select(labels.c.sample_id).where(labels.c.origin == "human", labels.c.retracted_at.is_(None))
                .group_by(labels.c.sample_id).having(func.count() > 1).subquery())).scalar()
            human = conn.execute(select(func.count()).select_from(labels).where(labels.c.origin == "human")).scalar()
            labelled = conn.execute(select(func.count()).select_from(queue).where(queue.c.status == "labelled")
                                    ).scalar()
            open_assignments = conn.execute(select(func.count()).select_from(assignments).where(
                assignments.c.status == "assigned")).scalar()
    finally:
        ws.catalog.close()
    lost = sorted(set(acknowledged) - stored)
    return {"acknowledged": len(set(acknowledged)), "decisions": len(stored), "lost": len(lost),
            "lost_ids": lost[:20], "duplicated": int(twice) + int(human_twice),
            "assignments_with_two_decisions": int(twice), "sample_annotator_with_two_labels": int(human_twice),
            "samples_with_two_human_labels": int(sample_twice), "human_labels": int(human),
            "queue_labelled": int(labelled), "open_assignments": int(open_assignments)}


# -- one backend ---------------------------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace, base_dir: Path) -> dict[str, Any]:
    print(f"\n== {backend}: {args.items:,} queued items, {args.imported:,} imported labels, {args.annotators} "
          f"annotators, think {args.think_ms} ms ==", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"label-server-{backend}-", dir=base_dir))
    root = work / "ws"
    db_name = None
    server: Server | None = None
    result: dict[str, Any] = {"backend": backend}
    try:
        db_url = None
        if backend == "postgresql":
            db_url, db_name = fresh_postgres(args.postgres_url)
        tokens, timings = build(root, db_url, args.items, args.imported, args.annotators, args.seed)
        result["build"] = {k: round(v, 1) for k, v in timings.items()}
        print(f"  build: {timings['total_s']:.1f} s (samples {timings['samples_s']:.1f} s, imported labels "
              f"{timings['labels_s']:.1f} s, queue {timings['queue_s']:.1f} s)", flush=True)
        server = Server(root, free_port(), work / "server.log")
        result["startup_s"] = round(server.start(), 2)
        print(f"  server answered after {result['startup_s']} s", flush=True)

        tally, events = asyncio.run(run_annotators(server.base, tokens, args, args.seconds, args.seed))
        stats = summary(tally, events["wall_s"])
        result["load"] = stats
        print_summary("load", stats)
        acknowledged = list(tally.acknowledged)

        if args.kill_seconds > 0:
            kill_at = random.Random(args.seed).uniform(0.2, 0.6) * args.kill_seconds
            tally2, events2 = asyncio.run(run_annotators(server.base, tokens, args, args.kill_seconds,
                                                         args.seed + 1, server=server, kill_at=kill_at))
            acknowledged += tally2.acknowledged
            stats2 = summary(tally2, events2["wall_s"])
            print_summary(f"kill -9 phase (SIGKILL at {events2.get('killed_at_s')} s, exit "
                          f"{events2.get('exit')}, restarted in {events2.get('restart_s')} s)", stats2)
            print(f"    retries {tally2.retries}, gave up {tally2.gave_up}, items handed back after the kill "
                  f"{tally2.resumed}, duplicate answers {tally2.duplicates_answered}", flush=True)
            result["kill"] = {**stats2, **{k: v for k, v in events2.items() if k != "wall_s"},
                              "retries": tally2.retries, "gave_up": tally2.gave_up, "resumed": tally2.resumed,
                              "duplicate_answers": tally2.duplicates_answered}
        server.stop()
        check = durability(root, acknowledged)
        result["durability"] = check
        print(f"  catalog: {check['acknowledged']} acknowledged, {check['decisions']} decisions, "
              f"lost {check['lost']}, duplicated {check['duplicated']} (assignments with 2 decisions "
              f"{check['assignments_with_two_decisions']}, sample+annotator with 2 human labels "
              f"{check['sample_annotator_with_two_labels']}); samples with 2 human labels "
              f"{check['samples_with_two_human_labels']}, queue labelled {check['queue_labelled']}, "
              f"human labels {check['human_labels']}, open assignments {check['open_assignments']}", flush=True)
    finally:
        if server is not None:
            server.kill9()
        if db_name is not None:
            drop_postgres(args.postgres_url, db_name)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  kept {work}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="queued items (default 100000)")
    parser.add_argument("--imported", type=int, default=3_000, help="extra samples with imported labels")
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="length of the load phase")
    parser.add_argument("--max-iterations", type=int, default=5_000, help="items per annotator at most, per phase")
    parser.add_argument("--think-ms", type=int, default=0, help="mean pause between next and submit (0 = none)")
    parser.add_argument("--kill-seconds", type=float, default=20,
                        help="length of the kill -9 phase (0 skips it); the kill is at 20-60%% of it")
    parser.add_argument("--retry-seconds", type=float, default=60, help="how long an annotator retries")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get("CURATO_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--goal-p95-ms", type=float, default=50.0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the workspace (SQLite) for inspection")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        results.append(run_backend(backend, args, args.workdir))
    print("\n== goals ==")
    for result in results:
        p95 = max(result["load"]["next"].get("p95_ms", 0), result["load"]["submit"].get("p95_ms", 0))
        if result["backend"] == "sqlite":
            met = "met" if p95 < args.goal_p95_ms else "NOT met"
            print(f"  sqlite: p95 {p95} ms (worse of next/submit) < {args.goal_p95_ms:g} ms: {met}")
        else:
            print(f"  {result['backend']}: p95 {p95} ms (worse of next/submit; no goal)")
        if "durability" in result:
            d = result["durability"]
            met = "met" if d["lost"] == 0 and d["duplicated"] == 0 else "NOT met"
            what = "kill -9" if "kill" in result else "no kill (consistency only)"
            print(f"  {result['backend']}: {what}: lost {d['lost']}, duplicated {d['duplicated']}: {met}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
