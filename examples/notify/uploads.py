"""Uploads: CSV files cleaned by a job, images turned into thumbnails in the process pool.

A CSV over ``NOTIFY_CHUNK_MB`` is cleaned by a workflow instead (split, a chunk step per
range in parallel, a merge that publishes the same files); its id is the workflow's, whose
result is the merge's, and its status sums up the steps.

An upload is written to the data folder before its job is stored, so a worker on the same
machine (or sharing the folder) always finds it; the size limit is the body limit of its
path (``BodySizeLimitMiddleware``), so a body past it is refused as it streams in.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BaseModel

from examples.notify.db import SessionDep, Upload
from examples.notify.images import SIZES, NotAnImage, check_image
from examples.notify.service import JOB_RESPONSES, READ_RESPONSES, TOKEN_RESPONSES, Service, invalid
from offload import Job, JobState, chain, chord
from offload.canvas import Canvas
from offload.fastapi import Detail
from offload.records import JobRecord
from offload.stores.base import Workflows

# A chunked file's graph grows with its chunks (each takes the plan of them all).
MAX_CHUNKS = 64
# How much of a chunked file's work each kind of step is, for its status's one fraction.
STEP_WEIGHTS = {"notify.split_file": 0.1, "notify.clean_chunk": 0.6, "notify.merge_chunks": 0.3}
OUTPUTS = {"cleaned.csv": "text/csv", "data.jsonl": "application/x-ndjson"}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Detail, "description": "no such upload, or its output is not ready"},
    **TOKEN_RESPONSES,
}


class UploadAccepted(BaseModel):
    id: str
    job_id: str
    status_url: str


class UploadStatus(BaseModel):
    id: str
    filename: str
    status: str
    progress: dict[str, Any] | None
    summary: dict[str, Any] | None
    error: str | None
    downloads: dict[str, str]


def _save(upload: UploadFile, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    partial.replace(target)
    return target.stat().st_size


def uploads_router(service: Service) -> APIRouter:
    router = APIRouter(dependencies=[Depends(service.require_token())])
    settings, tasks = service.settings, service.tasks

    async def store(upload: UploadFile, kind: str, name: str) -> tuple[str, Path, int]:
        upload_id = uuid.uuid4().hex
        target = settings.uploads / upload_id / name
        size = await asyncio.to_thread(_save, upload, target)
        if size == 0:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise invalid("file", "the file is empty")
        return upload_id, target, size

    async def accepted(
        request: Request, session: SessionDep, row: Upload, job_id: str
    ) -> UploadAccepted:
        row.job_id = job_id
        session.add(row)
        await session.commit()
        kind = "files" if row.kind == "csv" else "images"
        return UploadAccepted(id=row.id, job_id=job_id, status_url=f"/{kind}/{row.id}")

    @router.post("/files", status_code=status.HTTP_202_ACCEPTED, responses=JOB_RESPONSES)
    async def upload_file(
        request: Request, session: SessionDep, file: Annotated[UploadFile, File()]
    ) -> UploadAccepted:
        """A CSV to convert and clean; answered at once, the work is the job's."""
        upload_id, _, size = await store(file, "csv", "original.csv")
        chunk = settings.chunk_bytes
        # A store without the workflow capability (offload.stores.base.Workflows) refuses a
        # workflow's enqueue with ConfigError; there a big file takes the one-job path,
        # which publishes the same files, only without the parallel chunks.
        if 0 < chunk < size and isinstance(service.jobs.store, Workflows):
            workflow = chunked(service, upload_id, -(-size // chunk))
            job = await service.enqueue_workflow(workflow, key=f"clean:{upload_id}")
        else:
            [job] = await service.enqueue(
                [tasks.clean_file.options(key=f"clean:{upload_id}").prepare(upload_id)]
            )
        row = Upload(id=upload_id, kind="csv", filename=_name(file), size=size)
        return await accepted(request, session, row, job.id)

    @router.post("/images", status_code=status.HTTP_202_ACCEPTED, responses=JOB_RESPONSES)
    async def upload_image(
        request: Request, session: SessionDep, file: Annotated[UploadFile, File()]
    ) -> UploadAccepted:
        """An image to make thumbnails of (64, 256 and 1024 pixels), on the CPU pool."""
        upload_id, source, size = await store(file, "image", "original")
        try:
            await asyncio.to_thread(check_image, source)
        except NotAnImage as exc:
            shutil.rmtree(source.parent, ignore_errors=True)
            raise invalid("file", str(exc)) from None
        out = settings.outputs / upload_id
        call = tasks.make_thumbnails.options(key=f"thumbs:{upload_id}")
        [job] = await service.enqueue([call.prepare(str(source.resolve()), str(out.resolve()))])
        row = Upload(id=upload_id, kind="image", filename=_name(file), size=size)
        return await accepted(request, session, row, job.id)

    async def status_of(session: SessionDep, upload_id: str, kind: str) -> UploadStatus:
        row = await session.get(Upload, upload_id)
        if row is None or row.kind != kind or row.job_id is None:
            raise HTTPException(404, detail=f"no {kind} upload {upload_id!r}")
        job = await service.jobs.get(row.job_id)
        steps = [] if job is None else await job.steps()
        if job is None:  # purged past retention: the outputs tell what became of it
            state, progress, error = "unknown", None, None
        elif steps:
            state, progress, error = workflow_status(job, steps)
        else:
            state, error = job.state.value, job.error.message if job.error else None
            progress = None if job.progress is None else {
                "fraction": job.progress.fraction, "message": job.progress.message}  # fmt: skip
        out = settings.outputs / upload_id
        summary, downloads = None, {}
        prefix = "files" if kind == "csv" else "images"
        if kind == "csv" and (out / "summary.json").exists():
            summary = json.loads((out / "summary.json").read_text())
            downloads = {name: f"/files/{upload_id}/{name}" for name in OUTPUTS}
        elif kind == "image" and job is not None and job.state is JobState.SUCCEEDED:
            downloads = {str(s): f"/{prefix}/{upload_id}/{s}.jpg" for s in SIZES}
        return UploadStatus(
            id=upload_id, filename=row.filename, status=state, progress=progress,
            summary=summary, error=error, downloads=downloads,
        )  # fmt: skip

    @router.get("/files/{upload_id}", responses={**NOT_FOUND, **READ_RESPONSES})
    async def file_status(upload_id: str, session: SessionDep) -> UploadStatus:
        return await status_of(session, upload_id, "csv")

    @router.get("/images/{upload_id}", responses={**NOT_FOUND, **READ_RESPONSES})
    async def image_status(upload_id: str, session: SessionDep) -> UploadStatus:
        return await status_of(session, upload_id, "image")

    @router.get(
        "/files/{upload_id}/{name}",
        response_class=FileResponse,
        responses={200: {"content": {t: {} for t in OUTPUTS.values()}}, **NOT_FOUND},
    )
    async def file_output(upload_id: str, name: str) -> FileResponse:
        return _download(settings.outputs / _safe(upload_id) / name, name in OUTPUTS, name)

    @router.get(
        "/images/{upload_id}/{name}",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, **NOT_FOUND},
    )
    async def image_output(upload_id: str, name: str) -> FileResponse:
        known = name in {f"{s}.jpg" for s in SIZES}
        return _download(settings.outputs / _safe(upload_id) / name, known, name)

    return router


def chunked(service: Service, upload_id: str, count: int) -> Canvas:
    """Split, clean each range in parallel, merge in range order."""
    tasks, count = service.tasks, min(count, MAX_CHUNKS)
    return chain(
        tasks.split_file.s(upload_id, count),
        chord(tasks.clean_chunk.map(range(count)), tasks.merge_chunks.s(upload_id)),
    )


def workflow_status(
    job: Job[Any], steps: list[JobRecord]
) -> tuple[str, dict[str, Any] | None, str | None]:
    """A chunked file's state, progress and error, as one job's would read: running while
    any step runs, failed with the failed step's own error (the steps it stopped are
    cancelled), and a fraction that sums up the steps' fractions by their weights."""
    failed = next((step for step in steps if step.state is JobState.FAILED), None)
    if job.state.finished:
        state = "failed" if failed is not None else job.state.value
    elif any(step.state is JobState.RUNNING for step in steps):
        state = "running"
    else:
        state = "queued"
    source = failed or job
    error = source.error.message if source.error else None
    fraction, message, started = 0.0, "", False
    for task, weight in STEP_WEIGHTS.items():
        mine = [step for step in steps if step.task == task]
        done = [_done(step) for step in mine]
        fraction += weight * sum(done) / max(len(done), 1)
        started = started or any(done)
        running = [step for step in mine if step.state is JobState.RUNNING and step.progress]
        if task == "notify.clean_chunk" and running:
            finished = sum(step.state is JobState.SUCCEEDED for step in mine)
            message = f"cleaning {len(mine)} chunks in parallel ({finished} done)"
        elif running and running[0].progress is not None:
            message = running[0].progress.message
    if job.state is JobState.SUCCEEDED:
        fraction, message = 1.0, job.progress.message if job.progress else "done"
    if not started:
        return state, None, error
    return state, {"fraction": round(min(fraction, 1.0), 4), "message": message}, error


def _done(step: JobRecord) -> float:
    if step.state is JobState.SUCCEEDED:
        return 1.0
    return step.progress.fraction if step.progress is not None else 0.0


def _name(upload: UploadFile) -> str:
    return Path(upload.filename or "upload").name[:255] or "upload"


def _safe(upload_id: str) -> str:
    if not (len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id)):
        raise HTTPException(404, detail=f"no upload {upload_id!r}")
    return upload_id


def _download(path: Path, known: bool, name: str) -> FileResponse:
    if not known or not path.is_file():
        raise HTTPException(404, detail=f"{name} is not ready, or there is no such output")
    media = OUTPUTS.get(name, "image/jpeg")
    return FileResponse(path, media_type=media, filename=name)
