"""Accuracy of each of N fresh learners trained on a saved distilled set (what `evaluate()` averages).

    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/mnist --models 10
    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/imdb   # text: tokenised and embedded as the set was

A mean with a large standard deviation can hide one learner that diverged; this prints every learner's accuracy on
the dataset's test split (or the fixed subset `--eval_max_samples` selects, as `hf-distill distill` does), and the
set's learned step sizes. Learner i starts from the init of seed `--seed + i` and is trained as `evaluate()` trained
the set's learners (`DistilledDataset.train_learner`: learned step sizes, or Adam). Text sets are scored through the
tokenizer and frozen input embeddings of the embedding model they record, at their own sequence length.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from hf_distill import DataArguments, DistilledDataset, load_real_data
from hf_distill.data import load_input_embeddings

BATCH = 256  # real examples per forward pass (text is embedded a batch at a time: IMDB's would not fit at once)


def test_batches(distilled: DistilledDataset, dataset: str, max_samples: int | None):
    """`(batches, labels)`: a function yielding the test split's model inputs (kwargs) batch by batch, and its
    labels; prepared as the set's inputs were (pixels scaled alike, or text through its embedding model)."""
    data_args = DataArguments(dataset=dataset, eval_max_samples=max_samples)
    if distilled.modality == "image":
        mean, std = distilled.metadata.get("image_mean"), distilled.metadata.get("image_std")
        split = load_real_data(data_args, image_mean=mean, image_std=std).eval
        pixels = torch.tensor(np.asarray(split["pixel_values"]), dtype=torch.float32)
        return (lambda: ({"pixel_values": x} for x in pixels.split(BATCH))), np.asarray(split["labels"])
    embedding_model = distilled.metadata.get("embedding_model")
    if embedding_model is None:
        raise SystemExit("This text set records no embedding_model; its real text cannot be embedded.")
    matrix, tokenizer = load_input_embeddings(embedding_model)
    data_args.max_length = distilled.inputs.shape[1]  # the synthetic sequences' length is the real ones'
    split = load_real_data(data_args, tokenizer=tokenizer).eval
    ids, mask = (torch.tensor(np.asarray(split[c])) for c in ("input_ids", "attention_mask"))

    def batches():
        for i, m in zip(ids.split(BATCH), mask.split(BATCH)):
            yield {"inputs_embeds": F.embedding(i, matrix), "attention_mask": m}

    return batches, np.asarray(split["labels"])


def accuracy(learner, batches, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = torch.cat([learner(**inputs).logits.argmax(-1) for inputs in batches()])
    return float((predicted.numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill (or DistilledDataset.save)")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id); its test split is scored")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--eval_max_samples", type=int, default=None, help="score this fixed subset of the split")
    args = parser.parse_args()
    distilled = DistilledDataset.load(args.distilled)
    batches, labels = test_batches(distilled, args.dataset, args.eval_max_samples)
    accuracies = [accuracy(distilled.train_learner(seed=args.seed + i), batches, labels) for i in range(args.models)]
    print("per model:", " ".join(f"{a:.3f}" for a in accuracies))
    print(f"mean {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f}; median {np.median(accuracies):.4f}")
    print(f"test examples: {len(labels)}")
    if distilled.step_sizes is not None:  # large learned step sizes are what makes some inits diverge
        steps = distilled.step_sizes
        print(f"learned step sizes: {steps.min():.3f}-{steps.max():.3f} (mean {steps.mean():.3f})")


if __name__ == "__main__":
    main()
