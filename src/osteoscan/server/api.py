"""The REST API and the web viewer (FastAPI): one app, one port, everything offline.

Every ``/api/v1`` route needs the API token, given as ``Authorization: Bearer <token>`` or, for the
browser, as the HttpOnly ``osteoscan_token`` cookie set by ``POST /api/v1/session`` (SameSite=Strict,
so other sites cannot ride on it). ``/health`` and ``/metrics`` are open (no patient data) so that
load balancers and Prometheus can reach them. The OpenAPI schema is at ``/openapi.json``; the
interactive docs pages are off because they load their scripts from a CDN.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from osteoscan import __version__
from osteoscan.errors import InputError
from osteoscan.server.intake import ingest
from osteoscan.server.limits import BodySizeLimit
from osteoscan.server.metrics import CONTENT_TYPE, render_metrics
from osteoscan.server.render import PLANES, WINDOWS, load_study_images, render_overlay, render_slice
from osteoscan.server.service import Service
from osteoscan.server.store import Job, JobState, SendState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
COOKIE_NAME = "osteoscan_token"
#: Plausible ranges of the patient fields (the same as osteoscan.pipeline.config.PatientInfo checks).
HEIGHT_RANGE_CM = (50.0, 250.0)
AGE_RANGE_Y = (0.0, 130.0)
#: Most files in one multipart upload: a thin-slice CT has up to a few thousand slices (zip them beyond).
MAX_UPLOAD_FILES = 10_000
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MEDIA_TYPES = {".glb": "model/gltf-binary", ".dcm": "application/dicom", ".gz": "application/gzip",
               ".json": "application/json", ".pdf": "application/pdf", ".html": "text/html"}

_bearer = HTTPBearer(auto_error=False, description="the API token (api.token or <data_dir>/api_token)")
_cookie = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="set by POST /api/v1/session")


class SessionRequest(BaseModel):
    token: str


def _job_json(job: Job, service: Service) -> dict[str, Any]:
    d = job.to_dict()
    out = service.store.output_dir(job.id)
    d["outputs"] = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    return d


def create_app(service: Service) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops ``service``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="osteoscan edge service",
        version=__version__,
        description="Opportunistic bone-density, fracture and body-composition screening on CT: "
        "upload a study or send it by DICOM, follow the job, fetch the results.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        form_limits={"max_files": MAX_UPLOAD_FILES},
    )
    app.add_middleware(BodySizeLimit, max_bytes=service.config.max_upload_bytes)
    app.state.service = service
    store = service.store

    def require_token(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        cookie: Annotated[str | None, Depends(_cookie)],
    ) -> None:
        given = bearer.credentials if bearer is not None else cookie
        if not given or not secrets.compare_digest(given.encode(), service.token.encode()):
            raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]

    def get_job(job_id: str) -> Job:
        job = store.get(job_id) if job_id.isalnum() else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    # ---- open endpoints ----------------------------------------------------------------------
    @app.get("/health", tags=["service"], summary="Liveness and readiness")
    def health() -> JSONResponse:
        h = service.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(render_metrics(store, service.live), media_type=CONTENT_TYPE)

    @app.post("/api/v1/session", tags=["auth"], status_code=204, summary="Log the browser in (sets a cookie)")
    def login(body: SessionRequest, response: Response) -> Response:
        if not secrets.compare_digest(body.token.encode(), service.token.encode()):
            raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})
        response.status_code = 204
        response.set_cookie(COOKIE_NAME, body.token, httponly=True, samesite="strict", path="/")
        return response

    @app.delete("/api/v1/session", tags=["auth"], status_code=204, summary="Log the browser out")
    def logout(response: Response) -> Response:
        response.status_code = 204
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    # ---- studies and jobs --------------------------------------------------------------------
    @app.post("/api/v1/studies", tags=["jobs"], dependencies=auth, status_code=202,
              summary="Upload a study (zip, DICOM files or one NIfTI) and queue it",
              responses={422: {"description": "rejected at intake; the job is kept with the reason"},
                         413: {"description": "the upload is larger than api.max_upload_mb"}})
    def upload(
        files: Annotated[list[UploadFile], File(description="a zip, DICOM files, or one .nii/.nii.gz")],
        patient_height_cm: Annotated[float | None, Form(ge=HEIGHT_RANGE_CM[0], le=HEIGHT_RANGE_CM[1])] = None,
        patient_sex: Annotated[str | None, Form(pattern="^[MFmf]$")] = None,
        patient_age: Annotated[float | None, Form(ge=AGE_RANGE_Y[0], le=AGE_RANGE_Y[1])] = None,
    ) -> JSONResponse:
        job_id = store.new_id()
        inp = store.input_dir(job_id)
        inp.mkdir(parents=True)
        saved: list[Path] = []
        for i, up in enumerate(files):
            name = _SAFE_NAME.sub("_", Path(up.filename or "").name).lstrip(".") or "upload"
            target = inp / f"{i:05d}-{name}"
            with open(target, "wb") as fh:
                shutil.copyfileobj(up.file, fh, 1 << 20)
            saved.append(target)
        patient = {"patient_height_cm": patient_height_cm,
                   "patient_sex": patient_sex.upper() if patient_sex else None, "patient_age": patient_age}
        try:
            info = ingest(saved, inp, service.config.max_unzipped_bytes)
        except InputError as exc:
            shutil.rmtree(store.job_dir(job_id), ignore_errors=True)
            service.uploads_rejected += 1
            names = ", ".join(up.filename or "?" for up in files[:3])
            log.warning("upload %s (%s) rejected: %s", job_id, names, exc)
            job = store.create(job_id, source="upload", input_kind="unknown", state=JobState.REJECTED,
                               reason=str(exc), n_files=len(files), **patient)
            return JSONResponse(_job_json(job, service), status_code=422)
        job = store.create(job_id, source="upload", input_kind=info.input_kind, n_files=info.n_files,
                           study_uid=info.study_uid, series_uid=info.series_uid, patient_id=info.patient_id,
                           description=info.description, **patient)
        log.info("upload %s queued (%s, %d file(s))", job_id, info.input_kind, info.n_files)
        return JSONResponse(_job_json(job, service), status_code=202)

    @app.get("/api/v1/jobs", tags=["jobs"], dependencies=auth, summary="List jobs, newest first")
    def list_jobs(state: JobState | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                  offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        jobs = store.list(state, limit, offset)
        return {"jobs": [_job_json(j, service) for j in jobs], "counts": store.counts()}

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"], dependencies=auth,
             summary="One job: state, reason, progress, stage, send state, key findings, outputs")
    def job_detail(job_id: str) -> dict[str, Any]:
        return _job_json(get_job(job_id), service)

    def _output(job_id: str, rel: str) -> FileResponse:
        job = get_job(job_id)
        out = store.output_dir(job.id).resolve()
        if job.state is not JobState.DONE or not out.is_dir():
            raise HTTPException(409, f"job {job.id} is {job.state.value}: no outputs")
        path = (out / rel).resolve()
        if not path.is_relative_to(out) or not path.is_file():
            raise HTTPException(404, f"job {job.id} has no output {rel!r}")
        media = MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, filename=path.name if path.suffix == ".dcm" else None)

    @app.get("/api/v1/jobs/{job_id}/result.json", tags=["results"], dependencies=auth)
    def result_json(job_id: str) -> FileResponse:
        return _output(job_id, "result.json")

    @app.get("/api/v1/jobs/{job_id}/report.pdf", tags=["results"], dependencies=auth)
    def report_pdf(job_id: str) -> FileResponse:
        return _output(job_id, "report.pdf")

    @app.get("/api/v1/jobs/{job_id}/files/{rel:path}", tags=["results"], dependencies=auth,
             summary="Any output: seg.dcm, sr.dcm, report_pdf.dcm, sc/*.dcm, spine.glb, labels.nii.gz ...")
    def output_file(job_id: str, rel: str) -> FileResponse:
        return _output(job_id, rel)

    def _images(job: Job) -> Any:
        if job.state is not JobState.DONE:
            raise HTTPException(409, f"job {job.id} is {job.state.value}: no images")
        inp = store.input_dir(job.id)
        if not inp.is_dir():
            raise HTTPException(410, f"the input of job {job.id} was not retained (jobs.retain_inputs)")
        files = [p for p in inp.rglob("*") if p.is_file()]
        source = files[0] if job.input_kind == "nifti" and len(files) == 1 else inp
        comp = (job.summary or {}).get("l3_slice_index")
        return service.images.get(job.id, lambda: load_study_images(source, job.series_uid,
                                                                    store.output_dir(job.id), comp))

    @app.get("/api/v1/jobs/{job_id}/images", tags=["images"], dependencies=auth,
             summary="Geometry of the job's CT for the viewer (shape, spacing, slice counts)")
    def images_info(job_id: str) -> dict[str, Any]:
        return _images(get_job(job_id)).info()

    @app.get("/api/v1/jobs/{job_id}/images/{plane}/{index}.png", tags=["images"], dependencies=auth,
             summary="A CT slice (axial or sagittal) as PNG; overlay=true gives the label overlay instead",
             response_class=Response)
    def slice_png(job_id: str, plane: str, index: int, window: str = "soft", overlay: bool = False) -> Response:
        if plane not in PLANES:
            raise HTTPException(404, f"plane {plane!r}: use one of {PLANES}")
        if window not in WINDOWS:
            raise HTTPException(422, f"window {window!r}: use one of {sorted(WINDOWS)}")
        images = _images(get_job(job_id))
        try:
            png = render_overlay(images, plane, index) if overlay else render_slice(images, plane, index, window)
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from exc
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/v1/jobs/{job_id}/rerun", tags=["jobs"], dependencies=auth, status_code=202,
              summary="Run a finished job again (same input)")
    def rerun(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        if not store.input_dir(job.id).is_dir():
            raise HTTPException(409, f"job {job.id} has no retained input to run again")
        service.images.drop(job.id)
        out = store.output_dir(job.id)
        new = store.rerun(job.id)
        if new is None:
            raise HTTPException(409, f"job {job.id} is {job.state.value}; only finished jobs can be re-run")
        shutil.rmtree(out, ignore_errors=True)
        return _job_json(new, service)

    @app.post("/api/v1/jobs/{job_id}/send", tags=["jobs"], dependencies=auth, status_code=202,
              summary="(Re)send the job's DICOM outputs to the configured destination")
    def resend(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        if service.sender is None:
            raise HTTPException(409, "no DICOM destination configured ([dicom.destination] ae_title)")
        if job.state is not JobState.DONE:
            raise HTTPException(409, f"job {job.id} is {job.state.value}: nothing to send")
        store.set_send(job.id, SendState.PENDING, None, 0)
        return _job_json(get_job(job_id), service)

    @app.delete("/api/v1/jobs/{job_id}", tags=["jobs"], dependencies=auth, status_code=204,
                summary="Delete a job with its input and outputs")
    def delete(job_id: str) -> Response:
        job = get_job(job_id)
        if not store.delete(job.id):
            raise HTTPException(409, f"job {job.id} is running; wait for it to finish")
        service.images.drop(job.id)
        shutil.rmtree(store.job_dir(job.id), ignore_errors=True)
        return Response(status_code=204)

    # ---- the web viewer ----------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def worklist_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/study/{job_id}", include_in_schema=False)
    def study_page(job_id: str) -> FileResponse:
        return FileResponse(STATIC_DIR / "study.html")

    @app.exception_handler(KeyError)
    async def _bad_id(_: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"detail": f"no job {exc.args[0]!r}"}, status_code=404)

    return app
