"""Fine-tune a transformers classifier on a distilled text set with the plain `Trainer`, then classify real text.

python examples/finetune_distilled.py distilled-imdb ../shared/models/all-MiniLM-L6-v2 "A wonderful film." "Dull."
python examples/finetune_distilled.py your-name/imdb-distilled-minilm sentence-transformers/all-MiniLM-L6-v2 "Great!"

DISTILLED is a folder written by `trainer.save_model()` / `hf-distill distill`, or a dataset repo on the Hub. MODEL
must have the input embeddings the set was distilled in (its `embedding_model`, or the learner itself).
"""

import argparse
import os

from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, pipeline

from hf_distill import DistilledDataCollator, DistilledDataset, soft_label_loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("distilled", help="distilled set: a local folder or a Hub dataset id")
    parser.add_argument("model", help="a sequence classifier (or any encoder) id or path")
    parser.add_argument("texts", nargs="+", help="real text to classify afterwards")
    parser.add_argument("--output_dir", default="finetuned-on-distilled")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    cli = parser.parse_args(argv)

    load = DistilledDataset.load if os.path.isdir(cli.distilled) else DistilledDataset.from_hub
    distilled = load(cli.distilled)
    names = distilled.label_names
    model = AutoModelForSequenceClassification.from_pretrained(
        cli.model,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a head of another size is replaced by a fresh one
    )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            cli.output_dir,
            num_train_epochs=cli.epochs,
            learning_rate=cli.learning_rate,
            per_device_train_batch_size=len(distilled),  # the whole set per step, as distillation trained it
            save_strategy="no",
            report_to="none",
        ),
        train_dataset=distilled.to_dataset(),
        data_collator=DistilledDataCollator(model),  # inputs_embeds + attention_mask, soft labels as `labels`
        compute_loss_func=soft_label_loss,  # cross-entropy against the soft labels
        processing_class=AutoTokenizer.from_pretrained(cli.model),
    )
    trainer.train()
    trainer.save_model(cli.output_dir)
    classify = pipeline("text-classification", model=cli.output_dir)  # real text through the tokenizer, as usual
    predictions = classify(cli.texts, truncation=True)  # texts longer than the model takes are cut, not refused
    for text, prediction in zip(cli.texts, predictions):
        print(f"{prediction['label']:>12}  {prediction['score']:.2f}  {text}")
    return predictions


if __name__ == "__main__":
    main()
