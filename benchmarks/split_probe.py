"""How precise can a small-loss trusted split of noisy text labels be? Trust-aware distillation (issue 5) distils from
the examples a per-class Gaussian mixture on their losses calls trusted; on SST-2 with 40 % symmetric noise its
TextCNN scoring learners trust sentences whose labels are only about 70 % right. This probe asks whether a scorer that
cannot memorise the labels it scores does better: a logistic regression, 5-fold cross-validated (each sentence is
scored by a model that never saw it), on frozen features of the embedding model:

- `input`: the mean of the sentence's input token embeddings (what hf_distill's TextCNN reads);
- `sentence`: the mean of the embedding model's last hidden states (all-MiniLM-L6-v2 is a sentence encoder).

    python benchmarks/split_probe.py --dataset sst2 --rates 0.2,0.4

The noise is hf_distill's own (`load_real_data` with `--label_noise_type symmetric`, seed 42 as the suite rows), and
the split is `hf_distill.methods.trust.small_loss_split` on the cross-validated losses. Prints, per rate, feature
and regularisation strength C: the share of labels right, the out-of-fold accuracy against the clean labels, and the
trusted share and its label precision.
"""

import argparse
import time

import numpy as np
import torch
from run import MINILM, SHARED

from hf_distill import DataArguments, load_real_data
from hf_distill.data import PRESETS, load_input_embeddings
from hf_distill.methods.trust import small_loss_split


@torch.no_grad()
def features(ds, embeddings, encoder, batch_size=128):
    """{'input': [N, H] mean input embeddings, 'sentence': [N, H] mean last hidden states} of the tokenised split."""
    cols = ds.with_format("torch")[:]
    ids, mask = cols["input_ids"], cols["attention_mask"]
    weights = mask.unsqueeze(-1).float()
    out = {"input": (torch.nn.functional.embedding(ids, embeddings) * weights).sum(1) / weights.sum(1)}
    hidden = [
        encoder(input_ids=i, attention_mask=m).last_hidden_state
        for i, m in zip(ids.split(batch_size), mask.split(batch_size))
    ]
    out["sentence"] = (torch.cat(hidden) * weights).sum(1) / weights.sum(1)
    return {k: v.numpy() for k, v in out.items()}


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from transformers import AutoModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sst2", help="a folder under ../shared/data (a text preset)")
    parser.add_argument("--rates", default="0.2,0.4", help="symmetric noise rates, comma-separated")
    parser.add_argument("--C", default="0.1,1", help="inverse regularisation strengths of the regression")
    parser.add_argument("--seed", type=int, default=42, help="the noise seed (hf-distill --seed)")
    args = parser.parse_args()

    start = time.perf_counter()
    embeddings, tokenizer = load_input_embeddings(str(MINILM))
    encoder = AutoModel.from_pretrained(str(MINILM)).eval()
    feats = None
    for rate in map(float, args.rates.split(",")):
        data_args = DataArguments(
            dataset=str(SHARED / "data" / args.dataset),
            max_length=PRESETS[args.dataset].defaults.get("max_length", 128),  # as the suite rows pad
            label_noise_type="symmetric",
            label_noise_rate=rate,
        )
        train = load_real_data(data_args, tokenizer, seed=args.seed).train
        noisy, clean = np.asarray(train["labels"]), np.asarray(train["clean_labels"])
        if feats is None:  # the same sentences at every rate: embed once
            feats = features(train, embeddings, encoder)
            print(f"{len(noisy)} sentences embedded in {time.perf_counter() - start:.0f} s", flush=True)
        for name, x in feats.items():
            for c in map(float, args.C.split(",")):
                model = LogisticRegression(C=c, max_iter=2000)
                probs = cross_val_predict(model, x, noisy, cv=5, method="predict_proba")
                losses = -np.log(probs[np.arange(len(noisy)), noisy] + 1e-12)
                trusted = small_loss_split(losses, noisy, probs.shape[1], seed=args.seed)
                print(
                    f"rate {rate:.0%} {name:8s} C={c:g}: labels right {(noisy == clean).mean():.1%}, out-of-fold "
                    f"accuracy {(probs.argmax(1) == clean).mean():.1%}, trusted {trusted.mean():.1%} at "
                    f"{(noisy[trusted] == clean[trusted]).mean():.1%} precision",
                    flush=True,
                )
    print(f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
