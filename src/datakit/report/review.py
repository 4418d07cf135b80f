"""The report's "Label review" section: what `datakit suspects` estimated and what a person's
decisions (`datakit curate`) changed, per class; and the test accuracy before and after the
decisions when both runs exist (this run, and the committed run in git with other decisions)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from datakit.report.parts import RunFiles, card_row, esc, fmt_num, html_table


def _committed(path: Path) -> dict[str, Any] | None:
    """The version of `path` in git's HEAD, when the folder is a git work tree and HEAD has it."""
    import shutil

    git = shutil.which("git")
    if git is None:
        return None
    try:
        top = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True,  # noqa: S603
                             timeout=10)
        if top.returncode != 0:
            return None
        rel = path.resolve().relative_to(Path(top.stdout.strip()).resolve()).as_posix()
        shown = subprocess.run([git, "show", f"HEAD:{rel}"], cwd=path.parent, capture_output=True, text=True,  # noqa: S603
                               timeout=10)
        return json.loads(shown.stdout) if shown.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def before_after(run: RunFiles) -> dict[str, Any] | None:
    """Accuracy with the committed run's decisions vs with this run's, when they differ."""
    if run.reports_dir is None:
        return None
    now_eval, now_cur = run.report("evaluate"), run.report("curate")
    if now_eval is None or now_cur is None:
        return None
    old_eval = _committed(run.reports_dir / "evaluate.json")
    old_cur = _committed(run.reports_dir / "curate.json")
    if old_eval is None or old_cur is None or old_cur.get("decisions") == now_cur.get("decisions") and old_eval == now_eval:
        return None
    keys = ("accuracy", "balanced_accuracy", "macro_f1")
    return {"decisions_before": old_cur.get("decisions"), "decisions_after": now_cur.get("decisions"),
            "before": {k: old_eval.get(k) for k in keys}, "after": {k: now_eval.get(k) for k in keys}}


def review_section(run: RunFiles) -> tuple[str, dict[str, Any]] | None:
    suspects, curate = run.report("suspects"), run.report("curate")
    if suspects is None and curate is None:
        return None
    parts = ['<h2 id="review">Label review</h2>']
    figures: dict[str, Any] = {}
    if suspects is not None:
        parts.append(card_row([("scored", suspects.get("scored")), ("flagged", suspects.get("flagged")),
                               ("ambiguous", suspects.get("ambiguous")),
                               ("estimated wrong", f"{100 * float(suspects.get('estimated_noise', 0)):.1f} %")]))
        lines = suspects.get("lines") or []
        if lines:
            parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines[:8]) + "</ul>")
        figures["suspects"] = {k: suspects.get(k) for k in ("scored", "flagged", "estimated_noise")}
    per_label = (suspects or {}).get("noise_by_label", {})
    per_class = (curate or {}).get("per_class", {})
    labels = sorted(set(per_label) | set(per_class))
    rows = []
    for label in labels:
        s, c = per_label.get(label, {}), per_class.get(label, {})
        rows.append([label, s.get("images", "–"), s.get("flagged", "–"),
                     f"{100 * s['estimated_noise']:.0f} %" if "estimated_noise" in s else "–",
                     c.get("removed", "–"), c.get("relabelled_from", "–"), c.get("relabelled_to", "–")])
    parts.append(html_table(["label", "images", "flagged", "estimated wrong", "removed in review", "relabelled from",
                             "relabelled to"], rows, table_id="review-classes"))
    if curate is not None:
        parts.append(f"<p class='sub'>{esc(curate.get('decisions', 0))} decisions in {esc(curate.get('decisions_file', ''))}: "
                     f"{esc(curate.get('relabelled', 0))} relabelled, {esc(curate.get('removed', 0))} removed, "
                     f"{esc(curate.get('accepted', 0))} accepted"
                     + (f"; {esc(curate['unknown_images'])} name images not in this run" if curate.get("unknown_images") else "")
                     + "</p>")
        figures["curate"] = {k: curate.get(k) for k in ("decisions", "relabelled", "removed", "accepted", "unknown_images")}
    compared = before_after(run)
    if compared is not None:
        parts.append("<h3>Test accuracy before and after the decisions</h3>" + html_table(
            ["", "decisions", "accuracy", "balanced accuracy", "macro F1"],
            [["committed run (HEAD)", compared["decisions_before"], *(fmt_num(v) for v in compared["before"].values())],
             ["this run", compared["decisions_after"], *(fmt_num(v) for v in compared["after"].values())]],
            table_id="review-accuracy"))
        figures["before_after"] = compared
    return "\n".join(parts), figures
