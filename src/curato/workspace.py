"""The on-disk workspace: the only module that knows where things live.

```
<workspace>/
  catalog.sqlite      samples, labels, annotations, runs (unless a --db URL points elsewhere)
  features/<name>/    feature store: embeddings and image properties (see curato.featurestore)
  reports/            HTML and JSON reports; <command>-latest.json is each command's last document
  workspace.json      format version and the catalog URL
  curato.toml         optional: check parameters for this workspace (see docs/api.md)
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curato.catalog import Catalog
from curato.errors import WorkspaceError
from curato.featurestore import FeatureStore

WORKSPACE_FORMAT = 1
_MARKER = "workspace.json"
SETTINGS_FILE = "curato.toml"
# Each command's latest JSON document, read back by the HTML report and by later commands (export reads audit's).
LATEST_DOCUMENTS = {kind: f"{kind}-latest.json"
                    for kind in ("audit", "bias", "transfer", "size", "select", "route", "simulate")}


def write_json(path: str | Path, document: Any) -> Path:
    """Write a JSON document atomically (temporary file, then rename); NaN is refused, not written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


class Workspace:
    """A dataset under study: its catalog, its feature store and its reports."""

    def __init__(self, root: Path, catalog_url: str) -> None:
        self.root = Path(root)
        self.catalog = Catalog(catalog_url)
        self.features = FeatureStore(self.root / "features")

    @property
    def reports_dir(self) -> Path:
        """Where reports are written by default."""
        path = self.root / "reports"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def settings_path(self) -> Path:
        """The workspace's optional ``curato.toml`` (check parameters)."""
        return self.root / SETTINGS_FILE

    def latest_path(self, kind: str) -> Path:
        """Where the latest document of command ``kind`` (audit, bias, size, ...) lives."""
        if kind not in LATEST_DOCUMENTS:
            raise ValueError(f"no latest document for {kind!r}; known: {', '.join(LATEST_DOCUMENTS)}")
        return self.reports_dir / LATEST_DOCUMENTS[kind]

    def read_latest(self, kind: str) -> dict[str, Any] | None:
        """The latest document of command ``kind``, or None when it never ran (or its file is unreadable)."""
        path = self.latest_path(kind)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_latest(self, kind: str, document: dict[str, Any], copy_to: str | Path | None = None) -> Path:
        """Store ``document`` as the latest of ``kind`` and, when the user asked for one, a copy at ``copy_to``."""
        path = write_json(self.latest_path(kind), document)
        if copy_to is not None:
            write_json(copy_to, document)
        return path

    @classmethod
    def create(cls, root: str | Path, *, db_url: str | None = None) -> Workspace:
        """Open the workspace at ``root``, creating it (and its catalog) when missing."""
        root = Path(root).resolve()
        marker = root / _MARKER
        if marker.exists():
            workspace = cls.open(root)
            if db_url and db_url != workspace.catalog.url:
                raise WorkspaceError(
                    f"{marker}: workspace uses catalog {workspace.catalog.url}; open it without --db"
                    " or use a new workspace directory"
                )
            return workspace
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"{root}: exists and is not a directory; choose another workspace path")
        root.mkdir(parents=True, exist_ok=True)
        url = db_url or f"sqlite:///{root / 'catalog.sqlite'}"
        workspace = cls(root, url)
        workspace.catalog.create()
        marker.write_text(json.dumps({"format": WORKSPACE_FORMAT, "catalog": _portable_url(url, root)}, indent=2))
        return workspace

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace; raises WorkspaceError when ``root`` is not one."""
        root = Path(root).resolve()
        marker = root / _MARKER
        if not marker.exists():
            raise WorkspaceError(
                f"{root}: not a curato workspace (no {_MARKER}); create one with `curato ingest SOURCE -w {root}`"
            )
        try:
            settings = json.loads(marker.read_text())
        except json.JSONDecodeError as error:
            raise WorkspaceError(f"{marker}: unreadable settings ({error}); restore or recreate it") from error
        if settings.get("format", 0) > WORKSPACE_FORMAT:
            raise WorkspaceError(f"{marker}: workspace format {settings['format']} is newer; upgrade curato")
        url = settings["catalog"].replace("{workspace}", str(root))
        workspace = cls(root, url)
        workspace.catalog.create()
        return workspace


def _portable_url(url: str, root: Path) -> str:
    """Store SQLite paths inside the workspace relative to it, so the folder can be moved."""
    return url.replace(str(root), "{workspace}") if url.startswith("sqlite:") else url
