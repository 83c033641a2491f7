"""Output paths the tool may write and delete: names are one path component, and ``--overwrite``
deletes only a folder the tool itself created (it holds :data:`MARKER`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from coherence.errors import CoherenceError

MARKER = ".coherence-output"
"""File written in every output folder coherence creates (a run, a training job): what it is."""


def safe_name(value: str, *, what: str, fix: str) -> str:
    """``value`` if it is one plain path component (no separator, not ``.``/``..``, not absolute, not
    empty); else a one-line :class:`CoherenceError` naming ``what`` and the ``fix``."""
    text = str(value)
    if not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\0" in text \
            or Path(text).is_absolute() or text.startswith("~"):
        raise CoherenceError(f"{what} {text!r}: not a plain name (a name is one folder name: no '/', no '..', "
                             f"not absolute) (fix: {fix})")
    return text


def mark(folder: Path, kind: str) -> None:
    """Record that coherence created ``folder`` (as a ``run`` or a ``train`` job)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"created_by": "coherence", "kind": kind}) + "\n", encoding="utf-8")


LEGACY = {"run": ("run.db", "config.yaml"), "train": ("train_config.json",)}
"""What a folder made before the marker existed holds (it counts as created by coherence)."""


def kind_of(folder: Path) -> str | None:
    """What coherence created ``folder`` as, or None if it did not create it."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        pass
    for kind, files in LEGACY.items():
        if all((folder / f).is_file() for f in files):
            return kind
    return None


def check_output(folder: Path, kind: str, *, what: str) -> None:
    """Refuse to write into an existing folder coherence did not create as ``kind`` (unless it is
    empty), or into the current folder or one above it. Nothing is written or deleted here."""
    resolved, here = folder.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise CoherenceError(f"{what} {folder}: is the current folder or one above it (fix: give a new "
                             f"folder, e.g. {what} ./{kind}-out)")
    if resolved.exists() and not resolved.is_dir():
        raise CoherenceError(f"{what} {folder}: exists and is not a folder (fix: give a new folder)")
    if resolved.is_dir() and any(resolved.iterdir()) and kind_of(resolved) != kind:
        raise CoherenceError(f"{what} {folder}: an existing folder coherence did not create as a {kind} output "
                             f"(no {MARKER} in it) (fix: give a new folder, or empty this one yourself)")


def remove_owned(folder: Path, kind: str, *, what: str) -> None:
    """``--overwrite``: delete ``folder`` only if coherence created it as ``kind``."""
    if not folder.exists():
        return
    check_output(folder, kind, what=what)
    if kind_of(folder) != kind:
        return  # an empty folder: nothing to delete
    shutil.rmtree(folder)
