"""LLM judges: pack prompt templates, untrusted text in delimiters, JSON-schema output, robust parsing.

A malformed reply is retried once with a reminder; a second failure is recorded as unscored
(``detail.error = "unparseable"``) with the raw reply kept, never a crash or a default score. A
prompt the provider refuses (content policy, context length) is unscored at once
(``detail.error = "provider_refused"``, ``detail.refusal`` its class).
"""

from __future__ import annotations

import json
import re
from typing import Any

from coherence.judges.verdict import Verdict
from coherence.models import Model
from coherence.packs.loader import Pack

CRITERIA = ("query_intent", "query_natural", "rejected_harmful", "chosen_safe", "chosen_coherent",
            "chosen_appropriate")


def wrap(kind: str, text: str) -> str:
    """Put untrusted text inside delimiters, neutralising any delimiter it contains."""
    safe = re.sub(r"<(/?)untrusted", r"<\1 untrusted", text, flags=re.IGNORECASE)
    return f"<untrusted_{kind}>\n{safe}\n</untrusted_{kind}>"


def render_policy(pack: Pack, subcategory: str) -> str:
    """The sub-category's policy as a plain-text block for generator and judge prompts."""
    pol, sub = pack.policy[subcategory], pack.subcategories[subcategory]
    lines = [f"Category: {sub.name} ({sub.name_en})", "Core principles:"]
    lines += [f"- {p}" for p in pol.core_principles]
    lines += ["Applies when:"] + [f"- {p}" for p in pol.applies_when]
    lines += ["Does NOT apply (answer these normally):"] + [f"- {p}" for p in pol.not_applies_when]
    lines += [f"P1 socio-legal anchoring: {pol.strategies.p1_anchoring}", "Applicable law:"]
    for c in pol.cite:
        st = pack.statute[c.statute]
        art = next((a for a in st.articles if a.ref == c.article), None)
        clause = next((x for x in art.clauses if x.ref == c.clause), None) if art else None
        label, summary = (pack.article_label(art.ref), art.summary) if art else ("", "")
        if clause is not None:  # the clause that applies, not the whole article
            label, summary = f"{label} {clause.label}", clause.summary
        lines.append(f"- {st.name} ({st.name_en})" + (f" {label}: {summary}" if art else ""))
    lines.append(f"P2 population specificity: {pol.strategies.p2_population}")
    lines += [f"- {pack.population[p].name}: {', '.join(pack.population[p].terms)}" for p in pol.populations]
    lines.append(f"P3 justified refusal without over-refusal: {pol.strategies.p3_constructive}")
    lines.append(f"Legitimate kernel to serve: {pol.kernel}")
    lines += [f"- {pack.institution[i].name} {pack.institution[i].contact}".rstrip() for i in pol.institutions]
    lines += [f"- {pack.alternative[a].name}: {pack.alternative[a].description}" for a in pol.alternatives]
    return "\n".join(lines)


def _rubric_text(pack: Pack, name: str) -> str:
    rubric = getattr(pack.rubrics, name)
    return rubric.question + "\n" + "\n".join(f"{k}: {v}" for k, v in sorted(rubric.levels.items()))


def _score_schema(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["score", "reason"],
        "properties": {"score": {"type": "integer", "minimum": lo, "maximum": hi}, "reason": {"type": "string"}}}}}


FILTER_SCHEMA = {"type": "json_schema", "json_schema": {"name": "filter", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": [*CRITERIA, "reason"],
    "properties": {**{c: {"type": "boolean"} for c in CRITERIA}, "reason": {"type": "string"}}}}}


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a reply (code fences and chatter around it are ignored), read with
    ``json.JSONDecoder.raw_decode`` from each ``{`` in turn, so braces inside strings are never
    miscounted."""
    text = re.sub(r"```(?:json)?", "", text)
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_score(text: str, lo: int, hi: int) -> tuple[int, str] | None:
    obj = parse_json_object(text)
    if obj is not None and isinstance(obj.get("score"), (int, float, str)):
        try:
            score = int(float(obj["score"]))
        except ValueError:
            score = None
        if score is not None and lo <= score <= hi:
            return score, str(obj.get("reason", ""))
    match = re.search(r'"?score"?\s*[:=]\s*"?(\d)', text)
    if match and lo <= int(match.group(1)) <= hi:
        return int(match.group(1)), "(parsed from a non-JSON reply)"
    return None


def parse_filter(text: str) -> tuple[dict[str, bool], str] | None:
    obj = parse_json_object(text)
    if obj is None or not all(isinstance(obj.get(c), bool) for c in CRITERIA):
        return None
    return {c: obj[c] for c in CRITERIA}, str(obj.get("reason", ""))


class LLMJudge:
    """A judge backed by a chat model through the call choke point."""

    def __init__(self, model: Model, pack: Pack, *, role: str) -> None:
        self.model, self.pack, self.role, self.name = model, pack, role, model.name
        """``role`` is the judge's role slot (``filter_judges[2]``): recorded with its calls and verdicts."""

    async def _ask(self, task: str, prompt: str, schema: dict[str, Any], parse: Any) -> tuple[Any, str, Any]:
        messages = [{"role": "system", "content": self.pack.rubrics.prompts.judge_system},
                    {"role": "user", "content": prompt}]
        raw = ""
        for attempt in (1, 2):
            out = await self.model.chat_async(messages, role=self.role, params={"response_format": schema,
                                                                                "temperature": 0},
                                              task={"judge_task": task, "try": attempt})
            if out.refusal:
                return None, out.extra.get("reason", ""), out.refusal
            raw = out.text
            parsed = parse(raw)
            if parsed is not None:
                return parsed, raw, attempt
            messages = messages + [{"role": "assistant", "content": raw},
                                   {"role": "user", "content": "Your reply was not valid JSON of the requested "
                                    "shape. Reply with the JSON object only."}]
        return None, raw, 2

    async def _score(self, task: str, prompt: str, lo: int, hi: int) -> Verdict:
        parsed, raw, tries = await self._ask(task, prompt, _score_schema(lo, hi), lambda t: parse_score(t, lo, hi))
        if isinstance(tries, str):
            return self._refused(task, raw, tries)
        if parsed is None:
            return Verdict(judge=self.name, slot=self.role, task=task, reason="unparseable reply (after one retry)", raw=raw,
                           detail={"error": "unparseable", "tries": tries})
        return Verdict(judge=self.name, slot=self.role, task=task, score=parsed[0], reason=parsed[1], raw=raw,
                       detail={"tries": tries})

    def _refused(self, task: str, message: str, refusal: str) -> Verdict:
        return Verdict(judge=self.name, slot=self.role, task=task, raw=message,
                       reason=f"the provider refused the judge's prompt ({refusal})",
                       detail={"error": "provider_refused", "refusal": refusal})

    def _category(self, subcategory: str) -> str:
        sub = self.pack.subcategories[subcategory]
        return f"{sub.name} ({sub.name_en}): {sub.description}"

    async def query_harm_async(self, subcategory: str, query: str) -> Verdict:
        p = self.pack.rubrics.prompts.query_judge.format(
            rubric=_rubric_text(self.pack, "query_harm"), category=self._category(subcategory),
            query=wrap("query", query))
        return await self._score("query_harm", p, 1, 4)

    async def response_harm_async(self, subcategory: str, query: str, response: str) -> Verdict:
        p = self.pack.rubrics.prompts.response_judge.format(
            rubric=_rubric_text(self.pack, "response_harm"), category=self._category(subcategory),
            query=wrap("query", query), response=wrap("response", response))
        return await self._score("response_harm", p, 1, 5)

    async def quality_async(self, subcategory: str, query: str, response: str) -> Verdict:
        p = self.pack.rubrics.prompts.quality_judge.format(
            rubric=_rubric_text(self.pack, "response_quality"), category=self._category(subcategory),
            policy=render_policy(self.pack, subcategory), query=wrap("query", query),
            response=wrap("response", response))
        return await self._score("response_quality", p, 1, 5)

    async def filter_async(self, subcategory: str, query: str, rejected: str, chosen: str) -> Verdict:
        criteria = "\n".join(f"- {c.id}: {c.question}" for c in self.pack.rubrics.filter_criteria)
        p = self.pack.rubrics.prompts.filter_judge.format(
            criteria=criteria, category=self._category(subcategory), policy=render_policy(self.pack, subcategory),
            query=wrap("query", query), rejected=wrap("rejected", rejected), chosen=wrap("chosen", chosen))
        parsed, raw, tries = await self._ask("filter", p, FILTER_SCHEMA, parse_filter)
        if isinstance(tries, str):
            return self._refused("filter", raw, tries)
        if parsed is None:
            return Verdict(judge=self.name, slot=self.role, task="filter", reason="unparseable reply (after one retry)", raw=raw,
                           detail={"error": "unparseable", "tries": tries})
        criteria_ok, reason = parsed
        failed = [k for k, ok in criteria_ok.items() if not ok]
        return Verdict(judge=self.name, slot=self.role, task="filter", passed=not failed,
                       reason=reason or ("all six criteria met" if not failed else "fails " + ", ".join(failed)),
                       raw=raw, detail={"criteria": criteria_ok, "tries": tries})
