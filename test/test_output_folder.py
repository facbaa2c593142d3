"""Output folders: a tool writes beside a user's files and replaces only what the package wrote."""
import json
import os

import pytest

from camfusion_ros.core.output_folder import (RECORD, OutputFolderError, check_replaceable_folder, claim_outputs,
                                              swap_in, written_here)


def test_absent_or_empty_folder_is_claimed_and_recorded(tmp_path):
    out = claim_outputs(tmp_path / "a" / "b", "tool", ["report.md", "plots"])
    assert out.is_dir() and written_here(out) == {"report.md": "tool", "plots": "tool"}
    assert sorted(p.name for p in out.iterdir()) == [RECORD]          # the claim itself writes only the record


def test_writes_beside_a_users_files_and_refuses_the_names_they_hold(tmp_path, users_files):
    intact = users_files(tmp_path, "report.md")
    claim_outputs(tmp_path, "tool", ["metrics.json"])                    # beside the user's files: fine
    with pytest.raises(OutputFolderError, match=r"report.md already exists there and was not written by camfusion"):
        claim_outputs(tmp_path, "tool", ["metrics.json", "report.md"])
    with pytest.raises(OutputFolderError, match="sub"):
        claim_outputs(tmp_path, "tool", ["sub"])
    intact()
    assert written_here(tmp_path) == {"metrics.json": "tool"}           # a refused claim records nothing


def test_own_outputs_can_be_claimed_again(tmp_path):
    claim_outputs(tmp_path, "tool", ["report.md"])
    (tmp_path / "report.md").write_text("old report")
    claim_outputs(tmp_path, "tool", ["report.md", "new.png"])
    assert written_here(tmp_path) == {"report.md": "tool", "new.png": "tool"}


def test_a_record_the_package_did_not_write_is_not_trusted(tmp_path):
    (tmp_path / RECORD).write_text(json.dumps({"entries": {"thesis.tex": "me"}}))
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(OutputFolderError, match="was not written by camfusion_ros"):
        claim_outputs(tmp_path, "tool", ["thesis.tex"])
    (tmp_path / RECORD).write_bytes(b"\xff\xfe not json")
    with pytest.raises(OutputFolderError):
        claim_outputs(tmp_path, "tool", ["x"])
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_bad_names_and_a_file_in_place_of_the_folder(tmp_path):
    for bad in ("../x", "a/b", "", RECORD):
        with pytest.raises(ValueError):
            claim_outputs(tmp_path, "tool", [bad])
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OutputFolderError, match="not a folder"):
        claim_outputs(tmp_path / "f", "tool", ["x"])
    assert (tmp_path / "f").read_text() == "mine"


def test_check_replaceable_folder_accepts_only_its_own_layout(tmp_path, users_files):
    files, record = {"w.bin", "c.json"}, "c.json"

    def check(p):
        check_replaceable_folder(p, files, record, "format", "thing")

    check(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check(tmp_path / "empty")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "c.json").write_text(json.dumps({"format": 1}))
    check(ours)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    intact = users_files(theirs)
    with pytest.raises(OutputFolderError, match="important.txt"):
        check(theirs)
    intact()
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "c.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="c.json is not one"):
        check(fake)
    os.symlink(ours, tmp_path / "link")
    with pytest.raises(OutputFolderError, match="not a thing folder"):
        check(tmp_path / "link")


def test_swap_in_replaces_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    swap_in(tmp_path / "new", tmp_path / "t")
    assert (tmp_path / "t" / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    (tmp_path / "n2").mkdir()
    swap_in(tmp_path / "n2", tmp_path / "fresh")
    assert (tmp_path / "fresh").is_dir()
