import numpy as np
import pytest
from conftest import shared_data
from datasets import Dataset, load_from_disk
from PIL import Image
from transformers import AutoTokenizer

from hf_distill.data import (
    PRESETS,
    DataArguments,
    find_preset,
    images_to_array,
    load_input_embeddings,
    load_raw,
    load_real_data,
)


def test_every_preset_is_found_by_name_hub_id_and_folder():
    for name, preset in PRESETS.items():
        assert find_preset(name) is preset
        assert find_preset(preset.hub_id) is preset
        assert find_preset(f"../shared/data/{name}/") is preset
    assert find_preset("someone/unknown") is None
    with pytest.raises(ValueError, match="Unknown preset 'nope'"):
        find_preset("x", "nope")


def test_digits_demo_data_is_embedded():
    data = load_real_data(DataArguments())
    assert data.modality == "image" and data.label_names == [str(d) for d in range(10)]
    assert len(data.train) + len(data.eval) == 1797
    assert data.train[0]["pixel_values"].shape == (1, 8, 8)


def test_image_folder_from_save_to_disk(image_dataset_dir):
    data = load_real_data(DataArguments(dataset=image_dataset_dir))
    assert data.train[0]["pixel_values"].shape == (1, 8, 8) and data.label_names[0] == "class_0"
    assert abs(float(data.train[:]["pixel_values"].mean())) < 1e-4  # normalised with the train split's own statistics


def test_text_folder_of_parquet_files(tiny_embedding_model, text_dataset_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(
        DataArguments(dataset=text_dataset_dir, max_length=10, eval_max_samples=30), tokenizer=tokenizer
    )
    assert data.modality == "text" and data.label_names == ["neg", "pos"]
    assert data.train[0]["input_ids"].shape == (10,) and len(data.eval) == 30


def test_validation_split_is_held_out_of_the_training_split():
    whole = load_real_data(DataArguments())
    data = load_real_data(DataArguments(validation_size=100), seed=3)
    assert len(data.validation) == 100 and len(data.train) == len(whole.train) - 100
    assert whole.validation is None and len(data.eval) == len(whole.eval)  # the test split is untouched
    key = lambda ds: {ds[i]["pixel_values"].numpy().tobytes() for i in range(len(ds))}
    assert not key(data.validation) & key(data.train)  # disjoint, and together the whole training split
    assert key(data.validation) | key(data.train) == key(whole.train)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dataset": "./does/not/exist"}, FileNotFoundError, "does not exist"),
        ({"validation_size": 0}, ValueError, "validation_size must be >= 1"),
        ({"max_train_samples": 0}, ValueError, "max_train_samples must be >= 1"),
        ({"eval_max_samples": 0}, ValueError, "eval_max_samples must be >= 1"),
        ({"max_length": 0}, ValueError, "max_length must be >= 1"),
        ({"validation_size": 1437}, ValueError, "validation_size=1437 leaves nothing to distil from"),
        ({"train_split": "nope"}, ValueError, "Split 'nope' is not in"),
        ({"eval_split": "validation"}, ValueError, "Evaluation split 'validation' is not in"),
        ({"label_column": "stars"}, ValueError, "label column 'stars' is not in split 'train'"),
    ],
)
def test_bad_input_names_the_problem(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_real_data(DataArguments(**kwargs))


def test_a_dataset_with_no_evaluation_split_asks_for_one(tmp_path, image_dataset_dir):
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    load_from_disk(image_dataset_dir)["train"].to_parquet(str(only_train / "train.parquet"))
    with pytest.raises(ValueError, match=r"has no 'test' or 'validation' split to evaluate on \(splits: train\)"):
        load_real_data(DataArguments(dataset=str(only_train)))
    assert len(load_real_data(DataArguments(dataset=str(only_train), eval_split="train")).eval) > 0


def test_missing_text_column_and_missing_embedding_model(tiny_embedding_model, text_dataset_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    with pytest.raises(ValueError, match="text column 'review' is not in split 'train'"):
        load_real_data(DataArguments(dataset=text_dataset_dir, text_column="review"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="embedding model"):
        load_real_data(DataArguments(dataset=text_dataset_dir))
    with pytest.raises(ValueError, match="Column 'label' is both the label column and an input column"):
        load_real_data(DataArguments(dataset=text_dataset_dir, text_column="label"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="max_length=2 leaves no room for text: the tokenizer adds 2 special tokens"):
        load_real_data(DataArguments(dataset=text_dataset_dir, max_length=2), tokenizer=tokenizer)
    assert load_real_data(DataArguments(dataset=text_dataset_dir, max_length=3), tokenizer=tokenizer).train[0][
        "input_ids"
    ].shape == (3,)


def test_a_named_text_column_is_read_as_text_where_there_are_images_too(tmp_path, tiny_embedding_model):
    rows = {"image": [[0, 1, 2, 3]] * 6, "caption": ["good movie", "bad movie", "great film"] * 2, "label": [1, 0] * 3}
    for split in ("train", "test"):
        Dataset.from_dict(rows).to_parquet(str(tmp_path / f"{split}.parquet"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(
        DataArguments(dataset=str(tmp_path), text_column="caption", max_length=8), tokenizer=tokenizer
    )
    assert (
        data.modality == "text"
        and data.train[0]["input_ids"][1:3].tolist() == tokenizer("good movie")["input_ids"][1:3]
    )


def test_images_of_different_shapes_are_an_error(tmp_path):
    from PIL import Image

    def write(folder, sizes):
        folder.mkdir()
        for split, size in sizes.items():
            images = [Image.new("L", (s, s)) for s in size]
            Dataset.from_dict({"image": images, "label": [0, 1] * (len(images) // 2)}).to_parquet(
                str(folder / f"{split}.parquet")
            )
        return str(folder)

    mixed = write(tmp_path / "mixed", {"train": [8, 8, 8, 10], "test": [8, 8]})
    with pytest.raises(ValueError, match=r"images of split 'train' differ in shape \(\(8, 8\), \(10, 10\)\)"):
        load_real_data(DataArguments(dataset=mixed))
    apart = write(tmp_path / "apart", {"train": [8, 8], "test": [10, 10]})
    with pytest.raises(ValueError, match=r"split 'test' are \[1, 10, 10\] .* of split 'train' \[1, 8, 8\]"):
        load_real_data(DataArguments(dataset=apart))
    with pytest.raises(ValueError, match="image_mean and image_std have 3 and 3 values for images with 1 channels"):
        load_real_data(DataArguments(dataset="digits"), image_mean=[0.5] * 3, image_std=[0.2] * 3)


def test_evaluating_on_the_training_split_warns(caplog):
    with caplog.at_level("WARNING", logger="hf_distill.data"):
        load_real_data(DataArguments())
        assert "training split" not in caplog.text
        load_real_data(DataArguments(eval_split="train"))
    assert "eval_split is the training split 'train': accuracy will be measured on the data" in caplog.text


def test_empty_folder_is_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="No dataset in"):
        load_raw(str(tmp_path))


def test_real_sst2_loads_with_its_preset():
    path = shared_data("sst2")
    model = shared_data("../models/all-MiniLM-L6-v2")
    data = load_real_data(
        DataArguments(dataset=path, max_length=32, max_train_samples=64, eval_max_samples=64),
        tokenizer=AutoTokenizer.from_pretrained(model),
    )
    assert len(data.train) == 64 and data.eval[0]["input_ids"].shape == (32,)
    assert data.label_names == ["negative", "positive"] or len(data.label_names) == 2


def test_plain_integer_and_string_labels_become_ids(tmp_path, image_dataset_dir):
    from datasets import load_from_disk

    raw = load_from_disk(image_dataset_dir)
    stars = {"train": [1, 5] * 60, "test": [5, 1] * 60}  # 1-based ints, no ClassLabel: ids must be 0 and 1
    for split in ("train", "test"):
        ds = raw[split].remove_columns("label").add_column("stars", stars[split])
        ds.to_parquet(str(tmp_path / f"{split}.parquet"))
    data = load_real_data(DataArguments(dataset=str(tmp_path), label_column="stars"))
    assert data.label_names == ["1", "5"] and sorted(set(data.train[:]["labels"].tolist())) == [0, 1]

    bad = raw["test"].remove_columns("label").add_column("stars", ["1", "3"] * 60)
    bad.to_parquet(str(tmp_path / "test.parquet"))
    raw["train"].remove_columns("label").add_column("stars", ["1", "5"] * 60).to_parquet(
        str(tmp_path / "train.parquet")
    )
    with pytest.raises(ValueError, match="Split 'test' has labels the train split lacks: 3"):
        load_real_data(DataArguments(dataset=str(tmp_path), label_column="stars"))


def test_pixel_arrays_are_read_channels_last_or_first_and_flat_vectors_are_an_error():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(5, 6, 7, 3)).astype(np.uint8)
    expected = hwc.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_array_equal(images_to_array([Image.fromarray(a) for a in hwc]), expected)  # PIL: [H, W, C]
    np.testing.assert_array_equal(images_to_array(hwc.tolist()), expected)  # nested lists, channels last
    np.testing.assert_array_equal(images_to_array(hwc.transpose(0, 3, 1, 2).tolist()), expected)  # channels first
    np.testing.assert_array_equal(images_to_array(hwc[..., 0].tolist()), expected[:, :1])  # [H, W]: grey
    with pytest.raises(ValueError, match=r"split 'train' are arrays of shape \[126\]: give \[H, W\], \[H, W, C\]"):
        images_to_array(hwc.reshape(5, -1).tolist(), "split 'train'")


def test_a_tokenizer_without_a_pad_token_pads_with_its_eos_token(tmp_path, text_dataset_dir):
    # GPT-style tokenizers have no pad token; the padded positions are masked, so the eos token serves
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["<eos>", "good", "bad", "movie", "film", "great", "awful"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>").save_pretrained(tmp_path / "gpt-like")
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    BertModel(config).save_pretrained(tmp_path / "gpt-like")
    embeddings, tokenizer = load_input_embeddings(str(tmp_path / "gpt-like"))
    assert tokenizer.pad_token == "<eos>" and embeddings.shape == (len(words), 8)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    row = data.train[0]  # 8 words
    assert row["input_ids"].shape == (12,) and row["attention_mask"].sum() == 8  # padded, and the padding masked


def test_missing_texts_are_empty_and_missing_labels_are_an_error(tmp_path, tiny_embedding_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    folder = tmp_path / "reviews"
    folder.mkdir()
    test = Dataset.from_dict({"text": ["good movie", "bad film"], "label": [1, 0]})
    test.to_parquet(str(folder / "test.parquet"))
    Dataset.from_dict({"text": ["good movie", None, "bad film"], "label": [1, 0, 0]}).to_parquet(
        str(folder / "train.parquet")
    )
    data = load_real_data(DataArguments(dataset=str(folder), max_length=6), tokenizer=tokenizer)
    assert data.train[1]["attention_mask"].sum() == 2  # [CLS] [SEP]: no text, not the word "None"
    Dataset.from_dict({"text": ["good movie", "movie", "bad film"], "label": [1, None, 0]}).to_parquet(
        str(folder / "train.parquet")
    )
    with pytest.raises(ValueError, match="Split 'train' has 1 rows without a label in column 'label': drop them"):
        load_real_data(DataArguments(dataset=str(folder), max_length=6), tokenizer=tokenizer)
