"""The mapping node's services (labels, text queries, save / load confined to map_root) and its autosave.

Any participant of the ROS graph can call these: requests are bounded (nodes/requests.py), paths confined, and a
failure is an answer with ``success: false``, never an exception in the executor."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from camfusion_ros.core.output_folder import claim_outputs
from camfusion_ros.nodes.conversions import instance_to_msg
from camfusion_ros.nodes.requests import check_text, check_top_k, check_vocabulary, confined_path, map_root

AUTOSAVE_LINK = "map"          # <autosave_folder>/map -> snapshots/<n>, swapped atomically
SNAPSHOT_NAME = re.compile(r"\d{20}")   # snapshots/<time_ns, 20 digits>: the only names autosave prunes


def save_map_atomic(pipeline, folder: str | os.PathLike, keep: int = 2) -> Path:
    """Write the map to a fresh folder, then swap the ``<folder>/map`` link to it in one rename.

    A kill at any moment leaves ``<folder>/map`` pointing at a complete map.
    """
    from camfusion_ros.core.map_store import save_map

    folder = claim_outputs(folder, "autosave", ["snapshots", AUTOSAVE_LINK])
    snaps = folder / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}"
    tmp = snaps / f".{name}.partial"
    save_map(tmp, pipeline.snapshot())
    final = snaps / name
    os.replace(tmp, final)
    link_tmp = folder / f".{AUTOSAVE_LINK}.{name}.tmp"
    os.symlink(Path("snapshots") / name, link_tmp)
    os.replace(link_tmp, folder / AUTOSAVE_LINK)
    # Only snapshots this function wrote are pruned (their names are stamps); anything else there is left alone.
    ours = sorted(p for p in snaps.iterdir() if p.name != name and SNAPSHOT_NAME.fullmatch(p.name) and p.is_dir()
                  and not p.is_symlink())
    for old in ours[:-keep or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def answer(handler):
    """A service callback that reports any failure in the response instead of raising.

    ``handler(req, resp)`` fills ``resp`` and returns the success message.
    """
    def serve(req, resp):
        try:
            resp.success, resp.message = True, handler(req, resp)
        except Exception as exc:  # a bad request must not take the node down
            resp.success, resp.message = False, f"{type(exc).__name__}: {exc}"
        return resp

    return serve


class NodeServices:
    """Mixin of MappingNode (see mapping_node.py for the state it uses)."""

    def _autosave(self) -> None:
        try:
            with self._plock, self._save_lock:
                frames = int(self.pipeline.frames_seen)
                if self._stop or frames == self.last_autosave.get("frames"):
                    return
                n = len(self.pipeline.tracker.instances)
                path = save_map_atomic(self.pipeline, self.ncfg.autosave_folder)
            self.last_autosave = {"frames": frames, "instances": n, "path": str(path), "unix_ns": time.time_ns()}
        except Exception as exc:
            self._drop_log("autosave", exc)

    def _reload(self) -> bool:
        link = Path(self.ncfg.autosave_folder) / AUTOSAVE_LINK if self.ncfg.autosave_folder else None
        if link is None or not link.exists():
            self.get_logger().info(f"reload_on_start: no saved map at {link}; starting empty")
            return False
        from camfusion_ros.core.map_store import load_map

        with self._plock:
            self.pipeline.load_snapshot(load_map(link))
        self.get_logger().info(f"reloaded {len(self.pipeline.tracker.instances)} instances "
                               f"({self.pipeline.frames_seen} frames) from {link.resolve()}")
        return True

    def _srv_query_labels(self, req, resp):
        vocabulary = check_vocabulary(list(req.vocabulary))
        top_k = max(1, check_top_k(req.top_k))
        vocab = self.pipeline.vocabulary_for(vocabulary)        # text encoding: outside the map's lock
        with self._plock:
            records = self.pipeline.label_with(vocab, top_k)
            model = self.pipeline.model_name
        resp.instances = [instance_to_msg(r, model, self.cfg.fusion.method) for r in records]
        return f"{len(records)} instances"

    def _srv_query_text(self, req, resp):
        text, top_k = check_text(req.text), check_top_k(req.top_k)
        embedding = self.pipeline.encode_query(text) if text.strip() else None   # outside the map's lock
        with self._plock:
            ranked = self.pipeline.query_text(text, top_k, embedding)
            by_id = {r.id: r for r in self.pipeline.instances()}
            model = self.pipeline.model_name
        resp.ids = [int(i) for i, _ in ranked]
        resp.scores = [float(s) for _, s in ranked]
        resp.instances = [instance_to_msg(by_id[i], model, self.cfg.fusion.method) for i, _ in ranked if i in by_id]
        return f"{len(ranked)} instances ranked"

    def _map_root(self) -> Path:
        return map_root(self.ncfg.map_root, self.ncfg.autosave_folder)

    def _srv_save_map(self, req, resp):
        path = confined_path(req.path, self._map_root()) if req.path else None
        with self._plock, self._save_lock:
            if self._stop:
                raise RuntimeError("the node is shutting down")
            if path is not None:
                from camfusion_ros.core.map_store import save_map

                path.parent.mkdir(parents=True, exist_ok=True)
                return str(save_map(path, self.pipeline.snapshot()))
            if self.ncfg.autosave_folder:
                return str(save_map_atomic(self.pipeline, self.ncfg.autosave_folder))
        raise ValueError("no path given and no autosave_folder configured")

    def _srv_load_map(self, req, resp):
        from camfusion_ros.core.map_store import load_map

        if req.path:
            path = confined_path(req.path, self._map_root())
        elif self.ncfg.autosave_folder:
            path = Path(self.ncfg.autosave_folder) / AUTOSAVE_LINK
        else:
            raise ValueError("no path given and no autosave_folder configured")
        snap = load_map(path)
        with self._plock:
            self.pipeline.load_snapshot(snap)
        self._fuse_and_publish(force=True)
        return f"loaded {len(snap.ids)} instances from {path}"

    def _srv_status(self, req, resp):
        resp.success, resp.message = True, json.dumps(self.status())
        return resp
