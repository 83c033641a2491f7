"""``coherence report``: one self-contained HTML file per run or eval folder (Jinja2, autoescaped;
matplotlib charts as inline SVG; nothing fetched when it is opened)."""

from coherence.judges.agreement import alpha, filter_agreement
from coherence.report.data import gather_run, load_eval
from coherence.report.render import build_report

__all__ = ["alpha", "build_report", "filter_agreement", "gather_run", "load_eval"]
