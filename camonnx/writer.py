"""Every file camonnx writes goes through here, so that no output is ever half-written.

A file is written to a temporary sibling (same folder, so the final ``os.replace`` is an atomic
rename on the same file system) and moved onto its name only once it is complete; a failure
leaves neither the temporary file nor a truncated target. Folders of several files are filled in
a staging folder beside the target first. Before any long work, :func:`check_writable` says
whether a path can be written at all, naming the folder at fault and the fix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from camonnx.errors import InputError

FIX = "Choose a writable output location."


def check_writable(target: str | os.PathLike, folder: bool = False) -> Path:
    """Raise :class:`InputError` unless ``target`` can be created or replaced.

    The nearest existing ancestor of the target's folder (or of the target itself, for a
    ``folder``) must be a writable folder; an existing target must be of the right sort.
    Returns the target as a :class:`Path`."""
    target = Path(target)
    if folder and target.exists() and not target.is_dir():
        raise InputError(f"Cannot write into {target}: it is a file, not a folder. {FIX}")
    if not folder and target.is_dir():
        raise InputError(f"Cannot write {target}: a folder of that name exists. {FIX}")
    ancestor = target if folder else target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"Cannot write {target}: {ancestor} is a file, not a folder. {FIX}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {target}: the folder {ancestor} is not writable. {FIX}")
    return target


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) or raise :class:`InputError` saying why."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the folder {folder}: {exc.strerror or exc}. {FIX}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"The folder {folder} is not writable. {FIX}")
    return folder


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_file(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)`` and move the result onto ``path``; returns ``path``.

    The temporary file keeps the target's suffix (writers that pick a format by the extension,
    such as ffmpeg or matplotlib, see the right one) and gets the usual permissions (0666 less the
    umask). On any error nothing is left at or beside ``path``."""
    target = Path(path)
    make_folder(target.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix,
                                    dir=target.parent)
    except OSError as exc:
        raise InputError(f"Cannot write {target}: {exc.strerror or exc}. {FIX}") from None
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except OSError as exc:
        raise InputError(f"Cannot write {target}: {exc.strerror or exc}. {FIX}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_file(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def staging_folder(beside: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden folder inside ``beside`` (created if needed), removed with whatever is
    left in it when the block ends, however it ends."""
    parent = make_folder(beside)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".camonnx-", dir=parent))
    except OSError as exc:
        raise InputError(f"Cannot write into {parent}: {exc.strerror or exc}. {FIX}") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, folder: Path, names: Sequence[str]) -> None:
    """Move the finished files ``names`` from ``staging`` into ``folder``, in that order (put
    the file that makes the set usable, e.g. a model beside its data, last)."""
    try:
        for name in names:
            os.replace(staging / name, folder / name)
    except OSError as exc:
        raise InputError(f"Cannot write {folder / name}: {exc.strerror or exc}. {FIX}") from None


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder ``staging`` at ``target``. An existing ``target`` is moved aside
    first and deleted only once the new one is in place (restored if the move fails)."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside / target.name, target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
