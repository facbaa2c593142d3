"""core/ply.py: binary PLY with arbitrary per-vertex properties, dtype-preserving, clear errors."""
import numpy as np
import pytest
from plyfile import PlyData

from camfusion_ros.core.ply import PlyError, read_ply, write_ply


def _fields(n=50):
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=n).astype(np.float32), "y": rng.normal(size=n).astype(np.float32),
        "z": rng.normal(size=n).astype(np.float32),
        "red": rng.integers(0, 256, n).astype(np.uint8), "green": rng.integers(0, 256, n).astype(np.uint8),
        "blue": rng.integers(0, 256, n).astype(np.uint8),
        "instance": rng.integers(-1, 9, n).astype(np.int32), "label": rng.integers(-1, 20, n).astype(np.int32),
        "score": rng.random(n).astype(np.float64),
    }


def test_roundtrip_preserves_names_values_and_dtypes(tmp_path):
    f = _fields()
    path = write_ply(tmp_path / "a" / "p.ply", f)
    back = read_ply(path)
    assert list(back) == list(f)
    for k in f:
        assert back[k].dtype == f[k].dtype, k
        np.testing.assert_array_equal(back[k], f[k])
    ply = PlyData.read(str(path))  # a standard binary PLY other tools read
    assert not ply.text and ply["vertex"].count == 50


def test_faces_roundtrip_and_quads(tmp_path):
    f = {"x": np.zeros(4, np.float32), "y": np.array([0, 1, 1, 0], np.float32), "z": np.array([0, 0, 1, 1], np.float32)}
    write_ply(tmp_path / "t.ply", f, faces=np.array([[0, 1, 2], [0, 2, 3]]))
    np.testing.assert_array_equal(read_ply(tmp_path / "t.ply", faces=True)["faces"], [[0, 1, 2], [0, 2, 3]])
    write_ply(tmp_path / "q.ply", f, faces=np.array([[0, 1, 2, 3]]))
    assert read_ply(tmp_path / "q.ply", faces=True)["faces"].shape == (1, 4)
    with pytest.raises(PlyError, match="no 'face'"):
        read_ply(write_ply(tmp_path / "v.ply", f), faces=True)


def test_bad_inputs_raise_plyerror(tmp_path):
    with pytest.raises(PlyError, match="not found"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"this is not a ply file\n" * 10)
    with pytest.raises(PlyError, match="cannot read PLY"):
        read_ply(tmp_path / "junk.ply")
    path = write_ply(tmp_path / "t.ply", _fields(1000))
    data = path.read_bytes()
    (tmp_path / "trunc.ply").write_bytes(data[: len(data) // 2])
    with pytest.raises(PlyError):
        read_ply(tmp_path / "trunc.ply")
    with pytest.raises(PlyError, match="one length"):
        write_ply(tmp_path / "bad.ply", {"x": np.zeros(3), "y": np.zeros(4)})
    with pytest.raises(PlyError):
        write_ply(tmp_path / "bad.ply", {})


@pytest.mark.parametrize("header, body", [
    (b"format binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\n"
     b"property float z\n", b"\0" * 120),
    (b"format ascii 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\nproperty float z\n",
     b"0 0 0\n1 1 1\n"),
    # face lists are object arrays that plyfile fills at once: 10^9 of them would take ~8 GiB
    (b"format binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
     b"element face 1000000000\nproperty list uchar int vertex_indices\n", b"\0" * 36 + b"\x03" + b"\0" * 12),
])
def test_a_header_claiming_more_rows_than_the_file_holds_is_refused_before_allocating(tmp_path, header, body,
                                                                                         peak_rss_growth_mib):
    p = tmp_path / "lie.ply"
    p.write_bytes(b"ply\n" + header + b"end_header\n" + body)
    with pytest.raises(PlyError, match="the header claims 1000000000(000)? '(vertex|face)' rows .* truncated or corrupt"):
        read_ply(p, faces=b"face" in header)
    assert peak_rss_growth_mib() < 100


def test_the_size_check_accepts_exact_files(tmp_path):
    """Binary and ASCII files exactly as long as their headers say still load (the check is a lower bound)."""
    f = _fields(7)
    write_ply(tmp_path / "b.ply", f)
    assert len(read_ply(tmp_path / "b.ply")["x"]) == 7
    p = tmp_path / "a.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty uchar red\nend_header\n"
                  b"0 1\n2 3\n")
    assert read_ply(p)["red"].tolist() == [1, 3]
