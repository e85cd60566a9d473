"""One output writer run in a forked child process, so that two GIL-bound writers use both cores.

The DICOM SEG and SR (highdicom/pydicom) and the figures/meshes/report (matplotlib, trimesh,
reportlab) are pure-Python work for the most part: on a thread they would take turns on the GIL and
gain nothing. A ``fork``ed child shares the parent's arrays copy-on-write (nothing is pickled on the
way in), writes its files and sends back only a small picklable return value. The child is always
joined before :meth:`ForkedCall.result` returns, so no writer outlives the call that started it.

The function runs right away in the calling thread instead (same result, just without the second
core; not on a thread: the writers set process-wide warning filters, which threads would race on):

- where ``fork`` is not available (Windows) or fails (e.g. too little memory to commit);
- when called from a daemonic process (the server's workers: multiprocessing forbids them children);
- when called from a thread other than the main one (the batch runner's threads, servers): a fork
  copies locks that other threads may hold at that moment, and the child could wait on them forever;
- when the environment sets ``OSTEOSCAN_FORK_WRITERS=0``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from osteoscan.errors import OsteoscanError

log = logging.getLogger(__name__)

T = TypeVar("T")


#: Environment variable that turns the child processes off when set to "0".
FORK_ENV = "OSTEOSCAN_FORK_WRITERS"


def fork_allowed() -> bool:
    """Whether :class:`ForkedCall` may fork here and now (see the module docstring)."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and os.environ.get(FORK_ENV, "1") != "0"
        and not multiprocessing.current_process().daemon
        and threading.current_thread() is threading.main_thread()
    )


class ChildWriterError(OsteoscanError):
    """A writer failed in the child process with an error that could not be sent back as itself."""


def _child_main(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        value = fn(*args)
        conn.send(("ok", value))
    except BaseException as exc:  # sent to the parent, which raises it there
        detail = "".join(traceback.format_exception(exc))
        try:
            payload: Any = pickle.dumps(exc)
        except Exception as pickling_error:  # an exception type that cannot be pickled: send its text
            log.debug("cannot pickle %r: %s", exc, pickling_error)
            payload = None
        conn.send(("error", payload, detail))
    finally:
        conn.close()


class ForkedCall(Generic[T]):
    """``fn(*args)`` started now in a forked child (or run now, inline); :meth:`result` waits for it."""

    def __init__(self, fn: Callable[..., T], *args: Any, name: str = "osteoscan-writer") -> None:
        self.name = name
        self._proc: Any = None
        self._conn: Connection | None = None
        self._inline: tuple[bool, Any] | None = None  # (succeeded, value or exception) when run inline
        if fork_allowed():
            ctx = multiprocessing.get_context("fork")
            receive, send = ctx.Pipe(duplex=False)
            for stream in (sys.stdout, sys.stderr):  # or the child flushes a copy of the parent's buffer
                stream.flush()
            try:
                proc = ctx.Process(target=_child_main, args=(send, fn, args), name=name, daemon=True)
                proc.start()
            except OSError as exc:
                log.warning("could not fork a writer process (%s); writing %s in this process", exc, name)
                receive.close()
            else:
                self._proc, self._conn = proc, receive
            send.close()
        if self._proc is None:
            try:
                self._inline = (True, fn(*args))
            except Exception as exc:  # raised from result(), like the child's errors
                self._inline = (False, exc)

    def result(self) -> T:
        """The function's return value, or its exception re-raised here; the child is joined first."""
        if self._inline is not None:
            succeeded, value = self._inline
            if succeeded:
                return value
            raise value
        assert self._conn is not None and self._proc is not None
        try:
            message = self._conn.recv()
        except EOFError:
            message = None
        finally:
            self.close()
        if message is None:
            raise ChildWriterError(
                f"the {self.name} process ended without a result (exit code {self._proc.exitcode}); "
                "see the log above for its error, or run with fewer outputs to find the failing writer"
            )
        if message[0] == "ok":
            return message[1]
        _, payload, detail = message
        log.error("%s failed in its child process:\n%s", self.name, detail)
        if payload is not None:
            raise pickle.loads(payload)
        raise ChildWriterError(f"the {self.name} process failed:\n{detail}")

    def close(self) -> None:
        """Wait for the child to end; safe to call more than once."""
        if self._proc is not None:
            self._proc.join()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
