"""Output files that are complete or absent: write-then-rename for files, in place for devices.

A regular file (or a new path) is written under a temporary name beside it and renamed over it
at the end, so an interrupted or failed run leaves the previous file or a complete new one,
never half of one. A symbolic link to a regular file keeps the link: its target is replaced.

A path that exists and is not a regular file or folder (a character device such as /dev/null,
a FIFO, a socket, or a link to one) and the process's own descriptors (/dev/stdout, /dev/fd/N,
/proc/...) are written in place and never replaced: renaming over them would turn /dev/null
into a plain file and leave a pipe's reader with nothing.

Outputs that must appear together (`train` and `evaluate --out`) are written into a hidden
stage inside their folder and renamed into it at the end (`staged_folder`): there a link at one
of their names is replaced by the file, not written through.

Every write, close and rename error becomes one `OutputError` naming the output and the
system's reason; removing a temporary file never raises, so it cannot hide that first error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from maskwatch.errors import OutputError
from maskwatch.paths import broken_link

log = logging.getLogger("maskwatch")

# Errors that can only come from writing: inside `atomic_path` they are reported as the
# output's, whoever raised them.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
PROCESS_PATHS = ("/dev/fd/", "/proc/")
PROCESS_FILES = ("/dev/stdin", "/dev/stdout", "/dev/stderr")
STDOUT = Path("/dev/stdout")  # what an output named '-' writes to
COPY_CHUNK = 1 << 20  # bytes copied into a device or pipe at a time


def cannot_write(dest: Path | str, exc: OSError) -> OutputError:
    """The one-line error for a failed write of `dest`."""
    return OutputError(f"cannot write {dest}: {exc.strerror or exc}")


def writes_in_place(dest: Path | str) -> bool:
    """Whether `dest` is written where it is instead of being replaced: an existing path that
    is not a regular file or folder (after following links), or one of the process's own
    descriptors. A loop of links is an OutputError ("Too many levels of symbolic links")."""
    text = os.path.abspath(dest)
    if text.startswith(PROCESS_PATHS) or text in PROCESS_FILES:
        return True
    try:
        mode = os.stat(dest).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link loop leads nowhere: renaming over it would hide it
            raise cannot_write(dest, exc) from exc
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def file_identity(path: Path | str) -> tuple[int, int] | None:
    """(device, inode) of the regular file `path` names (through links), or None when there
    is none: how an output is known to be one of the inputs under any of its names."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def check_free_space(folder: Path, dest: Path | str) -> None:
    """Refuse to start writing into a file system with no free block at all (root may use the
    blocks reserved for it). Anything more is an estimate, left to the writes themselves."""
    try:
        fs = os.statvfs(folder)
    except OSError:
        return
    blocks = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    if blocks == 0:
        raise OutputError(f"cannot write {dest}: {os.strerror(errno.ENOSPC)}")


def make_folder(folder: Path, dest: Path | str | None = None) -> list[Path]:
    """Make `folder` (and its parents) for writing `dest` in it, or raise one clear error.
    Returns the folders it made, outermost first, for `remove_folders` after a failure."""
    if folder.exists() and not folder.is_dir():
        what = "not a folder" if dest is None else f"{folder} is not a folder"
        raise OutputError(f"cannot write {dest or folder}: {what}")
    dest = folder if dest is None else dest
    missing: list[Path] = []
    here = folder
    while not os.path.lexists(here) and here != here.parent:
        missing.insert(0, here)
        here = here.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_folders(missing)
        raise cannot_write(dest, exc) from exc
    return missing


def remove_folders(made: list[Path]) -> None:
    """Remove the folders `make_folder` made, innermost first, where they are still empty: a
    run that failed before writing anything leaves no empty folder behind. Never raises."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


def remove_quietly(path: Path) -> None:
    """Delete `path` if it is there. Never raises: a failing clean-up (a read-only file system
    answers EROFS even for a file that was never made) must not hide the error being handled."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_problem(path: Path, size: int = 1) -> OSError | None:
    """The error that writing `size` bytes meets at `path` (a folder: in a new file in it; a
    file: appended to it), or None. How a writer that reports no reason (FFmpeg inside OpenCV,
    SQLite's "unable to open database file") learns the system's: no space, quota, size limit,
    read-only, permission."""
    try:
        if path.is_dir():
            with tempfile.TemporaryFile(dir=path) as probe:
                probe.write(bytes(size))
                probe.flush()
                os.fsync(probe.fileno())
            return None
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, bytes(size))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    return None


def _sync(path: Path) -> None:
    """Flush `path` to the disk, so a late ENOSPC/EDQUOT (delayed allocation, network file
    systems) is seen here rather than lost after the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PendingFile:
    """A temporary file `tmp` (with `dest`'s suffix unless another is given; made empty here,
    so that a read-only or full folder is reported at once) that becomes `dest` on `commit()`
    and disappears on `discard()`.

    For a regular `dest` the file lies beside its target and is renamed over it. For a `dest`
    written in place it lies in the system's temporary folder and its bytes are copied into
    `dest` on commit: writers such as video encoders need a file they can seek in.
    """

    def __init__(self, dest: Path | str, suffix: str | None = None, hold: bool = False) -> None:
        self.dest = Path(dest)
        self.in_place = writes_in_place(self.dest)
        self.held: int | None = None  # `dest` opened now, written at commit (`hold`, in place)
        if self.in_place:
            self.target = self.dest
            folder = Path(tempfile.gettempdir())
        else:
            self.target = Path(os.path.realpath(self.dest))
            if self.target.is_dir():
                raise OutputError(f"cannot write {dest}: {os.strerror(errno.EISDIR)}")
            folder = self.target.parent
        suffix = self.target.suffix if suffix is None else suffix
        name = f".{self.target.stem}.{uuid.uuid4().hex[:12]}.part{suffix}"
        self.tmp = folder / name
        self.made = [] if self.in_place else make_folder(folder, self.dest)
        try:
            check_free_space(folder, self.dest)
            os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            remove_folders(self.made)
            raise cannot_write(self.dest, exc) from exc
        except OutputError:
            remove_folders(self.made)
            raise
        if self.in_place and hold:
            try:
                self.held = open_in_place(self.dest)
            except OutputError:
                self.discard()
                raise

    def commit(self) -> None:
        """Put the finished temporary file in place; on failure remove it and raise."""
        try:
            if self.in_place:
                held, self.held = self.held, None
                with open(self.tmp, "rb") as src, InPlaceFile(self.dest, held) as out:
                    while chunk := src.read(COPY_CHUNK):
                        out.write(chunk)
            else:
                with contextlib.suppress(OSError):
                    os.chmod(self.tmp, stat.S_IMODE(os.stat(self.target).st_mode))
                _sync(self.tmp)
                os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            if isinstance(exc, BrokenPipeError):
                raise  # the pipe's reader is gone, as with `| head`: cli.main ends quietly
            raise cannot_write(self.dest, exc) from exc
        except BaseException:
            self.discard()
            raise
        remove_quietly(self.tmp)
        self.made = []

    def discard(self) -> None:
        """Remove the temporary file, and the folders made for it if nothing else is there."""
        if self.held is not None:
            with contextlib.suppress(OSError):
                os.close(self.held)
            self.held = None
        remove_quietly(self.tmp)
        remove_folders(self.made)


def open_in_place(dest: Path | str) -> int:
    """`dest` (written in place: a device, a pipe) opened for writing now, so that a pipe
    nobody reads is refused at once instead of blocking the run's end. Appending: a
    /dev/stdout or /dev/fd/N that is a regular file (`>> log`) is added to, as the shell's own
    descriptor would be, never written over from its start."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError(
                f"cannot write {dest}: a pipe that nothing reads (start its reader first)"
            ) from exc
        raise cannot_write(dest, exc) from exc
    os.set_blocking(fd, True)
    return fd


class PendingFiles:
    """Outputs that appear together or not at all. Each is checked now (its folder made, a
    temporary file made beside it, a pipe or device opened), so an output that cannot be
    written is refused before the work; `commit` writes every temporary file, then what goes to
    devices and pipes, and only then renames the rest in place. A failure, or leaving the
    `with` block without committing, removes every temporary file and the folders made."""

    def __init__(self, dests: Iterable[Path | str]) -> None:
        self.files: list[PendingFile] = []
        try:
            for dest in dests:
                self.files.append(PendingFile(dest, hold=True))
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> PendingFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def commit(self, contents: Sequence[bytes]) -> None:
        """Write `contents` (one per output, in order) and put them all in place."""
        try:
            for pending, data in zip(self.files, contents, strict=True):
                try:
                    pending.tmp.write_bytes(data)
                    if not pending.in_place:
                        _sync(pending.tmp)
                except OSError as exc:
                    raise cannot_write(pending.dest, exc) from exc
            for pending in sorted(self.files, key=lambda p: not p.in_place):
                pending.commit()  # devices and pipes first: they can still fail, renames hardly
        except BaseException:
            self.discard()
            raise
        self.files = []

    def discard(self) -> None:
        """Remove what is not committed, the last made first (the folder made goes last)."""
        for pending in reversed(self.files):
            pending.discard()


@contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path for `dest`; it becomes `dest` if the block succeeds and is
    deleted if the block raises. A write error raised in the block (no space, quota, file too
    large, read-only) is reported as an error writing `dest`."""
    pending = PendingFile(dest)
    try:
        yield pending.tmp
    except OSError as exc:
        pending.discard()
        if exc.errno in WRITE_ERRNOS or exc.filename == str(pending.tmp):
            raise cannot_write(dest, exc) from exc
        raise
    except BaseException:
        pending.discard()
        raise
    pending.commit()


# Ctrl-C, and SIGTERM where the command line makes it stop a run the same way (cli.main).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_WRITING_IN_PLACE = threading.Event()  # the main thread is in `interruptible_write`


@contextmanager
def interruptible_write() -> Iterator[None]:
    """A write into a device or pipe, which waits for as long as the pipe's reader does not
    read: a stop signal during the block stops it at once, even inside `interrupts_held` (what
    the reader got of the output being written is then cut short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _WRITING_IN_PLACE.set()
    try:
        yield
    finally:
        _WRITING_IN_PLACE.clear()


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during the block reaches its handler when the block ends, so that no
    output is left half written (an encoder stopped between encoding a frame and storing it
    fails its own check, and the run's outputs are then discarded), except during an
    `interruptible_write`. Only the main thread gets signals; a signal that is ignored or has
    its default action is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    held = {signum: handler for signum, handler in handlers.items() if callable(handler)}
    caught: list[int] = []

    def hold(number: int, frame: FrameType | None) -> None:
        if _WRITING_IN_PLACE.is_set():  # it may wait for ever: stop now
            held[signal.Signals(number)](number, frame)
            return
        caught.append(number)

    for signum in held:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        if caught:
            held[signal.Signals(caught[0])](caught[0], None)


STAGE_PREFIX, STAGE_SUFFIX = ".maskwatch-", ".part"
REPLACED = f"{STAGE_PREFIX}replaced"  # inside a stage: the files its run replaced, while it does


@contextmanager
def staged_folder(dest: Path, outputs: Collection[str]) -> Iterator[Path]:
    """A hidden temporary folder inside the output folder `dest`, for outputs that must appear
    together (named `outputs`): `dest` is made and tried now, and a folder standing where one of
    them goes is refused, so a place that cannot be written is refused before the work; when
    the block succeeds each file written in the stage replaces its namesake in `dest` (all of
    them, or, when one cannot be, none: those already moved are put back), and when it fails (or
    is interrupted) the stage is removed, with `dest` if this made it: `dest` never holds half
    of a run's outputs beside another run's. The stage is locked while in use, so a stage a
    killed run left behind is told from a running one and removed."""
    if (broken := broken_link(dest)) is not None:
        raise OutputError(f"cannot write {dest}: {broken} is a link to nothing")
    made = make_folder(dest)
    try:
        check_free_space(dest, dest)
        _refuse_folders_in_place(dest, outputs)
        _remove_abandoned_stages(dest)
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=STAGE_SUFFIX, dir=dest))
        lock = os.open(stage, os.O_RDONLY)
    except OSError as exc:
        remove_folders(made)
        raise cannot_write(dest, exc) from exc
    except BaseException:
        remove_folders(made)
        raise
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield stage
        except OutputError as exc:  # named by where the file was going, not by the stage
            raise OutputError(str(exc).replace(str(stage), str(dest))) from exc
        _put_in_place(stage, dest)
    except BaseException:
        _discard_stage(stage)
        remove_folders(made)
        raise
    finally:
        os.close(lock)
    shutil.rmtree(stage, ignore_errors=True)


def _discard_stage(stage: Path) -> None:
    """Remove a stage, unless it still holds files its run replaced and could not put back."""
    if any((stage / REPLACED).glob("*")):
        return
    shutil.rmtree(stage, ignore_errors=True)


def _remove_abandoned_stages(dest: Path) -> None:
    """Remove the stages in `dest` that no running process holds (a run killed by SIGKILL or a
    power cut leaves its stage; one that is running holds its lock). Files such a run had
    replaced and not yet put back are put back first."""
    for stage in dest.glob(f"{STAGE_PREFIX}*{STAGE_SUFFIX}"):
        try:
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for old in sorted((stage / REPLACED).glob("*")):
                os.replace(old, dest / old.name)
                log.warning(
                    "put back %s, which a run killed while finishing had replaced", old.name
                )
        except OSError:
            continue  # a run into the same folder is writing it now, or a file cannot go back
        finally:
            os.close(fd)
        shutil.rmtree(stage, ignore_errors=True)
        log.info("removed %s, left by a run that did not end", stage)


def _refuse_folders_in_place(dest: Path, names: Iterable[str]) -> None:
    for name in names:
        if (dest / name).is_dir() and not (dest / name).is_symlink():
            raise OutputError(f"cannot write {dest / name}: a folder is in its place")


def _put_in_place(stage: Path, dest: Path) -> None:
    """Move every file of `stage` into `dest`, replacing namesakes, with Ctrl-C and SIGTERM held
    and `dest` locked against another run doing the same; if one cannot be moved, the files
    moved so far go back to the stage and the ones they replaced back in place (one that cannot
    go back stays in the stage, which is then kept, and the error says where)."""
    written = sorted(stage.iterdir())
    _refuse_folders_in_place(dest, [item.name for item in written])
    replaced = stage / REPLACED
    replaced.mkdir()
    moved: list[tuple[str, bool]] = []  # name, and whether it replaced a file
    folder = os.open(dest, os.O_RDONLY)
    try:
        with interrupts_held():
            fcntl.flock(folder, fcntl.LOCK_EX)
            try:
                for item in written:
                    target = dest / item.name
                    had = os.path.lexists(target)
                    if had:
                        os.rename(target, replaced / item.name)
                    moved.append((item.name, had))
                    os.rename(item, target)
            except BaseException as exc:
                kept = _put_back(stage, dest, moved)
                if not isinstance(exc, OSError):
                    raise
                reason = cannot_write(dest / item.name, exc)
                if kept:
                    reason = OutputError(f"{reason}; {', '.join(kept)} could not be put back: "
                                         f"the earlier files are in {replaced}")  # fmt: skip
                raise reason from exc
    finally:
        os.close(folder)


def _put_back(stage: Path, dest: Path, moved: list[tuple[str, bool]]) -> list[str]:
    """Undo the moves of `_put_in_place`; the names whose earlier file could not go back."""
    kept = []
    for name, had in reversed(moved):
        with contextlib.suppress(OSError):
            if not os.path.lexists(stage / name):
                os.rename(dest / name, stage / name)
        if had:
            try:
                os.rename(stage / REPLACED / name, dest / name)
            except OSError:
                kept.append(name)
    return kept


class InPlaceFile:
    """A device or pipe (written in place) opened once (or given as `fd`, from
    `open_in_place`), so that what is written into it in turn reaches one reader as one
    stream; a pipe nobody reads is refused at once. Unbuffered: closing it never writes, so
    it cannot wait on a reader after a stopped write."""

    def __init__(self, dest: Path | str, fd: int | None = None) -> None:
        self.dest = dest
        self._fd = open_in_place(dest) if fd is None else fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            with interruptible_write():
                while view:
                    view = view[os.write(self._fd, view) :]
        except BrokenPipeError as exc:
            if _is_stdout(self._fd):
                raise  # its reader is gone, as with `| head`: cli.main ends quietly
            raise OutputError(
                f"cannot write {self.dest}: its reader went away before the end (broken pipe)"
            ) from exc
        except OSError as exc:
            raise cannot_write(self.dest, exc) from exc

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> InPlaceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_stdout(fd: int) -> bool:
    """Whether `fd` is open on what standard output is (/dev/stdout, /dev/fd/1, `-`)."""
    try:
        return os.path.samestat(os.fstat(fd), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def write_bytes(dest: Path | str, data: bytes) -> None:
    """Write `data` to `dest` completely or not at all (in place for devices and pipes)."""
    if writes_in_place(dest):
        with InPlaceFile(dest) as out:
            out.write(data)
        return
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        out.write(data)


def write_text(dest: Path | str, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def clashing_input(by_identity: Mapping[tuple[int, int], Path], path: Path) -> Path | None:
    """The input (of `by_identity`, from `refuse_inputs`) that `path` is, under any name or
    link, or None."""
    ident = file_identity(path) if by_identity else None
    return by_identity.get(ident) if ident is not None else None


def _written_path(out: Path | str | None) -> str | None:
    """The real path (links followed) of an output file, or None for none and for a device or
    pipe, written in place (a descriptor path such as /dev/fd/N that leads to a regular file is
    a file; so is '-', standard output, redirected to one)."""
    if out is None:
        return None
    if str(out) == "-":
        out = STDOUT
    if file_identity(out) is None and writes_in_place(out):
        return None
    return os.path.realpath(out)


def output_paths(outputs: Mapping[str, Path | str | None]) -> dict[str, str]:
    """The option naming each output file, by its real path: how a file another output writes
    is known (`--save FOLDER` writing the name `--json` was given)."""
    return {path: option for option, out in outputs.items() if (path := _written_path(out))}


def _refuse_shared_outputs(named: Mapping[str, Path]) -> None:
    """Refuse two outputs that are one file, under any name or link (devices and pipes, written
    in place, may be shared)."""
    seen: dict[object, str] = {}
    for option, out in named.items():
        path = _written_path(out)
        if path is None:
            continue
        for key in {path, file_identity(out)} - {None}:
            if key in seen:
                raise OutputError(
                    f"{seen[key]} and {option} are the same file ({path}): the one written "
                    "last would replace the other; choose another name for one"
                )
            seen[key] = option


def refuse_inputs(
    inputs: Iterable[Path], outputs: dict[str, Path | str | None]
) -> dict[tuple[int, int], Path]:
    """The `inputs` by identity (device, inode), once each of `outputs` (option: path, '-' for
    standard output, None for none) has been checked not to be one of them, under any name or
    link: results written over the photo or video being read would destroy it; nor may two
    outputs be one file (the last written would replace the other). Standard output counts as
    the file it was redirected to, if any. Empty when there is nothing to check."""
    named = {
        option: STDOUT if str(out) == "-" else Path(out) for option, out in outputs.items() if out
    }
    if not named:
        return {}
    _refuse_shared_outputs(named)
    by_identity = {ident: path for path in inputs if (ident := file_identity(path)) is not None}
    for option, out in named.items():
        clash = clashing_input(by_identity, out)  # a device or pipe is none; /dev/fd/N may be
        if clash is not None:
            shown = "- (standard output)" if out == STDOUT and outputs[option] == "-" else out
            raise OutputError(
                f"{option} {shown} is the input {clash}: writing there would destroy it; "
                "choose another name"
            )
    return by_identity
