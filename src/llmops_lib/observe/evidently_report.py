"""Worker: an Evidently data-drift report of two windows of request-log rows.

Runs inside the evaluation tools' environment (`.venv-evals`: Evidently needs pandas < 3, which the
project's environment does not pin), started by `llmops_lib.observe.drift.drift_report`; it
therefore imports nothing from llmops_lib. It reads one JSON file:

    {"numerical": [name, ...], "categorical": [name, ...], "descriptors": [[text_column, kind, alias], ...],
     "threshold": 0.004, "windows": [{"name": "drift", "reference": [row, ...], "current": [row, ...],
                                      "html": true}, ...]}

computes the text descriptors with Evidently (`DESCRIPTORS`: none needs a downloaded model or NLTK
data), tests every named column with a p-value test (K-S for numbers, chi-square for categories)
against `threshold`, and writes into OUT_DIR/<name>/ for each pair of windows Evidently's own JSON
(`drift.json`), `summary.json` (per column: p-value, method, threshold, drifted) and, if asked, the
self-contained HTML report (`drift.html`). Several pairs in one run pay Evidently's import (10-20 s)
once. Usage: python evidently_report.py INPUT.json OUT_DIR

Explained in: book/chapters/05_quality/quality_assurance.ipynb
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: descriptor kind -> (Evidently descriptor class, its extra arguments)
DESCRIPTORS = {
    "chars": ("TextLength", {}),
    "words": ("WordCount", {}),
    "non_letter": ("NonLetterCharacterPercentage", {}),
    "has_digit": ("RegExp", {"reg_exp": r"(?s).*\d.*"}),  # RegExp must match the whole text
    "is_json": ("IsValidJSON", {}),
}
#: IsValidJSON fails on a missing text, NonLetterCharacterPercentage on an empty one (division by zero):
#: the JSON check reads a copy of the text column with "" for missing, every other descriptor None for ""
JSON_COPY = "{}__json"


def report(spec: dict, out: Path) -> None:
    """Run the reports of `spec` (see the module docstring) into `out`."""
    import evidently.descriptors
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    texts = sorted({text for text, _, _ in spec["descriptors"]})
    copies = sorted({JSON_COPY.format(text) for text, kind, _ in spec["descriptors"] if kind == "is_json"})
    definition = DataDefinition(
        text_columns=[*texts, *copies], numerical_columns=spec["numerical"], categorical_columns=spec["categorical"]
    )
    descriptors = []
    for text, kind, alias in spec["descriptors"]:
        name, arguments = DESCRIPTORS[kind]
        source = JSON_COPY.format(text) if kind == "is_json" else text
        descriptors.append(getattr(evidently.descriptors, name)(source, alias=alias, **arguments))
    columns = [*spec["numerical"], *spec["categorical"], *(alias for _, _, alias in spec["descriptors"])]

    def dataset(rows: list[dict]) -> Dataset:
        frame = pd.DataFrame(rows, columns=[*spec["numerical"], *spec["categorical"]])
        for text in texts:
            values = [row.get(text) for row in rows]
            frame[text] = [value or None for value in values]
            if JSON_COPY.format(text) in copies:
                frame[JSON_COPY.format(text)] = [value or "" for value in values]
        return Dataset.from_pandas(frame, data_definition=definition, descriptors=descriptors)

    for window in spec["windows"]:
        # p-value tests whatever the size (Evidently switches to distances above 1000 rows by default)
        preset = DataDriftPreset(
            columns=columns, num_method="ks", cat_method="chisquare", threshold=spec["threshold"], drift_share=1e-9
        )
        snapshot = Report([preset]).run(dataset(window["current"]), dataset(window["reference"]))
        folder = out / window["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if window.get("html", True):
            snapshot.save_html(str(folder / "drift.html"))
        snapshot.save_json(str(folder / "drift.json"))
        per_column = {}
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if config["type"].endswith(":ValueDrift"):
                value = float(metric["value"])
                per_column[config["column"]] = {
                    "score": value,
                    "method": config["method"],
                    "threshold": config["threshold"],
                    "drifted": value < config["threshold"],  # both tests used give p-values
                }
        (folder / "summary.json").write_text(json.dumps({"columns": per_column}, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python evidently_report.py INPUT.json OUT_DIR")
    report(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
