"""Run hf_distill benchmarks and append their figures to benchmarks/results.jsonl.

    python benchmarks/run.py seed-s1                 # a whole suite (benchmarks/suites.py), one process per row
    python benchmarks/run.py images --quick          # the CPU smoke mode of a suite: minutes, not hours
    python benchmarks/run.py seed-s1/trec6-textcnn-1pc-fixed         # one row of a suite
    python benchmarks/run.py mnist-fixed [hf-distill flags]          # a named single benchmark (issues 2-6)
    python benchmarks/run.py imdb-random-full-data   # the ceiling: the same learner trained on all the data
    python benchmarks/run.py imdb-minilm-full-data --resume_from_checkpoint DIR/checkpoint-N  # ceilings resume too
    accelerate launch --multi_gpu --num_processes 2 benchmarks/run.py digits-demo  # data-parallel, CPU or GPU
    python benchmarks/run.py images --launch "accelerate launch --multi_gpu --num_processes 8"  # each row so

A suite uses ../shared/data/<dataset> where it exists and the preset's Hub id otherwise (`--data_dir` picks another
folder). Each record holds the accuracy figures, wall time, time per outer step, peak memory (max RSS, and peak CUDA
memory on a GPU), the device, the library versions and the exact command; `python benchmarks/report.py` renders
the suites' records into docs/benchmarks.md.
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from ceiling import full_data
from suites import ROOT, SHARED, SHARED_DATA, SHARED_MINILM, SUITES, Row, find_row, row_flags, row_names
from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME

MINILM = str(SHARED_MINILM)
OUT = Path("/tmp/hf_distill_benchmarks")
RESULTS = ROOT / "benchmarks" / "results.jsonl"

# Issue 3's figures were measured with the inputs' step size at 0.01, before the text presets' 3e-4.
MINILM_LEARNER = ["--learner", MINILM, "--synthetic_per_class", "1", "--learning_rate", "0.01"]
BENCHMARKS = {
    "mnist-fixed": ["--dataset", str(SHARED / "data/mnist"), "--learner_init", "fixed"],
    "mnist-random": ["--dataset", str(SHARED / "data/mnist"), "--learner_init", "random"],
    "imdb-random": ["--dataset", str(SHARED / "data/imdb"), "--embedding_model", MINILM],
    "digits-demo": [],
    # issue 6: the DC/DM/MTT ConvNet, random init, for comparing objectives (--distill_method)
    "mnist-convnet": ["--dataset", str(SHARED / "data/mnist"), "--learner", "convnet", "--learner_init", "random"],
    # issue 3: the pretrained MiniLM itself as the learner (fresh head per inner run), 1 sequence per class
    "imdb-minilm": ["--dataset", str(SHARED / "data/imdb"), *MINILM_LEARNER],
    "ag_news-minilm": ["--dataset", str(SHARED / "data/ag_news"), *MINILM_LEARNER],
}


def device() -> str:
    from hf_distill.environment import device_name

    if torch.cuda.is_available():
        return device_name("cuda")
    return f"CPU: {device_name()}, {torch.get_num_threads()} threads"


def launcher() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return "python" if world == 1 else f"accelerate launch --multi_gpu --num_processes {world}"


def allocator_env() -> str:
    """glibc's malloc settings given in the environment (`MALLOC_MMAP_THRESHOLD_=...`), as a command prefix: they
    change the peak memory a record reports (docs/benchmarks.md, the IMDB ceiling)."""
    return "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))


def versions() -> dict:
    import datasets
    import transformers

    import hf_distill

    return {
        "hf_distill": hf_distill.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def describe(name: str, data_dir: Path | None, quick: bool) -> tuple[list[str], dict]:
    """The hf-distill flags of a benchmark or suite row, and what its record says about it."""
    if "/" not in name:
        return BENCHMARKS[name.removesuffix("-full-data")], {}
    suite, row = find_row(name)
    meta = {"suite": suite.name, "row": name.partition("/")[2], "mode": "quick" if quick else "full"}
    if isinstance(row, tuple):  # (dataset, learner): the full-data ceiling
        flags = row_flags(Row(row[0], 1, learner=row[1]), data_dir, quick)
        return flags, {**meta, "dataset": row[0], "learner": row[1], "method": "full-data"}
    meta |= {"dataset": row.dataset, "learner": row.learner_name, "per_class": row.per_class, "method": row.method}
    meta |= {"learner_init": row.learner_init, "synthetic_init": row.synthetic_init}
    meta |= {"noise": row.noise, "trust_aware": row.trust_aware}
    return row_flags(row, data_dir, quick), meta


def run_one(name: str, extra: list[str], data_dir: Path | None, quick: bool, results: Path, root: Path = OUT) -> None:
    from hf_distill.cli import distill, parse_args
    from hf_distill.environment import cpu_model_id, portable_cpu_kernels

    located = data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None)
    flags, meta = describe(name, located, quick)
    start = time.time()
    output_dir = root / (name + ("-quick" if quick else ""))
    if name.endswith("-full-data"):  # checkpoints (if any) go to output_dir unless extra flags name another
        metrics = full_data(flags + ["--output_dir", str(output_dir)] + extra, epochs=1 if quick else 2)
        steps = None
    else:
        argv = flags + ["--output_dir", str(output_dir), "--disable_tqdm", "true"] + extra
        metrics = distill(argv)
        output_dir = Path(parse_args(argv)[1].output_dir)  # extra flags may name another one
        steps = json.loads((output_dir / "train_results.json").read_text())
    options = (["--quick"] if quick else []) + ([f"--data_dir {data_dir}"] if data_dir else [])
    record = {
        "benchmark": name,
        **meta,
        "command": f"{allocator_env()}{launcher()} benchmarks/run.py "
        + " ".join([name, *options, *map(shlex.quote, extra)]),
        **{k: v for k, v in metrics.items() if k.startswith("eval_")},
        "wall_time_s": round(time.time() - start, 1),
        "train_runtime_s": None if steps is None else steps["train_runtime"],
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "device": device(),
        # the vector instructions torch's CPU kernels use: another level rounds differently, and chaotic runs diverge
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model_id": cpu_model_id(),  # vendor family/model/stepping: a generic model name can hide two CPUs
        "portable_cpu_kernels": portable_cpu_kernels(),  # --full_determinism: meant to round alike on any x86-64 CPU
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # under accelerate launch / torchrun
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        record["peak_cuda_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if steps is not None:
        _, args = parse_args(flags + extra)
        if "method" in meta:  # what the run did, where extra flags overrode the row's
            record |= {"method": args.distill_method, "learner_init": args.learner_init}
            record["synthetic_init"] = args.synthetic_init
        record["outer_steps"] = args.max_steps
        resumed = 0  # a resumed run times only the steps after its checkpoint's
        if args.resume_from_checkpoint:
            state = TrainerState.load_from_json(str(Path(args.resume_from_checkpoint) / TRAINER_STATE_NAME))
            resumed = record["resumed_from_step"] = state.global_step
        record["time_per_outer_step_s"] = round(steps["train_runtime"] / (args.max_steps - resumed), 3)
        previews = [str(output_dir / f) for f in ("preview.png", "preview.txt") if (output_dir / f).exists()]
        record["preview"] = previews[0] if previews else None
    if int(os.environ.get("RANK", "0")) != 0:  # one record per run: the main process writes it
        return
    if steps is not None:  # the set's fingerprint: two runs of one command that give the same one gave the same set
        record["data_sha256"] = json.loads((output_dir / "distillation.json").read_text()).get("data_sha256")
    print(json.dumps(record, indent=2))
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_suite(name: str, options: argparse.Namespace, extra: list[str]) -> int:
    """Each row in its own process (so that peak memory is that row's), under `--launch` if given, `--jobs` at once."""
    rows = [r for r in row_names(SUITES[name]) if not options.only or any(o in r for o in options.only)]
    launch = shlex.split(options.launch) if options.launch else [sys.executable]
    passed = ["--results", str(options.results), "--output_root", str(options.output_root)]
    passed += ["--quick"] if options.quick else []
    if options.data_dir is not None:
        passed += ["--data_dir", str(options.data_dir)]

    env = dict(os.environ)
    if options.jobs > 1:  # rows side by side share the cores instead of each starting one thread per core
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // options.jobs)))

    def run_row(row: str) -> bool:
        print(f"[{rows.index(row) + 1}/{len(rows)}] {row}", flush=True)
        return subprocess.run([*launch, __file__, row, *passed, *extra], env=env).returncode == 0

    with ThreadPoolExecutor(options.jobs) as pool:
        failed = [row for row, ok in zip(rows, pool.map(run_row, rows)) if not ok]
    if failed:
        print(f"{len(failed)} of {len(rows)} rows failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    names = [*SUITES, *BENCHMARKS, *(f"{b}-full-data" for b in BENCHMARKS), "SUITE/ROW"]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], usage="%(prog)s NAME [options] [hf-distill flags]", allow_abbrev=False
    )
    parser.add_argument("name", help=f"one of {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="the CPU smoke mode of a suite row")
    parser.add_argument("--only", action="append", help="suite rows whose name contains this (repeatable)")
    parser.add_argument("--launch", help="launcher of each suite row, e.g. 'accelerate launch --num_processes 8'")
    parser.add_argument("--jobs", type=int, default=1, help="suite rows run at once (timings then share the CPU)")
    parser.add_argument("--data_dir", type=Path, help="folder of <dataset>/ parquet folders (default ../shared/data)")
    parser.add_argument("--results", type=Path, help="results file (default benchmarks/results.jsonl; quick: /tmp)")
    parser.add_argument("--output_root", type=Path, default=OUT, help=f"where each run's folder goes (default {OUT})")
    options, extra = parser.parse_known_args(argv)
    if options.results is None:
        options.results = options.output_root / "results-quick.jsonl" if options.quick else RESULTS
    if options.name in SUITES:
        return run_suite(options.name, options, extra)
    if "/" in options.name:
        try:
            find_row(options.name)
        except KeyError as e:
            parser.error(str(e.args[0]))
    elif options.name.removesuffix("-full-data") not in BENCHMARKS:
        parser.error(f"unknown benchmark {options.name!r}: choose one of {', '.join(names)}")
    run_one(options.name, extra, options.data_dir, options.quick, options.results, options.output_root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
