"""ex4d.io.outdir: location checks, the mark, the lock, temp cleanup, --overwrite removal, undo on failure."""

from __future__ import annotations

import json
import os

import pytest

from ex4d.errors import Ex4dError
from ex4d.io.outdir import OutputFolder, check_output_location, remove_temp_files

OURS = {"color.mp4", "output.mp4", "color", "config.json", ".ex4d"}


def _open(path, record=None, **kw):
    return OutputFolder(path, record or {"a": 1}, ours=OURS, **kw)


def test_locations(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(Ex4dError, match="is a file, not a folder"):
        check_output_location(tmp_path / "file")
    with pytest.raises(Ex4dError, match="so no folder can be made under it"):
        check_output_location(tmp_path / "file" / "a" / "b")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    with pytest.raises(Ex4dError, match="broken symbolic link"):
        check_output_location(tmp_path / "dangling")
    check_output_location(tmp_path / "new" / "deeper")  # fine: made when the run starts
    assert not (tmp_path / "new").exists()


def test_mark_lock_record_and_release(tmp_path):
    out = tmp_path / "a" / "b"
    with _open(out) as f:
        assert (out / ".ex4d").is_dir() and f.created == [tmp_path / "a", out]
        assert (out / ".ex4d" / "lock").read_text().strip() == str(os.getpid())
        assert json.loads((out / ".ex4d" / "run.json").read_text()) == {"a": 1}
        with pytest.raises(Ex4dError, match=rf"folder busy \(pid {os.getpid()}\)"):
            _open(out).open()
        (out / "color.mp4").write_bytes(b"video")
    with _open(out):  # released; same record: fine
        pass
    with pytest.raises(Ex4dError, match="other parameters \\(changed: a, b\\)"):
        with _open(out, {"b": 2}):
            pass
    assert (out / "color.mp4").exists(), "a refused run removed outputs"


def test_foreign_folder_refused_untouched_unless_overwrite(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(Ex4dError, match="holds no ex4d run"):
        with _open(tmp_path):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"], "refused folder was marked"
    with _open(tmp_path, overwrite=True) as f:
        f.remove_outputs(keep=set())
    assert (tmp_path / "mine.txt").exists()


def test_failed_run_undoes_what_it_made(tmp_path):
    out = tmp_path / "x" / "y"
    with pytest.raises(ValueError):
        with _open(out):
            raise ValueError("bad input")
    assert not (tmp_path / "x").exists()
    existing = tmp_path / "empty"
    existing.mkdir()
    with pytest.raises(ValueError):
        with _open(existing):
            raise ValueError("bad input")
    assert existing.is_dir() and not any(existing.iterdir()), "a failed run left its mark in an empty folder"
    with pytest.raises(ValueError):  # a failure after an output was written keeps it (the next run resumes)
        with _open(existing):
            (existing / "color.mp4").write_bytes(b"v")
            raise ValueError("later")
    assert (existing / "color.mp4").exists() and (existing / ".ex4d" / "run.json").exists()


def test_temp_files_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "o"
    (out / ".ex4d" / "view").mkdir(parents=True)
    (out / "color").mkdir()
    (out / "elsewhere").mkdir()
    temps = [out / ".color.mp4.tmp-ab12.mp4", out / ".ex4d" / ".render.npz.tmp-x.npz",
             out / ".ex4d" / "view" / ".scene.bin.gz.tmp-y.gz", out / "color" / ".00001.png.tmp-z.png"]
    keep = [out / "elsewhere" / ".a.tmp-b", out / "notes.tmp-1", out / "color.mp4"]
    for p in temps + keep:
        p.write_bytes(b"")
    with _open(out) as f:
        assert sorted(f.removed_temp) == sorted(temps)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in temps)
    assert remove_temp_files(out) == []


def test_remove_outputs(tmp_path):
    out = tmp_path / "o"
    with _open(out) as f:
        for name in ("color.mp4", "output.mp4", "config.json", "notes.txt"):
            (out / name).write_text("x")
        (out / "color").mkdir()
        (out / "color" / "00000.png").write_text("x")
        for name in ("stages.json", "depth.npz", "lifted.npz"):
            (out / ".ex4d" / name).write_text("x")
        (out / ".ex4d" / "view").mkdir()
        removed = f.remove_outputs(keep={"color.mp4", "config.json"}, state_keep={"stages.json", "depth.npz"})
    assert sorted(removed) == [".ex4d/lifted.npz", ".ex4d/view", "color", "output.mp4"]
    assert sorted(p.name for p in out.iterdir()) == [".ex4d", "color.mp4", "config.json", "notes.txt"]
    assert sorted(p.name for p in (out / ".ex4d").iterdir()) == ["depth.npz", "lock", "run.json", "stages.json"]


def test_an_unreadable_previous_record_counts_as_another_run(tmp_path):
    out = tmp_path / "o"
    (out / ".ex4d").mkdir(parents=True)
    (out / ".ex4d" / "run.json").write_text("[" * 100)
    with pytest.raises(Ex4dError, match="other parameters"):
        with _open(out):
            pass
