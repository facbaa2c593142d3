"""Service request checks: bounded sizes and map paths confined to map_root (no ROS needed)."""
import os

import pytest

from camfusion_ros.nodes.requests import (MAX_TERM_CHARS, MAX_TEXT_CHARS, MAX_TOP_K, MAX_VOCABULARY, RequestError,
                                          check_text, check_top_k, check_vocabulary, confined_path, map_root)


def test_sizes_are_bounded():
    assert check_top_k(0) == 0 and check_top_k(MAX_TOP_K) == MAX_TOP_K
    with pytest.raises(RequestError, match="top_k"):
        check_top_k(MAX_TOP_K + 1)
    assert check_vocabulary(["chair"] * MAX_VOCABULARY)
    with pytest.raises(RequestError, match="terms"):
        check_vocabulary(["chair"] * (MAX_VOCABULARY + 1))
    with pytest.raises(RequestError, match="term 1"):
        check_vocabulary(["chair", "x" * (MAX_TERM_CHARS + 1)])
    with pytest.raises(RequestError, match="empty"):
        check_vocabulary(["chair", "  "])
    assert check_text("a chair") == "a chair"
    for bad in ("", "   ", "y" * (MAX_TEXT_CHARS + 1)):
        with pytest.raises(RequestError):
            check_text(bad)


def test_map_root_defaults():
    assert map_root("/srv/maps", "/auto") == map_root("/srv/maps", "")
    assert str(map_root("", "/auto")) == "/auto"
    assert map_root("", "") == map_root("~/.ros/camfusion_maps", "")
    assert "~" not in str(map_root("", ""))


def test_paths_inside_the_root_are_accepted(tmp_path):
    root = tmp_path / "maps"
    root.mkdir()
    assert confined_path("run1", root) == root.resolve() / "run1"
    assert confined_path(str(root / "a" / "b"), root) == root.resolve() / "a" / "b"
    assert confined_path("a/../b", root) == root.resolve() / "b"


@pytest.mark.parametrize("path", ["/etc", "..", "../outside", "a/../../outside", "/", "", "x" * 5000, "a\0b"])
def test_escapes_are_refused(tmp_path, path):
    root = tmp_path / "maps"
    root.mkdir()
    with pytest.raises(RequestError):
        confined_path(path, root)


def test_symlinks_that_leave_the_root_are_refused(tmp_path):
    root = tmp_path / "maps"
    root.mkdir()
    (tmp_path / "home").mkdir()
    os.symlink(tmp_path / "home", root / "escape")
    with pytest.raises(RequestError, match="outside"):
        confined_path("escape", root)
    with pytest.raises(RequestError, match="outside"):
        confined_path("escape/deeper", root)
    os.symlink(root / "inside_target", root / "inner")
    assert confined_path("inner", root) == root.resolve() / "inside_target"
