"""Fixtures of the server tests: small CT/MR series written on the fly, a configured service, free
loopback ports, and a running ``osteoscan serve`` process for the end-to-end tests."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pydicom
import pytest

from osteoscan.io import CTVolume, affine_from_spacing
from osteoscan.io.dicom_writer import write_dicom_series
from osteoscan.server.config import ServerConfig

LOOPBACK = "127.0.0.1"
TOKEN = "test-token-0123456789"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def tiny_ct(folder: Path, n: int = 6, size: int = 24, seed: int = 0, **kwargs: object) -> list[Path]:
    """A small CT series (soft tissue with a bright 'bone' disc) written by osteoscan's DICOM writer."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(40, 10, (n, size, size)).astype(np.int16)
    arr[:, size // 3: size // 2, size // 3: size // 2] = 700
    vol = CTVolume(array=arr, affine=affine_from_spacing((2.0, 0.8, 0.8)))
    return write_dicom_series(vol, folder, **kwargs)


def to_mr(files: list[Path]) -> list[Path]:
    """Turn a CT series into an MR one (SOP class + modality), as a scanner would write it."""
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        ds.Modality = "MR"
        ds.save_as(f)
    return files


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_of_files(files: list[Path], prefix: str = "series/") -> bytes:
    return zip_bytes({prefix + f.name: f.read_bytes() for f in files})


@pytest.fixture(scope="session")
def h() -> ModuleType:
    """This module's helpers (tiny_ct, zip_bytes, free_port, ServeProcess, TOKEN ...) for the tests
    (test modules cannot import a conftest under --import-mode=importlib)."""
    return sys.modules[__name__]


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """A fast test configuration: temp data dir, free ports, short quiet period, known token."""
    return ServerConfig().replace(
        api={"token": TOKEN, "port": 0, "max_upload_mb": 5},
        dicom={"port": 0, "quiet_period_s": 0.6},
        jobs={"data_dir": str(tmp_path / "data"), "workers": 1},
    )


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# ---- the real pipeline and phantom data --------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("osteoscan server")
    group.addoption("--server-pipeline-toml", default="",
                    help="extra TOML lines for the [pipeline] section of the services the server tests start "
                         "(e.g. 'weights_dir = \"/path/to/models\"')")
    group.addoption("--server-screenshots", default="",
                    help="folder to also save the viewer screenshots to (docs/ to refresh the committed ones)")


def loud_skip(reason: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! SKIPPED: {reason}\n{bar}", file=sys.stderr)
    pytest.skip(reason)


_PIPELINE_STATE: dict[str, str] = {}


def pipeline_or_skip(weights_dir: str = "") -> None:
    """The end-to-end tests need the real pipeline: skip while it is not importable, or (loudly) while
    its model weights have not been trained and shipped yet; any other failure fails the test."""
    try:
        from osteoscan.pipeline import Pipeline, PipelineConfig
    except ImportError as exc:
        pytest.skip(f"osteoscan.pipeline is not importable yet ({exc}); end-to-end server tests skipped")
    from osteoscan.errors import ModelError

    if weights_dir not in _PIPELINE_STATE:
        try:
            Pipeline(PipelineConfig(weights_dir=Path(weights_dir) if weights_dir else None))
            _PIPELINE_STATE[weights_dir] = ""
        except ModelError as exc:
            _PIPELINE_STATE[weights_dir] = str(exc)
    if _PIPELINE_STATE[weights_dir]:
        loud_skip(f"the pipeline's models are missing ({_PIPELINE_STATE[weights_dir]}); "
                  "end-to-end server tests need the shipped weights")


def pipeline_toml(request: pytest.FixtureRequest) -> str:
    extra = str(request.config.getoption("--server-pipeline-toml", default="") or "")
    return f"[pipeline]\n{extra}\n" if extra else ""


def weights_dir_of(extra_toml: str) -> str:
    return str(tomllib.loads(extra_toml).get("pipeline", {}).get("weights_dir", "")) if extra_toml else ""


#: Phantom inputs of the end-to-end tests: the lumbar preset at a coarse grid (83 x 274 x 274 voxels,
#: about 6 s to generate) for the spine, and the one-slice L3 preset for fast body-composition-only jobs.
PHANTOM_SPACING_MM = (3.0, 1.5, 1.5)


def phantom_series(folder: Path, seed: int, preset: str = "lumbar", **dicom: object) -> tuple[list[Path], str]:
    """A phantom case written as a DICOM series; returns the files and the StudyInstanceUID."""
    from pydicom.uid import generate_uid

    from osteoscan.phantom import generate_case

    case = generate_case(seed, preset, spacing_mm=PHANTOM_SPACING_MM)
    study_uid = str(dicom.pop("study_instance_uid", None) or generate_uid())
    files = write_dicom_series(case.volume, folder, study_instance_uid=study_uid, **dicom)  # type: ignore[arg-type]
    return files, study_uid


# ---- a real `osteoscan serve` process -------------------------------------------------------------

class ServeProcess:
    """``osteoscan serve --config`` in a subprocess on loopback ports, with an HTTP client."""

    def __init__(self, root: Path, *, workers: int = 1, quiet_s: float = 1.0, dest: dict | None = None,
                 extra: str = "") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.api_port, self.dicom_port = free_port(), free_port()
        self.config_path = root / "osteoscan.toml"
        dest_toml = ""
        if dest:
            dest_toml = "[dicom.destination]\n" + "".join(
                f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n" for k, v in dest.items())
        self.config_path.write_text(
            f'[api]\nhost = "{LOOPBACK}"\nport = {self.api_port}\ntoken = "{TOKEN}"\n'
            f'[dicom]\nhost = "{LOOPBACK}"\nport = {self.dicom_port}\nquiet_period_s = {quiet_s}\n'
            f"{dest_toml}"
            f'[jobs]\ndata_dir = "data"\nworkers = {workers}\n{extra}',
            encoding="utf-8",
        )
        self.base = f"http://{LOOPBACK}:{self.api_port}"
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "serve.log"

    def start(self, timeout: float = 60) -> ServeProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "osteoscan.cli", "serve", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"osteoscan serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"osteoscan serve did not become healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def wait_job(self, job_id: str, timeout: float = 300, final: tuple[str, ...] = ("done", "failed", "rejected"),
                 until: Callable[[dict], bool] | None = None, poll_s: float = 0.3) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/v1/jobs/{job_id}").json()
            if (until(job) if until else job["state"] in final):
                return job
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s:\n{self.log()}")

    def jobs(self) -> list[dict]:
        return self.client.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def make(**kwargs: object) -> ServeProcess:
        sp = ServeProcess(tmp_path / f"serve{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(sp)
        return sp.start()

    yield make
    for sp in started:
        sp.stop()
        sp.client.close()


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- a real Orthanc PACS on loopback ----------------------------------------------------------------
ORTHANC_BIN = "/usr/sbin/Orthanc"


class Orthanc:
    """Debian's Orthanc started on free loopback ports with a temp config and storage.

    Orthanc 1.10 has no bind-address option, so it is locked down instead: HTTP only from this machine
    (RemoteAccessAllowed false) and DICOM only from the modality we declare, at 127.0.0.1
    (DicomAlwaysAllowStore/Echo false + DicomCheckModalityHost).
    """

    AET = "ORTHANC"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.config_path = root / "orthanc.json"
        self.log_path = root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{self.http_port}", timeout=120)

    def start(self, modalities: dict[str, tuple[str, int]], timeout: float = 30) -> Orthanc:
        """Start with ``modalities`` (name -> (AE title, port on 127.0.0.1)) known to Orthanc."""
        import json

        cfg = {
            "Name": "osteoscan-test-pacs",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {k: [aet, LOOPBACK, port] for k, (aet, port) in modalities.items()},
            "Plugins": [],
            "StableAge": 2,
            "SaveJobs": False,
            "HttpTimeout": 120,
            "DicomScuTimeout": 60,
        }
        self.config_path.write_text(json.dumps(cfg, indent=1))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([ORTHANC_BIN, str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if self.http.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not start in {timeout} s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()

    def upload(self, files: list[Path]) -> list[dict]:
        out = []
        for f in files:
            r = self.http.post("/instances", content=f.read_bytes())
            r.raise_for_status()
            out.append(r.json())
        return out

    def series_of_study(self, study_uid: str) -> list[dict]:
        """Every series (expanded) of the study with this StudyInstanceUID."""
        r = self.http.post("/tools/find", json={"Level": "Series", "Expand": True,
                                                "Query": {"StudyInstanceUID": study_uid}})
        r.raise_for_status()
        return r.json()

    def instance_tags(self, series: dict) -> list[dict]:
        return [self.http.get(f"/instances/{i}/simplified-tags").json() for i in series["Instances"]]


def orthanc_or_skip() -> None:
    if not Path(ORTHANC_BIN).exists():
        msg = ("\n" + "!" * 78 + "\n!!! Orthanc is not installed (apt-get install orthanc): the PACS round-trip "
               "test is SKIPPED\n" + "!" * 78)
        print(msg, file=sys.stderr)
        pytest.skip("Orthanc not installed (/usr/sbin/Orthanc missing): apt-get install -y orthanc")


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    orthanc_or_skip()
    started: list[Orthanc] = []

    def make(modalities: dict[str, tuple[str, int]]) -> Orthanc:
        o = Orthanc(tmp_path / f"orthanc{len(started)}")
        started.append(o)
        return o.start(modalities)

    yield make
    for o in started:
        o.stop()
