"""Evaluation shared by every classifier the project trains (fastText, CLIP filter network, NSFW head)."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    truth = truth.astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_split(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC from the scores of the positives and of the negatives."""
    positives, negatives = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if not len(positives) or not len(negatives):
        raise ValueError("AUC needs at least one positive and one negative")
    truth = np.concatenate([np.ones(len(positives), bool), np.zeros(len(negatives), bool)])
    return roc_auc(np.concatenate([positives, negatives]), truth)
