"""Identity of a study's input: a cheap stat signature and a content hash (the rsync idea).

Resuming must not re-read an archive that is already done, yet must notice a changed input. So:

* ``stat_signature`` (names, sizes, modification times; no data read) lets the driver skip a study
  whose files have not been touched since it was screened;
* ``content_sha256`` (every byte, names included) is the input hash stored with each result; the
  worker computes it while the previous study is being screened (it doubles as read-ahead, the
  files are in the page cache when the pipeline decodes them). When the stat signature changed but
  the content did not (files copied, touched), the study is still skipped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from osteoscan.batch.tasks import StudyTask
from osteoscan.errors import InputError

#: Read size for hashing (large sequential reads; 1 MiB keeps the syscall count low).
_CHUNK = 1 << 20


def input_files(task: StudyTask) -> list[Path]:
    """Every file that makes up the study's input, sorted (hidden files excluded).

    Raises:
        InputError: the input does not exist or holds no files.
    """
    if task.files:
        files = [Path(f) for f in task.files]
    else:
        root = task.path
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = []
            for dirpath, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(Path(dirpath) / n for n in names if not n.startswith("."))
        else:
            raise InputError(f"{root}: input not found (study {task.study_id}); check the path or the manifest")
    if not files:
        raise InputError(f"{task.input_path}: the folder holds no files (study {task.study_id})")
    return sorted(files)


def _relname(path: Path, task: StudyTask) -> str:
    root = task.path
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.as_posix()


def stat_signature(task: StudyTask) -> str:
    """sha256 of (relative name, size, mtime_ns) of every input file; reads no file data."""
    h = hashlib.sha256()
    for path in input_files(task):
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"{path}: cannot stat ({exc.strerror}); study {task.study_id}") from None
        h.update(f"{_relname(path, task)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"series={task.series_uid or ''}".encode())
    return h.hexdigest()


def content_sha256(task: StudyTask) -> tuple[str, int]:
    """(sha256 over relative names + bytes of every input file, total bytes read).

    The pinned series UID is part of the hash: two series of one folder are two inputs.
    """
    h = hashlib.sha256()
    total = 0
    for path in input_files(task):
        h.update(_relname(path, task).encode() + b"\0")
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
                    total += len(chunk)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror}); study {task.study_id}") from None
        h.update(b"\0")
    h.update(f"series={task.series_uid or ''}".encode())
    return h.hexdigest(), total
