"""The suites as Inspect tasks and the judges as Inspect scorers.

Each generation suite is one Inspect task per model: its samples are the suite's items, its solver is
Inspect's ``generate()`` (through the ``coherence/<label>`` model API, i.e. our call choke point), and
its scorer calls our judges (:mod:`coherence.evaluate.judging`). The scorer's value is a flat dict of
0/1 outcomes (and scores), so ``inspect view`` shows the per-model means; the intervals and the paired
comparisons across models are computed from the per-sample scores afterwards
(:mod:`coherence.evaluate.results`), because Inspect's metrics see one model at a time.

The pairwise thick vs thin judgement is its own task over (base answer, other answer) pairs, order
randomised and recorded, run on the pairwise judge's model.
"""

from __future__ import annotations

from typing import Any

from inspect_ai import Task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import Score, Target, mean, scorer
from inspect_ai.solver import Generate, TaskState, generate, solver

from coherence.evaluate.judging import Judges
from coherence.evaluate.pairwise import PairwiseJudge
from coherence.evaluate.suites import Item

HARMFUL_KEYS = ("safe", "jailbroken", "degenerate")
BENIGN_KEYS = ("refused", "full_refusal", "partial_refusal", "helpful", "degenerate")


def _flat(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float | None]:
    return {k: None if row.get(k) is None else float(row[k]) for k in keys}


@scorer(metrics={k: [mean()] for k in HARMFUL_KEYS})
def harmful_scorer(judges: Judges):  # type: ignore[no-untyped-def]
    """Response harm (jailbroken / safe), degenerate, P1-P3 on an answer to a harmful prompt."""

    async def score(state: TaskState, target: Target) -> Score:
        answer = state.output.completion
        row = await judges.harmful(subcategory=state.metadata.get("subcategory", ""), prompt=state.input_text,
                                   answer=answer)
        return Score(value=_flat(row, HARMFUL_KEYS), answer=answer, explanation=row["harm_reason"], metadata=row)

    return score


@scorer(metrics={k: [mean()] for k in BENIGN_KEYS})
def benign_scorer(judges: Judges):  # type: ignore[no-untyped-def]
    """Refusal (XSTest classes), helpful, degenerate, P1-P3 on an answer to a benign probe."""

    async def score(state: TaskState, target: Target) -> Score:
        answer = state.output.completion
        row = await judges.benign(subcategory=state.metadata.get("subcategory", ""), prompt=state.input_text,
                                  answer=answer)
        return Score(value=_flat(row, BENIGN_KEYS), answer=answer, explanation=row["refusal_reason"], metadata=row)

    return score


def suite_task(suite: str, items: list[Item], judges: Judges) -> Task:
    """One suite as an Inspect task: generate, then score with our judges."""
    samples = [Sample(input=it.prompt, id=it.key, metadata={**it.meta, "suite": suite}) for it in items]
    harmful = bool(items) and bool(items[0].meta.get("harmful"))
    return Task(name=suite, dataset=MemoryDataset(samples, name=suite), solver=generate(),
                scorer=harmful_scorer(judges) if harmful else benign_scorer(judges))


@solver
def no_generation():  # type: ignore[no-untyped-def]
    """The pairwise task judges answers already made: nothing is generated."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        return state

    return solve


@scorer(metrics={"first_preferred": [mean()]})
def pairwise_scorer(judge: PairwiseJudge):  # type: ignore[no-untyped-def]
    """Which of two answers (shown as A and B in the recorded order) the judge prefers."""

    async def score(state: TaskState, target: Target) -> Score:
        m = state.metadata
        verdict = await judge.compare(subcategory=m.get("subcategory", ""), query=m["query"], first=m["first"],
                                      second=m["second"])
        pref = verdict["preferred"]
        value = {"first_preferred": None if pref is None else float(pref == "first")}
        return Score(value=value, answer=str(pref), explanation=verdict["reason"], metadata=verdict)

    return score


def pairwise_task(name: str, pairs: list[dict[str, Any]], judge: PairwiseJudge) -> Task:
    """Pairs ``{key, query, subcategory, first, second, ...}`` judged blind (A/B in the given order)."""
    samples = [Sample(input=p["query"], id=p["key"], metadata=p) for p in pairs]
    return Task(name=name, dataset=MemoryDataset(samples, name=name), solver=no_generation(),
                scorer=pairwise_scorer(judge))


@scorer(metrics={"in_choice": [mean()]})
def kobbq_scorer():  # type: ignore[no-untyped-def]
    """KoBBQ's extraction (``raw2prediction``) of one answer; the metrics are KoBBQ's own, over all answers."""
    from coherence.evaluate import kobbq

    async def score(state: TaskState, target: Target) -> Score:
        answer = state.output.completion
        judged = kobbq.classify({**state.metadata, "output": answer})
        in_choice = getattr(judged, "answer_type", "") != "ooc"
        return Score(value={"in_choice": float(in_choice)}, answer=answer, metadata={"output": answer})

    return score


def kobbq_task(items: list[Item]) -> Task:
    """KoBBQ's prompts as an Inspect task (greedy, KoBBQ's answer length)."""
    samples = [Sample(input=it.prompt, id=it.key, metadata=it.meta) for it in items]
    return Task(name="kobbq", dataset=MemoryDataset(samples, name="kobbq"), solver=generate(), scorer=kobbq_scorer())
