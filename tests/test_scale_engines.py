"""The scale catalog (`data/scale_engines.yml`) against its sources, the render targets, the page and vLLM.

Explained in: book/chapters/10_scale/beyond_one_machine.ipynb
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from llmops_lib.config import REPO_ROOT, settings
from llmops_lib.errors import SpecError
from llmops_lib.scale import engines_catalog
from llmops_lib.scale.render import TARGETS

PAGE = REPO_ROOT / "book/chapters/10_scale/beyond_one_machine.ipynb"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(engines_catalog.default_path().read_text())


@pytest.fixture(scope="module")
def page() -> tuple[str, str]:
    """(all text, code only) of the chapter."""
    cells = nbformat.read(PAGE, as_version=4).cells
    return "\n".join(c.source for c in cells), "\n".join(c.source for c in cells if c.cell_type == "code")


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "scale_engines.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_every_row_has_one_source_url(raw: dict) -> None:
    for row in raw["parallelism"] + raw["engines"]:
        assert re.fullmatch(r"https://[^\s/]+\.[a-z]+/\S*", row["source"]), row["name"]


def test_the_issue_s_anchors_are_all_there(raw: dict) -> None:
    names = {row["name"] for row in raw["engines"]}
    assert {"Ray Serve", "Ray Serve LLM", "KubeRay RayService", "KServe InferenceService"} <= names
    assert {"KServe LLMInferenceService", "llm-d", "vLLM production-stack", "NVIDIA Dynamo"} <= names
    assert "Gateway API inference extension" in names
    assert {row["name"] for row in raw["parallelism"]} == {"data parallel", "tensor parallel", "pipeline parallel"}


def test_a_row_without_source_is_refused(raw: dict, tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(raw))
    del next(row for row in data["engines"] if row["name"] == "llm-d")["source"]
    with pytest.raises(SpecError, match=r"engines\[\d+\] \(llm-d\)\.source: Field required"):
        engines_catalog.load(_write(tmp_path, data))


def test_a_rendered_row_without_its_target_is_refused(raw: dict, tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(raw))
    del next(row for row in data["engines"] if row["name"] == "KubeRay RayService")["target"]
    with pytest.raises(SpecError, match=r"\(KubeRay RayService\).*here=rendered needs `target`"):
        engines_catalog.load(_write(tmp_path, data))


def test_every_render_target_has_exactly_one_row(raw: dict) -> None:
    targets = [row["target"] for row in raw["engines"] if row["here"] == "rendered"]
    assert sorted(targets) == sorted(TARGETS)


def test_the_page_covers_every_row_and_backs_its_live_claims(raw: dict, page: tuple[str, str]) -> None:
    text, code = page
    assert "(ch-scale)=" in text
    for row in raw["engines"]:
        assert row["name"].split(" ")[0] in text, row["name"]
        if row["here"] == "live":
            assert row["evidence"] in code, row["name"]
        if row["here"] == "rendered":
            # the page renders every target by iterating over the catalog's rendered rows
            assert "engines_catalog.load()" in code and "render(" in code


def test_opt_in_rows_name_a_slow_test(raw: dict) -> None:
    for row in (r for r in raw["engines"] if r["here"] == "opt_in"):
        text = (REPO_ROOT / row["test"]).read_text()
        assert "pytest.mark.slow" in text, row["test"]


@pytest.mark.skipif(not settings().vllm_python.is_file(), reason="vLLM's environment is not installed (make vllm)")
def test_vllm_on_cpu_has_no_ray_device_key_so_its_ray_executor_refuses() -> None:
    """The claim "multi-node TP/PP is GPU-only" against the installed vLLM: its CPU platform has an empty
    Ray device key, and its Ray executor refuses an empty key with the message the catalog quotes."""
    assert engines_catalog.vllm_ray_device_key() == ("cpu", "")
    site = next(settings().vllm_python.parent.parent.glob("lib/python*/site-packages/vllm/v1/executor"))
    assert "does not support ray" in (site / "ray_utils.py").read_text()
    quoted = engines_catalog.load().engine("vLLM multi-node tensor/pipeline parallel").why_not
    assert '"current platform cpu does not support ray"' in quoted
