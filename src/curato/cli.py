"""The ``curato`` command: parses, calls the library, prints. No logic lives here.

Every command runs inside ``_friendly``, the one place that applies the error policy (docs/reliability.md):
exit 0 success, 1 a ``--fail-on`` gate, 2 bad input or usage, 3 a damaged, locked, read-only or full workspace,
4 an internal error (one line here, the traceback in a log file), 130 Ctrl-C. Whatever the user's data holds
(labels, ids, paths) is printed escaped, never read as rich markup.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.exceptions import TyperException

from curato.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_WORKSPACE,
    CuratoError,
    InputError,
    describe_os_error,
)
from curato.version import __version__

EXIT_CODES_EPILOG = (
    "Exit codes: 0 success; 1 a --fail-on gate tripped; 2 bad input or usage; 3 the workspace is damaged, "
    "locked by another writer, read-only or out of space (`curato check -w WS` says what to re-run); 4 an "
    "internal error (the message names a log file with the traceback); 130 interrupted (Ctrl-C)."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="curato: is your training data good enough? Diverse, clean, unbiased, big enough.",
                  epilog=EXIT_CODES_EPILOG)
console = Console()
errors = Console(stderr=True)

WORKSPACE_ENV = "CURATO_WORKSPACE"
# Optional for typer, so that a missing workspace gets curato's one-line error (see ``_friendly``), not usage text.
WorkspaceOption = Annotated[Path | None, typer.Option("--workspace", "-w", envvar=WORKSPACE_ENV, show_envvar=True,
                                                      default_factory=lambda: None, show_default=False,
                                                      help="Workspace directory (default: $CURATO_WORKSPACE).")]
EngineOption = Annotated[str, typer.Option(help="local (this machine's cores) or ray (Ray Data: the cluster at "
                                                 "--address, or a local Ray instance; extra 'scale').")]
AddressOption = Annotated[str | None, typer.Option(help="Ray cluster address for --engine ray (default: start Ray "
                                                        "locally).")]


def _say_error(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Apply the error policy: curato's errors as one red line and their exit code, a refused path as one line,
    an internal error as one line naming the log file that holds its traceback, Ctrl-C as a resume hint."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        workspace = kwargs.get("workspace")
        try:
            if "workspace" in kwargs and workspace is None:
                raise InputError(f"no workspace given: pass -w DIR (--workspace DIR) or set {WORKSPACE_ENV}=DIR")
            return command(*args, **kwargs)
        except CuratoError as error:
            _say_error(str(error))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            errors.print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise  # typer's own exits and usage errors (exit 2) keep their meaning
        except OSError as error:  # a path the system refuses: say which, and what to check, in one line
            _say_error(describe_os_error(error))
            raise typer.Exit(EXIT_WORKSPACE if _inside(error.filename, workspace) else EXIT_USAGE) from None
        except Exception as error:
            log = _write_log(error, workspace)
            first = (str(error).strip().splitlines() or [""])[0][:200]
            where = f"the traceback is in {log}" if isinstance(log, Path) else f"no log could be written ({log})"
            _say_error(f"internal error ({type(error).__name__}: {first}); this is a bug in curato, not in your "
                       f"data: {where}; please report it with that file")
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _inside(path: Any, workspace: Any) -> bool:
    """Whether ``path`` lies in the workspace folder (an OSError there is the workspace's problem: exit 3)."""
    if not path or workspace is None:
        return False
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(Path(workspace).resolve())
    except (OSError, TypeError, ValueError):
        return False


def log_folders(workspace: Any) -> list[Path]:
    """Where an internal error's traceback goes, first choice first: the workspace's ``logs/`` (when it is a
    workspace), else ``$XDG_CACHE_HOME/curato/logs`` (default ``~/.cache/curato/logs``), else the temp folder."""
    import tempfile

    folders = []
    if workspace is not None and (Path(workspace) / "workspace.json").exists():
        folders.append(Path(workspace).resolve() / "logs")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folders += [Path(cache) / "curato" / "logs", Path(tempfile.gettempdir()) / "curato-logs"]
    return folders


def _write_log(error: BaseException, workspace: Any) -> Path | str:
    """Write the traceback of an internal error; returns the log file, or why none could be written."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    body = (f"curato {__version__}, Python {sys.version.split()[0]}, {stamp}\n"
            f"command: {' '.join(sys.argv)}\ncwd: {os.getcwd()}\n\n"
            + "".join(traceback.format_exception(error)))
    reason = "no folder to write to"
    for folder in log_folders(workspace):
        path = folder / f"curato-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            return path
        except OSError as failure:
            reason = describe_os_error(failure)
    return reason


def _version(value: bool) -> None:
    if value:
        console.print(f"curato {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """curato: audit a deep-learning dataset and help fix it."""


@app.command()
@_friendly
def ingest(
    source: Annotated[Path, typer.Argument(help="Image folder, manifest CSV/JSONL, COCO JSON, IDX or text CSV.")],
    workspace: WorkspaceOption,
    format: Annotated[str | None, typer.Option("--format", help="imagefolder|manifest|coco|idx|text|label-studio "
                                                                "(Label Studio's JSON export: answers become human "
                                                                "labels of samples already ingested).")] = None,
    split: Annotated[str | None, typer.Option(help="Put every sample in this split (e.g. train, test).")] = None,
    source_name: Annotated[str | None, typer.Option("--source", help="Name of where the data came from.")] = None,
    images: Annotated[Path | None, typer.Option(help="COCO only: folder holding the image files.")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder every file of the dataset must be inside (default: the "
                                                   "manifest's or COCO file's folder, or the image folder).")] = None,
    db: Annotated[str | None, typer.Option(help="Catalog database URL (default: SQLite in the workspace).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for scanning images (default: all cores).")] = None,
    masks: Annotated[Path | None, typer.Option(help="Folder of indexed-PNG masks named by the images' file stems "
                                                    "(0 = background, 1..K = classes; names in classes.txt).")] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
) -> None:
    """Add a dataset to the workspace: catalog, hashes, image properties."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.create(workspace, db_url=db)
    with RichProgress() as progress:
        summary = ws.ingest(source, format=format, split=split, source_name=source_name, images=images, root=root,
                            masks=masks, workers=workers, progress=progress, engine=engine, address=address)
    console.print(
        f"ingested [bold]{summary.samples}[/] samples ({summary.format}) from {escape(summary.source)}: "
        f"{summary.new} new, {summary.changed} changed, {summary.unchanged} unchanged; "
        f"{summary.scanned} scanned, {summary.unreadable} unreadable, {summary.labels_added} labels added"
        + (f", {summary.annotations} annotations" if summary.annotations else "")
    )
    if masks is not None:
        console.print(f"{summary.masks} mask(s) of {len(summary.mask_classes)} class(es)"
                      + (f"; {len(summary.masks_unmatched)} mask file(s) match no image (e.g. "
                         f"{escape(summary.masks_unmatched[0])})" if summary.masks_unmatched else ""), highlight=False)
    if summary.unreadable:
        console.print(f"[yellow]{summary.unreadable} unreadable file(s)[/]: see "
                      f"`curato info -w {escape(str(workspace))}`", highlight=False)
    if summary.not_in_source:
        console.print(f"{summary.not_in_source} sample(s) already in the workspace are not in this source (kept)")
    for reason, count in summary.skipped.items():
        examples = ", ".join(summary.skipped_examples.get(reason, []))
        console.print(f"skipped {count} {escape(reason)}" + (f": e.g. {escape(examples)}" if examples else ""),
                      highlight=False)
    if summary.annotations_skipped:
        console.print(f"[yellow]{summary.annotations_skipped} annotation(s)[/] name an image id not in 'images' "
                      "(skipped)")
    if summary.sources_changed:
        console.print(f"{summary.sources_changed} sample(s) moved to another source by the manifest's 'source' "
                      "column")


@app.command()
@_friendly
def embed(
    workspace: WorkspaceOption,
    embedder: Annotated[str | None, typer.Option(help="Embedder name (default: chosen for the data).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Items per forward pass.")] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
) -> None:
    """Compute embeddings (resumable; only new or changed samples are computed)."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        summary = ws.embed(embedder, batch_size=batch_size, progress=progress, engine=engine, address=address)
    console.print(
        f"[bold]{escape(summary.embedder)}[/]: {summary.total} samples, {summary.dim}-d; "
        f"{summary.computed} computed, {summary.reused} reused"
        + (f", [yellow]{len(summary.failed)} failed to decode[/]" if summary.failed else "")
    )


@app.command()
@_friendly
def info(workspace: WorkspaceOption) -> None:
    """What the workspace holds: counts per class, split and source; what has been computed."""
    from curato.api import Workspace

    overview = Workspace.open(workspace).info()
    console.print(f"[bold]{escape(overview['root'])}[/]: {overview['samples']} samples "
                  f"({', '.join(f'{n} {k}' for k, n in overview['kinds'].items())})", highlight=False)
    for title, counts in (("split", overview["splits"]), ("source", overview["sources"]),
                          ("format", overview["formats"])):
        console.print(f"  by {title}: " + ", ".join(f"{escape(str(k or '-'))}: {v}" for k, v in counts.items()),
                      highlight=False)
    table = Table(title="labels per class and split", show_lines=False)
    table.add_column("class")
    splits = list(overview["class_split"]["splits"])
    for name in splits:
        table.add_column(escape(str(name or "-")), justify="right")
    table.add_column("total", justify="right")
    for label, row in overview["class_split"]["rows"].items():
        table.add_row(escape(str(label)), *(str(row.get(s, 0)) for s in splits), str(sum(row.values())))
    console.print(table)
    console.print(f"  unlabeled: {overview['unlabeled']}; unreadable: {len(overview['unreadable'])}")
    for sample_id, error in overview["unreadable"][:10]:
        console.print(f"    [yellow]{escape(str(sample_id))}[/]: {escape(str(error))}", highlight=False)
    for feature in overview["features"]:
        stale = f", [yellow]{feature['stale']} stale[/]" if feature["stale"] else ""
        console.print(f"  features [bold]{escape(feature['name'])}[/]: {feature['count']} x {feature['dim']}"
                      f" ({feature['dtype']}){stale}, missing {feature['missing']}")
    if overview["annotations"]:
        counts = overview["annotations"].items()
        console.print("  annotations: " + ", ".join(f"{escape(str(k))}: {v}" for k, v in counts), highlight=False)


@app.command()
@_friendly
def check(
    workspace: WorkspaceOption,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write what was found as JSON here.")] = None,
) -> None:
    """Do the catalog, feature store and reports agree, and are the sample files there? Says what to re-run.
    Exit 0 when nothing is damaged, 3 when something is. Only reads: safe while another command writes."""
    import json

    from curato.api import Workspace

    result = Workspace.open(workspace).check()
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=1))
    for entry in result.problems:
        console.print(f"[bold red]damaged:[/] {escape(entry['what'])}\n  [bold]fix:[/] {escape(entry['fix'])}",
                      highlight=False, soft_wrap=True)
    for entry in result.notes:
        console.print(f"[yellow]note:[/] {escape(entry['what'])}\n  [bold]to do:[/] {escape(entry['fix'])}",
                      highlight=False, soft_wrap=True)
    if result.busy is not None:
        _say_error(f"workspace busy: {result.busy} is writing to {result.root}; what it has not finished may show "
                   "up above: run check again when it has finished")
        raise typer.Exit(EXIT_WORKSPACE)
    if result.consistent:
        console.print(f"[green]consistent[/]: {escape(result.root)}", highlight=False)
        return
    errors.print(f"[bold red]{len(result.problems)} problem(s)[/] in {escape(result.root)}; fix them as shown above",
                 highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_WORKSPACE)


SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "none": "green"}


@app.command()
@_friendly
def audit(
    workspace: WorkspaceOption,
    checks: Annotated[str | None, typer.Option(help="Comma-separated checks, or findings to run the checks of "
                                                  "(e.g. split_leakage; default: all; `curato checks` lists "
                                                  "both).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the findings as JSON here.")] = None,
    fail_on: Annotated[str | None, typer.Option(help="Exit 1 if a finding is at least this severe "
                                                     "(low|medium|high).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings to use (default: chosen for the data).")] = None,
    set_params: Annotated[list[str] | None, typer.Option(
        "--set", help="A check parameter, CHECK.FIELD=VALUE (repeatable), e.g. --set outliers.k=15; over the "
                      "workspace's curato.toml. `curato checks` lists them.")] = None,
) -> None:
    """Find label errors, duplicates and leaks, outliers, unusable images, imbalance, shortcuts, low diversity."""
    from curato.api import Workspace
    from curato.checks.findings import SEVERITIES
    from curato.checks.registry import parse_assignments
    from curato.errors import InputError
    from curato.progress import RichProgress

    if fail_on is not None and fail_on not in SEVERITIES[1:]:
        raise InputError(f"--fail-on {fail_on!r}: use one of {', '.join(SEVERITIES[1:])}")
    params = parse_assignments(set_params or [])
    ws = Workspace.open(workspace)
    names = [name.strip() for name in checks.split(",") if name.strip()] if checks else None
    report_path = report or ws.reports_dir / "report.html"
    with RichProgress() as progress:
        result = ws.audit(names, params=params, embedder=embedder, report=report_path, json=json_out,
                          progress=progress)
    table = Table(title="audit")
    for column in ("check", "severity", "flagged", "what it means"):
        table.add_column(column, justify="right" if column == "flagged" else "left")
    for finding in result.findings:
        style = SEVERITY_STYLE[finding.severity]
        table.add_row(escape(finding.check), f"[{style}]{finding.severity}[/]", str(finding.count),
                      escape(finding.message))
    console.print(table)
    if json_out is not None:
        console.print(f"json: {escape(str(json_out))}", highlight=False)
    console.print(f"report: {escape(str(report_path))}", highlight=False)
    if fail_on is not None:
        limit = SEVERITIES.index(fail_on)
        failing = [f.check for f in result.findings if f.rank >= limit]
        if failing:
            errors.print(f"[bold red]failed[/]: {escape(', '.join(failing))} at or above --fail-on {fail_on}")
            raise typer.Exit(1)


@app.command(name="checks")
@_friendly
def list_checks() -> None:
    """The registered checks (built in and from installed packages), what they need, and their parameters."""
    import dataclasses

    from curato.checks.registry import registered_checks

    for name, spec in registered_checks().items():
        needs = ", ".join(sorted(spec.needs)) or "nothing"
        console.print(f"[bold]{escape(name)}[/]: {escape(spec.description)} (needs {needs}; findings: "
                      f"{escape(', '.join(spec.findings))})",
                      highlight=False)
        if spec.params is not None:
            for field in dataclasses.fields(spec.params):
                console.print(escape(f"  --set {name}.{field.name}={field.default!r}"), highlight=False)


VERDICT_STYLE = {"distinguishable": "bold red", "negligible": "yellow", "not distinguishable": "green"}


@app.command()
@_friendly
def bias(
    workspace: WorkspaceOption,
    by: Annotated[str, typer.Option(help="Compare samples grouped by: source | split | format | any metadata "
                                         "column (a manifest's extra column, e.g. camera).")] = "source",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here.")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings to use (default: chosen for the data).")] = None,
) -> None:
    """Can a classifier tell your sources (splits, cameras, ...) apart? Does a model trained on one work on another?"""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        document = ws.bias(by, embedder=embedder, json=json_out, progress=progress).document
    style = VERDICT_STYLE[document["verdict"]]
    console.print(f"[{style}]{document['verdict']}[/]: {escape(document['message'])}", highlight=False)
    table = Table(title=f"name that {by} ({document['alpha']:.0%} level)")
    for column in ("groups", "samples", "accuracy", "interval", "chance", "chance interval", "verdict"):
        table.add_column(column, justify="left" if column in ("groups", "verdict") else "right")
    pairs = document["pairwise"]["pairs"]
    rows = ([{**document, "groups": [g["name"] for g in document["groups"]], "n": document["n_samples"]}]
            + (pairs if len(pairs) > 1 else []))
    for row in rows:
        table.add_row(escape(" vs ".join(map(str, row["groups"]))), str(row["n"]), f"{row['accuracy']:.3f}",
                      "{:.3f}-{:.3f}".format(*row["interval"]), f"{row['chance']:.3f}",
                      "{:.3f}-{:.3f}".format(*row["chance_interval"]),
                      f"[{VERDICT_STYLE[row['verdict']]}]{row['verdict']}[/]")
    console.print(table)
    cross = document["cross_dataset"]
    if cross["pairs"]:
        console.print("label accuracy, trained on the row's group and tested on the column's "
                      "(diagonal: cross-validated within the group):")
        matrix = Table()
        matrix.add_column("train \\ test")
        for name in cross["groups"]:
            matrix.add_column(escape(str(name)), justify="right")
        for name, values in zip(cross["groups"], cross["accuracy"], strict=True):
            matrix.add_row(escape(str(name)), *("-" if value is None else f"{value:.3f}" for value in values))
        console.print(matrix)
        for pair in cross["pairs"]:
            console.print(escape(f"  {pair['train']} -> {pair['test']}: {pair['accuracy']:.3f} vs "
                                 f"{pair['in_source_accuracy']:.3f} in {pair['train']} (drop {pair['drop']:+.3f}, "
                                 f"{len(pair['classes'])} shared classes)"),
                          highlight=False)
    for skipped in cross["skipped"]:
        console.print(f"  [yellow]skipped[/] {escape(str(skipped['train']))} -> {escape(str(skipped['test']))}: "
                      f"{escape(str(skipped['reason']))}",
                      highlight=False)
    if document["property_differences"]:
        console.print("properties that differ most (Cliff's delta: +1 = always larger in the group, -1 = always "
                      "smaller):")
        for row in document["property_differences"][:5]:
            console.print(escape(f"  {row['property']}: {row['group']} vs {row['versus']} {row['cliffs_delta']:+.2f} "
                                 f"(median {row['group_median']:.4g} vs {row['rest_median']:.4g})"), highlight=False)
    for name, typical in document["typical"].items():
        console.print(escape(f"most {name}-typical: " + ", ".join(row["sample_id"] for row in typical[:3])),
                      highlight=False)
    for group in document["skipped_groups"]:
        console.print(f"[yellow]left out[/] {by} {escape(repr(group['name']))}: {escape(str(group['reason']))}",
                      highlight=False)
    if document.get("without_value"):
        console.print(f"[yellow]left out[/] {document['without_value']} sample(s) without a {escape(by)} value",
                      highlight=False)
    console.print(f"json: {escape(str(json_out or ws.latest_path('bias')))}", highlight=False)


@app.command()
@_friendly
def transfer(
    workspace: WorkspaceOption,
    embedders: Annotated[str, typer.Option(help="Comma-separated embedders to compare, e.g. "
                                                "efficientnet-lite0,classic,pixels.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the ranking as JSON here.")] = None,
    max_samples: Annotated[int | None, typer.Option(help="Score a stratified random subset of this many "
                                                         "labelled samples (faster).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of the probe folds.")] = 0,
) -> None:
    """Which pretrained backbone fits this task? LogME, kNN and linear-probe accuracy per embedder."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        document = ws.transfer(embedders.split(","), max_samples=max_samples, seed=seed, json=json_out,
                               progress=progress).document
    table = Table(title=f"transferability: {document['n_samples']} samples, {document['n_classes']} classes "
                        "(ranked by LogME)")
    for column in ("rank", "embedder", "dim", "LogME", "kNN acc", "linear probe acc", "probe rank",
                   "LogME s", "probe s"):
        table.add_column(column, justify="left" if column == "embedder" else "right")
    for entry in document["embedders"]:
        table.add_row(str(entry["rank"]), escape(entry["name"]), str(entry["dim"]), f"{entry['logme']:.4f}",
                      f"{entry['knn_accuracy']:.3f}", f"{entry['linear_probe_accuracy']:.3f}",
                      str(entry["rank_linear_probe"]), f"{entry['seconds']['logme']:.2f}",
                      f"{entry['seconds']['linear_probe']:.2f}")
    console.print(table)
    agreement = document["agreement"]
    if agreement["kendall_tau"] is not None:
        verdict = "agree" if agreement["same_order"] else "[yellow]disagree[/]"
        console.print(f"LogME and linear-probe rankings {verdict} (Kendall tau {agreement['kendall_tau']:.2f})"
                      + (f"; the linear probe took {agreement['time_ratio']:.1f}x LogME's time"
                         if agreement["time_ratio"] else ""), highlight=False)
    console.print(f"json: {escape(str(json_out or ws.latest_path('transfer')))}", highlight=False)


@app.command()
@_friendly
def select(
    workspace: WorkspaceOption,
    budget: Annotated[int, typer.Option(help="How many samples to pick for labelling.")],
    strategy: Annotated[str, typer.Option(help="Query strategy: auto, random, margin, entropy, least-confidence, "
                                               "badge, coreset, typiclust, probcover, cluster-margin, ... "
                                               "(see docs/active.md).")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Write the batch here (.csv or .json).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings to use (default: chosen for the data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of random draws and clustering.")] = 0,
) -> None:
    """Which samples should people label next? Picks a batch, queues it for the labelling app, writes it out."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        document = ws.select(budget, strategy=strategy, embedder=embedder, out=out, seed=seed,
                             progress=progress).document
    table = Table(title=f"{len(document['batch'])} samples queued by {escape(strategy)} "
                        f"({document['n_labeled']} labelled, {document['n_unlabeled']} unlabelled)")
    for column in ("rank", "sample_id", "predicted", "reason"):
        table.add_column(column, justify="right" if column == "rank" else "left")
    for row in document["batch"][:10]:
        table.add_row(str(row["rank"]), escape(str(row["sample_id"])), escape(str(row["predicted_label"] or "–")),
                      escape(str(row["reason"])))
    console.print(table)
    console.print(f"queued as run {document['run_id']}; batch: {escape(str(out or ws.latest_path('select')))}",
                  highlight=False)


@app.command()
@_friendly
def route(
    workspace: WorkspaceOption,
    precision: Annotated[float, typer.Option(help="Precision the accepted model labels must reach.")] = 0.99,
    calibration: Annotated[str, typer.Option(help="temperature or isotonic.")] = "temperature",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the routing as JSON here.")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings to use (default: chosen for the data).")] = None,
    undo: Annotated[int | None, typer.Option(help="Remove the model labels of this routing run id instead.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the cross-fitting folds.")] = 0,
) -> None:
    """Accept the model's labels where calibrated confidence reaches the requested precision (origin=model)."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    if undo is not None:
        removed = ws.undo_route(undo)
        console.print(f"removed {removed} model labels of routing run {undo} (kept in the label history as retracted)")
        return
    with RichProgress() as progress:
        document = ws.route(precision, calibration=calibration, embedder=embedder, json=json_out, seed=seed,
                            progress=progress).document
    console.print(f"auto-labelled {document['auto_labelled']} of {document['n_unlabeled']} unlabelled samples "
                  f"({document['share_auto_labelled']:.1%}) at requested precision {precision:g}; expected wrong "
                  f"auto-labels: {document['expected_wrong']:.1f} (conservative bound "
                  f"{document['expected_wrong_bound']:.1f})", highlight=False)
    console.print(f"stored as model labels of run {document['run_id']}; undo with "
                  f"`curato route -w {escape(str(workspace))} --undo {document['run_id']}`", highlight=False)
    console.print(f"json: {escape(str(json_out or ws.latest_path('route')))}", highlight=False)


@app.command()
@_friendly
def simulate(
    workspace: WorkspaceOption,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies, e.g. random,margin,auto.")],
    budget: Annotated[int, typer.Option(help="Labels at the last round.")],
    rounds: Annotated[int, typer.Option(help="Rounds, on a geometric schedule ending at --budget.")] = 6,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0, 1, ...).")] = 3,
    start: Annotated[int | None, typer.Option(help="Labels at the first round (default: budget / 2^(rounds-1)).")
                                 ] = None,
    precision: Annotated[str, typer.Option(help="Comma-separated routing precisions to check.")] = "0.98,0.99",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the curves as JSON here.")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings to use (default: chosen for the data).")] = None,
) -> None:
    """How much does active learning save here? Accuracy-vs-labels curves per strategy, known labels as oracle."""
    from curato.api import Workspace
    from curato.errors import InputError
    from curato.progress import RichProgress

    try:
        precisions = [float(value) for value in precision.split(",") if value.strip()]
    except ValueError:
        raise InputError(f"--precision {precision!r}: give numbers like 0.98,0.99") from None
    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        document = ws.simulate(strategies.split(","), budget, rounds, seeds=seeds, start=start, embedder=embedder,
                               precisions=precisions, json=json_out, progress=progress).document
    table = Table(title=f"active learning, {document['n_pool']} pool / {document['n_test']} test samples; "
                        f"accuracy on {escape(str(document['test_set']))}")
    labels = document["settings"]["schedule"]
    table.add_column("strategy")
    for count in labels:
        table.add_column(str(count), justify="right")
    table.add_column("AUC", justify="right")
    table.add_column("x random (last)", justify="right")
    for name, curve in document["strategies"].items():
        last = curve["label_efficiency"][-1]["efficiency"] if curve["label_efficiency"] else None
        table.add_row(escape(name), *[f"{a:.3f}" for a in curve["accuracy"]], f"{curve['auc']:.3f}",
                      "–" if last is None else f"{last:.2f}")
    console.print(table)
    for result in document["routing"]["results"]:
        measured = result["measured_precision"]
        console.print(f"routing seed {result['seed']} at {result['requested_precision']:g}: "
                      f"{result['share_auto_labelled']:.1%} auto-labelled, measured precision "
                      f"{'–' if measured is None else f'{measured:.4f}'}", highlight=False)
    console.print(f"json: {escape(str(json_out or ws.latest_path('simulate')))}", highlight=False)


@app.command()
@_friendly
def size(
    workspace: WorkspaceOption,
    target: Annotated[float, typer.Option(help="Target metric in (0, 1], e.g. 0.95.")],
    metric: Annotated[str, typer.Option(help="accuracy | balanced_accuracy | macro_f1")] = "accuracy",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the forecast as JSON here.")] = None,
    backtest: Annotated[bool, typer.Option("--backtest", help="Also fit on the sizes up to 25% of the data only "
                                                              "and report the error at 100%.")] = False,
    augmentation: Annotated[bool, typer.Option("--augmentation", help="Price image augmentation (flips, crops, "
                                                                      "jitter, re-embedded) in labels.")] = False,
    pseudo_labels: Annotated[bool, typer.Option("--pseudo-labels", help="Price pseudo-labelling of unlabelled "
                                                                        "samples in labels.")] = False,
    model: Annotated[str | None, typer.Option(help="Your own training recipe: module:function taking "
                                                   "(train_ids, eval_ids) and returning the metric.")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embeddings for the built-in head (default: chosen "
                                                      "for the data).")] = None,
    eval_split: Annotated[str | None, typer.Option(help="Split to evaluate on (default: test/val if present, "
                                                        "else cross-fitting: 5 stratified folds, seed s "
                                                        "scored on fold s mod 5).")] = None,
    seeds: Annotated[int, typer.Option(help="Random subsets per size.")] = 5,
    sizes: Annotated[int, typer.Option(help="Training-set sizes on the curve (log-spaced; the upper half also "
                                            "gets the midpoint of each step).")] = 10,
    augment_max_size: Annotated[int, typer.Option(help="Largest training-set size augmented (cost cap).")] = 2000,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates behind the intervals (0: no intervals).")] = 100,
    method: Annotated[str, typer.Option(help="families (weighted curve families) | prior (slope prior learned on "
                                             "LCDB real learning curves) | meta (meta-model learned on every cut "
                                             "of LCDB curves, the default).")] = "meta",
) -> None:
    """How many labels reach the target? Learning curve, forecasts with intervals, strategy value in labels."""
    from curato.api import Workspace
    from curato.progress import RichProgress

    ws = Workspace.open(workspace)
    with RichProgress() as progress:
        document = ws.size(target, metric=metric, embedder=embedder, eval_split=eval_split, seeds=seeds,
                           n_sizes=sizes, run_backtest=backtest, augmentation=augmentation,
                           pseudo_labels=pseudo_labels, augment_max_size=augment_max_size, model=model,
                           n_bootstrap=bootstrap, method=method, json=json_out, progress=progress).document
    name = document["metric"]
    table = Table(title=f"sizing: {name} with {document['n_train']:,} labelled training samples "
                        f"({document['evaluation']['n']:,} evaluated, {document['evaluation']['kind']})")
    table.add_column("question")
    table.add_column("answer", justify="right")
    table.add_column("90% interval", justify="right")

    def span(values: list | None, form: str) -> str:
        if not values:
            return "-"
        return " - ".join("beyond" if v is None else format(v, form) for v in values)

    today = document["today"]
    table.add_row(f"{name} today ({today['size']:,} labelled, {'measured' if today['measured'] else 'forecast'})",
                  f"{today['metric']:.3f}", "")
    needed = document["samples_needed"]
    # a number only where the forecast states one (status "estimated"); the reason for none is in the warnings
    answer = {"not reached": "not reached", "cannot be pinned down": "cannot be pinned down",
              "reached": "already reached"}.get(needed["status"],
                                                "-" if needed["total"] is None else f"{needed['total']:,}")
    table.add_row(f"labelled samples for {name} {document['target']:g}", answer, span(needed["interval"], ","))
    for entry in document["predictions"]:
        table.add_row(f"{name} at {entry['multiple']}x today ({entry['size']:,})", f"{entry['metric']:.3f}",
                      span(entry["interval"], ".3f"))
    marginal = document["marginal"]
    table.add_row(f"gain from the next {marginal['labels_per_class']:,} labels per class", f"{marginal['gain']:+.3f}",
                  span(marginal["interval"], "+.3f"))
    table.add_row("estimated ceiling", f"{document['ceiling']:.3f}", "")
    backtest_result = document.get("backtest")
    if backtest_result:
        table.add_row(f"backtest: {backtest_result['fit_up_to']:,} -> {backtest_result['predict_at']:,} error",
                      f"{backtest_result['error']:+.3f}", span(backtest_result["interval"], ".3f"))
    for strategy in document.get("strategies") or []:
        worth = strategy["worth_labels"]
        table.add_row(f"{strategy['strategy']} at {strategy['at_size']:,} samples is worth",
                      "beyond the curve" if worth is None else f"{worth:+,} labels", "")
    console.print(table)
    best = max(document["fits"], key=lambda fit: fit["weight"])
    if document["method"] == "prior":
        console.print("forecast: the slope prior learned on LCDB real learning curves", highlight=False)
    elif document["method"] == "meta":
        console.print("forecast: the meta-model learned on LCDB real learning curves", highlight=False)
    else:
        console.print(f"curve families weighted by extrapolation error; heaviest: {best['family']} "
                      f"({best['weight']:.0%})", highlight=False)
    for warning in document["warnings"]:
        errors.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True)
    console.print(f"json: {escape(str(json_out or ws.latest_path('size')))}", highlight=False)


@app.command()
@_friendly
def export(
    out: Annotated[Path, typer.Argument(help="Output: a .csv, .parquet or .json file, or a folder.")],
    workspace: WorkspaceOption,
    format: Annotated[str | None, typer.Option(
        "--format", help="csv | parquet | imagefolder | coco (JSON: labels, boxes, masks) | masks (indexed PNG "
                         "folder + classes.txt) | label-studio (JSON tasks) | fiftyone (folder); default: from "
                         "OUT's name (.csv, .parquet, a folder = imagefolder).")] = None,
    issues: Annotated[bool, typer.Option("--issues", help="Write the audit's flagged samples (one row per sample "
                                                          "per finding, with file paths) as CSV or Parquet.")] = False,
    drop_duplicates: Annotated[bool, typer.Option(help="Keep one sample of each duplicate group "
                                                       "(the test/val copy if any).")] = False,
    relabel: Annotated[bool, typer.Option(help="Use the audit's suggested label of suspected label errors (never "
                                               "over a label people set; not in test/val splits).")] = False,
    relabel_test: Annotated[bool, typer.Option(help="With --relabel, also relabel evaluation splits (test, val, "
                                                    "valid, validation, eval, dev) from the model.")] = False,
    keep_unreadable: Annotated[bool, typer.Option(help="Keep samples whose file cannot be read.")] = False,
    files_root: Annotated[Path | None, typer.Option(help="label-studio: the folder Label Studio serves the images "
                                                         "from (default: the folder holding them all).")] = None,
) -> None:
    """Write a cleaned dataset with the curated labels (original_label, label, origin, changed); sources untouched."""
    from curato.api import Workspace
    from curato.commands.export import CHANGE_REASONS, run_export

    result = run_export(Workspace.open(workspace), out, format=format, issues=issues, drop_duplicates=drop_duplicates,
                        relabel=relabel, drop_unreadable=not keep_unreadable, relabel_test=relabel_test,
                        files_root=files_root)
    if result.audit is not None:
        console.print(f"using {escape(result.audit.describe())}", highlight=False)
        for warning in result.audit.warnings:
            errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    listing = "" if result.index is None else f" (every file written is listed in {escape(str(result.index))})"
    changed = sum(result.changes[reason] for reason in ("relabelled_by_model", "relabelled_by_people",
                                                          "routed_model_labels", "reimported_labels"))
    console.print(f"wrote {result.count} {result.what} ({result.format}) to {escape(str(result.path))}{listing}"
                  + ("" if issues else f"; {changed} with a label other than the original"), highlight=False)
    for reason, line in CHANGE_REASONS.items():
        if result.changes.get(reason):
            console.print(f"  {result.changes[reason]:>6}  {escape(line)}", highlight=False)
    for note in result.notes:
        console.print(escape(note), highlight=False, soft_wrap=True)


@app.command()
@_friendly
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where to build the demo workspace.")] = Path(
        "curato-demo"),
    samples: Annotated[int, typer.Option(help="Training images to subsample.")] = 3000,
) -> None:
    """Build a workspace from a real dataset, run every check, write the HTML report."""
    from curato.api import demo as run_demo
    from curato.progress import RichProgress

    with RichProgress() as progress:
        result = run_demo(workspace, samples=samples, progress=progress)
    console.print(f"\n[bold]report:[/] {escape(str(result.report_path))}", highlight=False)
    console.print("[bold]found:[/]")
    for number, line in enumerate(result.headlines, start=1):
        console.print(f"  {number}. {escape(line)}", highlight=False)
    console.print(f"[bold]planted in this {escape(result.dataset)} subsample:[/]", highlight=False)
    for line in result.planted:
        console.print(f"  - {escape(line)}", highlight=False)
    console.print("[bold]try next:[/]")
    for command, shows in result.next_commands:
        console.print(f"  {escape(command)}\n      {escape(shows)}", highlight=False)


@app.command()
@_friendly
def serve(
    workspace: WorkspaceOption,
    db: Annotated[str | None, typer.Option(help="The catalog's database URL when the workspace keeps it in "
                                                "PostgreSQL (must be the workspace's catalog).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; put a TLS proxy in front "
                                           "for a team).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    no_loop: Annotated[bool, typer.Option("--no-loop", help="Do not refit the model in the background.")] = False,
) -> None:
    """The labelling app: review what the audit found and label what `curato select` queued (docs/labelling.md)."""
    from curato.api import Workspace
    from curato.label.server import serve as run_server

    ws = Workspace.open(workspace)
    if db and db != ws.catalog.url:
        from curato.errors import InputError

        raise InputError(f"--db: {workspace} keeps its catalog in {ws.catalog.where}, not in the database given; "
                         "leave --db out, or create the workspace with `curato ingest SOURCE -w NEW --db URL`")
    users = ws.users()
    console.print(f"curato labelling app on [bold]http://{escape(host)}:{port}/[/] (Ctrl-C stops it); "
                  f"{len(users)} user(s)", highlight=False)
    if not users:
        console.print(f"no users yet: create one with `curato users add NAME --role admin -w {escape(str(workspace))}`",
                      highlight=False)
    run_server(ws, host=host, port=port, live_loop=not no_loop)


users_app = typer.Typer(no_args_is_help=True, help="People who use the labelling app (curato serve).")
app.add_typer(users_app, name="users")


@users_app.command("add")
@_friendly
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    workspace: WorkspaceOption,
    role: Annotated[str, typer.Option(help="admin (everything), reviewer (audit findings and labels) or annotator "
                                           "(labels).")] = "annotator",
) -> None:
    """Create a user and print their token once (the last line of the output); only its hash is stored."""
    from curato.api import Workspace

    token = Workspace.open(workspace).add_user(name, role)
    console.print(f"user {escape(name)} ({escape(role)}) created; their token (shown once, keep it secret):",
                  highlight=False)
    print(token)


@users_app.command("list")
@_friendly
def users_list(workspace: WorkspaceOption) -> None:
    """The users of the labelling app with their roles and how many labels and decisions they made."""
    from curato.api import Workspace

    table = Table(title="users")
    for column in ("name", "role", "labels", "decisions", "created"):
        table.add_column(column)
    for user in Workspace.open(workspace).users():
        table.add_row(escape(user["name"]), user["role"], str(user["labels"]), str(user["decisions"]),
                      str(user["created_at"]))
    console.print(table)
