"""The benchmark suites (benchmarks/suites.py, run.py, report.py): rendering is pure and tested on a fixed results
file; the quick mode of a whole suite runs end to end on ../shared/data when it is there."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import report  # noqa: E402
import suites  # noqa: E402

RESULTS = Path(__file__).parent / "data" / "suite_results.jsonl"


def table_row(markdown: str, row: str) -> list[str]:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| `{row}` |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_suite_rows_have_unique_names():
    for suite in suites.SUITES.values():
        names = suites.row_names(suite)
        assert len(names) == len(set(names)), suite.name
        for name in names:
            assert suites.find_row(name)[0] is suite


def test_render_shows_latest_figure_beside_baselines_and_published():
    md = report.render(report.load(RESULTS))
    cells = table_row(md, "mnist-lenet-1pc-fixed")
    ours, subset, full, share, published, versus = cells[4:10]
    assert ours == "**95.5 ± 0.0 %** (10)"  # the newer of its two records
    assert (subset, full, share, published, versus) == ("44.2 %", "99.0 %", "96.5 %", "96.0 %", "-0.5")
    assert cells[-2] == "2 (spread 0.4)"  # two runs of the row, their means 0.4 points apart
    assert table_row(md, "mnist-lenet-0.5pc-fixed")[4] == "not run"
    assert "--max_steps 9" in md  # a row run with other flags shows its command


def test_device_line_names_the_kernels_and_whether_they_were_portable():
    (record, _) = [r for r in report.load(RESULTS) if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"]
    own = {**record, "cpu_capability": "AVX512"}
    portable = {**record, "cpu_capability": "DEFAULT", "portable_cpu_kernels": True}
    assert f"{record['device']} (AVX512 kernels) × 1 process(es)" in report.render([own])
    assert f"{record['device']} (portable DEFAULT kernels) × 1 process(es)" in report.render([portable])
    identified = {**portable, "cpu_model_id": "GenuineIntel 6/167/1"}  # a generic name can hide two CPU models
    line = f"{record['device']} (GenuineIntel 6/167/1, portable DEFAULT kernels) × 1 process(es)"
    assert line in report.render([identified])


def test_row_figure_prefers_its_own_command_and_runs_count_its_repeats():
    records = report.load(RESULTS)
    first, second = [r for r in records if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"]
    moved = {**second, "command": second["command"] + " --output_dir /tmp/elsewhere"}
    tuned = {**second, "command": second["command"] + " --learning_rate 0.1", "eval_accuracy": 0.5}
    assert table_row(report.render([first, moved]), "mnist-lenet-1pc-fixed")[-2] == "2 (spread 0.4)"
    cells = table_row(report.render([first, second, tuned]), "mnist-lenet-1pc-fixed")
    assert (cells[4], cells[-2]) == ("**95.5 ± 0.0 %** (10)", "2 (spread 0.4)")  # the tuning run is not the figure
    cells = table_row(report.render([tuned]), "mnist-lenet-1pc-fixed")
    assert (cells[4], cells[-2]) == ("**50.0 ± 0.0 %** (10)", "1")  # unless it is the only record


def test_runs_say_the_same_set_only_when_every_repeat_has_its_fingerprint():
    records = report.load(RESULTS)
    first, second = [r for r in records if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"]
    a, b = {**first, "data_sha256": "aa"}, {**second, "data_sha256": "aa", "eval_accuracy": first["eval_accuracy"]}
    assert table_row(report.render([a, b]), "mnist-lenet-1pc-fixed")[-2] == "2 (spread 0.0, the same set)"
    other = {**b, "data_sha256": "bb"}  # the same accuracy from another set is not a repeat to the last bit
    assert table_row(report.render([a, other]), "mnist-lenet-1pc-fixed")[-2] == "2 (spread 0.0)"
    assert table_row(report.render([first, b]), "mnist-lenet-1pc-fixed")[-2] == "2 (spread 0.0)"  # one unknown


def test_a_flag_that_repeats_the_rows_own_is_the_rows_command():
    (first, second) = [
        r for r in report.load(RESULTS) if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"
    ]
    assert ("--full_determinism", "true") == suites.find_row("seed-s1/mnist-lenet-1pc-fixed")[1].flags
    repeated = {**second, "command": second["command"] + " --full_determinism true"}
    other = {**second, "command": second["command"] + " --full_determinism false", "eval_accuracy": 0.5}
    assert table_row(report.render([first, repeated]), "mnist-lenet-1pc-fixed")[-2] == "2 (spread 0.4)"
    cells = table_row(report.render([first, repeated, other]), "mnist-lenet-1pc-fixed")
    assert (cells[4], cells[-2]) == ("**95.5 ± 0.0 %** (10)", "2 (spread 0.4)")  # another value is another command


def test_an_allocator_setting_is_in_the_command_and_not_the_rows_own(monkeypatch):
    import run

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert run.allocator_env() == "MALLOC_MMAP_THRESHOLD_=1048576 "
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert run.allocator_env() == ""
    (first, second) = [
        r for r in report.load(RESULTS) if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"
    ]
    tuned = {**second, "command": "MALLOC_MMAP_THRESHOLD_=1048576 " + second["command"]}
    assert table_row(report.render([first, tuned]), "mnist-lenet-1pc-fixed")[4] == "**95.1 ± 0.0 %** (10)"
    alone = report.render([tuned])  # the row's figure only while it has no plain run, and named under the table
    assert table_row(alone, "mnist-lenet-1pc-fixed")[4] == "**95.5 ± 0.0 %** (10)"
    assert "except `MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/run.py seed-s1/mnist-lenet-1pc-fixed" in alone


def test_a_run_with_another_method_or_start_is_not_the_rows_figure():
    (first, _) = [r for r in report.load(RESULTS) if r.get("row") == "mnist-lenet-1pc-fixed" and r["mode"] == "full"]
    flags = " --distill_method distribution_matching"
    other = {**first, "command": first["command"] + flags, "method": "distribution_matching", "eval_accuracy": 0.5}
    assert table_row(report.render([other]), "mnist-lenet-1pc-fixed")[4] == "not run"
    other = {**first, "command": first["command"] + " --learner_init random", "learner_init": "random"}
    assert table_row(report.render([other]), "mnist-lenet-1pc-fixed")[4] == "not run"
    other = {**first, "command": first["command"] + " --synthetic_init kmeans", "synthetic_init": "kmeans"}
    assert table_row(report.render([other]), "mnist-lenet-1pc-fixed")[4] == "not run"
    assert table_row(report.render([first]), "mnist-lenet-1pc-fixed")[4] == "**95.1 ± 0.0 %** (10)"
    superseded = {**first, "eval_accuracy": 0.5, "superseded": "the code changed what this command measures"}
    assert table_row(report.render([first, superseded]), "mnist-lenet-1pc-fixed")[4] == "**95.1 ± 0.0 %** (10)"


def test_render_keeps_modes_apart():
    records = report.load(RESULTS)
    assert table_row(report.render(records), "trec6-textcnn-1pc-fixed")[4] == "not run"
    assert table_row(report.render(records, mode="quick"), "trec6-textcnn-1pc-fixed")[4].startswith("**41.0")
    assert table_row(report.render(records, mode="quick"), "mnist-lenet-1pc-fixed")[4] == "not run"


def test_render_relative_target_and_noise_columns():
    md = report.render(report.load(RESULTS))
    assert table_row(md, "ag_news-textcnn-30pc-random")[7] == "94.1 % ✓"  # 0.80 / 0.85 ≥ Li & Li's 90 %
    trust = table_row(md, "mnist-lenet-1pc-random-sym40-trust")
    assert trust[4:6] == ["symmetric 40 %, trust-aware", "87.0 %"]


def test_replace_section_touches_only_the_generated_part():
    begin, end = report.MARKERS
    doc = f"# Benchmarks\n\nhand-written\n\n{begin}\nold\n{end}\n\nafter\n"
    new = report.replace_section(doc, "new")
    assert new == f"# Benchmarks\n\nhand-written\n\n{begin}\nnew\n{end}\n\nafter\n"
    assert report.replace_section(new, "new") == new
    assert report.replace_section("# B\n", "x").endswith(f"{begin}\nx\n{end}\n")
    with pytest.raises(ValueError, match="without"):
        report.replace_section(f"{begin}\nold\n", "new")


def test_plot_suite_draws_a_png(tmp_path):
    records = report.load(RESULTS)
    assert report.plot_suite(suites.SUITES["seed-s1"], records, tmp_path / "seed.png")
    assert (tmp_path / "seed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_suite(suites.SUITES["noisy"], records, tmp_path / "noisy.png")
    assert not report.plot_suite(suites.SUITES["images"], records, tmp_path / "images.png")  # nothing to draw
    assert not (tmp_path / "images.png").exists()


def test_run_rejects_an_unknown_row():
    done = subprocess.run(
        [sys.executable, BENCHMARKS / "run.py", "seed-s1/no-such-row"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "suite seed-s1 has no row 'no-such-row'" in done.stderr


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data")
def test_quick_suite_runs_and_renders(tmp_path):
    results, docs = tmp_path / "results.jsonl", tmp_path / "docs"
    run = [sys.executable, BENCHMARKS / "run.py", "seed-s1", "--quick", "--jobs", "2", "--results", results]
    run += ["--output_root", tmp_path / "runs"]
    subprocess.run(run, check=True, capture_output=True)
    records = report.load(results)
    assert {r["row"] for r in records} == {n.partition("/")[2] for n in suites.row_names(suites.SUITES["seed-s1"])}
    distilled = [r for r in records if not r["row"].endswith("-full-data")]
    assert all(len(r["data_sha256"]) == 64 for r in distilled)  # each distilled set's fingerprint, for repeats
    subprocess.run([sys.executable, BENCHMARKS / "report.py", "--mode", "quick", "--results", results, "--docs", docs])
    md = (docs / "benchmarks.md").read_text()
    seed_table = md.split("### `seed-s1`")[1].split("### `text8`")[0]
    rows = len(suites.SUITES["seed-s1"].rows)
    assert "not run" not in seed_table and seed_table.count("(2) |") == rows  # every row, two models each
    assert (docs / "suite-seed-s1-quick.png").stat().st_size > 10_000
    assert (docs / "previews" / "seed-s1-mnist-lenet-1pc-fixed.png").exists()


def test_noisy_series_follow_their_own_datasets_noise():
    noisy = suites.SUITES["noisy"]
    rows = {r.name: r for r in noisy.rows}
    record = {"eval_accuracy": 0.75, "eval_accuracy_std": 0.02, "eval_baseline_accuracy": 0.55}
    clean_only = report._series(noisy, {"sst2-textcnn-10pc-random": [record]})
    assert list(clean_only) == [("sst2", "clean")]  # one point, not one per noise series
    assert "sst2-textcnn-10pc-random-sym40" in rows
    both = report._series(noisy, {"sst2-textcnn-10pc-random": [record], "sst2-textcnn-10pc-random-sym40": [record]})
    # SST-2 has symmetric noise only: no asymmetric series borrowed from MNIST's rows
    assert set(both) == {("sst2", "symmetric", False), ("sst2", "symmetric", True)}
    assert both[("sst2", "symmetric", False)]["x"] == [0.0, 0.4]


def _seed_record(flags: str, accuracy: float, **extra) -> dict:
    command = f"python benchmarks/run.py mnist-random {flags} --output_dir /tmp/out-{accuracy}"
    return {"command": command, "eval_accuracy": accuracy, "eval_accuracy_std": 0.02, **extra}


def test_seeds_pairs_runs_by_seed_and_checks_each_difference():
    import seeds

    noisy, trust = "--label_noise_rate 0.4", "--label_noise_rate 0.4 --trust_aware true"
    records = [
        _seed_record(noisy, 0.74),  # seed 42: no --seed
        _seed_record(f"--seed 1 {noisy}", 0.73),
        _seed_record("--trust_aware true --label_noise_rate 0.4", 0.80),  # the flags in another order
        _seed_record(f"{trust} --seed 1", 0.77, cpu_model_id="GenuineIntel 6/167/1"),
        _seed_record(f"{trust} --seed 1", 0.90),  # a later repeat: counted, not the seed's figure
        _seed_record(f"{trust} --seed 2", 0.99),  # no plain run at seed 2: no difference
        _seed_record(f"{trust} --trust_consistency_weight 1", 0.95),  # another setting
        _seed_record(noisy, 0.10, superseded="older code"),
    ]
    specs = {"plain": f"mnist-random {noisy}", "trust": f"mnist-random {trust}"}
    text = seeds.table(records, specs, ["trust-plain>=5"])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["42"] == "| 42 | 74.00 ± 2.0 | 80.00 ± 2.0 | +6.00 (holds) |"
    assert rows["1"] == "| 1 | 73.00 ± 2.0 | 77.00 ± 2.0 (GenuineIntel 6/167/1), 1 more | +4.00 (not) |"
    assert rows["2"] == "| 2 | — | 99.00 ± 2.0 | — |"
    # mean of +6 and +4, standard error std([6, 4]) / sqrt(2) = 1.0
    summary = "- trust-plain>=5: mean +5.00 ± 1.00 (standard error) over 2 seeds, holds on the mean; holds at 1 of 2"
    assert summary in text


def test_seeds_refuses_a_check_that_names_no_spec():
    import seeds

    with pytest.raises(ValueError, match="'clean', which is not a spec"):
        seeds.table([], {"plain": "mnist-random --seed 1"}, ["plain-clean>=-3"])
    with pytest.raises(ValueError, match="A-B>=T"):
        seeds.parse_check("plain > clean")


def test_per_model_prints_each_learners_accuracy(tmp_path, image_dataset_dir):
    import torch
    from conftest import distilled_set

    from hf_distill import build_learner

    learner = build_learner("convnet", 4, num_channels=1, image_size=8)
    g = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(4, 1, 8, 8, generator=g), torch.eye(4)
    distilled_set(learner, inputs, labels, [f"class_{i}" for i in range(4)]).save(tmp_path / "images")
    script = [sys.executable, BENCHMARKS / "per_model.py"]
    done = subprocess.run(
        [*script, tmp_path / "images", image_dataset_dir, "--models", "3"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    per_model = done.stdout.splitlines()[0].removeprefix("per model: ").split()
    assert len(per_model) == 3 and all(0 <= float(a) <= 1 for a in per_model)
    assert len(set(per_model)) > 1  # three different inits


def test_per_model_last_scores_the_last_set_of_a_run_that_saved_its_moving_average(tmp_path, image_dataset_dir):
    from conftest import quick_config

    from hf_distill import DataArguments, DistillationTrainer, build_learner, load_real_data

    data = load_real_data(DataArguments(dataset=image_dataset_dir))
    for name, decay in (("average", 0.5), ("last", None)):  # the moving average does not change the path
        args = quick_config(
            tmp_path, output_dir=str(tmp_path / name), synthetic_ema_decay=decay, max_steps=4, learning_rate=0.1
        )
        learner = build_learner("convnet", 4, num_channels=1, image_size=data.train[0]["pixel_values"].shape[-1])
        trainer = DistillationTrainer(args=args, train_dataset=data.train, learner=learner)
        trainer.train()
        trainer.save_model()
    script = [sys.executable, BENCHMARKS / "per_model.py"]
    printed = {}
    for name, flags in (("average", []), ("average", ["--last"]), ("last", [])):
        command = [*script, tmp_path / name, image_dataset_dir, "--models", "2", *flags]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        printed[name, bool(flags)] = done.stdout
    assert printed["average", True] == printed["last", False]  # --last scores what the run without it saved
    assert printed["average", True] != printed["average", False]
    trainer.distilled_dataset().save(tmp_path / "bare")  # a dataset folder without the run's state
    done = subprocess.run([*script, tmp_path / "bare", image_dataset_dir, "--last"], capture_output=True)
    assert done.returncode != 0 and b"model.safetensors does not exist" in done.stderr


def test_per_model_scores_a_text_set_through_its_embedding_model(tmp_path, text_dataset_dir, tiny_embedding_model):
    import torch
    from conftest import distilled_set

    from hf_distill import build_learner

    learner = build_learner("textcnn", 2, hidden_size=16)  # the tiny BERT's width
    g = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(4, 12, 16, generator=g), torch.eye(2).repeat(2, 1)
    mask = torch.ones(4, 12, dtype=torch.long)
    text = distilled_set(learner, inputs, labels, ["neg", "pos"], attention_mask=mask, previews=["a b"] * 4)
    text.metadata["embedding_model"] = tiny_embedding_model
    text.save(tmp_path / "text")
    script = [sys.executable, BENCHMARKS / "per_model.py", tmp_path / "text", text_dataset_dir]
    done = subprocess.run([*script, "--models", "2", "--eval_max_samples", "40"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    per_model = done.stdout.splitlines()[0].removeprefix("per model: ").split()
    assert len(per_model) == 2 and all(0 <= float(a) <= 1 for a in per_model)
    assert "test examples: 40" in done.stdout  # the fixed subset, not the whole split of 100
    del text.metadata["embedding_model"]
    text.save(tmp_path / "unembeddable")
    done = subprocess.run([*script[:2], tmp_path / "unembeddable", text_dataset_dir], capture_output=True, text=True)
    assert done.returncode == 1 and "records no embedding_model" in done.stderr


def test_checkpoints_scores_every_checkpoint_in_step_order(tmp_path, image_dataset_dir):
    import torch
    from conftest import distilled_set

    from hf_distill import build_learner

    learner = build_learner("convnet", 4, num_channels=1, image_size=8)
    for step, seed in ((10, 0), (2, 1)):  # written out of order; "checkpoint-10" sorts before "checkpoint-2" as text
        g = torch.Generator().manual_seed(seed)
        inputs = torch.randn(4, 1, 8, 8, generator=g)
        distilled_set(learner, inputs, torch.eye(4), [f"class_{i}" for i in range(4)]).save(
            tmp_path / "run" / f"checkpoint-{step}"
        )
    script = [sys.executable, BENCHMARKS / "checkpoints.py"]
    done = subprocess.run(
        [*script, tmp_path / "run", image_dataset_dir, "--train_examples", "20"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["checkpoint-2", "checkpoint-10"]
    assert all(0 <= float(r[1]) <= 100 and 0 <= float(r[3]) <= 100 for r in rows)  # train images %, test %
    done = subprocess.run([*script, tmp_path, image_dataset_dir], capture_output=True, text=True)
    assert done.returncode == 1 and "has no checkpoint-N folders" in done.stderr


def test_a_resumed_run_times_only_its_own_steps(tmp_path):
    import torch

    results = tmp_path / "results.jsonl"
    run = [sys.executable, BENCHMARKS / "run.py", "digits-demo", "--results", results, "--save_steps", "2"]
    run += ["--num_eval_models", "1", "--eval_baseline", "false", "--logging_steps", "2"]
    subprocess.run([*run, "--max_steps", "2", "--output_dir", tmp_path / "a"], check=True, capture_output=True)
    resume = ["--resume_from_checkpoint", tmp_path / "a" / "checkpoint-2", "--output_dir", tmp_path / "b"]
    subprocess.run([*run, "--max_steps", "6", *resume], check=True, capture_output=True)
    first, resumed = report.load(results)
    assert "resumed_from_step" not in first and resumed["resumed_from_step"] == 2
    assert resumed["outer_steps"] == 6 and first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert resumed["time_per_outer_step_s"] == round(resumed["train_runtime_s"] / 4, 3)  # 4 steps ran, not 6


def test_a_resumed_ceiling_ends_where_an_uninterrupted_one_does(tmp_path):
    from safetensors.torch import load_file

    results = tmp_path / "results.jsonl"
    run = [sys.executable, BENCHMARKS / "run.py", "digits-demo-full-data", "--results", results, "--save_steps", "10"]
    subprocess.run([*run, "--output_dir", tmp_path / "a"], check=True, capture_output=True)
    assert sorted(int(p.name.split("-")[1]) for p in (tmp_path / "a").iterdir()) == [10, 20, 23, 30, 40, 46]
    resume = ["--resume_from_checkpoint", tmp_path / "a" / "checkpoint-20", "--output_dir", tmp_path / "b"]
    subprocess.run([*run, *resume, "--save_total_limit", "1"], check=True, capture_output=True)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["checkpoint-46"]  # mid-epoch 1, across its evaluation
    whole, resumed = report.load(results)
    assert len(whole["eval_full_data_accuracy_by_epoch"]) == 2
    assert resumed["eval_full_data_accuracy_by_epoch"] == whole["eval_full_data_accuracy_by_epoch"]
    a, b = (load_file(tmp_path / d / "checkpoint-46" / "model.safetensors") for d in "ab")
    assert all(a[k].equal(b[k]) for k in a)
    done = subprocess.run([*run, "--resume_from_checkpoint", tmp_path], capture_output=True, text=True)
    assert done.returncode != 0 and "not a ceiling checkpoint" in done.stderr


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="MKL's compatible mode is x86-64's")
def test_kernel_probe_hashes_each_operation_with_the_portable_kernels():
    # the probe compares machines, so its own output must repeat on one; NNPACK (AVX2 CPUs only) must be off
    probe = [sys.executable, str(BENCHMARKS / "kernel_probe.py")]
    runs = [subprocess.run(probe, capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    header, kernels, *lines = runs[0].splitlines()
    assert "kernels DEFAULT, portable True, NNPACK False, MKL_CBWR=COMPATIBLE" in kernels
    hashes = dict(line.rsplit(maxsplit=1) for line in lines)
    assert {"conv2d backward", "conv1d backward", "matmul", "layer_norm backward"} <= set(hashes)
    assert all(len(h) == 12 for h in hashes.values()) and len(set(hashes.values())) == len(hashes)


def test_embedding_only_copy_distils_the_same_set(tmp_path, text_dataset_dir, tiny_embedding_model):
    import json

    from conftest import QUICK_FLAGS
    from embedding_only import embedding_only
    from safetensors import safe_open

    from hf_distill.cli import main

    copy = embedding_only(tiny_embedding_model, tmp_path / "copy")
    with safe_open(str(copy / "model.safetensors"), "pt") as f:
        assert list(f.keys()) == ["embeddings.word_embeddings.weight"]
    sets = {}
    for name, model in (("full", tiny_embedding_model), ("copy", str(copy))):
        argv = ["distill", "--dataset", text_dataset_dir, "--embedding_model", model, "--max_length", "8"]
        assert main([*argv, "--learner", "textcnn", "--output_dir", str(tmp_path / name), *QUICK_FLAGS]) == 0
        sets[name] = json.loads((tmp_path / name / "distillation.json").read_text())["data_sha256"]
    assert sets["full"] == sets["copy"]
    for taken in (copy, copy / "model.safetensors"):  # never writes into a folder that holds something, or a file
        with pytest.raises(FileExistsError, match="not an empty folder"):
            embedding_only(tiny_embedding_model, taken)


def test_eval_protocol_scores_the_set_and_random_subsets_the_same_way(tmp_path, image_dataset_dir):
    import torch
    from conftest import distilled_set

    from hf_distill import build_learner

    learner = build_learner("convnet", 4, num_channels=1, image_size=8)
    g = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(4, 1, 8, 8, generator=g), torch.eye(4)
    distilled_set(learner, inputs, labels, [f"class_{i}" for i in range(4)]).save(tmp_path / "images")
    script = [sys.executable, BENCHMARKS / "eval_protocol.py", tmp_path / "images", image_dataset_dir, "--models", "2"]
    runs = {}
    for protocol in ("adam", "sgd"):
        flags = ["--protocol", protocol, "--steps", "4", "--augmentation", "crop_scale_rotate"]
        done = subprocess.run([*script, *flags], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        lines = dict(line.split(": ", 1) for line in done.stdout.splitlines()[1:3])
        assert set(lines) == {"distilled", "random real"}
        per_model = [float(a) for name in lines for a in lines[name].split("(")[1].rstrip(")").split()]
        assert len(per_model) == 4 and all(0 <= a <= 1 for a in per_model)
        runs[protocol] = lines
    assert runs["adam"] != runs["sgd"]  # the protocol is what changed
    done = subprocess.run([*script, "--augmentation", "crop_twirl"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown operation(s) 'twirl'" in done.stderr


def test_mtt_probe_matches_expert_trajectories_and_scores_the_set(image_dataset_dir):
    flags = "--learner convnet --experts 2 --checkpoint_every 4 --checkpoints 4 --max_start 1 --syn_steps 4"
    flags += " --outer_steps 40 --logging_steps 10 --lr_images 0.05 --eval_models 2 --eval_steps 6"
    done = subprocess.run(
        [sys.executable, BENCHMARKS / "mtt_probe.py", image_dataset_dir, *flags.split()],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    losses = [float(line.split("matching loss ")[1].split(",")[0]) for line in lines if "matching loss" in line]
    # the synthetic images move the students towards the experts (with --lr_images 0: 0.92 throughout)
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    (result,) = [line for line in lines if line.startswith("distilled:")]
    distilled_sgd = float(result.split(": ")[2].split(" ±")[0])
    (real_sgd,) = [
        float(line.split(": ")[1].split(" ±")[0]) for line in lines if line.startswith("random real subsets, sgd")
    ]
    assert result.count("±") == 3 and distilled_sgd > real_sgd


def test_teacher_probe_scores_real_batches_against_the_teachers_softened_targets(tmp_path, image_data, monkeypatch):
    import teacher_probe
    import torch
    from conftest import quick_config

    from hf_distill import DistillationTrainer
    from hf_distill.methods.unrolled import learner_logits

    train, test = image_data
    seen = []

    def spy(self, params, x_syn, mask_syn, soft_labels, step_sizes, x, mask, y, seed, every_row):
        seen.append((x, y))
        return soft_labels.sum() * 0.0 + x_syn.sum() * 0.0  # the targets are what this test looks at

    monkeypatch.setattr(DistillationTrainer, "_unrolled_loss", spy)
    targets = {}
    for temperature in (1.0, 4.0):
        trainer = teacher_probe.teacher_trainer(temperature, epochs=3)(
            args=quick_config(tmp_path, max_steps=1), train_dataset=train, eval_dataset=test
        )
        assert trainer.teacher_metrics["accuracy"] > 0.9  # trained on all 400 toy images; chance is 0.25
        trainer.train()
        x, y = seen[-1]
        assert y.shape == (len(x), 4) and torch.allclose(y.sum(-1), torch.ones(len(x)))
        with torch.no_grad():
            teacher_says = learner_logits(trainer.learner, trainer.teacher, x).argmax(-1)
        assert torch.equal(y.argmax(-1), teacher_says)
        targets[temperature] = y
    entropy = {t: -(y * y.log()).sum(-1).mean().item() for t, y in targets.items()}
    assert entropy[4.0] > entropy[1.0] + 0.1  # a higher temperature softens the targets


def test_teacher_probe_runs_the_cli_and_reports_the_teacher(image_dataset_dir, tmp_path):
    flags = f"--dataset {image_dataset_dir} --max_steps 3 --num_eval_models 2 --eval_train_steps 5 --save_strategy no"
    probe = [sys.executable, BENCHMARKS / "teacher_probe.py", "--teacher_epochs", "1"]
    done = subprocess.run([*probe, *flags.split(), "--output_dir", tmp_path / "out"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["temperature"] == 1.0 and 0.25 < result["eval_teacher_accuracy"] <= 1
    assert {"eval_accuracy", "eval_baseline_accuracy"} <= set(result)
    assert (tmp_path / "out" / "eval_results.json").is_file()
    done = subprocess.run([*probe, "--temperature", "0", *flags.split()], capture_output=True, text=True)
    assert done.returncode == 2 and "--temperature must be > 0" in done.stderr


def test_trusted_classes_compares_a_runs_split_with_the_noise_it_recorded(tmp_path, image_dataset_dir):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from hf_distill.noise import noisy_labels

    clean = np.repeat(np.arange(4), 30)  # the rows of image_dataset_dir's train split
    noisy = noisy_labels(clean, "symmetric", 0.4, 4, seed=3)
    trusted = torch.as_tensor(noisy == clean)
    trusted[np.flatnonzero(clean == 2)[:10]] = False  # a third of class 2's true examples left out
    trusted[np.flatnonzero(noisy != clean)[0]] = True  # and one wrong label trusted
    wrong_class = int(noisy[np.flatnonzero(noisy != clean)[0]])
    save_file({"labels": torch.as_tensor(noisy), "trusted": trusted}, tmp_path / "trust_state.safetensors")
    record = {"type": "symmetric", "rate": 0.4, "seed": 3, "changed": float((noisy != clean).mean()), "mapping": None}
    meta = {"source_dataset": image_dataset_dir, "label_noise": record, "config": {}}
    (tmp_path / "distillation.json").write_text(json.dumps(meta))
    done = subprocess.run(
        [sys.executable, BENCHMARKS / "trusted_classes.py", tmp_path], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = {int(line.split()[0]): line.split() for line in done.stdout.splitlines()[2:]}
    right = {c: int(((noisy == clean) & (clean == c) & trusted.numpy()).sum()) for c in range(4)}
    assert rows[2][4] == f"{right[2] / 30:.1%}"
    assert rows[wrong_class][3] != "100.0%" and rows[(wrong_class + 1) % 4][3] == "100.0%"
    record["seed"] = 4  # another draw than the run's: refused
    (tmp_path / "distillation.json").write_text(json.dumps({**meta, "label_noise": record}))
    done = subprocess.run(
        [sys.executable, BENCHMARKS / "trusted_classes.py", tmp_path], capture_output=True, text=True
    )
    assert done.returncode != 0 and "does not match the run's record" in done.stderr
