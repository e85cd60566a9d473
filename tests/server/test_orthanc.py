"""The DICOM wiring against a real PACS (Debian's Orthanc on loopback), without the models:
Orthanc C-STOREs a CT series to `osteoscan serve` -> one job with the right UIDs and calling AE;
the result sender C-STOREs DICOM objects into Orthanc -> they are there, in the right study.
(The full round trip through the pipeline is in test_end_to_end.py.)"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pydicom

from osteoscan.server.config import DestinationConfig
from osteoscan.server.dicom_node import ResultSender
from osteoscan.server.store import JobState, JobStore, SendState


def test_orthanc_sends_a_series_to_the_node(serve_factory, orthanc_factory, h: ModuleType,
                                            tmp_path: Path) -> None:
    serve = serve_factory(workers=0, quiet_s=1.0)  # queue only: this test is about the DICOM wiring
    orthanc = orthanc_factory({"osteoscan": ("OSTEOSCAN", serve.dicom_port)})
    files = h.tiny_ct(tmp_path / "ct", n=8, compression="jpegls")
    ds = pydicom.dcmread(files[0])
    [first, *_] = orthanc.upload(files)
    r = orthanc.http.post("/modalities/osteoscan/store", json={"Resources": [first["ParentSeries"]],
                                                                "Synchronous": True})
    assert r.status_code == 200, r.text
    print(f"Orthanc C-STORE -> osteoscan: {r.json()}")
    deadline = time.monotonic() + 30
    while not (jobs := serve.jobs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    [job] = jobs
    assert job["source"] == "dicom" and job["calling_aet"] == "ORTHANC" and job["state"] == "queued"
    assert job["study_uid"] == str(ds.StudyInstanceUID) and job["series_uid"] == str(ds.SeriesInstanceUID)
    assert job["n_files"] == 8
    metrics = serve.client.get("/metrics").text
    assert "osteoscan_dicom_instances_received_total 8.0" in metrics


def test_results_arrive_in_orthanc(orthanc_factory, h: ModuleType, tmp_path: Path) -> None:
    orthanc = orthanc_factory({"osteoscan": ("OSTEOSCAN", h.free_port())})
    store = JobStore(tmp_path / "data")
    jid = store.new_id()
    store.create(jid, source="dicom", input_kind="dicom")
    store.claim(worker_pid=1)
    out = store.output_dir(jid)
    files = h.tiny_ct(out, n=3)
    store.finish(jid, JobState.DONE, send_state=SendState.PENDING)
    sender = ResultSender(DestinationConfig(ae_title=orthanc.AET, port=orthanc.dicom_port, retries=0),
                          "OSTEOSCAN", store)
    assert sender.send_job(store.claim_send()) is SendState.SENT, store.get(jid).send_reason  # type: ignore[arg-type]
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    [series] = orthanc.series_of_study(study_uid)
    assert len(series["Instances"]) == 3
    # an AE that Orthanc does not know (wrong calling AE title) is refused: a visible send failure
    stranger = ResultSender(DestinationConfig(ae_title=orthanc.AET, port=orthanc.dicom_port, retries=1,
                                              retry_delay_s=0.05), "STRANGER", store)
    store.set_send(jid, SendState.PENDING, None, 0)
    assert stranger.send_job(store.claim_send()) is SendState.FAILED  # type: ignore[arg-type]
    job = store.get(jid)
    assert job.send_attempts == 2 and "rejected" in job.send_reason  # type: ignore[union-attr,operator]
