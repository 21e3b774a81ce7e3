"""Atomic file replacement (``searchagent/files.py``): whole or old, never partial."""

from __future__ import annotations

import os

import pytest

from searchagent.files import write_atomically


@pytest.mark.parametrize("durable", [False, True])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, durable):
    path = tmp_path / "deep" / "report.md"
    write_atomically(path, lambda tmp: open(tmp, "w").write("first"), durable=durable)

    def fail(tmp: str) -> None:
        open(tmp, "w").write("half of the sec")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail, durable=durable)
    assert path.read_text() == "first"
    assert os.listdir(path.parent) == ["report.md"]
    write_atomically(path, lambda tmp: open(tmp, "w").write("second"), durable=durable)
    assert path.read_text() == "second" and os.listdir(path.parent) == ["report.md"]


def test_the_file_gets_the_umasks_permissions(tmp_path):
    umask = os.umask(0o027)
    try:
        write_atomically(tmp_path / "policy.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(umask)
    assert (tmp_path / "policy.json").stat().st_mode & 0o777 == 0o640


def test_a_folder_is_replaceable_when_missing_empty_or_marked(tmp_path):
    from searchagent.files import replaceable

    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    assert [replaceable(tmp_path / name, "manifest.json")
            for name in ("missing", "empty", "index", "mine", "file")] == [
        True, True, True, False, False]
