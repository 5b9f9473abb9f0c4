"""All-or-nothing file writes that survive ``SIGKILL``: the package's one atomic writer.

:func:`atomic_write` lets a writer fill a temporary file beside the target and renames it onto
the target (``os.replace``), so a reader sees the old file or the new one, never half of one.
The temporary name ``.{name}.{pid}@{host}.{token}.partial{suffix}`` records its writer: a
process killed mid-write (no ``finally`` runs after ``SIGKILL``) leaves it behind, and the next
write of the same target on the same host removes every such file whose process is gone, so a
killed-and-rerun command leaves no temporary files. Temporaries of live processes (concurrent
writers of a shared summary) and of other hosts (a shared file system) are never touched.
"""
import glob
import os
import pathlib
import re
import secrets
import socket

PARTIAL = ".partial"
"""Marker in every temporary name (``.{name}.*.partial*``)."""


def _suffix(name):
    """The extension a writer may insist on (``.weights.h5`` for Keras weights, ``.keras``)."""
    return ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path):
    """Delete the temporaries of ``path`` left on this host by processes that no longer run.

    Returns:
        The removed paths (list of ``pathlib.Path``).
    """
    path = pathlib.Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)@{re.escape(socket.gethostname())}"
                         rf"\.[0-9a-f]+{re.escape(PARTIAL)}")
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{PARTIAL}*"):
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(path, write):
    """Call ``write(tmp)`` for a temporary path beside ``path``, then rename it to ``path``.

    The temporary name ends with the target's extension (``.weights.h5``, ``.keras``, ...), so
    writers that check it (``model.save_weights``, ``model.save``) accept it. On an exception
    the temporary is removed and the target left as it was.

    Args:
        path: target file (its directory is created if missing).
        write: ``write(tmp_path: str)``, writes the complete content to ``tmp_path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / (f".{path.name}.{os.getpid()}@{socket.gethostname()}."
                         f"{secrets.token_hex(4)}{PARTIAL}{_suffix(path.name)}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically and durably (fsync before the rename)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    atomic_write(path, write)


__all__ = ["atomic_write", "atomic_write_text", "remove_stale_temporaries"]
