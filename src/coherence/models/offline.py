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
from coherence.packs.loader import Pack


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
    """Substitutes the chosen slot values into the template."""

    name = "offline:slots"

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        _need(task, "template", "slot_fill", who=self.name)
        return ModelOutput(text=task["template"].format_map(task["slot_fill"]), offline=True)


def _verified_first(ids: list[str], table: dict[str, Any]) -> list[str]:
    """Only the verified entries when there are any: an answer cites what was checked."""
    return [i for i in ids if table[i].status == "verified"] or ids


ORDERS = {
    "policy": ("refusal", "statute", "population", "kernel", "alternative", "institution"),
    "policy-warm": ("kernel", "population", "refusal", "statute", "institution", "alternative"),
    "policy-brief": ("refusal", "statute", "alternative"),
}


class OfflinePolicyGenerator:
    """Composes r+ from the sub-category's policy: a reasoned refusal of the harmful shell, the
    applicable statute, the affected population, help with the legitimate kernel, a constructive
    local alternative and an institution. Variants differ in order and in what they include."""

    def __init__(self, pack: Pack, variant: str) -> None:
        self.pack, self.variant, self.name = pack, variant, f"offline:{variant}"

    def compose(self, subcategory: str, key: str, query: str = "") -> str:
        pack, comp = self.pack, self.pack.lexicon.composition
        pol = pack.policy[subcategory]
        folded = query.casefold()
        parts: dict[str, str] = {"refusal": pick(comp.refusal, key, "r").format(refusal=pol.refusal),
                                 "kernel": pick(comp.kernel, key, "k").format(kernel=pol.kernel)}
        cite = pol.cite[0]
        statute = pack.statute[cite.statute]
        article = next((a for a in statute.articles if a.ref == cite.article), None)
        if article is not None:
            parts["statute"] = pick(comp.statute, key, "s").format(
                statute=statute.name, article=pack.article_label(article.ref), summary=article.summary)
        else:
            parts["statute"] = pick(comp.statute_no_article or comp.statute, key, "s").format(
                statute=statute.name, article="", summary="")
        if pol.populations:
            # name the group the query is about when it names one (P2), else the policy's first
            pops = [pack.population[p] for p in pol.populations]
            pop = next((p for p in pops if any(t.casefold() in folded for t in p.terms)), pops[0])
            parts["population"] = pick(comp.population, key, "p").format(population=pop.terms[0])
        if pol.alternatives:
            alt = pack.alternative[pick(_verified_first(pol.alternatives, pack.alternative), key, "a")]
            parts["alternative"] = pick(comp.alternative, key, "a2").format(
                alternative=alt.name, description=alt.description)
        if pol.institutions:
            inst = pack.institution[pick(_verified_first(pol.institutions, pack.institution), key, "i")]
            parts["institution"] = pick(comp.institution, key, "i2").format(
                institution=inst.name, contact=inst.contact or inst.name)
        body = " ".join(parts[p] for p in ORDERS[self.variant] if p in parts)
        return f"{body}\n\n{comp.offline_notice}"

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        _need(task, "subcategory", "seed_id", who=self.name)
        query = messages[-1]["content"] if messages else ""
        return ModelOutput(text=self.compose(task["subcategory"], task["seed_id"], query), offline=True)


@provider("offline")
def _offline(name: str, spec: ModelSpec, pack: Pack | None) -> Any:
    if pack is None:
        raise ModelError(f"offline:{name} needs a pack (fix: run it inside a pipeline run)")
    if name == "attacker":
        return OfflineAttacker(pack)
    if name == "slots":
        return OfflineSlotFiller()
    if name in ORDERS:
        return OfflinePolicyGenerator(pack, name)
    if name.startswith("judge"):
        raise ModelError(f"offline:{name} is a heuristic judge, not a chat model "
                         f"(fix: name it only in the judge roles)")
    raise ModelError(f"offline:{name}: unknown offline model (fix: use offline:attacker, offline:slots, "
                     f"{', '.join('offline:' + v for v in ORDERS)}, or offline:judge[-morph|-strict] for judges)")
