"""The mapping pipeline: frames in, labelled 3D instances out (no ROS).

Driven the same way by the offline runner, the ROS node, the evaluation and
the tests. Per frame: segment, track, then compute descriptors only for the
masks whose view enters an instance's best-K bank (one extractor call per
frame for all of them). Fusion runs on demand (``fuse_pending``) over every
instance whose views changed, as one batch.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from camfusion_ros.core.config import MappingConfig, to_dict
from camfusion_ros.core.frames import FrameError, RGBDFrame
from camfusion_ros.core.fusion import FusionError, make_fuser, normalize
from camfusion_ros.core.map_store import MapSnapshot, load_map, save_map
from camfusion_ros.core.segmentation import make_segmenter
from camfusion_ros.core.tracking import InstanceTracker
from camfusion_ros.core.view_bank import View, ViewBank, mask_bbox, visibility_score

log = logging.getLogger(__name__)
STAGES = ("segmentation", "tracking", "descriptors", "fusion")


@dataclass
class InstanceRecord:
    id: int
    label: str
    score: float
    top_labels: list[str]
    top_scores: list[float]
    embedding: np.ndarray
    num_views: int
    num_points: int
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    first_seen_ns: int
    last_seen_ns: int


@dataclass
class _InstanceState:
    bank: ViewBank
    fused: Optional[np.ndarray] = None
    dirty: bool = False
    label: str = ""
    score: float = 0.0
    top_labels: list[str] = field(default_factory=list)
    top_scores: list[float] = field(default_factory=list)


class MappingPipeline:
    def __init__(self, cfg: MappingConfig | None = None, *, segmenter=None, vlm=None, extractor=None,
                 fuser=None, vocabulary=None):
        self.cfg = cfg or MappingConfig()
        self.tracker = InstanceTracker(self.cfg.tracker)
        self._segmenter, self._vlm, self._extractor = segmenter, vlm, extractor
        self._fuser, self._vocabulary = fuser, vocabulary
        self.state: dict[int, _InstanceState] = {}
        self.frames_seen = 0
        self.last_stamp_ns: Optional[int] = None
        self.stage_seconds = {s: 0.0 for s in STAGES}
        self.mask_counts: collections.Counter = collections.Counter()   # proposed / tracked masks
        self.masks_dropped: collections.Counter = collections.Counter()  # per reason, segmentation + tracking
        self._removed: list[int] = []

    # -- lazily built components (the model loads only when first needed) --
    @property
    def segmenter(self):
        if self._segmenter is None:
            self._segmenter = make_segmenter(self.cfg.segmenter)
        return self._segmenter

    @property
    def vlm(self):
        if self._vlm is None:
            from camfusion_ros.core.vlm import load_vlm

            self._vlm = load_vlm(self.cfg.vlm)
        return self._vlm

    @property
    def extractor(self):
        if self._extractor is None:
            from camfusion_ros.core.descriptors import make_extractor

            self._extractor = make_extractor(self.cfg.descriptor, self.vlm)
        return self._extractor

    @property
    def fuser(self):
        if self._fuser is None:
            f = self.cfg.fusion
            kwargs = {"checkpoint": f.checkpoint, "device": f.device} if f.method == "camfusion" else {}
            self._fuser = make_fuser(f.method, **kwargs)
        return self._fuser

    @property
    def vocabulary(self):
        if self._vocabulary is None:
            from camfusion_ros.core.vocabulary import Vocabulary

            self._vocabulary = Vocabulary.from_config(self.cfg.vocabulary, self.vlm)
        return self._vocabulary

    def check_weights(self) -> None:
        """Fail now, with one line naming the missing file and how to get it, not at the first frame."""
        from camfusion_ros.core.segmentation import resolve_sam2_checkpoint
        from camfusion_ros.core.vlm import resolve_weights

        if self._vlm is None:
            resolve_weights(self.cfg.vlm)
        if self._segmenter is None and self.cfg.segmenter.name == "sam2":
            resolve_sam2_checkpoint(self.cfg.segmenter)
        if self._fuser is None and self.cfg.fusion.method == "camfusion":
            from camfusion_ros.core.camfusion.checkpoint import read_config

            if not self.cfg.fusion.checkpoint:
                raise FusionError("fusion 'camfusion' needs fusion.checkpoint: a checkpoint folder from camfusion-train")
            read_config(self.cfg.fusion.checkpoint)

    def set_fuser(self, fuser) -> None:
        """Swap the fusion (e.g. to compare fusions on one map); every instance is re-fused."""
        self._fuser = fuser
        for st in self.state.values():
            st.dirty = len(st.bank) > 0

    # -- per frame -----------------------------------------------------------
    def process(self, frame: RGBDFrame) -> dict[str, float]:
        """Add one frame; returns the seconds each stage took. Raises FrameError for a bad frame."""
        frame.validate()
        index = self.frames_seen
        self.frames_seen += 1
        self.last_stamp_ns = frame.stamp_ns
        times = {s: 0.0 for s in STAGES}
        if self.cfg.segment_every > 1 and index % self.cfg.segment_every:
            return times
        t0 = time.perf_counter()
        masks = self.segmenter.segment(frame)
        t1 = time.perf_counter()
        result = self.tracker.update(frame, masks, merge_gate=self._merge_gate)
        t2 = time.perf_counter()
        # new objects, not updates in place: the node's status thread reads them without the pipeline lock
        self.mask_counts = self.mask_counts + collections.Counter(
            proposed=masks.proposals, tracked=len(masks) - result.dropped_masks)
        self.masks_dropped = self.masks_dropped + masks.dropped + result.dropped
        for gone, kept in result.merged:
            self._merge_state(gone, kept)
        candidates = []
        for k, obs in enumerate(result.observations):
            st = self.state.setdefault(obs.instance_id, _InstanceState(ViewBank(self.cfg.views.max_views)))
            score = visibility_score(obs.mask, frame.depth, self.cfg.views.border_margin)
            if score > 0 and st.bank.accepts(score):
                candidates.append((k, obs, score))
        if candidates:
            # every mask of the frame goes to the extractor: TextRegion's global-patch removal and HOV-SG's
            # softmax depend on the frame's whole mask set, as in camfusion-precompute
            desc, keep = self.extractor.extract(frame.rgb, np.stack([o.mask for o in result.observations]))
            for k, obs, score in candidates:
                if not keep[k]:
                    continue
                view = View(score, desc[k].astype(np.float32), frame.stamp_ns, index, mask_bbox(obs.mask))
                if self.state[obs.instance_id].bank.add(view):
                    self.state[obs.instance_id].dirty = True
        t3 = time.perf_counter()
        times.update(segmentation=t1 - t0, tracking=t2 - t1, descriptors=t3 - t2)
        if self.cfg.fuse_every > 0 and self.frames_seen % self.cfg.fuse_every == 0:
            times["fusion"] = self._timed_fuse()
        for k, v in times.items():
            self.stage_seconds[k] += v
        return times

    def _merge_gate(self, a: int, b: int) -> Optional[bool]:
        """Tracker merges need the instances' descriptors to agree (OVO's cosine test); None = no views yet."""
        ea, eb = self._embedding(a), self._embedding(b)
        if ea is None or eb is None:
            return None
        return float(ea @ eb) >= self.cfg.tracker.merge_min_cosine

    def _embedding(self, iid: int) -> Optional[np.ndarray]:
        st = self.state.get(iid)
        if st is None or len(st.bank) == 0:
            return None
        return st.fused if st.fused is not None and not st.dirty else normalize(st.bank.descriptors().mean(0))

    def mask_summary(self) -> dict:
        """Masks proposed, tracked and dropped per reason (for summaries and diagnostics)."""
        counts, dropped = self.mask_counts, self.masks_dropped
        return {"proposed": int(counts["proposed"]), "tracked": int(counts["tracked"]),
                "dropped": {k: int(v) for k, v in sorted(dropped.items())}}

    def _merge_state(self, gone: int, kept: int) -> None:
        a = self.state.setdefault(kept, _InstanceState(ViewBank(self.cfg.views.max_views)))
        b = self.state.pop(gone, None)
        if b is not None and a.bank.merge(b.bank):
            a.dirty = True
        self._removed.append(gone)

    # -- fusion and labels ---------------------------------------------------
    def _timed_fuse(self) -> float:
        t = time.perf_counter()
        self.fuse_pending()
        return time.perf_counter() - t

    def fuse_pending(self) -> list[int]:
        """Re-fuse every instance whose views changed, in one batch; returns their ids."""
        ids = [i for i, st in self.state.items() if st.dirty and len(st.bank)]
        if not ids:
            return []
        K = max(len(self.state[i].bank) for i in ids)
        D = len(self.state[ids[0]].bank.views[0].descriptor)
        views = np.zeros((len(ids), K, D), np.float32)
        valid = np.zeros((len(ids), K), bool)
        for b, i in enumerate(ids):
            d = self.state[i].bank.descriptors()
            views[b, : len(d)] = d
            valid[b, : len(d)] = True
        fused = self.fuser.fuse(views, valid)
        for i, f in zip(ids, fused):
            self.state[i].fused = f.astype(np.float32)
            self.state[i].dirty = False
        self._label(ids)
        return ids

    def _label(self, ids: list[int]) -> None:
        emb = np.stack([self.state[i].fused for i in ids])
        idx, scores = self.vocabulary.classify(emb, self.cfg.top_k)
        names = self.vocabulary.names
        for i, row_idx, row_sc in zip(ids, idx, scores):
            st = self.state[i]
            st.top_labels = [names[j] for j in row_idx]
            st.top_scores = [float(s) for s in row_sc]
            st.score = st.top_scores[0] if st.top_scores else 0.0
            st.label = st.top_labels[0] if st.top_labels and st.score >= self.cfg.label_threshold else ""

    def vocabulary_for(self, names: Optional[list[str]] = None):
        """The map's own vocabulary, or ``names`` encoded now with the map's model and templates.

        Encoding reads no map state, so a server may run it outside the lock that guards the map (it is the slow part
        of a query with a caller's vocabulary)."""
        if not names:
            return self.vocabulary
        from camfusion_ros.core.vocabulary import Vocabulary

        return Vocabulary(list(names), self.vlm, self.cfg.vocabulary.templates, self.cfg.vocabulary.cache_dir)

    def label_with(self, vocabulary=None, top_k: int = 1) -> list[InstanceRecord]:
        """Instances labelled against another vocabulary (names, or one from vocabulary_for) without changing the
        map's own labels."""
        self.fuse_pending()
        records = self.instances()
        if not records:
            return records
        vocab = vocabulary if hasattr(vocabulary, "classify") else self.vocabulary_for(vocabulary)
        idx, scores = vocab.classify(np.stack([r.embedding for r in records]), max(1, top_k))
        for r, ri, rs in zip(records, idx, scores):
            r.top_labels = [vocab.names[j] for j in ri]
            r.top_scores = [float(s) for s in rs]
            r.score = r.top_scores[0]
            r.label = r.top_labels[0] if r.score >= self.cfg.label_threshold else ""
        return records

    def encode_query(self, text: str) -> np.ndarray:
        """The unit text embedding of a query (reads no map state: may run outside the map's lock)."""
        return normalize(self.vlm.encode_text([text])[0])

    def query_text(self, text: str, top_k: int = 0, embedding: Optional[np.ndarray] = None) -> list[tuple[int, float]]:
        """Instance ids ranked by cosine similarity to a free-text query (``embedding``: its encode_query)."""
        self.fuse_pending()
        ids = [i for i, st in self.state.items() if st.fused is not None]
        if not ids or not text.strip():
            return []
        t = embedding if embedding is not None else self.encode_query(text)
        sims = np.stack([self.state[i].fused for i in ids]) @ t
        order = np.argsort(-sims, kind="stable")
        if top_k:
            order = order[:top_k]
        return [(ids[o], float(sims[o])) for o in order]

    # -- views of the map ----------------------------------------------------
    def instances(self) -> list[InstanceRecord]:
        """Every fused instance with its geometry (unfused ones are not reported)."""
        out = []
        points = self.tracker.instance_points()
        for iid in sorted(self.tracker.instances):
            st = self.state.get(iid)
            inst = self.tracker.instances[iid]
            p = points[iid]
            if st is None or st.fused is None or len(p) == 0:
                continue
            out.append(InstanceRecord(
                id=iid, label=st.label, score=st.score, top_labels=list(st.top_labels),
                top_scores=list(st.top_scores), embedding=st.fused, num_views=len(st.bank),
                num_points=len(p), centroid=p.mean(0), bbox_min=p.min(0), bbox_max=p.max(0),
                first_seen_ns=inst.first_seen_ns, last_seen_ns=inst.last_seen_ns))
        return out

    def removed_ids(self) -> list[int]:
        """Instances merged away since the last call (for marker deletions)."""
        out, self._removed = self._removed, []
        return out

    @property
    def model_name(self) -> str:
        return f"{self.cfg.vlm.model_name}/{self.cfg.vlm.pretrained}"

    def snapshot(self) -> MapSnapshot:
        self.fuse_pending()
        pts, cols, inst = self.tracker.point_cloud()
        ids = sorted(self.tracker.instances)
        K = self.cfg.views.max_views
        D = next((len(st.bank.views[0].descriptor) for st in self.state.values() if len(st.bank)), 0)
        n = len(ids)
        snap = MapSnapshot(pts, cols, inst, np.array(ids, np.int64), np.zeros((n, D), np.float32),
                           np.zeros((n, K, D), np.float32), np.zeros((n, K), bool), np.zeros((n, K), np.float32),
                           np.full((n, K), -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
        labels, scores = [], []
        for b, iid in enumerate(ids):
            t = self.tracker.instances[iid]
            snap.first_seen_ns[b], snap.last_seen_ns[b] = t.first_seen_ns, t.last_seen_ns
            st = self.state.get(iid)
            labels.append(st.label if st else "")
            scores.append(st.score if st else 0.0)
            if st is None:
                continue
            if st.fused is not None:
                snap.fused[b] = st.fused
            for k, v in enumerate(st.bank.views):
                snap.view_descriptors[b, k] = v.descriptor
                snap.view_valid[b, k] = True
                snap.view_scores[b, k] = v.score
                snap.view_frames[b, k] = v.frame_index
        snap.meta = {"model": self.cfg.vlm.model_name, "pretrained": self.cfg.vlm.pretrained,
                     "weights_are_random": bool(getattr(self._vlm, "weights_are_random", False)),
                     "fusion": self.cfg.fusion.method, "vocabulary": list(self.vocabulary.names) if n else [],
                     "labels": labels, "label_scores": scores, "frames": self.frames_seen,
                     "config": to_dict(self.cfg)}
        return snap

    def save(self, directory: str | Path) -> Path:
        return save_map(directory, self.snapshot())

    @classmethod
    def from_map(cls, directory: str | Path, cfg: MappingConfig | None = None, **components) -> "MappingPipeline":
        """A pipeline holding a saved map (re-fuse, re-label, query, or keep mapping)."""
        snap = load_map(directory)
        if cfg is None:
            from camfusion_ros.core.config import load_config

            cfg = load_config(snap.meta.get("config", {}))
        pipe = cls(cfg, **components)
        pipe.load_snapshot(snap)
        return pipe

    def load_snapshot(self, snap: MapSnapshot) -> None:
        stamps = {int(i): (int(a), int(b)) for i, a, b in zip(snap.ids, snap.first_seen_ns, snap.last_seen_ns)}
        self.tracker.restore(snap.points, snap.colors, snap.point_instance, stamps)
        self.state.clear()
        labels, scores = snap.labels, snap.label_scores
        for b, iid in enumerate(snap.ids.tolist()):
            bank = ViewBank(self.cfg.views.max_views)
            for k in np.flatnonzero(snap.view_valid[b]):
                bank.views.append(View(float(snap.view_scores[b, k]), snap.view_descriptors[b, k].copy(),
                                       0, int(snap.view_frames[b, k]), (0, 0, 0, 0)))
            fused = snap.fused[b].copy() if np.any(snap.fused[b]) else None
            st = _InstanceState(bank, fused, dirty=fused is None and len(bank) > 0)
            if b < len(labels):
                st.label, st.score = labels[b], float(scores[b])
                st.top_labels, st.top_scores = ([labels[b]], [float(scores[b])]) if labels[b] else ([], [])
            self.state[iid] = st
        self.frames_seen = int(snap.meta.get("frames", 0))
