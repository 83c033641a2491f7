"""Load a pack folder, validate it file by file, then check its cross-references."""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coherence.errors import PackError
from coherence.packs import schema as s
from coherence.packs.schema import SLOT_RE

BUILTIN_DIR = Path(__file__).parent
PACKS_PATH_ENV = "COHERENCE_PACKS_PATH"


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fix_for(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "add this key"
    if kind == "extra_forbidden":
        return "remove this key or check its spelling against coherence/packs/schema.py"
    if kind.startswith("string_pattern"):
        return f"use a value matching {err.get('ctx', {}).get('pattern', 'the pattern')}"
    if kind in ("too_short", "too_long"):
        return "give the number of items the schema asks for"
    if kind == "literal_error":
        return f"use one of {err.get('ctx', {}).get('expected', 'the allowed values')}"
    return "correct the value to the documented type"


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise PackError(str(path), where, f"invalid YAML: {getattr(exc, 'problem', exc)}",
                        "fix the YAML syntax at that line") from None


def parse_file(path: Path, model: type[s._Model]) -> s._Model:
    """Parse one pack file into its model, raising a one-line PackError on the first problem."""
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PackError(str(path), "(top level)", "expected a mapping", "start the file with keys")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PackError(str(path), _key_path(err["loc"]), err["msg"] + more, _fix_for(err)) from None


@dataclass(frozen=True)
class Problem:
    """One cross-reference problem found by :func:`check_references`."""

    file: str
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.problem} (fix: {self.fix})"


@dataclass
class Pack:
    """A loaded pack: its files' models plus lookups."""

    path: Path
    meta: s.PackMeta
    taxonomy: s.Taxonomy
    statutes: s.StatuteRegistry
    populations: s.Populations
    institutions: s.Institutions
    policies: s.Policies
    templates: s.Templates
    attacks: s.Attacks
    rubrics: s.Rubrics
    lexicon: s.Lexicon
    probes: s.Probes
    exemplars: s.Exemplars
    digest: str = field(default="")
    proposals: s.Proposals = field(default_factory=s.Proposals)

    @property
    def ref(self) -> str:
        """``name@version``, the provenance tag written on every triplet."""
        return f"{self.meta.name}@{self.meta.version}"

    @cached_property
    def subcategories(self) -> dict[str, s.SubCategory]:
        return {sub.id: sub for d in self.taxonomy.domains for sub in d.subcategories}

    @cached_property
    def domain_of(self) -> dict[str, str]:
        return {sub.id: d.id for d in self.taxonomy.domains for sub in d.subcategories}

    @cached_property
    def statute(self) -> dict[str, s.Statute]:
        return {st.id: st for st in self.statutes.statutes}

    @cached_property
    def population(self) -> dict[str, s.Population]:
        return {p.id: p for p in self.populations.populations}

    @cached_property
    def institution(self) -> dict[str, s.Institution]:
        return {i.id: i for i in self.institutions.institutions}

    @cached_property
    def alternative(self) -> dict[str, s.Alternative]:
        return {a.id: a for a in self.institutions.alternatives}

    @cached_property
    def policy(self) -> dict[str, s.Policy]:
        return {p.subcategory: p for p in self.policies.policies}

    @cached_property
    def template(self) -> dict[str, s.Template]:
        return {t.id: t for t in self.templates.templates}

    @cached_property
    def strategy(self) -> dict[str, s.AttackStrategy]:
        return {st.id: st for st in self.attacks.strategies}

    def article_label(self, ref: str) -> str:
        """An article ref ('37', '23-2') as the pack's language cites it (e.g. the Korean 'N-M' form)."""
        comp = self.lexicon.composition
        main, _, sub = ref.partition("-")
        return comp.article_format_branch.format(main=main, sub=sub) if sub else comp.article_format.format(main=main)

    def gloss(self, template: s.Template, fill: dict[str, str]) -> str:
        """The template's English restatement filled with the English renderings of ``fill``."""
        if not template.gloss:
            return ""
        renderings = self.templates.slot_glosses
        return template.gloss.format_map({k: renderings.get(k, {}).get(v, v) for k, v in fill.items()})

    def registered(self, subcategory: str) -> Any:
        """What a sub-category registers (:class:`coherence.packs.routing.Registered`): its citations,
        statute ids, population ids, institution ids and alternative ids, each default first."""
        from coherence.packs.routing import registered

        return registered(self, subcategory)

    def route(self, subcategory: str, query: str) -> Any:
        """Statute, population, institution and alternative for ``query``, with why
        (:class:`coherence.packs.routing.Route`); the one routing the offline generator and the
        strict heuristic judge share."""
        from coherence.packs.routing import route

        return route(self, subcategory, query)

    def render(self, template: s.Template, fill: dict[str, str]) -> str:
        """The template filled with ``fill``, particles after each slot resolved for the pack language."""
        from coherence.packs.fill import render

        return render(template.text, fill, self.meta.language, readings=self.templates.readings,
                      particles=self.templates.particles)

    def reviewed_templates(self, split: str = "train") -> list[s.Template]:
        """Templates of a split, leaving out machine-proposed ones nobody accepted yet."""
        return [t for t in self.templates.templates if t.split == split and t.status != "proposed"]


def user_packs_dir() -> Path:
    """Where ``pack expand`` puts the user's copy of a built-in pack (``$COHERENCE_HOME/packs``, default
    ``~/.coherence/packs``): the installed package is never written to."""
    return Path(os.environ.get("COHERENCE_HOME", "~/.coherence")).expanduser() / "packs"


def is_builtin(path: Path) -> bool:
    """True if ``path`` is inside the installed package's packs (never written to)."""
    try:
        path.resolve().relative_to(BUILTIN_DIR.resolve())
        return True
    except ValueError:
        return False


def builtin_packs() -> dict[str, Path]:
    """Packs found under ``$COHERENCE_PACKS_PATH``, then the user's copies (:func:`user_packs_dir`), then
    the packs shipped with coherence; the first of a name wins (a user's copy of ko-KR is ko-KR)."""
    roots = [Path(p) for p in os.environ.get(PACKS_PATH_ENV, "").split(os.pathsep) if p]
    roots += [user_packs_dir(), BUILTIN_DIR]
    found: dict[str, Path] = {}
    for root in roots:
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if (child / "pack.yaml").is_file():
                    found.setdefault(child.name, child)
    return found


def resolve_pack_path(name_or_path: str | Path) -> Path:
    """A folder path is used as is; otherwise the name is looked up among the known packs."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    known = builtin_packs()
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    raise PackError(str(name_or_path), "(pack)", "no such pack folder or pack name",
                    f"give a folder with pack.yaml or one of: {', '.join(known) or 'none'}")


def load_pack(name_or_path: str | Path, *, check: bool = True) -> Pack:
    """Load and validate a pack.

    Args:
        name_or_path: a pack name (``ko-KR``) or a folder.
        check: also run the cross-reference checks and raise on the first problem.

    Returns:
        The loaded :class:`Pack`.

    Raises:
        PackError: one line naming the file, the key path and the fix.
    """
    path = resolve_pack_path(name_or_path)
    parts: dict[str, Any] = {}
    digest = hashlib.sha256()
    for filename, model in s.FILES.items():
        file = path / filename
        if not file.is_file():
            if filename in ("probes.yaml", "exemplars.yaml", "proposals.yaml"):
                parts[filename] = model()
                continue
            raise PackError(str(file), "(file)", "missing", f"create {filename} (see `coherence pack new`)")
        if filename != "proposals.yaml":  # a proposal must not change the identity of a run in progress
            digest.update(filename.encode() + b"\0" + file.read_bytes())
        parts[filename] = parse_file(file, model)
    accepted = [p.model_dump(mode="json") for p in parts["proposals.yaml"].proposals if p.status == "accepted"]
    if accepted:  # what a person accepted is content of the pack: it is part of its identity
        digest.update(b"accepted proposals\0" + json.dumps(accepted, sort_keys=True, ensure_ascii=False).encode())
    pack = Pack(
        path=path,
        meta=parts["pack.yaml"], taxonomy=parts["taxonomy.yaml"], statutes=parts["statutes.yaml"],
        populations=parts["populations.yaml"], institutions=parts["institutions.yaml"],
        policies=parts["policies.yaml"], templates=parts["templates.yaml"],
        attacks=parts["attacks.yaml"], rubrics=parts["rubrics.yaml"], lexicon=parts["lexicon.yaml"],
        probes=parts["probes.yaml"], exemplars=parts["exemplars.yaml"],
        digest="sha256:" + digest.hexdigest()[:16], proposals=parts["proposals.yaml"],
    )
    _merge_accepted(pack)
    if check:
        problems = check_references(pack)
        if problems:
            p = problems[0]
            more = f" (+{len(problems) - 1} more: run `coherence pack validate`)" if len(problems) > 1 else ""
            raise PackError(p.file, p.key, p.problem + more, p.fix)
    return pack


def _merge_accepted(pack: Pack) -> None:
    """Fold proposals a person accepted into the reviewed content (in memory; the files keep the trail)."""
    accepted = [p for p in pack.proposals.proposals if p.status == "accepted"]
    if not accepted:
        return
    slots = {k: list(v) for k, v in pack.templates.slots.items()}
    templates = list(pack.templates.templates)
    probes = list(pack.probes.probes)
    for p in accepted:
        if p.kind == "slot_value" and p.slot in slots and p.text not in slots[p.slot]:
            slots[p.slot].append(p.text)
        elif p.kind == "template":
            templates.append(s.Template(id=p.id, subcategory=p.subcategory, text=p.text, split=p.split,
                                        gloss=p.gloss, status="likely"))
        elif p.kind == "probe":
            probes.append(s.Probe(id=p.id, domain=p.domain, subcategory=p.subcategory, text=p.text,
                                  unframed=p.unframed))
    pack.templates = s.Templates(slots=slots, slot_glosses=pack.templates.slot_glosses, templates=templates,
                                 readings=pack.templates.readings, particles=pack.templates.particles)
    pack.probes = s.Probes(probes=probes)


def check_references(pack: Pack) -> list[Problem]:
    """Every id a file mentions must exist where it is defined; every sub-category must be served."""
    out: list[Problem] = []
    f = lambda name: str(pack.path / name)  # noqa: E731

    seen: set[str] = set()
    for di, dom in enumerate(pack.taxonomy.domains):
        for si, sub in enumerate(dom.subcategories):
            key = f"domains[{di}].subcategories[{si}]"
            if sub.id in seen:
                out.append(Problem(f("taxonomy.yaml"), key + ".id", f"duplicate id {sub.id!r}", "make ids unique"))
            seen.add(sub.id)
            for ai, anchor in enumerate(sub.anchors):
                if anchor not in pack.statute:
                    out.append(Problem(f("taxonomy.yaml"), f"{key}.anchors[{ai}]", f"unknown statute {anchor!r}",
                                       "add it to statutes.yaml or use a registered id"))
    for pi, pol in enumerate(pack.policies.policies):
        key = f"policies[{pi}]"
        if pol.subcategory not in pack.subcategories:
            out.append(Problem(f("policies.yaml"), key + ".subcategory", f"unknown sub-category {pol.subcategory!r}",
                               "use an id from taxonomy.yaml"))
        for ci, cite in enumerate(pol.cite):
            st = pack.statute.get(cite.statute)
            if st is None:
                out.append(Problem(f("policies.yaml"), f"{key}.cite[{ci}].statute", f"unknown statute {cite.statute!r}",
                                   "register it in statutes.yaml"))
            elif cite.article and cite.article not in {a.ref for a in st.articles}:
                out.append(Problem(f("policies.yaml"), f"{key}.cite[{ci}].article",
                                   f"article {cite.article!r} is not registered under {st.id!r}",
                                   "add the article to statutes.yaml or drop it here"))
            for ii, ref in enumerate(cite.institutions):
                if ref not in pack.institution:
                    out.append(Problem(f("policies.yaml"), f"{key}.cite[{ci}].institutions[{ii}]",
                                       f"unknown id {ref!r}", "define it in institutions.yaml"))
            if st is not None and cite.clause:
                art = next((a for a in st.articles if a.ref == cite.article), None)
                if art is None or cite.clause not in {c.ref for c in art.clauses}:
                    out.append(Problem(f("policies.yaml"), f"{key}.cite[{ci}].clause",
                                       f"clause {cite.clause!r} is not registered under {st.id!r} {cite.article!r}",
                                       "add it to the article's clauses in statutes.yaml or drop it here"))
        for attr, table, file in (("populations", pack.population, "populations.yaml"),
                                  ("institutions", pack.institution, "institutions.yaml"),
                                  ("alternatives", pack.alternative, "institutions.yaml")):
            for ii, ref in enumerate(getattr(pol, attr)):
                if ref not in table:
                    out.append(Problem(f("policies.yaml"), f"{key}.{attr}[{ii}]", f"unknown id {ref!r}",
                                       f"define it in {file}"))
        if not pol.institutions and not pol.alternatives:
            out.append(Problem(f("policies.yaml"), key, "no institution or alternative for P3",
                               "list at least one institution or alternative"))
    for pi, pop in enumerate(pack.populations.populations):
        for attr, table in (("institutions", pack.institution), ("alternatives", pack.alternative)):
            for ii, ref in enumerate(getattr(pop, attr)):
                if ref not in table:
                    out.append(Problem(f("populations.yaml"), f"populations[{pi}].{attr}[{ii}]",
                                       f"unknown id {ref!r}", "define it in institutions.yaml"))
    for ti, tpl in enumerate(pack.templates.templates):
        key = f"templates[{ti}]"
        if tpl.subcategory not in pack.subcategories:
            out.append(Problem(f("templates.yaml"), key + ".subcategory", f"unknown sub-category {tpl.subcategory!r}",
                               "use an id from taxonomy.yaml"))
        for slot in tpl.slots:
            if slot not in pack.templates.slots:
                out.append(Problem(f("templates.yaml"), key + ".text", f"slot {{{slot}}} has no values",
                                   f"add slots.{slot} with values"))
        if tpl.gloss and set(SLOT_RE.findall(tpl.gloss)) != set(tpl.slots):
            out.append(Problem(f("templates.yaml"), key + ".gloss", "uses other slots than the text",
                               "use exactly the text's {slots} in the gloss"))
    for slot, renderings in pack.templates.slot_glosses.items():
        values = pack.templates.slots.get(slot)
        if values is None:
            out.append(Problem(f("templates.yaml"), f"slot_glosses.{slot}", f"unknown slot {slot!r}",
                               "use a slot defined under slots"))
            continue
        for value in renderings:
            if value not in values:
                out.append(Problem(f("templates.yaml"), f"slot_glosses.{slot}", f"{value!r} is not a value of "
                                   f"slots.{slot}", f"use one of its values or add it to slots.{slot}"))
    ids = [t.id for t in pack.templates.templates]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        out.append(Problem(f("templates.yaml"), "templates", f"duplicate template id {dup!r}", "make ids unique"))
    domains = {d.id for d in pack.taxonomy.domains}
    for pi, probe in enumerate(pack.probes.probes):
        if probe.domain not in domains:
            out.append(Problem(f("probes.yaml"), f"probes[{pi}].domain", f"unknown domain {probe.domain!r}",
                               "use a domain id from taxonomy.yaml"))
        if probe.subcategory and probe.subcategory not in pack.subcategories:
            out.append(Problem(f("probes.yaml"), f"probes[{pi}].subcategory",
                               f"unknown sub-category {probe.subcategory!r}", "use an id from taxonomy.yaml"))
        if probe.kind == "framed_benign" and probe.strategy not in pack.strategy:
            out.append(Problem(f("probes.yaml"), f"probes[{pi}].strategy", f"unknown strategy {probe.strategy!r}",
                               "name the attack strategy (attacks.yaml) whose framing wraps it"))
        known = set(pack.statute) | set(pack.institution) | set(pack.alternative) | set(pack.population)
        for xi, ref in enumerate(probe.expect):
            if ref not in known:
                out.append(Problem(f("probes.yaml"), f"probes[{pi}].expect[{xi}]", f"unknown id {ref!r}",
                                   "use a statute, institution, alternative or population id"))
    for ei, ex in enumerate(pack.exemplars.exemplars):
        if ex.subcategory not in pack.subcategories:
            out.append(Problem(f("exemplars.yaml"), f"exemplars[{ei}].subcategory",
                               f"unknown sub-category {ex.subcategory!r}", "use an id from taxonomy.yaml"))
    for sub_id in pack.subcategories:
        if sub_id not in pack.policy:
            out.append(Problem(f("policies.yaml"), "policies", f"sub-category {sub_id!r} has no policy",
                               "add a policy for it"))
        if not any(t.subcategory == sub_id and t.split == "train" for t in pack.templates.templates):
            out.append(Problem(f("templates.yaml"), "templates", f"sub-category {sub_id!r} has no train template",
                               "add at least one template with split: train"))
        if not any(p.subcategory == sub_id for p in pack.probes.probes):
            out.append(Problem(f("probes.yaml"), "probes", f"sub-category {sub_id!r} has no benign probe",
                               "add a probe that looks like its harmful requests but is legitimate"))
        if not any(e.subcategory == sub_id for e in pack.exemplars.exemplars):
            out.append(Problem(f("exemplars.yaml"), "exemplars", f"sub-category {sub_id!r} has no exemplar",
                               "add a thick r+ beside a thin refusal"))
    out += _check_placeholders(pack, f("rubrics.yaml"))
    return out


def _check_placeholders(pack: Pack, file: str) -> list[Problem]:
    """Every prompt template names exactly the placeholders the code fills (:data:`s.PROMPT_PLACEHOLDERS`):
    an unknown one would fail mid-run, a missing one would leave its text out of the prompt."""
    out: list[Problem] = []
    for name, allowed in s.PROMPT_PLACEHOLDERS.items():
        text = getattr(pack.rubrics.prompts, name)
        key = f"prompts.{name}"
        try:
            used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
        except ValueError as exc:
            out.append(Problem(file, key, f"not a valid template ({exc})", "write literal braces as {{ and }}"))
            continue
        names = {u.split(".")[0].split("[")[0] for u in used}
        for bad in sorted(names - set(allowed)):
            out.append(Problem(file, key, f"unknown placeholder {{{bad}}}" if bad else "an empty placeholder {}",
                               f"use only {', '.join('{' + a + '}' for a in allowed) or 'no placeholders'}, "
                               f"and write literal braces as {{{{ and }}}}"))
        for missing in [a for a in allowed if a not in names]:
            out.append(Problem(file, key, f"placeholder {{{missing}}} is missing",
                               f"put {{{missing}}} where its text belongs"))
    return out


def coverage(pack: Pack) -> list[dict[str, Any]]:
    """Per sub-category counts: templates by split, probes, exemplars, cited statutes."""
    rows = []
    for sub_id, sub in pack.subcategories.items():
        pol = pack.policy.get(sub_id)
        tpls = [t for t in pack.templates.templates if t.subcategory == sub_id]
        rows.append({
            "domain": pack.domain_of[sub_id],
            "subcategory": sub_id,
            "train_templates": sum(t.split == "train" for t in tpls),
            "eval_templates": sum(t.split == "eval" for t in tpls),
            "probes": sum(p.subcategory == sub_id for p in pack.probes.probes),
            "exemplars": sum(e.subcategory == sub_id for e in pack.exemplars.exemplars),
            "statutes": len(pol.cite) if pol else 0,
            "populations": len(pol.populations) if pol else 0,
        })
    return rows
