"""The report of an experiment: a results folder -> report.md, report.html and PNG figures.

Scoring, formatting, figures, sections, verdicts and rendering each live in their own module;
this one puts them together and writes the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from valuedetect.data import atomic_write_text, ensure_folder
from valuedetect.errors import InputError
from valuedetect.experiments.report.render import Block, Image, render_html, render_markdown
from valuedetect.experiments.report.scoring import Context, build_context
from valuedetect.experiments.report.sections import (
    NO_TEST_LABELS,
    SECTION_TITLES,
    data_size_section,
    header_section,
    main_section,
    nli_section,
    parameters_section,
    per_category_section,
    significance_section,
    test_section,
)
from valuedetect.experiments.report.verdicts import verdict_section, verdicts


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically (a reader sees the old figure or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def output_folder(results: Path, output: str | Path | None) -> Path:
    return ensure_folder(Path(output) if output is not None else results / "report", "report folder")


def plan_comparisons(ctx: Context) -> None:
    """Make every comparison the report will cite, then Holm-correct them as one family, so that
    each verdict reads a corrected p. The verdict rules request the same comparisons whatever the
    outcomes, so the second pass (the rendering) finds them all made."""
    verdicts(ctx)
    significance_section(ctx)
    ctx.apply_holm()


def build_blocks(ctx: Context) -> list[Block]:
    plan_comparisons(ctx)
    sections: list[Callable[[Context], list[Block]]] = [
        header_section, main_section, per_category_section, parameters_section, data_size_section,
        significance_section, test_section, verdict_section, nli_section,
    ]
    return [block for section in sections for block in section(ctx)]


MIN_RESAMPLES = 100


def write_report(
    results: str | Path,
    output: str | Path | None = None,
    test_labels: str | Path | None = None,
    data_dir: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Path]:
    """Write report.md, report.html and the PNG figures of a results folder; return the paths written.

    Validation labels come from ``load_split("validation", data_dir)`` (the shipped copy when None);
    ``test_labels`` is a labels TSV to score the runs' test-run.tsv against (the shipped test split is blind).
    """
    results = Path(results)
    if resamples < MIN_RESAMPLES:
        raise InputError(f"resamples must be at least {MIN_RESAMPLES} (the tests estimate a variance from them), "
                         f"not {resamples}")
    ctx = build_context(results, test_labels, data_dir, resamples, seed)
    blocks = build_blocks(ctx)
    folder = output_folder(results, output)
    title = f"Experiment report: {ctx.name}"
    written = []
    for block in blocks:
        if isinstance(block, Image):
            write_bytes(folder / block.file, block.png)
            written.append(folder / block.file)
    atomic_write_text(folder / "report.md", render_markdown(title, blocks))
    atomic_write_text(folder / "report.html", render_html(title, blocks))
    return [folder / "report.md", folder / "report.html", *written]


__all__ = ["NO_TEST_LABELS", "SECTION_TITLES", "write_report"]
