import os
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .augment import parse_augmentation
from .evaluation import EVAL_TRAIN_STEPS, eval_optimizer
from .methods.unrolled import INNER_OPTIMIZERS

DISTILL_METHODS = ("unrolled", "gradient_matching", "distribution_matching")
TRUST_UNTRUSTED = ("drop", "soft")  # what the objective does with untrusted examples
TRUST_LEARNERS = ("synthetic", "real", "embedding_model")  # the learners that score the real data, and their data
EVAL_PROTOCOLS = ("learned", "adam", "sgd")  # how evaluate() trains the fresh learners on the set


@dataclass
class DistillationConfig(TrainingArguments):
    r"""
    Configuration for [`DistillationTrainer`]: learn a small synthetic training set (inputs, soft labels and per-step
    learning rates) by unrolling a learner's training on it and back-propagating the loss on real data
    (Sucholutsky & Schonlau, *Soft-Label Dataset Distillation and Text Dataset Distillation*, arXiv:1910.02551).

    The optimiser of [`~transformers.Trainer`] updates the synthetic set; `learning_rate` is the step size of the
    synthetic inputs, and `per_device_train_batch_size` the size of the real batch that scores each unroll. Choose it
    for the scale of the inputs: normalised pixels (std 1) take 0.01-0.03, token embeddings of MiniLM's scale (std
    0.056) about 3e-4, which is what the text presets of `hf-distill distill` use.

    Parameters:
        > Objective

        distill_method (`str`, defaults to `"unrolled"`): `unrolled` (the method above), `gradient_matching` (match
            the learner's per-class loss gradients on synthetic and real data, Zhao et al., ICLR 2021) or
            `distribution_matching` (match per-class mean embeddings under random learners, Zhao & Bilen, WACV 2023).
            The matching objectives train no learner inside a step, so they learn no step sizes, are evaluated with
            Adam, and distribution matching keeps the labels fixed.
        augmentation (`str` or `None`): differentiable augmentation of images (Zhao & Bilen, ICML 2021): operations
            joined by `_` from `color`, `crop`, `cutout`, `flip`, `scale` and `rotate` (the matching papers use
            `"color_crop_cutout_flip_scale_rotate"`; `hf_distill.augment`). The matching objectives augment each
            class's real and synthetic examples with the same randomly chosen operation and parameters (Siamese)
            before they compare them; the unrolled objective trains each inner step on a fresh draw per synthetic
            image (set `eval_augmentation` to replay the learned steps that way too). `None`: no augmentation.
        matching_outer_loop (`int`, defaults to `1`): outer steps of a matching objective that share one learner
            init (DC's `outer_loop`); `1` draws a fresh learner every outer step.
        matching_inner_loop (`int`, defaults to `1`): with `matching_outer_loop` > 1, full-batch steps of that
            learner on the synthetic set after each outer step (DC's `inner_loop`), with the evaluation's optimiser
            and rate, so that the set is also matched along the path an evaluation learner takes. The learner and
            its optimiser state are saved with each checkpoint (`hf_distill.methods.trajectory`).

        > Synthetic set

        synthetic_per_class (`int`, defaults to `1`): synthetic examples per class.
        num_synthetic (`int` or `None`): total synthetic examples; overrides `synthetic_per_class` and may be smaller
            than the number of classes (then every example starts with a soft label spread over several classes).
        synthetic_init (`str`, defaults to `"real"`): start from randomly drawn real examples (`"real"`), from the
            real examples nearest per-class k-means centres (`"kmeans"`: in the penultimate features of the learner
            after two epochs of Adam on up to 5,000 real examples per class; hf_distill's own learners only), or from
            Gaussian noise (`"noise"`).
        learn_labels (`bool`, defaults to `True`, `False` for distribution matching): learn soft labels, starting
            from softmax(3 on the example's class, 0 elsewhere); otherwise keep exact one-hot labels.
        label_learning_rate (`float`, defaults to `0.01`): Adam step size of the label logits (of the labels
            themselves with `label_softmax=False`).
        label_softmax (`bool`, defaults to `True`): soft labels are the softmax of the learned logits, distributions
            over the classes. `False` learns the labels as unconstrained real vectors instead, as the reference code
            of Sucholutsky & Schonlau does by default (its `--label_softmax` is off): starting from the same
            distributions, a label may then weigh a class negatively, and its sum scales its example's loss. The
            inner loss is `-sum(label * log_softmax(logits))` either way.
        synthetic_ema_decay (`float` or `None`): keep an exponential moving average of the synthetic inputs, label
            logits and log step sizes, updated after every outer step with this decay (bias-corrected as Adam's
            moments), and evaluate and save the average instead of the last set (Polyak averaging: the set of about
            the last `1 / (1 - decay)` outer steps, not one point of a noisy path). Trust rounds score with the
            current set. `None` (default): the last set.

        > Learner and inner loop

        learner (`str` or `None`): `lenet`, `convnet`, `textcnn` or `textlstm`, or the Hub id / path of any
            `AutoModelForSequenceClassification` (text; fed `inputs_embeds` in its own embedding space, which then
            becomes `embedding_model`); `None` picks `lenet` for images of 28 px and more, `convnet` for smaller
            ones, `textcnn` for text.
        learner_init (`str`, defaults to `"random"`, or `"pretrained"` for a pretrained learner): `random` draws a
            fresh learner every outer step, so the set works for unseen inits; `fixed` distils for one known init,
            saved with the set; `pretrained` starts every inner run from the pretrained weights with a freshly
            initialised classification head, so the set teaches fine-tuning.
        inner_steps (`int`, defaults to `10`): gradient steps per inner epoch, each on the whole synthetic set.
        inner_epochs (`int`, defaults to `3`): passes of `inner_steps` steps; every step has its own step size.
        inner_optimizer (`str`, defaults to `"sgd"`): what one inner step is: a plain gradient step (`sgd`, the seed
            paper's), or Adam's step with the learned step size as its rate (`adam`, as RaT-BPTT's inner loop, Feng
            et al.; the step sizes then start near Adam's rates, e.g. `step_size_init=1e-3`). The evaluation with
            the learned step sizes takes the same steps.
        step_size_init (`float`, defaults to `0.02`): initial inner learning rate of every step.
        learn_step_sizes (`bool`, defaults to `True` with `unrolled`): learn the per-step learning rates.
        step_size_learning_rate (`float`, defaults to `0.01`): Adam step size of the log step sizes.
        per_layer_step_sizes (`bool`, defaults to `False`): learn one step size per inner step *and* per weight
            tensor of the learner (`[steps, tensors]`, as MAML++'s per-layer per-step rates), instead of one per
            step, so that the set can move some layers faster than others. Unbounded, they can grow until the
            unroll diverges (MNIST, docs/benchmarks-mnist.md); `max_step_size` bounds them too.
        max_step_size (`float` or `None`): an upper bound on every learned step size (`None`: unbounded). Long
            unrolls turn chaotic once the learned step sizes grow too large; the bound keeps them below that.
        backprop_steps (`int` or `None`): back-propagate through only the last K inner steps (truncated BPTT);
            `None` back-propagates through all of them.
        random_truncation (`bool`, defaults to `False`): with `backprop_steps`, stop the unroll after a random
            number of steps in [`backprop_steps`, all] each outer step (Feng et al., ICLR 2024, RaT-BPTT).
        skip_gradient_spikes (`float` or `None`): drop the gradient of an outer step whose norm (before clipping) is
            more than this many times the median of the last 100 outer steps' norms, so that a chaotic unroll's
            spike does not move the set (its optimiser still takes the step, with momentum only). `None`: keep
            every gradient. The count is logged as `skipped_steps`.

        > Noisy labels

        trust_aware (`bool`, defaults to `False`): every `trust_interval` outer steps, score the real training
            examples with `trust_models` learners trained on the current set, keep the small-loss ones of each class
            (a Gaussian mixture per class) as trusted, relabel untrusted ones whose features confirm their predicted
            class, and compute the real-data objective on trusted examples only (see `hf_distill.methods.trust`).
        trust_recalibrate (`bool`, defaults to `True`): the relabelling step of trust-aware distillation; without
            it, only the small-loss split is used (an ablation of the method).
        trust_untrusted (`str`, defaults to `"drop"`): what the real-data objective does with untrusted examples:
            `drop` them, or keep them with a `soft` target, the trust learners' mean predicted distribution (a
            consistency target in place of the label the split distrusts; `unrolled` only).
        trust_learners (`str`, defaults to `"real"`): what the scoring learners are trained on: the trusted real
            examples with their current labels (`real`: `trust_real_epochs` passes in mini-batches of
            `per_device_train_batch_size` with Adam at `eval_learning_rate`, or Adam's default rate with
            `eval_protocol="sgd"`, from a fresh init each round, short enough that they have not yet fitted the wrong
            labels; the first round is at step 0), or the current synthetic set (`synthetic`, as in evaluation:
            cheaper, but weaker learners make a less precise split). Text only: `embedding_model` scores with the
            embedding model itself as a sequence classifier (its pretrained weights and a fresh head each round),
            fine-tuned on the trusted real examples as `real` trains the learner, at a fine-tuning rate (Adam,
            5e-5), `trust_models` times per round (on SST-2: a more precise split, not a better set;
            docs/benchmarks-noisy.md).
        trust_real_epochs (`float`, defaults to `1.0`): passes over the trusted real examples of a scoring learner
            (`trust_learners="real"` or `"embedding_model"`).
        trust_batch_size (`int` or `None`): the mini-batch of those passes; by default
            `per_device_train_batch_size` (fine-tuning a transformer wants smaller ones, e.g. 32).
        trust_keep_fraction (`float` or `None`): trust this share of each class, the examples with the smallest
            losses, instead of the Gaussian mixture's low-loss component. With clean labels, `trust_aware=True`,
            `trust_recalibrate=False` and a fraction below 1, it distils from the easiest examples only (loss-value
            pruning, as in Moser et al. 2024, *Distill the Best, Ignore the Rest*).
        trust_class_balance (`bool`, defaults to `False`): weight the real-data loss of trust-aware distillation
            (`unrolled`, untrusted examples dropped) per class, by the class's share of all examples over its share
            of the trusted ones, so that classes whose examples are trusted less often (the harder ones) count as
            much as in the data. The weights follow the current labels and are renewed every trust round.
        trust_consistency_weight (`float`, defaults to `0.0`): weight of a consistency term added to the real-data
            objective of trust-aware distillation (`unrolled` only): the KL divergence between the trained
            learner's predictions on every real example of the batch, trusted or not (no label needed), and on a
            copy with Gaussian noise of `trust_consistency_noise` times the batch's standard deviation. TAD pairs
            its trusted-only objective with a consistency term; this is hf_distill's form of it (see docs/noisy.md).
        trust_consistency_noise (`float`, defaults to `0.2`): the noise of the consistency term's perturbed copy,
            relative to the standard deviation of the real batch.

        > Text

        embedding_model (`str` or `None`): Hub id or path of the model whose tokenizer and frozen input-embedding
            matrix turn real text into embedding sequences.

        > Evaluation

        num_eval_models (`int`, defaults to `10`): fresh learners trained on the distilled set by `evaluate()`.
        eval_protocol (`str`, defaults to `"learned"` with `unrolled`, else `"adam"`): train them with the learned
            step sizes (`learned`), with Adam (`adam`: `eval_train_steps` full-batch steps at `eval_learning_rate`),
            or with SGD as the gradient- and distribution-matching papers' code evaluates a set (`sgd`: momentum 0.9,
            weight decay 5e-4, `eval_train_steps` full-batch steps at `eval_learning_rate`, divided by 10 after half
            of them; with `eval_augmentation` and the defaults, their protocol for a set of up to 256 examples, which
            they train in batches of 256).
        eval_train_steps (`int`, defaults to `300`, or `1000` with `eval_protocol="sgd"`): full-batch steps of the
            evaluation learners (`adam`, `sgd`) and of the baseline's.
        eval_augmentation (`bool`, defaults to `False`): train the evaluation learners and the baseline's with
            `augmentation`, a fresh draw per example and step (the matching papers' evaluation; with
            `eval_protocol="learned"`, each learned step).
        eval_learning_rate (`float`, defaults to `0.001`, or `5e-5` for a pretrained learner, or `0.01` with
            `eval_protocol="sgd"`): step size for the same (a pretrained transformer is fine-tuned at a fine-tuning
            rate).
        eval_baseline (`bool`, defaults to `True`): also train on random real subsets of the same size (hard labels;
            Adam, or SGD with `eval_protocol="sgd"`), the baseline that says whether distillation helped. Evaluations
            during training (`eval_strategy`) skip it: it does not change as the set learns.
        metric_for_best_model (`str`, defaults to `"accuracy"` with `load_best_model_at_end`): the Trainer's option,
            with the distilled set's mean accuracy as its default instead of a loss, which `evaluate()` does not
            report. `load_best_model_at_end` then keeps the checkpoint whose set scored best on `eval_dataset`: pass a
            split held out of the training data there (`hf-distill distill --validation_size N`), never the test set.
        image_mean, image_std (`list[float]` or `None`): the normalisation of the real images, kept with the set
            to render its preview grid.
        hub_strategy (`str`, defaults to `"every_save"`): the Trainer's option, for the dataset repo `hub_model_id`:
            with `push_to_hub`, `every_save` pushes the set of every saved checkpoint in the background, `end` only
            the final set. `checkpoint` and `all_checkpoints`, which push a model's resume state, are refused.
    """

    # Objective
    distill_method: str = field(
        default="unrolled",
        metadata={
            "help": "unrolled (Sucholutsky & Schonlau), gradient_matching (Zhao et al.) or distribution_matching "
            "(Zhao & Bilen).",
            "choices": list(DISTILL_METHODS),
        },
    )
    augmentation: str | None = field(
        default=None,
        metadata={
            "help": "Differentiable augmentation of images (Siamese for the matching objectives, every inner step "
            "for the unrolled one): operations joined by '_' from color, crop, cutout, flip, scale, rotate."
        },
    )
    matching_outer_loop: int = field(
        default=1, metadata={"help": "Outer steps of a matching objective that share one learner init (DC)."}
    )
    matching_inner_loop: int = field(
        default=1, metadata={"help": "Steps of that learner on the synthetic set after each of them (DC)."}
    )

    # Synthetic set
    synthetic_per_class: int = field(default=1, metadata={"help": "Synthetic examples per class."})
    num_synthetic: int | None = field(
        default=None, metadata={"help": "Total synthetic examples (overrides synthetic_per_class; may be < classes)."}
    )
    synthetic_init: str = field(
        default="real",
        metadata={
            "help": "Where the synthetic inputs start: random real examples (real), the real examples nearest "
            "per-class k-means centres in a briefly trained learner's features (kmeans), or noise.",
            "choices": ["real", "kmeans", "noise"],
        },
    )
    learn_labels: bool | None = field(
        default=None, metadata={"help": "Learn soft labels (default: yes, except with distribution matching)."}
    )
    label_learning_rate: float = field(
        default=0.01,
        metadata={"help": "Adam step size of the label logits (of the labels themselves with label_softmax false)."},
    )
    label_softmax: bool = field(
        default=True,
        metadata={
            "help": "Soft labels are the softmax of learned logits; false: unconstrained real vectors (the reference "
            "code's default)."
        },
    )
    synthetic_ema_decay: float | None = field(
        default=None,
        metadata={"help": "Evaluate and save an exponential moving average of the set with this decay (e.g. 0.9997)."},
    )

    # Learner and inner loop
    learner: str | None = field(
        default=None,
        metadata={
            "help": "lenet, convnet, textcnn, textlstm, or the Hub id / path of any sequence classifier (text); "
            "default: picked from the data."
        },
    )
    learner_init: str | None = field(
        default=None,
        metadata={
            "help": "Learner init per outer step (default: pretrained for a pretrained learner, else random).",
            "choices": ["random", "fixed", "pretrained"],
        },
    )
    inner_steps: int = field(default=10, metadata={"help": "Inner gradient steps per inner epoch."})
    inner_epochs: int = field(default=3, metadata={"help": "Inner epochs (each step has its own step size)."})
    inner_optimizer: str = field(
        default="sgd",
        metadata={
            "help": "One inner step: a gradient step (sgd) or Adam's (adam).",
            "choices": list(INNER_OPTIMIZERS),
        },
    )
    step_size_init: float = field(default=0.02, metadata={"help": "Initial inner learning rate."})
    learn_step_sizes: bool | None = field(
        default=None, metadata={"help": "Learn the per-step inner learning rates (default: yes, with unrolled)."}
    )
    step_size_learning_rate: float = field(default=0.01, metadata={"help": "Adam step size of the log step sizes."})
    per_layer_step_sizes: bool = field(
        default=False, metadata={"help": "One step size per inner step and per weight tensor of the learner."}
    )
    max_step_size: float | None = field(
        default=None, metadata={"help": "Upper bound on every learned inner step size (default: unbounded)."}
    )
    backprop_steps: int | None = field(
        default=None, metadata={"help": "Back-propagate through only the last K inner steps (default: all)."}
    )
    random_truncation: bool = field(
        default=False, metadata={"help": "Unroll a random number of steps in [backprop_steps, all] (RaT-BPTT)."}
    )
    skip_gradient_spikes: float | None = field(
        default=None,
        metadata={"help": "Drop an outer gradient above this many times the median of the last 100 norms."},
    )

    # Noisy labels
    trust_aware: bool = field(
        default=False, metadata={"help": "Distil from trusted real examples only, recalibrating the others (TAD)."}
    )
    trust_interval: int = field(default=200, metadata={"help": "Outer steps between trust rounds."})
    trust_models: int = field(default=3, metadata={"help": "Learners that score the real data in a trust round."})
    trust_recalibrate: bool = field(
        default=True, metadata={"help": "Relabel reliable untrusted examples (off: the trusted split only)."}
    )
    trust_untrusted: str = field(
        default="drop",
        metadata={
            "help": "Untrusted examples in the objective: drop, or soft (the trust learners' mean prediction).",
            "choices": list(TRUST_UNTRUSTED),
        },
    )
    trust_learners: str = field(
        default="real",
        metadata={
            "help": "Scoring learners: trained on the synthetic set, on the trusted real examples (real), or the "
            "embedding model fine-tuned on those (embedding_model, text).",
            "choices": list(TRUST_LEARNERS),
        },
    )
    trust_real_epochs: float = field(
        default=1.0,
        metadata={"help": "Passes over the trusted real examples of a scoring learner (real, embedding_model)."},
    )
    trust_batch_size: int | None = field(
        default=None,
        metadata={"help": "Mini-batch of those passes (default: per_device_train_batch_size)."},
    )
    trust_keep_fraction: float | None = field(
        default=None,
        metadata={"help": "Trust this share of each class (smallest losses) instead of the Gaussian mixture's split."},
    )
    trust_class_balance: bool = field(
        default=False,
        metadata={"help": "Weight the trusted examples' loss per class back to the classes' shares of the data."},
    )
    trust_consistency_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the consistency term on all real examples (trust_aware, unrolled; 0: off)."},
    )
    trust_consistency_noise: float = field(
        default=0.2, metadata={"help": "Noise of the consistency term's perturbed copy, relative to the batch std."}
    )

    # Text
    embedding_model: str | None = field(
        default=None, metadata={"help": "Hub id or path of the tokenizer + input embeddings for text data."}
    )

    # Evaluation
    num_eval_models: int = field(default=10, metadata={"help": "Fresh learners trained on the distilled set."})
    eval_protocol: str | None = field(
        default=None,
        metadata={
            "help": "Train eval learners with learned step sizes, Adam, or SGD as the DC/DM code (default: learned "
            "for unrolled, else adam).",
            "choices": list(EVAL_PROTOCOLS),
        },
    )
    eval_train_steps: int | None = field(
        default=None, metadata={"help": "Full-batch steps (eval_protocol adam/sgd, baseline; default 300, sgd 1000)."}
    )
    eval_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Its step size (default 1e-3, 5e-5 for pretrained learners, 0.01 with eval_protocol=sgd)."},
    )
    eval_augmentation: bool = field(
        default=False, metadata={"help": "Train the evaluation learners (and the baseline) with `augmentation`."}
    )
    eval_baseline: bool = field(default=True, metadata={"help": "Also evaluate a same-size random real subset."})
    image_mean: list[float] | None = field(default=None, metadata={"help": "Per-channel mean of the real images."})
    image_std: list[float] | None = field(default=None, metadata={"help": "Per-channel std of the real images."})

    # Trainer defaults that suit distillation
    output_dir: str | None = field(default="distilled", metadata={"help": "Where the distilled set is written."})
    learning_rate: float = field(default=0.01, metadata={"help": "Adam step size of the synthetic inputs."})
    per_device_train_batch_size: int = field(default=256, metadata={"help": "Real examples per outer step."})
    max_steps: int = field(default=1000, metadata={"help": "Outer steps (updates of the synthetic set)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule of the synthetic set's optimiser."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N outer steps."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N outer steps."})
    # DDP's default hooks cannot follow the unroll's double backward; the synthetic set's graph is the same every
    # step, so a static graph averages its gradients across processes once per backward.
    ddp_static_graph: bool | None = field(default=True, metadata={"help": "DDP static graph (needed by the unroll)."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP find_unused_parameters (the synthetic set uses all its tensors)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the real-data columns: the synthetic set's forward takes none."}
    )

    def __post_init__(self):
        self._check_choices()
        if not self.use_cpu and _launched_on_cpus():
            # `accelerate launch --num_processes N` / `torchrun` on a machine without accelerators: TrainingArguments
            # would otherwise start N unconnected single processes; `use_cpu` makes them one gloo process group.
            self.use_cpu = True
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "accuracy"  # evaluate() reports no loss, the Trainer's default
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not _has_accelerator()):
            self.dataloader_pin_memory = False  # nothing to pin for: torch would only warn for every real-data loader
        from .learners import LEARNERS, is_pretrained_learner

        pretrained = is_pretrained_learner(self.learner)
        if (
            pretrained
            and self.learner.startswith((".", "/", "~"))
            and not os.path.isdir(os.path.expanduser(self.learner))
        ):
            raise ValueError(f"Unknown learner {self.learner!r}: the path does not exist.")
        if self.learner_init is None and self.learner is not None:  # else the trainer decides from the learner
            self.learner_init = "pretrained" if pretrained else "random"
        if self.learner_init == "pretrained" and self.learner in LEARNERS:
            raise ValueError(
                f"learner_init='pretrained' needs a pretrained learner (a Hub id or path), not {self.learner!r}."
            )
        if pretrained and self.embedding_model is None:
            self.embedding_model = self.learner  # the synthetic sequences live in the learner's own embedding space
        if self.synthetic_per_class < 1:
            raise ValueError(f"synthetic_per_class must be >= 1 (got {self.synthetic_per_class}).")
        if self.num_synthetic is not None and self.num_synthetic < 1:
            raise ValueError(f"num_synthetic must be >= 1 (got {self.num_synthetic}).")
        if self.inner_steps < 1 or self.inner_epochs < 1:
            raise ValueError(
                f"inner_steps and inner_epochs must be >= 1 (got {self.inner_steps}, {self.inner_epochs})."
            )
        total = self.inner_steps * self.inner_epochs
        if self.backprop_steps is not None and not 1 <= self.backprop_steps <= total:
            raise ValueError(
                f"backprop_steps must be in [1, inner_steps * inner_epochs = {total}] (got {self.backprop_steps})."
            )
        if self.step_size_init <= 0:
            raise ValueError(f"step_size_init must be > 0 (got {self.step_size_init}).")
        if self.per_device_train_batch_size < 1:
            raise ValueError(f"per_device_train_batch_size must be >= 1 (got {self.per_device_train_batch_size}).")
        if self.max_step_size is not None and not 0 < self.step_size_init <= self.max_step_size:
            raise ValueError(
                f"max_step_size must be >= step_size_init > 0 (got {self.max_step_size}, {self.step_size_init})."
            )
        if self.synthetic_ema_decay is not None and not 0 < self.synthetic_ema_decay < 1:
            raise ValueError(f"synthetic_ema_decay must be in (0, 1) (got {self.synthetic_ema_decay}).")
        if self.skip_gradient_spikes is not None and self.skip_gradient_spikes <= 1:
            raise ValueError(f"skip_gradient_spikes must be > 1 (got {self.skip_gradient_spikes}).")
        if self.random_truncation and self.backprop_steps is None:
            raise ValueError("random_truncation needs backprop_steps (the length of the back-propagated window).")
        self._resolve_method_options()
        if self.trust_batch_size is not None and self.trust_batch_size < 1:
            raise ValueError(f"trust_batch_size must be >= 1 (got {self.trust_batch_size}).")
        if min(self.trust_interval, self.trust_models) < 1 or self.trust_real_epochs <= 0:
            raise ValueError(
                "trust_interval and trust_models must be >= 1 and trust_real_epochs > 0 (got "
                f"{self.trust_interval}, {self.trust_models}, {self.trust_real_epochs})."
            )
        if self.trust_keep_fraction is not None and not 0 < self.trust_keep_fraction <= 1:
            raise ValueError(f"trust_keep_fraction must be in (0, 1] (got {self.trust_keep_fraction}).")
        if self.trust_consistency_weight < 0 or self.trust_consistency_noise <= 0:
            raise ValueError(
                "trust_consistency_weight must be >= 0 and trust_consistency_noise > 0 (got "
                f"{self.trust_consistency_weight}, {self.trust_consistency_noise})."
            )
        if self.trust_consistency_weight and not self.trust_aware:
            raise ValueError("trust_consistency_weight is a term of trust-aware distillation: set trust_aware=True.")
        if self.trust_class_balance and not (self.trust_aware and self.trust_untrusted == "drop"):
            raise ValueError(
                "trust_class_balance weights the trusted examples of trust-aware distillation when the untrusted "
                "ones are dropped: set trust_aware=True and trust_untrusted='drop'."
            )
        parse_augmentation(self.augmentation)
        if self.eval_augmentation and not self.augmentation:
            raise ValueError("eval_augmentation trains the evaluation learners with `augmentation`: set augmentation.")
        if self.matching_outer_loop < 1 or self.matching_inner_loop < 1:
            raise ValueError(
                f"matching_outer_loop and matching_inner_loop must be >= 1 (got {self.matching_outer_loop} and "
                f"{self.matching_inner_loop})."
            )
        if self.num_eval_models < 1:
            raise ValueError(f"num_eval_models must be >= 1 (got {self.num_eval_models}).")
        if self.push_to_hub and self.hub_strategy not in ("every_save", "end"):
            raise ValueError(
                f"hub_strategy={self.hub_strategy.value!r} pushes a model's resume state; hf_distill pushes the "
                "distilled set, at every save ('every_save') or at the end ('end')."
            )

    def _check_choices(self):
        """A field of this class that offers choices (`--help` lists them) holds one of them, or None."""
        inherited = {f.name for f in fields(TrainingArguments)}
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if f.name not in inherited and choices and value is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, choices))} (got {value!r}).")

    def _resolve_method_options(self):
        """Defaults that depend on `distill_method`, and the options a matching objective cannot honour."""
        unrolled = self.distill_method == "unrolled"
        # Options of the unrolled method's inner loop, and the labels DM's objective ignores.
        unsupported = {
            "learn_step_sizes": not unrolled and self.learn_step_sizes,
            "eval_protocol='learned'": not unrolled and self.eval_protocol == "learned",
            "backprop_steps": not unrolled and self.backprop_steps is not None,
            "random_truncation": not unrolled and self.random_truncation,
            "max_step_size": not unrolled and self.max_step_size is not None,
            "per_layer_step_sizes": not unrolled and self.per_layer_step_sizes,
            "learn_labels": self.distill_method == "distribution_matching" and self.learn_labels,
            "trust_untrusted='soft'": not unrolled and self.trust_untrusted == "soft",
            "trust_consistency_weight": not unrolled and self.trust_consistency_weight > 0,
            "trust_class_balance": not unrolled and self.trust_class_balance,
            "matching_outer_loop": unrolled and self.matching_outer_loop > 1,
            f"inner_optimizer={self.inner_optimizer!r}": not unrolled and self.inner_optimizer != "sgd",
        }
        for option, asked in unsupported.items():
            if asked:
                raise ValueError(f"distill_method={self.distill_method!r} does not support {option}.")
        if self.learn_step_sizes is None:
            self.learn_step_sizes = unrolled
        if self.learn_labels is None:
            self.learn_labels = self.distill_method != "distribution_matching"
        if self.eval_protocol is None:
            self.eval_protocol = "learned" if unrolled else "adam"
        if self.eval_train_steps is None:
            self.eval_train_steps = EVAL_TRAIN_STEPS[eval_optimizer(self.eval_protocol)]

    @property
    def total_inner_steps(self) -> int:
        return self.inner_steps * self.inner_epochs

    @property
    def checkpoints_activations(self) -> bool:
        """`activation_checkpointing`, or `gradient_checkpointing` on transformers releases that predate that name."""
        return bool(getattr(self, "activation_checkpointing", None) or self.gradient_checkpointing)


def _has_accelerator() -> bool:
    """Whether this machine has a GPU or another accelerator torch can use."""
    import torch

    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        return torch.accelerator.current_accelerator() is not None
    return torch.cuda.is_available()


def _launched_on_cpus() -> bool:
    """Launched as one of several processes (WORLD_SIZE > 1) on a machine with no GPU or other accelerator."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator()
