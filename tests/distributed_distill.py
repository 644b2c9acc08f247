"""Run by tests/test_distributed.py under `accelerate launch --num_processes 2`: distil an image folder, evaluate,
then every process writes its own copy of the synthetic set so the test can compare them bit for bit.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_distill.py DATASET OUTPUT_DIR
"""

import json
import sys
from pathlib import Path

from conftest import quick_config
from safetensors.torch import save_file

from hf_distill import DataArguments, DistillationTrainer, load_real_data
from hf_distill.cli import leave_process_group

# The same settings as the one-process evaluation it is compared with in tests/test_distributed.py
SETTINGS = dict(learner="convnet", max_steps=4, inner_steps=2, per_device_train_batch_size=16, num_eval_models=3)


def main(dataset: str, output_dir: str) -> None:
    args = quick_config(Path(output_dir).parent, output_dir=output_dir, eval_train_steps=5, **SETTINGS)
    data = load_real_data(DataArguments(dataset=dataset), seed=args.seed)
    trainer = DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()
    out = Path(output_dir)
    state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(out / f"rank{args.process_index}.safetensors"),
    )
    (out / f"rank{args.process_index}.json").write_text(json.dumps({"world_size": args.world_size, **metrics}))
    leave_process_group(trainer.accelerator)  # as every Accelerate script should at its end


if __name__ == "__main__":
    main(*sys.argv[1:])
