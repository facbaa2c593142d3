"""kill -9 mid-run with autosave on: a restart with reload_on_start restores the last autosave.

Autosaves are written to a fresh folder and published by swapping a symlink
in one rename, so a kill at any moment leaves a complete map behind; at most
one autosave interval of mapping is lost. Models: GT masks, PE-Core-T with
RANDOM weights (no pretrained weights on this machine).
"""
import os
import signal

import pytest

from mapping_node_utils import start_node, wait_status, write_params
from rostest_utils import ros_env, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FRAMES = 14


@pytest.fixture(scope="module")
def crash_scene(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("crash_scene") / "scene",
                    SynthConfig(seed=2, frames=FRAMES, width=160, height=120, objects=3))


def test_kill_9_then_reload_restores_the_last_autosave(crash_scene, tmp_path):
    from camfusion_ros.core.map_store import load_map
    from camfusion_ros.nodes.mapping_node import AUTOSAVE_LINK

    env = ros_env()
    # The bag is 10 fps; at rate 0.08 a frame arrives every ~1.25 s, so the run lasts ~17 s and
    # several 1 s autosaves happen before its end, however fast the machine processes frames.
    folder = tmp_path / "autosave"
    params = write_params(tmp_path / "params.yaml", autosave_period_s=1.0, autosave_folder=str(folder),
                          reload_on_start=True)
    node = start_node(env, params)
    replay = None
    try:
        wait_status(env, node, lambda s: s["ready"], 120, "the node to load its models")
        replay = start(["-m", "camfusion_ros.nodes.replay", str(crash_scene / "bag"), "--rate", "0.08",
                        "--wait-for-subscribers", "30"], env)
        before = wait_status(env, node, lambda s: s["autosave"].get("frames", 0) >= 2 and s["frames_processed"] < FRAMES,
                             150, "an autosave in the middle of the run")
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=10)
        assert node.returncode == -signal.SIGKILL
    finally:
        if replay is not None:
            stop(replay)
        stop(node)

    link = folder / AUTOSAVE_LINK
    assert link.is_symlink() and link.resolve().is_dir()
    assert not list((folder / "snapshots").glob("*.partial")) or link.resolve().suffix != ".partial"
    saved = load_map(link)                       # complete and loadable, whatever moment the kill hit
    saved_frames = int(saved.meta["frames"])
    assert saved_frames >= before["autosave"]["frames"] >= 2
    assert saved_frames < FRAMES                 # the kill really came mid-run

    again = start_node(env, params)
    try:
        s = wait_status(env, again, lambda s: s["ready"], 120, "the restarted node")
        assert s["frames_seen"] == saved_frames
        with_views = [int(i) for i, v in zip(saved.ids, saved.view_valid) if v.any()]
        assert sorted(s["instance_ids"]) == sorted(with_views) and with_views
        # what the node had autosaved when last asked is all back (only the last interval may be lost)
        assert len(saved.ids) >= before["autosave"]["instances"] > 0
    finally:
        stop(again)


class _Snapshots:
    """What save_map_atomic needs of a pipeline: a snapshot() of the map."""

    def snapshot(self):
        from test_map_store import snapshot
        return snapshot()


def test_autosave_prunes_only_its_own_snapshots_and_never_replaces_a_users_file(tmp_path, users_files):
    from camfusion_ros.core.map_store import load_map
    from camfusion_ros.core.output_folder import OutputFolderError
    from camfusion_ros.nodes.mapping_node import AUTOSAVE_LINK, save_map_atomic

    folder = tmp_path / "autosave"
    saved = [save_map_atomic(_Snapshots(), folder, keep=2)]
    # a user then keeps their own files in the autosave folder and in its snapshots/
    intact = users_files(folder, "snapshots/notes.txt", "snapshots/12345678901234567890x/keep.txt")
    saved += [save_map_atomic(_Snapshots(), folder, keep=2) for _ in range(3)]
    intact()
    left = sorted(p.name for p in (folder / "snapshots").iterdir())
    assert left == sorted(["notes.txt", "12345678901234567890x", *(s.name for s in saved[-3:])])   # new + keep
    assert (folder / AUTOSAVE_LINK).resolve() == saved[-1] and len(load_map(folder / AUTOSAVE_LINK).ids) == 3
    other = tmp_path / "other"
    intact = users_files(other, AUTOSAVE_LINK)
    with pytest.raises(OutputFolderError, match="map already exists there"):
        save_map_atomic(_Snapshots(), other)
    intact()
