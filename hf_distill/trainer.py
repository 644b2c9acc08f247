import json
import math
import os
import random
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from huggingface_hub import HfApi
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, default_data_collator
from transformers.utils import logging
from transformers.utils.hub import PushInProgress

from .augment import augment, parse_augmentation
from .checks import (
    check_checkpoint_fits,
    check_eval_dataset,
    check_pixel_dtype,
    check_same_length,
    check_setup,
    class_names_and_ids,
    label_ids,
    real_columns,
)
from .config import DistillationConfig
from .data import TensorRows, load_input_embeddings
from .environment import run_environment, use_portable_cpu_kernels
from .evaluation import (
    accuracy,
    eval_learning_rate,
    eval_optimizer,
    predict,
    summarize,
    train_on_batches,
    train_on_set,
)
from .hub import check_repo_id, check_token
from .learners import (
    _Learner,
    activation_checkpointing,
    adam_learning_rate,
    build_learner,
    check_image_shape,
    check_learner_modality,
    fresh_head,
    head_parameter_names,
    is_pretrained_learner,
    load_pretrained_learner,
    soft_cross_entropy,
    trainable_parameters,
)
from .methods import distribution_matching_loss, gradient_matching_loss, learner_features, learner_logits, unroll
from .methods.trajectory import LearnerTrajectory
from .methods.trust import TrustState, consistency_loss, score, trust_round
from .noise import CLEAN_LABELS
from .selection import kmeans_rows, random_rows
from .synthetic import DistilledDataset, SyntheticSet, initial_label_logits, nearest_tokens

logger = logging.get_logger(__name__)

TRUST_STATE_FILE = "trust_state.safetensors"  # in checkpoints of trust-aware runs
TRAJECTORY_STATE_FILE = "matching_learner.safetensors"  # in checkpoints of runs with matching_outer_loop > 1


class DistillationDivergedError(RuntimeError):
    """The outer loss became NaN or infinite; the checkpoints written so far are kept."""


class SyntheticAverage(TrainerCallback):
    """Updates the synthetic set's moving average after every optimiser step (`synthetic_ema_decay`)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_average()


class DistillationTrainer(Trainer):
    """
    Learns a small synthetic training set for a learner network (Sucholutsky & Schonlau, arXiv:1910.02551).

    The `Trainer`'s model is the [`SyntheticSet`]: its optimiser, schedule, checkpoints, resume and Accelerate
    placement are `Trainer`'s own. One outer step (`compute_loss`) trains a learner on the synthetic set for
    `inner_steps * inner_epochs` steps and returns its loss on a batch of real data.

    Args:
        args: a [`DistillationConfig`].
        train_dataset: real data with `labels` (or `label`: a `ClassLabel`, or integer class ids 0..K-1) and
            `pixel_values` (images, normalised floats) or `input_ids` + `attention_mask` (text, tokenised with the
            tokenizer of `args.embedding_model`), in any format.
        eval_dataset: real held-out data in the same form, for `evaluate()` (checked when the trainer is built).
        learner: the network to distil for; default: `build_learner(args.learner, ...)`.
        processing_class: the tokenizer of the embedding model (text; loaded from `args.embedding_model` if not given).
        compute_metrics: `EvalPrediction -> dict`, as for `Trainer`; default: offline accuracy.
        source_dataset: name of the real dataset, recorded with the distilled set (and on its card).
        source_revision, embedding_revision: the revisions of the real dataset and the embedding model, if known.
        label_noise: the noise injected into the real labels (`RealData.label_noise`), recorded with the set.
        embedding_matrix: the frozen `[vocab, hidden]` input embeddings (text), when already loaded; default: loaded
            from `args.embedding_model`.
    """

    _tag_names = ["hf_distill", "dataset-distillation"]
    _paper = {"title": "Soft-Label Dataset Distillation and Text Dataset Distillation", "id": "1910.02551"}

    def __init__(
        self,
        args: DistillationConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        learner=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        source_dataset: str | None = None,
        embedding_matrix: torch.Tensor | None = None,
        source_revision: str | None = None,
        embedding_revision: str | None = None,
        label_noise: dict | None = None,
    ):
        # Args
        args = args if args is not None else DistillationConfig()
        if args.full_determinism and args.device.type == "cpu" and not use_portable_cpu_kernels():
            logger.warning(
                "full_determinism: torch's CPU kernels were fixed before the trainer was built, so this run repeats "
                "bit for bit on the same CPU model only. For any x86-64 CPU, start Python with "
                "MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default (hf-distill distill --full_determinism does)."
            )
        if train_dataset is None:
            raise ValueError("DistillationTrainer needs a train_dataset of real examples to distil.")
        self.label_column, self.modality, self.input_columns = real_columns(train_dataset, "train_dataset")
        self.class_names, self.train_labels = class_names_and_ids(train_dataset, self.label_column, "train_dataset")
        if self.modality == "text":
            check_same_length(train_dataset, "input_ids", "train_dataset")
        real = TensorRows(train_dataset, self.input_columns + [self.label_column], args.trust_aware)
        self.input_shape = tuple(real.columns[self.input_columns[0]].shape[1:])  # [C, H, W] or [max_length]
        if self.modality == "image":
            check_pixel_dtype(real.columns["pixel_values"].numpy().dtype, "train_dataset")
        named = eval_dataset if isinstance(eval_dataset, dict) else {} if eval_dataset is None else {"": eval_dataset}
        for key, dataset in named.items():  # before training, not after it
            name = f"eval_dataset[{key!r}]" if key else "eval_dataset"
            check_eval_dataset(dataset, name, self.modality, self.input_shape, self.class_names)
        columns = train_dataset.column_names
        self.clean_labels = (
            label_ids(train_dataset, CLEAN_LABELS, "train_dataset") if CLEAN_LABELS in columns else None
        )
        num_labels = len(self.class_names)
        self.source_dataset, self.source_revision = source_dataset, source_revision
        self.embedding_revision = embedding_revision
        self.label_noise = label_noise

        if learner is not None or args.learner is not None:  # before anything is loaded for it
            check_learner_modality(learner if learner is not None else args.learner, self.modality)

        # Model: the frozen embeddings (text), the learner, and the synthetic set the Trainer optimises
        self.embedding_matrix = None
        if self.modality == "text":
            if embedding_matrix is None:
                if args.embedding_model is None:
                    raise ValueError(
                        "Text data needs args.embedding_model (the model whose input embeddings are used)."
                    )
                embedding_matrix, tokenizer = load_input_embeddings(args.embedding_model)
                processing_class = processing_class or tokenizer
            self.embedding_matrix = embedding_matrix
        if learner is None and is_pretrained_learner(args.learner):
            learner = load_pretrained_learner(args.learner, self.class_names)
        elif learner is None:
            name = args.learner or self._default_learner()
            shape = (
                {"hidden_size": embedding_matrix.shape[1]}
                if self.modality == "text"
                else {"num_channels": self.input_shape[0], "image_size": self.input_shape[-1]}
            )
            learner = build_learner(name, num_labels, **shape)
        self.pretrained = not isinstance(learner, _Learner)  # anything but hf_distill's own starts pretrained
        if args.learner_init is None:
            args.learner_init = "pretrained" if self.pretrained else "random"
        if args.eval_learning_rate is None:
            args.eval_learning_rate = eval_learning_rate(learner, eval_optimizer(args.eval_protocol))
        if self.modality == "image":
            check_image_shape(learner, self.input_shape)
        check_setup(
            args, learner, self.class_names, self.train_labels, embedding_matrix, real.columns.get("input_ids")
        )
        # Its weights are passed functionally; no dropout (eval, or p=0 for pretrained learners)
        self.learner = learner.eval().requires_grad_(False)
        self.pretrained_params = None  # set below, once the learner is on its device
        self.trust_scorer = self._load_trust_scorer(args)
        synthetic = self._init_synthetic(args, real, num_labels)

        super().__init__(
            model=synthetic,
            args=args,
            data_collator=default_data_collator,
            train_dataset=real,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or accuracy,
            callbacks=callbacks,
        )
        if args.synthetic_ema_decay is not None:
            self.add_callback(SyntheticAverage)
        self.learner.to(self.args.device)
        # Taken after the move, so a pretrained backbone is not copied to the device again at every outer step
        self.pretrained_params = (
            {k: v.detach() for k, v in trainable_parameters(self.learner).items()} if self.pretrained else None
        )
        self.fixed_init = self._learner_init(args.seed) if args.learner_init == "fixed" else None
        self.trust_scorer_params = None  # the scorer's pretrained weights, on its device
        if self.trust_scorer is not None:
            self.trust_scorer.to(self.args.device)
            self.trust_scorer_params = {k: v.detach() for k, v in trainable_parameters(self.trust_scorer).items()}
        if self.embedding_matrix is not None:
            self.embedding_matrix = self.embedding_matrix.to(self.args.device)
        self.eval_metrics: dict[str, float] = {}
        self.trajectory = None  # the learner of the current matching cycle (matching_outer_loop > 1)
        self._unrolls = (-1, 0)  # (global step, unrolls at that step): seeds that survive a resume
        self.trust = TrustState.start(self.train_labels) if args.trust_aware else None
        self.trust_logs: dict[str, float] = {}
        self._gradient_norms: deque[float] = deque(maxlen=100)  # recent outer gradient norms (skip_gradient_spikes)
        self.skipped_steps = 0
        self._hub_pusher = None  # the one background thread that pushes checkpoints' sets (hub_strategy="every_save")

    def _load_trust_scorer(self, args):
        """The embedding model as a sequence classifier, for `trust_learners="embedding_model"`; else `None`."""
        if not (args.trust_aware and args.trust_learners == "embedding_model"):
            return None
        if self.modality != "text" or args.embedding_model is None:
            raise ValueError(
                "trust_learners='embedding_model' fine-tunes the embedding model of text data to score it; "
                + ("this dataset is images." if self.modality != "text" else "args.embedding_model is not set.")
            )
        try:
            scorer = load_pretrained_learner(args.embedding_model, self.class_names)
        except ValueError as e:
            raise ValueError(f"trust_learners='embedding_model': {e}") from e
        return scorer.eval().requires_grad_(False)

    def _default_learner(self) -> str:
        if self.modality == "text":
            return "textcnn"
        return "lenet" if self.input_shape[-1] >= 28 else "convnet"

    def _learner_init(self, seed: int) -> dict[str, torch.Tensor]:
        """Learner weights drawn from `seed` (the same seed gives the same weights): all fresh, or the pretrained
        backbone with a fresh classification head."""
        if self.pretrained_params is not None:
            return {**self.pretrained_params, **fresh_head(self.learner, seed)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.learner.reset_parameters()
        return {k: v.detach().clone() for k, v in self.learner.named_parameters()}

    def _unroll_seed(self) -> int:
        """A seed unique to (seed, outer step, process, micro-batch): fresh inits per step, reproducible on resume."""
        step, count = self._unrolls
        count = count + 1 if step == self.state.global_step else 0
        self._unrolls = (self.state.global_step, count)
        return hash((self.args.seed, self.state.global_step, self.args.process_index, count)) % 2**31

    def _init_synthetic(self, args, rows: TensorRows, num_labels) -> SyntheticSet:
        n = args.num_synthetic or args.synthetic_per_class * num_labels
        labels = initial_label_logits(n, num_labels, learned=args.learn_labels)
        if not args.label_softmax:  # unconstrained labels start as the distributions the logits stand for
            labels = labels.softmax(-1)
        classes = labels.argmax(-1).tolist()
        self._check_classes(classes)
        for c, wanted in Counter(classes).items():
            available = int((self.train_labels == c).sum())
            if wanted > available:
                logger.warning(
                    f"{wanted} synthetic examples of class {self.class_names[c]!r} start from its {available} real "
                    "examples: some start alike (and the set is larger than the data it distils)."
                )
        if args.synthetic_init == "kmeans":

            def batches(indices):
                for chunk in np.array_split(indices, max(1, len(indices) // 64)):
                    yield self._real_inputs(rows[torch.from_numpy(chunk)], device="cpu")

            lr = adam_learning_rate(self.learner)
            picks = kmeans_rows(
                self.learner, self._learner_init(args.seed), batches, self.train_labels, classes, lr, args.seed
            )
        else:
            picks = random_rows(self.train_labels, classes, args.seed)
        inputs, mask, _ = self._real_rows(rows, picks, device="cpu")
        if args.synthetic_init == "noise":
            gen = torch.Generator().manual_seed(args.seed)
            scale = self.embedding_matrix.std() if self.modality == "text" else 1.0
            inputs = torch.randn(inputs.shape, generator=gen) * scale
        mask = None if mask is None else torch.ones_like(mask)  # every synthetic position is learned and attended
        return SyntheticSet(
            inputs,
            labels,
            args.total_inner_steps,
            args.step_size_init,
            mask,
            args.learn_labels,
            args.learn_step_sizes,
            args.max_step_size,
            len(trainable_parameters(self.learner)) if args.per_layer_step_sizes else None,
            args.synthetic_ema_decay,
            args.label_softmax,
        )

    def _check_classes(self, classes: list[int]) -> None:
        for c in dict.fromkeys(classes):
            if not (self.train_labels == c).any():
                raise ValueError(f"Class {self.class_names[c]!r} has no example in train_dataset.")

    def _real_examples(self, dataset, classes: list[int], seed: int, device=None):
        """One random real example of each class in `classes` (repeats allowed), as `_real_inputs` returns them."""
        return self._real_rows(dataset, random_rows(self.train_labels, classes, seed), device)

    def _real_rows(self, rows: TensorRows, picks: list[int], device=None):
        return self._real_inputs(rows[torch.as_tensor(picks, dtype=torch.long)], device=device)

    def _real_inputs(self, batch, device=None):
        """A collated real batch -> (inputs, attention_mask, labels); text ids go through the frozen embeddings."""
        device = device or self.args.device
        labels = batch.get("labels", batch.get("label")).to(device)
        if self.modality == "image":
            return batch["pixel_values"].to(device), None, labels
        ids = batch["input_ids"].to(self.embedding_matrix.device)
        return F.embedding(ids, self.embedding_matrix).to(device), batch["attention_mask"].to(device), labels

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # One outer step: a learner (fresh or fixed init) scores the synthetic set against a real batch.
        x_syn, mask_syn, soft_labels, step_sizes = model()
        x, mask, y = self._real_inputs(inputs)
        every_row = (x, mask)  # the consistency term of trust-aware distillation needs no label
        if self.trust is not None:
            x, mask, y = self._trusted_rows(inputs["row_index"], x, mask)
        seed = self._unroll_seed()
        method = self.args.distill_method
        if self.args.matching_outer_loop > 1:
            params = self._trajectory_weights(x_syn, mask_syn, soft_labels, x.device)
        else:
            params = self.fixed_init if self.fixed_init is not None else self._learner_init(seed)
            params = {k: v.to(x.device) for k, v in params.items()}
        if method == "unrolled":
            loss = self._unrolled_loss(params, x_syn, mask_syn, soft_labels, step_sizes, x, mask, y, seed, every_row)
        else:
            classes = self.accelerator.unwrap_model(model).label_logits.argmax(-1)  # the class each example stands for
            augmenter = self._siamese_augment(seed)
            if method == "distribution_matching":
                loss = distribution_matching_loss(
                    self.learner, params, x_syn, mask_syn, classes, x, mask, y, augment=augmenter
                )
            else:
                loss = gradient_matching_loss(
                    self.learner, params, x_syn, mask_syn, soft_labels, classes, x, mask, y, augment=augmenter
                )
        if not torch.isfinite(loss):
            raise DistillationDivergedError(
                f"Distillation diverged at step {self.state.global_step}: the outer loss is {loss.item()}. The "
                f"checkpoints in {self.args.output_dir} are kept; lower learning_rate or step_size_learning_rate, "
                "or set backprop_steps."
            )
        return (loss, {"loss": loss}) if return_outputs else loss

    def _trajectory_weights(self, x_syn, mask_syn, soft_labels, device) -> dict[str, torch.Tensor]:
        """The learner of this outer step's cycle (DC's outer and inner loops): a fresh init every
        `matching_outer_loop` outer steps, the same on every process, trained `matching_inner_loop` steps on the
        current synthetic set once per outer step since (lazily, so once per step under gradient accumulation)."""
        args, step = self.args, self.state.global_step
        cycle = step // args.matching_outer_loop
        if self.trajectory is None or self.trajectory.cycle != cycle:
            seed = hash((args.seed, 104_729, cycle)) % 2**31  # ints only: hash() of a str changes per process
            init = self.fixed_init if self.fixed_init is not None else self._learner_init(seed)
            init = {k: v.to(device) for k, v in init.items()}
            optimizer = eval_optimizer(args.eval_protocol)
            self.trajectory = LearnerTrajectory(
                init, cycle=cycle, step=step, lr=args.eval_learning_rate, optimizer=optimizer
            )
        while self.trajectory.step < step:
            self.trajectory.advance(self.learner, x_syn, mask_syn, soft_labels, args.matching_inner_loop)
            self.trajectory.step += 1
        return self.trajectory.weights()

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Only to see the complete gradient before Trainer clips it (skip_gradient_spikes); the step is Trainer's.
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.skip_gradient_spikes is not None and self.accelerator.sync_gradients:
            self._drop_gradient_spike()
        return loss

    def _drop_gradient_spike(self) -> None:
        # The gradient is complete (accumulated and all-reduced) but not yet clipped; every process decides alike.
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).item()
        history = self._gradient_norms
        spike = len(history) >= 10 and norm > self.args.skip_gradient_spikes * float(np.median(history))
        history.append(norm)  # spikes count too, so that a lasting rise of the norm stops being skipped
        if spike:
            for g in grads:
                g.zero_()
            self.skipped_steps += 1

    def _siamese_augment(self, seed: int):
        """`augment(inputs, class)` for this outer step (the same draw for a class's real and synthetic examples),
        or `None` without `augmentation`."""
        ops = parse_augmentation(self.args.augmentation)
        if not ops:
            return None
        return lambda inputs, c: augment(inputs, ops, seed * 1_000 + c)

    def _unroll_augment(self, seed: int):
        """`augment(inputs, step)` for the unroll of this outer step (a fresh draw per synthetic example and inner
        step, as the evaluation learners get with `eval_augmentation`), or `None` without `augmentation`."""
        ops = parse_augmentation(self.args.augmentation)
        if not ops:
            return None
        return lambda inputs, step: augment(inputs, ops, seed * 1_000_003 + step, per_example=True)

    def _eval_augment(self, seed: int):
        """`augment(inputs, step)` for an evaluation learner (`eval_augmentation`: a fresh draw per example and
        step), or `None`."""
        if not self.args.eval_augmentation:
            return None
        ops = parse_augmentation(self.args.augmentation)
        return lambda inputs, step: augment(inputs, ops, seed * 1_000 + step, per_example=True)

    def _trusted_rows(self, rows, x, mask):
        """The trusted rows of a real batch with their current labels, or (`trust_untrusted="soft"`) every row with
        its soft target; a trust round first when one is due."""
        step = self.state.global_step
        # Scorers trained on real examples have nothing to wait for; those trained on the synthetic set wait for it
        first = self.args.trust_interval if self.args.trust_learners == "synthetic" else 0
        if step >= first and step % self.args.trust_interval == 0 and self.trust_logs.get("step") != step:
            self._trust_round()
        if self.args.trust_untrusted == "soft" and self.trust.predicted is not None:
            return x, mask, self.trust.targets(rows.cpu(), len(self.class_names)).to(x.device)
        keep = self.trust.trusted[rows.cpu()]
        if not keep.any():  # nothing trusted in this batch: use it all rather than skip the step
            keep = torch.ones_like(keep)
        y = self.trust.labels[rows.cpu()][keep].to(x.device)
        keep = keep.to(x.device)
        return x[keep], None if mask is None else mask[keep], y

    @torch.no_grad()
    def _trust_round(self):
        """Score all real training examples with `trust_models` fresh learners; update the trusted split."""
        start = time.perf_counter()
        scorer = self.trust_scorer if self.trust_scorer is not None else self.learner
        learners = []
        for i in range(self.args.trust_models):
            # Integers only: the same seeds in every process and every run (str hashing is salted per process)
            seed = hash((self.args.seed, 7_919, self.state.global_step, i)) % 2**31
            if self.trust_scorer is not None:
                init = {**self.trust_scorer_params, **fresh_head(scorer, seed)}
            else:
                init = self.fixed_init if self.fixed_init is not None else self._learner_init(seed)
            init = {k: v.to(self.args.device) for k, v in init.items()}
            learners.append(self._train_trust_learner(scorer, init, seed))
        batches = ((inputs, m) for inputs, m, _ in self._eval_batches(self.train_dataset))
        # Penultimate features for hf_distill's learners; a pretrained classifier's logits stand in for them
        features = learner_features if isinstance(scorer, _Learner) else learner_logits
        losses, features, probs = score(scorer, learners, batches, self.trust.labels, features, learner_logits)
        logs = trust_round(
            self.trust,
            losses,
            features,
            probs,
            len(self.class_names),
            self.clean_labels,
            self.args.seed,
            self.args.trust_recalibrate,
            self.args.trust_keep_fraction,
        )
        logs["seconds"] = round(time.perf_counter() - start, 2)  # what trust-awareness costs, round by round
        logs["total_seconds"] = round(self.trust_logs.get("total_seconds", 0.0) + logs["seconds"], 2)  # and in all
        self.trust_logs = {"step": self.state.global_step, **logs}
        self.log({f"trust_{k}": v for k, v in logs.items()})

    def _train_trust_learner(self, scorer, init, seed: int):
        """A scoring learner: trained on the current synthetic set, or (`trust_learners="real"`) on the trusted real
        examples; the embedding model (`"embedding_model"`) is fine-tuned on those."""
        args, lr = self.args, self.args.eval_learning_rate
        if args.trust_learners != "synthetic":  # with Adam, at the evaluation's rate unless that is SGD's
            lr = adam_learning_rate(scorer) if args.eval_protocol == "sgd" or scorer is self.trust_scorer else lr
            return train_on_batches(scorer, init, self._trusted_batches(seed), lr=lr)
        x, mask, y, steps = (
            t.detach() if t is not None else None for t in self.accelerator.unwrap_model(self.model)()
        )
        steps = steps if args.eval_protocol == "learned" else None
        optimizer = eval_optimizer(args.eval_protocol)
        return train_on_set(
            self.learner,
            init,
            x,
            mask,
            y,
            step_sizes=steps,
            steps=args.eval_train_steps,
            lr=lr,
            optimizer=optimizer,
            inner_optimizer=args.inner_optimizer,
        )

    def _trusted_batches(self, seed: int):
        """`trust_real_epochs` passes over the trusted real examples in random mini-batches, with their current
        labels."""
        rows = self.trust.trusted.nonzero().squeeze(1)
        generator = torch.Generator().manual_seed(seed)
        epochs = self.args.trust_real_epochs
        order = torch.cat([rows[torch.randperm(len(rows), generator=generator)] for _ in range(math.ceil(epochs))])
        order = order[: max(1, round(epochs * len(rows)))]
        for pick in order.split(self.args.trust_batch_size or self.args.per_device_train_batch_size):
            x, mask, _ = self._real_inputs(self.train_dataset[pick])
            yield x, mask, self.trust.labels[pick].to(x.device)

    def _unrolled_loss(self, params, x_syn, mask_syn, soft_labels, step_sizes, x, mask, y, seed, every_row):
        """Train the learner on the synthetic set for the learned steps; its cross-entropy on the real batch (`y`:
        hard labels, or soft targets from trust-aware distillation; per class weighted with `trust_class_balance`),
        plus the trust-aware consistency term on `every_row` of the batch when it has a weight."""
        num_steps = len(step_sizes)
        if self.args.random_truncation:  # RaT-BPTT: a random unroll length, back-propagated through its last steps
            num_steps = random.Random(seed).randint(self.args.backprop_steps, num_steps)
        params = unroll(
            self.learner,
            params,
            x_syn,
            mask_syn,
            soft_labels,
            step_sizes[:num_steps],
            backprop_steps=self.args.backprop_steps,
            optimizer=self.args.inner_optimizer,
            augment=self._unroll_augment(seed),
        )
        with activation_checkpointing(self.learner) if self.args.checkpoints_activations else nullcontext():
            balance = (
                self.trust.class_weights(len(self.class_names)).to(x.device) if self.args.trust_class_balance else None
            )
            loss = soft_cross_entropy(learner_logits(self.learner, params, x, mask), y, weight=balance)
            weight = self.args.trust_consistency_weight
            if weight:
                logits_fn = partial(learner_logits, self.learner, params)
                noise = self.args.trust_consistency_noise
                loss = loss + weight * consistency_loss(logits_fn, *every_row, noise, seed)
        return loss

    def create_optimizer(self, model=None):
        # What is optimised is the synthetic set: inputs, label logits and step sizes each get their own step size.
        if self.optimizer is None:
            synthetic, args = self.model, self.args
            groups = [{"params": [synthetic.inputs], "lr": args.learning_rate}]
            if synthetic.label_logits.requires_grad:
                groups.append({"params": [synthetic.label_logits], "lr": args.label_learning_rate})
            if synthetic.log_step_sizes.requires_grad:
                groups.append({"params": [synthetic.log_step_sizes], "lr": args.step_size_learning_rate})
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(args, synthetic)
            kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def log(self, logs, start_time=None):
        # Also log the mean learned inner step size: its drift is the first sign of an unstable run.
        if "loss" in logs and self.model.log_step_sizes.requires_grad:
            logs["inner_step_size"] = round(self.model.step_sizes().detach().mean().item(), 6)
        if "loss" in logs and self.args.skip_gradient_spikes is not None:
            logs["skipped_steps"] = self.skipped_steps
        super().log(logs, start_time)

    def _eval_batches(self, rows: TensorRows):
        batch_size = self.args.per_device_eval_batch_size * 32
        for batch in DataLoader(rows, batch_size=batch_size, collate_fn=default_data_collator):
            yield self._real_inputs(batch)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        # A distilled set is judged by training fresh learners on it, not by a forward pass of the Trainer's model.
        override = eval_dataset is not None
        eval_dataset = eval_dataset if override else self.eval_dataset
        if isinstance(eval_dataset, dict):  # as Trainer does: each dataset, its name in its metrics' keys
            metrics = {}
            for name, dataset in eval_dataset.items():
                prefix = f"{metric_key_prefix}_{name}"
                metrics.update(self.evaluate(dataset if override else name, ignore_keys, prefix))
            return metrics
        if isinstance(eval_dataset, str):  # a name in the dict given as eval_dataset
            eval_dataset = self.eval_dataset[eval_dataset]
        if eval_dataset is None:
            raise ValueError("evaluate() needs an eval_dataset.")
        args, distilled = self.args, self.distilled_dataset()
        label_column = check_eval_dataset(
            eval_dataset, "eval_dataset", self.modality, self.input_shape, self.class_names
        )
        rows = TensorRows(eval_dataset, self.input_columns + [label_column])  # read once for all the models
        device = args.device
        x, y = distilled.inputs.to(device), distilled.soft_labels.to(device)
        mask = None if distilled.attention_mask is None else distilled.attention_mask.to(device)
        steps = distilled.step_sizes.to(device) if args.eval_protocol == "learned" else None
        # The baseline's classes are those the synthetic examples were created for, not their learned labels' argmax
        # (which may drift to another class and would then leave a class out of the baseline).
        baseline_classes = initial_label_logits(*distilled.soft_labels.shape).argmax(-1).tolist()
        runs, baseline_runs = [], []
        metrics = None  # with one fixed init, full-batch training on the set is the same for every model: train once
        # The fresh learners are split across processes (model i on process i mod N), then gathered in order.
        for i in range(args.process_index, args.num_eval_models, args.world_size):
            init = self.fixed_init if self.fixed_init is not None else self._learner_init(args.seed + 100_003 + i)
            init = {k: v.to(device) for k, v in init.items()}
            augmenter = self._eval_augment(args.seed + 100_003 + i)
            if metrics is None or self.fixed_init is None or augmenter is not None:
                params = train_on_set(
                    self.learner,
                    init,
                    x,
                    mask,
                    y,
                    step_sizes=steps,
                    steps=args.eval_train_steps,
                    lr=args.eval_learning_rate,
                    optimizer=eval_optimizer(args.eval_protocol),
                    augment=augmenter,
                    inner_optimizer=args.inner_optimizer,
                )
                metrics = self.compute_metrics(predict(self.learner, params, self._eval_batches(rows)))
            runs.append((i, metrics))
            if args.eval_baseline and not self.is_in_train:  # a random real subset of the same size, hard labels;
                # not during training (eval_strategy), where it would only repeat itself
                bx, bmask, by = self._real_examples(self.train_dataset, baseline_classes, args.seed + i)
                params = train_on_set(
                    self.learner,
                    init,
                    bx,
                    bmask,
                    by,
                    steps=args.eval_train_steps,
                    lr=args.eval_learning_rate,
                    optimizer=eval_optimizer(args.eval_protocol),
                    augment=augmenter,
                )
                baseline_runs.append(
                    (i, self.compute_metrics(predict(self.learner, params, self._eval_batches(rows))))
                )
        runs, baseline_runs = (
            [m for _, m in sorted(gather_object(r), key=lambda t: t[0])] for r in (runs, baseline_runs)
        )
        metrics = summarize(runs, metric_key_prefix)
        if baseline_runs:
            metrics.update(summarize(baseline_runs, f"{metric_key_prefix}_baseline"))
        metrics[f"{metric_key_prefix}_num_models"] = len(runs)
        metrics.update({f"{metric_key_prefix}_trust_{k}": v for k, v in self.trust_logs.items() if k != "step"})
        metrics[f"{metric_key_prefix}_num_examples"] = len(eval_dataset)
        self.eval_metrics = metrics
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        raise NotImplementedError(
            "DistillationTrainer's model is the synthetic set, which predicts nothing itself: train a learner on it "
            "(trainer.distilled_dataset().train_learner()) and predict with that model, e.g. through a plain Trainer."
        )

    def distilled_dataset(self) -> DistilledDataset:
        """The current synthetic set as a [`DistilledDataset`]: a detached CPU copy, which later steps leave alone."""
        synthetic = self.accelerator.unwrap_model(self.model)
        tensors = synthetic.averaged() if synthetic.ema_decay is not None else synthetic()
        inputs, mask, soft_labels, step_sizes = (t.detach().cpu().clone() if t is not None else None for t in tensors)
        fixed_init = self.fixed_init
        if fixed_init is not None and self.pretrained:  # the backbone is the checkpoint's: keep the head only
            fixed_init = {k: fixed_init[k] for k in head_parameter_names(self.learner)}
        previews = None
        if self.modality == "text" and self.processing_class is not None:
            previews = nearest_tokens(inputs, self.embedding_matrix, self.processing_class)
        return DistilledDataset(
            inputs=inputs,
            soft_labels=soft_labels,
            label_names=self.class_names,
            step_sizes=step_sizes,
            attention_mask=mask,
            previews=previews,
            learner_init=fixed_init,
            metadata={
                "source_dataset": self.source_dataset,
                "source_revision": self.source_revision,
                "num_source_examples": len(self.train_dataset),
                "label_noise": self.label_noise,
                "learner": type(self.learner).__name__,
                "learner_config": self.learner.config.to_dict(),
                "learner_init": self.args.learner_init,
                "learner_id": self.args.learner if self.pretrained else None,
                "learner_revision": getattr(self.learner.config, "_commit_hash", None) if self.pretrained else None,
                "embedding_model": self.args.embedding_model,
                "embedding_revision": self.embedding_revision,
                "image_mean": self.args.image_mean,
                "image_std": self.args.image_std,
                "inner_steps": self.args.inner_steps,
                "inner_epochs": self.args.inner_epochs,
                "metrics": self.eval_metrics,
                "config": self.args.to_dict(),
                "environment": run_environment(self.accelerator),
            },
        )

    def _save(self, output_dir=None, state_dict=None):
        # The artefact is a dataset, not model weights; model.safetensors holds the raw learnable state for resume.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        state = state_dict if state_dict is not None else self.accelerator.unwrap_model(self.model).state_dict()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, os.path.join(output_dir, "model.safetensors")
        )
        self.distilled_dataset().save(output_dir)
        if self.trust is not None:  # the trusted split and the relabelled labels, so that a resume continues from them
            path = os.path.join(output_dir, TRUST_STATE_FILE)
            save_file(self.trust.tensors(), path, metadata={"logs": json.dumps(self.trust_logs)})
        if self.trajectory is not None:  # the learner a matching cycle is training, and its optimiser state
            path = os.path.join(output_dir, TRAJECTORY_STATE_FILE)
            save_file(self.trajectory.tensors(), path, metadata=self.trajectory.metadata())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # The synthetic set comes back through Trainer; a trust-aware run also needs its trusted split and labels.
        check_checkpoint_fits(
            resume_from_checkpoint, self.accelerator.unwrap_model(self.model).state_dict(), self.args
        )
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, TRAJECTORY_STATE_FILE)
        if self.args.matching_outer_loop > 1 and os.path.isfile(path):
            with safe_open(path, framework="pt") as f:
                tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
            self.trajectory = LearnerTrajectory.from_tensors(tensors, metadata, device=self.args.device)
        if self.trust is None:
            return
        path = os.path.join(resume_from_checkpoint, TRUST_STATE_FILE)
        if not os.path.isfile(path):
            logger.warning(f"{path} does not exist: trust-aware distillation starts again from the given labels.")
            return
        with safe_open(path, framework="pt") as f:
            state = TrustState.from_tensors({k: f.get_tensor(k) for k in f.keys()})
            logs = json.loads(f.metadata()["logs"])
        if len(state.labels) != len(self.trust.labels):
            raise ValueError(
                f"{path} holds the trusted split of {len(state.labels)} examples, but train_dataset has "
                f"{len(self.trust.labels)}: resume with the training data of the checkpoint's run."
            )
        self.trust, self.trust_logs = state, logs

    # The Hub: the artefact is a dataset repo; it receives the set of every save and the final one, never resume state.
    def init_hf_repo(self, token=None, private=None):
        """Checks the token and creates the dataset repo before training, so a bad token fails fast."""
        if not self.is_world_process_zero():
            return
        token = check_token(token if token is not None else self.args.hub_token)
        repo_id = self.args.hub_model_id
        if repo_id is None or "/" not in repo_id:
            user = HfApi().whoami(token=token)["name"]
            repo_id = f"{user}/{repo_id or Path(self.args.output_dir).absolute().name}"
        private = private if private is not None else self.args.hub_private_repo
        self.hub_model_id = (
            HfApi()
            .create_repo(check_repo_id(repo_id), repo_type="dataset", private=private, token=token, exist_ok=True)
            .repo_id
        )
        self.push_in_progress = None

    def push_to_hub(self, commit_message="End of training", blocking=True, token=None, revision=None, **kwargs):
        """Push the distilled set (not model weights) to the dataset repo `args.hub_model_id`."""
        self._finish_current_push()  # pushes of checkpoints first: each push is pinned to its own parent commit
        if getattr(self, "hub_model_id", None) is None:
            self.init_hf_repo(token=token, private=kwargs.get("private"))
        if not self.is_world_process_zero():
            return None
        return self.distilled_dataset().push_to_hub(
            self.hub_model_id,
            token=token if token is not None else self.args.hub_token,
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message,
        )

    def _push_from_checkpoint(self, checkpoint_folder):
        # hub_strategy="every_save": the set of each checkpoint replaces the repo's, pushed in the background (one push
        # at a time; a save during a push is skipped unless hub_always_push). Resume state is never pushed.
        if not self.is_world_process_zero() or self.args.hub_strategy == "end":
            return
        if self.push_in_progress is not None and not self.push_in_progress.is_done() and not self.args.hub_always_push:
            return
        if self._hub_pusher is None:
            self._hub_pusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_distill-push")
        job = self._hub_pusher.submit(
            self.distilled_dataset().push_to_hub,
            self.hub_model_id,
            token=self.args.hub_token,
            revision=self.args.hub_revision,
            commit_message=f"Training in progress, step {self.state.global_step}",
        )
        job.add_done_callback(_warn_if_failed)
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress([job])
        else:
            self.push_in_progress.jobs.append(job)


def _warn_if_failed(job) -> None:
    if not job.cancelled() and job.exception() is not None:
        logger.warning(f"Pushing a checkpoint's distilled set to the Hub failed: {job.exception()}")
