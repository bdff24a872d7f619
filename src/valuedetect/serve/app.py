"""The FastAPI application: loads one detector and answers predictions, explanations and
pyvalues' remote-classifier calls; serves the offline web page at ``/``."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from valuedetect import __version__
from valuedetect.data import Argument, excerpt
from valuedetect.detectors import load_detector, require_values_task
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError
from valuedetect.locate import detector_dir
from valuedetect.serve.counts import category_counts, counts_csv, group_columns
from valuedetect.serve.jobs import RESULT_FORMATS, JobsFull, JobStore, parse_upload
from valuedetect.serve.limits import APIError, BodySizeLimit
from valuedetect.serve.origin import OriginCheck
from valuedetect.serve.runner import ModelRunner
from valuedetect.serve.schemas import (
    ArgumentIn,
    ArgumentResult,
    CategoryExplanationOut,
    CategoryInfo,
    CountSeries,
    CountsOut,
    ErrorResponse,
    ExplainRequest,
    ExplainResponse,
    Health,
    JobOut,
    Level1Info,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    PyvaluesDocument,
    PyvaluesResponse,
    WordOut,
    limited_requests,
)
from valuedetect.serve.settings import ServeSettings, limits_profile
from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES, TAXONOMY_VERSION, categories
from valuedetect.value_systems import calibrate, to_system

STATIC = resources.files("valuedetect") / "serve" / "static"
MAX_FIELD_ERRORS = 20  # problems listed in a 422; `fields_total` counts them all
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when the server requires one)."},
    403: {"model": ErrorResponse, "description": "Host or Origin not allowed (a request from another site)."},
    413: {"model": ErrorResponse, "description": "A size limit was exceeded; `error.limit` names it."},
    422: {"model": ErrorResponse, "description": "Malformed JSON or invalid fields; `error.fields` names them."},
}
_GONE = {"model": ErrorResponse, "description": "The job finished and was removed to make room for newer ones."}


class ServedModel:
    """The loaded detector and what the API reports about it."""

    def __init__(self, detector: Detector, name: str):
        self.detector = detector
        self.name = name
        if detector.thresholds is not None:
            self.thresholds = np.asarray(detector.thresholds.values, dtype=np.float64)
        else:
            self.thresholds = np.full(len(CATEGORY_NAMES), detector.config.fixed_threshold)
        self.level1_thresholds: np.ndarray | None = None
        if detector.predicts_level1:
            self.level1_thresholds = np.asarray(detector.level1_thresholds_in_use().values, dtype=np.float64)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return self.detector.decide(scores)

    def decide_level1(self, scores: np.ndarray) -> np.ndarray:
        return self.detector.decide_level1(scores)


def load_served_model(model_dir: Path | None) -> ServedModel:
    directory = Path(model_dir) if model_dir is not None else detector_dir()
    return ServedModel(require_values_task(load_detector(directory), directory), directory.resolve().name)


def create_app(settings: ServeSettings | None = None, model: ServedModel | None = None) -> FastAPI:
    """Build the app; the detector is loaded here, once, not per request."""
    settings = settings or ServeSettings()
    model = model or load_served_model(settings.model_dir)
    profile = limits_profile(model.detector.type_name)
    settings = settings.for_profile(profile)
    assert settings.max_arguments and settings.max_upload_arguments and settings.explain_max_words
    max_arguments, max_upload_arguments = settings.max_arguments, settings.max_upload_arguments
    explain_max_words = settings.explain_max_words
    detector = model.detector

    def score_levels(arguments: Sequence[Argument]) -> np.ndarray:
        """[n, 20] scores, with the 54 level-1 scores after them for a detector trained on those."""
        level2, level1 = detector.predict_proba_levels(arguments)
        return level2 if level1 is None else np.hstack([level2, level1])

    runner = ModelRunner(score_levels, batching=settings.batching,
                         max_arguments=settings.batch_max_arguments, wait_ms=settings.batch_wait_ms,
                         explain_slice=settings.explain_slice)
    jobs = JobStore(settings.max_jobs_kept, settings.max_jobs_running, settings.max_jobs_queued,
                    seconds_per_argument=lambda: runner.stats.busy_seconds / max(1, runner.stats.arguments) or 0.01)
    predict_model, pyvalues_model = limited_requests(max_arguments)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()
            jobs.close()

    app = FastAPI(
        title="valuedetect",
        version=__version__,
        summary="Which of the 20 Touche23-ValueEval value categories does an argument appeal to?",
        lifespan=lifespan,
    )
    app.state.settings, app.state.model, app.state.runner, app.state.jobs = settings, model, runner, jobs
    app.add_middleware(
        BodySizeLimit,
        limit_for=lambda path: (settings.max_upload_bytes, "max_upload_bytes") if path == "/v1/jobs"
        else (settings.max_body_bytes, "max_body_bytes"),
    )
    # Added last, so it runs first: a request from another site is refused before its body is read.
    app.add_middleware(OriginCheck, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)
    _install_error_handlers(app, max_arguments)
    require_key = _key_check(settings)

    # ------------------------------------------------------------------ helpers
    def check_sizes(arguments: list[ArgumentIn], where: str) -> None:
        if len(arguments) > max_arguments:
            raise APIError(413, "too_many_arguments",
                           f"{len(arguments)} {where} in one request; at most {max_arguments}",
                           "max_arguments")
        for i, argument in enumerate(arguments):
            if argument.characters > settings.max_chars:
                raise APIError(413, "argument_too_long",
                               f"{where}[{i}] has {argument.characters} characters; at most {settings.max_chars}",
                               "max_chars")

    def result(argument_id: str, scores: np.ndarray, decisions: np.ndarray,
               level1: np.ndarray | None = None, level1_decisions: np.ndarray | None = None) -> ArgumentResult:
        return ArgumentResult(
            id=argument_id,
            detected=[c for c, d in zip(CATEGORY_NAMES, decisions, strict=True) if d],
            probabilities={c: float(p) for c, p in zip(CATEGORY_NAMES, scores, strict=True)},
            level1=None if level1 is None else {v: float(p) for v, p in zip(LEVEL1_NAMES, level1, strict=True)},
            level1_detected=None if level1_decisions is None else [
                v for v, d in zip(LEVEL1_NAMES, level1_decisions, strict=True) if d],
        )

    async def predict_levels(arguments: list[Argument]) -> tuple[np.ndarray, np.ndarray | None]:
        both = await runner.predict(arguments)
        width = len(CATEGORY_NAMES)
        return both[:, :width], (both[:, width:] if both.shape[1] > width else None)

    # ------------------------------------------------------------------ endpoints
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(status="ok", model=model.name)

    @app.get("/v1/model", response_model=ModelInfo, tags=["service"], responses={401: _ERRORS[401]},
             dependencies=[Depends(require_key)])
    def model_info() -> ModelInfo:
        def level1_threshold(value: str) -> float | None:
            if model.level1_thresholds is None:
                return None
            return float(model.level1_thresholds[LEVEL1_NAMES.index(value)])

        info = model.detector.info or {}
        thresholds = model.detector.thresholds
        return ModelInfo(
            name=model.name,
            type=model.detector.type_name,
            base_model=info.get("base_model") or model.detector.base_model,
            threshold_mode=thresholds.mode if thresholds is not None else None,
            validation_f1=info.get("validation_f1"),
            parameters_total=info.get("parameters_total"),
            parameters_trainable=info.get("parameters_trainable"),
            taxonomy_version=TAXONOMY_VERSION,
            valuedetect_version=__version__,
            categories=[CategoryInfo(name=c.name, group=c.group, description=c.description,
                                     threshold=float(model.thresholds[c.index]),
                                     level1=[Level1Info(name=v, threshold=level1_threshold(v)) for v in c.level1])
                        for c in categories()],
            predicts_level1=model.level1_thresholds is not None,
            limits={k: getattr(settings, k) for k in ("max_body_bytes", "max_arguments", "max_chars",
                                                      "max_upload_bytes", "max_upload_arguments")},
            limits_profile=profile,
            explain_max_words=explain_max_words,
            jobs={"max_running": settings.max_jobs_running, "max_queued": settings.max_jobs_queued,
                  "max_kept": settings.max_jobs_kept},
        )

    async def predict(request: PredictRequest) -> PredictResponse:
        """Probabilities and decisions for each argument (20 categories, official order)."""
        check_sizes(request.arguments, "arguments")
        arguments = [a.to_argument(i) for i, a in enumerate(request.arguments)]
        scores, level1 = await predict_levels(arguments)
        decisions = model.decide(scores)
        rows = [None] * len(arguments) if level1 is None else list(level1)
        level1_rows = [None] * len(arguments) if level1 is None else list(model.decide_level1(level1))
        return PredictResponse(
            model=model.name,
            results=[result(a.id, s, d, v, vd) for a, s, d, v, vd
                     in zip(arguments, scores, decisions, rows, level1_rows, strict=True)],
        )

    # The body's model carries this server's argument limit, so it is built here, per app.
    predict.__annotations__["request"] = predict_model
    app.post("/v1/predict", response_model=PredictResponse, tags=["values"], responses=_ERRORS,
             dependencies=[Depends(require_key)])(predict)

    @app.post("/v1/explain", response_model=ExplainResponse, tags=["values"], responses=_ERRORS,
              dependencies=[Depends(require_key)])
    async def explain_argument(request: ExplainRequest) -> ExplainResponse:
        """Which words raise each category's probability most (leave-one-word-out occlusion)."""
        check_sizes([request.argument], "argument")
        argument = request.argument.to_argument(0)
        # The argument and its occluded variants, scored in slices between predictions: the
        # argument's own scores decide what is detected, and weights for every category cost no
        # extra forward pass.
        full, explanations = await runner.explain(argument, CATEGORY_NAMES, request.top_k, explain_max_words)
        decisions = model.decide(full[None, :])[0]
        detected = [c for c, d in zip(CATEGORY_NAMES, decisions, strict=True) if d]
        wanted = list(dict.fromkeys(request.categories)) if request.categories is not None else detected
        by_name = {e.category: e for e in explanations}
        return ExplainResponse(
            id=argument.id,
            method=f"leave-one-word-out occlusion (first {explain_max_words} words)",
            detected=detected,
            probabilities={c: float(p) for c, p in zip(CATEGORY_NAMES, full, strict=True)},
            explanations=[
                CategoryExplanationOut(
                    category=name,
                    probability=by_name[name].probability,
                    threshold=float(model.thresholds[CATEGORY_NAMES.index(name)]),
                    detected=name in detected,
                    words=[WordOut(word=w.word.text, field=w.word.field, start=w.word.start, end=w.word.end,
                                   weight=w.weight) for w in by_name[name].words],
                )
                for name in wanted
            ],
        )

    @app.post("/v1/jobs", response_model=JobOut, status_code=202, tags=["files"],
              responses={**_ERRORS, 429: {"model": ErrorResponse, "description": (
                  "Every running and queued job slot is taken; retry after `Retry-After` seconds.")}},
              dependencies=[Depends(require_key)])
    async def upload(
        file: Annotated[UploadFile, File(description="Arguments as .tsv, .csv, .jsonl or .txt (one text per line)")],
        text_column: Annotated[str, Form(description="Text column, for files without a Premise column")] = "text",
    ) -> JobOut:
        """Label a whole file in the background; poll the job, then download the results.

        At most `max_running` jobs label at once and `max_queued` wait (see `/v1/model`);
        beyond that the upload is refused with 429 and a `Retry-After` header."""
        jobs_full(jobs.check_capacity)  # before the file is parsed: a full queue costs nothing
        data = await file.read()
        name = file.filename or "upload.txt"
        try:
            arguments = await asyncio.to_thread(parse_upload, data, name, text_column)
        except InputError as error:
            raise APIError(422, "invalid_file", str(error)) from None
        if len(arguments) > max_upload_arguments:
            raise APIError(413, "too_many_rows", f"{name} holds {len(arguments)} arguments; at most "
                           f"{max_upload_arguments}", "max_upload_arguments")
        too_long = next((a for a in arguments if len(a.premise) + len(a.conclusion) > settings.max_chars), None)
        if too_long is not None:
            raise APIError(413, "argument_too_long", f"{name}: argument {excerpt(too_long.id)} is longer than "
                           f"{settings.max_chars} characters", "max_chars")
        groups = await asyncio.to_thread(group_columns, data, name, len(arguments), text_column)
        job = jobs_full(lambda: jobs.start(
            name, arguments, lambda batch: runner.run_blocking(model.detector.predict_proba, batch), model.decide,
            groups=groups))
        return _job_out(job)

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["files"],
             responses={404: {"model": ErrorResponse}, 410: _GONE, 401: _ERRORS[401], 422: _ERRORS[422]},
             dependencies=[Depends(require_key)])
    def job_status(job_id: str) -> JobOut:
        return _job_out(_find_job(jobs, job_id))

    @app.get("/v1/jobs/{job_id}/results.{fmt}", tags=["files"], response_class=FileResponse,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 410: _GONE,
                        401: _ERRORS[401], 422: _ERRORS[422]},
             dependencies=[Depends(require_key)])
    def job_results(job_id: str, fmt: Literal["tsv", "csv", "jsonl"]) -> FileResponse:
        """The finished job's results: an official run file (tsv), a table (csv) or JSON lines."""
        job = _find_job(jobs, job_id)
        if job.status != "done":
            raise APIError(409, "job_not_done", f"job {job_id} is {job.status}")
        stem = Path(job.filename).stem or "results"
        return FileResponse(jobs.result_path(job, fmt), filename=f"{stem}-values.{fmt}")

    @app.get("/v1/jobs/{job_id}/counts", response_model=CountsOut, tags=["files"],
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 410: _GONE,
                        401: _ERRORS[401], 422: _ERRORS[422]},
             dependencies=[Depends(require_key)])
    def job_counts(job_id: str, group: str | None = None) -> CountsOut:
        """How often each category was detected across the file; with `group` (one of the job's
        `group_columns`), one series per value of that column."""
        job, series = _job_counts(jobs, job_id, group)
        return CountsOut(job=job.id, texts=job.total, group=group, categories=list(CATEGORY_NAMES),
                         series=[CountSeries(name=s.name, texts=s.texts, detected=s.detected) for s in series])

    @app.get("/v1/jobs/{job_id}/counts.csv", tags=["files"], response_class=Response,
             responses={200: {"content": {"text/csv": {}}, "description": "The counts as CSV."},
                        404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 410: _GONE,
                        401: _ERRORS[401], 422: _ERRORS[422]},
             dependencies=[Depends(require_key)])
    def job_counts_csv(job_id: str, group: str | None = None) -> Response:
        """The counts as a table: group, texts, category, detected, share (one row per group and category)."""
        job, series = _job_counts(jobs, job_id, group)
        stem = Path(job.filename).stem or "results"
        suffix = f"-by-{group}" if group else ""
        return Response(counts_csv(series, group), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{_safe_name(f"{stem}-counts{suffix}.csv")}"'})

    async def pyvalues_classify(
        system: Literal["refined", "refined-coarse", "original"],
        document: PyvaluesDocument,
        scores: Literal["calibrated", "probability", "decision"] = "calibrated",
    ) -> PyvaluesResponse:
        """pyvalues' remote-classifier protocol: one value dictionary per segment.

        `refined`: 19 values (our 20 minus Universalism: objectivity); `refined-coarse`: 12;
        `original`: 10. Merged values take the maximum of their members. `calibrated` scores
        put each category's threshold at 0.5, so pyvalues' default binarisation reproduces
        this detector's decisions.
        """
        if document.language.lower() != "en":
            raise APIError(422, "unsupported_language",
                           f"language {document.language!r} is not supported; this detector reads English ('en')")
        segments = document.segments or []
        if len(segments) > max_arguments:
            raise APIError(413, "too_many_arguments", f"{len(segments)} segments; at most {max_arguments}",
                           "max_arguments")
        for i, segment in enumerate(segments):
            if not segment.strip():
                raise APIError(422, "empty_text", f"segments[{i}] is empty")
            if len(segment) > settings.max_chars:
                raise APIError(413, "argument_too_long",
                               f"segments[{i}] has {len(segment)} characters; at most {settings.max_chars}",
                               "max_chars")
        if not segments:
            return PyvaluesResponse(values=[])
        arguments = [ArgumentIn(text=s).to_argument(i) for i, s in enumerate(segments)]
        raw, _ = await predict_levels(arguments)
        if scores == "calibrated":
            shown = calibrate(raw, model.thresholds)
        elif scores == "decision":
            shown = model.decide(raw).astype(np.float64)
        else:
            shown = raw
        return PyvaluesResponse(values=to_system(shown, system))

    pyvalues_classify.__annotations__["document"] = pyvalues_model
    app.post("/pyvalues/{system}", response_model=PyvaluesResponse, tags=["pyvalues"], responses=_ERRORS,
             dependencies=[Depends(require_key)])(pyvalues_classify)

    return app


def jobs_full(call: Any) -> Any:
    """``call()``, with a full job queue answered by 429 and ``Retry-After``."""
    try:
        return call()
    except JobsFull as error:
        raise APIError(429, "too_many_jobs", str(error), "max_jobs_queued",
                       headers={"Retry-After": str(error.retry_after)}) from None


# ---------------------------------------------------------------------- small pieces
def _job_out(job: Any) -> JobOut:
    downloads = {fmt: f"/v1/jobs/{job.id}/results.{fmt}" for fmt in RESULT_FORMATS} if job.status == "done" else {}
    return JobOut(id=job.id, status=job.status, done=job.done, total=job.total, filename=job.filename,
                  error=job.error, downloads=downloads, group_columns=list(job.groups),
                  queue_position=job.queue_position if job.status == "queued" else None)


def _job_counts(jobs: JobStore, job_id: str, group: str | None) -> tuple[Any, list[Any]]:
    job = _find_job(jobs, job_id)
    if job.status != "done" or job.decisions is None:
        raise APIError(409, "job_not_done", f"job {job_id} is {job.status}")
    if group is not None and group not in job.groups:
        offered = ", ".join(repr(g) for g in job.groups) or "none (no column has 2 to 50 distinct values)"
        raise APIError(422, "unknown_group", f"{excerpt(group)} cannot group this file; its group columns: {offered}")
    return job, category_counts(job.decisions, job.groups[group] if group is not None else None)


def _safe_name(name: str) -> str:
    """A file name for a Content-Disposition header: no quotes, no line breaks, ASCII."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


def _find_job(jobs: JobStore, job_id: str) -> Any:
    job = jobs.get(job_id)
    if job is None:
        gone = jobs.why_gone(job_id)
        if gone is not None:
            raise APIError(410, "job_removed", gone)
        raise APIError(404, "unknown_job", f"no job {excerpt(job_id)} (jobs are kept in memory until the server "
                       "stops, the last few finished ones only)")
    return job


def _key_check(settings: ServeSettings) -> Any:
    """A dependency that demands ``Authorization: Bearer <key>`` when a key is configured."""

    def check(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'")

    return check


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error that quotes a client's text can
    never fail to encode (a lone surrogate in UTF-8 does), so it never becomes a bare 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _install_error_handlers(app: FastAPI, max_arguments: int) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        headers.update(error.headers or {})
        return SafeJSONResponse(error.body(), status_code=error.status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        for problem in problems:
            loc = [part for part in problem.get("loc", ()) if part != "body"]
            if problem.get("type") == "too_long" and loc in (["arguments"], ["segments"]):
                # The schema's max_length stopped validation at the limit: the usual 413.
                count = (problem.get("ctx") or {}).get("actual_length") or f"more than {max_arguments}"
                return SafeJSONResponse(APIError(
                    413, "too_many_arguments", f"{count} {loc[0]} in one request; at most {max_arguments}",
                    "max_arguments").body(), status_code=413)
        fields = []
        for problem in problems[:MAX_FIELD_ERRORS]:
            location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
            message = str(problem.get("msg", "invalid"))
            if problem.get("type") == "json_invalid":
                position = problem.get("loc", ("body", "?"))[-1]
                location = "body"
                message = f"malformed JSON at character {position} ({problem.get('ctx', {}).get('error', '?')})"
            fields.append({"field": location[:200], "problem": message.removeprefix("Value error, ")[:300]})
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        if len(problems) > len(fields):
            summary += f" (and {len(problems) - len(fields)} more problems)"
        body = {"error": {"code": "invalid_request", "message": summary, "fields": fields,
                          "fields_total": len(problems)}}
        return SafeJSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        api = getattr(error, "api_error", None)
        if api is not None:
            return SafeJSONResponse(api.body(), status_code=api.status)
        if error.status_code == 400:
            # FastAPI and Starlette answer 400 when a body cannot be parsed at all (JSON that is not
            # UTF-8, broken multipart): a malformed body, reported like malformed JSON.
            problem = f"malformed request body ({error.detail})"
            fields = [{"field": "body", "problem": problem}]
            return SafeJSONResponse(
                {"error": {"code": "invalid_request", "message": f"body: {problem}", "fields": fields}},
                status_code=422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return SafeJSONResponse({"error": {"code": code, "message": str(error.detail)}},
                                status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # A bug, not the client's fault; the body says so in the usual shape, not as plain text.
        return SafeJSONResponse({"error": {"code": "internal_error", "message": (
            f"the server failed on this request ({type(error).__name__}); other requests are not affected")}},
            status_code=500)
