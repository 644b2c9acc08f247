"""The full-data ceiling of a benchmark: its learner trained on the whole training split, batch 64, with Adam (a
pretrained learner is fine-tuned as usual instead: a fresh head, AdamW at 5e-5). `benchmarks/run.py NAME-full-data`
calls `full_data`.

A long ceiling (MiniLM on all 25,000 IMDB reviews: hours on a CPU) saves `checkpoint-N` folders under
`--output_dir` every `--save_steps` batches and at the end of every epoch (`--save_total_limit` keeps the newest
ones), and `--resume_from_checkpoint` goes on from one: weights, optimiser, random state, the epoch's batch order and
the accuracies measured so far, so that a resumed run ends where an uninterrupted one would. The test accuracy is
measured after every epoch.
"""

import json
import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

BATCH_SIZE = 64
STATE = "ceiling_state.json"


def full_data(argv: list[str], epochs: int = 2) -> dict:
    from hf_distill.cli import parse_args
    from hf_distill.learners import adam_learning_rate, is_pretrained_learner

    data_args, args = parse_args(argv)
    resume = Path(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    if resume is not None and not resume.is_dir():  # before the data and the model load
        raise FileNotFoundError(f"--resume_from_checkpoint {resume} does not exist")
    if resume is not None and not (resume / STATE).is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume} has no {STATE}: not a ceiling checkpoint")
    data, embeddings, learner = _setup(data_args, args)
    # In memory as tensors, as in the distillation runs: a batch is one indexing operation, not 64 Arrow reads
    train, test = (_rows(split, embeddings) for split in (data.train, data.eval))
    device = args.device  # Accelerate's pick, as in the distillation runs: a GPU where there is one
    learner.to(device)
    embeddings = None if embeddings is None else embeddings.to(device)
    adam = torch.optim.AdamW if is_pretrained_learner(args.learner) else torch.optim.Adam
    optimizer = adam(learner.parameters(), adam_learning_rate(learner))
    steps_per_epoch = math.ceil(len(data.train) / BATCH_SIZE)
    step, by_epoch, start = 0, [], time.time()
    if resume is not None:
        step, by_epoch = _load(resume, learner, optimizer)
    for epoch in range(step // steps_per_epoch, epochs):
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(args.seed + epoch))
        done = step - epoch * steps_per_epoch
        learner.train()
        for x, mask, y in _batches(train, embeddings, order[done * BATCH_SIZE :], device):
            kwargs = {"pixel_values": x} if mask is None else {"inputs_embeds": x, "attention_mask": mask}
            optimizer.zero_grad()
            loss = learner(**kwargs, labels=y).loss
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.logging_steps == 0:
                print(json.dumps({"step": step, "loss": round(loss.item(), 4), "s": round(time.time() - start)}))
            if step % steps_per_epoch == 0:
                by_epoch.append(_evaluate(learner, test, embeddings, device))
                print(json.dumps({"epoch": epoch + 1, "step": step, "eval_full_data_accuracy": by_epoch[-1]}))
            if args.save_strategy == "steps" and (step % args.save_steps == 0 or step % steps_per_epoch == 0):
                checkpoint = Path(args.output_dir) / f"checkpoint-{step}"
                _save(checkpoint, learner, optimizer, step, by_epoch, args.save_total_limit)
    return {"eval_full_data_accuracy": by_epoch[-1], "eval_full_data_accuracy_by_epoch": by_epoch}


def _setup(data_args, args):
    from hf_distill.data import load_input_embeddings, load_real_data
    from hf_distill.learners import build_learner, is_pretrained_learner, load_pretrained_learner

    embeddings = tokenizer = None
    if args.embedding_model:
        embeddings, tokenizer = load_input_embeddings(args.embedding_model)
    data = load_real_data(data_args, tokenizer=tokenizer, image_mean=args.image_mean, image_std=args.image_std)
    torch.manual_seed(args.seed)
    if is_pretrained_learner(args.learner):
        return data, embeddings, load_pretrained_learner(args.learner, data.label_names)
    first = data.train[0]
    shape = (
        {"hidden_size": embeddings.shape[1]}
        if embeddings is not None
        else {"num_channels": first["pixel_values"].shape[0], "image_size": first["pixel_values"].shape[-1]}
    )
    return data, embeddings, build_learner(args.learner, len(data.label_names), **shape)


def _rows(dataset, embeddings):
    from hf_distill.data import TensorRows

    inputs = ["pixel_values"] if embeddings is None else ["input_ids", "attention_mask"]
    return TensorRows(dataset, inputs + ["labels"])


def _batches(rows, embeddings, order: torch.Tensor | None, device):
    """(inputs, attention mask or None, labels) on `device`, BATCH_SIZE rows at a time in `order` (default: stored)."""
    order = torch.arange(len(rows)) if order is None else order
    for pick in order.split(BATCH_SIZE):
        b = {k: v.to(device) for k, v in rows[pick].items()}
        if embeddings is None:
            yield b["pixel_values"], None, b["labels"]
        else:
            yield torch.nn.functional.embedding(b["input_ids"], embeddings), b["attention_mask"], b["labels"]


def _evaluate(learner, rows, embeddings, device) -> float:
    from hf_distill.evaluation import accuracy, predict

    learner.eval()
    batches = _batches(rows, embeddings, None, device)
    with torch.no_grad():
        result = accuracy(predict(learner, dict(learner.named_parameters()), batches))
    learner.train()
    return result["accuracy"]


def _save(path: Path, learner, optimizer, step: int, by_epoch: list[float], keep: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in learner.state_dict().items()}, str(path / "model.safetensors"))
    rng = {"cpu": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})
    save_file(rng, str(path / "rng_state.safetensors"))  # dropout's draws, so that a resumed epoch repeats them
    torch.save(optimizer.state_dict(), path / "optimizer.pt")  # as Trainer does; loaded with weights_only=True
    (path / STATE).write_text(json.dumps({"global_step": step, "eval_full_data_accuracy_by_epoch": by_epoch}))
    if keep:
        for old in sorted(path.parent.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
            shutil.rmtree(old)


def _load(path: Path, learner, optimizer) -> tuple[int, list[float]]:
    learner.load_state_dict(load_file(str(path / "model.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    rng = load_file(str(path / "rng_state.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    state = json.loads((path / STATE).read_text())
    return state["global_step"], state["eval_full_data_accuracy_by_epoch"]
