"""Per class, what the trusted split of a trust-aware run holds at its end, against the noise that run injected.

    python benchmarks/trusted_classes.py /tmp/hf_distill_benchmarks/mnist-noisy-sym40-real-bound-s5

Reads OUTPUT_DIR's `trust_state.safetensors` (each example's current label and whether it is trusted) and its
`distillation.json` (the source dataset and the `label_noise` record: type, rate, seed, mapping), draws the same noise
again (`hf_distill.noise.noisy_labels`) to recover each example's true class, and prints per class: the examples in
the data, the trusted examples with that label and their precision, the share of the class's true examples that are
trusted with their true label, and the class weight of `trust_class_balance` (`TrustState.class_weights`).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hf_distill.data import find_preset, load_raw
from hf_distill.methods.trust import TrustState
from hf_distill.noise import noisy_labels
from hf_distill.trainer import TRUST_STATE_FILE


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="the output folder of a trust-aware run with injected label noise")
    parser.add_argument("--dataset", help="the real dataset, if not where distillation.json says")
    args = parser.parse_args()
    out = Path(args.output_dir)
    meta = json.loads((out / "distillation.json").read_text())
    noise = meta.get("label_noise")
    if not noise:
        raise SystemExit(f"{out} records no injected label noise: there is no truth to compare the split with.")
    dataset = args.dataset or meta["source_dataset"]
    preset = find_preset(dataset)
    column = preset.label_column if preset is not None else "label"
    given = np.asarray(load_raw(dataset)[meta["config"].get("train_split", "train")][column])
    num_labels = int(given.max()) + 1
    mapping = None if noise["mapping"] is None else {int(k): v for k, v in noise["mapping"].items()}
    noisy = noisy_labels(given, noise["type"], noise["rate"], num_labels, noise["seed"], mapping)
    if (noisy != given).mean().round(5) != round(noise["changed"], 5):
        raise SystemExit("The noise drawn again does not match the run's record: another dataset or noise code?")
    clean = torch.as_tensor(given)
    state = TrustState.from_tensors(load_file(out / TRUST_STATE_FILE))
    labels, trusted = state.labels, state.trusted
    right = trusted & (labels == clean)
    weights = state.class_weights(num_labels)
    precision = (labels[trusted] == clean[trusted]).float().mean()
    print(f"trusted {trusted.float().mean():.1%} of {len(labels)}, precision {precision:.1%}")
    print("class  in data  trusted  precision  true examples trusted  weight")
    for c in range(num_labels):
        mine = trusted & (labels == c)
        precision = (clean[mine] == c).float().mean().item() if mine.any() else float("nan")
        share = (right & (clean == c)).sum().item() / max(1, (clean == c).sum().item())
        counts = f"{(clean == c).sum().item():>7}  {mine.sum().item():>7}"
        print(f"{c:>5}  {counts}  {precision:>9.1%}  {share:>21.1%}  {weights[c]:.2f}")


if __name__ == "__main__":
    main()
