import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_distill import LearnerConfig, LeNet, TextCNN, build_learner


@pytest.mark.parametrize(
    "name, kwargs, inputs",
    [
        ("lenet", {"image_size": 28}, {"pixel_values": torch.randn(2, 1, 28, 28)}),
        ("lenet", {"image_size": 32, "num_channels": 3}, {"pixel_values": torch.randn(2, 3, 32, 32)}),
        ("convnet", {"image_size": 32, "num_channels": 3, "width": 8}, {"pixel_values": torch.randn(2, 3, 32, 32)}),
        ("textcnn", {"hidden_size": 16}, {"inputs_embeds": torch.randn(2, 9, 16), "attention_mask": torch.ones(2, 9)}),
        (
            "textlstm",
            {"hidden_size": 16, "width": 8},
            {"inputs_embeds": torch.randn(2, 9, 16), "attention_mask": torch.ones(2, 9)},
        ),
    ],
)
def test_learners_classify_and_round_trip(tmp_path, name, kwargs, inputs):
    model = build_learner(name, 5, **kwargs).eval()
    out = model(**inputs, labels=torch.softmax(torch.randn(2, 5), -1))
    assert out.logits.shape == (2, 5) and out.loss.ndim == 0
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(reloaded(**inputs).logits, out.logits)


def test_unknown_learner_and_too_small_lenet():
    with pytest.raises(ValueError, match="Unknown learner 'resnet'"):
        build_learner("resnet", 10)
    with pytest.raises(ValueError, match="at least 28x28"):
        LeNet(LearnerConfig(num_labels=10, image_size=8))


def test_lenet_starts_xavier_normal_with_zero_biases_and_others_with_the_default():
    torch.manual_seed(0)
    lenet = build_learner("lenet", 10)
    lenet.reset_parameters()
    fan_in, fan_out = 400, 120
    assert lenet.fc1.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.05)
    assert all(not m.bias.any() for m in (lenet.conv1, lenet.conv2, lenet.fc1, lenet.fc2, lenet.fc3))
    for other in (build_learner("convnet", 10, image_size=8, width=8), build_learner("textcnn", 2, hidden_size=16)):
        assert other.classifier.bias.abs().sum() > 0  # PyTorch's default draws biases too


def test_plain_trainer_trains_a_learner_on_soft_labels(tmp_path):
    torch.manual_seed(0)
    data = Dataset.from_dict(
        {
            "inputs_embeds": torch.randn(8, 6, 16).tolist(),
            "attention_mask": [[1] * 6] * 8,
            "labels": torch.softmax(torch.randn(8, 2), -1).tolist(),
        }
    ).with_format("torch")
    model = TextCNN(LearnerConfig(num_labels=2, hidden_size=16, width=4))
    before = model.classifier.weight.detach().clone()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    assert not torch.equal(before, model.classifier.weight.detach())
