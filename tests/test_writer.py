"""The one writer: nothing half-written, nothing left behind, clear errors for unwritable paths."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from camonnx import graph as graph_module
from camonnx.errors import InputError
from camonnx.graph import load_graph
from camonnx.runtime import OrtRuntime
from camonnx.writer import (check_writable, make_folder, publish, replace_folder, staging_folder,
                            write_file, write_text)


def test_write_file_is_all_or_nothing(tmp_path):
    target = tmp_path / "out" / "result.csv"
    write_text(target, "old\n")

    def fails(temporary: Path) -> None:
        temporary.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_file(target, fails)
    assert target.read_text() == "old\n"  # the old file survives a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.csv"]  # no temp left


def test_write_file_keeps_the_suffix_and_gives_usual_permissions(tmp_path):
    seen = []
    target = write_file(tmp_path / "movie.mp4", lambda temporary: (seen.append(temporary.suffix),
                                                                  temporary.write_bytes(b"x")))
    assert seen == [".mp4"] and target.read_bytes() == b"x"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_staging_folder_is_removed_however_the_block_ends(tmp_path):
    with pytest.raises(ValueError):
        with staging_folder(tmp_path) as staging:
            (staging / "a.png").write_bytes(b"1")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    with staging_folder(tmp_path / "new") as staging:
        (staging / "a.png").write_bytes(b"1")
        publish(staging, tmp_path / "new", ["a.png"])
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.png"]


def test_replace_folder_swaps_an_existing_folder(tmp_path):
    target = tmp_path / "frames"
    target.mkdir()
    (target / "frame_000.png").write_bytes(b"old")
    with staging_folder(tmp_path) as staging:
        new = staging / "frames"
        new.mkdir()
        (new / "frame_000.png").write_bytes(b"new")
        replace_folder(new, target)
    assert (target / "frame_000.png").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="locked.*not writable"):
            check_writable(locked / "sub" / "x.csv")
        with pytest.raises(InputError, match="locked"):
            write_text(locked / "x.csv", "x")
    finally:
        locked.chmod(0o700)


def test_paths_of_the_wrong_sort_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "x.csv")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(tmp_path / "file", folder=True)
    with pytest.raises(InputError, match="a folder of that name exists"):
        check_writable(tmp_path, folder=False)
    with pytest.raises(InputError, match="Cannot create the folder"):
        make_folder(tmp_path / "file" / "sub")


def test_large_model_copy_for_onnx_runtime_is_deleted(resnet18_onnx, tmp_path, monkeypatch):
    """Over the protobuf limit ONNX Runtime opens a temporary copy with external data; it must
    not outlive the session's creation (it used to stay behind on every load)."""
    graph = load_graph(resnet18_onnx)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(graph_module, "_PROTO_LIMIT", 0)
    runtime = OrtRuntime(graph)
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert runtime.run(x, [graph.logits])[graph.logits].shape == (1, 1000)
    assert list(tmp_path.iterdir()) == []
