"""docs/config.md documents every key the loader accepts, and its examples are valid."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sweeper.config import KNOWN_KEYS, load_config
from sweeper.matrix import combinations_bound, expand_matrix
from sweeper.matrix_parse import parse_matrix

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC, flags=re.S)
AS_OF = datetime(2024, 3, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize("key", sorted(KNOWN_KEYS))
def test_every_known_key_is_documented(key: str) -> None:
    assert f"`{key}`" in DOC, f"docs/config.md does not document `{key}`"


def test_registry_covers_what_the_loader_accepts(tmp_path: Path) -> None:
    """Keys outside the registry are refused, so the registry is the loader's whole surface."""
    sections = {k.split(".")[0] for k in KNOWN_KEYS}
    assert sections == {"sweep", "api", "matrix", "overrides", "run", "retry"}


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_examples_are_valid(index: int, tmp_path: Path) -> None:
    text = BLOCKS[index]
    doc = tomllib.loads(text)
    if "sweep" in doc:
        path = tmp_path / "example.toml"
        path.write_text(text, encoding="utf-8")
        load_config(path)
    elif "matrix" in doc:
        spec = parse_matrix(doc["matrix"], source=Path("docs"), base_dir=ROOT / "configs")
        n = len(list(expand_matrix(spec, dataset=1, as_of=AS_OF)))
        assert n <= combinations_bound(spec, as_of=AS_OF)
    else:  # a single section: load it inside a minimal sweep
        path = tmp_path / "example.toml"
        minimal = '[sweep]\nname = "doc"\ndataset = 1\n[matrix]\nRegion = ["01"]\n'
        minimal += "day = [2024-01-01]\n"
        path.write_text(minimal + text, encoding="utf-8")
        load_config(path)


def test_github_examples_in_docs_give_documented_counts() -> None:
    counts = []
    for text in BLOCKS:
        doc = tomllib.loads(text)
        if "fruit" in doc.get("matrix", {}) or "os" in doc.get("matrix", {}):
            spec = parse_matrix(doc["matrix"], source=Path("docs"), base_dir=ROOT)
            counts.append(len(list(expand_matrix(spec, dataset=1, as_of=AS_OF))))
    assert counts == [6, 9, 4]
