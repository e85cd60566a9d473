"""End to end with the real parts: `osteoscan serve` (real pipeline, worker process), Debian's Orthanc as
the PACS, and headless Chromium driven by Playwright. One service is shared by the tests of this module
so the models are loaded once, as in production.

* Orthanc C-STOREs a phantom CT series to osteoscan; SEG, SR and the encapsulated PDF come back into
  Orthanc in the same study (StudyInstanceUID checked).
* The REST outputs of that job (result.json, report.pdf, DICOM, slices).
* The viewer in Chromium: worklist and study page with the numbers and the 3D spine rendered.
* Fault: the worker process is killed mid-job -> the job is retried (or failed with the reason), no
  partial outputs are ever visible, and the service is healthy again.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest

#: DICOM Modality of each result object (PS3.3): SEG, SR, and DOC for the encapsulated PDF.
EXPECTED_MODALITIES = {"SEG", "SR", "DOC"}
CHROMIUM = "/usr/bin/chromium"
#: Chromium flags: headless, no sandbox (root in CI), no GPU (SwiftShader WebGL instead), no network
#: side traffic, fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
MAX_SCREENSHOT_BYTES = 500_000


class Live:
    def __init__(self, serve, orthanc, data: Path) -> None:
        self.serve, self.orthanc, self.data = serve, orthanc, data
        self.jobs: dict[str, dict] = {}


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, h: ModuleType) -> Iterator[Live]:
    extra = h.pipeline_toml(request)
    h.pipeline_or_skip(h.weights_dir_of(extra))
    h.orthanc_or_skip()
    root = tmp_path_factory.mktemp("e2e")
    orthanc = h.Orthanc(root / "orthanc")
    serve = h.ServeProcess(root / "serve", workers=1, quiet_s=1.0, extra=extra,
                           dest={"ae_title": orthanc.AET, "port": orthanc.dicom_port, "retries": 2,
                                 "retry_delay_s": 1.0})
    serve.start()
    try:
        orthanc.start({"osteoscan": ("OSTEOSCAN", serve.dicom_port)})
        yield Live(serve, orthanc, root / "data")
    finally:
        print("\n--- osteoscan serve log (tail) ---\n" + serve.log()[-3000:])
        serve.stop()
        serve.client.close()
        orthanc.stop()


def test_orthanc_round_trip(live: Live, h: ModuleType) -> None:
    files, study_uid = h.phantom_series(live.data / "rt", seed=11, preset="lumbar", patient_id="RT-011")
    t0 = time.perf_counter()
    uploaded = live.orthanc.upload(files)
    r = live.orthanc.http.post("/modalities/osteoscan/store",
                               json={"Resources": [uploaded[0]["ParentSeries"]], "Synchronous": True})
    assert r.status_code == 200 and r.json()["FailedInstancesCount"] == 0, r.text
    deadline = time.monotonic() + 60
    while not (jobs := [j for j in live.serve.jobs() if j["study_uid"] == study_uid]):
        assert time.monotonic() < deadline, "no job created for the series Orthanc sent"
        time.sleep(0.3)
    [job] = jobs
    job = live.serve.wait_job(job["id"], timeout=600, until=lambda j: j["state"] in ("failed", "rejected")
                              or j["send_state"] in ("sent", "failed"))
    assert job["state"] == "done", job["reason"]
    assert job["send_state"] == "sent", job["send_reason"]
    series = live.orthanc.series_of_study(study_uid)
    modalities = {s["MainDicomTags"].get("Modality") for s in series}
    elapsed = time.perf_counter() - t0
    print(f"\nOrthanc -> osteoscan -> Orthanc in {elapsed:.1f} s: study {study_uid} now holds series "
          f"{sorted(m for m in modalities if m)} ({sum(len(s['Instances']) for s in series)} instances)")
    assert EXPECTED_MODALITIES <= modalities, modalities
    for s in series:
        if s["MainDicomTags"].get("Modality") in EXPECTED_MODALITIES:
            for tags in live.orthanc.instance_tags(s):
                assert tags["StudyInstanceUID"] == study_uid and tags["PatientID"] == "RT-011"
    live.jobs["round_trip"] = job


def test_rest_outputs_of_the_job(live: Live) -> None:
    job = live.jobs.get("round_trip")
    if job is None:
        pytest.fail("the round-trip job is missing (test_orthanc_round_trip failed)")
    c, jid = live.serve.client, job["id"]
    result = c.get(f"/api/v1/jobs/{jid}/result.json").json()
    assert result["provenance"]["input"]["study_instance_uid"] == job["study_uid"]
    assert result["vertebrae"], "no vertebra reported on the lumbar phantom"
    pdf = c.get(f"/api/v1/jobs/{jid}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    seg = pydicom.dcmread(io.BytesIO(c.get(f"/api/v1/jobs/{jid}/files/seg.dcm").content))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == job["study_uid"]
    info = c.get(f"/api/v1/jobs/{jid}/images").json()
    assert info["has_labels"] and info["slices"]["axial"] > 10
    png = c.get(f"/api/v1/jobs/{jid}/images/sagittal/{info['spine_index']}.png", params={"overlay": "true"})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((live.data.parent / "serve" / "data" / "jobs" / jid).glob(".tmp-out-*"))
    assert 'osteoscan_result_sends{state="sent"} 1.0' in c.get("/metrics").text


def _browser(tmp: Path):
    if not Path(CHROMIUM).exists():
        import sys

        print("\n" + "!" * 100 + "\n!!! Chromium is not installed (apt-get install chromium): browser test SKIPPED\n"
              + "!" * 100, file=sys.stderr)
        pytest.skip("chromium not installed (/usr/bin/chromium): apt-get install -y chromium")
    try:
        from playwright import sync_api
    except ImportError:
        import sys

        print("\n" + "!" * 100 + "\n!!! python playwright is not installed (pip install playwright): browser test "
              "SKIPPED\n" + "!" * 100, file=sys.stderr)
        pytest.skip("python playwright not installed (pip install playwright; it drives the system Chromium)")
    pw = sync_api.sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
                                                args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
    return pw, ctx


def test_viewer_in_chromium(live: Live, tmp_path: Path, request: pytest.FixtureRequest, h: ModuleType) -> None:
    job = live.jobs.get("round_trip")
    if job is None:
        pytest.fail("the round-trip job is missing (test_orthanc_round_trip failed)")
    pw, ctx = _browser(tmp_path)
    errors: list[str] = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live.serve.base + "/")
        page.wait_for_selector("#login-form", state="visible")
        page.fill("#token", h.TOKEN)
        page.click("#login-form button")
        row = page.locator(f'tr[data-job="{job["id"]}"]')
        row.wait_for(timeout=20_000)
        bmd = row.locator("td.bmd").inner_text()
        assert row.locator(".badge").inner_text() == "done"
        assert bmd == (f'{job["summary"]["bmd_l1_l2_mg_cm3"]:.0f}' if job["summary"]["bmd_l1_l2_mg_cm3"] is not None
                       else "\u2013")
        shots = [tmp_path / "viewer_worklist.png", tmp_path / "viewer_study.png"]
        page.screenshot(path=str(shots[0]))
        row.locator("a").first.click()
        page.wait_for_selector("#summary dt", timeout=30_000)
        levels = page.locator("#vertebrae tbody tr td:first-child").all_inner_texts()
        result = live.serve.client.get(f"/api/v1/jobs/{job['id']}/result.json").json()
        assert levels == [v["level"] for v in result["vertebrae"]]
        assert page.locator("#bmd-chart rect.bar").count() == sum(
            1 for v in result["vertebrae"] if v["bmd_mg_cm3"] is not None)
        page.wait_for_function("document.body.dataset.spineRendered === '1'", timeout=90_000)
        meshes = int(page.locator("#spine-canvas").get_attribute("data-meshes") or 0)
        assert meshes >= 1
        # the 3D canvas really shows something: many distinct colours, not the flat background
        canvas_png = page.locator("#spine-canvas").screenshot()
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(canvas_png)).convert("RGB")).reshape(-1, 3)
        colours = len(np.unique(pixels, axis=0))
        assert colours > 50, f"3D canvas looks empty ({colours} colours)"
        # the slice views scroll with the wheel and load new images
        before = page.locator("#axial img.ct").get_attribute("src")
        page.locator("#axial").hover()
        page.mouse.wheel(0, 300)
        page.wait_for_function(f"document.querySelector('#axial img.ct').src.indexOf({before!r}) < 0")
        page.wait_for_function("[...document.querySelectorAll('.slice img.ct')].every(i => i.complete && "
                               "i.naturalWidth > 0)")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shots[1]), full_page=False)
        print(f"\nviewer: {len(levels)} vertebrae {levels}, BMD L1-L2 cell {bmd!r}, 3D: {meshes} mesh(es), "
              f"{colours} colours; screenshots {[str(s) for s in shots]}")
        assert not errors, errors
        for s in shots:
            assert s.stat().st_size < MAX_SCREENSHOT_BYTES, f"{s} is {s.stat().st_size} bytes"
        target = str(request.config.getoption("--server-screenshots", default="") or "")
        if target:
            for s in shots:
                shutil.copy(s, Path(target) / s.name)
    finally:
        ctx.close()
        pw.stop()


def test_input_rejected_by_the_pipeline(live: Live, tmp_path: Path) -> None:
    """An upload that passes intake but that the pipeline refuses (InputError) ends `rejected` with the
    pipeline's reason, and the worker goes on with the next job (the kill test below)."""
    from osteoscan.io import CTVolume, affine_from_spacing
    from osteoscan.io.nifti import write_nifti

    nii = tmp_path / "flat.nii.gz"
    write_nifti(CTVolume(np.zeros((8, 16, 16), np.int16), affine_from_spacing((2.0, 1.0, 1.0))), path=nii)
    r = live.serve.client.post("/api/v1/studies", files=[("files", ("flat.nii.gz", nii.read_bytes()))])
    assert r.status_code == 202, r.text
    final = live.serve.wait_job(r.json()["id"], timeout=300)
    assert final["state"] == "rejected" and "CT" in final["reason"], final
    assert final["outputs"] == []


def test_worker_killed_mid_job(live: Live, h: ModuleType) -> None:
    # the one-slice L3 phantom: a short job (body composition only), killed once it is past reading
    files, _ = h.phantom_series(live.data / "kill", seed=12, preset="l3_slice", patient_id="KILL-012")
    zipped = h.zip_of_files(files)
    c = live.serve.client
    job = c.post("/api/v1/studies", files=[("files", ("kill.zip", zipped))]).json()
    assert job["state"] == "queued", job
    running = live.serve.wait_job(job["id"], timeout=120, until=lambda j: j["state"] != "queued" and (
        j["state"] != "running" or j["stage"] not in (None, "starting", "loading models", "load")), poll_s=0.05)
    assert running["state"] == "running", f"job finished before it could be killed: {running}"
    pid = running["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    t_kill = time.perf_counter()
    final = live.serve.wait_job(job["id"], timeout=600)
    jobs_dir = live.serve.root / "data" / "jobs" / job["id"]
    assert not list(jobs_dir.glob(".tmp-out-*")), "temp outputs of the killed worker are left"
    if final["state"] == "done":
        assert final["attempts"] == 2 and final["worker_pid"] != pid
        assert (jobs_dir / "out" / "result.json").is_file()
    else:
        assert final["state"] == "failed" and f"worker process {pid} died (signal 9)" in final["reason"]
        assert not (jobs_dir / "out").exists() and final["outputs"] == []
    health = c.get("/health").json()
    assert health["status"] == "ok" and health["workers_alive"] == 1
    print(f"\nkilled worker {pid} at stage {running['stage']!r}: job {final['state']} after "
          f"{final['attempts']} attempt(s), {time.perf_counter() - t_kill:.1f} s later")
