"""Issue 19's targets in one table: the newest report of each benchmark that states targets.

Every benchmark touched by issue 19 writes its targets under the top-level key "targets" of its
JSON report (benchmarks/results/<name>-<time>.json): objects {name, value, unit, target, met,
note}. This reads the newest report of each benchmark and prints them together, with each
report's date; `make bench` runs it last. `--markdown` prints the table as docs/performance.md
keeps it.

    python -m benchmarks.targets
    python -m benchmarks.targets --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The benchmarks issue 19 measures, in the order the table lists them.
BENCHMARKS = ("streaming", "sockets", "concurrency", "knowledge")


@dataclass(frozen=True)
class Row:
    benchmark: str
    when: str
    name: str
    value: float
    unit: str
    target: str
    met: bool
    note: str


def newest(folders: list[Path], name: str) -> Path | None:
    """The newest report of `name` that states targets, in any of `folders` (names sort by time:
    <name>-YYYYmmdd-HHMMSS)."""
    found = [path for folder in folders for path in folder.glob(f"{name}-*.json")]
    for path in sorted(found, key=lambda p: p.name, reverse=True):
        if not path.stem[len(name) + 1 :][:1].isdigit():
            continue  # another benchmark whose name starts with this one's
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict) and report.get("targets"):
            return path
    return None


def rows_of(name: str, path: Path) -> list[Row]:
    report: dict[str, Any] = json.loads(path.read_text())
    when = str(report.get("when", path.stem[len(name) + 1 :]))
    return [
        Row(
            name,
            when,
            str(t["name"]),
            float(t["value"]),
            str(t["unit"]),
            str(t["target"]),
            bool(t["met"]),
            str(t.get("note", "")),
        )
        for t in report["targets"]
    ]


def collect(folders: list[Path]) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    missing: list[str] = []
    for name in BENCHMARKS:
        path = newest(folders, name)
        if path is None:
            missing.append(name)
        else:
            rows += rows_of(name, path)
    return rows, missing


def text_table(rows: list[Row], missing: list[str]) -> str:
    lines = [f"{'benchmark':<10} {'target':<52} {'value':>9} {'unit':<6} {'goal':<9} {'':<6} note"]
    for r in rows:
        mark = "met" if r.met else "MISSED"
        lines.append(
            f"{r.benchmark:<10} {r.name:<52} {r.value:>9.2f} {r.unit:<6} {r.target:<9} {mark:<6} {r.note}"
        )
    met = sum(r.met for r in rows)
    lines.append(f"\n{met} of {len(rows)} targets met")
    lines += [f"no report with targets from benchmarks.{name}" for name in missing]
    return "\n".join(lines)


def markdown_table(rows: list[Row], missing: list[str]) -> str:
    lines = [
        "| benchmark | target | value | goal | met | note |",
        "|---|---|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.benchmark} ({r.when[:10]}) | {r.name} | {r.value:.2f} {r.unit} | {r.target} | "
            f"{'yes' if r.met else '**no**'} | {r.note} |"
        )
    lines += [f"\nNo report with targets from `benchmarks.{name}`." for name in missing]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results",
        type=Path,
        action="append",
        help="a folder of reports (repeatable; default benchmarks/results)",
    )
    parser.add_argument("--markdown", action="store_true", help="as docs/performance.md keeps it")
    args = parser.parse_args()
    rows, missing = collect(args.results or [ROOT / "benchmarks" / "results"])
    if args.markdown:
        print(f"Machine: {os.cpu_count()} CPUs, {platform.platform()}.\n")
        print(markdown_table(rows, missing))
    else:
        print(text_table(rows, missing))


if __name__ == "__main__":
    main()
