"""InstanceTracker: association by projection with a depth test, creation, safe merging, bounds;
and tracking measured on synthetic scenes with exact and SAM-like (gt_noisy) masks."""
import numpy as np
import pytest

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.mask_postprocess import FrameMasks
from camfusion_ros.core.tracking import InstanceTracker, TrackerConfig
from camfusion_ros.eval.tracking import ERROR_KINDS, load_tracking_scene, run_tracking, score_tracker, segmenter_for

H, W = 60, 80
K = np.array([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]])


def frame(depth, tx=0.0, stamp=0):
    T = np.eye(4)
    T[0, 3] = tx
    return RGBDFrame(stamp, np.full((H, W, 3), 128, np.uint8), depth.astype(np.float32), K, T)


def scene_depth(box_cols=(30, 50), box_depth=1.5, wall_depth=3.0):
    """A wall at 3 m with a box in front of it over a band of columns."""
    d = np.full((H, W), wall_depth, np.float32)
    d[20:40, box_cols[0]:box_cols[1]] = box_depth
    return d


def fm(masks) -> FrameMasks:
    """Disjoint masks as the post-processing hands them to the tracker."""
    masks = np.asarray(masks, bool)
    label = np.full(masks.shape[1:], -1, np.int32)
    for k, m in enumerate(masks):
        label[m] = k
    return FrameMasks(label, masks, np.ones(len(masks)), len(masks))


def masks_of(depth, box_depth=1.5):
    box = np.isclose(depth, box_depth)
    return fm([~box, box])


def cfg(**kw):
    base = dict(voxel_size=0.02, pixel_stride=1, track_min_points=10, new_min_points=10, mask_erosion_px=1)
    base.update(kw)
    return TrackerConfig(**base)


def test_same_objects_seen_again_keep_their_ids():
    tr = InstanceTracker(cfg())
    d = scene_depth()
    r1 = tr.update(frame(d), masks_of(d))
    assert sorted(o.created for o in r1.observations) == [True, True]
    ids1 = {o.instance_id for o in r1.observations}
    # the camera moves 5 cm to the right: the box appears 2 px further left at 1.5 m
    d2 = scene_depth(box_cols=(28, 48))
    r2 = tr.update(frame(d2, tx=0.05, stamp=1), masks_of(d2))
    assert {o.instance_id for o in r2.observations} == ids1
    assert not any(o.created for o in r2.observations)
    assert len(tr.instances) == 2


def test_unmatched_mask_creates_a_new_instance():
    tr = InstanceTracker(cfg())
    d = scene_depth()
    tr.update(frame(d), fm(masks_of(d).masks[:1]))   # only the wall is segmented
    r = tr.update(frame(d, stamp=1), masks_of(d))  # now the box too
    created = [o for o in r.observations if o.created]
    assert len(created) == 1 and created[0].mask[30, 40]
    assert len(tr.instances) == 2


def test_depth_test_stops_occluded_points_from_voting():
    tr = InstanceTracker(cfg())
    far = np.full((H, W), 3.0, np.float32)
    tr.update(frame(far), fm(np.ones((1, H, W), bool)))   # a wall instance
    # an object appears in front of the wall, covering its middle: the wall
    # points behind it project into the object's mask but fail the depth test
    d = scene_depth(box_cols=(10, 70))
    box = np.isclose(d, 1.5)
    r = tr.update(frame(d, stamp=1), fm(box[None]))
    assert len(r.observations) == 1 and r.observations[0].created


def halves_then_whole(tr, gate=None, keyframes=2):
    d = scene_depth(box_cols=(20, 60))
    box = np.isclose(d, 1.5)
    left, right = box.copy(), box.copy()
    left[:, 40:] = False
    right[:, :40] = False
    r1 = tr.update(frame(d), fm([left, right]))
    assert len(tr.instances) == 2
    return r1, [tr.update(frame(d, stamp=1 + k), fm(box[None]), merge_gate=gate) for k in range(keyframes)]


def test_pieces_of_one_object_merge_after_repeated_evidence_not_on_one_mask():
    tr = InstanceTracker(cfg(merge_min_keyframes=2))
    n_before = len(tr.keys)
    r1, (r2, r3) = halves_then_whole(tr)
    assert not r2.merged                                       # one mask over both once: not enough
    assert len(r3.merged) == 1 and len(tr.instances) == 1
    gone, kept = r3.merged[0]
    assert {gone, kept} == {o.instance_id for o in r1.observations}
    assert len(tr.keys) >= n_before and set(np.unique(tr.owner)) == {kept}
    assert [o.instance_id for o in r3.observations] == [kept]


def test_merge_waits_for_the_gate_and_obeys_its_no():
    asked = []
    tr = InstanceTracker(cfg(merge_min_keyframes=1))
    halves_then_whole(tr, gate=lambda a, b: asked.append((a, b)) or None, keyframes=3)
    assert len(tr.instances) == 2 and len(asked) == 3          # undecidable: asked again each keyframe
    tr = InstanceTracker(cfg(merge_min_keyframes=1))
    halves_then_whole(tr, gate=lambda a, b: False, keyframes=3)
    assert len(tr.instances) == 2
    tr = InstanceTracker(cfg(merge_min_keyframes=1))
    halves_then_whole(tr, gate=lambda a, b: True, keyframes=1)
    assert len(tr.instances) == 1


def test_coarse_mask_over_two_objects_at_different_depths_makes_two_instances():
    d = scene_depth(box_cols=(10, 30))
    d[20:40, 30:50] = 2.2                                    # a second object behind, touching in the image
    both = (d < 2.9)
    near, far = np.isclose(d, 1.5), np.isclose(d, 2.2)
    tr = InstanceTracker(cfg())
    r = tr.update(frame(d), fm([~both, both]))                # first sight through a coarse mask
    assert len(tr.instances) == 3 and len(r.observations) == 3
    for k, coarse in enumerate([False, False, True, False]):  # joined again in some keyframes only
        r = tr.update(frame(d, stamp=1 + k), fm([~both, both] if coarse else [~both, near, far]))
        assert not r.merged
    assert len(tr.instances) == 3
    # a segmenter that always joins them persuades the tracker only if the descriptors agree
    tr = InstanceTracker(cfg())
    for k in range(4):
        tr.update(frame(d, stamp=k), fm([~both, both]), merge_gate=lambda a, b: False)
    assert len(tr.instances) == 3


def test_a_border_that_spills_onto_the_wall_behind_adds_no_wall_points():
    d = scene_depth()
    box = np.isclose(d, 1.5)
    spill = np.zeros_like(box)
    spill[18:42, 28:52] = True                               # 2 px too wide on every side
    tr = InstanceTracker(cfg(mask_erosion_px=2))
    r = tr.update(frame(d), fm([spill]))
    assert len(r.observations) == 1
    z = tr.points[:, 2]
    assert len(z) and np.allclose(z, 1.5, atol=0.02)          # no point at the wall's 3 m


def test_every_map_point_has_one_owner():
    d = scene_depth()
    tr = InstanceTracker(cfg())
    tr.update(frame(d), masks_of(d))
    # the same pixels under one mask, then under another: owned points never change hands
    owner_before = dict(zip(tr.keys.tolist(), tr.owner.tolist()))
    tr.update(frame(d, stamp=1), fm(np.ones((1, H, W), bool)))
    assert len(np.unique(tr.keys)) == len(tr.keys)
    for k, o in zip(tr.keys.tolist(), tr.owner.tolist()):
        assert owner_before.get(k, o) == o


def test_masks_that_take_the_same_instance_are_ored():
    tr = InstanceTracker(cfg())
    d = scene_depth(box_cols=(20, 60))
    box = np.isclose(d, 1.5)
    tr.update(frame(d), fm(box[None]))
    top, bottom = box.copy(), box.copy()
    top[30:] = False
    bottom[:30] = False
    r = tr.update(frame(d, stamp=1), fm([top, bottom]))
    assert len(r.observations) == 1
    assert np.array_equal(r.observations[0].mask, box)


def test_tiny_unmatched_mask_is_dropped():
    tr = InstanceTracker(cfg(new_min_points=50))
    d = scene_depth()
    m = np.zeros((1, H, W), bool)
    m[0, 0:3, 0:3] = True
    r = tr.update(frame(d), fm(m))
    assert r.dropped == {"too_few_points": 1} and not tr.instances


def test_points_are_voxelised_and_capped():
    tr = InstanceTracker(cfg(voxel_size=0.5, max_points_per_instance=10))
    d = np.full((H, W), 2.0, np.float32)
    tr.update(frame(d), fm(np.ones((1, H, W), bool)))
    assert len(tr.instances) == 1
    assert 0 < len(tr.points) <= 10
    keys = np.floor(tr.points / 0.5).astype(int)
    assert len(np.unique(keys, axis=0)) == len(keys)          # one point per voxel
    # seeing the same surface again adds nothing
    n = len(tr.points)
    tr.update(frame(d, stamp=1), fm(np.ones((1, H, W), bool)))
    assert len(tr.points) == n


def test_restore_rebuilds_instances_from_a_point_cloud():
    tr = InstanceTracker(cfg())
    d = scene_depth()
    tr.update(frame(d, stamp=5), masks_of(d))
    pts, cols, inst = tr.point_cloud()
    tr2 = InstanceTracker(cfg())
    tr2.restore(pts, cols, inst, {i: (5, 5) for i in tr.instances} | {99: (1, 2)})
    assert set(tr2.instances) == set(tr.instances) | {99}
    a, b = tr.instance_points(), tr2.instance_points()
    for i in tr.instances:
        assert np.array_equal(np.sort(a[i], axis=0), np.sort(b[i], axis=0))
    assert len(b[99]) == 0 and tr2.next_id == 100


# -- tracking on synthetic scenes: exact masks (the ceiling) and SAM-like masks -----------------------------

ONE_ERROR = [k for k in ERROR_KINDS if k not in ("exact", "default")]


@pytest.fixture(scope="module")
def scenes12(tmp_path_factory):
    """Two 12-object synthetic scenes (the issue's acceptance setting), with their seen GT points."""
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return {seed: load_tracking_scene(generate(tmp_path_factory.mktemp(f"scene12_{seed}") / "scene",
                                               SynthConfig(seed=seed, objects=12)))
            for seed in (0, 1)}


def track_scene(scene, kind: str, seed: int):
    tr = run_tracking(scene.frames, segmenter_for(kind, seed), TrackerConfig())[0]
    assert len(np.unique(tr.keys)) == len(tr.keys)           # one owner per map point
    s = score_tracker(tr, scene)
    print(kind, s.as_dict())
    return s


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_masks_recover_every_object(scenes12, seed):
    s = track_scene(scenes12[seed], "exact", seed)
    assert s.gt_objects == 12 and s.recall == 1.0
    assert s.fragment_rate <= 0.1 and s.spurious_rate <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sam_like_masks_at_default_strength(scenes12, seed):
    """Issue 12 acceptance: recall >= 0.9, fragments <= 10 %, spurious <= 10 % with every error on."""
    s = track_scene(scenes12[seed], "default", seed)
    assert s.recall >= 0.9 and s.fragment_rate <= 0.1 and s.spurious_rate <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ONE_ERROR)
def test_each_error_kind_alone(scenes12, kind):
    s = track_scene(scenes12[0], kind, seed=0)
    assert s.recall >= 0.9 and s.fragment_rate <= 0.1 and s.spurious_rate <= 0.1
