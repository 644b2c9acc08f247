"""Why IMDB distillation with a random-init TextCNN stays at chance: can a fresh TextCNN learn IMDB at all from a few
full-batch SGD steps on a tiny set (which is all the unrolled method can give it)?

    python benchmarks/imdb_probe.py

Data: ../shared/data/imdb, 4,000 train / 2,000 test reviews (fixed random subsets), 128 tokens, the frozen token
embeddings of ../shared/models/all-MiniLM-L6-v2. Learner: hf_distill's TextCNN, 3 fresh inits. Two tiny sets:

- `real`: 200 random real reviews, hard labels;
- `lexicon`: 20 sequences of 16 tokens drawn from the 50 most positive / most negative vocabulary tokens along the
  direction of a linear probe (logistic regression on mean-pooled embeddings of the 4,000 train reviews), i.e. a
  hand-made "ideal" distilled set of sentiment words.

For each step size and number of steps it prints the test accuracy of each init and the share of test reviews it
calls positive (1.00 or 0.00: one constant class). Also prints the linear probe's own test accuracy, and how much of
the learner's pooled features at init is common to all reviews: |mean feature|² over the mean squared deviation from
it (large: a gradient step moves every review's logits together).

    python benchmarks/imdb_probe.py --pooled_norm

asks whether removing that common part is enough: the same probe with a TextCNN whose pooled features are
LayerNorm-ed per review (no affine) before the classifier.

    python benchmarks/imdb_probe.py --mean_pool

asks the same of mean-over-time pooling (over the convolution windows inside each review) instead of the max.

    python benchmarks/imdb_probe.py --steps 100,300 --sets lexicon

asks whether longer unrolls (as in random truncated back-propagation, Feng et al.) would be enough: the same probe
with 100 and 300 full-batch SGD steps instead of 3, 10 and 30, on the lexicon set only (`--sets real` trains on
the 200 real reviews instead, at about 2 s per step on one CPU thread; `--step_sizes` picks the step sizes).

    python benchmarks/imdb_probe.py --feature_step_scales 10,30

asks whether the filters only need larger steps than the classifier (as per-layer step sizes could learn): every
tensor before the classifier (input LayerNorm and convolutions) takes steps that many times the step size.

    python benchmarks/imdb_probe.py --inner_optimizer adam --step_sizes 0.001,0.003,0.01

asks the same of Adam's steps (`inner_optimizer="adam"`, which scales every weight's step by its own gradient history)
in place of SGD's.
"""

import argparse
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from run import MINILM, SHARED

from hf_distill import DataArguments, build_learner, load_real_data
from hf_distill.data import load_input_embeddings
from hf_distill.learners import TextCNN
from hf_distill.methods import learner_features, learner_logits, unroll
from hf_distill.methods.unrolled import INNER_OPTIMIZERS


class MeanPoolTextCNN(TextCNN):
    """TextCNN with mean-over-time pooling (over the windows inside the review) instead of max-over-time."""

    def forward(self, inputs_embeds, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = inputs_embeds.new_ones(inputs_embeds.shape[:2])
        mask = attention_mask.to(inputs_embeds.dtype)
        x = (self.norm(inputs_embeds) * mask.unsqueeze(-1)).transpose(1, 2)
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            inside = mask[:, : mask.shape[1] - k + 1] * mask[:, k - 1 :]  # windows wholly inside the review
            h = F.relu(conv(x)) * inside.unsqueeze(1)
            pooled.append(h.sum(-1) / inside.sum(-1, keepdim=True).clamp(min=1))
        return self._output(torch.cat(pooled, dim=-1), labels)


class PooledNormTextCNN(TextCNN):
    """TextCNN with its pooled features LayerNorm-ed per review: no feature is common to all reviews."""

    def _output(self, features, labels):
        return super()._output(F.layer_norm(features, features.shape[-1:]), labels)


def tensors(ds, embeddings):
    cols = ds.with_format("torch")[:]
    return F.embedding(cols["input_ids"], embeddings), cols["attention_mask"], cols["labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--pooled_norm", action="store_true", help="LayerNorm the pooled features per review")
    variant.add_argument("--mean_pool", action="store_true", help="mean-over-time pooling instead of max-over-time")
    parser.add_argument("--steps", default="3,10,30", help="numbers of full-batch SGD steps, comma-separated")
    parser.add_argument("--sets", default="real,lexicon", help="which tiny sets to train on, comma-separated")
    parser.add_argument("--step_sizes", default="0.01,0.03,0.1,0.3", help="step sizes, comma-separated")
    parser.add_argument("--inner_optimizer", default="sgd", choices=INNER_OPTIMIZERS, help="what one step is")
    parser.add_argument(
        "--feature_step_scales",
        default="1",
        help="factors on the step size of every tensor before the classifier, comma-separated",
    )
    args = parser.parse_args()
    unknown = set(args.sets.split(",")) - {"real", "lexicon"}
    if unknown:
        parser.error(f"unknown --sets {', '.join(sorted(unknown))}: choose from real, lexicon")
    step_counts = [int(n) for n in args.steps.split(",")]
    step_sizes = [float(lr) for lr in args.step_sizes.split(",")]
    scales = [float(s) for s in args.feature_step_scales.split(",")]
    torch.manual_seed(0)
    embeddings, tokenizer = load_input_embeddings(MINILM)
    data_args = DataArguments(
        dataset=str(SHARED / "data/imdb"), max_length=128, max_train_samples=4000, eval_max_samples=2000
    )
    data = load_real_data(data_args, tokenizer=tokenizer)
    x, mask, y = tensors(data.train, embeddings)
    xt, mask_t, yt = tensors(data.eval, embeddings)

    # A linear probe on mean-pooled, LayerNorm-ed token embeddings: its direction ranks the vocabulary by sentiment.
    def pooled(e, m):
        m = m.unsqueeze(-1).float()
        return (F.layer_norm(e, e.shape[-1:]) * m).sum(1) / m.sum(1)

    w = torch.zeros(e_dim := x.shape[-1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    features = pooled(x, mask)
    for _ in range(300):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(features @ w + b, y.float()).backward()
        opt.step()
    probe = ((pooled(xt, mask_t) @ w + b > 0).long() == yt).float().mean().item()
    print(f"linear probe on mean-pooled embeddings: {probe:.3f}")
    scores = F.layer_norm(embeddings, (e_dim,)) @ w.detach()
    gen = torch.Generator().manual_seed(0)
    words = [scores.topk(50).indices, (-scores).topk(50).indices]  # positive, negative
    lexicon = torch.cat([embeddings[ws[torch.randint(0, 50, (10, 16), generator=gen)]] for ws in words])
    lexicon_labels = torch.tensor([1] * 10 + [0] * 10)

    pick = torch.randperm(len(y), generator=gen)[:200]
    sets = {"real": (x[pick], mask[pick], y[pick]), "lexicon": (lexicon, torch.ones(20, 16), lexicon_labels)}
    sets = {name: sets[name] for name in args.sets.split(",")}
    learner = build_learner("textcnn", 2, hidden_size=e_dim)
    if args.pooled_norm:
        learner = PooledNormTextCNN(learner.config)
    elif args.mean_pool:
        learner = MeanPoolTextCNN(learner.config)
    learner.eval()
    with torch.no_grad():
        pooled = learner_features(learner, dict(learner.named_parameters()), xt[:500], mask_t[:500])
    mean = pooled.mean(0)
    ratio = mean.pow(2).sum() / (pooled - mean).pow(2).sum(1).mean()
    print(f"pooled features at init: common part / spread = {ratio:.1f}")
    names = [k for k, _ in learner.named_parameters()]
    for (name, (sx, smask, sy)), scale, lr, steps in itertools.product(sets.items(), scales, step_sizes, step_counts):
        per_tensor = torch.tensor([lr if k.startswith("classifier.") else lr * scale for k in names])
        accs, positive = [], []
        for seed in range(3):
            torch.manual_seed(100 + seed)
            learner.reset_parameters()
            params = {k: v.detach().clone() for k, v in learner.named_parameters()}
            rates = per_tensor.expand(steps, -1)
            params = unroll(learner, params, sx, smask, sy, rates, create_graph=False, optimizer=args.inner_optimizer)
            with torch.no_grad():
                pred = torch.cat(
                    [
                        learner_logits(learner, params, xt[i : i + 500], mask_t[i : i + 500])
                        for i in range(0, 2000, 500)
                    ]
                ).argmax(-1)
            accs.append((pred == yt).float().mean().item())
            positive.append(pred.float().mean().item())
        each = ", ".join(f"{a:.3f}" for a in accs)
        calls = ", ".join(f"{p:.2f}" for p in positive)
        setting = f"{name:8s} lr {lr:<5}" + (f" x{scale:g} before the classifier" if scale != 1 else "")
        print(f"{setting} steps {steps:4d}  accuracy {np.mean(accs):.3f} ({each})  called positive {calls}")


if __name__ == "__main__":
    main()
