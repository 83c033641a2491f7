"""``offline:*``: deterministic, pack-driven stand-ins for the LLM roles of the default run.

They never pretend to be language models: every output carries ``offline=True``, and the policy
generator's text ends with the pack's offline notice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import Message, ModelOutput
from coherence.models.registry import provider
from coherence.packs.fill import render
from coherence.packs.loader import Pack
from coherence.packs.routing import Route


def pick(options: list[str], *parts: object) -> str:
    """Deterministic choice keyed by ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _need(task: dict[str, Any], *keys: str, who: str) -> None:
    missing = [k for k in keys if k not in task]
    if missing:
        raise ModelError(f"{who}: the call carries no {', '.join(missing)} (fix: offline models serve only "
                         f"the pipeline's own roles; use an LLM spec for free-form prompts)")


class OfflineAttacker:
    """Rewrites a seed with one of its strategy's framings from the pack.

    It escalates as an adaptive attacker would: the first ``plain_attempts`` attempts (a generation
    parameter, default 1) use framings in the pack's language only; later attempts use the
    code-switched framings (those using ``{gloss}``, the template's English restatement) when the
    seed's template has one. The default run sets ``plain_attempts: 0`` for its English-leaning
    target (see :mod:`coherence.config`).
    """

    name = "offline:attacker"

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        _need(task, "strategy", "query", "seed_id", "attempt", who=self.name)
        strategy = self.pack.strategy[task["strategy"]]
        gloss = task.get("gloss", "")
        switched = [f for f in strategy.framings if "{gloss}" in f]
        plain = [f for f in strategy.framings if "{gloss}" not in f]
        plain_attempts = int(params.get("plain_attempts", 1))
        framings = (switched if gloss and task["attempt"] > plain_attempts else plain) or plain or switched
        framing = pick(framings, task["seed_id"], task["attempt"], strategy.id)
        return ModelOutput(text=framing.replace("{query}", task["query"]).replace("{gloss}", gloss), offline=True)


class OfflineSlotFiller:
    """Substitutes the chosen slot values into the template, resolving the particle after each slot
    for the pack's language (:func:`coherence.packs.fill.render`)."""

    name = "offline:slots"

    def __init__(self, pack: Pack) -> None:
        self.pack = pack

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        _need(task, "template", "slot_fill", who=self.name)
        tpl = self.pack.templates
        return ModelOutput(text=render(task["template"], task["slot_fill"], self.pack.meta.language,
                                       readings=tpl.readings, particles=tpl.particles), offline=True)


ORDERS = {
    "policy": ("refusal", "statute", "population", "kernel", "alternative", "institution"),
    "policy-warm": ("kernel", "population", "refusal", "statute", "institution", "alternative"),
    "policy-brief": ("refusal", "statute", "alternative"),
}
CARE_FIRST = {  # a policy with care_first: care and the hotline lead, the law comes last (if at all)
    "policy": ("kernel", "institution", "refusal", "alternative", "population", "statute"),
    "policy-warm": ("kernel", "population", "institution", "refusal", "alternative", "statute"),
    "policy-brief": ("refusal", "institution", "alternative"),
}


class OfflinePolicyGenerator:
    """Composes r+ from the sub-category's policy: a reasoned refusal of the harmful shell, the
    applicable statute, the affected population, help with the legitimate kernel, a constructive
    local alternative and an institution. Variants differ in order and in what they include."""

    def __init__(self, pack: Pack, variant: str) -> None:
        self.pack, self.variant, self.name = pack, variant, f"offline:{variant}"

    def _fmt(self, phrase: str, **values: str) -> str:
        """``phrase`` filled, particles after each placeholder resolved (packs/fill.py render)."""
        tpl = self.pack.templates
        return render(phrase, values, self.pack.meta.language, readings=tpl.readings, particles=tpl.particles)

    def _statute_sentence(self, route_cite: Any, key: str, salt: str, phrases: list[str] | None = None) -> str:
        pack, comp = self.pack, self.pack.lexicon.composition
        statute = pack.statute[route_cite.statute]
        article = next((a for a in statute.articles if a.ref == route_cite.article), None)
        if article is None:
            return self._fmt(pick(comp.statute_no_article or comp.statute, key, salt),
                             statute=statute.name, article="", summary="")
        label, summary = pack.article_label(article.ref), article.summary
        clause = next((c for c in article.clauses if c.ref == route_cite.clause), None)
        if clause is not None:  # cite the clause that applies, not the whole list
            label, summary = f"{label} {clause.label}", clause.summary
        return self._fmt(pick(phrases or comp.statute, key, salt),
                         statute=statute.name, article=label, summary=summary)

    def compose_routed(self, subcategory: str, key: str, query: str = "") -> tuple[str, Route]:
        """The r+ text and the route (statute, population, institution, alternative, with why) it used."""
        pack, comp = self.pack, self.pack.lexicon.composition
        pol = pack.policy[subcategory]
        route = pack.route(subcategory, query)
        ph = pol.phrases
        parts: dict[str, str] = {
            "refusal": self._fmt(pick(ph.get("refusal") or comp.refusal, key, "r"), refusal=pol.refusal),
            "kernel": self._fmt(pick(ph.get("kernel") or comp.kernel, key, "k"), kernel=pol.kernel)}
        statute = self._statute_sentence(route.citation, key, "s", ph.get("statute"))
        if route.also and self.variant != "policy-brief":
            statute += " " + self._statute_sentence(route.also[0], key, "s-also", ph.get("statute"))
        parts["statute"] = statute
        if route.population is not None:
            pop = pack.population[route.population.id]
            phrases = ph.get("population") or comp.population
            parts["population"] = self._fmt(pick(phrases, key, "p"), population=pop.terms[0])
        if route.alternative is not None:
            alt = pack.alternative[route.alternative.id]
            parts["alternative"] = self._fmt(pick(ph.get("alternative") or comp.alternative, key, "a2"),
                                             alternative=alt.name, description=alt.description)
        if route.institution is not None:
            inst = pack.institution[route.institution.id]
            parts["institution"] = self._fmt(pick(ph.get("institution") or comp.institution, key, "i2"),
                                             institution=inst.name, contact=inst.contact or inst.name)
        order = (CARE_FIRST if pol.care_first else ORDERS)[self.variant]
        body = " ".join(parts[p] for p in order if p in parts)
        return f"{body}\n\n{comp.offline_notice}", route

    def compose(self, subcategory: str, key: str, query: str = "") -> str:
        """The r+ text for ``query`` (see :meth:`compose_routed`)."""
        return self.compose_routed(subcategory, key, query)[0]

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        _need(task, "subcategory", "seed_id", who=self.name)
        query = messages[-1]["content"] if messages else ""
        text, route = self.compose_routed(task["subcategory"], task["seed_id"], query)
        return ModelOutput(text=text, offline=True, extra={"route": route.detail()})


@provider("offline")
def _offline(name: str, spec: ModelSpec, pack: Pack | None) -> Any:
    if pack is None:
        raise ModelError(f"offline:{name} needs a pack (fix: run it inside a pipeline run)")
    if name == "attacker":
        return OfflineAttacker(pack)
    if name == "slots":
        return OfflineSlotFiller(pack)
    if name in ORDERS:
        return OfflinePolicyGenerator(pack, name)
    if name.startswith("judge"):
        raise ModelError(f"offline:{name} is a heuristic judge, not a chat model "
                         f"(fix: name it only in the judge roles)")
    raise ModelError(f"offline:{name}: unknown offline model (fix: use offline:attacker, offline:slots, "
                     f"{', '.join('offline:' + v for v in ORDERS)}, or offline:judge[-morph|-strict] for judges)")
