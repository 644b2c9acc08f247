"""A teacher's targets in the unrolled objective: a probe of whether they lift issue 2's MNIST random-init row.

    OMP_NUM_THREADS=1 python benchmarks/teacher_probe.py --temperature 4 --dataset ../shared/data/mnist \
        --learner_init random --output_dir /tmp/hf_distill_benchmarks/teacher-t4

The unrolled objective scores the learner trained on the synthetic set by its cross-entropy on a real batch against
the batch's labels. Here the targets are a teacher's instead, as in knowledge distillation: the same learner trained on
the whole training split (batch 64, Adam at the learner's rate, `--teacher_epochs` epochs, as the full-data ceilings
train it) gives each real example softmax(logits / T). Everything else is `hf-distill distill` with the flags given
(and the dataset preset's defaults): the same training, evaluation and output folder, plus the teacher's test
accuracy (`eval_teacher_accuracy`). Not a method of the package: it prints figures for docs/benchmarks-mnist.md.
"""

import argparse
import json

import torch

from hf_distill import cli
from hf_distill.checks import check_eval_dataset
from hf_distill.data import TensorRows
from hf_distill.evaluation import predict, train_on_batches
from hf_distill.learners import adam_learning_rate
from hf_distill.methods.unrolled import learner_logits
from hf_distill.trainer import DistillationTrainer

TEACHER_BATCH_SIZE = 64


def teacher_trainer(temperature: float, epochs: int) -> type[DistillationTrainer]:
    """A `DistillationTrainer` whose unrolled objective takes its real targets from a teacher at `temperature`."""

    class TeacherTargetsTrainer(DistillationTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = self._train_teacher()
            label_column = check_eval_dataset(
                self.eval_dataset, "eval_dataset", self.modality, self.input_shape, self.class_names
            )
            rows = TensorRows(self.eval_dataset, self.input_columns + [label_column])
            self.teacher_metrics = self.compute_metrics(predict(self.learner, self.teacher, self._eval_batches(rows)))
            print(json.dumps({"teacher_epochs": epochs, "eval_teacher_accuracy": self.teacher_metrics["accuracy"]}))

        def _train_teacher(self) -> dict[str, torch.Tensor]:
            rows, generator = self.train_dataset, torch.Generator().manual_seed(self.args.seed)
            order = torch.cat([torch.randperm(len(rows), generator=generator) for _ in range(epochs)])
            batches = (self._real_inputs(rows[pick]) for pick in order.split(TEACHER_BATCH_SIZE))
            init = self._learner_init(hash((self.args.seed, 7_907)) % 2**31)  # not an init distillation draws
            init = {k: v.to(self.args.device) for k, v in init.items()}
            return train_on_batches(self.learner, init, batches, lr=adam_learning_rate(self.learner))

        def _unrolled_loss(self, params, x_syn, mask_syn, soft_labels, step_sizes, x, mask, y, seed, every_row):
            with torch.no_grad():
                y = (learner_logits(self.learner, self.teacher, x, mask) / temperature).softmax(-1)
            unroll_args = (params, x_syn, mask_syn, soft_labels, step_sizes, x, mask, y, seed, every_row)
            return super()._unrolled_loss(*unroll_args)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if not self.is_in_train:
                metrics[f"{metric_key_prefix}_teacher_accuracy"] = self.teacher_metrics["accuracy"]
            return metrics

    return TeacherTargetsTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the teacher's targets")
    parser.add_argument("--teacher_epochs", type=int, default=2)
    args, distill_argv = parser.parse_known_args()
    if args.temperature <= 0 or args.teacher_epochs < 1:
        parser.error("--temperature must be > 0 and --teacher_epochs >= 1")
    cli.DistillationTrainer = teacher_trainer(args.temperature, args.teacher_epochs)  # what cli.distill builds
    metrics = cli.distill(distill_argv)
    print(json.dumps({"temperature": args.temperature, **metrics}))


if __name__ == "__main__":
    main()
