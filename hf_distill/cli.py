"""`hf-distill distill ...`: distil a dataset from the command line. With no arguments, a small offline demo."""

import argparse
import os
import sys
import time

import yaml
from transformers import HfArgumentParser

from .checks import check_output_dir
from .config import DistillationConfig
from .data import DataArguments, find_preset, hub_revision, load_input_embeddings, load_real_data
from .environment import use_portable_cpu_kernels
from .learners import check_learner_modality, is_pretrained_learner
from .synthetic import DistilledDataset
from .trainer import DistillationTrainer

USAGE = """usage: hf-distill distill [--dataset DATASET] [--output_dir DIR] [FLAGS...]  (see hf-distill distill --help)
       hf-distill push OUTPUT_DIR REPO_ID [--private] [--token TOKEN] [--revision REV]"""


def _given(argv: list[str], name: str) -> bool:
    """Whether the command line sets the flag `--name` (also spelt with dashes, or as `--name=value`)."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(a.split("=", 1)[0] in spellings for a in argv)


def _pop_config(argv: list[str]) -> tuple[list[str], dict]:
    """`argv` without `--config FILE` (or `--config=FILE`), and the flags that FILE sets (a YAML mapping)."""
    places = [i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")]
    if not places:
        return argv, {}
    if len(places) > 1:
        raise ValueError("--config is given more than once: pass one YAML file.")
    i = places[0]
    if argv[i] == "--config":
        if i + 1 == len(argv) or argv[i + 1].startswith("--"):
            raise ValueError("--config needs the path of a YAML file.")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as e:
        raise FileNotFoundError(f"Config file {path!r} could not be read: {e.strerror}.") from e
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ValueError(f"Config file {path!r} is not valid YAML{at}: {getattr(e, 'problem', None) or e}.") from e
    if values is None:
        return rest, {}
    if not isinstance(values, dict):
        raise ValueError(
            f"Config file {path!r} must be a mapping of flag names to values (e.g. 'max_steps: 500'), "
            f"not a {type(values).__name__}."
        )
    return rest, values


def parse_args(argv: list[str]) -> tuple[DataArguments, DistillationConfig]:
    """Flags are the fields of `DataArguments` and `DistillationConfig`; `--config f.yaml` sets flags too, and the
    dataset's preset supplies defaults. Precedence: the command line, then the YAML file, then the preset."""
    argv, config = _pop_config(argv)
    parser = HfArgumentParser((DataArguments, DistillationConfig), prog="hf-distill distill")
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        raise ValueError(f"The config file sets flags that do not exist: {', '.join(map(str, unknown))}.")
    # YAML values keep their types (a mapping for lr_scheduler_kwargs, null for None): they become the defaults
    parser.set_defaults(**config)
    first, _ = parser.parse_known_args(argv)
    preset = find_preset(first.dataset, first.preset)
    if preset is not None:
        parser.set_defaults(**{k: v for k, v in preset.defaults.items() if k in known and k not in config})
    data_args, args = parser.parse_args_into_dataclasses(args=argv)
    if preset is not None and args.learner is not None:  # before an embedding model is loaded for it
        check_learner_modality(args.learner, preset.modality)
    if is_pretrained_learner(args.learner) and not (_given(argv, "embedding_model") or "embedding_model" in config):
        args.embedding_model = args.learner  # not the preset's: the learner's own embedding space
    return data_args, args


def distill(argv: list[str]) -> dict:
    data_args, args = parse_args(argv)
    if args.full_determinism:  # before torch's first CPU operation fixes its kernels (see use_portable_cpu_kernels)
        use_portable_cpu_kernels()
    # Everything that can be wrong with the input fails here, before training and before output_dir is touched.
    if args.load_best_model_at_end and data_args.validation_size is None:
        raise ValueError(
            "--load_best_model_at_end keeps the checkpoint that scores best during training: add --validation_size N "
            "so that it is chosen on N held-out training examples, not on the test split."
        )
    check_output_dir(args.output_dir)
    if args.resume_from_checkpoint and not os.path.isdir(args.resume_from_checkpoint):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is not a checkpoint folder."
        )
    embedding_matrix = tokenizer = None
    if args.embedding_model is not None:
        embedding_matrix, tokenizer = load_input_embeddings(args.embedding_model)
    data = load_real_data(
        data_args, tokenizer=tokenizer, image_mean=args.image_mean, image_std=args.image_std, seed=args.seed
    )
    if data.modality == "image":
        args.image_mean, args.image_std = data.image_mean, data.image_std
    trainer = DistillationTrainer(
        args=args,
        train_dataset=data.train,
        eval_dataset=data.validation if data.validation is not None else data.eval,  # what training evaluates on
        processing_class=tokenizer,
        embedding_matrix=embedding_matrix if data.modality == "text" else None,
        source_dataset=data_args.dataset,
        source_revision=hub_revision(data_args.dataset, "dataset", data_args.dataset_revision),
        embedding_revision=hub_revision(args.embedding_model) if data.modality == "text" else None,
        label_noise=data.label_noise,
    )
    train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    metrics = trainer.evaluate(data.eval)
    trainer.save_metrics("eval", metrics)
    trainer.save_model()
    leave_process_group(trainer.accelerator)
    return metrics


def leave_process_group(accelerator) -> None:
    """End of a run under `accelerate launch`: wait for every process, then destroy the process group.

    A gloo group destroyed while one of its worker threads still releases the tensors of a finished collective
    deadlocks (the destructor joins the thread while holding the GIL, which the thread needs); left to the
    interpreter's exit, it can abort the process instead ("terminate called without an active exception";
    pytorch/pytorch#190489). So the processes meet at a barrier, the workers get a moment without the GIL to finish
    releasing, and only then is the group destroyed.
    """
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
        time.sleep(0.5)  # sleeping releases the GIL
    accelerator.end_training()


def push(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="hf-distill push", description="Push a distilled set to the Hub.")
    parser.add_argument("output_dir", help="A folder written by `hf-distill distill` (or DistilledDataset.save).")
    parser.add_argument("repo_id", help="The dataset repo to push to: namespace/name.")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    parser.add_argument("--revision", default=None, help="Branch to push to (default: main).")
    parser.add_argument("--commit_message", default=None)
    args = parser.parse_args(argv)
    distilled = DistilledDataset.load(args.output_dir)
    commit = distilled.push_to_hub(
        args.repo_id,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = "distill"
    if argv and argv[0] in ("distill", "push"):
        command, argv = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-"):
        print(f"hf-distill: error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command == "push":
            print(f"pushed: {push(argv)}")
            return 0
        metrics = distill(argv)
    except (ValueError, OSError, RuntimeError) as e:  # DistillationDivergedError is a RuntimeError
        print(f"hf-distill: error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun, the main process reports
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
