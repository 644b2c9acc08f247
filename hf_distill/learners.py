"""The networks a distilled set is learned *for*: small classifiers as `PreTrainedModel`s.

Each learner takes `pixel_values` (images) or `inputs_embeds` + `attention_mask` (text), returns a
`SequenceClassifierOutput`, and accepts hard (`[B]` int) or soft (`[B, K]` float) `labels`, so it trains with the
plain `Trainer` and saves with `save_pretrained` as well as inside the distillation loop.
"""

import math
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SequenceClassifierOutput


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against hard labels (`[B]` ints) or soft labels (`[B, K]` probabilities); `weight` (`[K]`, hard
    labels only) weights each class as `F.cross_entropy` does."""
    if labels.dtype.is_floating_point:
        if weight is not None:
            raise ValueError("Class weights apply to hard labels only.")
        return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits, labels, weight=weight)


class LearnerConfig(PretrainedConfig):
    """Shared configuration of hf_distill's learners.

    Parameters:
        num_channels: image channels (image learners).
        image_size: image height = width (image learners).
        hidden_size: width of the input embeddings (text learners).
        width: filters per conv layer (ConvNet, TextCNN) or LSTM hidden size per direction (TextLSTM).
        depth: conv blocks (ConvNet); 0 picks as many as the image size allows, at most 3.
        kernel_sizes: TextCNN kernel widths.
        dropout: dropout before the classifier; the distillation inner loop runs learners in eval mode.
    """

    model_type = "hf_distill_learner"

    def __init__(
        self,
        num_channels=1,
        image_size=28,
        hidden_size=384,
        width=None,
        depth=0,
        kernel_sizes=(3, 4, 5),
        dropout=0.0,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.width = width
        self.depth = depth
        self.kernel_sizes = list(kernel_sizes)
        self.dropout = dropout
        super().__init__(**kwargs)


class _Learner(PreTrainedModel):
    config_class = LearnerConfig
    base_model_prefix = "learner"
    main_input_name = "pixel_values"
    head_name = "classifier"  # the last linear layer

    def _init_weights(self, module):
        # PyTorch's default init (Kaiming-uniform); LeNet overrides it with the reference code's.
        if module is not self and hasattr(module, "reset_parameters"):
            module.reset_parameters()

    def reset_parameters(self):
        """Draw fresh weights from the global RNG (used for a new learner per outer step)."""
        for module in self.modules():
            self._init_weights(module)

    def _output(self, features, labels):
        """Logits from the penultimate `features`, which are also returned as the last of `hidden_states` (the
        embedding that distribution matching compares)."""
        logits = getattr(self, self.head_name)(features)
        loss = soft_cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=(features,))


class LeNet(_Learner):
    """LeNet-5 as in the dataset-distillation papers (ReLU, max-pool)."""

    head_name = "fc3"

    def __init__(self, config: LearnerConfig):
        super().__init__(config)
        pad = 2 if config.image_size == 28 else 0  # 28x28 inputs are padded to LeNet's native 32x32
        self.conv1 = nn.Conv2d(config.num_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((config.image_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet needs images of at least 28x28 (got {config.image_size}); use 'convnet'.")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        # Xavier-normal weights and zero biases, as in the dataset-distillation reference code (Wang et al.'s
        # `--init xavier`, kept by Sucholutsky & Schonlau). The MNIST preset reaches 93.0 % (fixed) / 78.5 % (random)
        # with it against 89.1 % / 75.3 % with PyTorch's default init (docs/benchmarks-mnist.md).
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixel_values, labels=None, **kwargs):
        x = F.max_pool2d(F.relu(self.conv1(pixel_values)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self._output(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))), labels)


class ConvNet(_Learner):
    """The ConvNet of DC/DM/MTT: blocks of conv3x3 - instance norm - ReLU - avg-pool, then a linear layer."""

    def __init__(self, config: LearnerConfig):
        super().__init__(config)
        width = config.width or 128
        # instance norm needs at least 2x2 maps: 3 blocks for 28/32 px, 2 for 8 px
        depth = config.depth or min(3, int(math.log2(config.image_size)) - 1)
        blocks, channels = [], config.num_channels
        for _ in range(depth):
            # GroupNorm with one group per channel is the instance norm DC uses (affine, no running stats).
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.GroupNorm(width, width),
                nn.ReLU(),
                nn.AvgPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        side = config.image_size // 2**depth
        self.classifier = nn.Linear(width * side * side, config.num_labels)
        self.post_init()

    def forward(self, pixel_values, labels=None, **kwargs):
        return self._output(self.features(pixel_values).flatten(1), labels)


class TextCNN(_Learner):
    """Kim's CNN over an embedding sequence: parallel 1-D convolutions, max-over-time pooling, linear."""

    main_input_name = "inputs_embeds"

    def __init__(self, config: LearnerConfig):
        super().__init__(config)
        width = config.width or 100
        # Token embeddings of pretrained models are small (std ~0.05 for MiniLM); normalising each position makes
        # the inner-loop step sizes independent of the embedding model's scale.
        self.norm = nn.LayerNorm(config.hidden_size)
        self.convs = nn.ModuleList(nn.Conv1d(config.hidden_size, width, k) for k in config.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width * len(config.kernel_sizes), config.num_labels)
        self.post_init()

    def forward(self, inputs_embeds, attention_mask=None, labels=None, **kwargs):
        x = self.norm(inputs_embeds)
        if attention_mask is not None:
            x = x * attention_mask.unsqueeze(-1).to(x.dtype)
        x = x.transpose(1, 2)  # [B, D, L]
        pooled = [F.relu(conv(x)).amax(dim=-1) for conv in self.convs]
        return self._output(self.dropout(torch.cat(pooled, dim=-1)), labels)


class TextLSTM(_Learner):
    """A bidirectional LSTM over an embedding sequence, mean-pooled over the attended positions."""

    main_input_name = "inputs_embeds"

    def __init__(self, config: LearnerConfig):
        super().__init__(config)
        width = config.width or 128
        self.norm = nn.LayerNorm(config.hidden_size)  # as in TextCNN: independent of the embedding scale
        self.lstm = nn.LSTM(config.hidden_size, width, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * width, config.num_labels)
        self.post_init()

    def forward(self, inputs_embeds, attention_mask=None, labels=None, **kwargs):
        # cuDNN's LSTM has no double backward, which the unrolled inner loop needs.
        with torch.backends.cudnn.flags(enabled=False):
            hidden, _ = self.lstm(self.norm(inputs_embeds))
        if attention_mask is None:
            pooled = hidden.mean(1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self._output(self.dropout(pooled), labels)


LEARNERS = {"lenet": LeNet, "convnet": ConvNet, "textcnn": TextCNN, "textlstm": TextLSTM}
IMAGE_LEARNERS = ("lenet", "convnet")
TEXT_LEARNERS = ("textcnn", "textlstm")


def build_learner(name: str, num_labels: int, **config_kwargs) -> PreTrainedModel:
    """Build one of hf_distill's learners by name with a fresh random init."""
    if name not in LEARNERS:
        raise ValueError(f"Unknown learner {name!r}: choose one of {', '.join(LEARNERS)}.")
    return LEARNERS[name](LearnerConfig(num_labels=num_labels, **config_kwargs))


def is_pretrained_learner(name: str | None) -> bool:
    """Any learner name that is not one of hf_distill's own is a Hub id or path of a sequence classifier."""
    return name is not None and name not in LEARNERS


def input_modality(learner) -> str:
    """`"image"` or `"text"`: the data a learner (a name, or a model by its `main_input_name`) reads; a name that is
    not one of hf_distill's image learners is a text learner or a pretrained transformer, which reads text."""
    if isinstance(learner, str):
        return "image" if learner in IMAGE_LEARNERS else "text"
    return "image" if getattr(learner, "main_input_name", None) == "pixel_values" else "text"


def check_learner_modality(learner, modality: str) -> None:
    """A one-line error when `learner` (a name or a model) cannot read data of `modality`, raised before anything
    is loaded or trained for it."""
    reads = input_modality(learner)
    if reads == modality:
        return
    name = repr(learner) if isinstance(learner, str) else type(learner).__name__
    if modality == "text":
        raise ValueError(
            f"The learner {name} is for image data and this dataset is text: choose one of "
            f"{', '.join(TEXT_LEARNERS)} or a pretrained transformer."
        )
    images = ", ".join(IMAGE_LEARNERS)
    if not isinstance(learner, str) or learner in TEXT_LEARNERS:
        raise ValueError(f"The learner {name} is for text data and this dataset is images: choose one of {images}.")
    raise ValueError(
        f"Unknown learner {name}: for images choose one of {images} (pretrained transformers are for text)."
    )


def check_image_shape(learner, shape) -> None:
    """A one-line error when one of hf_distill's image learners is built for other images than `shape` [C, H, W]."""
    config = getattr(learner, "config", None)
    if not isinstance(config, LearnerConfig) or input_modality(learner) != "image":
        return
    channels, height, width = shape
    if height != width:
        raise ValueError(f"{type(learner).__name__} takes square images; these are {height}x{width}: resize them.")
    if (config.num_channels, config.image_size) != (channels, height):
        raise ValueError(
            f"The learner {type(learner).__name__} is built for {config.num_channels}x{config.image_size}x"
            f"{config.image_size} images and these are {channels}x{height}x{width}: build it with "
            f"num_channels={channels}, image_size={height}."
        )


def load_pretrained_learner(name: str, label_names: list[str]) -> PreTrainedModel:
    """`AutoModelForSequenceClassification` from `name` with a head for `label_names`, dropout off (p=0)."""
    import inspect

    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            ignore_mismatched_sizes=True,  # a head of another size is replaced; it is re-initialised anyway
            attn_implementation="eager",  # fused attention kernels have no double backward, which the unroll needs
        )
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Unknown learner {name!r}: not one of {', '.join(LEARNERS)}, and not a sequence classifier that "
            f"could be loaded ({str(e).splitlines()[0]})."
        ) from e
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"Learner {name!r} ({type(model).__name__}) does not accept inputs_embeds.")
    for module in model.modules():  # the inner loop is deterministic: no dropout, even in train mode
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def adam_learning_rate(learner: nn.Module) -> float:
    """Adam's default step size for training `learner` on a small set: 1e-3 for hf_distill's own learners, a
    fine-tuning rate (5e-5) for a pretrained transformer, which 1e-3 wrecks."""
    return 1e-3 if isinstance(learner, _Learner) else 5e-5


def head_parameter_names(model: PreTrainedModel) -> list[str]:
    """Parameters outside the pretrained backbone (the classification head), re-initialised per learner."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


def fresh_head(model: PreTrainedModel, seed: int) -> dict[str, torch.Tensor]:
    """New classification-head weights drawn from `seed` (normal with the config's `initializer_range`, zero bias)."""
    gen = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    params = dict(model.named_parameters())
    return {
        n: torch.randn(params[n].shape, generator=gen) * std if params[n].dim() > 1 else torch.zeros_like(params[n])
        for n in head_parameter_names(model)
    }


def trainable_parameters(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The weights an inner step updates: all but the input-embedding matrix, which `inputs_embeds` bypasses."""
    try:
        skip = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        skip = None
    skip = skip.weight if isinstance(skip, nn.Embedding) else None
    return {n: p for n, p in model.named_parameters() if p is not skip}


def checkpointable_layers(model: nn.Module) -> list[nn.Module]:
    """The transformers layers of `model` that activation checkpointing recomputes (none in hf_distill's own)."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


@contextmanager
def activation_checkpointing(model: nn.Module):
    """Within the block, each transformers layer of `model` keeps only its inputs for the backward pass and recomputes
    its activations there, also when the weights are passed functionally (`functional_call`, as in the unroll).

    `transformers`' own checkpointing re-reads the layer's weights from the module when it recomputes, after
    `functional_call` has put the original weights back; here the layer's weights of the moment are inputs of the
    (non-reentrant) checkpoint, so the recomputation uses exactly the weights of the forward pass.
    """
    layers = checkpointable_layers(model)
    for layer in layers:
        layer.forward = partial(_checkpointed_forward, layer, layer.forward)  # shadows the class's forward
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _checkpointed_forward(layer: nn.Module, forward, *args, **kwargs):
    if getattr(layer, "_recomputing", False):  # inside `run` below: the layer itself
        return forward(*args, **kwargs)
    names, weights = zip(*layer.named_parameters())  # within functional_call: the weights passed to it

    def run(*tensors):
        layer._recomputing = True
        try:
            return functional_call(layer, dict(zip(names, tensors[: len(names)])), tensors[len(names) :], kwargs)
        finally:
            layer._recomputing = False

    return checkpoint(run, *weights, *args, use_reentrant=False)
