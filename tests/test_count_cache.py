"""The count cache returns a count only under the exact key it was counted under, and --no-cache recounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cabench.measure import count_cache
from cabench.measure.complexity import Complexity
from cabench.models.registry import ModelSpec
from cabench.profiles import count as count_profile

COUNTS = Complexity(params=5, madds=7, fvcore_total=9, input_size=(224, 224), by_operator={"conv": 7})


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CABENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_round_trip_and_every_key_part_matters() -> None:
    count_cache.store_counts("mobilenetv2|ca", True, COUNTS)
    assert count_cache.load_counts("mobilenetv2|ca", True) == COUNTS
    assert count_cache.load_counts("mobilenetv2|ca", False) is None  # without multiply-adds: another key
    assert count_cache.load_counts("mobilenetv2|se", True) is None


def test_the_key_covers_the_code_and_the_library_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    for rel in ("models/a.py", "measure/b.py", "registry.py", "cli.py"):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text("x = 1\n")
    monkeypatch.setattr(count_cache, "_PACKAGE", package)

    def fingerprint() -> str:
        count_cache.code_fingerprint.cache_clear()
        return count_cache.code_fingerprint()

    first = fingerprint()
    (package / "cli.py").write_text("x = 2\n")  # not counting code
    assert fingerprint() == first
    for rel in ("models/a.py", "measure/b.py", "registry.py"):
        (package / rel).write_text(f"# changed {rel}\n")
        changed = fingerprint()
        assert changed != first
        first = changed
    real = count_cache.metadata.version
    monkeypatch.setattr(count_cache.metadata, "version", lambda d: "0.0" if d == "fvcore" else real(d))
    assert fingerprint() != first
    count_cache.code_fingerprint.cache_clear()


def test_a_corrupt_entry_is_a_miss(_own_cache: Path) -> None:
    count_cache.store_counts("k", True, COUNTS)
    (entry,) = _own_cache.glob("*.json")
    entry.write_text("{not json")
    assert count_cache.load_counts("k", True) is None


def test_no_cache_while_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    count_cache.store_counts("k", True, COUNTS)
    monkeypatch.setattr("cabench.registry.loaded_plugins", lambda: ["someone.plugin"])
    assert count_cache.load_counts("k", True) is None


def test_count_specs_uses_the_cache_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from cabench.measure import complexity

    spec = ModelSpec("mobilenetv2", attention="ca")
    calls: list[str] = []
    monkeypatch.setattr(complexity, "count_model", lambda s, madds: calls.append(s.key()) or COUNTS)
    assert count_profile.count_specs([(spec, True)], cache=True)[spec.key()] == COUNTS
    assert count_profile.count_specs([(spec, True)], cache=True)[spec.key()] == COUNTS
    assert calls == [spec.key()]  # the second call was a hit
    count_profile.count_specs([(spec, True)], cache=False)
    assert calls == [spec.key()] * 2  # --no-cache recounts


@pytest.mark.slow
def test_cached_counts_equal_a_fresh_count() -> None:
    from cabench.measure.complexity import count_model

    spec = ModelSpec("mobilenetv2", width=0.5, attention="ca")
    fresh = count_profile.count_specs([(spec, True)], cache=True)[spec.key()]
    assert count_cache.load_counts(spec.key(), True) == fresh == count_model(spec, madds=True)


def test_counts_from_forked_workers_equal_counts_in_one_process_and_see_blocks_registered_at_run_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from torch import nn

    import cabench
    from cabench.measure import complexity

    @cabench.register_attention("test-count-workers-gate")
    class Gate(nn.Module):  # exists only in this process's memory: a worker sees it through the fork
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.fc = nn.Linear(channels, channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.fc(x.mean((2, 3)))[:, :, None, None])

    blocks = ("none", "se", "ca", "test-count-workers-gate")
    wanted = [
        (ModelSpec("mobilenetv2", width=w, attention=b, num_classes=10), b != "se") for w in (0.5, 1.0) for b in blocks
    ]
    wanted = wanted * 2  # 16: enough for two workers
    monkeypatch.setattr(complexity.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    finished: list[str] = []
    forked = complexity.count_models(wanted, lambda spec: finished.append(spec.key()))
    assert forked == [complexity.count_model(spec, madds=madds) for spec, madds in wanted]
    assert sorted(finished) == sorted(spec.key() for spec, _ in wanted)
    assert forked[3].params > forked[0].params and forked[3].madds > forked[0].madds  # the gate was counted
