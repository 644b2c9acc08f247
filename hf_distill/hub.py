"""Distilled sets on the Hugging Face Hub, as dataset repos.

A push is `datasets.Dataset.push_to_hub` (the parquet data and the card's `configs:` / `dataset_info:`), then one
commit on top of it with hf_distill's files: `distillation.json`, the previews, the fixed init, and the card with
hf_distill's sections updated. The repo then holds exactly the folder `DistilledDataset.save` writes.
"""

import re
import tempfile
from pathlib import Path

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    get_token,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from .card import update_card
from .synthetic import CARD_FILE, DATA_FILE, LEARNER_INIT_FILE, META_FILE, PREVIEW_FILES, DistilledDataset

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
SIDECARS = [META_FILE, LEARNER_INIT_FILE, *PREVIEW_FILES]


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(f"Invalid repo id {repo_id!r}: it must be 'namespace/name' (letters, digits, '-', '_', '.').")
    return repo_id


def check_token(token: str | None) -> str:
    """The token to write with (given, or the one `hf auth login` / `HF_TOKEN` provide), checked with the Hub."""
    token = token or get_token()
    if not token:
        raise ValueError(
            "Pushing to the Hub needs a token with write access: pass token=..., set HF_TOKEN, or run `hf auth login`."
        )
    try:
        HfApi().whoami(token=token)
    except HfHubHTTPError as e:
        raise ValueError(f"The Hub refused the token: {str(e).splitlines()[0]}") from e
    return token


def push_to_hub(
    distilled: DistilledDataset,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
):
    """Publish `distilled` as the dataset repo `repo_id`; returns the `CommitInfo` of the last commit."""
    if len(distilled) == 0:
        raise ValueError("The distilled set is empty: there is nothing to push.")
    check_repo_id(repo_id)
    token = check_token(token)
    api = HfApi(token=token)
    message = commit_message or f"Distilled set: {len(distilled)} synthetic examples"
    data_commit = distilled.to_dataset().push_to_hub(
        repo_id, private=private, token=token, revision=revision, commit_message=message, num_shards=1
    )
    present = set(api.list_repo_files(repo_id, repo_type="dataset", revision=data_commit.oid))
    card = None
    if CARD_FILE in present:
        card_path = hf_hub_download(repo_id, CARD_FILE, repo_type="dataset", revision=data_commit.oid, token=token)
        card = DatasetCard.load(card_path)
    card = update_card(card, distilled, repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        written = distilled.save_sidecars(tmp)
        operations = [CommitOperationAdd(CARD_FILE, str(card).encode())]
        operations += [CommitOperationAdd(name, (Path(tmp) / name).read_bytes()) for name in written]
        operations += [CommitOperationDelete(name) for name in SIDECARS if name in present and name not in written]
        try:
            return api.create_commit(
                repo_id,
                operations,
                commit_message=f"{message}: card and metadata",
                repo_type="dataset",
                revision=revision,
                parent_commit=data_commit.oid,  # fails rather than mix with someone else's push
            )
        except HfHubHTTPError as e:
            raise RuntimeError(
                f"The data of {repo_id} was pushed (commit {data_commit.oid}) but its card and {META_FILE} were not: "
                f"{str(e).splitlines()[0]}. from_hub refuses the repo until the set is pushed again."
            ) from e


def from_hub(
    repo_id: str, *, revision: str | None = None, token: str | None = None, cache_dir: str | None = None
) -> DistilledDataset:
    """Download a distilled set pushed by `push_to_hub` (only its own files; nothing is executed or unpickled)."""
    check_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        info = api.dataset_info(repo_id, revision=revision, token=token)
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"The dataset repo {repo_id} has no revision {revision!r}.") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(
            f"No dataset repo {repo_id} on the Hub ({api.endpoint}), or it is private and no valid token was given."
        ) from e
    files = {s.rfilename for s in info.siblings or []}
    if META_FILE not in files or DATA_FILE not in files:
        raise ValueError(
            f"The dataset repo {repo_id} is not a distilled set (it has no {META_FILE} and {DATA_FILE}); "
            "read it with datasets.load_dataset instead."
        )
    path = snapshot_download(
        repo_id,
        repo_type="dataset",
        revision=info.sha,  # the commit just inspected, even if someone pushes in between
        allow_patterns=[DATA_FILE, *SIDECARS, CARD_FILE],
        token=token,
        cache_dir=cache_dir,
    )
    return DistilledDataset.load(path)
