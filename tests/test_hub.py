"""Push and pull distilled sets through the real huggingface_hub / datasets clients, against tests/hub_server.py."""

import json
import urllib.error
import urllib.request

import pytest
import torch
from conftest import distilled_set, image_set, quick_config, text_set
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, HfApi

from hf_distill import DistillationTrainer, DistilledDataset, build_learner
from hf_distill.cli import main
from hf_distill.evaluation import train_on_set
from hf_distill.learners import soft_cross_entropy
from hf_distill.methods.unrolled import learner_logits
from hf_distill.synthetic import META_FILE

ALICE = "hf_alice"


def assert_same_set(a: DistilledDataset, b: DistilledDataset):
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.soft_labels, b.soft_labels)
    assert torch.equal(a.step_sizes, b.step_sizes) and a.label_names == b.label_names
    assert json.loads(json.dumps(a.metadata))["config"] == b.metadata["config"]
    if a.attention_mask is not None:
        assert torch.equal(a.attention_mask, b.attention_mask) and a.previews == b.previews
    if a.learner_init is not None:
        assert all(torch.equal(v, b.learner_init[k]) for k, v in a.learner_init.items())


@pytest.mark.parametrize("make", [image_set, text_set])
def test_push_then_pull_is_bit_equal_and_fine_tunes(hub, make):
    distilled, repo_id = make(), f"alice/roundtrip-{make.__name__}"
    commit = distilled.push_to_hub(repo_id, token=ALICE)
    assert commit.oid == hub.repos[("dataset", repo_id)].branches["main"]
    assert {"data/train-00000-of-00001.parquet", META_FILE, "README.md"} <= set(hub.files(repo_id))
    assert_same_set(distilled, DistilledDataset.from_hub(repo_id))
    # ... and to `datasets` it is a normal dataset, whose tensors train a learner
    dataset = load_dataset(repo_id, split="train")
    assert dataset.features["label"].names == distilled.label_names
    data = dataset.with_format("torch")[:]
    x = data["pixel_values" if distilled.modality == "image" else "inputs_embeds"]
    mask = None if distilled.modality == "image" else data["attention_mask"].long()
    assert torch.equal(x, distilled.inputs)
    learner = distilled.train_learner(protocol="adam", steps=0)  # the recorded learner, untrained
    params = {k: v.detach() for k, v in learner.named_parameters()}
    loss = lambda p: soft_cross_entropy(learner_logits(learner, p, x, mask), data["labels"]).item()
    assert loss(train_on_set(learner, params, x, mask, data["labels"], steps=30, lr=1e-2)) < loss(params)


def test_card_describes_the_set_and_keeps_datasets_yaml(hub):
    text_set().push_to_hub("alice/card", token=ALICE)
    card = DatasetCard(hub.files("alice/card")["README.md"].decode())
    assert {"dataset-distillation", "hf_distill", "synthetic", "text-classification"} <= set(card.data.tags)
    assert card.data.configs and card.data.dataset_info  # what datasets wrote is still there
    for expected in ("90.0 ± 1.0 %", "50.0 %", "`tiny`", "a b c d e", 'from_hub("alice/card")', "sucholutsky2021"):
        assert expected in card.text


@pytest.mark.parametrize("modality", ["image", "text"])
def test_the_cards_code_runs(hub, tiny_embedding_model, modality):
    distilled = image_set() if modality == "image" else text_set()
    if modality == "text":  # sequences in the tiny BERT's embedding space, for a TextCNN of its width
        distilled = distilled_set(
            build_learner("textcnn", 2, hidden_size=16),
            torch.randn(4, 8, 16),
            torch.softmax(torch.randn(4, 2), -1),
            ["neg", "pos"],
            attention_mask=torch.ones(4, 8, dtype=torch.long),
            metadata={"embedding_model": tiny_embedding_model},
        )
    distilled.push_to_hub(f"alice/snippet-{modality}", token=ALICE)
    card = hub.files(f"alice/snippet-{modality}")["README.md"].decode()
    code = card.split("```python\n")[1].split("```")[0]
    scope = {"images": torch.rand(3, *distilled.inputs.shape[1:])}
    exec(code, scope)
    assert scope["logits"].shape == (3 if modality == "image" else 1, len(distilled.label_names))


def test_second_push_keeps_user_sections_and_updates_results(hub):
    distilled = image_set()
    first = distilled.push_to_hub("alice/edited", token=ALICE)
    card = DatasetCard(hub.files("alice/edited")["README.md"].decode())
    card.text = (
        card.text.replace("## Results", "A note the owner wrote.\n\n## Results") + "\n## Owner's notes\n\nKeep me.\n"
    )
    card.data.license = "mit"
    HfApi(token=ALICE).upload_file(
        path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id="alice/edited", repo_type="dataset"
    )
    distilled.metadata["metrics"] = {"eval_accuracy": 0.95, "eval_accuracy_std": 0.02, "eval_baseline_accuracy": 0.6}
    distilled.push_to_hub("alice/edited", token=ALICE)
    text = hub.files("alice/edited")["README.md"].decode()
    assert "A note the owner wrote." in text and "## Owner's notes\n\nKeep me." in text
    assert "95.0 ± 2.0 %" in text and "90.0 ± 1.0 %" not in text
    assert DatasetCard(text).data.license == "mit" and text.count("## Results") == 1
    assert DistilledDataset.from_hub("alice/edited").metadata["metrics"]["eval_accuracy"] == 0.95
    assert DistilledDataset.from_hub("alice/edited", revision=first.oid).metadata["metrics"]["eval_accuracy"] == 0.9


def test_push_errors_come_before_anything_is_written(hub, tmp_path):
    with pytest.raises(ValueError, match="needs a token"):
        image_set().push_to_hub("alice/no-token")
    with pytest.raises(ValueError, match="refused the token"):
        image_set().push_to_hub("alice/bad-token", token="hf_wrong")
    for bad in ("no-namespace", "a/b/c", "alice/bad name"):
        with pytest.raises(ValueError, match="Invalid repo id"):
            image_set().push_to_hub(bad, token=ALICE)
    empty = image_set()
    empty.inputs, empty.soft_labels = empty.inputs[:0], empty.soft_labels[:0]
    with pytest.raises(ValueError, match="empty"):
        empty.push_to_hub("alice/empty", token=ALICE)
    assert not any(repo_id in ("alice/no-token", "alice/bad-token", "alice/empty") for _, repo_id in hub.repos)


def _post_status(url: str, body: dict, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_refuses_what_the_hub_refuses(hub):
    create = f"{hub.url}/api/repos/create"
    body = {"name": "x", "organization": "alice", "type": "dataset"}
    assert _post_status(create, body) == 401  # no token
    assert _post_status(create, {"name": "x", "type": "dataset"}, ALICE) == 400  # not namespace/name
    assert _post_status(create, body, "hf_bob") == 403  # someone else's namespace


def test_pull_errors_name_the_problem(hub):
    with pytest.raises(FileNotFoundError, match="No dataset repo alice/missing"):
        DistilledDataset.from_hub("alice/missing")
    image_set().push_to_hub("alice/private", token=ALICE, private=True)
    with pytest.raises(FileNotFoundError, match="private and no valid token"):
        DistilledDataset.from_hub("alice/private")
    with pytest.raises(FileNotFoundError, match="private and no valid token"):
        DistilledDataset.from_hub("alice/private", token="hf_bob")
    assert len(DistilledDataset.from_hub("alice/private", token=ALICE)) == 6
    with pytest.raises(FileNotFoundError, match="no revision 'v9'"):
        DistilledDataset.from_hub("alice/private", token=ALICE, revision="v9")
    Dataset.from_dict({"text": ["hi"], "label": [0]}).push_to_hub("alice/plain", token=ALICE)
    with pytest.raises(ValueError, match="not a distilled set"):
        DistilledDataset.from_hub("alice/plain")


def test_pull_refuses_a_newer_format_and_a_half_finished_push(hub):
    image_set().push_to_hub("alice/versions", token=ALICE)
    api, meta = HfApi(token=ALICE), json.loads(hub.files("alice/versions")[META_FILE])
    upload = dict(path_in_repo=META_FILE, repo_id="alice/versions", repo_type="dataset")
    api.upload_file(path_or_fileobj=json.dumps({**meta, "format_version": "2.0"}).encode(), **upload)
    with pytest.raises(ValueError, match="format 2.0, which this hf_distill"):
        DistilledDataset.from_hub("alice/versions")
    api.upload_file(path_or_fileobj=json.dumps({**meta, "data_sha256": "0" * 64}).encode(), **upload)
    with pytest.raises(ValueError, match="does not match distillation.json"):
        DistilledDataset.from_hub("alice/versions")


def test_cli_push_and_distill_with_push_to_hub(hub, tmp_path, image_dataset_dir, capsys):
    image_set().save(tmp_path / "saved")
    assert main(["push", str(tmp_path / "saved"), "alice/from-cli", "--token", ALICE]) == 0
    assert "alice/from-cli" in capsys.readouterr().out
    assert_same_set(image_set(), DistilledDataset.from_hub("alice/from-cli"))
    assert main(["push", str(tmp_path / "missing"), "alice/x", "--token", ALICE]) == 1
    assert "does not exist" in capsys.readouterr().err
    flags = ["--dataset", image_dataset_dir, "--max_steps", "2", "--num_eval_models", "1", "--inner_steps", "2"]
    flags += ["--save_strategy", "no", "--report_to", "none", "--push_to_hub", "--hub_model_id", "alice/cli-run"]
    out = tmp_path / "run"
    assert main(["distill", *flags, "--output_dir", str(out), "--hub_token", "hf_wrong"]) == 1
    assert "refused the token" in capsys.readouterr().err and not out.exists()
    assert main(["distill", *flags, "--output_dir", str(out), "--hub_token", ALICE]) == 0
    pulled = DistilledDataset.from_hub("alice/cli-run")
    assert torch.equal(pulled.inputs, DistilledDataset.load(out).inputs)
    assert "eval_accuracy" in pulled.metadata["metrics"]


def test_trainer_push_to_hub_names_the_repo_after_output_dir(hub, tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, output_dir=str(tmp_path / "toy-distilled"), hub_token=ALICE, max_steps=1)
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test)
    trainer.train()
    commit = trainer.push_to_hub()
    assert "alice/toy-distilled" in commit.commit_url
    assert torch.equal(DistilledDataset.from_hub("alice/toy-distilled").inputs, trainer.distilled_dataset().inputs)


@pytest.mark.parametrize("strategy", ["every_save", "end"])
def test_trainer_pushes_the_set_of_every_checkpoint(hub, tmp_path, image_data, strategy):
    train, test = image_data
    repo_id = f"alice/every-save-{strategy.replace('_', '-')}"
    args = quick_config(
        tmp_path,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_token=ALICE,
        hub_strategy=strategy,
        hub_always_push=True,  # every save, even one made while the previous push runs
    )
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test)
    trainer.train()  # returns once the checkpoints' pushes are done, as Trainer's own
    commits = len(hub.repos[("dataset", repo_id)].commits)  # creating the repo is the first
    if strategy == "end":
        assert commits == 1
        return
    assert commits == 1 + 2 * 2  # two saves, two commits per push (data, then card and metadata)
    last = DistilledDataset.load(tmp_path / "out" / "checkpoint-4")
    assert_same_set(last, DistilledDataset.from_hub(repo_id))
    trainer.push_to_hub()  # the final push lands on top of them
    assert len(hub.repos[("dataset", repo_id)].commits) == commits + 2


def test_hub_strategies_that_push_resume_state_are_refused(tmp_path):
    with pytest.raises(ValueError, match="hub_strategy='checkpoint' pushes a model's resume state"):
        quick_config(tmp_path, push_to_hub=True, hub_strategy="checkpoint")
    quick_config(tmp_path, hub_strategy="checkpoint")  # without push_to_hub it means nothing
