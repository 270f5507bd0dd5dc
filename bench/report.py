"""Merges the rows files of the benchmark programs into one Markdown table.

    python3 report.py FILE...

Each FILE holds JSON lines as bench/rows.hpp describes; lines with a
"median" key (raw medians, for other tools) are skipped. A FILE that does not
exist stands for a program that failed to run: it gets a row saying so.
The table goes to standard output. Exit status 1 if a FILE is missing or a
row carries an error (a case could not be measured), else 0: a missed target
is not a failure.
"""
import json
import os
import sys

LEGEND = (
    "ours and baseline are medians over the repetitions of one run; "
    "ratio is ours / baseline, except for rows that say speed-up (baseline / ours)."
)


def significant(value, digits=3):
    """`value` with `digits` significant digits, without exponent."""
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        text = f"{value:.0f}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return text


def amount(value, unit):
    if unit == "ns":
        for scale, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
            if value >= scale:
                return f"{significant(value / scale)} {name}"
        return f"{significant(value)} ns"
    if unit == "/s":
        for scale, name in ((1e6, "M/s"), (1e3, "k/s")):
            if value >= scale:
                return f"{significant(value / scale)} {name}"
        return f"{significant(value)}/s"
    if unit == "B":
        return f"{value:.0f} B"
    return f"{significant(value)} {unit}"


def ratio(value):
    return f"{value:.2f}x" if value >= 0.1 else f"{significant(value, 2)}x"


def main(paths):
    lines = [
        "| case | ours (median) | baseline (median) | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    failed = False
    for path in paths:
        if not os.path.exists(path):
            name = os.path.splitext(os.path.basename(path))[0]
            lines.append(f"| {name}: every case | - | - | - | - | failed to run |")
            failed = True
            continue
        with open(path, encoding="utf-8") as rows:
            for line in rows:
                if not line.strip():
                    continue
                row = json.loads(line)
                if "median" in row:
                    continue
                if row.get("error"):
                    lines.append(f"| {row['case']} | - | - | - | - | failed: {row['error']} |")
                    failed = True
                    continue
                lines.append(
                    "| {} | {} | {} | {} | {} | {} |".format(
                        row["case"],
                        amount(row["ours"], row["unit"]),
                        amount(row["baseline"], row["unit"]),
                        ratio(row["ratio"]),
                        row["target"] or "-",
                        row["verdict"] or "-",
                    )
                )
    print("\n".join(lines))
    print()
    print(LEGEND)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
