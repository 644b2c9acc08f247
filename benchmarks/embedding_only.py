"""A copy of an embedding model that keeps only what hf_distill reads from it: the input-embedding matrix, the config
and the tokenizer.

    python benchmarks/embedding_only.py ../shared/models/all-MiniLM-L6-v2 /tmp/all-MiniLM-L6-v2

For a machine that takes a limited transfer (the GPU machine of docs/benchmarks.md takes 64 MiB; MiniLM's checkpoint
is 91 MB, its embedding matrix 47 MB). hf_distill reads an embedding model through `load_input_embeddings`, which
keeps the input-embedding matrix and the tokenizer and nothing else, so a text benchmark given the copy in place of
the model distils the same set. Loading the copy with `AutoModel` reports the other weights as missing and
initialises them at random: the copy is for hf_distill, not for encoding sentences. Before it returns, the script
loads the copy back and checks that matrix and vocabulary equal the source's.
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from hf_distill.data import load_input_embeddings


def embedding_only(source: str, destination: Path) -> Path:
    from transformers import AutoModel
    from transformers.utils import logging

    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{destination} exists and is not an empty folder: choose a new folder.")
    matrix, tokenizer = load_input_embeddings(source)
    model = AutoModel.from_pretrained(source)
    weight = model.get_input_embeddings().weight
    (name,) = [n for n, p in model.named_parameters() if p is weight]
    destination.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    save_file({name: matrix.contiguous()}, str(destination / "model.safetensors"), metadata={"format": "pt"})

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # not the report of the weights the copy leaves out
    try:
        copied, copied_tokenizer = load_input_embeddings(str(destination))
    finally:
        logging.set_verbosity(verbosity)
    if not torch.equal(copied, matrix) or copied_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise RuntimeError(f"The copy in {destination} does not give the source's embeddings and vocabulary.")
    return destination


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="Hub id or folder of the embedding model")
    parser.add_argument("destination", type=Path, help="new folder for the copy")
    options = parser.parse_args(argv)
    try:
        path = embedding_only(options.source, options.destination)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(f"wrote {path} ({size:.1f} MiB): the input embeddings, config and tokenizer of {options.source}")


if __name__ == "__main__":
    main()
