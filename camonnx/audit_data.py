"""The dataset of an audit: which images, in which order, with which labels (docs/audit.md#data).

``DATA`` is one of

* a **folder**, searched recursively for image files (by extension); in an *ImageFolder*
  layout (every image inside a first-level sub-folder, ``DATA/class_name/…/x.jpg``) the
  first-level folder name is the image's label;
* a **glob** pattern (``photos/**/*.png``; ``**`` spans folders), without labels;
* a **CSV or Parquet file** with a ``path`` column (relative paths are relative to the file's
  folder) and an optional ``label`` column (class indices, or class names).

Images are sorted by path; an image's *id* is its position in that order, and every seed of
the audit derives from it. A label name becomes a class index by the model's class names when
every name is one of them, else by integer names (``0``, ``1``, …); otherwise the labels are
names only: the summary groups by them, but ``target="label"`` is refused.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from camonnx.errors import InputError

#: File extensions listed as images in a folder or glob (case-insensitive).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm"})


@dataclass(frozen=True)
class Dataset:
    """The listed images. ``paths``: sorted, absolute; ``labels``: class index per image (None
    where not known); ``label_names``: label per image as given (None without labels);
    ``label_source``: how names became indices ("model labels", "integer names", "names
    only") or None without labels."""

    source: str
    paths: tuple[str, ...]
    labels: tuple[int | None, ...]
    label_names: tuple[str | None, ...]
    label_source: str | None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        """Whether every image has a class index (``target="label"`` possible)."""
        return self.label_source not in (None, "names only") and None not in self.labels

    @property
    def has_labels(self) -> bool:
        """Whether images carry labels at all (indices or names): per-class tables."""
        return any(name is not None for name in self.label_names)

    def listing_sha256(self) -> str:
        """A fingerprint of the listing (paths and labels in order): a resumed run must see the
        same dataset."""
        digest = hashlib.sha256()
        for path, name in zip(self.paths, self.label_names):
            digest.update(f"{path}\t{name}\n".encode("utf-8"))
        return digest.hexdigest()


def list_dataset(data: str | os.PathLike | Sequence[str | os.PathLike],
                 class_names: Sequence[str] | None = None) -> Dataset:
    """The :class:`Dataset` of ``data``: a folder, a glob, a CSV/Parquet file, or a list of image
    paths. ``class_names``: the model's class names (output order), to map label names to
    indices."""
    if isinstance(data, (list, tuple)):
        paths = [_absolute(p) for p in data]
        return _build(f"{len(paths)} listed paths", paths, None, class_names)
    text = os.fspath(data)
    path = Path(text)
    if path.is_dir():
        return _from_folder(path, class_names)
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return _from_table(path, class_names)
    if glob.has_magic(text):
        found = [p for p in glob.glob(text, recursive=True)
                 if Path(p).suffix.lower() in IMAGE_EXTENSIONS and Path(p).is_file()]
        if not found:
            raise InputError(f"The pattern {text!r} matches no image file "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Check the pattern; "
                             "quote it so the shell does not expand it.")
        return _build(text, [_absolute(p) for p in found], None, class_names)
    if path.is_file():
        raise InputError(f"{text!r} is a file but not a dataset: give a folder of images, a glob "
                         "pattern, or a .csv/.parquet file with a 'path' column.")
    raise InputError(f"The dataset {text!r} does not exist: give a folder of images, a glob "
                     "pattern, or a .csv/.parquet file with a 'path' column.")


def _absolute(path) -> str:
    return os.path.abspath(os.fspath(path))


def _from_folder(root: Path, class_names) -> Dataset:
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise InputError(f"The folder {str(root)!r} holds no image file "
                         f"({', '.join(sorted(IMAGE_EXTENSIONS))}), searched recursively.")
    nested = all(len(p.relative_to(root).parts) >= 2 for p in files)
    names = [p.relative_to(root).parts[0] for p in files] if nested else None
    return _build(str(root), [_absolute(p) for p in files], names, class_names)


def _from_table(path: Path, class_names) -> Dataset:
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        read = lambda: pacsv.read_csv(path)  # noqa: E731
    else:
        import pyarrow.parquet as pq

        read = lambda: pq.read_table(path)  # noqa: E731
    try:
        table = read()
    except Exception as exc:  # pyarrow raises its own types for malformed files
        raise InputError(f"Cannot read the dataset table {str(path)!r}: {exc}. Give a CSV or "
                         "Parquet file with a 'path' column.") from None
    if "path" not in table.column_names:
        raise InputError(f"The dataset table {str(path)!r} has no 'path' column (columns: "
                         f"{', '.join(table.column_names)}). Name the image path column 'path'.")
    base = path.parent
    raw = table.column("path").to_pylist()
    if any(p is None or str(p).strip() == "" for p in raw):
        raise InputError(f"The dataset table {str(path)!r} has empty entries in its 'path' "
                         "column: give a path on every row.")
    paths = [_absolute(p if os.path.isabs(p) else base / p) for p in map(str, raw)]
    names = None
    if "label" in table.column_names:
        names = [None if v is None else str(v) for v in table.column("label").to_pylist()]
    if not paths:
        raise InputError(f"The dataset table {str(path)!r} has no rows.")
    return _build(str(path), paths, names, class_names)


def _build(source: str, paths: list[str], names: list[str | None] | None,
           class_names: Sequence[str] | None) -> Dataset:
    """Sort by path, refuse duplicates, and map label names to class indices."""
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    paths = [paths[i] for i in order]
    duplicated = sorted({p for a, p in zip(paths, paths[1:]) if a == p})
    if duplicated:
        raise InputError(f"The dataset lists {len(duplicated)} image(s) more than once (e.g. "
                         f"{duplicated[0]!r}): list each image once.")
    if names is None:
        return Dataset(source, tuple(paths), (None,) * len(paths), (None,) * len(paths), None)
    names = [names[i] for i in order]
    labels, how = label_indices(names, class_names)
    return Dataset(source, tuple(paths), tuple(labels), tuple(names), how)


def label_indices(names: Sequence[str | None], class_names: Sequence[str] | None
                  ) -> tuple[list[int | None], str]:
    """Class indices of label ``names``: by the model's ``class_names`` when every name is one
    of them (exactly, else ignoring case and ``_`` vs space), else by integer names; otherwise
    none ("names only")."""
    given = sorted({n for n in names if n is not None})
    if class_names:
        for key in (lambda s: s, lambda s: s.strip().lower().replace("_", " ")):
            lookup: dict[str, int] = {}
            for i, c in enumerate(class_names):
                lookup.setdefault(key(c), i)
            if given and all(key(n) in lookup for n in given):
                return [None if n is None else lookup[key(n)] for n in names], "model labels"
    if given and all(n.strip().lstrip("-").isdigit() for n in given):
        return [None if n is None else int(n) for n in names], "integer names"
    return [None] * len(names), "names only"
