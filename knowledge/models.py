"""Fetch the production embedding model into a local directory: ``python -m knowledge.models var/models``.

Needs the internet (Hugging Face Hub); run by ``make models`` at deployment, never at run time."""
from __future__ import annotations

import sys
from pathlib import Path

PRODUCTION_MODEL = "BAAI/bge-small-zh-v1.5"


def fetch(target_root: Path, repo_id: str = PRODUCTION_MODEL) -> Path:
    from huggingface_hub import snapshot_download

    target = target_root / repo_id.split("/")[-1]
    snapshot_download(repo_id=repo_id, local_dir=str(target))
    return target


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("var/models")
    try:
        path = fetch(root)
    except Exception as exc:  # noqa: BLE001 - any network or hub failure is reported the same way
        print(f"could not fetch {PRODUCTION_MODEL}: {exc}\n"
              "Copy the model directory to the machine by hand, or set KB_EMBEDDING_MODEL to one.", file=sys.stderr)
        return 1
    print(f"{PRODUCTION_MODEL} -> {path}; set KB_EMBEDDING_MODEL={path} (the default) and run `make kb`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
