"""Trajectory matching for random-init learners: a probe of whether it can lift issue 2's MNIST random-init row.

    OMP_NUM_THREADS=1 python benchmarks/mtt_probe.py ../shared/data/mnist

Cazenavette et al. (*Dataset Distillation by Matching Training Trajectories*, CVPR 2022): train a few expert
learners on the real data and keep their weights every `--checkpoint_every` SGD steps. Each outer step starts a
student at a random early expert checkpoint, trains it `--syn_steps` full-batch SGD steps on the synthetic set (at a
learned step size), and moves the synthetic pixels (and, with `--learn_labels`, soft labels) so that the student
lands where the expert was `--expert_span` checkpoints later: the loss is the squared distance to that checkpoint
over the distance the expert travelled. Not a method of the package: it prints figures for
docs/benchmarks-mnist.md. Evaluation: fresh learners (seeds 1000, 1001, ...) trained on the set with SGD at the
learned step size (momentum 0.9, weight decay 5e-4, divided by 10 after half, as the MTT code evaluates) and with
300 Adam steps at 1e-3 (the package's protocol for matching objectives); the same for random real subsets of the
same size; accuracy on the test split. `--learner` and the data may be others (one synthetic example per class).
"""

import argparse
import itertools
import math
import time

import numpy as np
import torch

from hf_distill import DataArguments, load_real_data
from hf_distill.augment import augment, parse_augmentation
from hf_distill.data import find_preset
from hf_distill.evaluation import accuracy, predict, train_on_batches
from hf_distill.learners import build_learner, soft_cross_entropy, trainable_parameters
from hf_distill.methods.unrolled import learner_logits, unroll
from hf_distill.selection import random_rows


def fresh_params(learner, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    learner.reset_parameters()
    return {k: v.detach().clone() for k, v in trainable_parameters(learner).items()}


def score(learner, params, pixels, labels) -> float:
    """The learner's accuracy on (pixels, labels), with the package's evaluation helpers."""
    batches = zip(pixels.split(2000), itertools.repeat(None), labels.split(2000))
    return accuracy(predict(learner, params, batches))["accuracy"]


def train_experts(learner, pixels, labels, args) -> list[list[dict]]:
    """`--experts` trajectories: weights every `--checkpoint_every` steps of plain SGD on real batches."""
    experts = []
    for e in range(args.experts):
        params = {k: v.requires_grad_() for k, v in fresh_params(learner, 100 + e).items()}
        opt = torch.optim.SGD(params.values(), lr=args.expert_lr)
        generator = torch.Generator().manual_seed(100 + e)
        trajectory = [{k: v.detach().clone() for k, v in params.items()}]
        for step in range(1, args.checkpoint_every * args.checkpoints + 1):
            batch = torch.randint(len(pixels), (256,), generator=generator)
            opt.zero_grad()
            soft_cross_entropy(learner_logits(learner, params, pixels[batch]), labels[batch]).backward()
            opt.step()
            if step % args.checkpoint_every == 0:
                trajectory.append({k: v.detach().clone() for k, v in params.items()})
        experts.append(trajectory)
    return experts


def real_rows(labels: torch.Tensor, seed: int) -> list[int]:
    """One random real example per class, in class order (the package's draw for starts and baselines)."""
    return random_rows(labels.numpy(), list(range(int(labels.max()) + 1)), seed)


def chain_length(args) -> int:
    """The `chain` protocol's plain SGD steps: as many as the students take to cover every expert checkpoint."""
    return args.syn_steps * args.checkpoints // args.expert_span


def evaluate(learner, inputs, soft_labels, lr, test, args, ops) -> dict[str, float]:
    scores = {"sgd": [], "adam": [], "chain": []}
    chain = torch.full((chain_length(args),), lr)
    for i in range(args.eval_models):
        start = fresh_params(learner, 1000 + i)
        params = unroll(learner, start, inputs, None, soft_labels, chain, create_graph=False)
        scores["chain"].append(score(learner, params, *test))
        for protocol, rate, steps in (("sgd", lr, args.eval_steps), ("adam", 1e-3, 300)):
            batches = (
                (augment(inputs, s, per_example=True) if ops else inputs, None, soft_labels) for s in range(steps)
            )
            params = train_on_batches(learner, start, batches, lr=rate, optimizer=protocol, steps=steps)
            scores[protocol].append(score(learner, params, *test))
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in scores.items()}


def distill(learner, experts, pixels, labels, one_hot, args):
    """One synthetic example per class matched to the experts' trajectories: its pixels, labels and step size."""
    torch.manual_seed(args.seed)
    start_rows = real_rows(labels, args.seed)
    images = (
        pixels[start_rows].clone() if args.init == "real" else torch.randn(len(one_hot), *pixels.shape[1:])
    ).requires_grad_()
    label_logits = (3.0 * one_hot).requires_grad_(args.learn_labels)
    log_lr = torch.tensor(math.log(args.syn_lr), requires_grad=True)
    groups = [{"params": [images], "lr": args.lr_images}, {"params": [log_lr], "lr": args.lr_lr}]
    if args.learn_labels:
        groups.append({"params": [label_logits], "lr": args.lr_labels})
    opt = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(args.seed)
    names = list(experts[0][0])
    losses, t1 = [], time.time()
    for step in range(1, args.outer_steps + 1):
        trajectory = experts[torch.randint(len(experts), (1,), generator=generator).item()]
        begin = torch.randint(args.max_start + 1, (1,), generator=generator).item()
        start, target = trajectory[begin], trajectory[begin + args.expert_span]
        params = {k: v.clone().requires_grad_() for k, v in start.items()}
        soft, lr = (label_logits.softmax(-1) if args.learn_labels else one_hot), log_lr.exp()
        for _ in range(args.syn_steps):
            loss = soft_cross_entropy(learner_logits(learner, params, images), soft)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
        distance = sum(((params[k] - target[k]) ** 2).sum() for k in names)
        travelled = sum(((start[k] - target[k]) ** 2).sum() for k in names)
        outer = distance / travelled
        opt.zero_grad()
        outer.backward()
        opt.step()
        losses.append(outer.item())
        if step % args.logging_steps == 0:
            print(
                f"step {step}: matching loss {np.mean(losses[-args.logging_steps :]):.4f}, "
                f"step size {log_lr.exp().item():.4f}, "
                f"{(time.time() - t1) / step:.3f} s/step",
                flush=True,
            )
    soft = label_logits.softmax(-1).detach() if args.learn_labels else one_hot
    return images.detach(), soft, log_lr.exp().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--learner", default="lenet")
    parser.add_argument("--experts", type=int, default=5)
    parser.add_argument("--expert_lr", type=float, default=0.01)
    parser.add_argument("--checkpoint_every", type=int, default=50)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--max_start", type=int, default=4, help="the latest checkpoint a student starts from")
    parser.add_argument("--expert_span", type=int, default=2)
    parser.add_argument("--syn_steps", type=int, default=30)
    parser.add_argument("--syn_lr", type=float, default=0.01, help="initial learned step size")
    parser.add_argument("--outer_steps", type=int, default=2000)
    parser.add_argument("--lr_images", type=float, default=0.01)
    parser.add_argument("--lr_labels", type=float, default=0.01)
    parser.add_argument("--lr_lr", type=float, default=0.001, help="Adam's rate for the log step size")
    parser.add_argument("--learn_labels", action="store_true")
    parser.add_argument("--init", choices=("real", "noise"), default="real")
    parser.add_argument("--augmentation", default=None, help="evaluation only, e.g. crop_scale_rotate")
    parser.add_argument("--eval_models", type=int, default=10)
    parser.add_argument("--eval_steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--logging_steps", type=int, default=100)
    args = parser.parse_args()
    ops = parse_augmentation(args.augmentation)  # a bad name fails before the experts train
    print(vars(args), flush=True)
    t0 = time.time()
    preset = find_preset(args.dataset)  # its pixel scaling (MNIST's), else the data's own mean and std
    scaling = {k: preset.defaults.get(k) for k in ("image_mean", "image_std")} if preset else {}
    data = load_real_data(DataArguments(dataset=args.dataset), **scaling)
    pixels = torch.tensor(np.asarray(data.train["pixel_values"]), dtype=torch.float32)
    labels = torch.tensor(np.asarray(data.train["labels"]))
    test = (
        torch.tensor(np.asarray(data.eval["pixel_values"]), dtype=torch.float32),
        torch.tensor(np.asarray(data.eval["labels"])),
    )
    classes, one_hot = len(data.label_names), torch.eye(len(data.label_names))
    learner = build_learner(args.learner, classes, num_channels=pixels.shape[1], image_size=pixels.shape[-1]).eval()
    experts = train_experts(learner, pixels, labels, args)
    for c in range(0, args.checkpoints + 1, 2):
        accs = [score(learner, trajectory[c], *test) for trajectory in experts[:2]]
        print(f"expert checkpoint {c} (step {c * args.checkpoint_every}): test accuracy {np.mean(accs):.4f}")
    print(f"experts trained in {time.time() - t0:.0f} s", flush=True)

    images, soft, lr = distill(learner, experts, pixels, labels, one_hot, args)
    result = evaluate(learner, images, soft, lr, test, args, ops)
    print(
        f"distilled: SGD at {lr:.4f}: {result['sgd'][0]:.4f} ± {result['sgd'][1]:.4f}; "
        f"Adam: {result['adam'][0]:.4f} ± {result['adam'][1]:.4f}; "
        f"{chain_length(args)} plain SGD steps at {lr:.4f}: {result['chain'][0]:.4f} ± {result['chain'][1]:.4f}"
    )
    base = [
        evaluate(
            learner,
            pixels[real_rows(labels, s)],
            one_hot,
            lr,
            test,
            argparse.Namespace(**{**vars(args), "eval_models": 1}),
            ops,
        )
        for s in range(args.eval_models)
    ]
    for protocol in ("sgd", "adam", "chain"):
        accs = [b[protocol][0] for b in base]
        print(f"random real subsets, {protocol}: {np.mean(accs):.4f} ± {np.std(accs):.4f}")
    print(f"wall time {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
