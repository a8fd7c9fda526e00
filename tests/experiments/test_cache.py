"""The paths experiment's representation cache: damaged entries are recomputed with a warning, never reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.paths import cache


def _fake_capture(calls):
    def capture(run_dir, step, images, batch_size):
        calls.append(step)
        reps = [np.full((len(images), 2), float(step), np.float32)]
        return dict(names=["input"], reps=reps, logits=reps[0], widths=[2], meta={"step": step})

    return capture


class _Probe:
    images = np.zeros((3, 32, 32, 3), np.uint8)
    hash = "abc"


@pytest.mark.parametrize("damage", ["truncate", "flip_member_bytes", "garbage"])
def test_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, damage):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"arch": "resnet8", "seed": 0}))
    calls: list[int] = []
    monkeypatch.setattr(cache, "capture_checkpoint", _fake_capture(calls))
    stats = {"captures": 0, "cache_hits": 0}
    first = cache.load_or_capture(tmp_path / "c", run, "resnet8", 4, _Probe, 100, stats)
    assert calls == [4]
    (entry,) = list((tmp_path / "c").rglob("*.npz"))
    again = cache.load_or_capture(tmp_path / "c", run, "resnet8", 4, _Probe, 100, stats)
    assert calls == [4] and stats == {"captures": 1, "cache_hits": 1}  # an intact entry is reused
    np.testing.assert_array_equal(again["reps"][0], first["reps"][0])

    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_member_bytes":  # inside the stored layer array: a CRC error (zipfile.BadZipFile)
        i = raw.index(np.float32(4.0).tobytes() * 2)
        raw[i : i + 8] = b"\x00" * 8
    else:
        raw = bytearray(b"not a zip file at all")
    entry.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=rf"cache entry .*{entry.name}.* unreadable"):
        redone = cache.load_or_capture(tmp_path / "c", run, "resnet8", 4, _Probe, 100, stats)
    assert calls == [4, 4]  # recomputed, not reused
    np.testing.assert_array_equal(redone["reps"][0], first["reps"][0])
    # ... and rewritten: the next load is a clean hit
    cache.load_or_capture(tmp_path / "c", run, "resnet8", 4, _Probe, 100, stats)
    assert calls == [4, 4] and Path(entry).exists()
