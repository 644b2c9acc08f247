"""Data-parallel distillation with Accelerate: 2 CPU processes (gloo), the ordinary `accelerate launch`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import quick_config
from distributed_distill import SETTINGS
from safetensors.torch import load_file

from hf_distill import DataArguments, DistillationTrainer, load_real_data

SCRIPT = Path(__file__).with_name("distributed_distill.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_the_same_set_and_split_the_evaluation(tmp_path, image_dataset_dir):
    out = tmp_path / "out"
    # --multi_gpu picks Accelerate's torchrun launcher; on a machine without GPUs the processes form a gloo group.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port())]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU processes and gloo, even on a machine with a GPU
    done = subprocess.run([*launch, str(SCRIPT), image_dataset_dir, str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the two processes"
    metrics = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert metrics[0]["world_size"] == 2 and metrics[0] == metrics[1]
    assert metrics[0]["eval_num_models"] == 3  # 2 models on process 0, 1 on process 1, gathered

    # The gathered figures are those of the same 3 learners evaluated in one process.
    args = quick_config(tmp_path, eval_train_steps=5, **SETTINGS)
    data = load_real_data(DataArguments(dataset=image_dataset_dir), seed=args.seed)
    single = DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    single.model.load_state_dict(ranks[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each launched process, so that the arithmetic is the same
    try:
        alone = single.evaluate()
    finally:
        torch.set_num_threads(threads)
    for key in ("eval_accuracy", "eval_accuracy_std", "eval_baseline_accuracy", "eval_baseline_accuracy_std"):
        assert abs(alone[key] - metrics[0][key]) < 0.01, key  # at most one of 120 test images may flip
    assert (out / "distillation.json").exists()  # written once, by the main process
