"""The DICOM node on loopback: C-ECHO, C-STORE of a CT series -> one queued job after the quiet period,
calling-AE allow-list, MR refused, spool recovery after a restart, and sending results with retries."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from osteoscan.server.config import DestinationConfig, ServerConfig
from osteoscan.server.dicom_node import DicomNode, ResultSender
from osteoscan.server.store import JobState, JobStore, SendState


@pytest.fixture
def node(config: ServerConfig) -> DicomNode:
    store = JobStore(config.data_dir)
    n = DicomNode(config.dicom, store)
    n.start()
    yield n
    n.stop()


def _send(files: list[Path], port: int, calling: str = "SCANNER", sop: str = CTImageStorage) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop, [str(pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="OSTEOSCAN")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()


def _wait(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def test_echo_and_series_becomes_one_job_after_quiet_period(node: DicomNode, h: ModuleType, tmp_path: Path) -> None:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="OSTEOSCAN")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()

    files = h.tiny_ct(tmp_path / "a", n=5, compression="rle")
    statuses = _send(files[:3], node.port)
    assert statuses == [0, 0, 0]
    time.sleep(0.3)  # shorter than the quiet period (0.6 s): still one series
    assert _send(files[3:], node.port) == [0, 0]
    assert node.store.list() == []  # not complete yet
    [job] = _wait(node.store.list)
    assert job.state is JobState.QUEUED and job.source == "dicom" and job.n_files == 5
    assert job.calling_aet == "SCANNER" and job.series_uid == str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert sorted(p.name for p in node.store.input_dir(job.id).iterdir()) == sorted(
        f"{pydicom.dcmread(f).SOPInstanceUID}.dcm" for f in files)
    assert not any(node.spool.iterdir())  # moved out of the spool


def test_calling_ae_allow_list_and_mr_refused(config: ServerConfig, h: ModuleType, tmp_path: Path) -> None:
    cfg = config.replace(dicom={"allowed_calling_aets": ["PACS"]})
    node = DicomNode(cfg.dicom, JobStore(cfg.data_dir))
    node.start()
    try:
        files = h.tiny_ct(tmp_path / "a", n=2)
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="OSTEOSCAN")
        assert assoc.is_rejected
        assert _send(files, node.port, calling="PACS") == [0, 0]
        mr = h.to_mr(h.tiny_ct(tmp_path / "mr", n=1))
        ae = AE(ae_title="PACS")
        ae.add_requested_context(MRImageStorage)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="OSTEOSCAN")
        assert assoc.is_established
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(pydicom.dcmread(mr[0]))
        assoc.release()
        [job] = _wait(node.store.list)
        assert job.calling_aet == "PACS" and job.n_files == 2
    finally:
        node.stop()


def test_spooled_series_survives_a_restart(config: ServerConfig, h: ModuleType, tmp_path: Path) -> None:
    store = JobStore(config.data_dir)
    node = DicomNode(config.dicom, store)
    node.start()
    files = h.tiny_ct(tmp_path / "a", n=3)
    _send(files, node.port)
    node.stop()  # "crash" before the quiet period ended
    assert store.list() == [] and any(node.spool.iterdir())
    again = DicomNode(config.dicom, JobStore(config.data_dir))
    again.start()
    try:
        [job] = _wait(again.store.list)
        assert job.n_files == 3 and job.state is JobState.QUEUED
    finally:
        again.stop()


class _Pacs:
    """A real storage SCP (pynetdicom) standing in for the hospital PACS."""

    def __init__(self, refuse: bool = False) -> None:
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title="PACS")
        ae.supported_contexts = __import__("pynetdicom").AllStoragePresentationContexts

        def on_store(event):
            if refuse:
                return 0xA700
            self.received.append(event.dataset)
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.port = self.server.server_address[1]


def _done_job(store: JobStore, files: list[Path]) -> str:
    jid = store.new_id()
    store.create(jid, source="dicom", input_kind="dicom")
    store.claim(worker_pid=1)
    out = store.output_dir(jid)
    (out / "sc").mkdir(parents=True)
    for i, f in enumerate(files):
        (out / ("sc" if i else ".") / f.name).write_bytes(f.read_bytes())
    (out / "result.json").write_text("{}")
    store.finish(jid, JobState.DONE, send_state=SendState.PENDING)
    return jid


def test_results_are_sent_back_with_retries(config: ServerConfig, h: ModuleType, tmp_path: Path) -> None:
    store = JobStore(config.data_dir)
    files = h.tiny_ct(tmp_path / "out", n=3)
    pacs = _Pacs()
    try:
        sender = ResultSender(DestinationConfig(ae_title="PACS", port=pacs.port, retries=1, retry_delay_s=0.1),
                              "OSTEOSCAN", store)
        jid = _done_job(store, files)
        job = store.claim_send()
        assert job is not None and job.id == jid
        assert sender.send_job(job) is SendState.SENT
        assert sorted(str(d.SOPInstanceUID) for d in pacs.received) == sorted(
            str(pydicom.dcmread(f).SOPInstanceUID) for f in files)
        assert store.get(jid).send_state is SendState.SENT  # type: ignore[union-attr]
    finally:
        pacs.server.shutdown()
    # a PACS that refuses, then one that is not there: failed, with the reason and the attempts
    refusing = _Pacs(refuse=True)
    try:
        sender = ResultSender(DestinationConfig(ae_title="PACS", port=refusing.port, retries=2, retry_delay_s=0.05),
                              "OSTEOSCAN", store)
        jid = _done_job(store, files)
        assert sender.send_job(store.claim_send()) is SendState.FAILED  # type: ignore[arg-type]
        job = store.get(jid)
        assert job.send_attempts == 3 and "0xA700" in job.send_reason  # type: ignore[union-attr,operator]
    finally:
        refusing.server.shutdown()
    sender = ResultSender(DestinationConfig(ae_title="PACS", port=h.free_port(), retries=1, retry_delay_s=0.05),
                          "OSTEOSCAN", store)
    jid = _done_job(store, files)
    assert sender.send_job(store.claim_send()) is SendState.FAILED  # type: ignore[arg-type]
    assert "never connected" in store.get(jid).send_reason  # type: ignore[union-attr,operator]
