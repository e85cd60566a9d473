"""REST API: token auth on every route, upload checks (malformed uploads are rejected with a reason and
the service stays healthy), size limit, job routes, metrics, and the offline web viewer."""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from osteoscan.server.api import STATIC_DIR, create_app
from osteoscan.server.config import ServerConfig
from osteoscan.server.service import Service


@pytest.fixture
def client(config: ServerConfig) -> Iterator[TestClient]:
    # workers = 0: uploads are checked and queued, nothing runs (these tests need no pipeline)
    service = Service(config.replace(jobs={"workers": 0}, dicom={"enabled": False}))
    with TestClient(create_app(service)) as c:
        yield c


def test_every_api_route_needs_the_token(client: TestClient, auth: dict[str, str]) -> None:
    routes = [r for r in client.app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/v1/")
              and r.path != "/api/v1/session"]
    assert len(routes) >= 10
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "abc123", route.path)
        for method in route.methods:
            resp = client.request(method, path)
            assert resp.status_code == 401, f"{method} {path} answered {resp.status_code} without a token"
            assert resp.headers["www-authenticate"] == "Bearer"
            wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
    assert client.get("/api/v1/jobs", headers=auth).status_code == 200
    assert client.get("/health").status_code == 200  # open
    assert "osteoscan_jobs" in client.get("/metrics").text  # open


def test_browser_session_cookie(client: TestClient, h: ModuleType) -> None:
    assert client.post("/api/v1/session", json={"token": "wrong"}).status_code == 401
    resp = client.post("/api/v1/session", json={"token": h.TOKEN})
    assert resp.status_code == 204
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/v1/jobs").status_code == 200  # the cookie now authenticates
    client.delete("/api/v1/session")
    client.cookies.clear()
    assert client.get("/api/v1/jobs").status_code == 401


def _malformed(tmp: Path, h: ModuleType) -> dict[str, tuple[str, bytes, str]]:
    ct = h.tiny_ct(tmp / "ct")
    good_zip = h.zip_of_files(ct)
    mr = h.to_mr(h.tiny_ct(tmp / "mr", seed=1))
    link = zipfile.ZipInfo("series/link.dcm")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    return {
        "truncated zip": ("study.zip", good_zip[: len(good_zip) // 2], "truncated"),
        "non-DICOM": ("notes.txt", b"this is not an image\n" * 20, "no DICOM or NIfTI"),
        "MR series": ("mr.zip", h.zip_of_files(mr), "no CT image"),
        "0-byte file": ("empty.dcm", b"", "empty (0 bytes)"),
        "path traversal": ("evil.zip", h.zip_bytes({"../../evil.dcm": ct[0].read_bytes()}), "path traversal"),
        "absolute path": ("abs.zip", h.zip_bytes({"/tmp/evil.dcm": ct[0].read_bytes()}), "absolute path"),
        "symlink in zip": ("link.zip", buf.getvalue(), "symbolic link"),
        "corrupt NIfTI": ("ct.nii.gz", b"\x1f\x8b" + b"garbage" * 50, "not a readable NIfTI"),
    }


def test_malformed_uploads_are_rejected_and_service_stays_healthy(
    client: TestClient, auth: dict[str, str], h: ModuleType, tmp_path: Path
) -> None:
    cases = _malformed(tmp_path, h)
    for what, (name, data, reason) in cases.items():
        resp = client.post("/api/v1/studies", files=[("files", (name, data))], headers=auth)
        assert resp.status_code == 422, f"{what}: {resp.status_code} {resp.text}"
        job = resp.json()
        assert job["state"] == "rejected" and reason in job["reason"], f"{what}: {job['reason']}"
    assert not list((tmp_path / "data" / "jobs").glob("*/input")), "rejected inputs must not be kept"
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()
    assert client.get("/health").json()["status"] == "ok"
    # the queue is not blocked: a good study after all of them is accepted and queued
    good = h.zip_of_files(h.tiny_ct(tmp_path / "good", seed=3))
    resp = client.post("/api/v1/studies", files=[("files", ("good.zip", good))], headers=auth,
                       data={"patient_height_cm": "172", "patient_sex": "f"})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["state"] == "queued" and job["n_files"] == 6 and job["patient_sex"] == "F"
    assert job["patient_height_cm"] == 172
    counts = client.get("/api/v1/jobs", headers=auth).json()["counts"]
    assert counts["rejected"] == len(cases) and counts["queued"] == 1
    metrics = client.get("/metrics").text
    assert f'osteoscan_jobs{{state="rejected"}} {float(len(cases))}' in metrics


def test_upload_of_dicom_files_and_nifti(client: TestClient, auth: dict[str, str], h: ModuleType,
                                         tmp_path: Path) -> None:
    files = h.tiny_ct(tmp_path / "ct", n=4)
    resp = client.post("/api/v1/studies", headers=auth,
                       files=[("files", (f.name, f.read_bytes())) for f in files])
    assert resp.status_code == 202 and resp.json()["input_kind"] == "dicom" and resp.json()["n_files"] == 4
    import numpy as np

    from osteoscan.io import CTVolume, affine_from_spacing
    from osteoscan.io.nifti import write_nifti

    nii = tmp_path / "ct.nii.gz"
    write_nifti(CTVolume(np.zeros((5, 8, 8), np.int16), affine_from_spacing((1, 1, 1))), path=nii)
    resp = client.post("/api/v1/studies", headers=auth, files=[("files", ("ct.nii.gz", nii.read_bytes()))])
    assert resp.status_code == 202 and resp.json()["input_kind"] == "nifti"
    bad = client.post("/api/v1/studies", headers=auth, files=[("files", ("a.dcm", b"x"))],
                      data={"patient_height_cm": "9999"})
    assert bad.status_code == 422 and "patient_height_cm" in bad.text


def test_upload_size_limit(client: TestClient, auth: dict[str, str]) -> None:
    big = b"\0" * (6 * 2**20)  # the test config allows 5 MiB
    resp = client.post("/api/v1/studies", headers=auth, files=[("files", ("big.dcm", big))])
    assert resp.status_code == 413 and "max_upload_mb" in resp.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(7):
            yield b"\0" * 2**20

    resp = client.post("/api/v1/studies", headers={**auth, "Content-Type": "multipart/form-data; boundary=x"},
                       content=chunks())
    assert resp.status_code == 413
    assert client.get("/health").status_code == 200


def test_job_routes(client: TestClient, auth: dict[str, str], h: ModuleType, tmp_path: Path) -> None:
    good = h.zip_of_files(h.tiny_ct(tmp_path / "ct"))
    job = client.post("/api/v1/studies", files=[("files", ("s.zip", good))], headers=auth).json()
    jid = job["id"]
    assert client.get(f"/api/v1/jobs/{jid}", headers=auth).json()["state"] == "queued"
    assert client.get("/api/v1/jobs?state=queued", headers=auth).json()["jobs"][0]["id"] == jid
    assert client.get(f"/api/v1/jobs/{jid}/result.json", headers=auth).status_code == 409  # not done
    assert client.get(f"/api/v1/jobs/{jid}/files/../../jobs.sqlite3", headers=auth).status_code in (404, 409)
    assert client.post(f"/api/v1/jobs/{jid}/rerun", headers=auth).status_code == 409  # queued: not final
    assert client.get("/api/v1/jobs/doesnotexist", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/jobs/{jid}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/jobs/{jid}", headers=auth).status_code == 404
    assert not (tmp_path / "data" / "jobs" / jid).exists()


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/studies", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/report.pdf",
                 "/api/v1/jobs/{job_id}/rerun", "/health", "/metrics"):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_viewer_is_served_and_needs_no_internet(client: TestClient) -> None:
    for page in ("/", "/study/abc"):
        resp = client.get(page)
        assert resp.status_code == 200 and "<html" in resp.text
    assert client.get("/static/vendor/three-viewer.min.js").status_code == 200
    for f in STATIC_DIR.rglob("*"):
        if f.suffix in (".html", ".js", ".css"):
            text = f.read_text(encoding="utf-8", errors="replace")
            if f.name.endswith(".min.js"):
                continue  # vendored three.js: its URLs are comments/namespaces, checked below by import
            assert not re.search(r"(src|href)=[\"']https?://", text), f"{f} loads from the internet"
            assert "import(\"http" not in text and "from \"http" not in text, f"{f} imports from the internet"
    js = (STATIC_DIR / "vendor" / "three-viewer.min.js").read_text()
    assert not re.search(r"\bimport\s*[\"'(]\s*[\"']?https?://", js)


def test_a_thin_slice_series_uploads_as_separate_files(client: TestClient, auth: dict[str, str], h: ModuleType,
                                                       tmp_path: Path) -> None:
    """More files than the multipart parser's default limit (1000): a 0.5 mm CT has that many slices."""
    one = h.tiny_ct(tmp_path / "ct", n=1, size=8)[0].read_bytes()
    resp = client.post("/api/v1/studies", headers=auth, files=[("files", (f"{i}.dcm", one)) for i in range(1100)])
    assert resp.status_code == 202, resp.text[:300]
    assert resp.json()["n_files"] == 1100
