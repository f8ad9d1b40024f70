"""The human half of curato: users, review of audit findings, the labelling queue, many annotators.

The labelling server (``curato serve``) and the CLI (``curato users add``) call these functions; they hold the
rules, the server only speaks HTTP. Every decision a person makes is one transaction that appends history
(a ``decisions`` row, ``human`` label rows) and commits before the function returns; an undo marks the
decision undone and retracts its labels, it never deletes them. The label every command then uses is
:meth:`curato.catalog.catalog.Catalog.curated_labels`.

Tokens are 32 random bytes shown once; the catalog keeps their SHA-256 (a slow password hash buys nothing
for 256-bit random secrets and would cost every request tens of milliseconds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from curato.catalog.catalog import utcnow
from curato.catalog.schema import (
    LABELLING_QUEUE,
    ROLES,
    assignments,
    decisions,
    gold,
    labels,
    queue,
    runs,
    samples,
    sessions,
    users,
)
from curato.errors import InputError
from curato.featurestore import OOF_PREFIX, PROPERTIES
from curato.workspace import Workspace

SESSION_HOURS = 12
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SINGLE_ACTIONS = ("keep", "accept", "relabel", "exclude", "ambiguous")
GROUP_ACTIONS = ("keep_one", "move_split", "drop_copies", "not_duplicate")
LABEL_ACTIONS = ("label", "skip", "unsure")
GROUP_CHECKS = frozenset({"exact_duplicates", "near_duplicates", "split_leakage", "conflicting_duplicates"})
_SPLIT_KEEP_ORDER = {"train": 0}  # drop_copies keeps the training copy: the evaluation split loses the leak
_EVIDENCE_SKIP = frozenset({"sample_id", "members", "member_splits", "group", "nearest", "partner", "score"})


class NotFoundError(InputError):
    """An unknown item, sample, decision or assignment (HTTP 404)."""


class ConflictError(InputError):
    """The request is valid but the state forbids it, e.g. undoing an undone decision (HTTP 409)."""


class ForbiddenError(InputError):
    """The user's role or ownership does not allow it (HTTP 403)."""


# -- users and sessions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """A person using the app."""

    id: int
    name: str
    role: str


def token_digest(token: str) -> str:
    """What the catalog stores of a token or session secret."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_user(workspace: Workspace, name: str, role: str) -> str:
    """Create user ``name`` with ``role`` and return its token (shown once; only its digest is stored)."""
    if not USER_NAME.match(name or ""):
        raise InputError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
                         "letter or digit")
    if role not in ROLES:
        raise InputError(f"--role {role!r}: choose one of {', '.join(ROLES)}")
    token = secrets.token_urlsafe(32)
    with workspace.catalog.transaction() as conn:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
            raise InputError(f"user {name!r} exists already; choose another name")
        conn.execute(users.insert().values(name=name, role=role, token_hash=token_digest(token),
                                           created_at=utcnow()))
    return token


def user_for_token(workspace: Workspace, token: str) -> User | None:
    """The active user holding ``token``, or None."""
    if not token or len(token) > 256:
        return None
    with workspace.catalog.engine.connect() as conn:
        row = conn.execute(select(users.c.id, users.c.name, users.c.role).where(
            users.c.token_hash == token_digest(token), users.c.disabled_at.is_(None))).first()
    return None if row is None else User(int(row[0]), row[1], row[2])


def open_session(workspace: Workspace, user: User) -> tuple[str, str]:
    """A new browser session for ``user``: (cookie secret, CSRF token)."""
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = utcnow()
    with workspace.catalog.transaction() as conn:
        conn.execute(sessions.insert().values(id=token_digest(secret), user_id=user.id, csrf=csrf, created_at=now,
                                              expires_at=now + dt.timedelta(hours=SESSION_HOURS)))
    return secret, csrf


def session_user(workspace: Workspace, secret: str) -> tuple[User, str] | None:
    """(user, csrf) of a live session, or None when it is unknown, expired or its user disabled."""
    if not secret or len(secret) > 256:
        return None
    with workspace.catalog.engine.connect() as conn:
        row = conn.execute(
            select(users.c.id, users.c.name, users.c.role, sessions.c.csrf, sessions.c.expires_at)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id == token_digest(secret), users.c.disabled_at.is_(None))).first()
    if row is None or _aware(row[4]) < utcnow():
        return None
    return User(int(row[0]), row[1], row[2]), row[3]


def close_session(workspace: Workspace, secret: str) -> None:
    """Forget a browser session (logout)."""
    with workspace.catalog.transaction() as conn:
        conn.execute(sessions.delete().where(sessions.c.id == token_digest(secret)))


def list_users(workspace: Workspace) -> list[dict[str, Any]]:
    """Every user with role, creation time and how many labels and decisions they made."""
    with workspace.catalog.engine.connect() as conn:
        rows = conn.execute(select(users.c.name, users.c.role, users.c.created_at, users.c.disabled_at)
                            .order_by(users.c.id)).all()
        made = dict(conn.execute(select(decisions.c.user, func.count()).where(decisions.c.undone_at.is_(None))
                                 .group_by(decisions.c.user)).all())
        labelled = dict(conn.execute(select(labels.c.annotator, func.count()).where(
            labels.c.origin == "human", labels.c.retracted_at.is_(None)).group_by(labels.c.annotator)).all())
    return [{"name": name, "role": role, "created_at": _iso(created), "disabled": disabled is not None,
             "labels": int(labelled.get(name, 0)), "decisions": int(made.get(name, 0))}
            for name, role, created, disabled in rows]


# -- settings ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSettings:
    """How the labelling queue is served: ``overlap`` annotators per item, a gold item every ``gold_every``
    items (0 = never), a refit of the active-learning head after every ``refit_every`` new human labels,
    ``lease_minutes`` before an unanswered item goes to someone else, ``route_precision`` for the live loop's
    routing rule (None = no routing)."""

    overlap: int = 1
    gold_every: int = 0
    refit_every: int = 20
    lease_minutes: int = 30
    route_precision: float | None = None

    def validated(self) -> AppSettings:
        limits = {"overlap": (1, 10), "gold_every": (0, 1000), "refit_every": (1, 100_000),
                  "lease_minutes": (1, 24 * 60)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(f"setting {name}={value!r}: use a whole number in [{low}, {high}]")
        if self.route_precision is not None and (
                isinstance(self.route_precision, bool) or not isinstance(self.route_precision, int | float)
                or not 0.5 <= float(self.route_precision) < 1.0):
            raise InputError(f"setting route_precision={self.route_precision!r}: use a number in [0.5, 1) or null")
        return self


_SETTINGS_KEY = "app_settings"


def read_app_settings(workspace: Workspace) -> AppSettings:
    """The stored settings (defaults for what was never set)."""
    stored = workspace.catalog.setting(_SETTINGS_KEY)
    known = {f.name for f in fields(AppSettings)}
    values = {k: v for k, v in (json.loads(stored) if stored else {}).items() if k in known}
    return AppSettings(**values)


def write_app_settings(workspace: Workspace, changes: Mapping[str, Any]) -> AppSettings:
    """Change some settings (unknown names are an InputError) and store them."""
    known = {f.name for f in fields(AppSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
    settings = AppSettings(**{**asdict(read_app_settings(workspace)), **changes}).validated()
    with workspace.catalog.transaction() as conn:
        workspace.catalog.set_setting(conn, _SETTINGS_KEY, json.dumps(asdict(settings)))
    return settings


# -- classes and samples ----------------------------------------------------------------------------------------


def class_names(workspace: Workspace) -> list[str]:
    """The classes the app offers, sorted: every label any sample ever had (imported, human or model), found by
    skipping along the labels' index (a few reads per class, whatever the catalog's size)."""
    return [name for name in workspace.catalog.label_names() if name]


def sample_rows(workspace: Workspace, sample_ids: list[str]) -> dict[str, dict[str, Any]]:
    """sample_id -> {uri, split, kind, text} for the ids that are in the catalog."""
    result: dict[str, dict[str, Any]] = {}
    with workspace.catalog.engine.connect() as conn:
        for start in range(0, len(sample_ids), 900):
            chunk = sample_ids[start:start + 900]
            for sid, uri, split, kind, text in conn.execute(
                    select(samples.c.sample_id, samples.c.uri, samples.c.split, samples.c.kind, samples.c.text)
                    .where(samples.c.sample_id.in_(chunk))):
                result[sid] = {"uri": workspace.catalog.loaded_uri(uri), "split": split, "kind": kind, "text": text}
    return result


def sample_uri(workspace: Workspace, sample_id: str) -> str:
    """The file of a registered image sample; NotFoundError for anything else (the only way the app reads files)."""
    row = sample_rows(workspace, [sample_id]).get(sample_id)
    if row is None or row["kind"] != "image" or not row["uri"]:
        raise NotFoundError(f"sample {sample_id!r} is not an image in this workspace")
    return row["uri"]


# -- review queues from the audit -------------------------------------------------------------------------------


@dataclass
class ReviewItem:
    """One thing a reviewer decides on: a flagged sample or a group of copies."""

    key: str
    score: float
    sample_ids: list[str]  # the flagged sample, or every member of the group
    neighbours: list[str]
    evidence: dict[str, Any]


@dataclass
class ReviewQueue:
    kind: str
    title: str
    group: bool
    message: str
    items: list[ReviewItem]


_review_cache: dict[tuple[str, float], tuple[int | None, str | None, dict[str, ReviewQueue]]] = {}
_cache_lock = threading.Lock()


def review_source(workspace: Workspace) -> tuple[int | None, str | None, dict[str, ReviewQueue]]:
    """(audit run id, its time, queues by finding kind) from the latest ``curato audit``; cached per file."""
    path = workspace.latest_path("audit")
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError:
        return None, None, {}
    with _cache_lock:
        if key in _review_cache:
            return _review_cache[key]
    document = workspace.read_latest("audit") or {}
    queues: dict[str, ReviewQueue] = {}
    for finding in document.get("checks", []):
        issues = finding.get("issues") or []
        if not issues:
            continue
        kind = str(finding.get("check"))
        items = _group_items(issues) if kind in GROUP_CHECKS else _single_items(issues)
        items.sort(key=lambda item: (-item.score, item.key))
        queues[kind] = ReviewQueue(kind, kind.replace("_", " ").capitalize(), kind in GROUP_CHECKS,
                                   str(finding.get("message", "")), items)
    if "label_issues" in queues:
        _attach_probabilities(workspace, document.get("embedder"), queues["label_issues"].items)
    if "shortcuts" in queues:
        finding = next(f for f in document["checks"] if f.get("check") == "shortcuts")
        _attach_cue_values(workspace, finding, queues["shortcuts"].items)
    audits = [run for run in workspace.catalog.runs("audit") if run["status"] == "done"]
    run_id = int(audits[-1]["id"]) if audits else None
    when = _iso(audits[-1]["finished_at"]) if audits else None
    result = (run_id, when, queues)
    with _cache_lock:
        _review_cache.clear()
        _review_cache[key] = result
    return result


def _evidence(issue: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in issue.items() if k not in _EVIDENCE_SKIP}


def _attach_probabilities(workspace: Workspace, embedder: Any, items: list[ReviewItem]) -> None:
    """The audit's out-of-fold probability of the suggested and of the given label, as label-issue evidence."""
    name = f"{OOF_PREFIX}-{embedder}"
    if not embedder or not workspace.features.has(name):
        return
    stored = workspace.features.load(name)
    columns = {str(c): i for i, c in enumerate(stored.meta.get("columns", []))}
    vectors, found = stored.align([item.sample_ids[0] for item in items])
    for item, vector, ok in zip(items, vectors, found, strict=True):
        if not ok:
            continue
        for field, key in (("probability", "suggested_label"), ("given_probability", "label")):
            column = columns.get(str(item.evidence.get(key)))
            if column is not None and np.isfinite(vector[column]):
                item.evidence[field] = round(float(vector[column]), 4)


def _attach_cue_values(workspace: Workspace, finding: Mapping[str, Any], items: list[ReviewItem]) -> None:
    """Each shortcut-carrying sample's value of the flagged cues (e.g. ``format = jpeg``), next to the finding."""
    cues = [cue for cue in (finding.get("evidence") or {}).get("cues", []) if cue.get("flagged")]
    columns = list(dict.fromkeys(column for cue in cues for column in cue.get("columns", [])))
    if not columns or not items:
        return
    ids = [item.sample_ids[0] for item in items]
    values: dict[str, dict[str, Any]] = {sid: {} for sid in ids}
    if "format" in columns:
        with workspace.catalog.engine.connect() as conn:
            for start in range(0, len(ids), 900):
                for sid, fmt in conn.execute(select(samples.c.sample_id, samples.c.format)
                                             .where(samples.c.sample_id.in_(ids[start:start + 900]))):
                    values[sid]["format"] = fmt
    if workspace.features.has(PROPERTIES):
        stored = workspace.features.load(PROPERTIES)
        names = [str(c) for c in stored.meta.get("columns", [])]
        vectors, found = stored.align(ids)
        for sid, vector, ok in zip(ids, vectors, found, strict=True):
            if ok:
                values[sid].update({name: round(float(vector[names.index(name)]), 4) for name in columns
                                    if name in names and np.isfinite(vector[names.index(name)])})
    for item in items:
        item.evidence["cue"] = ", ".join(f"{name} = {value}" for name, value in values[item.sample_ids[0]].items())
        item.evidence["note"] = str(finding.get("message", "")).splitlines()[0] if finding.get("message") else None


def _single_items(issues: list[Mapping[str, Any]]) -> list[ReviewItem]:
    return [ReviewItem(str(issue["sample_id"]), float(issue.get("score", 0.0)), [str(issue["sample_id"])],
                       [str(n) for n in issue.get("nearest", []) or []][:6], _evidence(issue))
            for issue in issues if "sample_id" in issue]


def _group_items(issues: list[Mapping[str, Any]]) -> list[ReviewItem]:
    groups: dict[tuple[str, ...], ReviewItem] = {}
    for issue in issues:
        members = tuple(sorted(str(m) for m in issue.get("members") or [issue["sample_id"]]))
        score = float(issue.get("score", 0.0))
        item = groups.get(members)
        if item is None:
            groups[members] = ReviewItem("group:" + "|".join(members), score, list(members), [], _evidence(issue))
        else:
            item.score = max(item.score, score)
    return list(groups.values())


def _decided(conn: Connection, kind: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(decisions.c.item, decisions.c.id, decisions.c.action, decisions.c.user,
                               decisions.c.created_at)
                        .where(decisions.c.queue == kind, decisions.c.undone_at.is_(None))
                        .order_by(decisions.c.id)).all()
    return {item: {"id": int(did), "action": action, "user": user, "created_at": _iso(created)}
            for item, did, action, user, created in rows}


def review_overview(workspace: Workspace) -> dict[str, Any]:
    """The review queues of the latest audit with item and open counts."""
    run_id, when, queues = review_source(workspace)
    with workspace.catalog.engine.connect() as conn:
        listed = []
        for kind, found in queues.items():
            decided = _decided(conn, kind)
            open_count = sum(1 for item in found.items if item.key not in decided)
            listed.append({"kind": kind, "title": found.title, "group": found.group, "message": found.message,
                           "items": len(found.items), "open": open_count})
    return {"audit_run": run_id, "audit_time": when, "queues": listed}


def review_items(workspace: Workspace, kind: str, *, status: str = "open", offset: int = 0,
                 limit: int = 1) -> dict[str, Any]:
    """A page of one review queue: items (flagged samples with labels, splits, evidence, neighbours) by score."""
    if status not in ("open", "decided", "all"):
        raise InputError(f"status {status!r}: use open, decided or all")
    if not (0 <= offset <= 10_000_000 and 1 <= limit <= 200):
        raise InputError("offset must be >= 0 and limit between 1 and 200")
    _, _, queues = review_source(workspace)
    found = queues.get(kind)
    if found is None:
        raise NotFoundError(f"no review queue {kind!r} in the latest audit; queues: {', '.join(queues) or 'none'}")
    with workspace.catalog.engine.connect() as conn:
        decided = _decided(conn, kind)
    chosen = [item for item in found.items
              if status == "all" or (item.key in decided) == (status == "decided")]
    page = chosen[offset:offset + limit]
    wanted = sorted({sid for item in page for sid in item.sample_ids + item.neighbours})
    curated = workspace.catalog.curated_labels(wanted) if page else {}
    rows = sample_rows(workspace, wanted)
    open_count = sum(1 for item in found.items if item.key not in decided)
    return {"kind": kind, "title": found.title, "group": found.group, "message": found.message,
            "total": len(found.items), "open": open_count, "matching": len(chosen),
            "items": [_item_view(item, found.group, rows, curated, decided.get(item.key)) for item in page]}


def _sample_view(sid: str, role: str, rows: Mapping[str, Mapping[str, Any]], curated: Mapping[str, Any]):
    row = rows.get(sid, {})
    label = curated.get(sid)
    return {"sample_id": sid, "label": None if label is None else label.label,
            "origin": None if label is None else label.origin, "split": row.get("split"),
            "image": f"/api/image?id={_quote(sid)}" if row.get("kind") == "image" else None,
            "text": row.get("text") if row.get("kind") == "text" else None,
            "role": role, "present": sid in rows}


def _item_view(item: ReviewItem, group: bool, rows, curated, decision) -> dict[str, Any]:
    role = "member" if group else "flagged"
    members = [_sample_view(sid, role, rows, curated) for sid in item.sample_ids]
    neighbours = [_sample_view(sid, "neighbour", rows, curated) for sid in item.neighbours]
    return {"item": item.key, "score": round(item.score, 6), "group": group, "samples": members + neighbours,
            "evidence": item.evidence, "decision": decision}


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


# -- decisions --------------------------------------------------------------------------------------------------


def decide(workspace: Workspace, user: User, kind: str, item_key: str, action: str, *, label: str | None = None,
           keep: str | None = None, split: str | None = None, duration_ms: int | None = None) -> dict[str, Any]:
    """Record a reviewer's decision on one item of review queue ``kind`` and apply it (one transaction).

    Effects: ``keep``/``accept``/``relabel`` append a human label; ``exclude``/``ambiguous`` take the sample
    out of the dataset; for groups ``keep_one`` excludes every member but ``keep``, ``drop_copies`` keeps the
    training copy (else the first id), ``move_split`` moves every member to ``split``, ``not_duplicate``
    changes nothing. A later decision on the same item supersedes this one (history kept)."""
    if user.role not in ("reviewer", "admin"):
        raise ForbiddenError(f"user {user.name!r} is an {user.role}; reviewing findings needs a reviewer or admin")
    run_id, _, queues = review_source(workspace)
    found = queues.get(kind)
    if found is None:
        raise NotFoundError(f"no review queue {kind!r} in the latest audit")
    item = next((candidate for candidate in found.items if candidate.key == item_key), None)
    if item is None:
        raise NotFoundError(f"item {item_key!r} is not in the {kind} queue of the latest audit")
    allowed = GROUP_ACTIONS if found.group else SINGLE_ACTIONS
    if action not in allowed:
        raise InputError(f"action {action!r} does not apply to {kind}; use one of {', '.join(allowed)}")
    _check_duration(duration_ms)
    rows = sample_rows(workspace, item.sample_ids)
    members = [sid for sid in item.sample_ids if sid in rows]
    if not members:
        raise NotFoundError(f"item {item_key!r}: its samples are no longer in the catalog")
    effects: dict[str, Any] = {}
    if action in ("keep", "accept", "relabel"):
        sid = members[0]
        if action == "keep":
            given = workspace.catalog.curated_labels([sid]).get(sid)  # only "keep" needs the label that counts
            if given is None:
                raise InputError(f"sample {sid!r} has no label to keep; relabel it instead")
            new = given.label
        elif action == "accept":
            new = item.evidence.get("suggested_label")
            if not isinstance(new, str) or not new:
                raise InputError(f"item {item_key!r} has no suggested label to accept; relabel it or keep its label")
        else:
            new = _known_class(workspace, label)
        effects = {"labels": {sid: new}, "include": [sid]}
    elif action in ("exclude", "ambiguous"):
        effects = {"excluded" if action == "exclude" else "ambiguous": members}
    elif action == "keep_one":
        if keep not in members:
            raise InputError(f"keep={keep!r} is not a member of this group; members: {', '.join(members)}")
        effects = {"include": [keep], "excluded": [sid for sid in members if sid != keep]}
    elif action == "drop_copies":
        kept = min(members, key=lambda sid: (_SPLIT_KEEP_ORDER.get(rows[sid]["split"] or "", 1), sid))
        effects = {"include": [kept], "excluded": [sid for sid in members if sid != kept]}
    elif action == "move_split":
        known_splits = set(workspace.catalog.group_counts("split")) - {None}
        if split not in known_splits:
            raise InputError(f"split={split!r} is not a split of this workspace; splits: "
                             f"{', '.join(sorted(known_splits))}")
        effects = {"splits": {sid: [rows[sid]["split"], split] for sid in members if rows[sid]["split"] != split},
                   "include": members}
    else:
        effects = {"include": members}
    with workspace.catalog.transaction() as conn:
        decision_id = workspace.catalog.record_decision(conn, queue=kind, item=item_key, action=action,
                                                        sample_ids=members, effects=effects, user=user.name,
                                                        source_run=run_id, duration_ms=duration_ms)
    return {"decision": decision_id, "effects": effects}


def _known_class(workspace: Workspace, label: str | None, classes: Sequence[str] | None = None) -> str:
    classes = list(classes) if classes is not None else class_names(workspace)
    if not isinstance(label, str) or label not in classes:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise InputError(f"label {label!r} is not a class of this workspace; classes: {shown}")
    return label


def _check_duration(duration_ms: int | None) -> None:
    if duration_ms is not None and (isinstance(duration_ms, bool) or not isinstance(duration_ms, int)
                                    or not 0 <= duration_ms <= 24 * 3600 * 1000):
        raise InputError(f"duration_ms={duration_ms!r}: use milliseconds between 0 and one day")


def undo_decision(workspace: Workspace, user: User, decision_id: int) -> dict[str, Any]:
    """Undo a decision: it stays in the history marked undone, its labels are retracted, moved samples go back
    to their split (when nobody moved them since), a labelling item returns to its annotator. People undo their
    own decisions; admins anyone's."""
    with workspace.catalog.transaction() as conn:
        row = conn.execute(select(decisions).where(decisions.c.id == decision_id)).first()
        if row is None:
            raise NotFoundError(f"decision {decision_id} does not exist")
        row = row._mapping
        if row["user"] != user.name and user.role != "admin":
            raise ForbiddenError(f"decision {decision_id} is {row['user']}'s; only they or an admin can undo it")
        if row["undone_at"] is not None:
            raise ConflictError(f"decision {decision_id} was undone already")
        workspace.catalog.undo_decision(conn, decision_id, undone_by=user.name)
        effects = row["effects"] if isinstance(row["effects"], dict) else {}
        assignment_id = effects.get("assignment")
        if row["queue"] == LABELLING_QUEUE and assignment_id is not None:
            _reopen_assignment(conn, int(assignment_id))
        if row["queue"] == "masks":  # curato.commands.masking.MASK_QUEUE: the saved mask is superseded again
            from curato.commands.masking import retract_mask

            retract_mask(conn, decision_id, effects)
    return {"undone": decision_id}


# -- the labelling queue ----------------------------------------------------------------------------------------


def _reopen_assignment(conn: Connection, assignment_id: int) -> None:
    """Give an undone labelling answer back to its annotator: the assignment is live again, in its old slot if
    that slot is still free."""
    row = conn.execute(select(assignments).where(assignments.c.id == assignment_id)).first()
    if row is None:
        return
    row = row._mapping
    values: dict[str, Any] = {"status": "assigned", "finished_at": None, "label": None, "duration_ms": None}
    if row["queue_id"] is not None:
        if row["slot"] is None:
            used = {s for (s,) in conn.execute(select(assignments.c.slot).where(
                assignments.c.queue_id == row["queue_id"], assignments.c.slot.is_not(None)))}
            values["slot"] = next(s for s in range(len(used) + 1) if s not in used)
            conn.execute(update(queue).where(queue.c.id == row["queue_id"]).values(assigned=queue.c.assigned + 1))
        conn.execute(update(queue).where(queue.c.id == row["queue_id"], queue.c.status == "labelled")
                     .values(status="queued"))
    conn.execute(update(assignments).where(assignments.c.id == assignment_id).values(**values))


@dataclass
class Suggestions:
    """The model's current label for queued samples (label, confidence), refreshed by the live loop."""

    by_sample: dict[str, tuple[str, float]]
    updated: float = 0.0


def next_item(workspace: Workspace, user: User, settings: AppSettings,
              suggestions: Mapping[str, tuple[str, float]] | None = None) -> dict[str, Any]:
    """The user's next item: their unfinished one first, a gold item when one is due, else a queued item that
    still has a free slot and that this user never had -- items others already started first (overlap > 1:
    they complete), then by batch and rank. The assignment commits before the answer (a crash after it leaves
    the item with this user, who gets it again on the next call)."""
    with workspace.catalog.engine.connect() as conn:  # reads only: no write lock is held while looking
        own = conn.execute(select(assignments.c.id, assignments.c.sample_id).where(
            assignments.c.annotator == user.name, assignments.c.status == "assigned")
            .order_by(assignments.c.id).limit(1)).first()
        if own is not None:
            return _assignment_view(workspace, conn, int(own[0]), own[1], settings, suggestions)
        gold_item = _due_gold(conn, user, settings)
    for _ in range(20):  # a unique constraint refused a race (another request of the same user); try again
        try:
            with workspace.catalog.transaction() as conn:
                if gold_item is not None:
                    queue_id, sample_id, slot = None, gold_item, None
                else:
                    claimed = _claim(conn, user, settings)
                    if claimed is None:
                        return {"assignment": None, "remaining": 0}
                    queue_id, sample_id = claimed
                    used = {s for (s,) in conn.execute(select(assignments.c.slot).where(
                        assignments.c.queue_id == queue_id, assignments.c.slot.is_not(None)))}
                    slot = next(s for s in range(settings.overlap + len(used)) if s not in used)
                result = conn.execute(assignments.insert().values(
                    queue_id=queue_id, sample_id=sample_id, annotator=user.name, slot=slot,
                    gold=gold_item is not None, status="assigned", assigned_at=utcnow()))
                return _assignment_view(workspace, conn, int(result.inserted_primary_key[0]), sample_id, settings,
                                        suggestions)
        except IntegrityError:
            gold_item = None
            continue
    raise ConflictError("the queue is busy; ask for the next item again")


def _claim(conn: Connection, user: User, settings: AppSettings) -> tuple[int, str] | None:
    """Take one slot of the best queued item this user never had, in ONE statement: an UPDATE whose row comes
    from a subquery (PostgreSQL skips rows other transactions are claiming; SQLite runs one writer at a time),
    so concurrent annotators never race for the same row. One statement per number of annotators the item
    already has keeps every lookup on the ``ix_queue_next`` index."""
    candidate = queue.alias("candidate")
    seen = exists().where(and_(assignments.c.sample_id == candidate.c.sample_id,
                               assignments.c.annotator == user.name))
    for level in range(settings.overlap - 1, -1, -1):
        pick = (select(candidate.c.id)
                .where(candidate.c.status == "queued", candidate.c.assigned == level, ~seen)
                .order_by(candidate.c.run_id, candidate.c.rank).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        row = conn.execute(update(queue).where(queue.c.id == pick, queue.c.assigned == level)
                           .values(assigned=queue.c.assigned + 1)
                           .returning(queue.c.id, queue.c.sample_id)).first()
        if row is not None:
            return int(row[0]), str(row[1])
    return None


def _due_gold(conn: Connection, user: User, settings: AppSettings) -> str | None:
    if settings.gold_every <= 0:
        return None
    done = conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.annotator == user.name, assignments.c.status != "assigned")).scalar() or 0
    if (done + 1) % settings.gold_every:
        return None
    seen = exists().where(and_(assignments.c.sample_id == gold.c.sample_id, assignments.c.annotator == user.name))
    return conn.execute(select(gold.c.sample_id).where(~seen).order_by(gold.c.sample_id).limit(1)).scalar()


_remaining_cache: dict[tuple[str, int], tuple[float, int]] = {}
REMAINING_SECONDS = 2.0


def remaining_items(conn: Connection, settings: AppSettings) -> int:
    """Queued items that still need an annotator (counted at most every :data:`REMAINING_SECONDS` per catalog:
    a count over a 100k-item queue on every request would cost more than the request)."""
    key = (str(conn.engine.url), settings.overlap)
    cached = _remaining_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < REMAINING_SECONDS:
        return cached[1]
    count = int(conn.execute(select(func.count()).select_from(queue).where(
        queue.c.status == "queued", queue.c.assigned < settings.overlap)).scalar() or 0)
    _remaining_cache[key] = (time.monotonic(), count)
    return count


def _assignment_view(workspace: Workspace, conn: Connection, assignment_id: int, sample_id: str,
                     settings: AppSettings, suggestions: Mapping[str, tuple[str, float]] | None) -> dict[str, Any]:
    suggestion = (suggestions or {}).get(sample_id)
    row = conn.execute(select(samples.c.kind, samples.c.text).where(samples.c.sample_id == sample_id)).first()
    kind, text = (row[0], row[1]) if row is not None else ("image", None)
    return {"assignment": assignment_id, "sample_id": sample_id,
            "image": f"/api/image?id={_quote(sample_id)}" if kind == "image" else None,
            "text": text if kind == "text" else None,
            "suggestion": None if suggestion is None else suggestion[0],
            "confidence": None if suggestion is None else round(float(suggestion[1]), 4),
            "remaining": remaining_items(conn, settings)}


def submit_label(workspace: Workspace, user: User, assignment_id: int, action: str, *, label: str | None = None,
                 duration_ms: int | None = None, settings: AppSettings | None = None,
                 classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Store an annotator's answer to an assignment in one transaction: a ``labelling`` decision, a human label
    (for ``label``) with the time taken; ``skip`` and ``unsure`` free the slot for someone else. The entry is
    ``labelled`` once ``overlap`` people labelled it. A repeated submit writes nothing and returns the first
    decision (``duplicate``: true), so a client may retry safely."""
    settings = settings or read_app_settings(workspace)
    if action not in LABEL_ACTIONS:
        raise InputError(f"action {action!r}: use one of {', '.join(LABEL_ACTIONS)}")
    _check_duration(duration_ms)
    chosen = _known_class(workspace, label, classes) if action == "label" else None
    with workspace.catalog.transaction() as conn:
        row = conn.execute(select(assignments).where(assignments.c.id == assignment_id)).first()
        if row is None:
            raise NotFoundError(f"assignment {assignment_id} does not exist")
        row = row._mapping
        if row["annotator"] != user.name:
            raise ForbiddenError(f"assignment {assignment_id} belongs to another annotator")
        if row["status"] != "assigned":
            previous = conn.execute(select(decisions.c.id).where(
                decisions.c.queue == LABELLING_QUEUE, decisions.c.item == f"assignment:{assignment_id}",
                decisions.c.undone_at.is_(None)).order_by(decisions.c.id.desc()).limit(1)).scalar()
            if previous is None:
                raise ConflictError(f"assignment {assignment_id} expired; ask for the next item")
            return {"decision": int(previous), "duplicate": True}
        effects: dict[str, Any] = {"assignment": assignment_id}
        if chosen is not None:
            effects["labels"] = {row["sample_id"]: chosen}
        select_run = None if row["queue_id"] is None else conn.execute(
            select(queue.c.run_id).where(queue.c.id == row["queue_id"])).scalar()
        decision_id = workspace.catalog.record_decision(
            conn, queue=LABELLING_QUEUE, item=f"assignment:{assignment_id}", action=action,
            sample_ids=[row["sample_id"]], effects=effects, user=user.name, source_run=select_run,
            duration_ms=duration_ms)
        status = "labelled" if action == "label" else action + ("ped" if action == "skip" else "")
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "duration_ms": duration_ms,
                                  "label": chosen}
        if action != "label" and row["queue_id"] is not None:  # free the slot for another annotator
            values["slot"] = None
            conn.execute(update(queue).where(queue.c.id == row["queue_id"]).values(assigned=queue.c.assigned - 1))
        conn.execute(update(assignments).where(assignments.c.id == assignment_id).values(**values))
        if action == "label" and row["queue_id"] is not None:
            answered = conn.execute(select(func.count()).select_from(assignments).where(
                assignments.c.queue_id == row["queue_id"], assignments.c.status == "labelled")).scalar() or 0
            if answered >= settings.overlap:
                conn.execute(update(queue).where(queue.c.id == row["queue_id"]).values(status="labelled"))
    return {"decision": decision_id, "duplicate": False}


def expire_assignments(workspace: Workspace, settings: AppSettings) -> int:
    """Give items nobody answered within the lease to someone else; returns how many were released."""
    cutoff = utcnow() - dt.timedelta(minutes=settings.lease_minutes)
    released = 0
    with workspace.catalog.transaction() as conn:
        stale = conn.execute(select(assignments.c.id, assignments.c.queue_id).where(
            assignments.c.status == "assigned", assignments.c.assigned_at < cutoff)).all()
        for assignment_id, queue_id in stale:
            conn.execute(update(assignments).where(assignments.c.id == assignment_id)
                         .values(status="expired", slot=None, finished_at=utcnow()))
            if queue_id is not None:
                conn.execute(update(queue).where(queue.c.id == queue_id).values(assigned=queue.c.assigned - 1))
            released += 1
    return released


# -- gold items and agreement -----------------------------------------------------------------------------------


def add_gold(workspace: Workspace, user: User, items: Mapping[str, str]) -> int:
    """Mark samples as gold items with a known answer (replacing earlier answers); returns how many."""
    if not items:
        raise InputError("no gold items given: send {\"items\": [{\"sample_id\", \"label\"}]}")
    known = sample_rows(workspace, list(items))
    missing = sorted(set(items) - set(known))
    if missing:
        raise NotFoundError(f"gold item(s) not in the catalog: {', '.join(missing[:5])}")
    for label in set(items.values()):
        _known_class(workspace, label)
    with workspace.catalog.transaction() as conn:
        conn.execute(gold.delete().where(gold.c.sample_id.in_(list(items))))
        conn.execute(gold.insert(), [{"sample_id": sid, "label": label, "created_by": user.name,
                                      "created_at": utcnow()} for sid, label in items.items()])
    return len(items)


def human_answers(workspace: Workspace) -> tuple[list[str], list[str], list[str]]:
    """(sample, annotator, label) of every annotator's latest answer in the labelling queue (not undone)."""
    with workspace.catalog.engine.connect() as conn:
        rows = conn.execute(select(labels.c.sample_id, labels.c.annotator, labels.c.label)
                            .join(decisions, decisions.c.id == labels.c.decision_id)
                            .where(labels.c.origin == "human", labels.c.retracted_at.is_(None),
                                   decisions.c.queue == LABELLING_QUEUE).order_by(labels.c.id)).all()
    latest: dict[tuple[str, str], str] = {}
    for sid, annotator, label in rows:
        latest[sid, annotator or ""] = label
    keys = list(latest)
    return [k[0] for k in keys], [k[1] for k in keys], list(latest.values())


def agreement(workspace: Workspace, settings: AppSettings) -> dict[str, Any]:
    """Agreement between annotators (Fleiss' kappa overall and per class, Cohen's kappa per pair and per
    annotator) and each annotator's accuracy on gold items."""
    from curato import crowd

    items, annotators, answers = human_answers(workspace)
    with workspace.catalog.engine.connect() as conn:
        known = dict(conn.execute(select(gold.c.sample_id, gold.c.label)).all())
    report = crowd.agreement_report(items, annotators, answers) if items else {
        "items_with_overlap": 0, "fleiss_kappa": None, "per_class": {}, "per_annotator": {}, "pairs": []}
    report["gold"] = crowd.gold_accuracy(items, annotators, answers, known) if items else {}
    report["gold_items"] = len(known)
    report["overlap"] = settings.overlap
    return report


# -- status -----------------------------------------------------------------------------------------------------


def app_status(workspace: Workspace) -> dict[str, Any]:
    """Label counts by origin (current rule) and queue counts by status."""
    with workspace.catalog.engine.connect() as conn:
        by_queue = dict(conn.execute(select(queue.c.status, func.count()).group_by(queue.c.status)).all())
        last_runs = conn.execute(select(runs.c.kind, func.max(runs.c.id)).group_by(runs.c.kind)).all()
    counts = {"human": 0, "model": 0, "imported": 0}
    for (_label, origin, _), count in workspace.catalog.curated_label_counts(None).items():
        counts[origin] = counts.get(origin, 0) + count
    return {"labels": counts, "queue": {status: int(by_queue.get(status, 0))
                                        for status in ("queued", "labelled", "skipped", "routed")},
            "runs": {kind: int(run_id) for kind, run_id in last_runs}}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return _aware(value).isoformat(timespec="seconds")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def monotonic_ms() -> int:
    """A monotonic clock in milliseconds (server-side timing of requests)."""
    return int(time.monotonic() * 1000)
