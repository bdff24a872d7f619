"""The Ray engine (``--engine ray``, ``vd.predict_dataset``) on a local Ray cluster of 2 CPUs
started by the test: a pool of 2 actors labels the file, and the output equals the local
path's, row for row (the text formats byte for byte).

Skipped where Ray is not installed (it is the optional ``ray`` extra); the errors for a
missing Ray and an unreachable address are tested without it.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pandas as pd
import pytest
from tests.test_predict_corpus import posts, read_output, write_input

import valuedetect as vd
from valuedetect.data import shipped_data_dir
from valuedetect.detectors import make_detector
from valuedetect.errors import InputError
from valuedetect.taxonomy import CATEGORY_NAMES

POOL = {"actors": 2, "cpus_per_actor": 0.5, "batch_size": 3}  # 2 actors and CPU left for reading on 2 CPUs


@pytest.fixture(scope="module")
def detector(tmp_path_factory, training) -> vd.ValueDetector:
    model = make_detector("tfidf", {"min_df": 1})
    model.fit(training.subset(range(300)), training.subset(range(300, 400)))
    return vd.load(model.save(tmp_path_factory.mktemp("model") / "tfidf"))


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="Ray is the optional 'ray' extra: pip install 'valuedetect[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def both(detector, source: Path, output_suffix: str, tmp_path: Path, **columns) -> tuple[Path, Path]:
    local, distributed = tmp_path / f"local{output_suffix}", tmp_path / f"ray{output_suffix}"
    detector.predict_file(source, local, chunk_size=4, **columns)
    summary = detector.predict_dataset(source, distributed, chunk_size=4, **POOL, **columns)
    assert summary.actors == 2
    return local, distributed


@pytest.mark.parametrize(("source_format", "output_format"),
                         [("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet"), ("csv", "tsv")])
def test_ray_equals_local(cluster, detector, tmp_path, source_format, output_format):
    frame = posts(11)
    frame.loc[3, "body"] = 'A "quoted" text,\nover two lines, with commas.'
    source = write_input(frame, tmp_path / f"in.{source_format}")
    keep = {"keep_columns": ("author", "likes")} if output_format != "tsv" else {}
    local, distributed = both(detector, source, f".{output_format}", tmp_path, text_column="body",
                              id_column="post_id", **keep)
    if output_format == "parquet":
        pd.testing.assert_frame_equal(read_output(distributed), read_output(local))
    else:
        assert distributed.read_bytes() == local.read_bytes()
    ours = read_output(distributed)
    assert list(ours["post_id" if output_format != "tsv" else "Argument ID"]) == list(frame["post_id"])


def test_ray_numbers_texts_without_ids_and_reads_argument_files(cluster, detector, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("Protect the forests.\n\n  Lower taxes for families.  \nTradition matters.\n" * 3,
                     encoding="utf-8")
    local, distributed = both(detector, lines, ".csv", tmp_path)
    assert distributed.read_bytes() == local.read_bytes()
    assert list(read_output(distributed)["Argument ID"]) == [f"text-{i}" for i in range(1, 10)]

    rows = (shipped_data_dir() / "arguments-validation.tsv").read_text(encoding="utf-8").splitlines()[:9]
    arguments = tmp_path / "arguments.tsv"
    arguments.write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "arguments").mkdir()
    local, distributed = both(detector, arguments, ".tsv", tmp_path / "arguments")
    assert distributed.read_bytes() == local.read_bytes()


def test_ray_writes_a_folder_with_ray_data(cluster, detector, tmp_path):
    source = write_input(posts(9), tmp_path / "in.parquet")
    local = tmp_path / "local.parquet"
    detector.predict_file(source, local, text_column="body", id_column="post_id", keep_columns=("likes",))
    summary = detector.predict_dataset(source, f"{tmp_path}/out/", text_column="body", id_column="post_id",
                                       keep_columns=("likes",), **POOL)
    assert summary.description == "a folder of parquet files"
    written = pd.read_parquet(tmp_path / "out").sort_values("post_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(written, pd.read_parquet(local))

    with pytest.raises(InputError, match="needs an ID per row"):
        detector.predict_dataset(write_input(posts(3).drop(columns="post_id"), tmp_path / "no-ids.csv"),
                                 f"{tmp_path}/out2/", text_column="body", **POOL)


def test_ray_errors_name_the_problem(cluster, detector, tmp_path):
    frame = posts(6)
    frame.loc[4, "body"] = " "
    source = write_input(frame, tmp_path / "bad.csv")
    with pytest.raises(InputError, match=r"empty text \(column 'body'\)"):
        detector.predict_dataset(source, tmp_path / "out.csv", text_column="body", id_column="post_id", **POOL)
    assert not (tmp_path / "out.csv").exists()

    frame = posts(6)
    frame.loc[5, "post_id"] = frame.loc[1, "post_id"]
    source = write_input(frame, tmp_path / "twice.csv")
    with pytest.raises(InputError, match="duplicate id 'p001'"):
        detector.predict_dataset(source, tmp_path / "out.csv", text_column="body", id_column="post_id", **POOL)
    assert not (tmp_path / "out.csv").exists()


def test_cli_engine_ray(cluster, detector, tmp_path):
    from tests.test_cli import invoke

    source = write_input(posts(5), tmp_path / "in.csv")
    output = tmp_path / "out.jsonl"
    result = invoke("predict", "--input", str(source), "--output", str(output), "--model", str(detector.folder),
                    "--text-column", "body", "--id-column", "post_id", "--engine", "ray", "--ray-actors", "1")
    assert result.exit_code == 0, result.output
    assert "for 5 texts" in result.output and "(1 Ray actor)" in result.output
    assert sorted(read_output(output)[CATEGORY_NAMES[0]].unique()) <= [0, 1]


def test_unreachable_address_is_refused_fast(detector, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import socket

    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    source = write_input(posts(2), tmp_path / "in.csv")
    with pytest.raises(InputError, match=rf"cannot reach the Ray cluster at '127.0.0.1:{port}'.*ray start --head"):
        detector.predict_dataset(source, tmp_path / "out.csv", text_column="body", address=f"127.0.0.1:{port}")


def test_missing_ray_names_the_extra(detector, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    source = write_input(posts(2), tmp_path / "in.csv")
    with pytest.raises(InputError, match=r"pip install 'valuedetect\[ray\]'"):
        detector.predict_dataset(source, tmp_path / "out.csv", text_column="body")
