"""The scripts in examples/ run end to end on local data, as their docstrings say, and agree with the presets."""

import json
import runpy
import sys
from pathlib import Path

from hf_distill import PRESETS, DistilledDataset

EXAMPLES = Path(__file__).parents[1] / "examples"


def run_example(name: str, argv: list[str], monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their set to a folder in the working directory
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_distill_images_example_distils_the_embedded_digits(monkeypatch, tmp_path, capsys):
    run_example("distill_images.py", ["--max_steps", "3"], monkeypatch, tmp_path)
    printed = capsys.readouterr().out
    assert "distilled: " in printed and "random real subset: " in printed
    distilled = DistilledDataset.load(tmp_path / "distilled-images")
    assert len(distilled) == 10 and distilled.labels.tolist() == list(range(10))
    assert (tmp_path / "distilled-images" / "preview.png").exists()


def test_distill_text_example_uses_the_text_presets_step_size(
    monkeypatch, tmp_path, capsys, text_dataset_dir, tiny_embedding_model
):
    argv = ["--dataset", text_dataset_dir, "--embedding_model", tiny_embedding_model, "--max_steps", "3"]
    run_example("distill_text.py", argv, monkeypatch, tmp_path)
    assert "eval_accuracy" in capsys.readouterr().out
    folder = tmp_path / "distilled-text"
    assert len(DistilledDataset.load(folder)) == 20 and (folder / "preview.txt").exists()
    # The README's text example and `hf-distill distill` on a text preset learn the sequences at this rate
    config = json.loads((folder / "distillation.json").read_text())["config"]
    assert config["learning_rate"] == PRESETS["sst2"].defaults["learning_rate"]
