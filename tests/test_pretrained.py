"""Distilling for, and fine-tuning, a pretrained transformers classifier (a tiny random BERT built in conftest)."""

import runpy
from pathlib import Path

import pytest
import torch
from conftest import quick_config, text_set
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    default_data_collator,
    pipeline,
)

from hf_distill import (
    DataArguments,
    DistillationConfig,
    DistillationTrainer,
    DistilledDataCollator,
    DistilledDataset,
    load_real_data,
    soft_label_loss,
)
from hf_distill.learners import checkpointable_layers, head_parameter_names

# transformers renamed `gradient_checkpointing` to `activation_checkpointing`; hf_distill honours either
CHECKPOINTING = (
    "activation_checkpointing" if hasattr(TrainingArguments, "activation_checkpointing") else "gradient_checkpointing"
)


@pytest.fixture
def text_data(tiny_embedding_model, text_dataset_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    return load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer), tokenizer


def pretrained_trainer(tmp_path, model, text_data, **kwargs):
    data, tokenizer = text_data
    args = quick_config(
        tmp_path, learner=model, **{"inner_steps": 2, "step_size_init": 0.5, "learning_rate": 0.05, **kwargs}
    )
    return DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer)


def outer_loss(trainer, synthetic, seed=0):
    """The loss on all the real training data of a pretrained learner with a fresh head (drawn from `seed`, or the
    fixed one) after its inner steps on `synthetic`."""
    x, mask, y = trainer._real_inputs(default_data_collator(list(trainer.train_dataset)))
    params = trainer.fixed_init if trainer.fixed_init is not None else trainer._learner_init(seed)
    from hf_distill.methods.unrolled import learner_logits, unroll

    inputs, syn_mask, soft, steps = synthetic()
    params = unroll(trainer.learner, params, inputs, syn_mask, soft, steps, create_graph=False)
    return torch.nn.functional.cross_entropy(learner_logits(trainer.learner, params, x, mask), y).item()


def test_pretrained_learner_distils(tmp_path, tiny_embedding_model, text_data):
    trainer = pretrained_trainer(tmp_path, tiny_embedding_model, text_data, max_steps=3)
    assert trainer.args.learner_init == "pretrained" and trainer.args.embedding_model == tiny_embedding_model
    assert trainer.args.eval_learning_rate == 5e-5  # Adam for eval learners and baseline at a fine-tuning rate
    before = trainer.model.inputs.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.inputs)
    # every inner run starts from the pretrained backbone; only the head is drawn afresh
    a, b = trainer._learner_init(1), trainer._learner_init(2)
    head = {k for k in head_parameter_names(trainer.learner) if a[k].dim() > 1}  # weights; biases start at 0
    assert head and all(torch.equal(a[k], b[k]) != (k in head) for k in a if not k.endswith("bias"))
    trainer.save_model()
    distilled = DistilledDataset.load(tmp_path / "out")
    assert distilled.metadata["learner_id"] == tiny_embedding_model
    assert distilled.train_learner().config.num_labels == 2


@pytest.mark.parametrize("learner_init", ["fixed", "pretrained"])
def test_distillation_lowers_the_real_loss_after_the_inner_steps(
    tmp_path, tiny_pretrained_model, text_dataset_dir, learner_init
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_model)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    # Its token embeddings are ~0.02 in size: the synthetic ones move by a quarter of that per outer step
    trainer = pretrained_trainer(
        tmp_path,
        tiny_pretrained_model,
        (data, tokenizer),
        learner_init=learner_init,
        max_steps=30,
        learning_rate=0.005,
    )
    initial = type(trainer.model)(
        trainer.model.inputs, trainer.model.label_logits, 2, 0.5, trainer.model.attention_mask
    )
    trainer.train()
    heads = range(10**6, 10**6 + 8)  # fresh heads distillation never drew (one for a fixed init)

    def mean_loss(synthetic):
        return sum(outer_loss(trainer, synthetic, seed) for seed in heads) / len(heads)

    assert mean_loss(trainer.model) < mean_loss(initial) - 0.05  # 0.08 to 0.22 lower over 5 backbone seeds


def test_activation_checkpointing_recomputes_the_layers_with_the_same_gradients(
    tmp_path, tiny_embedding_model, text_data
):
    runs = []
    for checkpointing in (False, True):
        trainer = pretrained_trainer(
            tmp_path, tiny_embedding_model, text_data, learner_init="fixed", **{CHECKPOINTING: checkpointing}
        )
        batch = runs[0][0] if runs else next(iter(trainer.get_train_dataloader()))
        calls = []
        hook = checkpointable_layers(trainer.learner)[0].register_forward_hook(lambda *_: calls.append(1))
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        hook.remove()
        runs.append((batch, len(calls), loss.detach(), trainer.model.inputs.grad, trainer.model.log_step_sizes.grad))
    (_, plain_calls, *plain), (_, checkpointed_calls, *checkpointed) = runs
    assert checkpointed_calls > plain_calls  # the layer ran again in the backward pass
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain, checkpointed))
    assert plain[1].abs().sum() > 0
    trainer.train()  # Trainer's own activation_checkpointing_enable() call on the synthetic set is harmless


def test_kmeans_init_needs_one_of_hf_distills_learners(tmp_path, tiny_pretrained_model, text_data):
    with pytest.raises(ValueError, match="synthetic_init='kmeans' clusters the penultimate features"):
        pretrained_trainer(tmp_path, tiny_pretrained_model, text_data, synthetic_init="kmeans")


def test_activation_checkpointing_needs_transformers_layers_and_the_unroll(tmp_path, tiny_embedding_model, text_data):
    data, _ = text_data
    args = quick_config(tmp_path, learner="textcnn", embedding_model=tiny_embedding_model, **{CHECKPOINTING: True})
    with pytest.raises(ValueError, match="transformers learner .* TextCNN has none"):
        DistillationTrainer(args=args, train_dataset=data.train)
    with pytest.raises(ValueError, match="distill_method='gradient_matching' does not use it"):
        pretrained_trainer(
            tmp_path,
            tiny_embedding_model,
            text_data,
            distill_method="gradient_matching",
            **{CHECKPOINTING: True},
        )


def test_plain_trainer_fine_tunes_on_a_distilled_set_then_reads_text(tmp_path, tiny_embedding_model, text_data):
    trainer = pretrained_trainer(tmp_path, tiny_embedding_model, text_data, max_steps=3)
    trainer.train()
    dataset = trainer.distilled_dataset().to_dataset()
    model = AutoModelForSequenceClassification.from_pretrained(tiny_embedding_model, num_labels=2)
    before = {k: v.clone() for k, v in model.named_parameters()}
    args = TrainingArguments(
        str(tmp_path / "ft"), num_train_epochs=3, per_device_train_batch_size=2, report_to="none", learning_rate=1e-2
    )
    ft = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DistilledDataCollator(model),
        compute_loss_func=soft_label_loss,
        processing_class=text_data[1],
    )
    ft.train()
    assert ft.state.log_history[-1]["train_loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())
    ft.save_model(str(tmp_path / "model"))
    classify = pipeline("text-classification", model=str(tmp_path / "model"), device="cpu")
    out = classify(["a great superb movie", "an awful dull film"])
    assert len(out) == 2 and all(o["label"] in ("LABEL_0", "LABEL_1") for o in out)


def test_finetune_example_runs_end_to_end(tmp_path, tiny_embedding_model, text_data):
    trainer = pretrained_trainer(tmp_path, tiny_embedding_model, text_data, max_steps=2)
    trainer.train()
    trainer.save_model()
    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "finetune_distilled.py"))
    argv = [str(tmp_path / "out"), tiny_embedding_model, "a great superb movie", "an awful dull film"]
    predictions = example["main"](argv + ["--output_dir", str(tmp_path / "ft"), "--epochs", "2"])
    assert len(predictions) == 2 and all(p["label"] in trainer.class_names for p in predictions)


def test_soft_label_loss_matches_cross_entropy_and_accumulates():
    logits, labels = torch.randn(4, 3), torch.softmax(torch.randn(4, 3), -1)
    expected = -(labels * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(soft_label_loss({"logits": logits}, labels), expected.mean())
    # Trainer's num_items_in_batch counts B*K label entries over all accumulated micro-batches (here 2 x 4 x 3)
    assert torch.allclose(soft_label_loss({"logits": logits}, labels, num_items_in_batch=24), expected.sum() / 8)


def test_mismatches_name_both_sides(tmp_path, tiny_embedding_model, text_data, image_data):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_embedding_model, num_labels=2)
    narrow = text_set().to_dataset()  # 7-wide sequences; the tiny BERT is 16 wide
    with pytest.raises(ValueError, match="7 wide but BertForSequenceClassification's input embeddings are 16 wide"):
        DistilledDataCollator(model)([narrow[0], narrow[1]])
    three = AutoModelForSequenceClassification.from_pretrained(tiny_embedding_model, num_labels=3)
    with pytest.raises(ValueError, match="2 classes but BertForSequenceClassification has num_labels=3"):
        DistilledDataCollator(three)([narrow[0]])
    from hf_distill import build_learner

    lenet = build_learner("convnet", 2, num_channels=1, image_size=8)
    with pytest.raises(ValueError, match="does not accept inputs_embeds"):
        DistilledDataCollator(lenet)([narrow[0]])
    with pytest.raises(ValueError, match="needs a pretrained learner"):
        DistillationConfig(output_dir=str(tmp_path), learner="textcnn", learner_init="pretrained")
    train, _ = image_data
    with pytest.raises(ValueError, match="pretrained transformers are for text"):
        DistillationTrainer(
            args=quick_config(tmp_path, learner=tiny_embedding_model, embedding_model=None), train_dataset=train
        )


def test_learner_and_config_that_do_not_fit_are_errors(tmp_path, tiny_embedding_model, text_data):
    from hf_distill import build_learner

    data, _ = text_data
    with pytest.raises(ValueError, match="keeps its pretrained weights: use learner_init='pretrained'"):
        pretrained_trainer(tmp_path, tiny_embedding_model, text_data, learner_init="random")
    with pytest.raises(ValueError, match="distribution_matching compares the penultimate embeddings"):
        pretrained_trainer(tmp_path, tiny_embedding_model, text_data, distill_method="distribution_matching")
    args = quick_config(tmp_path, embedding_model=tiny_embedding_model)
    narrow = build_learner("textcnn", 2, hidden_size=8)
    with pytest.raises(ValueError, match="input embeddings are 8 wide but those of the embedding model .* 16 wide"):
        DistillationTrainer(args=args, train_dataset=data.train, learner=narrow)
    with pytest.raises(ValueError, match="Text data needs args.embedding_model"):
        DistillationTrainer(args=quick_config(tmp_path, embedding_model=None), train_dataset=data.train)
    assert not (tmp_path / "out").exists()
