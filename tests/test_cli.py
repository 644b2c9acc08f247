import json
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUICK_FLAGS as QUICK

from hf_distill import DistillationConfig, DistilledDataset
from hf_distill.cli import main, parse_args
from hf_distill.environment import PORTABLE_CPU_ENV, cpu_model_id, device_name


def test_distill_writes_set_and_eval_results(tmp_path, image_dataset_dir, capsys):
    out = tmp_path / "out"
    assert (
        main(["distill", "--dataset", image_dataset_dir, "--output_dir", str(out), "--learner", "convnet", *QUICK])
        == 0
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_accuracy_std", "eval_num_models", "eval_baseline_accuracy"} <= results.keys()
    assert results["eval_num_models"] == 2
    distilled = DistilledDataset.load(out)
    assert len(distilled) == 4 and distilled.metadata["metrics"]["eval_accuracy"] == results["eval_accuracy"]
    assert "eval_accuracy=" in capsys.readouterr().out


def test_text_distill_from_the_cli(tmp_path, text_dataset_dir, tiny_embedding_model):
    out = tmp_path / "out"
    argv = [
        "distill",
        "--dataset",
        text_dataset_dir,
        "--embedding_model",
        tiny_embedding_model,
        "--max_length",
        "8",
        "--learner",
        "textcnn",
        "--output_dir",
        str(out),
        *QUICK,
    ]
    assert main(argv) == 0
    assert DistilledDataset.load(out).inputs.shape == (2, 8, 16)


def test_presets_supply_defaults_and_flags_override_them():
    data_args, args = parse_args(["--dataset", "../shared/data/imdb"])
    assert (args.learner, args.synthetic_per_class, data_args.max_length) == ("textcnn", 10, 256)
    assert args.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert (args.learning_rate, args.total_inner_steps) == (3e-4, 5)  # sized for MiniLM's embeddings; 5 inner steps
    _, args = parse_args(["--dataset", "imdb", "--synthetic_per_class", "2", "--learning_rate", "0.01"])
    assert (args.synthetic_per_class, args.learning_rate) == (2, 0.01)
    _, args = parse_args(["--dataset", "mnist"])
    assert args.learning_rate == 0.03  # normalised pixels
    _, args = parse_args([])
    assert args.learner == "convnet" and args.output_dir == "distilled"  # the offline digits demo


def test_yaml_config_and_command_line_precedence(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"dataset": "mnist", "inner_steps": 7, "max_steps": 11}))
    data_args, args = parse_args(["--config", str(config), "--max_steps", "12"])
    assert (data_args.dataset, args.inner_steps, args.max_steps, args.learner) == ("mnist", 7, 12, "lenet")


def test_yaml_values_keep_their_types_and_rank_between_preset_and_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    values = {
        "dataset": "mnist",
        "learning_rate": 0.01,  # the MNIST preset says 0.03: the file wins over the preset
        "lr_scheduler_type": "polynomial",
        "lr_scheduler_kwargs": {"power": 7},  # a mapping, not its Python repr
        "eval_max_samples": None,  # null: the field's None
        "eval_baseline": False,
        "image_mean": [0.5],
        "max_steps": 11,
    }
    config.write_text(yaml.safe_dump(values))
    data_args, args = parse_args([f"--config={config}", "--max_steps", "12"])
    assert (args.learning_rate, args.lr_scheduler_kwargs, args.max_steps) == (0.01, {"power": 7}, 12)
    assert (data_args.eval_max_samples, args.eval_baseline, args.image_mean) == (None, False, [0.5])
    assert args.synthetic_per_class == 1 and args.learner == "lenet"  # the preset still fills what the file leaves


def test_learner_init_and_synthetic_init_must_be_one_of_their_choices(tmp_path):
    for name in ("learner_init", "synthetic_init"):
        with pytest.raises(ValueError, match=f"{name} must be one of .* \\(got 'fixd'\\)"):
            DistillationConfig(output_dir=str(tmp_path), **{name: "fixd"})


@pytest.mark.parametrize(
    "text, message",
    [
        ("- max_steps\n- 5\n", "must be a mapping of flag names to values"),
        ("max_steps: 5\nmax_stpes: 6\n", "The config file sets flags that do not exist: max_stpes"),
        ("max_steps: [5\n", "is not valid YAML (line 2, column 1)"),
        ("learner_init: fixd\n", "learner_init must be one of 'random', 'fixed', 'pretrained'"),
    ],
)
def test_bad_config_file_is_one_line_and_leaves_output_dir_alone(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["distill", "--output_dir", str(out), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("hf-distill: error:") and message in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset", "./no/such/folder"], "does not exist"),
        (["--train_split", "nope"], "Split 'nope' is not in"),
        (["--label_column", "stars"], "label column 'stars'"),
        (["--synthetic_per_class", "0"], "synthetic_per_class must be >= 1"),
        (["--step_size_init", "-1"], "step_size_init must be > 0 (got -1.0)"),
        (["--resume_from_checkpoint", "no/such/checkpoint-5"], "'no/such/checkpoint-5' is not a checkpoint folder"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1"),
        (["--learner", "resnet"], "Unknown learner 'resnet'"),
        (["--learner", "textcnn"], "The learner 'textcnn' is for text data and this dataset is images"),
        (["--text_column", "review"], "The text column 'review' is not in split 'train'"),
        (["--text_column", "caption", "--image_column", "image"], "Both text_column='caption' and image_column="),
        (["--config", "missing.yaml"], "Config file 'missing.yaml' could not be read"),
        (["--config"], "--config needs the path of a YAML file"),
        (["--label_noise_type", "symmetric", "--label_noise_rate", "1.0"], "label_noise_rate must be in [0, 1)"),
        (["--label_noise_type", "asymmetric", "--label_noise_rate", "0.2"], "No known asymmetric label-noise mapping"),
        (["--load_best_model_at_end", "true", "--eval_strategy", "steps"], "add --validation_size N"),
    ],
)
def test_bad_input_is_one_line_and_leaves_output_dir_alone(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["distill", "--output_dir", str(out), *flags]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress bars of the data loading may come first
    assert last.startswith("hf-distill: error:") and message in last and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"


def test_an_output_dir_that_cannot_be_a_folder_fails_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "results.txt"
    a_file.write_text("precious")
    monkeypatch.setattr("hf_distill.cli.load_real_data", lambda *a, **k: pytest.fail("the data was read"))
    for output_dir, message in (
        (a_file, f"output_dir '{a_file}' is a file, not a folder"),
        (a_file / "run", f"output_dir '{a_file / 'run'}' cannot be made: '{a_file}' is a file"),
    ):
        assert main(["distill", "--output_dir", str(output_dir)]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == f"hf-distill: error: {message}." and "Traceback" not in err
    assert a_file.read_text() == "precious"


def distill_text(dataset, embedding_model, output_dir) -> int:
    return main(
        ["distill", "--dataset", dataset, "--embedding_model", str(embedding_model), "--output_dir", str(output_dir)]
    )


def test_embedding_model_errors(tmp_path, capsys, text_dataset_dir):
    assert distill_text(text_dataset_dir, tmp_path / "nope", tmp_path / "o") == 1
    assert "Embedding model path" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_image_learner_on_text_is_an_error_before_anything_is_written(
    tmp_path, capsys, text_dataset_dir, tiny_embedding_model
):
    out = tmp_path / "o"
    flags = ["--learner", "lenet", "--output_dir", str(out)]
    assert main(["distill", "--dataset", text_dataset_dir, "--embedding_model", tiny_embedding_model, *flags]) == 1
    err = capsys.readouterr().err
    assert "The learner 'lenet' is for image data and this dataset is text" in err and "Traceback" not in err
    assert not out.exists()


def test_embedding_model_without_input_embeddings(tmp_path, capsys, text_dataset_dir, tiny_embedding_model):
    import shutil

    from transformers import ViTConfig, ViTModel

    path = tmp_path / "vit"
    ViTModel(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=8,
            patch_size=4,
        )
    ).save_pretrained(path)
    for src in Path(tiny_embedding_model).iterdir():  # a tokenizer, but a model without token embeddings
        if src.name not in ("config.json", "model.safetensors"):
            shutil.copy(src, path / src.name)
    assert distill_text(text_dataset_dir, path, tmp_path / "o") == 1
    assert "has no input-embedding matrix" in capsys.readouterr().err


def test_same_seed_gives_the_same_figures_in_another_process(tmp_path, image_dataset_dir):
    # A benchmark row run twice must give the same numbers: nothing may hang on per-process state such as Python's
    # salted string hashing, here with label noise and trust rounds, whose seeds are derived from hashes too.
    flags = [
        *("--learner", "convnet", "--seed", "5", "--trust_aware", "true", "--trust_interval", "2"),
        *("--label_noise_type", "symmetric", "--label_noise_rate", "0.2", *QUICK),
    ]
    runs = {}
    for hash_seed in ("1", "2"):
        out = tmp_path / f"hash{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        argv = [sys.executable, "-m", "hf_distill", "distill", "--dataset", image_dataset_dir, "--output_dir", out]
        done = subprocess.run([*argv, *flags], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[hash_seed] = json.loads((out / "eval_results.json").read_text()), (out / "model.safetensors").read_bytes()
    (metrics, weights), (metrics_again, weights_again) = runs.values()
    assert metrics["eval_trust_trusted"] > 0  # trust rounds ran

    def figures(m):  # all but the timings
        return {k: v for k, v in m.items() if not k.endswith("seconds")}

    assert figures(metrics) == figures(metrics_again)
    assert weights == weights_again
    # what the bit-for-bit promise depends on beyond the seed is recorded with the set and named on its card
    environment = json.loads((tmp_path / "hash1" / "distillation.json").read_text())["environment"]
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["device_name"] == device_name() != ""  # the CPU model: another one rounds differently
    card = (tmp_path / "hash1" / "README.md").read_text()
    # a generic model name ("Intel(R) Xeon(R) Processor") can hide CPU models: family/model/stepping tell them apart
    assert environment["cpu_model_id"] == cpu_model_id()
    if sys.platform == "linux":
        assert re.fullmatch(r"\S+ \d+/\d+/\d+", environment["cpu_model_id"])
    named = ", ".join(filter(None, (environment["device_name"], environment["cpu_model_id"])))
    assert f"on cpu ({named})" in card
    assert f"{environment['torch_threads']} torch thread(s), CPU kernels {environment['cpu_capability']}" in card
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a key the loader does not know would warn and be dropped
        reloaded = DistilledDataset.load(tmp_path / "hash1")
    assert reloaded.metadata["environment"] == environment  # kept through load, so a re-save or push keeps it


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="MKL's compatible mode is x86-64's")
def test_full_determinism_gives_the_same_set_whatever_the_kernels_the_cpu_offers(tmp_path, image_dataset_dir):
    # --full_determinism switches to kernels meant to round alike on every x86-64 CPU; another CPU is simulated here by
    # asking torch and MKL for other instruction sets, which without it give other rounding (docs/method.md)
    flags = ["--learner", "convnet", "--learner_init", "fixed", "--full_determinism", "true", *QUICK]
    sets = []
    for name, kernels in (("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}), ("own", {})):
        out = tmp_path / name
        env = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_ENV} | kernels
        argv = [sys.executable, "-m", "hf_distill", "distill", "--dataset", image_dataset_dir, "--output_dir", out]
        done = subprocess.run([*argv, *flags], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "full_determinism: torch's CPU kernels were fixed" not in done.stderr
        sets.append((out / "model.safetensors").read_bytes())
        environment = json.loads((out / "distillation.json").read_text())["environment"]
        assert environment["portable_cpu_kernels"] is True and environment["cpu_capability"] == "DEFAULT"
        assert "portable (`full_determinism=True`" in (out / "README.md").read_text()
    assert sets[0] == sets[1]
