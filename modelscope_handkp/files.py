"""Safe file output shared by the CLI and the video writer: hidden partial names next to a target,
the folders a path still needs, and a real writability check."""
from __future__ import annotations

import os
import tempfile


def partial_path(path: str) -> str:
    """A hidden temporary name next to ``path`` (same folder and extension), moved into place when done."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f'.{stem}.partial-{os.getpid()}{ext}')


def missing_folders(path: str) -> tuple[list[str], str]:
    """(the folders of ``path`` that do not exist yet, innermost first; its first existing ancestor)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.exists(current):
        missing.append(current)
        current = os.path.dirname(current)
    return missing, current


def check_writable_folder(folder: str, target: str) -> None:
    """Raise PermissionError when no file can be created in ``folder`` (read-only mount, permissions,
    immutable folder): checked by creating and removing a hidden file, which is what counts (also as root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix='.handkp-write-check.', dir=folder)
    except OSError as e:
        raise PermissionError(f'cannot write {target}: the folder {folder} is not writable ({e.strerror}); pass a '
                              'path in a folder you can write to.') from e
    os.close(fd)
    os.remove(probe)
