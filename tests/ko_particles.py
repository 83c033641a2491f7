"""Checks Korean particles after filled slots, independently of the renderer (own coda table) and with
kiwipiepy reading the particle; also flags a word repeated across a slot boundary.

Usable on its own, on what the pipeline actually wrote:

    python tests/ko_particles.py eval/eval_prompts.jsonl      # coherence pack export-eval output
    python tests/ko_particles.py runs/<id>/run.db             # a run's seeds (read through Store)
    python tests/ko_particles.py runs/<id>/run.db PACK_DIR    # ... against another version of the pack
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache

from coherence.packs.loader import Pack, load_pack
from coherence.packs.schema import SLOT_RE

DIGIT_CODA = {"0": "ㅇ", "1": "ㄹ", "2": "", "3": "ㅁ", "4": "", "5": "", "6": "ㄱ", "7": "ㄹ", "8": "ㄹ", "9": ""}
CODAS = ["", "ㄱ", "ㄲ", "ㄳ", "ㄴ", "ㄵ", "ㄶ", "ㄷ", "ㄹ", "ㄺ", "ㄻ", "ㄼ", "ㄽ", "ㄾ", "ㄿ", "ㅀ", "ㅁ", "ㅂ", "ㅄ",
         "ㅅ", "ㅆ", "ㅇ", "ㅈ", "ㅊ", "ㅋ", "ㅌ", "ㅍ", "ㅎ"]
# particle -> (form after a consonant, form after a vowel)
PAIRS = {"은": ("은", "는"), "는": ("은", "는"), "이": ("이", "가"), "가": ("이", "가"), "을": ("을", "를"),
         "를": ("을", "를"), "과": ("과", "와"), "와": ("과", "와"), "이나": ("이나", "나"), "나": ("이나", "나"),
         "이랑": ("이랑", "랑"), "랑": ("이랑", "랑"), "으로": ("으로", "로"), "로": ("으로", "로")}
AFTER_SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}(\(으\)로|\(이\)나|\(이\)랑|\(을\)를|\(은\)는|\(이\)가|\(과\)와|"
                        r"으로|이랑|이나|로|랑|나|을|를|은|는|이|가|과|와)(?!\w)")


@lru_cache(maxsize=1)
def kiwi():  # type: ignore[no-untyped-def]
    from kiwipiepy import Kiwi

    return Kiwi()


def coda(word: str, readings: dict[str, str]) -> str | None:
    """Final consonant of how ``word`` is read ('' after a vowel); None when it cannot be told."""
    word = re.sub(r"\([^)]*\)", "", readings.get(word, word)).strip()
    last = word[-1]
    if "\uac00" <= last <= "\ud7a3":
        return CODAS[(ord(last) - 0xAC00) % 28]
    if last.isdigit():
        return DIGIT_CODA[last]
    return None


def expected(word: str, particle: str, readings: dict[str, str]) -> str | None:
    after_consonant, after_vowel = PAIRS[particle]
    c = coda(word, readings)
    if c is None:
        return None
    if particle in ("으로", "로"):
        return after_vowel if c in ("", "ㄹ") else after_consonant
    return after_consonant if c else after_vowel


def problems(template: str, fill: dict[str, str], text: str, readings: dict[str, str]) -> list[str]:
    """Particle and repeated-word problems of ``text``, the filling of ``template`` with ``fill``."""
    out: list[str] = []
    if "{" in text or re.search(r"\((은|는|이|가|을|를|과|와|으|이)\)", text):
        out.append(f"{text!r}: unresolved slot or particle notation")
    tokens = kiwi().tokenize(text)
    cursor = 0
    for m in SLOT_RE.finditer(template):
        value = fill[m.group(1)]
        at = text.find(value, cursor)
        if at < 0:
            out.append(f"{text!r}: value {value!r} not found")
            continue
        end = cursor = at + len(value)
        if AFTER_SLOT.match(template, m.start()):
            written = text[end:end + 2] if text[end:end + 2] in PAIRS else text[end:end + 1]
            want = expected(value, written, readings) if written in PAIRS else None
            if written not in PAIRS:
                out.append(f"{text!r}: no particle after {value!r}")
            elif want is None:
                out.append(f"{text!r}: cannot read {value!r} (add it to templates.readings)")
            elif written != want:
                out.append(f"{text!r}: {value}{written} should be {value}{want}")
            elif not any(t.start == end and t.tag.startswith("J") for t in tokens):
                out.append(f"{text!r}: kiwipiepy does not read {written!r} after {value!r} as a particle")
        words = value.split()
        before = template[:m.start()].split()
        after = SLOT_RE.sub("", template[m.end():]).split()
        if before and template[m.start() - 1:m.start()] == " " and before[-1].rstrip(",.") == words[0]:
            out.append(f"{text!r}: {words[0]!r} repeated across the slot boundary")
        if after and template[m.end():m.end() + 1] == " " and after[0].rstrip(",.") == words[-1]:
            out.append(f"{text!r}: {words[-1]!r} repeated across the slot boundary")
    return out


def check_rows(pack: Pack, rows: list[tuple[str, dict[str, str], str]]) -> list[str]:
    """``rows``: (template id, slot fill, text). Returns every problem found."""
    found: list[str] = []
    for tid, fill, text in rows:
        found += problems(pack.template[tid].text, fill, text, pack.templates.readings)
    return found


def main(path: str, pack_path: str = "ko-KR") -> int:
    pack = load_pack(pack_path)
    if path.endswith(".db"):
        from coherence.store import Store

        rows = [(s["template"], s["slot_fill"], s["text"]) for s in Store(path).seeds() if s["text"]]
    else:
        rows = [(r["template"], r["slot_fill"], r["prompt"]) for r in map(json.loads, open(path, encoding="utf-8"))]
    found = check_rows(pack, rows)
    print(f"{len(rows)} texts checked, {len(found)} particle or repeated-word problems")
    for p in found[:20]:
        print("  " + p)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
