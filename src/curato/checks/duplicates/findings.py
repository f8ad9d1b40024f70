"""The four duplicate findings: exact copies, near-identical pictures, copies across splits, copies with two labels.

:func:`duplicate_findings` joins content-hash pairs and accepted near-duplicate pairs (:mod:`.near`) into
groups, the connected components of those pairs (scipy.sparse.csgraph), so a group may chain A~B~C. A group
whose members are all byte-identical is reported under ``exact_duplicates`` only. Every member of a reported
group is flagged and lists the group's other members; the evidence lists the largest groups.

Every pair records the rule that accepted it (:data:`.rules.RULES`; ``identical_bytes`` for a content-hash
pair) and the distances that rule read. A grouped sample's details name its most similar pair (``rule``,
``partner``, ``rule_distances``); the ``near_duplicates`` evidence lists each listed group's ``pairs`` and
counts ``pairs_by_rule``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curato.arrays import check_length, encode_values
from curato.checks.duplicates.candidates import NearPairs, exact_pairs
from curato.checks.duplicates.near import near_pairs_from_embeddings, near_pairs_from_phashes
from curato.checks.duplicates.params import DuplicateParams
from curato.checks.duplicates.rules import MEASURES, RULES, rule_code
from curato.checks.duplicates.text import near_text_pairs, normalised_keys, text_rows
from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError
from curato.features.properties import hamming_distance
from curato.features.thumbnails import grey_thumbnails
from curato.neighbors import EXACT_LIMIT

DEFAULT_K = 10  # neighbours per sample when no graph is given
MAX_EVIDENCE_GROUPS = 200  # groups listed in each finding's evidence
_ANY = 1e-12  # the low-severity cut-off: any redundant copy


def duplicate_findings(
    sample_ids: Sequence[str] | np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    content_hashes: Sequence[str | None] | np.ndarray | None = None,
    phashes: np.ndarray | None = None,
    phash_known: np.ndarray | None = None,
    texts: Sequence[str | None] | np.ndarray | None = None,
    thumbnails: np.ndarray | None = None,
    splits: Sequence[str | None] | np.ndarray | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    near_threshold: float | None = None,
    valid: np.ndarray | None = None,
    k: int = DEFAULT_K,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    exact_limit: int = EXACT_LIMIT,
    max_evidence_groups: int = MAX_EVIDENCE_GROUPS,
    second_look: Callable[[np.ndarray], np.ndarray] | None = None,
    params: DuplicateParams | None = None,
) -> list[Finding]:
    """Exact duplicates, near duplicates, split leakage and conflicting labels among duplicates.

    Every array is aligned with ``sample_ids``. ``embeddings`` (n, d) drive near-duplicate search
    (all-zero rows are skipped); ``content_hashes`` (``""``/``None`` = unknown) give exact
    duplicates; ``phashes`` (uint64) confirm near duplicates, or find them alone when there are no
    embeddings; ``thumbnails`` (the scan's thumbnail rows, all-zero = none) add rules 4 and 5 (registered
    thumbnails); ``splits`` and ``labels`` (``None`` = unknown) feed leakage and conflicts.
    ``near_threshold`` replaces the data-relative rules by a fixed cosine similarity cut. ``valid`` (bool)
    excludes samples, e.g. unreadable files, from every group. ``neighbours`` reuses a kNN graph
    ``(similarities, indices)`` from :func:`curato.neighbors.knn` over all rows of ``embeddings`` (k >= 2).
    ``second_look(rows)`` (with ``thumbnails``) returns the pictures of those rows as (m, side, side) grey
    squares at a finer side than the thumbnail's -- e.g. the images' own size through
    :func:`curato.features.properties.grey_squares` -- for rule 6. ``params`` holds every threshold (default
    :class:`DuplicateParams`). ``phash_known`` (bool) marks the rows whose ``phashes`` were computed (default:
    the non-zero ones); an unknown hash takes part in no rule. ``texts`` holds each text sample's text (``None``
    for other samples): text rows are judged by the text rules only (``normalised_text``, ``text_shingles``;
    :mod:`.text`), never by hashes or thumbnails. Returns Findings for ``exact_duplicates``, ``near_duplicates``,
    ``split_leakage`` and ``conflicting_duplicates``, in that order.
    """
    params = params or DuplicateParams()
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    usable = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    check_length("valid", usable, n)
    if near_threshold is not None and not -1.0 <= near_threshold <= 1.0:
        raise InputError(f"near_threshold is a cosine similarity in [-1, 1], not {near_threshold}")
    hashes = None if phashes is None else np.asarray(phashes, dtype=np.uint64)
    if texts is not None:
        check_length("texts", texts, n)
    is_text = text_rows(texts, n)
    if hashes is not None:
        check_length("phashes", hashes, n)
        known_hash = hashes != 0 if phash_known is None else np.asarray(phash_known, dtype=bool)
        check_length("phash_known", known_hash, n)
        known_hash = known_hash & ~is_text
    else:
        known_hash = np.zeros(n, dtype=bool)

    # Exact copies: the content hash, or for a text the normalised text.
    if content_hashes is not None:
        check_length("content_hashes", content_hashes, n)
    keys = (np.array(["" if h is None else str(h) for h in content_hashes], dtype=object)
            if content_hashes is not None else np.full(n, "", dtype=object))
    if is_text.any():
        keys[is_text] = normalised_keys(texts, is_text)[is_text]
    exact_first, exact_second, exact_groups = exact_pairs(
        keys if content_hashes is not None or is_text.any() else None, usable, n)
    near = NearPairs.empty()
    pictures = usable & ~is_text
    if embeddings is not None:
        grey = None
        if thumbnails is not None:
            check_length("thumbnails", thumbnails, n)
            grey = grey_thumbnails(thumbnails)
        if pictures.any():
            near = near_pairs_from_embeddings(embeddings, hashes, known_hash, pictures, near_threshold, k,
                                              neighbours, exact_limit, grey, second_look, params)
        if (usable & is_text).any():
            near = near.concat(near_text_pairs(embeddings, texts, usable & is_text, k, neighbours, exact_limit,
                                               params))
    elif hashes is not None:
        near = near_pairs_from_phashes(hashes, pictures & known_hash, k, params)

    if near.first.size:
        # A pair of byte-identical files (or equal normalised texts) is an exact duplicate already; it must not
        # make its group "near".
        same_bytes = (keys[near.first] == keys[near.second]) & (keys[near.first] != "")
        near = near.select(~same_bytes)
    exact_rule = np.where(is_text[exact_second], rule_code("normalised_text"), rule_code("identical_bytes"))
    links = Links(ids, exact_first, exact_second, near, params.max_listed_members, exact_rule)
    first, second = links.first, links.second
    graph = coo_matrix((np.ones(first.size, dtype=np.int8), (first, second)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    best = np.zeros(n)
    np.maximum.at(best, first, links.similarity)
    np.maximum.at(best, second, links.similarity)
    closest_bits = None
    if hashes is not None and near.first.size:
        closest_bits = np.full(n, 64, dtype=np.int64)
        both = known_hash[near.first] & known_hash[near.second]
        first_known, second_known = near.first[both], near.second[both]
        bits = hamming_distance(hashes[first_known], hashes[second_known])
        np.minimum.at(closest_bits, first_known, bits)
        np.minimum.at(closest_bits, second_known, bits)

    groups = Groups(ids, component, first.size > 0, params.max_listed_members)
    near_group = np.zeros(groups.count, dtype=bool)
    if near.first.size:
        near_group[groups.index_of_component[component[near.first]]] = True
    cap = max_evidence_groups
    return [
        _exact_finding(ids, exact_groups, keys, content_hashes is None and not is_text.any(), is_text, cap,
                       params),
        _near_finding(ids, groups, links, near_group, best, closest_bits, near.scale, cap, params, is_text),
        _leakage_finding(ids, groups, links, splits, best, cap),
        _conflict_finding(ids, groups, links, labels, best, cap, params),
    ]


class Links:
    """Every pair that joins samples into groups -- content-hash pairs (rule ``identical_bytes``), then accepted
    near-duplicate pairs -- with its rule and distances, and per sample the pair that joined it: its most
    similar one (the similarity its details report)."""

    def __init__(self, ids: np.ndarray, exact_first: np.ndarray, exact_second: np.ndarray, near: NearPairs,
                 max_listed: int, exact_rule: np.ndarray | None = None) -> None:
        self.ids, self.max_listed = ids, max_listed
        self.first = np.concatenate([exact_first, near.first])
        self.second = np.concatenate([exact_second, near.second])
        self.similarity = np.concatenate([np.ones(exact_first.size), near.similarity])
        self.near_rule = near.rule
        if exact_rule is None:
            exact_rule = np.full(exact_first.size, rule_code("identical_bytes"))
        self.rule = np.concatenate([exact_rule, near.rule])
        self.measures = {name: np.concatenate([np.full(exact_first.size, np.nan), values])
                         for name, values in near.measures.items()}
        pairs = np.arange(self.first.size)
        ends, pair = np.r_[self.first, self.second], np.r_[pairs, pairs]
        order = np.lexsort((pair, -np.r_[self.similarity, self.similarity], ends))
        head = np.ones(order.size, dtype=bool)
        head[1:] = ends[order][1:] != ends[order][:-1]
        self.joined_by = np.full(len(ids), -1, dtype=np.int64)
        self.joined_by[ends[order][head]] = pair[order][head]

    def distances(self, pair: int) -> dict[str, Any]:
        """What the pair's rule read (``None`` for an infinite ``other_registered_distance``: nothing else
        compared)."""
        values: dict[str, Any] = {}
        for name in MEASURES[RULES[self.rule[pair]]]:
            value = float(self.measures[name][pair]) if name in self.measures else np.nan
            if np.isnan(value):
                continue
            counted = name in ("phash_bits", "word_edits")
            values[name] = int(value) if counted else round(value, 6) if np.isfinite(value) else None
        return values

    def describe(self, pair: int) -> dict[str, Any]:
        """The pair as evidence: both ids, its rule, its similarity and the rule's distances."""
        return {"a": str(self.ids[self.first[pair]]), "b": str(self.ids[self.second[pair]]),
                "rule": RULES[self.rule[pair]], "similarity": round(float(self.similarity[pair]), 6),
                **self.distances(pair)}

    def sample(self, row: int) -> dict[str, Any]:
        """For a grouped sample's details: the rule of the pair that joined it, its partner and the distances."""
        pair = self.joined_by[row]
        partner = self.second[pair] if self.first[pair] == row else self.first[pair]
        return {"rule": RULES[self.rule[pair]], "partner": str(self.ids[partner]),
                "rule_distances": self.distances(pair)}

    def in_groups(self, groups: Groups, chosen: np.ndarray) -> list[list[dict[str, Any]]]:
        """The pairs inside each chosen group (at most ``max_listed`` each), in the groups' order."""
        group = groups.group_of[self.first] if self.first.size else np.empty(0, dtype=np.int64)
        order = np.argsort(group, kind="stable")
        start, stop = np.searchsorted(group[order], chosen), np.searchsorted(group[order], chosen, side="right")
        return [[self.describe(pair) for pair in order[begin:min(end, begin + self.max_listed)]]
                for begin, end in zip(start, stop, strict=True)]

    def near_counts(self) -> dict[str, int]:
        """How many accepted near-duplicate pairs each rule accepted."""
        counts = np.bincount(self.near_rule, minlength=len(RULES)) if self.near_rule.size else np.zeros(len(RULES))
        return {name: int(count) for name, count in zip(RULES, counts, strict=True) if count}


class Groups:
    """Connected components of two or more samples, numbered largest first."""

    def __init__(self, ids: np.ndarray, component: np.ndarray, any_edges: bool, max_listed: int) -> None:
        self.ids = ids
        self.max_listed = max_listed
        sizes = np.bincount(component)
        grouped = np.flatnonzero(sizes > 1) if any_edges else np.empty(0, dtype=np.int64)
        order = grouped[np.lexsort((grouped, -sizes[grouped]))]
        self.count = order.size
        self.index_of_component = np.full(sizes.size, -1, dtype=np.int64)
        self.index_of_component[order] = np.arange(order.size)
        self.group_of = self.index_of_component[component]
        members = np.flatnonzero(self.group_of >= 0)
        members = members[np.argsort(self.group_of[members], kind="stable")]
        bounds = np.r_[0, np.cumsum(sizes[order])]
        self.members = [members[bounds[g]:bounds[g + 1]] for g in range(self.count)]

    def id_lists(self, chosen: np.ndarray) -> dict[int, list[str]]:
        """Member ids of the chosen groups (capped at ``max_listed`` each)."""
        return {int(g): [str(s) for s in self.ids[self.members[g][:self.max_listed]]] for g in chosen}

    def member_details(self, chosen: np.ndarray, lists: dict[int, list[str]]) -> dict[str, dict[str, Any]]:
        """Group number, size and members for every member of the chosen groups."""
        details = {}
        for g in chosen:
            size = int(self.members[g].size)
            base = {"group": int(g), "group_size": size, "members": lists[int(g)]}
            if size > self.max_listed:
                base["members_truncated"] = True
            for row in self.members[g]:
                details[str(self.ids[row])] = dict(base)
        return details

    def flags(self, chosen: np.ndarray) -> np.ndarray:
        """True for every member of the chosen groups."""
        flagged = np.zeros(len(self.ids), dtype=bool)
        if chosen.size:
            flagged[np.concatenate([self.members[g] for g in chosen])] = True
        return flagged


def _evidence(lists: dict[int, list[str]], chosen: np.ndarray, cap: int) -> dict[str, Any]:
    """``groups``: member id lists of the largest ``cap`` groups; ``groups_total``: how many there are."""
    return {"groups": [lists[int(g)] for g in chosen[:cap]], "groups_total": int(chosen.size)}


def _exact_finding(ids: np.ndarray, exact_groups: list[np.ndarray], keys: np.ndarray, unchecked: bool,
                   is_text: np.ndarray, cap: int, params: DuplicateParams) -> Finding:
    n = len(ids)
    flagged = np.zeros(n, dtype=bool)
    exact_groups = sorted(exact_groups, key=lambda members: (-members.size, members[0]))
    lists = []
    details: dict[str, dict[str, Any]] = {}
    for number, members in enumerate(exact_groups):
        flagged[members] = True
        listed = [str(s) for s in ids[members[:params.max_listed_members]]]
        lists.append(listed)
        base: dict[str, Any] = {"group": number, "group_size": int(members.size), "members": listed}
        if is_text[members[0]]:
            base["rule"] = "normalised_text"
        else:
            base["content_hash"] = str(keys[members[0]])
        if members.size > params.max_listed_members:
            base["members_truncated"] = True
        for row in members:
            details[str(ids[row])] = dict(base)
    redundant = int(flagged.sum()) - len(exact_groups)
    severity = severity_from_share(redundant / max(n, 1), low=_ANY, medium=params.exact_medium_share,
                                   high=params.exact_high_share)
    text_groups = sum(1 for members in exact_groups if is_text[members[0]])
    if unchecked:
        message = "no content hashes: exact duplicates were not checked"
    elif exact_groups and text_groups == len(exact_groups):
        message = (f"{redundant} text(s) are identical to another text after normalising case, punctuation and "
                   f"whitespace ({len(exact_groups)} group(s)); keep one text of each group")
    elif exact_groups:
        message = (f"{redundant} sample(s) are identical copies of another ({len(exact_groups)} group(s): "
                   f"{len(exact_groups) - text_groups} of byte-identical files, {text_groups} of texts equal "
                   "after normalisation); keep one sample of each group" if text_groups else
                   f"{redundant} file(s) are byte-identical copies of another file ({len(exact_groups)} group(s)); "
                   "keep one file of each group")
    elif is_text.all():
        message = "no two texts are identical after normalisation"
    else:
        message = "no two files are byte-identical"
    return Finding(check="exact_duplicates", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=flagged.astype(float),
                   summary={"groups": len(exact_groups), "samples": int(flagged.sum()), "redundant": redundant},
                   evidence={"groups": lists[:cap], "groups_total": len(exact_groups)}, details=details)


def _near_finding(
    ids: np.ndarray, groups: Groups, links: Links, near_group: np.ndarray, best: np.ndarray,
    closest_bits: np.ndarray | None, scale: float | None, cap: int, params: DuplicateParams, is_text: np.ndarray,
) -> Finding:
    n = len(ids)
    chosen = np.flatnonzero(near_group)
    lists = groups.id_lists(chosen)
    details = groups.member_details(chosen, lists)
    flagged = groups.flags(chosen)
    for row in np.flatnonzero(flagged):
        extra = details[str(ids[row])]
        extra["similarity"] = round(float(best[row]), 6)
        if closest_bits is not None and closest_bits[row] < 64:
            extra["phash_bits"] = int(closest_bits[row])
        extra.update(links.sample(row))
    redundant = int(flagged.sum()) - int(chosen.size)
    severity = severity_from_share(redundant / max(n, 1), low=_ANY, medium=params.near_medium_share,
                                   high=params.near_high_share)
    texts_flagged = bool((flagged & is_text).any())
    pictures_flagged = bool((flagged & ~is_text).any())
    if chosen.size and texts_flagged and not pictures_flagged:
        message = (f"{int(flagged.sum())} texts form {chosen.size} group(s) of near-identical texts (case, "
                   f"punctuation, whitespace or a word changed); {redundant} are redundant")
    elif chosen.size and texts_flagged:
        message = (f"{int(flagged.sum())} samples form {chosen.size} group(s) of near-identical pictures (resized, "
                   "re-compressed, slightly cropped or edited copies) or texts (case, punctuation, whitespace or a "
                   f"word changed); {redundant} are redundant")
    elif chosen.size:
        message = (f"{int(flagged.sum())} samples form {chosen.size} group(s) of near-identical pictures "
                   f"(resized, re-compressed, slightly cropped or edited copies); {redundant} are redundant")
    elif is_text.all():
        message = "no near-identical texts found"
    else:
        message = "no near-identical pictures found"
    summary: dict[str, Any] = {"groups": int(chosen.size), "samples": int(flagged.sum()), "redundant": redundant}
    if scale is not None:
        summary["distance_scale"] = round(scale, 6)
        summary["rule"] = _rule_text(scale, params)
    if is_text.any():
        summary["text_rule"] = (f"texts: equal after normalising case, punctuation and whitespace (exact), or "
                                f">= {params.text_jaccard} Jaccard of character {params.text_shingle_size}-grams "
                                f"and cosine similarity >= {params.text_min_similarity}")
    evidence = _evidence(lists, chosen, cap)
    evidence["pairs"] = links.in_groups(groups, chosen[:cap])
    evidence["pairs_by_rule"] = links.near_counts()
    return Finding(check="near_duplicates", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=np.where(flagged, best, 0.0), summary=summary, evidence=evidence, details=details)


def _rule_text(scale: float, p: DuplicateParams) -> str:
    """The near-duplicate rules in one line, with this run's thresholds."""
    return (f"cosine distance <= {p.alone_ratio} x {scale:.4f}; or phash <= {p.phash_confirm_bits} bits "
            f"and <= {p.phash_confirm_ratio} x scale; or <= {p.distinct_ratio} x scale and at most "
            f"{p.distinct_gap} x the distance to any other neighbour (the last two unless registered "
            f"thumbnails differ by more than {p.veto_above}); or registered thumbnails within "
            f"{p.registered_max} and {p.registered_gap} x their distance to other neighbours, or within "
            f"{p.registered_loose} and {p.registered_loose_gap} x (both up to {p.registered_ratio} x scale), "
            f"or within {p.registered_tight} and {p.registered_tight_gap} x up to {p.registered_wide_ratio} "
            f"x scale; or within {p.structure_max} and {p.structure_gap} x (up to {p.registered_ratio} x "
            f"scale) with at most {p.structure_max_share} of the registration residual surviving a blur; "
            f"or, looked at again at the images' own size, at most {p.second_look_gap} x the "
            f"thumbnails' distance to the closest other pair")


def _groups_with_several(groups: Groups, codes: np.ndarray) -> np.ndarray:
    """Groups whose members carry two or more different known codes."""
    if groups.count == 0:
        return np.empty(0, dtype=np.int64)
    member_rows = np.flatnonzero((groups.group_of >= 0) & (codes >= 0))
    pairs = np.unique(np.stack([groups.group_of[member_rows], codes[member_rows]], axis=1), axis=0)
    distinct = np.bincount(pairs[:, 0], minlength=groups.count) if pairs.size else np.zeros(groups.count, int)
    return np.flatnonzero(distinct >= 2)


class _Spanning:
    """Duplicate groups whose members carry two or more different known values of one column (split or label)."""

    def __init__(self, ids: np.ndarray, groups: Groups, links: Links, values: Any, name: str, field: str,
                 best: np.ndarray, cap: int) -> None:
        n = len(ids)
        self.codes, self.names = encode_values(values, name=name, n=n)
        self.chosen = _groups_with_several(groups, self.codes)
        lists = groups.id_lists(self.chosen)
        self.details = groups.member_details(self.chosen, lists)
        self.flagged = groups.flags(self.chosen)
        self.evidence = _evidence(lists, self.chosen, cap)
        self.scores = np.where(self.flagged, best, 0.0)
        self.member_values: list[dict[str, Any]] = []
        for g in self.chosen:
            listed = {str(ids[r]): self.value(r) for r in groups.members[g][:groups.max_listed]}
            self.member_values.append(listed)
            for row in groups.members[g]:
                self.details[str(ids[row])].update({field: self.value(row), f"member_{field}s": listed,
                                                    "similarity": round(float(best[row]), 6), **links.sample(row)})

    def value(self, row: int) -> Any:
        return self.names[self.codes[row]] if self.codes[row] >= 0 else None


def _leakage_finding(ids: np.ndarray, groups: Groups, links: Links, splits: Any, best: np.ndarray,
                     cap: int) -> Finding:
    n = len(ids)
    if splits is None:
        return Finding(check="split_leakage", severity="none", message="no split information: leakage not checked",
                       sample_ids=ids, flagged=np.zeros(n, bool), scores=np.zeros(n), summary={"groups": 0})
    spanning = _Spanning(ids, groups, links, splits, "splits", "split", best, cap)
    split_pairs: dict[str, int] = {}
    group_splits = []
    for g in spanning.chosen:
        present = sorted({str(spanning.names[c]) for c in spanning.codes[groups.members[g]] if c >= 0})
        key = "~".join(present)
        split_pairs[key] = split_pairs.get(key, 0) + 1
        group_splits.append(present)
        for row in groups.members[g]:
            spanning.details[str(ids[row])]["splits"] = present
    count = int(spanning.flagged.sum())
    if spanning.chosen.size:
        message = (f"{spanning.chosen.size} group(s) of identical or near-identical samples span several splits "
                   f"({count} samples): evaluation on these copies measures memory, not generalisation; "
                   "keep each group in one split")
    else:
        message = "no duplicate crosses a split boundary"
    spanning.evidence["group_splits"] = group_splits[:cap]
    return Finding(check="split_leakage", severity="high" if spanning.chosen.size else "none", message=message,
                   sample_ids=ids, flagged=spanning.flagged, scores=spanning.scores,
                   summary={"groups": int(spanning.chosen.size), "samples": count, "by_splits": split_pairs},
                   evidence=spanning.evidence, details=spanning.details)


def _conflict_finding(ids: np.ndarray, groups: Groups, links: Links, labels: Any, best: np.ndarray, cap: int,
                      params: DuplicateParams) -> Finding:
    n = len(ids)
    if labels is None:
        return Finding(check="conflicting_duplicates", severity="none",
                       message="no labels: conflicting duplicates not checked",
                       sample_ids=ids, flagged=np.zeros(n, bool), scores=np.zeros(n), summary={"groups": 0})
    spanning = _Spanning(ids, groups, links, labels, "labels", "label", best, cap)
    count = int(spanning.flagged.sum())
    severity = "none" if not spanning.chosen.size else severity_from_share(
        count / max(n, 1), low=0.0, medium=params.conflict_medium_share, high=params.conflict_high_share)
    if spanning.chosen.size:
        message = (f"{spanning.chosen.size} group(s) of identical or near-identical samples carry different labels "
                   f"({count} samples): at most one label per group can be right")
    else:
        message = "duplicates agree on their labels"
    return Finding(check="conflicting_duplicates", severity=severity, message=message, sample_ids=ids,
                   flagged=spanning.flagged, scores=spanning.scores,
                   summary={"groups": int(spanning.chosen.size), "samples": count},
                   evidence=spanning.evidence, details=spanning.details)
