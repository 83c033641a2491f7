"""Language-aware text matching for heuristic judges: normalisation, morphemes, scripts.

Nothing here is culture-specific data: the cues come from the pack; this module only decides how
to compare them (Korean goes through kiwipiepy's morphological analyser).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

SCRIPTS: dict[str, list[tuple[int, int]]] = {
    "ko": [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)],
    "ja": [(0x3040, 0x30FF), (0x4E00, 0x9FFF)],
    "zh": [(0x4E00, 0x9FFF)],
    "ar": [(0x0600, 0x06FF)],
    "ru": [(0x0400, 0x04FF)],
}
"""Unicode blocks of a language's own script; languages written in Latin script fall back to a-z."""


def norm(text: str) -> str:
    """NFKC, case-folded, with all whitespace removed (Korean spacing varies between writers)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


def contains_any(text: str, cues: list[str]) -> list[str]:
    """The cues found in ``text`` (space- and case-insensitive substring match)."""
    t = norm(text)
    return [c for c in cues if c.strip() and norm(c) in t]


@lru_cache(maxsize=1)
def _kiwi():  # type: ignore[no-untyped-def]
    from kiwipiepy import Kiwi

    return Kiwi()


@lru_cache(maxsize=65536)
def morphemes(text: str, language: str) -> tuple[str, ...]:
    """Content morphemes (lemmas) of ``text``; for Korean via kiwipiepy, otherwise word tokens."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if language == "ko":
        keep = ("NN", "VV", "VA", "XR", "SL", "SN", "SH", "MAG")
        return tuple(t.form for t in _kiwi().tokenize(text) if t.tag.startswith(keep))
    return tuple(re.findall(r"\w+", text))


def contains_any_morph(text: str, cues: list[str], language: str) -> list[str]:
    """Cues whose morpheme sequence occurs contiguously in ``text``'s morphemes (inflection-proof)."""
    hay = morphemes(text, language)
    joined = "\x1f" + "\x1f".join(hay) + "\x1f"
    found = []
    for cue in cues:
        needle = morphemes(cue, language)
        if needle and ("\x1f" + "\x1f".join(needle) + "\x1f") in joined:
            found.append(cue)
    return found


def script_ratio(text: str, language: str) -> float:
    """Share of letters written in the language's own script (1.0 for Latin-script languages).

    Letters are counted after canonical decomposition, so a Hangul syllable block counts as the 2-3 jamo
    letters it is written with, as an English word counts its letters. Counting a block as one letter made
    the Korean half of a code-switched prompt (a Korean request, its English restatement) weigh a third of
    its English half: the offline attacker's own prompts scored 0.23-0.33, on both sides of the judge's 0.25.
    """
    letters = [ch for ch in unicodedata.normalize("NFD", text) if ch.isalpha()]
    if not letters:
        return 0.0
    blocks = SCRIPTS.get(language.split("-")[0])
    if blocks is None:
        return sum(ch.isascii() for ch in letters) / len(letters)
    return sum(any(lo <= ord(ch) <= hi for lo, hi in blocks) for ch in letters) / len(letters)


def distinct_ratio(text: str) -> float:
    """Distinct tokens over tokens: low for degenerate, looping output."""
    tokens = text.split()
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def containment(part: str, whole: str, n: int = 4) -> float:
    """Share of ``part``'s character n-grams that also occur in ``whole`` (copying detection)."""
    a, b = norm(part), norm(whole)
    grams = {a[i:i + n] for i in range(max(0, len(a) - n + 1))}
    if not grams:
        return 0.0
    return sum(g in b for g in grams) / len(grams)


def repetition(text: str, n: int = 10) -> float:
    """1 - distinct character n-grams / n-grams: near 0 for prose, high for looping output."""
    t = norm(text)
    grams = [t[i:i + n] for i in range(max(0, len(t) - n + 1))]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def ngram_overlap(a: str, b: str, n: int = 4) -> float:
    """Jaccard similarity of character n-grams (near-duplicate and copy detection)."""
    def grams(s: str) -> set[str]:
        s = norm(s)
        return {s[i:i + n] for i in range(max(0, len(s) - n + 1))}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb) if ga and gb else 0.0
