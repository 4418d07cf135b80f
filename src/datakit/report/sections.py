"""The data sections of the page: counts at every stage (the funnel), duplicates, audit, balance.
Each returns (html, figures) or None when its inputs are absent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from datakit.report.parts import SPLITS, RunFiles, Thumbs, card_row, esc, fmt_num, html_table
from datakit.stage import kept


def _counts(df: pd.DataFrame | None, key: str, mask: pd.Series | None = None) -> pd.Series | None:
    if df is None or key not in df.columns:
        return None
    sub = df if mask is None else df[mask]
    return sub[key].astype("string").fillna("(none)").value_counts()


def funnel(run: RunFiles, key: str) -> tuple[list[str], dict[str, dict[str, int | None]]]:
    """Columns and {name: {column: count}} for `key` ('label' or 'query'); a column whose stage
    is absent is left out."""
    scrape, failures = run.table("scrape"), run.table("scrape", "failures.parquet")
    dedup, split = run.table("dedup"), run.table("split")
    augment, balance = run.table("augment"), run.table("balance")
    cols: dict[str, pd.Series | None] = {}
    stored = _counts(scrape, key)
    if stored is not None and failures is not None:
        failed = _counts(failures, key)
        cols["returned"] = stored.add(failed, fill_value=0) if failed is not None else stored
        cols["failed"] = failed if failed is not None else pd.Series(dtype="int64")
    cols["stored"] = stored
    if dedup is None and split is not None and "keep" in split.columns:
        dedup = split  # split keeps dedup's columns
    cols["unique"] = _counts(dedup, key, kept(dedup)) if dedup is not None and "keep" in dedup.columns else None
    if split is not None and "split" in split.columns:
        names = [s for s in SPLITS if s in set(split["split"].dropna())]
        names += sorted(set(split["split"].dropna().astype(str)) - set(names))
        for s in names:
            cols[s] = _counts(split, key, kept(split) & split["split"].eq(s))
    if augment is not None and "split" in augment.columns:
        cols["train + augmented"] = _counts(augment, key, kept(augment) & augment["split"].eq("train"))
    if balance is not None and "split" in balance.columns:
        # every origin, as balance counts them: the rows training uses (augment's variants included)
        cols["balanced train"] = _counts(balance, key, kept(balance) & balance["split"].eq("train"))
    present = {c: s for c, s in cols.items() if s is not None}
    names_all = sorted(set().union(*(set(s.index) for s in present.values()))) if present else []
    rows = {n: {c: int(s.get(n, 0)) for c, s in present.items()} for n in names_all}
    return list(present), rows


def funnel_section(run: RunFiles, notes: list[str]) -> tuple[str, dict[str, Any]] | None:
    cols, by_label = funnel(run, "label")
    if not cols:
        return None
    _, by_query = funnel(run, "query")
    totals = {c: sum(r[c] for r in by_label.values()) for c in cols}
    scrape_rep = run.report("scrape")
    if scrape_rep and "returned" in totals and scrape_rep.get("results") not in (None, totals["returned"]):
        notes.append(f"scrape report says {scrape_rep['results']} results; manifest + failures hold {totals['returned']}")
    bal = run.report("balance")
    if bal and "balanced train" in cols:
        after = {k: int(v) for k, v in (bal.get("counts_after") or {}).items()}
        mine = {k: r["balanced train"] for k, r in by_label.items() if r["balanced train"]}
        if after and after != mine:
            notes.append("balanced train counts differ from reports/balance.json counts_after (report from another run?)")
    label_of: dict[str, str] = {}
    scrape = run.table("scrape")
    if scrape is not None and {"query", "label"} <= set(scrape.columns):
        label_of = {str(q): ", ".join(sorted(set(g.astype(str)))) for q, g in scrape.groupby("query")["label"]}
    parts = ['<h2 id="funnel">Counts at every stage</h2>',
             "<p class=\"sub\">returned by search → stored (scrape manifest) → unique (dedup keep) → kept rows per split"
             + (" → train with augment's variants" if "train + augmented" in cols else "")
             + (" → balanced train (originals and balance's rows, as balance counts them)" if "balanced train" in cols else "")
             + ". Failed = search results that did not become an image.</p>",
             "<h3>Per label</h3>",
             html_table(["label", *cols], ([n, *(r[c] for c in cols)] for n, r in by_label.items()), table_id="funnel-label",
                    total=["total", *(totals[c] for c in cols)])]
    if by_query and any(n != "(none)" for n in by_query):
        qcols = ["label", *cols]
        rows = ([n, label_of.get(n, ""), *(r[c] for c in cols)] for n, r in sorted(by_query.items(), key=lambda kv: (label_of.get(kv[0], ""), kv[0])))
        parts += ["<h3>Per query</h3>",
                  html_table(["query", *qcols], rows, table_id="funnel-query", total=["total", "", *(totals[c] for c in cols)])]
    if scrape_rep and scrape_rep.get("failures_by_reason"):
        reasons = ", ".join(f"{esc(k)} {v}" for k, v in sorted(scrape_rep["failures_by_reason"].items()))
        parts.append(f'<p class="meta">scrape failures by reason: {reasons}</p>')
    dedup_rep = run.report("dedup")
    if dedup_rep and dedup_rep.get("removed_by_reason"):
        reasons = ", ".join(f"{esc(k)} {v}" for k, v in sorted(dedup_rep["removed_by_reason"].items()))
        parts.append(f'<p class="meta">dedup removed by reason: {reasons}</p>')
    return "\n".join(parts), {"columns": cols, "by_label": by_label, "by_query": by_query, "totals": totals}


def _dup_group(thumbs: Thumbs, rows: pd.DataFrame, conflict: bool) -> str:
    figs = []
    for r in rows.sort_values(["keep", "image_id"], ascending=[False, True]).itertuples():
        dist = getattr(r, "dup_distance", None)
        d = "" if dist is None or pd.isna(dist) else f" · d={int(dist)}"
        why = getattr(r, "dedup_reason", None)
        cap = f"<b>{esc(r.label)}</b>{d}<br>{esc(why) if isinstance(why, str) else 'kept'}"
        figs.append(thumbs.figure(r.path, cap, "kept" if r.keep else "dropped"))
    title = f"group {esc(str(rows['dup_group'].iat[0])[:12])} · {len(rows)} image{'s' if len(rows) != 1 else ''}"
    if conflict and "conflict_labels" in rows.columns:
        title += f" · labels {esc(rows['conflict_labels'].iat[0])}"
    return f'<div class="group{" conflict" if conflict else ""}"><div class="meta">{title}</div><div class="row">{"".join(figs)}</div></div>'


def duplicates_section(run: RunFiles, thumbs: Thumbs, largest: int, max_conflicts: int) -> tuple[str, dict[str, Any]] | None:
    df = run.table("dedup")
    if df is None or not {"dup_group", "keep", "path", "label"} <= set(df.columns):
        return None
    rep = run.report("dedup") or {}
    conflict_mask = df["label_conflict"].fillna(False).astype(bool) if "label_conflict" in df.columns else pd.Series(False, index=df.index)
    grouped = df[df["dup_group"].notna()]
    sizes = grouped.groupby("dup_group").size().sort_values(ascending=False, kind="stable")
    conflicts_all = sorted(set(df.loc[conflict_mask & df["dup_group"].notna(), "dup_group"]), key=str)
    conflicts = conflicts_all[:max_conflicts]
    multi = [g for g in sizes.index if sizes[g] > 1 and g not in set(conflicts_all)][:largest]
    by_group = dict(iter(grouped[grouped["dup_group"].isin(set(conflicts) | set(multi))].groupby("dup_group")))
    cards = [(k, rep.get(k)) for k in ("images", "kept", "removed", "groups", "exact_groups", "near_groups",
                                        "conflict_groups", "low_information") if k in rep]
    if not cards:
        cards = [("images", len(df)), ("kept", int(kept(df).sum())), ("groups (>1 image)", int((sizes > 1).sum())),
                 ("conflict groups", len(conflicts_all))]
    parts = ['<h2 id="duplicates">Duplicates</h2>', card_row(cards),
             '<p class="sub">green border: the image kept; a red frame: a group whose images carry different labels'
             f' (policy: {esc(rep.get("conflict_policy", "?"))}).</p>',
             f"<h3>Label conflicts ({len(conflicts_all)} groups{f', first {len(conflicts)} shown' if len(conflicts) < len(conflicts_all) else ''})</h3>"]
    parts.extend(_dup_group(thumbs, by_group[g], True) for g in conflicts)
    if not conflicts:
        parts.append("<p>none</p>")
    parts.append(f"<h3>Largest groups (top {len(multi)})</h3>")
    parts.extend(_dup_group(thumbs, by_group[g], False) for g in multi)
    if not multi:
        parts.append("<p>none</p>")
    return "\n".join(parts), {"conflict_groups": len(conflicts_all), "conflicts_shown": len(conflicts), "largest_shown": len(multi)}


def _pairs(thumbs: Thumbs, pairs: Sequence[Mapping[str, Any]], limit: int) -> str:
    out = []
    for p in pairs[:limit]:
        a = thumbs.figure(p.get("path_a"), f"{esc(p.get('split_a'))} · <b>{esc(p.get('label_a'))}</b>")
        b = thumbs.figure(p.get("path_b"), f"{esc(p.get('split_b'))} · <b>{esc(p.get('label_b'))}</b>")
        out.append(f'<div class="pair" title="{esc(p.get("kind"))} d={esc(p.get("distance"))}">{a}{b}</div>')
    return "".join(out)


def audit_section(run: RunFiles, thumbs: Thumbs, max_pairs: int) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("audit")
    if rep is None:
        return None
    ok = bool(rep.get("ok"))
    verdict = f'<b class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</b>'
    parts = ['<h2 id="audit">Audit</h2>',
             f"<p>Verdict: {verdict} — {rep.get('leaks', 0)} cross-split leaks against max_leaks "
             f"{rep.get('max_leaks', 0)} ({rep.get('exact_leaks', 0)} exact, {rep.get('near_leaks', 0)} near); "
             f"{rep.get('label_conflicts', 0)} label conflicts; {rep.get('n_images', '?')} images checked.</p>",
             card_row([("leaks", rep.get("leaks")), ("max_leaks", rep.get("max_leaks")),
                     ("label conflicts", rep.get("label_conflicts")), ("unreadable", len(rep.get("unreadable") or []))])]
    dev = rep.get("max_deviation") or {}
    missing = {s: v for s, v in (rep.get("missing_classes") or {}).items() if v}
    if dev:
        parts.append("<p>Largest class-share deviation from the whole set: "
                     + ", ".join(f"{esc(s)} {float(v):.3f}" for s, v in dev.items()) + "</p>")
    if missing:
        parts.append('<p class="fail">Classes missing from a split: '
                     + "; ".join(f"{esc(s)}: {esc(', '.join(map(str, v)))}" for s, v in missing.items()) + "</p>")
    leaks = rep.get("leak_pairs") or []
    if leaks:
        parts.append(f"<h3>Leak pairs (first {min(max_pairs, len(leaks))} of {rep.get('leaks', len(leaks))})</h3>")
        parts.append(_pairs(thumbs, leaks, max_pairs))
    conflicts = rep.get("conflict_pairs") or []
    if conflicts:
        parts.append(f"<h3>Label-conflict pairs (first {min(max_pairs, len(conflicts))})</h3>")
        parts.append(_pairs(thumbs, conflicts, max_pairs))
    if rep.get("ahash_only"):
        parts.append(f'<p class="meta">{rep["ahash_only"]} further pairs match only the average-hash oracle '
                     "(coarse, many false positives; not counted as leaks).</p>")
    return "\n".join(parts), {"ok": ok, "leaks": rep.get("leaks"), "max_leaks": rep.get("max_leaks")}


def balance_section(run: RunFiles) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("balance")
    if rep is None:
        return None
    before, after = rep.get("counts_before") or {}, rep.get("counts_after") or {}
    weights = rep.get("class_weights") or {}
    labels = sorted(set(before) | set(after))
    rows = [[k, before.get(k, 0), after.get(k, 0), float(weights[k]) if k in weights else None] for k in labels]
    total = ["total", sum(before.values()), sum(after.values()), None]
    parts = ['<h2 id="balance">Balance</h2>',
             f"<p>Strategy <b>{esc(rep.get('strategy'))}</b>; imbalance (largest / smallest class) "
             f"{fmt_num(rep.get('imbalance_before'))} → {fmt_num(rep.get('imbalance_after'))}; rows added: "
             f"{esc(', '.join(f'{k} {v}' for k, v in (rep.get('rows_added') or {}).items()) or 'none')}; "
             f"undersampled: {rep.get('rows_undersampled', 0)}. Counted: kept original train rows.</p>",
             html_table(["label", "before", "after", "weight"], rows, table_id="balance-table", total=total)]
    if rep.get("note"):
        parts.append(f'<p class="meta">{esc(rep["note"])}</p>')
    return "\n".join(parts), {"strategy": rep.get("strategy"), "counts_after": after}
