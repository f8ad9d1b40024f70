"""Duplicates: byte-identical files, near-identical pictures, copies across splits, copies with different labels.

:func:`duplicate_findings` is a pure function over aligned arrays and returns four Findings:
``exact_duplicates`` (same content hash), ``near_duplicates`` (the same picture stored differently: resized,
re-compressed, slightly cropped or shifted, brightened), ``split_leakage`` (a group of either kind with members
in two or more splits; high severity) and ``conflicting_duplicates`` (a group whose members carry two or more
labels; unlabeled samples are ignored). Groups are the connected components of the accepted pairs.

Near duplicates come in three steps, one module each:

* :mod:`.candidates` -- pairs from the embedding kNN graph (cosine distance ``d``) and the dataset's scale
  ``D``, the median distance to the nearest neighbour: every embedding cut is relative to ``D``;
* :mod:`.registration` -- where the scan stored thumbnails, each sample's nearest embedding and thumbnail
  neighbours registered onto each other (``t = 1 - correlation`` after the best scale and shift);
* :mod:`.rules` -- one named function per acceptance rule: ``embedding_alone``, ``phash_confirmed``,
  ``distinct_pair`` (the last two vetoed when the registered pixels disagree), ``registered``,
  ``registered_tight``, ``registered_loose``, ``fine_residual`` and ``second_look`` (registered again at the
  images' own size, where the caller passes ``second_look``). ``fixed_threshold`` replaces them all when a
  cosine ``near_threshold`` is given; without embeddings ``phash_only`` decides.

Every threshold is a field of :class:`DuplicateParams` (defaults = the tuned values). Each accepted pair
records the rule that accepted it and the distances that rule read, in the flagged samples' details and the
finding's evidence. On Fashion-MNIST with 600 planted copies (``benchmarks/near_duplicates.py``, 11 seeds):
recall 0.968-0.992 at pair precision 0.956-0.966, 195-200 of 200 planted train/test leaks reported. How the
rules were tuned: docs/benchmarks.md, "Near duplicates: how the rules were tuned".
"""

from __future__ import annotations

from curato.checks.duplicates.findings import DEFAULT_K, MAX_EVIDENCE_GROUPS, duplicate_findings
from curato.checks.duplicates.params import DuplicateParams
from curato.checks.duplicates.registration import second_look_side
from curato.checks.duplicates.rules import RULES

__all__ = ["DEFAULT_K", "MAX_EVIDENCE_GROUPS", "RULES", "DuplicateParams", "duplicate_findings", "second_look_side"]
