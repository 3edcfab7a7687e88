"""Cited accelerator figures: every shipped row has a source, bad rows are refused by name, and the
implied roofline is the cited bandwidth over the model's bytes per token."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops_lib.bench import bytes_read_per_token
from llmops_lib.bench.accelerators import implied_rooflines, load_accelerators
from llmops_lib.errors import SpecError
from llmops_lib.models import default_model, inspect_gguf

ROW = {
    "name": "Test GPU",
    "kind": "data-center GPU",
    "memory_gb": 1,
    "bandwidth_gb_s": 1000,
    "source": "https://x.test/",
}


def write(tmp_path: Path, rows: object) -> Path:
    path = tmp_path / "accelerators.yml"
    path.write_text(yaml.safe_dump({"accelerators": rows}))
    return path


def test_every_shipped_row_has_an_https_source_and_a_unique_name() -> None:
    devices = load_accelerators()
    assert devices and all(device.source.startswith("https://") for device in devices)
    assert len({device.name for device in devices}) == len(devices)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "http://x.test/"}, r"accelerators.0.source: .*https"),
        ({"source": None}, r"accelerators.0.source"),
        ({"bandwidth_gb_s": 0}, r"accelerators.0.bandwidth_gb_s: .*greater than 0"),
        ({"vendor_claim": "fast"}, r"accelerators.0.vendor_claim"),
    ],
)
def test_a_bad_row_is_refused_by_index_and_field(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_accelerators(write(tmp_path, [ROW | change]))


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="non-empty list under 'accelerators'"):
        load_accelerators(write(tmp_path, []))


def test_roofline_is_cited_bandwidth_over_bytes_per_token_and_fit_is_by_file_size(tmp_path: Path) -> None:
    info = inspect_gguf(default_model())  # 253,113,024 bytes: fits in 1 GB, not in 0.1 GB
    small = ROW | {"name": "Small", "memory_gb": 0.1}
    (big_row, small_row) = implied_rooflines(info, load_accelerators(write(tmp_path, [ROW, small])))
    assert big_row["roofline (tokens/s)"] == pytest.approx(1000e9 / bytes_read_per_token(info))
    assert (big_row["model fits in memory"], small_row["model fits in memory"]) == (True, False)
