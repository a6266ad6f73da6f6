"""One run owns its output folder.

Every command that writes a folder of results (training, evaluation, re-ID
augmentation, the DeepFashion converter) holds :class:`OutputLock` on it while it
works: a second run into the same folder is refused, naming the process that holds it
and its command, instead of interleaving its files with the first's. A lock left by a
process that no longer exists (killed) is taken over.
"""
import errno
import json
import os
import socket
import sys
import time
from typing import Optional

LOCK_NAME = ".deformgan.lock"


class OutputBusy(RuntimeError):
    """Another live run is writing to the folder."""


class OutputNotWritable(ValueError):
    """An output path that cannot be written (a file where a folder belongs, read-only)."""


class OutputExists(FileExistsError):
    """A fresh run into a folder holding an earlier run's results, not asked for."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """Hold ``folder`` (created if needed) for this process while the ``with`` block
    runs: the lock file records the pid, host, start time and command line.

    Example:
        >>> import tempfile
        >>> from deformgan.outputs import OutputLock, OutputBusy
        >>> folder = tempfile.mkdtemp()
        >>> with OutputLock(folder, "train"):
        ...     try:
        ...         OutputLock(folder, "evaluate").acquire()
        ...     except OutputBusy as exc:
        ...         print("refused")
        refused
    """

    def __init__(self, folder: str, command: str, name: str = LOCK_NAME):
        self.folder, self.command = folder, command
        self.path = os.path.join(folder, name)
        self.held = False

    def acquire(self) -> "OutputLock":
        check_writable(self.folder, "--out", is_folder=True)  # a file there, or read-only: said first
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "argv": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("pid") == os.getpid():
                    raise OutputBusy(f"{self.folder} is already held by this process ({owner.get('command')})")
                if owner is not None and _alive(int(owner.get("pid", -1))) and \
                        owner.get("host", socket.gethostname()) == socket.gethostname():
                    raise OutputBusy(
                        f"another run is writing to {self.folder}: pid {owner['pid']} ({owner.get('command')}: "
                        f"{' '.join(owner.get('argv', []))}), since {owner.get('started')}; wait for it, or choose "
                        "another output folder")
                try:  # the owner is gone (killed): take the lock over
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            self.held = True
            return self
        raise OutputBusy(f"could not take the lock {self.path}: other runs keep taking it")

    def _owner(self) -> Optional[dict]:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None  # unreadable or half-written: treated as left behind

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable(path: str, what: str = "--out", is_folder: bool = False) -> None:
    """Fail before any work when ``path`` (a file to write; with ``is_folder``, a folder
    to write into) cannot be written; the folder is created. The error names ``path``."""
    folder = path if is_folder or os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".deformgan-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except FileExistsError as exc:  # the folder to write into is a file
        raise OutputNotWritable(f"{what} {path}: cannot write there ({exc.filename} is a file, not a folder)") from exc
    except OSError as exc:
        raise OutputNotWritable(f"{what} {path}: cannot write there ({exc.strerror or exc})") from exc


def file_lock(path: str, command: str) -> OutputLock:
    """The lock of a single output file (generate's image, animate's video): a hidden
    ``.NAME.deformgan.lock`` beside it, so that two runs writing the same file at once
    are refused as two runs into one folder are."""
    folder = os.path.dirname(os.path.abspath(path))
    return OutputLock(folder, command, name=f".{os.path.basename(path)}{LOCK_NAME}")


def write_error_message(path: str, exc: BaseException) -> str:
    """What went wrong writing ``path``, in words: a full disk says so."""
    no = getattr(exc, "errno", None)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        import shutil
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if no == errno.ENOSPC or (free is not None and free < 1 << 20):
        return f"cannot write {path}: the disk is full ({free if free is not None else '?'} bytes free in {folder})"
    reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
              if str(exc).strip() else type(exc).__name__)
    return f"cannot write {path}: {reason}"
