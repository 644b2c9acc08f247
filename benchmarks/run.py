"""Run one named benchmark of hf_distill and append its figures to benchmarks/results.jsonl.

    python benchmarks/run.py mnist-fixed            # distillation + evaluation, preset defaults
    python benchmarks/run.py imdb-random-full-data  # the ceiling: the same learner trained on all the data
    accelerate launch --multi_gpu --num_processes 2 benchmarks/run.py digits-demo  # data-parallel, CPU or GPU

Each record holds the accuracy figures, wall time, time per outer step, peak memory (max RSS), the device, the
library versions and the exact command, so docs/benchmarks.md can quote it.
"""

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MINILM = str(SHARED / "models" / "all-MiniLM-L6-v2")
OUT = Path("/tmp/hf_distill_benchmarks")

BENCHMARKS = {
    "mnist-fixed": ["--dataset", str(SHARED / "data/mnist"), "--learner_init", "fixed"],
    "mnist-random": ["--dataset", str(SHARED / "data/mnist"), "--learner_init", "random"],
    "imdb-random": ["--dataset", str(SHARED / "data/imdb"), "--embedding_model", MINILM],
    "digits-demo": [],
    # issue 6: the DC/DM/MTT ConvNet, random init, for comparing objectives (--distill_method)
    "mnist-convnet": ["--dataset", str(SHARED / "data/mnist"), "--learner", "convnet", "--learner_init", "random"],
    # issue 3: the pretrained MiniLM itself as the learner (fresh head per inner run), 1 sequence per class
    "imdb-minilm": ["--dataset", str(SHARED / "data/imdb"), "--learner", MINILM, "--synthetic_per_class", "1"],
    "ag_news-minilm": ["--dataset", str(SHARED / "data/ag_news"), "--learner", MINILM, "--synthetic_per_class", "1"],
}


def device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


def launcher() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return "python" if world == 1 else f"accelerate launch --multi_gpu --num_processes {world}"


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


def full_data(name: str) -> dict:
    """Train the benchmark's learner on the whole training split with Adam: the full-data ceiling."""
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    from hf_distill.cli import parse_args
    from hf_distill.data import load_input_embeddings, load_real_data
    from hf_distill.evaluation import accuracy, predict
    from hf_distill.learners import build_learner

    data_args, args = parse_args(BENCHMARKS[name.removesuffix("-full-data")])
    embeddings = tokenizer = None
    if args.embedding_model:
        embeddings, tokenizer = load_input_embeddings(args.embedding_model)
    data = load_real_data(data_args, tokenizer=tokenizer, image_mean=args.image_mean, image_std=args.image_std)
    torch.manual_seed(args.seed)
    first = data.train[0]
    shape = (
        {"hidden_size": embeddings.shape[1]}
        if embeddings is not None
        else {"num_channels": first["pixel_values"].shape[0], "image_size": first["pixel_values"].shape[-1]}
    )
    learner = build_learner(args.learner, len(data.label_names), **shape)

    def batches(ds, shuffle):
        for b in DataLoader(ds, batch_size=64, shuffle=shuffle, collate_fn=default_data_collator):
            if embeddings is None:
                yield b["pixel_values"], None, b["labels"]
            else:
                yield torch.nn.functional.embedding(b["input_ids"], embeddings), b["attention_mask"], b["labels"]

    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    learner.train()
    for _ in range(2):  # epochs
        for x, mask, y in batches(data.train, True):
            kwargs = {"pixel_values": x} if mask is None else {"inputs_embeds": x, "attention_mask": mask}
            optimizer.zero_grad()
            learner(**kwargs, labels=y).loss.backward()
            optimizer.step()
    learner.eval()
    params = dict(learner.named_parameters())
    return {"eval_full_data_accuracy": accuracy(predict(learner, params, batches(data.eval, False)))["accuracy"]}


def main(name: str, extra: list[str]) -> None:
    from hf_distill.cli import distill, parse_args

    start = time.time()
    if name.endswith("-full-data"):
        metrics = full_data(name)
        steps = None
    else:
        argv = BENCHMARKS[name] + ["--output_dir", str(OUT / name), "--disable_tqdm", "true"] + extra
        metrics = distill(argv)
        output_dir = Path(parse_args(argv)[1].output_dir)  # extra flags may name another one
        steps = json.loads((output_dir / "train_results.json").read_text())
    record = {
        "benchmark": name,
        "command": f"{launcher()} benchmarks/run.py {' '.join([name, *extra])}",
        **{k: v for k, v in metrics.items() if k.startswith("eval_")},
        "wall_time_s": round(time.time() - start, 1),
        "train_runtime_s": None if steps is None else steps["train_runtime"],
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "device": device(),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # under accelerate launch / torchrun
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if steps is not None:
        _, args = parse_args(BENCHMARKS[name] + extra)
        record["outer_steps"] = args.max_steps
        record["time_per_outer_step_s"] = round(steps["train_runtime"] / args.max_steps, 3)
    if int(os.environ.get("RANK", "0")) != 0:  # one record per run: the main process writes it
        return
    print(json.dumps(record, indent=2))
    with open(ROOT / "benchmarks" / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].removesuffix("-full-data") not in BENCHMARKS:
        sys.exit(f"usage: python benchmarks/run.py {{{','.join(BENCHMARKS)}}}[-full-data] [extra hf-distill flags]")
    main(sys.argv[1], sys.argv[2:])
