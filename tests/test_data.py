"""Readers and writers of arguments, labels, run files and free text.

Round trips of every reader/writer pair, BOM and CRLF tolerance, an ``InputError`` naming the
file (and the line, where there is one) for every kind of malformed input, and atomic writes
that never leave half a file behind.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from valuedetect.data import (
    ID_COLUMN,
    STANCES,
    Argument,
    atomic_write_json,
    atomic_write_text,
    format_run,
    load_labels_for,
    load_split,
    read_arguments,
    read_inputs,
    read_labels,
    write_arguments,
    write_labels,
    write_run,
)
from valuedetect.errors import InputError
from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES, level1_to_level2_matrix

ARG_HEADER = "Argument ID\tConclusion\tStance\tPremise"


def write(path: Path, text: str) -> Path:
    """Write exactly ``text`` as UTF-8, with no newline translation."""
    path.write_bytes(text.encode("utf-8"))
    return path


def arguments_text(*rows: str, header: str = ARG_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def labels_text(rows: list[tuple[str, list[int] | list[str]]], columns=CATEGORY_NAMES) -> str:
    lines = ["\t".join((ID_COLUMN, *columns))]
    lines += ["\t".join((arg_id, *(str(v) for v in values))) for arg_id, values in rows]
    return "\n".join(lines) + "\n"


def zeros(k: int = len(CATEGORY_NAMES)) -> list[int]:
    return [0] * k


def expect_input_error(read, path: Path, line: int | None, *fragments: str) -> InputError:
    """``read(path)`` raises an InputError naming the file, the line (if given) and fragments."""
    with pytest.raises(InputError) as info:
        read(path)
    error = info.value
    message = str(error)
    assert str(path) in message, message
    assert error.path == Path(path)
    if line is not None:
        assert error.line == line, message
        assert f"line {line}:" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message, "the message should be one line"
    return error


def only_file(folder: Path) -> list[str]:
    """Every entry in ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- shipped data


def test_shipped_splits_have_the_official_sizes(training, validation, test_split):
    assert len(training) == 5393 and training.labels.shape == (5393, 20)
    assert len(validation) == 1896 and validation.labels.shape == (1896, 20)
    assert validation.level1_labels.shape == (1896, 54)
    assert len(test_split) == 1576 and test_split.labels is None
    for split in (training, validation, test_split):
        assert len(set(split.ids)) == len(split)
        assert {a.stance for a in split.arguments} <= set(STANCES)
        assert all(a.premise.strip() and a.conclusion.strip() for a in split.arguments)
    assert set(np.unique(training.labels)) == {0, 1}


def test_level2_labels_are_the_or_of_level1_labels(validation):
    matrix = np.asarray(level1_to_level2_matrix())
    derived = (validation.level1_labels @ matrix > 0).astype(np.int8)
    np.testing.assert_array_equal(derived, validation.labels)


def test_load_split_rejects_unknown_split_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="unknown split 'dev'"):
        load_split("dev")
    with pytest.raises(InputError, match="data folder not found") as info:
        load_split("training", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


# ----------------------------------------------------------------------------- round trips


def test_arguments_round_trip(tmp_path, validation):
    arguments = [*validation.arguments[:50],
                 Argument(id="X-ü", conclusion="Wir sollten Tempo 100 einführen", stance="against",
                          premise="Émile said: \"no\" — it's 'fine' as it is; 100% sure")]
    path = tmp_path / "out" / "arguments.tsv"
    write_arguments(path, arguments)
    assert read_arguments(path) == arguments
    assert path.read_text(encoding="utf-8").splitlines()[0] == ARG_HEADER


def test_british_stance_spelling_is_read_as_the_official_one(tmp_path):
    path = write(tmp_path / "a.tsv", arguments_text("A1\tWe should act\tIn Favour Of\tbecause"))
    assert read_arguments(path)[0].stance == "in favor of"


def test_level2_labels_round_trip(tmp_path):
    ids = [f"A{i:03d}" for i in range(40)]
    labels = (np.random.default_rng(1).random((40, 20)) < 0.3).astype(np.int8)
    path = tmp_path / "labels.tsv"
    write_labels(path, ids, labels)
    for level in (None, 2):
        got_ids, got = read_labels(path, level=level)
        assert got_ids == ids
        np.testing.assert_array_equal(got, labels)
    assert path.read_text().splitlines()[0].split("\t") == [ID_COLUMN, *CATEGORY_NAMES]


def test_level1_labels_round_trip(tmp_path):
    ids = [f"B{i}" for i in range(30)]
    labels = (np.random.default_rng(2).random((30, 54)) < 0.2).astype(np.int8)
    path = tmp_path / "level1.tsv"
    write_labels(path, ids, labels, level=1)
    for level in (None, 1):
        got_ids, got = read_labels(path, level=level)
        assert got_ids == ids
        assert got.shape == (30, 54)
        np.testing.assert_array_equal(got, labels)
    assert path.read_text().splitlines()[0].split("\t") == [ID_COLUMN, *LEVEL1_NAMES]


def test_shipped_level1_file_round_trips(tmp_path, data_dir, validation):
    ids, labels = read_labels(data_dir / "level1-labels-validation.tsv")
    assert labels.shape == (1896, 54)
    path = tmp_path / "copy.tsv"
    write_labels(path, ids, labels, level=1)
    again_ids, again = read_labels(path)
    assert again_ids == ids
    np.testing.assert_array_equal(again, labels)


def test_run_file_round_trip_and_exact_format(tmp_path):
    ids = ["r1", "r2", "r3"]
    predictions = np.zeros((3, 20), dtype=np.int8)
    predictions[0, 0] = predictions[2, 19] = predictions[1, 5] = 1
    path = tmp_path / "run.tsv"
    write_run(path, ids, predictions)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0] == "Argument ID\t" + "\t".join(CATEGORY_NAMES)
    assert lines[1] == "r1\t1" + "\t0" * 19
    assert text.endswith("\n") and "\r" not in text
    got_ids, got = read_labels(path)
    assert got_ids == ids
    np.testing.assert_array_equal(got, predictions)


def test_format_run_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        format_run(["a", "b"], np.zeros((2, 19)))
    with pytest.raises(ValueError, match="shape"):
        format_run(["a"], np.zeros((2, 20)))


def test_label_columns_may_come_in_any_order(tmp_path):
    columns = list(reversed(CATEGORY_NAMES))
    values = [1 if c in ("Hedonism", "Face") else 0 for c in columns]
    path = write(tmp_path / "shuffled.tsv", labels_text([("A1", values)], columns=tuple(columns)))
    _, labels = read_labels(path)
    expected = np.zeros(20, dtype=np.int8)
    expected[[CATEGORY_NAMES.index("Hedonism"), CATEGORY_NAMES.index("Face")]] = 1
    np.testing.assert_array_equal(labels[0], expected)


def test_load_labels_for_reorders_to_the_arguments(tmp_path):
    path = write(tmp_path / "labels.tsv", labels_text([("A2", [1, *zeros(19)]), ("A1", [*zeros(19), 1])]))
    labels = load_labels_for(["A1", "A2"], path)
    assert labels[0, 19] == 1 and labels[0].sum() == 1
    assert labels[1, 0] == 1 and labels[1].sum() == 1


def _mini_dataset(folder: Path, data_dir: Path, n: int = 5) -> Path:
    folder.mkdir()
    for name in ("arguments-validation.tsv", "labels-validation.tsv", "level1-labels-validation.tsv"):
        lines = (data_dir / name).read_text(encoding="utf-8").splitlines()[: n + 1]
        write(folder / name, "\n".join(lines) + "\n")
    return folder


def test_load_split_from_a_folder_with_the_same_layout(tmp_path, data_dir, validation):
    folder = _mini_dataset(tmp_path / "mini", data_dir)
    split = load_split("validation", folder, level1=True)
    assert split.ids == validation.ids[:5]
    np.testing.assert_array_equal(split.labels, validation.labels[:5])
    np.testing.assert_array_equal(split.level1_labels, validation.level1_labels[:5])
    (folder / "labels-validation.tsv").unlink()
    assert load_split("validation", folder).labels is None


def test_labels_with_ids_the_arguments_file_lacks(tmp_path, data_dir):
    folder = _mini_dataset(tmp_path / "mini", data_dir)
    labels_path = folder / "labels-validation.tsv"
    with labels_path.open("a", encoding="utf-8") as handle:
        handle.write("\t".join(["NOT-THERE", *["0"] * 20]) + "\n")
    with pytest.raises(InputError) as info:
        load_split("validation", folder)
    assert info.value.path == labels_path
    assert str(labels_path) in str(info.value) and "'NOT-THERE'" in str(info.value)


def test_arguments_without_labels(tmp_path, data_dir):
    folder = _mini_dataset(tmp_path / "mini", data_dir)
    labels_path = folder / "labels-validation.tsv"
    lines = labels_path.read_text(encoding="utf-8").splitlines()
    write(labels_path, "\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError) as info:
        load_split("validation", folder)
    assert str(labels_path) in str(info.value) and "no labels" in str(info.value)


# ----------------------------------------------------------------------------- read_inputs


def test_read_inputs_on_an_arguments_tsv_reads_arguments(data_dir, test_split):
    assert read_inputs(data_dir / "arguments-test.tsv") == test_split.arguments


def test_read_inputs_jsonl(tmp_path):
    lines = [
        json.dumps({"text": "Free speech matters."}),
        "",
        json.dumps({"id": "q7", "text": "Cheap energy for all."}),
        json.dumps({"premise": "it harms children", "conclusion": "We should ban fast food",
                    "stance": "in favour of"}),
    ]
    path = write(tmp_path / "in.jsonl", "\n".join(lines) + "\n")
    got = read_inputs(path)
    assert got == [
        Argument(id="text-1", premise="Free speech matters."),
        Argument(id="q7", premise="Cheap energy for all."),
        Argument(id="text-3", premise="it harms children", conclusion="We should ban fast food",
                 stance="in favor of"),
    ]
    assert got[0].is_free_text and not got[2].is_free_text


def test_read_inputs_jsonl_with_another_text_column(tmp_path):
    path = write(tmp_path / "in.jsonl", json.dumps({"body": "Protect the forests."}) + "\n")
    assert read_inputs(path, text_column="body") == [Argument(id="text-1", premise="Protect the forests.")]


def test_read_inputs_csv(tmp_path):
    text = 'id,text\n1,"Equality, justice and peace"\n2,"A text over\ntwo lines"\n\n3,plain\n'
    got = read_inputs(write(tmp_path / "in.csv", text))
    assert [a.id for a in got] == ["1", "2", "3"]
    assert got[0].premise == "Equality, justice and peace"
    assert got[1].premise == "A text over\ntwo lines"
    assert got[2].premise == "plain"


def test_read_inputs_csv_with_argument_columns(tmp_path):
    text = "Argument ID,Conclusion,Stance,Premise\nc1,We should ban guns,against,guns protect people\n"
    assert read_inputs(write(tmp_path / "in.csv", text)) == [
        Argument(id="c1", premise="guns protect people", conclusion="We should ban guns", stance="against")
    ]


def test_read_inputs_free_text_tsv_is_read_without_quoting(tmp_path):
    text = 'text\n"Freedom" is what matters\nsecond\n'
    got = read_inputs(write(tmp_path / "in.tsv", text))
    assert [a.premise for a in got] == ['"Freedom" is what matters', "second"]


def test_read_inputs_plain_text_lines(tmp_path):
    path = write(tmp_path / "in.txt", "first text\n\n  second text  \r\nthird\n")
    assert read_inputs(path) == [
        Argument(id="text-1", premise="first text"),
        Argument(id="text-2", premise="second text"),
        Argument(id="text-3", premise="third"),
    ]


# ----------------------------------------------------------------------------- BOM and CRLF


def test_bom_and_crlf_in_arguments_file(tmp_path):
    text = arguments_text("A1\tWe should act\tagainst\tbecause of x", "A2\tWe should wait\tin favor of\ty")
    path = tmp_path / "a.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    got = read_arguments(path)
    assert got == [
        Argument(id="A1", conclusion="We should act", stance="against", premise="because of x"),
        Argument(id="A2", conclusion="We should wait", stance="in favor of", premise="y"),
    ]


def test_bom_and_crlf_in_labels_file(tmp_path):
    text = labels_text([("A1", [1, *zeros(19)]), ("A2", [*zeros(19), 1])])
    path = tmp_path / "l.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    ids, labels = read_labels(path)
    assert ids == ["A1", "A2"]
    assert labels[0, 0] == 1 and labels[1, 19] == 1 and labels.sum() == 2


def test_bom_and_crlf_in_inputs(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "one"}\r\n{"text": "two"}\r\n')
    assert [a.premise for a in read_inputs(path)] == ["one", "two"]
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbftext\r\nhello\r\n")
    assert [a.premise for a in read_inputs(path)] == ["hello"]


# ----------------------------------------------------------------------------- malformed input

ARGUMENT_ERRORS = {
    "missing column": (
        "Argument ID\tConclusion\tStance\nA1\tWe should\tagainst\n", 1, ("missing column 'Premise'",)),
    "misspelled column": (
        arguments_text("A1\tWe should\tagainst\tbecause", header="Argument ID\tConclusion\tStance\tPremis"),
        1, ("'Premise'", "'Premis'")),
    "misspelled id column": (
        arguments_text("A1\tWe should\tagainst\tbecause", header="Argument Id\tConclusion\tStance\tPremise"),
        1, ("'Argument ID'", "'Argument Id'")),
    "duplicate header column": (
        arguments_text("A1\tWe should\tagainst\tbecause\tx", header=ARG_HEADER + "\tPremise"),
        1, ("'Premise'", "twice")),
    "duplicate id": (
        arguments_text("A1\tc\tagainst\tp", "A2\tc\tagainst\tp", "A1\tc\tagainst\tq"),
        4, ("duplicate Argument ID 'A1'", "line 2")),
    "unknown stance": (arguments_text("A1\tc\tagainst\tp", "A2\tc\tpro\tp"), 3, ("unknown stance 'pro'",)),
    "empty premise": (arguments_text("A1\tc\tagainst\tp", "A2\tc\tagainst\t  "), 3, ("empty Premise", "'A2'")),
    "empty conclusion": (arguments_text("A1\t\tagainst\tp"), 2, ("empty Conclusion",)),
    "empty id": (arguments_text("A1\tc\tagainst\tp", " \tc\tagainst\tp"), 3, ("empty Argument ID",)),
    "too few fields": (arguments_text("A1\tc\tagainst\tp", "A2\tc\tagainst"), 3, ("expected 4", "found 3")),
    "too many fields": (arguments_text("A1\tc\tagainst\tp\textra"), 2, ("expected 4", "found 5")),
    "header only": (ARG_HEADER + "\n", None, ("no data rows",)),
    "header and blank lines": (ARG_HEADER + "\n\n\n", None, ("no data rows",)),
    "empty file": ("", None, ("empty",)),
    "blank file": ("\n \n", None, ("empty",)),
    "only a BOM": ("\ufeff", None, ("empty",)),
}


@pytest.mark.parametrize("content, line, fragments", ARGUMENT_ERRORS.values(), ids=ARGUMENT_ERRORS.keys())
def test_malformed_arguments_file(tmp_path, content, line, fragments):
    path = write(tmp_path / "arguments.tsv", content)
    expect_input_error(read_arguments, path, line, *fragments)


def _labels_with_column(column: str) -> str:
    columns = tuple(column if c == "Self-direction: thought" else c for c in CATEGORY_NAMES)
    return labels_text([("A1", zeros())], columns=columns)


LABEL_ERRORS = {
    "missing id column": (
        labels_text([("A1", zeros())]).replace("Argument ID", "ID", 1), 1, ("missing column 'Argument ID'",)),
    "misspelled category column": (
        _labels_with_column("Self-direction: thougth"), 1,
        ("'Self-direction: thougth'", "did you mean 'Self-direction: thought'")),
    "unknown category column": (
        labels_text([("A1", [*zeros(), 0])], columns=(*CATEGORY_NAMES, "Patriotism")), 1,
        ("unknown value category column 'Patriotism'",)),
    "missing category column": (
        labels_text([("A1", zeros(19))], columns=CATEGORY_NAMES[:-1]), 1,
        ("missing value category column 'Universalism: objectivity'",)),
    "label 2": (labels_text([("A1", zeros()), ("A2", [*zeros(19), 2])]), 3,
                ("'2'", "'Universalism: objectivity'", "not 0 or 1")),
    "label yes": (labels_text([("A1", ["yes", *zeros(19)])]), 2, ("'yes'", "not 0 or 1")),
    "label 0.5": (labels_text([("A1", ["0.5", *zeros(19)])]), 2, ("'0.5'", "not 0 or 1")),
    "empty label": (labels_text([("A1", ["", *zeros(19)])]), 2, ("not 0 or 1",)),
    "duplicate id": (labels_text([("A1", zeros()), ("A1", zeros())]), 3, ("duplicate Argument ID 'A1'",)),
    "wrong number of fields": (labels_text([("A1", zeros()), ("A2", zeros(18))]), 3, ("expected 21", "found 19")),
    "header only": (labels_text([]), None, ("no data rows",)),
    "empty file": ("", None, ("empty",)),
}


@pytest.mark.parametrize("content, line, fragments", LABEL_ERRORS.values(), ids=LABEL_ERRORS.keys())
def test_malformed_labels_file(tmp_path, content, line, fragments):
    path = write(tmp_path / "labels.tsv", content)
    expect_input_error(read_labels, path, line, *fragments)


def test_misspelled_level1_column_is_named(tmp_path):
    columns = tuple("Be creatve" if c == "Be creative" else c for c in LEVEL1_NAMES)
    assert columns != LEVEL1_NAMES
    path = write(tmp_path / "l1.tsv", labels_text([("A1", zeros(54))], columns=columns))
    expect_input_error(read_labels, path, 1, "'Be creatve'", "did you mean 'Be creative'")


READERS = {"read_arguments": read_arguments, "read_labels": read_labels, "read_inputs": read_inputs}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_reader_names_a_missing_file(tmp_path, read):
    expect_input_error(read, tmp_path / "nothing-here.tsv", None, "no such file")


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_reader_rejects_a_directory(tmp_path, read):
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    expect_input_error(read, folder, None, "directory")


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_reader_rejects_an_empty_file(tmp_path, read):
    expect_input_error(read, write(tmp_path / "empty.tsv", ""), None, "empty")


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_reader_rejects_invalid_utf8(tmp_path, read):
    good = labels_text([("A1", zeros())]) if read is read_labels else arguments_text("A1\tc\tagainst\tp")
    path = tmp_path / "latin1.tsv"
    path.write_bytes(good.encode("utf-8") + "A2\tc\tagainst\tna\u00efve\n".encode("latin-1"))
    expect_input_error(read, path, 3, "not valid UTF-8")


INPUT_ERRORS = {
    "invalid jsonl line": ("in.jsonl", '{"text": "ok"}\n{"text": "broken\n', 2, ("not valid JSON",)),
    "jsonl line not an object": ("in.jsonl", '{"text": "ok"}\n\n["a list"]\n', 3, ("JSON object",)),
    "jsonl without text field": (
        "in.jsonl", '{"text": "ok"}\n{"txt": "typo"}\n', 2, ("no 'text' field", "'txt'", "--text-column")),
    "jsonl empty text": ("in.jsonl", '{"text": "ok"}\n{"text": "   "}\n', 2, ("empty text",)),
    "jsonl null text": ("in.jsonl", '{"text": null}\n', 1, ("empty text",)),
    "jsonl empty premise": (
        "in.jsonl", '{"premise": "", "conclusion": "We should", "stance": "against"}\n', 1, ("empty",)),
    "jsonl unknown stance": (
        "in.jsonl", '{"premise": "p", "conclusion": "c", "stance": "maybe"}\n', 1, ("unknown stance 'maybe'",)),
    "csv wrong number of fields": ("in.csv", "id,text\n1,fine\n2,one,two\n", 3, ("expected 2", "found 3")),
    "csv line after a two-line record": ("in.csv", 'id,text\n1,"two\nlines"\n2,a,b\n', 4, ("found 3",)),
    "csv without text column": ("in.csv", "id,body\n1,fine\n", 2, ("no 'text' column",)),
    "csv empty premise": (
        "in.csv", "Argument ID,Conclusion,Stance,Premise\nc1,We should,against,\n", 2, ("empty",)),
    "csv unterminated quote": ("in.csv", 'id,text\n1,"never closed\n2,more\n', None, ("malformed CSV",)),
    "csv text after closing quote": ("in.csv", 'id,text\n1,"quoted" then more\n', 2, ("malformed CSV",)),
    "jsonl text is a list": ("in.jsonl", '{"text": ["a", "b"]}\n', 1, ("'text'", "expected text")),
    "duplicate ids": ("in.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', None,
                      ("duplicate id 'a'",)),
    "only blank lines": ("in.txt", "\n   \n\n", None, ("empty",)),
}


@pytest.mark.parametrize("name, content, line, fragments", INPUT_ERRORS.values(), ids=INPUT_ERRORS.keys())
def test_malformed_inputs(tmp_path, name, content, line, fragments):
    path = write(tmp_path / name, content)
    expect_input_error(read_inputs, path, line, *fragments)


def test_arguments_tsv_given_to_read_inputs_is_checked_strictly(tmp_path):
    path = write(tmp_path / "in.tsv", arguments_text("A1\tc\tagainst\tp", "A2\tc\tneutral\tp"))
    expect_input_error(read_inputs, path, 3, "unknown stance 'neutral'")


# ----------------------------------------------------------------------------- writing


def test_write_arguments_refuses_fields_tsv_cannot_hold(tmp_path):
    path = write(tmp_path / "a.tsv", "old content\n")
    for bad in (Argument(id="A1", conclusion="c", stance="against", premise="a\ttab"),
                Argument(id="A1", conclusion="c\nline", stance="against", premise="p"),
                Argument(id="A1", conclusion="c", stance="against", premise="p\r")):
        with pytest.raises(InputError, match="'A1'"):
            write_arguments(path, [bad])
    assert path.read_text() == "old content\n"
    assert only_file(tmp_path) == ["a.tsv"]


def test_write_arguments_refuses_what_read_arguments_would_reject(tmp_path):
    path = tmp_path / "a.tsv"
    with pytest.raises(InputError, match="'t1'"):
        write_arguments(path, [Argument(id="t1", premise="free text, no conclusion or stance")])
    assert not path.exists()


def test_atomic_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    atomic_write_json(path, {"x": [1, 2], "name": "Émile"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": [1, 2], "name": "Émile"}
    assert only_file(path.parent) == ["out.json"]


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = write(tmp_path / "run.tsv", "old content\n")

    def failing_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_run(path, ["a"], np.ones((1, 20)))
    assert path.read_text() == "old content\n"
    assert only_file(tmp_path) == ["run.tsv"]


def test_atomic_write_keeps_the_old_file_when_writing_fails_midway(tmp_path):
    path = write(tmp_path / "out.txt", "old content\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "x" * 100_000 + "\ud800 lone surrogate")
    assert path.read_text() == "old content\n"
    assert only_file(tmp_path) == ["out.txt"]


def test_atomic_write_keeps_the_old_file_when_a_row_cannot_be_serialised(tmp_path):
    path = write(tmp_path / "results.json", '{"old": true}\n')
    with pytest.raises(TypeError):
        atomic_write_json(path, {"rows": [1, 2, object()]})
    with pytest.raises(ValueError):
        write_run(path, ["a", "b"], np.ones((1, 20)))
    assert path.read_text() == '{"old": true}\n'
    assert only_file(tmp_path) == ["results.json"]


def test_atomic_write_into_a_directory_is_an_input_error(tmp_path):
    folder = tmp_path / "run.tsv"
    folder.mkdir()
    with pytest.raises(InputError, match="directory") as info:
        write_run(folder, ["a"], np.ones((1, 20)))
    assert str(folder) in str(info.value)
    assert only_file(folder) == []


def test_written_files_get_ordinary_permissions(tmp_path):
    old_mask = os.umask(0o022)
    try:
        path = tmp_path / "new.tsv"
        atomic_write_text(path, "x\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        kept = write(tmp_path / "kept.tsv", "old\n")
        kept.chmod(0o640)
        atomic_write_text(kept, "new\n")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old_mask)


def test_ids_that_would_break_a_run_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text('{"id": "a\\tb", "text": "hello"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"posts.jsonl, line 1: id 'a\\tb' holds a tab"):
        read_inputs(path)
