"""An audit's results on disk: Parquet shards, the manifest, and resuming (docs/audit.md#store).

``OUT/manifest.json`` records the model file's sha256, the dataset listing's fingerprint, the
options, the seeds and the versions; it is written once, atomically, before the first shard.
``OUT/shards/shard-AAAAAAAA-BBBBBBBB.parquet`` holds the rows of images [A, B) (image ids in
the sorted dataset); shard ranges are fixed by the shard size in the manifest. Each shard is
written atomically (:func:`camonnx.writer.write_file`), so a shard file that exists is
complete, and writing a shard again replaces it with the same rows: writes are idempotent,
whichever worker (or retry) produced them.

Resuming: a run on an ``OUT`` that holds a manifest checks that the model and every option are
the same (the versions may differ) and skips the images of the shards already there; a
different model or option is refused (pick a new ``--out``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from camonnx.errors import InputError
from camonnx.writer import check_writable, make_folder, write_file, write_text

MANIFEST = "manifest.json"
SHARDS = "shards"
_SHARD = re.compile(r"^shard-(\d{8})-(\d{8})\.parquet$")
#: Manifest keys that a resumed run may change (everything else must match).
UNCHECKED = ("versions", "created", "run")
#: The row key: exactly one row per key in a finished audit.
KEY = ("image_id", "method", "layer_index", "metric", "trial")


def shard_ranges(images: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) image-id ranges of ``size`` images (the last one shorter)."""
    return [(start, min(start + size, images)) for start in range(0, images, size)]


def shard_name(start: int, stop: int) -> str:
    return f"shard-{start:08d}-{stop:08d}.parquet"


class Store:
    """The run folder ``out``: its manifest and its shards."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = check_writable(out, folder=True)
        self.shards = self.out / SHARDS

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    def open(self, manifest: dict) -> set[tuple[int, int]]:
        """Write ``manifest`` on a fresh folder, or check it against the one there; returns the
        image ranges of the complete shards (to skip)."""
        manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples → lists)
        if self.manifest_path.exists():
            self._check(self.read_manifest(), manifest)
        else:
            make_folder(self.out)
            write_text(self.manifest_path, json.dumps(manifest, indent=1))
        make_folder(self.shards)
        for stale in self.shards.glob(".shard-*"):  # a temporary file of a killed process
            stale.unlink(missing_ok=True)
        return self.completed()

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read {self.manifest_path} ({exc}): it is not an audit "
                             "folder camonnx can resume. Pick a new --out.") from None

    def _check(self, old: dict, new: dict) -> None:
        changed = sorted(_differences({k: v for k, v in old.items() if k not in UNCHECKED},
                                      {k: v for k, v in new.items() if k not in UNCHECKED}))
        if changed:
            shown = ", ".join(changed[:6]) + (", …" if len(changed) > 6 else "")
            raise InputError(f"{self.out} holds an audit of a different model, dataset or "
                             f"options (changed: {shown}), so it cannot be resumed. Pick a new "
                             f"--out (or delete {self.out} to start again).")

    def completed(self) -> set[tuple[int, int]]:
        """Image ranges of the shards on disk whose Parquet footer reads (complete files)."""
        import pyarrow.parquet as pq

        done = set()
        if not self.shards.is_dir():
            return done
        for path in self.shards.iterdir():
            match = _SHARD.match(path.name)
            if match is None:
                continue
            try:
                pq.read_metadata(path)
            except Exception:  # unreadable: written again
                continue
            done.add((int(match.group(1)), int(match.group(2))))
        return done

    def write(self, start: int, stop: int, table) -> Path:
        """Write the rows of images [start, stop) atomically (replacing the same shard)."""
        import pyarrow.parquet as pq

        return write_file(self.shards / shard_name(start, stop),
                          lambda tmp: pq.write_table(table, tmp))

    def read(self, ranges: set[tuple[int, int]] | None = None):
        """Every row of the shards (of ``ranges`` when given), sorted by :data:`KEY`; columns
        missing from a shard (another metric's components) are null."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        chosen = sorted(self.completed() if ranges is None else ranges)
        tables = [pq.read_table(self.shards / shard_name(*r)) for r in chosen]
        if not tables:
            return None
        table = pa.concat_tables(tables, promote_options="default")
        return table.sort_by([(k, "ascending") for k in KEY])


def _differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                out.append(name)
            else:
                out += _differences(old[key], new[key], name + ".")
        return out
    return [] if old == new else [prefix.rstrip(".") or "manifest"]
