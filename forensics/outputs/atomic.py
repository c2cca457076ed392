"""Outputs written whole or not at all: a killed run or a full disk never leaves a cut file, nor a new file beside
the old ones of an earlier run.

- One file (`atomic_write`): written to a hidden temp name in the same folder (`.NAME.XXXX.tmp`), flushed to disk,
  then renamed over NAME. A failure removes the temp file; NAME is the old file or the new one, never a part.
- A set of files (`staged`): every file is written into a hidden staging folder inside the output folder
  (`DIR/.forensics-XXXX/`), then, once all are written, each is renamed into DIR in a fixed order: the files not
  named in `last` first (in path order), then those of `last` in the order given. The last one is the commit
  marker: `report` renames findings.json last, `export` MANIFEST.sha256. When the marker is new, every other file
  is too; a failure before the renames removes the staging folder and leaves DIR as it was. A kill during the
  renames (a few milliseconds) can leave some new files beside the old marker, never the new marker beside old files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

STAGING_PREFIX = ".forensics-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None):
    """`open(path, mode)` that replaces `path` only when the block ends without an error."""
    path = Path(path)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())          # as an ordinary new file would be (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


@contextmanager
def staged(out: str | Path, last: Sequence[str] = ()) -> Iterator[Path]:
    """A staging folder inside `out` (created when absent) to write every output into; on success its files are
    renamed into `out` (the names of `last` last, in that order) and it is removed. On failure it is removed, and
    so is `out` when this call created it and it is still empty."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        commit(tmp, out, last)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def commit(tmp: Path, out: Path, last: Sequence[str] = ()) -> list[Path]:
    """Rename every file of `tmp` to the same relative path under `out`, `last` last; then remove `tmp`."""
    files = sorted((p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda rel: (last.index(rel) + 1 if rel in last else 0, rel))
    for rel in files:                        # refuse before renaming anything: a folder where a file goes
        dest = out / rel
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(f"{dest}: a folder is in the way of an output file")
    written = []
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dest)
        written.append(dest)
    shutil.rmtree(tmp)
    return written
