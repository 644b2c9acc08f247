"""Short tuning runs: one DistillationTrainer per JSON config, each printing its final accuracy.

    python benchmarks/sweep.py mnist '{"learner_init": "fixed", "max_steps": 2000}' '{"inner_epochs": 1}'
    python benchmarks/sweep.py imdb '{"step_size_init": 0.01, "learning_rate": 0.0003}'

mnist: all 60k/10k images, LeNet, eval every 1,000 steps. imdb: a 5,000-review train subset and a 1,000-review test
subset, TextCNN on all-MiniLM-L6-v2, 20 sequences of 256 tokens (a config's "max_length" picks another length), 3 inner
steps, 300 outer steps. Two eval models each. These are for choosing settings; the figures that count come from
benchmarks/run.py.
"""

import json
import sys
import time

from run import MINILM, SHARED

from hf_distill import DataArguments, DistillationConfig, DistillationTrainer, load_real_data
from hf_distill.data import load_input_embeddings

COMMON = dict(output_dir="/tmp/hf_distill_sweep", save_strategy="no", disable_tqdm=True, num_eval_models=2)
SETUPS = {
    "mnist": dict(learner="lenet", logging_steps=500, eval_strategy="steps", eval_steps=1000, eval_baseline=False),
    "imdb": dict(
        learner="textcnn",
        embedding_model=MINILM,
        synthetic_per_class=10,
        inner_steps=1,
        inner_epochs=3,
        per_device_train_batch_size=64,
        max_steps=300,
        logging_steps=100,
    ),
}


def load(name: str, max_length: int):
    embeddings = tokenizer = None
    if name == "imdb":
        embeddings, tokenizer = load_input_embeddings(MINILM)
        data_args = DataArguments(
            dataset=str(SHARED / "data/imdb"), max_length=max_length, max_train_samples=5000, eval_max_samples=1000
        )
    else:
        data_args = DataArguments(dataset=str(SHARED / "data/mnist"))
    data = load_real_data(data_args, tokenizer=tokenizer, image_mean=[0.1307], image_std=[0.3081])
    return data, embeddings, tokenizer


def main(name: str, specs: list[str]) -> None:
    for spec in specs:
        overrides = json.loads(spec)
        data, embeddings, tokenizer = load(name, overrides.pop("max_length", 256))
        kwargs = {
            **COMMON,
            **SETUPS[name],
            "image_mean": data.image_mean,
            "image_std": data.image_std,
            **overrides,
        }
        trainer = DistillationTrainer(
            args=DistillationConfig(**kwargs),
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            embedding_matrix=embeddings,
        )
        start = time.time()
        trainer.train()
        metrics = trainer.evaluate()
        baseline = metrics.get("eval_baseline_accuracy")
        print("RESULT", spec, round(metrics["eval_accuracy"], 4), "baseline", baseline, f"{time.time() - start:.0f}s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
