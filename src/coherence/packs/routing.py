"""Routing as data: which statute, group, institution and alternative fit a query of a sub-category.

One implementation, called by the offline policy generator (what it names) and by the strict
heuristic judge (what it requires), so the two can never disagree about what a query needs.

Each candidate registered for the sub-category (see :func:`registered`) carries query markers in the
pack: a citation's ``markers``, a population's ``terms`` and ``markers``, an institution's name,
aliases and ``markers``, an alternative's name, aliases and ``markers``. A marker fits a query when
its morphemes occur contiguously in the query's morphemes (kiwipiepy for Korean) or, failing that
and for markers of three or more characters, when it occurs as a spacing-insensitive substring. The best-fitting candidate
wins; ties go to the one listed first; when nothing fits, the sub-category's default (the first
listed) is chosen, and the choice says so in ``why``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coherence.packs.loader import Pack
    from coherence.packs.schema import StatuteCitation


@lru_cache(maxsize=1)
def _kiwi():  # type: ignore[no-untyped-def]
    from kiwipiepy import Kiwi

    return Kiwi()


_KEEP_S = ("SL", "SN", "SH")  # Latin, digits, Hanja are content; other S* tags are punctuation


@lru_cache(maxsize=4096)
def morphemes(text: str, language: str) -> tuple[str, ...]:
    """Morphemes of ``text`` (Korean via kiwipiepy, particles and endings kept so that a marker such as
    'only men' does not match 'men'; punctuation dropped); other languages: casefolded words."""
    text = unicodedata.normalize("NFC", text)
    if language == "ko":
        return tuple(t.form.casefold() for t in _kiwi().tokenize(text)
                     if t.tag in _KEEP_S or not t.tag.startswith("S"))
    return tuple("".join(ch for ch in w if ch.isalnum()) for w in text.casefold().split() if any(c.isalnum() for c in w))


def _squash(text: str) -> str:
    return "".join(unicodedata.normalize("NFC", text).casefold().split())


def fits(query: str, markers: list[str] | tuple[str, ...], language: str) -> list[str]:
    """The markers that fit ``query`` (morpheme sequence, or spacing-insensitive substring)."""
    hay = morphemes(query, language)
    flat = _squash(query)
    out: list[str] = []
    for marker in dict.fromkeys(markers):
        needle = morphemes(marker, language)
        n = len(needle)
        hit = bool(n) and any(hay[i:i + n] == needle for i in range(len(hay) - n + 1))
        # the substring fallback (spacing, compounds) only for markers of 3+ characters: a short marker
        # such as 'gun' must not fit inside another word ('general election' in Korean starts the same)
        if hit or (len(_squash(marker)) >= 3 and _squash(marker) in flat):
            out.append(marker)
    return out


@dataclass(frozen=True)
class Choice:
    """One routed choice: the id, how many markers fit, which, and why it was chosen."""

    id: str
    score: int
    matched: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Registered:
    """What a sub-category registers: the candidates routing chooses among, default first."""

    citations: tuple[StatuteCitation, ...]
    statutes: tuple[str, ...]
    populations: tuple[str, ...]
    institutions: tuple[str, ...]
    alternatives: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """Statute, population, institution and alternative chosen for one query, with why."""

    subcategory: str
    citation: StatuteCitation
    statute: Choice
    population: Choice | None
    institution: Choice | None
    alternative: Choice | None
    also: tuple[StatuteCitation, ...] = field(default=())
    """Other citations whose markers also fit (an answer may name them after the first)."""

    def detail(self) -> dict[str, Any]:
        """A JSON-able record of the choice (stored with verdicts and outputs)."""
        return {"subcategory": self.subcategory,
                "statute": asdict(self.statute), "population": self.population and asdict(self.population),
                "institution": self.institution and asdict(self.institution),
                "alternative": self.alternative and asdict(self.alternative),
                "also": [citation_id(c) for c in self.also]}


def citation_id(c: StatuteCitation) -> str:
    """``statute[:article[:clause]]``, the id a route and a fixture use for a citation."""
    return ":".join(p for p in (c.statute, c.article, c.clause) if p)


def registered(pack: Pack, subcategory: str) -> Registered:
    """The statutes, populations, institutions and alternatives a sub-category registers.

    Institutions and alternatives are the policy's, then those its populations list (in order).
    """
    pol = pack.policy[subcategory]
    insts = list(pol.institutions)
    alts = list(pol.alternatives)
    for pid in pol.populations:
        pop = pack.population[pid]
        insts += [i for i in pop.institutions if i not in insts]
        alts += [a for a in pop.alternatives if a not in alts]
    return Registered(citations=tuple(pol.cite), statutes=tuple(dict.fromkeys(c.statute for c in pol.cite)),
                      populations=tuple(pol.populations), institutions=tuple(insts), alternatives=tuple(alts))


def _best(candidates: list[tuple[str, list[str], float]], what: str) -> Choice:
    """``candidates``: (id, markers that fit, preference). Score: three points per fitting marker plus the
    preference (2 when the chosen citation names it, up to 1 when the chosen group lists it); ties go
    to the candidate listed first (the sub-category's default)."""
    scored = [(3 * len(m) + pref, -i, cid, m, pref) for i, (cid, m, pref) in enumerate(candidates)]
    _, _, cid, matched, pref = max(scored)
    reasons = []
    if matched:
        reasons.append(f"{what} markers fit the query: {', '.join(matched[:4])}")
    if pref >= 1.5:
        reasons.append("named by the chosen statute citation")
    elif pref > 0:
        reasons.append("listed by the chosen group")
    why = "; ".join(reasons) or f"no {what} marker fits; the sub-category's default (listed first)"
    return Choice(id=cid, score=len(matched), matched=tuple(matched), why=why)


def _preference(iid: str, cited: list[str], serves: list[str]) -> float:
    pref = 2.0 - 0.2 * cited.index(iid) if iid in cited else 0.0
    if iid in serves:
        pref += 1.0 - 0.1 * serves.index(iid)
    return pref


def strip_framings(pack: Pack, text: str) -> str:
    """``text`` without the literal parts of the pack's attack framings (their words say nothing
    about which law or group the request concerns, e.g. a framing's 'our community wants this')."""
    for strategy in pack.attacks.strategies:
        for framing in strategy.framings:
            for piece in framing.replace("{gloss}", "{query}").split("{query}"):
                piece = piece.strip()
                if len(piece) >= 6 and piece in text:
                    text = text.replace(piece, " ")
    return text


def route(pack: Pack, subcategory: str, query: str) -> Route:
    """Choose statute, population, institution and alternative for ``query`` of ``subcategory``.

    Args:
        pack: the loaded pack.
        subcategory: the query's sub-category id.
        query: the user query; the literal parts of the pack's attack framings are ignored.

    Returns:
        The :class:`Route`, each choice with the markers that fit and why.
    """
    lang = pack.meta.language
    query = strip_framings(pack, query)
    reg = registered(pack, subcategory)
    cites = list(reg.citations)
    cite_fits = [fits(query, c.markers, lang) for c in cites]
    st = _best([(str(i), m, 0) for i, m in enumerate(cite_fits)], "statute")
    chosen = cites[int(st.id)]
    statute = Choice(id=citation_id(chosen), score=st.score, matched=st.matched, why=st.why)
    also = tuple(c for c, m in zip(cites, cite_fits) if m and c is not chosen
                 and citation_id(c) != citation_id(chosen))
    population = None
    pop_obj = None
    if reg.populations:
        pops = [pack.population[p] for p in reg.populations]
        population = _best([(p.id, fits(query, [*p.terms, *p.markers], lang), 0) for p in pops], "population")
        pop_obj = pack.population[population.id]
    institution = None
    insts = list(reg.institutions) + [i for i in chosen.institutions if i not in reg.institutions]
    if insts:
        serves = list(pop_obj.institutions) if pop_obj else []
        cands = []
        for iid in insts:
            inst = pack.institution[iid]
            cands.append((iid, fits(query, [inst.name, *inst.aliases, *inst.markers], lang),
                          _preference(iid, list(chosen.institutions), serves)))
        institution = _best(cands, "institution")
    alternative = None
    if reg.alternatives:
        serves = list(pop_obj.alternatives) if pop_obj else []
        cands = []
        for aid in reg.alternatives:
            alt = pack.alternative[aid]
            cands.append((aid, fits(query, [alt.name, *alt.aliases, *alt.markers], lang), _preference(aid, [], serves)))
        alternative = _best(cands, "alternative")
    return Route(subcategory=subcategory, citation=chosen, statute=statute, population=population,
                 institution=institution, alternative=alternative, also=also)
