"""What every command shares: errors and exit codes, output (text, JSON, progress, notices),
option types, and the checks on the files named on the command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
from contextlib import contextmanager
from fractions import Fraction

import numpy as np

#: Exit codes: success, the work failed, the command line is wrong.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line is wrong (an option value, a missing or conflicting option): exit 2."""


class WorkError(Exception):
    """The command line is fine but the work failed (a bad file, data a model refuses): exit 1."""


# ---------------------------------------------------------------------------------- output
class Output:
    """Where a command's results and messages go.

    Results: a text table on stdout, or with ``--json`` one JSON document on stdout. Notices
    (what a command is about to do, files skipped) and progress bars go to stderr; ``--quiet``
    turns both off. Warnings go to stderr always.
    """

    def __init__(self, *, json_mode=False, quiet=False, progress=None, stdout=None, stderr=None):
        self.json_mode = bool(json_mode)
        self.quiet = bool(quiet)
        self._progress = progress
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr

    def print(self, text=""):
        """A line of the text output (nothing in JSON mode, where the document says it all)."""
        if not self.json_mode:
            print(text, file=self.stdout)

    def notice(self, text):
        """A line on stderr, unless ``--quiet``."""
        if not self.quiet:
            print(text, file=self.stderr, flush=True)

    def warning(self, text):
        print(f"caproute: warning: {text}", file=self.stderr, flush=True)

    def document(self, doc):
        """The JSON document (JSON mode only)."""
        if self.json_mode:
            json.dump(to_json(doc), self.stdout, indent=2, allow_nan=False)
            self.stdout.write("\n")

    @property
    def progress_enabled(self):
        if self.quiet:
            return False
        if self._progress is not None:
            return bool(self._progress)
        isatty = getattr(self.stderr, "isatty", None)
        return bool(isatty and isatty())

    @contextmanager
    def waiting(self, desc, *, after=1.0, when=None):
        """A block without steps to count: if it lasts more than ``after`` seconds (and
        progress bars are on), a line on stderr with ``desc`` and the time elapsed. With
        ``when`` (a :class:`threading.Event`), only once that event is set, within the block."""
        if not self.progress_enabled:
            yield
            return
        stop = threading.Event()

        def tick():
            while when is not None and not when.wait(0.1):
                if stop.is_set():
                    return
            if stop.wait(after):
                return
            with self.bar(total=None, desc=desc, bar_format="{desc}: {elapsed}") as bar:
                while not stop.wait(0.5):
                    bar.refresh()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def bar(self, total=None, desc="", unit="it", **kwargs):
        """A tqdm progress bar on stderr (a silent one when progress is off)."""
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=self.stderr,
            disable=not self.progress_enabled,
            dynamic_ncols=True,
            leave=True,
            **kwargs,
        )


def to_json(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists; NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


FIRST_RUN_NOTICE = (
    "caproute: compiling kernels (first run only; later runs load them from Numba's cache)..."
)

_NOTICED = set()


def _say_once(message, stream):
    if message in _NOTICED:  # one line per process, however many blocks follow
        return
    _NOTICED.add(message)
    stream.write(message + "\n")
    stream.flush()


@contextmanager
def notice_if_slow(message, *, after=1.0, stream=None):
    """Write ``message`` (one line, to stderr) if the block is still running after ``after``
    seconds (once per process). Compilation has its own, exact, notice: :func:`compiling_notice`."""
    stream = sys.stderr if stream is None else stream
    timer = threading.Timer(after, _say_once, (message, stream))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def compiling_notice(out, *, notice=True):
    """A block that may compile Numba kernels: as soon as Numba starts compiling one of
    caproute's kernels in it, :data:`FIRST_RUN_NOTICE` on stderr (one line, once per process;
    not with ``notice=False`` or ``--quiet``) and, when progress bars are on, a timer until the
    block ends.

    The signal is Numba's own compile event (relayed by ``caproute.kernels.numba.
    compile_hooks``), never sent when a kernel comes from Numba's on-disk cache: a run with a
    warm cache says nothing, however long it takes, and a cold one says it at once. Listening
    costs nothing and imports no Numba (``--backend numpy`` never loads it).
    """
    if out.quiet:
        yield
        return
    from ..kernels import numba as kernels  # the hook list only: no Numba import

    compiling = threading.Event()

    def on_compile(name):
        if not compiling.is_set():
            compiling.set()
            if notice:
                _say_once(FIRST_RUN_NOTICE, out.stderr)

    kernels.compile_hooks.append(on_compile)
    try:
        with out.waiting("compiling the kernels (first run only)", when=compiling):
            yield
    finally:
        kernels.compile_hooks.remove(on_compile)


# ---------------------------------------------------------------------------- option types
def positive_int(text):
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text!r}")
    return value


def scale_value(text):
    """argparse type: a positive finite factor, written as a number or a fraction (1/255)."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a positive number or fraction such as 1/255; got {text!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a positive number or fraction such as 1/255; got {text!r}"
        )
    return value


def int_tuple(count):
    """argparse type: ``count`` positive integers separated by commas or x (28,28,1 or 28x28x1)."""

    def parse(text):
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != count or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"expected {count} positive integers separated by commas (e.g. "
                f"{','.join(['28', '28', '1'][:count])}); got {text!r}"
            )
        return values

    return parse


# ----------------------------------------------------------------------------------- files
def input_file(path, *, what="file"):
    """``path`` as a string, after checking that it names a readable regular file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WorkError(f"{what} {path!r} does not exist.")
    if os.path.isdir(path):
        raise WorkError(f"{what} {path!r} is a directory; expected a file.")
    if not os.access(path, os.R_OK):
        raise WorkError(f"{what} {path!r} is not readable (permission denied).")
    return path


def output_file(path, *, what="output file"):
    """``path`` as a string, after checking that a file can be written there."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WorkError(f"{what} {path!r} is a directory; expected a file name.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise WorkError(f"{what} {path!r}: the folder {folder!r} does not exist.")
    return path


@contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Write ``path`` through a temporary file renamed at the end: a failed command leaves no
    half-written file."""
    tmp = f"{path}.part-{os.getpid()}"
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_magic(path, n=16):
    """The first ``n`` bytes of a file."""
    with open(path, "rb") as f:
        return f.read(n)


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
IDX_TYPES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


def looks_like_idx(path, head):
    """Whether a file is IDX (plain, or gzip-compressed with an IDX name)."""
    if head.startswith(GZIP_MAGIC):
        name = os.path.basename(path).lower()
        return "idx" in name or "ubyte" in name
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in IDX_TYPES


def load_npy(path, *, what):
    """A NumPy ``.npy`` file, never unpickled, with the reasons it cannot be read."""
    if not read_magic(path, 6).startswith(NPY_MAGIC):
        raise WorkError(f"{what} {path!r} is not a NumPy .npy file (no .npy header).")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise WorkError(
                f"{what} {path!r} holds Python objects (an object array), which caproute never "
                "unpickles; save a numeric array (np.save(path, array.astype(float)))."
            ) from None
        raise WorkError(f"{what} {path!r} could not be read as a .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise WorkError(f"{what} {path!r} is truncated or unreadable: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise WorkError(f"{what} {path!r} does not hold one array.")
    return arr


def describe_array(arr):
    return f"shape {tuple(arr.shape)}, dtype {arr.dtype}"
