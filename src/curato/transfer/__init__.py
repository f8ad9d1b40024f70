"""Transferability: which frozen backbone fits this labelled task, scored without fine-tuning.

``logme_score`` (LogME evidence), ``knn_accuracy`` and ``linear_probe_accuracy`` (probes), and
``rank_embedders`` / ``rank_agreement`` over several feature sets are pure functions over arrays;
``curato.commands.transfer.run_transfer`` is the workspace shell behind ``curato transfer``.
"""

from curato.models.probes import ProbeAccuracy, knn_accuracy, linear_probe_accuracy
from curato.transfer.logme import LogMEFit, logme_fit, logme_score
from curato.transfer.rank import rank_agreement, rank_embedders

__all__ = [
    "LogMEFit",
    "ProbeAccuracy",
    "knn_accuracy",
    "linear_probe_accuracy",
    "logme_fit",
    "logme_score",
    "rank_agreement",
    "rank_embedders",
]
