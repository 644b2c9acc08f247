"""Paired comparisons over seeds, from the records of benchmarks/results.jsonl (what issue 5's noisy-label targets
ask: one setting against another, seed by seed, and on the mean).

    python benchmarks/seeds.py \
        plain="mnist-random --label_noise_type symmetric --label_noise_rate 0.4 --max_step_size 0.15" \
        trust="mnist-random --label_noise_type symmetric --label_noise_rate 0.4 --max_step_size 0.15 \
               --trust_aware true --trust_learners real --trust_interval 1000 --trust_consistency_weight 1" \
        clean="mnist-random --max_step_size 0.15" \
        --check "trust-plain>=5" --check "trust-clean>=-3"

A spec `NAME="BENCHMARK FLAGS"` names the runs of `python benchmarks/run.py BENCHMARK FLAGS`: the records whose
command has that benchmark and exactly those flags, in any order, apart from `--seed` (42 when absent, the
`TrainingArguments` default) and the flags that only say where output goes. Where a seed has several such records
(a repeat on another machine), the oldest is its figure and the others are counted. Prints a Markdown table: each
seed's accuracy (mean ± std over its evaluation models) per spec, each check's difference, then the mean over the
seeds that have both sides of a check, the standard error of that mean difference, and at how many seeds the
check holds.
"""

import argparse
import re
import shlex
import statistics
import sys
from pathlib import Path

from report import _settings, load

RESULTS = Path(__file__).with_name("results.jsonl")
DEFAULT_SEED = 42
CHECK = re.compile(r"^(?P<a>[\w.]+)-(?P<b>[\w.]+)(?P<op>>=|<=)(?P<threshold>-?\d+(\.\d+)?)$")


def run_key(words: list[str]) -> tuple[tuple, int] | None:
    """(benchmark, sorted flag/value pairs) and the seed of `run.py BENCHMARK FLAGS...` words; `None` for other
    commands or flags that do not pair up."""
    start = next((i + 1 for i, w in enumerate(words) if w.endswith("run.py")), 0)
    if start >= len(words):
        return None
    name, flags = words[start], words[start + 1 :]
    if len(flags) % 2 or not all(f.startswith("--") for f in flags[::2]):
        return None
    pairs = dict(zip(flags[::2], flags[1::2]))
    seed = int(pairs.pop("--seed", DEFAULT_SEED))
    return (name, tuple(sorted(pairs.items()))), seed


def runs_by_seed(records: list[dict], spec: str) -> dict[int, list[dict]]:
    """The records of one spec ("BENCHMARK FLAGS"), by seed, oldest first; superseded records are left out."""
    parsed = run_key(shlex.split(spec))
    if parsed is None:
        raise ValueError(f"A spec reads BENCHMARK --flag value ..., as given to benchmarks/run.py, not {spec!r}.")
    key = parsed[0]
    found: dict[int, list[dict]] = {}
    for record in records:
        run = run_key(_settings(record)) if not record.get("superseded") else None
        if run is not None and run[0] == key:
            found.setdefault(run[1], []).append(record)
    return found


def parse_check(text: str) -> tuple[str, str, str, float]:
    match = CHECK.match(text.replace(" ", ""))
    if match is None:
        raise ValueError(f"A check reads A-B>=T or A-B<=T (A, B: spec names), not {text!r}.")
    return match["a"], match["b"], match["op"], float(match["threshold"])


def holds(difference: float, op: str, threshold: float) -> bool:
    return difference >= threshold if op == ">=" else difference <= threshold


def _cell(runs: list[dict] | None) -> str:
    if not runs:
        return "—"
    first = runs[0]
    text = f"{100 * first['eval_accuracy']:.2f} ± {100 * first.get('eval_accuracy_std', 0.0):.1f}"
    where = first.get("cpu_model_id")
    text += f" ({where})" if where else ""
    return text + (f", {len(runs) - 1} more" if len(runs) > 1 else "")


def table(records: list[dict], specs: dict[str, str], checks: list[str]) -> str:
    """The Markdown table of every seed that has a record of any spec, then one summary line per check."""
    runs = {name: runs_by_seed(records, spec) for name, spec in specs.items()}
    parsed = [parse_check(c) for c in checks]
    for a, b, _, _ in parsed:
        for name in (a, b):
            if name not in specs:
                raise ValueError(f"Check names {name!r}, which is not a spec ({', '.join(specs)}).")
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    header = ["seed", *specs, *(f"{a} − {b}" for a, b, _, _ in parsed)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    differences: dict[str, list[float]] = {c: [] for c in checks}

    def accuracy(name: str, seed: int) -> float | None:
        found = runs[name].get(seed)
        return 100 * found[0]["eval_accuracy"] if found else None

    for seed in seeds:
        cells = [str(seed), *(_cell(runs[name].get(seed)) for name in specs)]
        for check, (a, b, op, threshold) in zip(checks, parsed):
            x, y = accuracy(a, seed), accuracy(b, seed)
            if x is None or y is None:
                cells.append("—")
                continue
            differences[check].append(x - y)
            cells.append(f"{x - y:+.2f} ({'holds' if holds(x - y, op, threshold) else 'not'})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for check, (_, _, op, threshold) in zip(checks, parsed):
        values = differences[check]
        if not values:
            lines.append(f"- {check}: no seed has both sides.")
            continue
        mean = statistics.fmean(values)
        error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        count = sum(holds(v, op, threshold) for v in values)
        verdict = "holds" if holds(mean, op, threshold) else "does not hold"
        lines.append(
            f"- {check}: mean {mean:+.2f} ± {error:.2f} (standard error) over {len(values)} seeds, {verdict} on the "
            f"mean; holds at {count} of {len(values)} seeds."
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", help='NAME="BENCHMARK FLAGS" (flags as given to benchmarks/run.py)')
    parser.add_argument("--check", action="append", default=[], help="A-B>=T or A-B<=T, in accuracy points")
    parser.add_argument("--results", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    specs = {}
    for spec in options.specs:
        name, sep, command = spec.partition("=")
        if not sep or not command.strip():
            parser.error(f'A spec reads NAME="BENCHMARK FLAGS", not {spec!r}.')
        specs[name] = command
    if not options.results.is_file():
        parser.error(f"{options.results} does not exist.")
    try:
        print(table(load(options.results), specs, options.check))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
