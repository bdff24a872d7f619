"""The ``valuedetect`` command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from valuedetect.errors import InputError, ValueDetectError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find the human values behind arguments (Touche23-ValueEval, SemEval-2023 Task 4).",
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn user-caused errors into one readable line and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ValueDetectError as error:
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as interrupt:
            hint = getattr(interrupt, "hint", None) or INTERRUPTED.get(func.__name__,
                                                                       "outputs written so far are intact")
            err_console.print(f"[yellow]interrupted[/]: {hint}")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# What an interrupted command leaves behind, and how to go on.
INTERRUPTED = {
    "train": "outputs written so far are intact; `valuedetect train ... --resume` continues a training run",
    "predict": "nothing was labelled yet and nothing was written (an existing output is left as it was); run the "
               "command again to label the texts",
}


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display fed by the library's (task, done, total) callbacks."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield update


def nli_table(scores: Any, title: str) -> Table:
    """The NLI side task's scores: accuracy with its interval, macro F1, n."""
    table = Table(title=title, title_justify="left")
    for column in ("accuracy [95% CI]", "macro F1", "n"):
        table.add_column(column, justify="right")
    ci = f" [{scores.ci95[0]:.3f}, {scores.ci95[1]:.3f}]" if scores.ci95 else ""
    table.add_row(f"[bold]{scores.accuracy:.3f}[/]{ci}", f"{scores.macro_f1:.3f}", str(scores.n))
    return table


def scores_table(scores: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("category")
    for column in ("P", "R", "F1", "support", "predicted"):
        table.add_column(column, justify="right")
    for name, entry in scores.per_category.items():
        if entry["support"] == 0:
            table.add_row(name, "-", "-", "-", "0", str(entry["predicted"]), style="dim")
        else:
            table.add_row(name, f"{entry['precision']:.3f}", f"{entry['recall']:.3f}", f"{entry['f1']:.3f}",
                          str(entry["support"]), str(entry["predicted"]))
    table.add_section()
    ci = f" [{scores.ci95[0]:.3f}, {scores.ci95[1]:.3f}]" if scores.ci95 else ""
    table.add_row("[bold]official (macro P, R; F1 = 2PR/(P+R))", f"{scores.precision:.3f}",
                  f"{scores.recall:.3f}", f"[bold]{scores.f1:.3f}[/]{ci}", str(scores.n), "")
    table.add_row("mean of category F1 (not official)", "", "", f"{scores.mean_f1:.3f}", "", "", style="dim")
    return table


# --------------------------------------------------------------------------------- train


@app.command()
@user_errors
def train(
    config: Annotated[Path | None, typer.Option(help="TOML training config (see configs/).")] = None,
    method: Annotated[str | None, typer.Option(help="Method with default settings, instead of --config.")] = None,
    task: Annotated[str | None, typer.Option(
        help="values (default): the 20 value categories; nli: does the premise support its conclusion "
             "(label: the stance; methods encoder and prompt).")] = None,
    output: Annotated[Path | None, typer.Option(help="Folder for the detector and its runs.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: the shipped copy).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False,
    backend: Annotated[str | None, typer.Option(
        help="llm/prompt: transformers, llamacpp, openai or llamacpp-server (see valuedetect.lm).")] = None,
    base_url: Annotated[str | None, typer.Option(help="llm/openai: the endpoint, e.g. http://127.0.0.1:8080/v1.")
                        ] = None,
    model: Annotated[str | None, typer.Option(help="Model alias, path, Hub name or API model name.")] = None,
    strategy: Annotated[str | None, typer.Option(help="llm: per-value, all-in-one, few-shot or cot.")] = None,
    template: Annotated[str | None, typer.Option(
        help="prompt: mbc, bca, oa, nli or a config-defined template; encoder: plain, cls, premise_first or pair.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score a seeded subset of N validation arguments.")] = None,
    sample: Annotated[float | None, typer.Option(help="Score a seeded fraction of validation, e.g. 0.05.")] = None,
    subset_seed: Annotated[int | None, typer.Option(help="Seed of the --limit/--sample subset.")] = None,
    train_per_category: Annotated[int | None, typer.Option(
        min=1, help="Train on k seeded arguments per category (few-shot).")] = None,
    train_fraction: Annotated[float | None, typer.Option(help="Train on a seeded fraction of training.")] = None,
    cross_fit_folds: Annotated[int | None, typer.Option(
        min=2, help="Cross-fitting for out-of-fold teacher scores: split the fit split into K folds (by "
                    "conclusion, seeded by --subset-seed) ...")] = None,
    cross_fit_fold: Annotated[int | None, typer.Option(
        min=0, help="... and train on all of them but this one (0..K-1); see `valuedetect teacher-scores`.")] = None,
    predict_test: Annotated[bool | None, typer.Option(
        help="Also label the test split (default: yes, except for --method llm).")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="heldout (default): choose on a dev slice of training, score validation once; paper: choose and "
             "score on validation (optimistic).")] = None,
    dev_seed: Annotated[int | None, typer.Option(help="Seed of the stratified dev slice (default 0).")] = None,
    refit: Annotated[bool | None, typer.Option(
        help="Then fit once more on training + validation with the epochs and thresholds chosen on dev, into "
             "OUTPUT/refit (a detector to ship; it has no held-out score).")] = None,
    refit_data: Annotated[str | None, typer.Option(
        help="What --refit trains on: training+validation (default) or training (the dev slice added back; "
             "validation is then scored once, held out: what a refit buys). Implies --refit.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A detector setting, KEY=VALUE (VALUE read as TOML, else as text); repeatable.")] = None,
) -> None:
    """Train under the held-out protocol (choose on a dev slice of training), score validation once, save.

    The NLI side task trains the same way: valuedetect train --task nli --method encoder (or prompt).
    """
    from valuedetect.api import train as train_detector

    if (config is None) == (method is None):
        raise InputError("give exactly one of --config FILE or --method NAME")
    overrides = _detector_overrides(settings or [])
    for key, value in (("backend", backend), ("base_url", base_url), ("model", model), ("strategy", strategy),
                       ("template", template)):
        if value is not None:
            overrides[key] = value
    refit_implied = True if refit_data is not None else None  # --refit-data alone means --refit
    run_settings = {k: v for k, v in (("task", task), ("validation_limit", limit), ("validation_sample", sample),
                                       ("subset_seed", subset_seed), ("predict_test", predict_test),
                                       ("training_per_category", train_per_category),
                                       ("training_fraction", train_fraction), ("protocol", protocol),
                                       ("cross_fit_folds", cross_fit_folds), ("cross_fit_fold", cross_fit_fold),
                                       ("dev_seed", dev_seed), ("refit", refit if refit is not None else refit_implied),
                                       ("refit_data", refit_data), ("data_dir", data_dir),
                                       ("output", output)) if v is not None}
    with progress_bar() as update:
        trained = train_detector(config if config is not None else str(method), detector=overrides, resume=resume,
                                 progress=update, log=lambda m: err_console.print(m, highlight=False),
                                 overrides_source="command line", **run_settings)
    result = trained.training
    assert result is not None
    protocol = result.protocol
    held_out = not protocol.get("optimistic", False)
    kind = "held-out" if held_out else "optimistic: validation also chose epochs and thresholds"
    title = f"validation ({len(result.validation_ids)} arguments, {kind}), {result.description}"
    task_ = result.detector.task
    measure = task_.headline_label
    if task_.name == "nli":
        console.print(nli_table(result.validation_scores, title))
    else:
        console.print(scores_table(result.validation_scores, title))
    if held_out and result.dev_scores is not None:
        used = protocol.get("dev_arguments_used", protocol["dev_arguments"])
        of = f"{used} of {protocol['dev_arguments']}" if used != protocol["dev_arguments"] else str(used)
        console.print(f"protocol: held-out. Chosen on dev ({of} training arguments, "
                      f"stratified, seed {protocol['dev_seed']}): epochs and thresholds. Dev {measure} (in-sample "
                      f"for those choices) {getattr(result.dev_scores, task_.headline):.3f}; held-out validation "
                      f"{measure} {getattr(result.validation_scores, task_.headline):.3f}.")
    else:
        console.print(f"protocol: paper (tuned and scored on validation): the validation {measure} above is "
                      "optimistic.")
    if result.level1 and result.level1.get("validation"):
        level1 = result.level1["validation"]
        console.print(f"level-1 values (54): validation F1 {level1['f1']:.3f} (P {level1['precision']:.3f}, "
                      f"R {level1['recall']:.3f}), {kind}")
    th = result.detector.thresholds
    if th is not None and th.mode != "fixed" and task_.name == "nli":
        console.print(f"threshold on P(support): {th.global_value:.3f}, chosen on "
                      f"{'dev' if held_out else 'validation'} (accuracy there {th.report['tuned_accuracy']:.3f})")
    elif th is not None and th.mode != "fixed":
        r = th.report
        console.print(f"thresholds: {th.mode} (global {th.global_value:.3f}), tuned on "
                      f"{'dev' if held_out else 'validation'}; two-fold cross-fitted F1 there: global "
                      f"{r['crossfit_f1_global']:.3f}, per-category {r['crossfit_f1_per_category']:.3f}")
    for line in result.written:
        console.print(f"wrote {line}")


def _detector_overrides(pairs: list[str]) -> dict[str, Any]:
    import tomllib

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        overrides[key.strip()] = value
    return overrides


# --------------------------------------------------------------------------------- predict


@app.command()
@user_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label (instead of --input).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Saved detector folder or shipped detector name (default: the shipped one).")] = None,
    input: Annotated[Path | None, typer.Option(
        "--input", help="Arguments TSV, CSV, JSONL, Parquet or text lines.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Where to write results: .tsv (official run file), .csv, .jsonl or .parquet.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of CSV/JSONL/Parquet inputs.")] = "text",
    id_column: Annotated[str | None, typer.Option(
        help="Column with the IDs to keep in the output (default: 'Argument ID' or 'id' when present, else "
             "text-1, text-2, ...).")] = None,
    keep_columns: Annotated[str | None, typer.Option(
        help="Other input columns to copy to the output, comma-separated (not into a .tsv run file).")] = None,
    premise_column: Annotated[str | None, typer.Option(help="Premise column (default: Premise or premise).")] = None,
    conclusion_column: Annotated[str | None, typer.Option(help="Conclusion column.")] = None,
    stance_column: Annotated[str | None, typer.Option(help="Stance column.")] = None,
    chunk_size: Annotated[int, typer.Option(
        min=1, help="Texts read, labelled and written at a time (memory does not grow with the input).")] = 1000,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted prediction into --output where it stopped.")] = False,
    unit: Annotated[str, typer.Option(
        help="argument: label each text whole; sentence: split each text into sentences, label those, and sum "
             "them up per document (--output gets the documents, --sentence-output the sentences).")] = "argument",
    language: Annotated[str, typer.Option(help="--unit sentence: the texts' language (ISO 639 code).")] = "en",
    sentence_output: Annotated[Path | None, typer.Option(
        help="--unit sentence: where the sentences go (default: OUTPUT with .sentences before its suffix).")] = None,
    base_model: Annotated[str | None, typer.Option(
        help="Where the detector's base model is here, if the one it records is not.")] = None,
    engine: Annotated[str, typer.Option(
        help="local: this process, streamed and resumable; ray: Ray Data, a pool of actors on a local or "
             "existing cluster (needs the ray extra).")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="--engine ray: the cluster to join (auto: the one `ray start --head` started here; HOST:PORT or "
             "ray://HOST:10001); default: a local cluster for this run.")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        min=1, help="--engine ray: detector copies labelling at once (default: the cluster's CPUs less one).")] = None,
    ray_cpus_per_actor: Annotated[float, typer.Option(
        help="--engine ray: CPUs (and torch threads) per actor.")] = 1.0,
    output_format: Annotated[str | None, typer.Option(
        help="--engine ray with a folder --output (ending in /, or s3://...): parquet (default), csv or jsonl.")
    ] = None,
    inference: Annotated[str | None, typer.Option(
        help="auto (int8 where the detector's check kept the F1 within 0.005 of fp32), int8 or fp32 "
             "(default: the detector's setting).")] = None,
) -> None:
    """Label arguments or free text with a saved detector."""
    from dataclasses import asdict

    from valuedetect.api import load
    from valuedetect.records import Columns

    if (texts and input) or (not texts and input is None):
        raise InputError("give texts to label or --input FILE, not both")
    kept = tuple(c.strip() for c in keep_columns.split(",") if c.strip()) if keep_columns else ()
    columns = Columns(text_column=text_column, id_column=id_column, premise_column=premise_column,
                      conclusion_column=conclusion_column, stance_column=stance_column, keep_columns=kept)
    if engine not in ("local", "ray"):
        raise InputError(f"--engine is local or ray, not {engine!r}")
    if engine == "local" and (ray_address or ray_actors or output_format):
        raise InputError("--ray-address, --ray-actors and --output-format go with --engine ray")
    if engine == "ray":
        if input is None or output is None:
            raise InputError("--engine ray labels a file: give --input and --output")
        if resume or unit != "argument":
            raise InputError("--engine ray does not resume and labels whole texts (--unit argument): a stopped Ray "
                             "run starts again; use the local engine for --resume or --unit sentence")
        from valuedetect.raydata import require_ray

        require_ray()  # before the detector is loaded
        detector = load(model, base_model=base_model)
        with progress_bar() as update:
            ray_summary = detector.predict_dataset(
                input, output, address=ray_address, actors=ray_actors, cpus_per_actor=ray_cpus_per_actor,
                output_format=output_format, chunk_size=chunk_size, progress=update, **asdict(columns))
        count = f" for {ray_summary.texts} texts" if ray_summary.texts is not None else ""
        console.print(f"wrote {ray_summary.description}{count} to {escape(str(output))} "
                      f"({ray_summary.actors} Ray actor{'' if ray_summary.actors == 1 else 's'})")
        return
    if input is not None and output is not None:
        detector = load(model, base_model=base_model, inference=inference)
        with progress_bar() as update:
            summary = detector.predict_file(input, output, resume=resume, chunk_size=chunk_size, unit=unit,
                                            language=language, sentence_output=sentence_output, progress=update,
                                            log=lambda m: err_console.print(m, highlight=False),
                                            **asdict(columns))
        resumed = f" ({summary.resumed_from} of them labelled before the interruption)" if summary.resumed_from else ""
        console.print(f"wrote {summary.description} for {summary.texts} texts to {escape(str(output))}{resumed}")
        if summary.sentences is not None:
            console.print(f"wrote their sentences to {escape(str(summary.sentences))}")
        return
    if resume or unit != "argument" or kept:
        raise InputError("--resume, --unit sentence and --keep-columns label a file: give --input and --output")
    from valuedetect.data import check_output
    from valuedetect.frames import to_arguments

    if output is not None:
        check_output(output)  # fail now, not after the work
    if input is not None:
        from valuedetect.corpus import read_all

        arguments = read_all(input, columns)
    else:
        arguments = to_arguments(list(texts or []))[0]
    detector = load(model, base_model=base_model, inference=inference)
    with progress_bar() as update:
        scores = detector.predict_proba(arguments, progress=update).to_numpy()
    decisions = detector.detector.decide(scores)
    if output is not None:
        from valuedetect.outputs import write_predictions

        kind = write_predictions(output, arguments, scores, decisions)
        console.print(f"wrote {kind} for {len(arguments)} arguments to {escape(str(output))}")
        return
    _print_predictions(detector.detector, arguments, scores, decisions)


def _print_predictions(detector: Any, arguments: list[Any], scores: np.ndarray, decisions: np.ndarray) -> None:
    """A table per text: the detected categories and those close to their threshold."""
    from valuedetect.taxonomy import CATEGORY_NAMES

    for a, s, d in zip(arguments, scores, decisions, strict=True):
        table = Table(title=escape(f"{a.id}: {a.premise[:80]}"), title_justify="left")
        table.add_column("value category")
        table.add_column("probability", justify="right")
        table.add_column("detected")
        for j in np.argsort(-s):
            if d[j] or s[j] >= 0.5 * float(detector.thresholds.values[j] if detector.thresholds else 0.5):
                table.add_row(CATEGORY_NAMES[j], f"{s[j]:.3f}", "yes" if d[j] else "")
        console.print(table)


# --------------------------------------------------------------------------------- evaluate


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Option(help="Run file: Argument ID + 20 category columns of 0/1.")],
    labels: Annotated[Path, typer.Option(help="Labels file with the same layout.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% interval.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    run_ids_only: Annotated[bool, typer.Option(
        help="Score only the arguments in the run (a run on a seeded subset); by default, as the official "
             "evaluator, a missing argument counts as predicted with no value.")] = False,
) -> None:
    """Score a run file with the official measure (F1 = 2PR/(P+R) over macro P and R)."""
    from valuedetect.api import evaluate as evaluate_run

    scores = evaluate_run(run, labels, bootstrap=bootstrap, seed=seed, run_ids_only=run_ids_only)
    if as_json:
        print(json.dumps(scores.to_dict(), indent=2))
    else:
        console.print(scores_table(scores, escape(f"{run} against {labels}")))


@app.command()
@user_errors
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run file.")],
    run_b: Annotated[Path, typer.Argument(help="Second run file.")],
    labels: Annotated[Path, typer.Option(help="Labels file.")],
    resamples: Annotated[int, typer.Option(help="Permutations and bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Does run A's official F1 differ significantly from run B's? (paired test)"""
    from valuedetect.evaluation import compare_run_files

    result = compare_run_files(run_a, run_b, labels, resamples=resamples, seed=seed)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    verdict = "significant" if result.significant else "not significant"
    console.print(
        f"F1 A {result.f1_a:.4f}, F1 B {result.f1_b:.4f}, A - B = {result.difference:+.4f} "
        f"(95% CI {result.ci95[0]:+.4f} to {result.ci95[1]:+.4f}); p = {result.p_value:.4f}: "
        f"{verdict} at 0.05 ({result.method}, {resamples} resamples)"
    )


# --------------------------------------------------------------------------------- data


@app.command()
@user_errors
def serve(
    model: Annotated[str | None, typer.Option(
        help="Saved detector folder or shipped detector name (default: the shipped one).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    max_arguments: Annotated[int | None, typer.Option(
        min=1, help="Arguments per /v1/predict request (default: 256; 8 for a language-model detector).")] = None,
    max_chars: Annotated[int, typer.Option(min=1, help="Characters per argument.")] = 5_000,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Bytes per JSON request body.")] = 1_000_000,
    max_upload_bytes: Annotated[int, typer.Option(min=1, help="Bytes per uploaded file.")] = 20_000_000,
    max_jobs_running: Annotated[int, typer.Option(min=1, help="File jobs labelling at once.")] = 1,
    max_jobs_queued: Annotated[int, typer.Option(
        min=0, help="File jobs waiting their turn; beyond, uploads get 429 with Retry-After.")] = 4,
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="A host name the server answers to (repeatable; default: the loopback names and --host; "
             "'*' for any).")] = None,
    allowed_origin: Annotated[list[str] | None, typer.Option(
        help="Another site whose pages may POST here, e.g. https://tools.example.org (repeatable).")] = None,
    batching: Annotated[bool, typer.Option(help="Merge concurrent requests into shared forward passes.")] = True,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to join.")] = 5.0,
    explain_slice: Annotated[int, typer.Option(
        min=1, help="Occluded variants per model call of /v1/explain; predictions are answered in between.")] = 8,
) -> None:
    """Serve the HTTP API (/docs) and the web page (/) for a detector.

    Set VALUEDETECT_API_KEY in the environment to require 'Authorization: Bearer <key>'.
    """
    import importlib.util

    from valuedetect.errors import ValueDetectError

    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueDetectError(f"valuedetect serve needs {', '.join(missing)}: pip install 'valuedetect[serve]'")
    from valuedetect.locate import detector_dir
    from valuedetect.serve import ServeSettings, default_allowed_hosts
    from valuedetect.serve import serve as run_server

    model_dir = detector_dir(model) if model is not None else None
    if model_dir is not None and not (model_dir / "detector.json").exists():
        raise InputError("not a saved detector (no detector.json)", model_dir)
    settings = ServeSettings(
        model_dir=model_dir, max_arguments=max_arguments, max_chars=max_chars, max_body_bytes=max_body_bytes,
        max_upload_bytes=max_upload_bytes, batching=batching, batch_wait_ms=batch_wait_ms,
        explain_slice=explain_slice, max_jobs_running=max_jobs_running, max_jobs_queued=max_jobs_queued,
        allowed_hosts=tuple(allowed_host) if allowed_host else default_allowed_hosts(host),
        allowed_origins=tuple(allowed_origin or ()),
    )
    key_note = "an API key is required" if settings.api_key else "no API key (set VALUEDETECT_API_KEY to require one)"
    err_console.print(f"serving on http://{host}:{port}/ (API docs at /docs); {key_note}")
    run_server(settings, host=host, port=port)


@app.command()
@user_errors
def retune(
    input: Annotated[Path, typer.Option("--input", help="A labelled sample of your texts: an arguments TSV, "
                                        "or CSV/JSONL/Parquet with an ID column.")],
    labels: Annotated[Path, typer.Option(help="Their labels: Argument ID + the 20 category columns of 0/1.")],
    output: Annotated[Path, typer.Option(help="New detector folder (a new or empty folder).")],
    model: Annotated[str | None, typer.Option(
        help="Saved detector folder or shipped detector name (default: the shipped one).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of CSV/JSONL/Parquet inputs.")] = "text",
    seed: Annotated[int, typer.Option(help="Seed of the cross-fit's two halves.")] = 0,
    base_model: Annotated[str | None, typer.Option(
        help="Where the detector's base model is here, if the one it records is not.")] = None,
) -> None:
    """Re-choose a detector's thresholds on a labelled sample of another domain; keep them only where
    a cross-fit on the sample says they beat the detector's own (weights unchanged)."""
    from valuedetect.api import load
    from valuedetect.data import load_labels_for, read_inputs

    output_exists = output.exists() and (not output.is_dir() or any(output.iterdir()))
    if output_exists:
        raise InputError("exists and is not an empty folder: retune writes a new detector", output)
    detector = load(model, base_model=base_model)
    if detector.folder is not None and output.resolve() == detector.folder.resolve():
        raise InputError("is the detector's own folder: write the retuned detector elsewhere", output)
    arguments = read_inputs(input, text_column)
    truth = load_labels_for(arguments, labels)
    chosen = detector.retune(arguments, truth, seed=seed, source=str(input))
    detector.save(output)
    report = chosen.report if chosen.mode == "retuned" else chosen.report["retune"]
    console.print(f"sample: {report['arguments']} arguments; official F1 on the sample with the detector's "
                  f"thresholds {report['sample_f1_current']:.4f}, with re-chosen ones (two-fold cross-fit) "
                  f"{report['crossfit_f1_retuned']:.4f}")
    kept = ("re-chosen thresholds" if chosen.mode == "retuned"
            else "the detector's own thresholds (re-choosing did not help)")
    console.print(f"kept {kept}; wrote {escape(str(output))}. Scores on this sample are now in-sample: "
                  "measure on other labelled texts of the domain.")


@app.command("teacher-scores")
@user_errors
def teacher_scores(
    teachers: Annotated[list[Path], typer.Argument(
        help="Saved detector folder of the teacher (a held-out run), or the K folders of cross-fitted teachers "
             "(trained with cross_fit_folds = K and cross_fit_fold = 0..K-1) for out-of-fold scores.")],
    output: Annotated[Path, typer.Option(help="Scores file to write (TSV), with its sidecar .json beside it.")],
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: the shipped copy).")] = None,
) -> None:
    """Write a teacher's probabilities on the training arguments, soft targets for distillation
    (an encoder's distill_from); with cross-fitted teachers, each fit argument is scored by the
    teacher that did not train on it."""
    from valuedetect.data import check_output, load_split
    from valuedetect.distill import sidecar, write_teacher_scores

    check_output(output)
    meta = write_teacher_scores(list(teachers), load_split("training", data_dir), output)
    console.print(f"wrote {escape(str(output))} ({meta['arguments']} training arguments) and "
                  f"{escape(str(sidecar(output)))}; teacher validation F1 {meta['teacher_validation_f1']}"
                  + (f" ({meta['teacher_validation_f1_note']})" if meta.get("teacher_validation_f1_note") else ""))


@app.command()
@user_errors
def data(
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: the shipped copy).")] = None,
) -> None:
    """Show the splits, their sizes and the label distribution."""
    from valuedetect.data import SPLITS, load_split, shipped_data_dir
    from valuedetect.taxonomy import CATEGORY_NAMES

    folder = data_dir or shipped_data_dir()
    if not Path(folder).is_dir():
        raise InputError("no such data folder", folder)
    splits = [load_split(name, folder) for name in SPLITS if (Path(folder) / f"arguments-{name}.tsv").exists()]
    if not splits:
        raise InputError("holds no arguments-training/validation/test.tsv", folder)
    table = Table(title=escape(f"Touche23-ValueEval at {folder}"), title_justify="left")
    table.add_column("category")
    for s in splits:
        table.add_column(f"{s.name} ({len(s)})", justify="right")
    for j, name in enumerate(CATEGORY_NAMES):
        cells = []
        for s in splits:
            if s.labels is None:
                cells.append("no labels")
            else:
                count = int(s.labels[:, j].sum())
                cells.append(f"{count} ({count / len(s):.1%})")
        table.add_row(name, *cells)
    table.add_section()
    table.add_row("labels per argument", *(
        "-" if s.labels is None else f"{s.labels.sum(1).mean():.2f}" for s in splits))
    console.print(table)
    console.print("Licence CC BY-SA 4.0; cite Kiesel et al. 2022 (ACL) and 2023 (SemEval). "
                  "The test split is blind: its labels are not shipped.")


# --------------------------------------------------------------------------------- experiments

experiment_app = typer.Typer(no_args_is_help=True, help="Run a grid of methods and models (see configs/quick.toml).")
app.add_typer(experiment_app, name="experiment")


def _stop_on_sigterm() -> None:
    """A `kill` (or a closed terminal) stops the current run like Ctrl-C does, so the grid
    resumes cleanly."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)  # the terminal closed


@experiment_app.command("run")
@user_errors
def experiment_run(
    config: Annotated[Path, typer.Argument(help="Experiment TOML (configs/quick.toml, configs/paper.toml).")],
    results: Annotated[Path | None, typer.Option(help="Results folder (default: the config's `results`).")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only this run (repeatable).")] = None,
) -> None:
    """Run every run of the grid that is not done yet; rerun the same command to resume."""
    import time

    from valuedetect.experiments.config import load_experiment
    from valuedetect.experiments.runner import run_experiment, run_states

    experiment = load_experiment(config, results)
    states = run_states(experiment)
    done = sum(s.state == "done" for s in states)
    err_console.print(f"experiment {experiment.name!r}: {len(states)} runs, {done} done; results in "
                      f"{experiment.results}", highlight=False)
    started = time.monotonic()

    def finished(record: Any, number: int, total: int) -> None:
        score = (f"accuracy {record.validation.get('accuracy', float('nan')):.3f}" if record.task == "nli"
                 else f"F1 {record.validation.get('f1', float('nan')):.3f}")
        outcome = f"[green]done[/] {score}" if record.done else f"[red]failed[/]: {escape(str(record.error))}"
        elapsed = time.monotonic() - started
        err_console.print(f"[bold]{escape(record.name)}[/] {outcome} in {record.wall_seconds:.0f} s "
                          f"({number}/{total}, {elapsed / 60:.1f} min so far)")

    _stop_on_sigterm()
    try:
        made = run_experiment(experiment, only or (), show=lambda line: err_console.print(escape(line),
                                                                                          highlight=False),
                              on_finished=finished)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished runs are kept; rerun the same command to resume")
        raise typer.Exit(130) from None
    failed = [r for r in made if not r.done]
    console.print(f"{len(made) - len(failed)} runs done now, {len(failed)} failed; "
                  f"`valuedetect experiment status {config}` lists them, "
                  f"`valuedetect report {experiment.results}` writes the report")
    if failed:
        raise typer.Exit(1)


@experiment_app.command("status")
@user_errors
def experiment_status(
    config: Annotated[Path, typer.Argument(help="Experiment TOML.")],
    results: Annotated[Path | None, typer.Option(help="Results folder (default: the config's `results`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the grid's runs: done (with their score), failed (with the error), stale, pending."""
    from valuedetect.experiments.config import load_experiment
    from valuedetect.experiments.runner import describe_states, run_states

    experiment = load_experiment(config, results)
    rows = describe_states(run_states(experiment))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=escape(f"{experiment.name}: {experiment.results}"), title_justify="left")
    for column in ("run", "family", "state", "score", "wall"):
        # Short columns never wrap; a long run name folds onto a second line instead of an ellipsis.
        table.add_column(column, justify="right" if column in ("score", "wall") else "left",
                         no_wrap=column != "run", overflow="fold")
    colours = {"done": "green", "failed": "red", "stale": "yellow", "pending": "dim"}
    for row in rows:
        score = f"{row['score']:.3f}" if isinstance(row["score"], float) else ""
        wall = f"{row['wall_seconds'] / 60:.1f} min" if row["wall_seconds"] else ""
        state = f"[{colours[str(row['state'])]}]{row['state']}[/]"
        if row["error"]:
            state += f": {escape(str(row['error']))[:120]}"
        table.add_row(escape(str(row["name"])), str(row["family"]), state, score, wall)
    console.print(table)
    counts = {k: sum(r["state"] == k for r in rows) for k in colours}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command()
@user_errors
def report(
    results: Annotated[Path, typer.Argument(help="Results folder of `valuedetect experiment run`.")],
    output: Annotated[Path | None, typer.Option(help="Report folder (default: RESULTS/report).")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Test labels TSV, to score the runs' test-run.tsv.")
                           ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: the shipped copy).")] = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap and permutation resamples.")] = 1000,
) -> None:
    """Write report.md, report.html and PNG figures: tables, intervals, tests, a verdict per claim."""
    from valuedetect.experiments.report import write_report

    written = write_report(results, output, test_labels=test_labels, data_dir=data_dir, resamples=resamples)
    for path in written:
        console.print(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
