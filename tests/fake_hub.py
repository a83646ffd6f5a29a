"""The fake Hub the publish tests share: `HfApi` replaced at the upload boundary only (the `hub`
fixture in conftest.py), and readers of what it received."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import yaml

REPO = "me/demo-snac"
URL = f"https://huggingface.co/datasets/{REPO}"


def uploaded_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("**/*") if p.is_file())


def card(root: Path) -> tuple[dict, str]:
    text = (root / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def load_repo(root: Path, cache: Path) -> datasets.Dataset:
    """`load_dataset` of a folder with no data_files: the card's configs choose them."""
    return datasets.load_dataset(str(root), split="train", cache_dir=str(cache))


def code_block(body: str, heading: str) -> str:
    section = body.split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)
