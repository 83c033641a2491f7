"""``coherence pack new``: a commented skeleton pack a new author fills in."""

from __future__ import annotations

import re
from pathlib import Path

from coherence.errors import PackError
from coherence.packs.loader import load_pack

SCAFFOLD = Path(__file__).parent / "_scaffold"


def new_pack(name: str, dest: Path, *, language: str | None = None) -> Path:
    """Write a skeleton pack ``dest/name`` that loads, with TODOs and comments on every file.

    Args:
        name: the pack name, a locale such as ``ja-JP``.
        dest: the folder to create it in.
        language: language of its text (default: the part of ``name`` before the dash).

    Returns:
        The new pack's folder.
    """
    if not re.fullmatch(r"[a-z]{2,3}-[A-Z]{2}([-.][A-Za-z0-9]+)*", name):
        raise PackError(name, "name", "not a locale-style pack name", "use a name such as ja-JP or pt-BR")
    folder = dest / name
    if folder.exists():
        raise PackError(str(folder), "(folder)", "already exists", "choose another name or folder")
    folder.mkdir(parents=True)
    lang = language or name.split("-")[0]
    for tmpl in sorted(SCAFFOLD.glob("*.yaml.tmpl")):
        text = tmpl.read_text(encoding="utf-8").format(name=name, language=lang)
        (folder / tmpl.name.removesuffix(".tmpl")).write_text(text, encoding="utf-8")
    load_pack(folder)  # the skeleton must load: authors start from a valid pack
    return folder
