"""Pydantic models of a cultural pack.

A pack is a folder of YAML files; each file maps onto one top-level model below, so a validation
error always knows which file it came from. Everything culture-specific lives in the data: these
models only fix its shape.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SLOT_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
ID_RE = r"^[a-z0-9][a-z0-9_.-]*$"

Status = Literal["verified", "likely", "proposed"]
"""verified: seen in a source; likely: consistent with what is known; proposed: machine-written, unreviewed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- pack.yaml


class Scope(_Model):
    statement: str = Field(description="One paragraph: which cultural context this pack covers.")
    covers: list[str] = Field(min_length=1, description="What the pack covers, one item each.")
    excludes: list[str] = Field(min_length=1, description="What it deliberately does not cover.")


class Author(_Model):
    name: str
    role: str = ""
    affiliation: str = ""


class Authorship(_Model):
    authors: list[Author] = Field(min_length=1)
    method: str = Field(description="How the policy was drafted (by whom, from what).")
    review: str = Field(description="How, and by whom, it was reviewed; say so if it was not.")


class Source(_Model):
    title: str
    url: str = ""
    note: str = ""


class PackMeta(_Model):
    name: str = Field(pattern=r"^[a-z]{2,3}-[A-Z]{2}([-.][A-Za-z0-9]+)*$", description="e.g. ko-KR")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    language: str = Field(description="BCP-47 language of the pack's user-facing text, e.g. ko")
    title: str
    scope: Scope
    authorship: Authorship
    sources: list[Source] = Field(default_factory=list)


# ---------------------------------------------------------------- taxonomy.yaml


class Markers(_Model):
    """Surface cues a heuristic judge looks for (any language a target may answer in)."""

    query: list[str] = Field(default_factory=list, description="Cues that a query asks for this harm.")
    response: list[str] = Field(
        default_factory=list, description="Cues that a response engages with this harm."
    )


class SubCategory(_Model):
    id: str = Field(pattern=ID_RE)
    name: str
    name_en: str
    description: str
    anchors: list[str] = Field(min_length=1, description="Statute ids (statutes.yaml) anchoring it.")
    markers: Markers


class Domain(_Model):
    id: str = Field(pattern=ID_RE)
    name: str
    name_en: str
    subcategories: list[SubCategory] = Field(min_length=1)


class Taxonomy(_Model):
    domains: list[Domain] = Field(min_length=1)


# ---------------------------------------------------------------- statutes.yaml


class Clause(_Model):
    """A paragraph or item of an article that a policy cites on its own (e.g. one item of a list)."""

    ref: str = Field(pattern=ID_RE, description="Short id within the article, e.g. '1.2-2' for paragraph 1 item 2-2.")
    label: str = Field(description="How the pack's language cites it after the article, e.g. paragraph 1 item 2-2.")
    summary: str
    penalty: str = ""


class Article(_Model):
    ref: str = Field(description="Article number as the law writes it, e.g. '37', or '23-2' for a branch article.")
    summary: str
    penalty: str = ""
    status: Status = "verified"
    clauses: list[Clause] = Field(default_factory=list, description=(
        "Paragraphs or items a policy may cite on their own (a citation's ``clause``), so that an answer "
        "names the one that applies instead of the whole article."))


class Statute(_Model):
    id: str = Field(pattern=ID_RE)
    name: str = Field(description="Official name in the pack language.")
    name_en: str
    aliases: list[str] = Field(default_factory=list, description="Short names users write.")
    kind: Literal["law", "norm"] = "law"
    articles: list[Article] = Field(default_factory=list)
    status: Status = "verified"
    source: str = ""


class StatuteRegistry(_Model):
    statutes: list[Statute] = Field(min_length=1)


# ---------------------------------------------------------------- populations.yaml / institutions.yaml


class Population(_Model):
    id: str = Field(pattern=ID_RE)
    name: str
    name_en: str
    terms: list[str] = Field(min_length=1, description="Respectful terms users and policies use.")
    note: str = ""
    status: Status = "verified"
    markers: list[str] = Field(default_factory=list, description=(
        "Query cues (besides its terms) that select this group when routing a query (packs/routing.py), "
        "e.g. words users write for the group or the situation it is in."))
    institutions: list[str] = Field(default_factory=list, description=(
        "Institution ids that serve this group, best first; routing prefers them for its queries."))
    alternatives: list[str] = Field(default_factory=list, description=(
        "Alternative ids that serve this group, best first."))


class Populations(_Model):
    populations: list[Population] = Field(min_length=1)


class Institution(_Model):
    id: str = Field(pattern=ID_RE)
    name: str
    name_en: str
    aliases: list[str] = Field(default_factory=list)
    contact: str = Field(default="", description="Hotline number or web address, as users dial or type it.")
    purpose: str
    status: Status = "verified"
    source: str = ""
    markers: list[str] = Field(default_factory=list, description=(
        "Query cues that make this institution the one to name (e.g. election words for the election "
        "commission); its name and aliases also count."))


class Alternative(_Model):
    id: str = Field(pattern=ID_RE)
    name: str
    name_en: str
    aliases: list[str] = Field(default_factory=list)
    description: str
    status: Status = "verified"
    markers: list[str] = Field(default_factory=list, description="Query cues that select this alternative.")


class Institutions(_Model):
    institutions: list[Institution] = Field(min_length=1)
    alternatives: list[Alternative] = Field(default_factory=list)


# ---------------------------------------------------------------- policies.yaml


class StatuteCitation(_Model):
    statute: str = Field(description="Statute id from statutes.yaml.")
    article: str = Field(default="", description="Article ref registered under that statute.")
    clause: str = Field(default="", description="Clause ref registered under that article (cite only it).")
    markers: list[str] = Field(default_factory=list, description=(
        "Query cues that select this citation within the policy (packs/routing.py); the first citation "
        "is the default when no citation's markers fit."))
    institutions: list[str] = Field(default_factory=list, description=(
        "Institution ids that act on this citation (e.g. the election commission for an election-law "
        "article); routing prefers them when this citation is chosen."))


class Strategies(_Model):
    """Response strategies, one block per property of the positive definition."""

    p1_anchoring: str = Field(description="P1: which law or norm to name and how.")
    p2_population: str = Field(description="P2: which group is affected and which local frameworks apply.")
    p3_constructive: str = Field(description="P3: refuse the shell, serve the kernel, offer local alternatives.")


class Policy(_Model):
    subcategory: str
    core_principles: list[str] = Field(min_length=1)
    applies_when: list[str] = Field(min_length=1)
    not_applies_when: list[str] = Field(min_length=1, description="Benign neighbours that must not be refused.")
    strategies: Strategies
    cite: list[StatuteCitation] = Field(min_length=1)
    populations: list[str] = Field(default_factory=list, description="Population ids (P2).")
    institutions: list[str] = Field(default_factory=list, description="Institution ids (P3).")
    alternatives: list[str] = Field(default_factory=list, description="Alternative ids (P3).")
    kernel: str = Field(description="The legitimate need behind the harmful request, in one sentence.")
    refusal: str = Field(description="Why the harmful shell is refused, in one sentence.")
    phrases: dict[Literal["refusal", "statute", "population", "kernel", "alternative", "institution"], list[str]] = Field(
        default_factory=dict, description=(
            "Composition phrases (same placeholders as lexicon.yaml's) the offline generator uses for this "
            "policy instead of the lexicon's, where the general ones do not fit (e.g. a person at risk)."))
    care_first: bool = Field(default=False, description=(
        "Lead with care and the hotline, the law last (e.g. a person at risk of suicide): the offline "
        "generator orders its answer so, whatever its variant."))


class Policies(_Model):
    policies: list[Policy] = Field(min_length=1)


# ---------------------------------------------------------------- templates.yaml


class Template(_Model):
    id: str = Field(pattern=ID_RE)
    subcategory: str
    text: str = Field(description="The seed with {slot} placeholders; fixes the harmful intent.")
    split: Literal["train", "eval"] = "train"
    status: Status = "verified"
    gloss: str = Field(default="", description=(
        "The same request in English with the same {slot}s, for code-switched attack framings that use "
        "{gloss} (users of English-leaning models often add an English restatement)."))

    @property
    def slots(self) -> list[str]:
        return SLOT_RE.findall(self.text)


class Templates(_Model):
    slots: dict[str, list[str]] = Field(description="Slot name -> natural values.")
    slot_glosses: dict[str, dict[str, str]] = Field(default_factory=dict, description=(
        "Slot name -> {value: English rendering}, used when a template's gloss is filled so that the "
        "English restatement is English throughout; a value with no rendering is kept as written."))
    templates: list[Template] = Field(min_length=1)
    readings: dict[str, str] = Field(default_factory=dict, description=(
        "Slot value -> how it is read aloud, where particle choice cannot tell from the spelling "
        "(Latin acronyms, or a Latin name with its local name in brackets)."))
    particles: list[str] = Field(default_factory=list, description=(
        "Particle forms whose shape depends on the word before them (for Korean both allomorphs of "
        "each, plus tossi's bracket notation); one written right after a {slot} is resolved for the "
        "filled value (packs/fill.py render)."))

    @field_validator("slots")
    @classmethod
    def _slot_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in value.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"slot name {name!r} must be lower_snake_case")
            if not values:
                raise ValueError(f"slot {name!r} has no values")
        return value


# ---------------------------------------------------------------- attacks.yaml

STRATEGY_IDS = (
    "emotional_appeal",
    "academic_disguise",
    "roleplay_narrative",
    "social_group_pressure",
    "reasoning_rationalization",
)


class AttackStrategy(_Model):
    id: Literal[
        "emotional_appeal",
        "academic_disguise",
        "roleplay_narrative",
        "social_group_pressure",
        "reasoning_rationalization",
    ]
    name: str
    description: str
    framings: list[str] = Field(min_length=1, description=(
        "Rewrites with a {query} placeholder; a framing may also use {gloss}, the template's English "
        "restatement (used only for seeds whose template has one)."))

    @field_validator("framings")
    @classmethod
    def _has_query(cls, value: list[str]) -> list[str]:
        for framing in value:
            if "{query}" not in framing:
                raise ValueError(f"framing {framing[:40]!r}... lacks the {{query}} placeholder")
        return value


class Attacks(_Model):
    strategies: list[AttackStrategy] = Field(min_length=5, max_length=5)


# ---------------------------------------------------------------- rubrics.yaml


class Rubric(_Model):
    question: str
    levels: dict[int, str] = Field(description="Score -> what that score means.")


class Criterion(_Model):
    id: Literal[
        "query_intent", "query_natural", "rejected_harmful", "chosen_safe", "chosen_coherent",
        "chosen_appropriate",
    ]
    question: str


class Prompts(_Model):
    """Prompt templates for LLM roles. Placeholders in {braces}; untrusted text goes in delimiters."""

    judge_system: str
    query_judge: str
    response_judge: str
    quality_judge: str
    filter_judge: str
    attacker: str
    slot_filler: str
    generator_system: str


PROMPT_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "query_judge": ("rubric", "category", "query"),
    "response_judge": ("rubric", "category", "query", "response"),
    "quality_judge": ("rubric", "category", "policy", "query", "response"),
    "filter_judge": ("criteria", "category", "policy", "query", "rejected", "chosen"),
    "attacker": ("strategy", "strategy_description", "example", "query"),
    "slot_filler": ("template", "slots"),
    "generator_system": ("category", "policy"),
}
"""The placeholders the code fills in each prompt template (``pack validate`` holds the pack to them);
``judge_system`` is sent as written."""


class Rubrics(_Model):
    query_harm: Rubric
    response_harm: Rubric
    response_quality: Rubric
    filter_criteria: list[Criterion] = Field(min_length=6, max_length=6)
    prompts: Prompts


# ---------------------------------------------------------------- lexicon.yaml


class Composition(_Model):
    """Phrases the offline policy generator composes r+ from, in the pack's language."""

    refusal: list[str] = Field(min_length=1, description="Uses {refusal}.")
    statute: list[str] = Field(min_length=1, description="Uses {statute}, {article}, {summary}.")
    statute_no_article: list[str] = Field(
        default_factory=list, description="For laws cited without an article; uses {statute}.")
    article_format: str = Field(default="{main}", description="How article 'N' is cited; uses {main}.")
    article_format_branch: str = Field(default="{main}-{sub}",
                                       description="How a branch article 'N-M' is cited; uses {main}, {sub}.")
    population: list[str] = Field(min_length=1, description="Uses {population}.")
    kernel: list[str] = Field(min_length=1, description="Uses {kernel}.")
    alternative: list[str] = Field(min_length=1, description="Uses {alternative}, {description}.")
    institution: list[str] = Field(min_length=1, description="Uses {institution}, {contact}.")
    offline_notice: str = Field(description="Appended to every offline output.")


class Lexicon(_Model):
    refusal_markers: list[str] = Field(min_length=1, description="Cues of a refusal (any language).")
    step_markers: list[str] = Field(min_length=1, description="Cues of step-by-step instructions.")
    composition: Composition


# ---------------------------------------------------------------- probes.yaml


ProbeKind = Literal["benign", "framed_benign", "loaded_statistics"]


class Probe(_Model):
    """A benign request that must be answered, not refused (over-refusal and anchoring checks).

    Fields the evaluation reads: ``text`` (with explicit cultural framing) and ``unframed`` (the same
    request without it) for anchoring; ``kind``: ``benign`` (a plain benign question),
    ``framed_benign`` (a benign question wrapped in one of the pack's attack framings, ``strategy``
    naming it: over-refusal under attack) or ``loaded_statistics`` (a question that leans on a
    stereotype; a good answer gives facts and context instead of refusing or agreeing);
    ``expect``: registry ids (statutes, institutions, alternatives, populations) a good answer names,
    for deterministic P1-P3 checks.
    """

    id: str = Field(pattern=ID_RE)
    domain: str
    subcategory: str = ""
    text: str = Field(description="The probe with explicit cultural framing.")
    unframed: str = Field(description="The same request without explicit cultural framing.")
    kind: ProbeKind = "benign"
    strategy: str = Field(default="", description="For framed_benign: the attack strategy id whose framing wraps it.")
    expect: list[str] = Field(default_factory=list, description=(
        "Registry ids a good answer names (statute, institution, alternative or population ids)."))


class Probes(_Model):
    probes: list[Probe] = Field(default_factory=list)


# ---------------------------------------------------------------- exemplars.yaml


class Exemplar(_Model):
    subcategory: str
    query: str
    thick: str = Field(description="A gold r+ doing P1-P3 well.")
    thin: str = Field(description="A thin refusal of the same query.")


class Exemplars(_Model):
    exemplars: list[Exemplar] = Field(default_factory=list)


# ---------------------------------------------------------------- proposals.yaml


class Proposal(_Model):
    """Content an LLM proposed (``coherence pack expand``); used only once a person accepts it."""

    id: str = Field(pattern=ID_RE)
    kind: Literal["slot_value", "template", "probe"]
    text: str
    slot: str = Field(default="", description="For slot_value: the slot it extends.")
    subcategory: str = Field(default="", description="For template and probe.")
    domain: str = Field(default="", description="For probe.")
    unframed: str = Field(default="", description="For probe: the request without cultural framing.")
    gloss: str = Field(default="", description="For template: English restatement.")
    split: Literal["train", "eval"] = "train"
    status: Literal["proposed", "accepted", "rejected"] = "proposed"
    model: str = Field(description="The model that proposed it.")
    reviewer: str = Field(default="", description="Who accepted or rejected it.")


class Proposals(_Model):
    proposals: list[Proposal] = Field(default_factory=list)


FILES: dict[str, type[_Model]] = {
    "pack.yaml": PackMeta,
    "taxonomy.yaml": Taxonomy,
    "statutes.yaml": StatuteRegistry,
    "populations.yaml": Populations,
    "institutions.yaml": Institutions,
    "policies.yaml": Policies,
    "templates.yaml": Templates,
    "attacks.yaml": Attacks,
    "rubrics.yaml": Rubrics,
    "lexicon.yaml": Lexicon,
    "probes.yaml": Probes,
    "exemplars.yaml": Exemplars,
    "proposals.yaml": Proposals,
}
"""Every file of a pack and the model it must match."""
