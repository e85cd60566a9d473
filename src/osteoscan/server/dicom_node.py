"""The DICOM node: C-ECHO and C-STORE SCP that turns received CT series into jobs, and the sender
that C-STOREs the results (SEG, SR, encapsulated PDF, SC) back to the configured PACS.

A series has no "end" message in DICOM, so it is considered complete after a quiet period with no new
instance (``dicom.quiet_period_s``). Instances are written to ``<data_dir>/spool/<series UID>/`` as
they arrive (each file written to a temp name then renamed, so a half-written file is never seen);
when the series goes quiet its folder is moved into a new job's ``input`` folder and checked like an
upload. Spool folders left by a restart are picked up again after the quiet period.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage, Verification

from osteoscan.errors import InputError
from osteoscan.server.config import DestinationConfig, DicomConfig
from osteoscan.server.intake import describe_dicom
from osteoscan.server.store import Job, JobState, JobStore, SendState

log = logging.getLogger(__name__)

#: DIMSE status codes (PS3.7 Annex C / PS3.4 B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Warning statuses a C-STORE SCP may return while still storing the instance (PS3.4 B.2.3).
STORE_WARNINGS = (0xB000, 0xB007, 0xB006)
#: How often the assembler looks for series that went quiet (s).
ASSEMBLE_INTERVAL_S = 0.25


@dataclass
class _Pending:
    last_seen: float
    calling_aet: str | None
    count: int


class DicomNode:
    """C-ECHO/C-STORE SCP for CT images plus the quiet-period series assembler."""

    def __init__(self, config: DicomConfig, store: JobStore) -> None:
        self.config = config
        self.store = store
        self.spool = store.data_dir / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.received = 0
        self.refused = 0
        self.port: int | None = None
        ae = AE(ae_title=config.ae_title)
        ae.require_calling_aet = list(config.allowed_calling_aets)
        ae.add_supported_context(Verification)
        for sop in (CTImageStorage, EnhancedCTImageStorage):
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        ae.maximum_pdu_size = 0  # no limit
        self.ae = ae

    # ---- SCP ---------------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            series_uid = str(ds.SeriesInstanceUID)
            sop_uid = str(ds.SOPInstanceUID)
        except (AttributeError, KeyError, ValueError) as exc:
            log.warning("C-STORE from %s: cannot read the instance's UIDs (%s)", event.assoc.requestor.ae_title,
                        exc)
            self.refused += 1
            return STATUS_CANNOT_UNDERSTAND
        if not (series_uid.replace(".", "").isdigit() and sop_uid.replace(".", "").isdigit()):
            self.refused += 1
            return STATUS_CANNOT_UNDERSTAND  # not a UID: would be unsafe as a file name
        folder = self.spool / series_uid
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{sop_uid}.part"
            with open(tmp, "wb") as fh:
                fh.write(event.encoded_dataset())
            os.replace(tmp, folder / f"{sop_uid}.dcm")
        except OSError as exc:
            log.error("C-STORE: cannot write instance %s to %s: %s", sop_uid, folder, exc)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            p = self._pending.get(series_uid)
            if p is None:
                p = self._pending[series_uid] = _Pending(time.monotonic(), None, 0)
                log.info("receiving series %s from %s", series_uid, event.assoc.requestor.ae_title)
            p.last_seen = time.monotonic()
            p.calling_aet = str(event.assoc.requestor.ae_title).strip()
            p.count += 1
            self.received += 1
        return STATUS_SUCCESS

    def start(self) -> None:
        # series left in the spool by a previous run: assemble them after a quiet period from now
        with self._lock:
            for folder in self.spool.iterdir():
                if folder.is_dir() and folder.name not in self._pending:
                    n = sum(1 for _ in folder.glob("*.dcm"))
                    self._pending[folder.name] = _Pending(time.monotonic(), None, n)
        self._server = self.ae.start_server(
            (self.config.host, self.config.port), block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._assemble_loop, name="series-assembler", daemon=True)
        self._thread.start()
        log.info("DICOM node %s listening on %s:%d (quiet period %.1f s)", self.config.ae_title,
                 self.config.host, self.port, self.config.quiet_period_s)

    def stop(self) -> None:
        self._halt.set()
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def listening(self) -> bool:
        return self._server is not None and not self._halt.is_set()

    # ---- series assembly ---------------------------------------------------------------------
    def _assemble_loop(self) -> None:
        while not self._halt.wait(ASSEMBLE_INTERVAL_S):
            self.assemble_quiet()

    def assemble_quiet(self, now: float | None = None) -> list[Job]:
        """Queue every series that received nothing for the quiet period; returns the new jobs."""
        now = time.monotonic() if now is None else now
        with self._lock:  # held briefly: C-STORE handlers of other series must not wait for the checks below
            ready = [(uid, p) for uid, p in self._pending.items() if now - p.last_seen >= self.config.quiet_period_s]
            for uid, _ in ready:
                del self._pending[uid]
        jobs = [self._queue_series(uid, p) for uid, p in ready]
        return [j for j in jobs if j is not None]

    def _queue_series(self, series_uid: str, p: _Pending) -> Job | None:
        src = self.spool / series_uid
        job_id = self.store.new_id()
        inp = self.store.input_dir(job_id)
        inp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, inp)  # same filesystem: atomic, no copy
        except OSError as exc:
            log.error("series %s: cannot move %s into a job folder: %s", series_uid, src, exc)
            return None
        files = sorted(inp.glob("*.dcm"))
        for part in inp.glob(".*.part"):  # an instance cut off mid-write by a crash
            part.unlink()
        common = {"source": "dicom", "calling_aet": p.calling_aet, "series_uid": series_uid}
        try:
            info = describe_dicom(files)
        except InputError as exc:
            shutil.rmtree(inp, ignore_errors=True)
            log.warning("series %s from %s rejected: %s", series_uid, p.calling_aet, exc)
            return self.store.create(job_id, input_kind="dicom", state=JobState.REJECTED, reason=str(exc),
                                     n_files=len(files), **common)
        job = self.store.create(job_id, input_kind="dicom", n_files=info.n_files, study_uid=info.study_uid,
                                patient_id=info.patient_id, description=info.description, **common)
        log.info("series %s complete (%d instances from %s): job %s queued", series_uid, info.n_files,
                 p.calling_aet, job_id)
        return job


class ResultSender:
    """Sends the DICOM outputs of finished DICOM jobs to the destination, with retries.

    The outcome is visible per job (``send_state`` sent / failed + ``send_reason``) in the API and the
    worklist; a failed send can be retried with ``POST /api/v1/jobs/{id}/send``.
    """

    def __init__(self, config: DestinationConfig, calling_aet: str, store: JobStore) -> None:
        self.config, self.calling_aet, self.store = config, calling_aet, store
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent_instances = 0
        self.failed_sends = 0

    def start(self) -> None:
        self.store.requeue_interrupted_sends()
        self._thread = threading.Thread(target=self._loop, name="result-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._halt.is_set():
            job = self.store.claim_send()
            if job is None:
                self._halt.wait(0.5)
                continue
            self.send_job(job)

    def send_job(self, job: Job) -> SendState:
        out = self.store.output_dir(job.id)
        files = sorted(out.rglob("*.dcm"))
        if not files:
            self.store.set_send(job.id, SendState.FAILED, f"no DICOM output in {out}", 0)
            return SendState.FAILED
        attempts, reason = 0, ""
        for attempt in range(self.config.retries + 1):
            attempts = attempt + 1
            reason = self._send_files(files)
            if not reason:
                self.store.set_send(job.id, SendState.SENT, None, attempts)
                log.info("job %s: %d DICOM result(s) sent to %s@%s:%d", job.id, len(files), self.config.ae_title,
                         self.config.host, self.config.port)
                return SendState.SENT
            log.warning("job %s: sending results failed (attempt %d/%d): %s", job.id, attempts,
                        self.config.retries + 1, reason)
            if attempt < self.config.retries and self._halt.wait(self.config.retry_delay_s):
                break
        self.failed_sends += 1
        self.store.set_send(job.id, SendState.FAILED, reason, attempts)
        return SendState.FAILED

    def _send_files(self, files: list[Path]) -> str:
        """C-STORE ``files`` in one association; returns '' on success, else the reason."""
        datasets = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title=self.calling_aet)
        for sop, ts in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
            ae.add_requested_context(sop, ts)
        assoc = ae.associate(self.config.host, self.config.port, ae_title=self.config.ae_title)
        if not assoc.is_established:
            return (f"association with {self.config.ae_title}@{self.config.host}:{self.config.port} "
                    "was rejected, aborted or never connected")
        try:
            for f, ds in zip(files, datasets):
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    return f"no C-STORE response for {f.name} (connection lost or timed out)"
                if code != STATUS_SUCCESS and code not in STORE_WARNINGS:
                    return f"C-STORE of {f.name} refused with status 0x{code:04X}"
                self.sent_instances += 1
        finally:
            assoc.release()
        return ""
