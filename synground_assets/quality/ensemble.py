"""Detector ensembles: the boxes several detectors propose for one phrase, fused, and kept only where
enough detectors agree.

Fusion is weighted box fusion (WBF; Solovyev, Wang and Gabruseva, "Weighted boxes fusion",
Image and Vision Computing 2021; reference code ZFTurbo/Weighted-Boxes-Fusion@96880f3,
ensemble_boxes/ensemble_boxes_wbf.py), not NMS across detectors, because:
- the agreement rule needs clusters anyway: "which detectors proposed a box overlapping this one"
  is exactly WBF's cluster (wbf.py:207 matches each box to a fused box at IoU >= the threshold),
  while NMS keeps one detector's box and forgets who else proposed it;
- where detectors agree up to a few pixels, the score-weighted mean of their corners (wbf.py:83-96)
  is a better box than any single one; NMS would keep one detector's error in full;
- WBF's confidence rescaling (wbf.py:239: mean score x min(detectors, boxes) / detectors) ranks a
  box proposed by all detectors above one proposed by a single confident detector.

One change from WBF: a cluster takes at most one box per detector (its best-scoring one in the
region), so that `min_agreeing` counts detectors, not boxes: a detector that proposes two
overlapping boxes for a phrase must not agree with itself.

Input: the proposals of one shard, one row per (detector, phrase, box): detector, phrase_id,
item_id, x0, y0, x1, y1, score. Output: the fused boxes (the box stage's columns), the lineage of
each fused box (the proposals it fused, by detector) and a removal per box too few detectors agree on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import EnsembleSettings
from synground_assets.records.items import box_id

STAGE = "boxes"
PROPOSAL_COLUMNS = ["detector", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score"]
# `box_proposals` lineage: each fused box's proposals, one row per detector that proposed it.
LINEAGE_COLUMNS = ["box_id", "phrase_id", "item_id", "detector", "x0", "y0", "x1", "y1", "score",
                   "iou_with_fused", "agreeing", "agreed"]
FUSED_COLUMNS = ["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"]

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Cluster:
    """The proposals fused into one box: at most one per detector."""

    members: list[tuple[str, Box, float]] = field(default_factory=list)  # (detector, box, score)

    @property
    def detectors(self) -> list[str]:
        return [detector for detector, _, _ in self.members]

    def box(self) -> Box:
        """The score-weighted mean of the members' corners (a plain mean when every score is 0)."""
        weights = [max(score, 0.0) for _, _, score in self.members]
        total = sum(weights)
        if total <= 0:
            weights, total = [1.0] * len(self.members), float(len(self.members))
        return tuple(sum(w * b[k] for w, (_, b, _) in zip(weights, self.members)) / total
                     for k in range(4))  # type: ignore[return-value]

    def score(self, detectors: int) -> float:
        """WBF's 'avg' confidence with its rescaling: the mean member score x members / detectors."""
        scores = [score for _, _, score in self.members]
        return sum(scores) / len(scores) * min(detectors, len(scores)) / detectors


def cluster_phrase(proposals: list[tuple[str, Box, float]], threshold: float) -> list[Cluster]:
    """Greedy WBF clustering of one phrase's proposals, best score first (ties: input order): each
    joins the cluster whose fused box it overlaps most (IoU >= threshold) among those without a box
    of its detector yet, else starts a cluster."""
    clusters: list[Cluster] = []
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i][2])
    for index in order:
        detector, box, score = proposals[index]
        best, best_iou = None, threshold
        for cluster in clusters:
            if detector in cluster.detectors:
                continue
            overlap = iou(cluster.box(), box)
            if overlap >= best_iou:
                best, best_iou = cluster, overlap
        if best is None:
            clusters.append(Cluster([(detector, box, score)]))
        else:
            best.members.append((detector, box, score))
    return clusters


def fuse_proposals(proposals: pd.DataFrame, detectors: list[str],
                   settings: EnsembleSettings) -> tuple[pd.DataFrame, pd.DataFrame, list[Removal]]:
    """(fused boxes kept, `box_proposals` lineage of every fused box, removals). `detectors`: the
    ensemble's names, in recipe order (the denominator of the agreement and of WBF's rescaling)."""
    kept_rows, lineage_rows, removals = [], [], []
    count = len(detectors)
    for phrase, rows in proposals.groupby("phrase_id", sort=False):
        item = rows.item_id.iloc[0]
        members = [(d, (float(x0), float(y0), float(x1), float(y1)), float(s)) for d, x0, y0, x1, y1, s in
                   rows[["detector", "x0", "y0", "x1", "y1", "score"]].itertuples(index=False, name=None)]
        clusters = cluster_phrase(members, settings.iou)
        scored = sorted(((cluster.score(count), position, cluster) for position, cluster in enumerate(clusters)),
                        key=lambda entry: (-entry[0], entry[1]))
        rank = 0
        for index, (score, _, cluster) in enumerate(scored):
            fused, agreeing = cluster.box(), len(cluster.members)
            identifier = box_id(str(phrase), index)
            agreed = agreeing >= settings.min_agreeing
            for detector, box, member_score in cluster.members:
                lineage_rows.append((identifier, phrase, item, detector, *box, member_score, iou(fused, box),
                                     agreeing, agreed))
            if agreed:
                kept_rows.append((identifier, phrase, item, *fused, score, rank))
                rank += 1
            else:
                removals.append(Removal(
                    STAGE, item, "ensemble_agreement", float(agreeing), float(settings.min_agreeing), str(phrase),
                    identifier, f"proposed by {', '.join(cluster.detectors)} only: {agreeing} of {count} detectors "
                                f"at IoU >= {settings.iou}, {settings.min_agreeing} needed"))
    fused = pd.DataFrame(kept_rows, columns=FUSED_COLUMNS)
    lineage = pd.DataFrame(lineage_rows, columns=LINEAGE_COLUMNS)
    return fused, lineage, removals
