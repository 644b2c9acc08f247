"""Time and peak memory of one outer step of the unrolled method, against the number of inner steps.

    python benchmarks/unroll_cost.py                      # lenet and textcnn, 10/50/200 inner steps, full and K=10
    python benchmarks/unroll_cost.py --learner lenet --steps 10 200 --backprop_steps 10

Shapes are those of the benchmarks (MNIST: 10 synthetic 1x28x28 images, a real batch of 512, LeNet; IMDB: 20
synthetic 256x384 embedding sequences, a real batch of 64, TextCNN); the values are random, since cost does not depend
on them. Each configuration runs in a fresh process, so that its peak resident memory (max RSS) is its own; the
process's memory before the first outer step is reported beside it, so the growth due to the unroll is visible.
Appends one record per configuration to benchmarks/unroll_cost.jsonl.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_distill.learners import build_learner
from hf_distill.methods import learner_logits, unroll

RESULTS = Path(__file__).with_name("unroll_cost.jsonl")
SHAPES = {  # learner: (synthetic inputs, real batch, learner config)
    "lenet": ((10, 1, 28, 28), 512, {"num_channels": 1, "image_size": 28}),
    "textcnn": ((20, 256, 384), 64, {"hidden_size": 384}),
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(learner_name: str, steps: int, backprop_steps: int | None, outer_steps: int) -> dict:
    syn_shape, batch, config = SHAPES[learner_name]
    torch.manual_seed(0)
    learner = build_learner(learner_name, 10 if learner_name == "lenet" else 2, **config).eval()
    num_labels = learner.config.num_labels
    params = {k: v.detach() for k, v in learner.named_parameters()}
    x_syn = torch.randn(syn_shape, requires_grad=True)
    labels = torch.randn(syn_shape[0], num_labels, requires_grad=True)
    step_sizes = torch.full((steps,), 0.01, requires_grad=True)
    text = learner_name == "textcnn"
    mask_syn = torch.ones(syn_shape[:2]) if text else None
    x = torch.randn((batch, *syn_shape[1:]))
    mask = torch.ones(batch, syn_shape[1]) if text else None
    y = torch.randint(0, num_labels, (batch,))
    before = rss_mib()
    times = []
    for _ in range(outer_steps):
        start = time.perf_counter()
        trained = unroll(
            learner, params, x_syn, mask_syn, labels.softmax(-1), step_sizes, backprop_steps=backprop_steps
        )
        F.cross_entropy(learner_logits(learner, trained, x, mask), y).backward()
        times.append(time.perf_counter() - start)
    return {
        "learner": learner_name,
        "inner_steps": steps,
        "backprop_steps": backprop_steps,
        "time_per_outer_step_s": round(min(times), 3),
        "peak_memory_mib": round(rss_mib()),
        "memory_before_mib": round(before),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learner", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 50, 200])
    parser.add_argument("--backprop_steps", nargs="+", type=int, default=[0, 10], help="0: full back-propagation")
    parser.add_argument("--outer_steps", type=int, default=2)
    parser.add_argument("--one", nargs=3, type=str, help=argparse.SUPPRESS)  # internal: one configuration
    args = parser.parse_args()
    if args.one:
        name, steps, k = args.one
        print(json.dumps(measure(name, int(steps), int(k) or None, args.outer_steps)))
        return
    for name in args.learner:
        for steps in args.steps:
            for k in args.backprop_steps:
                if k > steps:
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    name,
                    str(steps),
                    str(k),
                    "--outer_steps",
                    str(args.outer_steps),
                ]
                record = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                print(json.dumps(record))
                with open(RESULTS, "a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
