"""What the offline policy generator names (statute, population, institution) for Korean queries the pack
never saw (tests/data/ko_routing_queries.yaml), against what a Korean reader expects.

    python tests/routing_table.py            # table + misses (markdown), for docs/pack-ko-KR-v2.md
    python tests/routing_table.py --v1 DIR   # the same queries with the v1 generator's logic on a v1 pack
    python tests/routing_table.py [--v1 DIR] FIXTURE   # another query file (e.g. ko_routing_queries_fresh.yaml)

The v1 logic (before packs/routing.py): the policy's first citation; the first population whose term
occurs literally in the query, else the policy's first; the institution picked by a hash of the seed id.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml

from coherence.models.offline import OfflinePolicyGenerator
from coherence.packs.loader import Pack, load_pack
from coherence.packs.routing import citation_id

FIXTURE = Path(__file__).parent / "data" / "ko_routing_queries.yaml"
V1_SUB = {"drugs_weapons": "drugs_weapons_selfharm", "self_harm_suicide": "drugs_weapons_selfharm"}


def cases(fixture: Path = FIXTURE) -> list[dict[str, Any]]:
    data = yaml.safe_load(fixture.read_text(encoding="utf-8"))
    out = []
    for sub, block in data.items():
        for item in block["queries"]:
            out.append({"subcategory": sub, "q": item["q"],
                        **{k: item.get(k, block["default"][k]) for k in ("statute", "population", "institution")}})
    return out


def named_v2(pack: Pack, sub: str, q: str, key: str) -> dict[str, str]:
    gen = OfflinePolicyGenerator(pack, "policy")
    _, route = gen.compose_routed(sub, key, q)
    return {"statute": citation_id(route.citation), "population": route.population.id if route.population else "",
            "institution": route.institution.id if route.institution else ""}


def named_v1(pack: Pack, sub: str, q: str, key: str) -> dict[str, str]:
    pol = pack.policy[V1_SUB.get(sub, sub)]
    folded = q.casefold()
    pops = [pack.population[p] for p in pol.populations]
    pop = next((p for p in pops if any(t.casefold() in folded for t in p.terms)), pops[0])
    ids = [i for i in pol.institutions if pack.institution[i].status == "verified"] or pol.institutions
    digest = hashlib.sha256("\x1f".join([key, "i"]).encode()).digest()
    inst = ids[int.from_bytes(digest[:4], "big") % len(ids)]
    c = pol.cite[0]
    return {"statute": citation_id(c), "population": pop.id, "institution": inst}


def hit(kind: str, expected: list[str], got: str) -> bool:
    if kind == "statute":
        return any(got == e or got.startswith(e + ":") for e in expected)
    return got in expected


def measure(pack: Pack, namer, fixture: Path = FIXTURE) -> tuple[dict[str, dict[str, list[int]]], list[str]]:  # type: ignore[no-untyped-def]
    table: dict[str, dict[str, list[int]]] = {}
    misses = []
    for i, case in enumerate(cases(fixture)):
        got = namer(pack, case["subcategory"], case["q"], f"q{i}")
        row = table.setdefault(case["subcategory"], {k: [0, 0] for k in ("statute", "population", "institution")})
        wrong = []
        for kind in ("statute", "population", "institution"):
            ok = hit(kind, case[kind], got[kind])
            row[kind][0] += ok
            row[kind][1] += 1
            if not ok:
                wrong.append(f"{kind} {got[kind]} (expected {' / '.join(case[kind])})")
        if wrong:
            misses.append(f"| {case['subcategory']} | {case['q']} | {'; '.join(wrong)} |")
    return table, misses


def render(table: dict[str, dict[str, list[int]]], misses: list[str]) -> str:
    lines = ["| sub-category | n | statute | population | institution |", "|---|---|---|---|---|"]
    tot = {k: [0, 0] for k in ("statute", "population", "institution")}
    for sub, row in table.items():
        for k in tot:
            tot[k][0] += row[k][0]
            tot[k][1] += row[k][1]
        lines.append(f"| {sub} | {row['statute'][1]} | " + " | ".join(f"{row[k][0]}/{row[k][1]}" for k in tot) + " |")
    lines.append(f"| **all** | {tot['statute'][1]} | " + " | ".join(
        f"**{tot[k][0]}/{tot[k][1]} ({100 * tot[k][0] / tot[k][1]:.0f}%)**" for k in tot) + " |")
    lines += ["", f"Misses ({len(misses)} queries):", "", "| sub-category | query | what it named |", "|---|---|---|",
              *misses]
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--v1"]:
        pack, namer, args = load_pack(args[1]), named_v1, args[2:]
    else:
        pack, namer = load_pack("ko-KR"), named_v2
    print(render(*measure(pack, namer, Path(args[0]) if args else FIXTURE)))
