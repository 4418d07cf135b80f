"""`DATASHEET.md`: a datasheet for one dataset version after "Datasheets for Datasets" (Gebru et
al., 2018/2021), written by `datakit report` beside the HTML page: Motivation, Composition,
Collection process, Preprocessing / cleaning / labelling, Uses, Distribution, Maintenance (how to
get this exact version). Every statement is read from the run (stage folders and reports,
params.yaml, git, the dvc.lock of the folder the report runs in, the DVC config); a stage that did
not run is one line saying so, and a fact no file records (funding; the dates when the manifest
has no time column) a marked fill-in line. The text is a function of its inputs: no wall-clock
time (a `Generated` line only with SOURCE_DATE_EPOCH), no absolute path inside the project.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from datakit import licences as lic
from datakit.errors import DatakitError
from datakit.fsutil import atomic_write_text, source_date_epoch
from datakit.manifest import FAILURES, REASONS
from datakit.report.parts import SPLITS, RunFiles
from datakit.stage import AUGMENTED, ORIGINAL, OVERSAMPLED, SMOTE, kept, origins, training_rows

DATASHEET = "DATASHEET.md"
SHAPING = ("scrape", "licenses", "dedup", "suspects", "split", "augment", "balance")  # the params sections shown
FEW_TEST = 20  # a class with fewer test images gets a caution: its per-class test figures are noisy
Lines = list[str]


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "none"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Lines:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*out, *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows), ""]


def _absent(title: str, what: str) -> Lines:
    return [f"**{title}.** _Not in this run: {what}._", ""]


def _pct(x: Any) -> str:
    return f"{100 * float(x or 0):.1f} %"


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(series.astype("string").fillna("(none)").value_counts().items())}


def _join(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _shown(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it (no absolute path in the text), else as given."""
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(path)


def _rel(target: Path, doc: Path) -> str:
    """A link from the document `doc` to `target`."""
    return Path(os.path.relpath(Path(target).absolute(), Path(doc).absolute().parent)).as_posix()


def source_date() -> str | None:
    """The build date from SOURCE_DATE_EPOCH (reproducible builds), or None when it is not set."""
    when = source_date_epoch()
    return None if when is None else when.strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------
# Outside the stage folders: git, DVC


def _git(project: Path, *args: str) -> str | None:
    try:  # no git installed: OSError
        done = subprocess.run([shutil.which("git") or "git", *args], cwd=project, capture_output=True,  # noqa: S603
                              text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def git_state(project: Path) -> dict[str, Any] | None:
    """{"top": the work tree's root} of the git work tree holding `project`, or None outside one.
    Nothing else of git: not the commit (the one that will hold this run does not exist yet), not
    uncommitted changes, not user.name; each differs between clones making the same data."""
    top = _git(project, "rev-parse", "--show-toplevel")
    return None if top is None else {"top": top}


def dvc_remotes(project: Path) -> tuple[list[tuple[str, str]], str | None]:
    """([(name, url)], default name) from the .dvc/config above `project` (URLs without any
    user:password); .dvc/config.local adds names only (it may hold private settings)."""
    dvc = next((f / ".dvc" for f in (project.resolve(), *project.resolve().parents) if (f / ".dvc").is_dir()), None)
    remotes: dict[str, str] = {}
    default = None
    for name in ("config", "config.local"):
        if dvc is not None and (dvc / name).is_file():
            cp = configparser.ConfigParser(interpolation=None, strict=False)
            lines = (dvc / name).read_text(encoding="utf-8", errors="replace").splitlines()
            cp.read_string("\n".join(line.strip() for line in lines))  # DVC indents its keys
            for section in cp.sections():
                remote = re.fullmatch(r"""'?remote\s+"(.+)"'?""", section)
                if remote:
                    url = cp.get(section, "url", fallback="") if name == "config" else ""
                    remotes[remote.group(1)] = remotes.get(remote.group(1)) or re.sub(r"//[^/@]*@", "//", url)
            default = cp.get("core", "remote", fallback=default)
    return sorted(remotes.items()), default


def lock_outs(lock: Path, folders: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """{stage name: {"path", "md5", "nfiles"}} for each folder of `folders` that a stage of `lock`
    (a dvc.lock) lists among its outs."""
    try:
        doc = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DatakitError(f"{lock}: cannot be read for the datasheet: {exc}") from exc
    wanted = {p.resolve(): name for name, p in folders.items()}
    found: dict[str, dict[str, Any]] = {}
    for stage in (doc.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            name = wanted.get((lock.parent / str(out.get("path", ""))).resolve())
            if name is not None:
                found[name] = {k: out.get(k) for k in ("path", "md5", "nfiles")}
    return found


# ---------------------------------------------------------------------------------------------
# The run's data


def final_rows(run: RunFiles) -> tuple[str, pd.DataFrame] | None:
    """The dataset this version holds: the kept original rows of the latest of split, curate,
    suspects, dedup and scrape."""
    for stage in ("split", "curate", "suspects", "dedup", "scrape"):
        df = run.table(stage)
        if df is not None and "label" in df.columns:
            return stage, df[kept(df) & origins(df).eq(ORIGINAL)]
    return None


def _failures(run: RunFiles) -> pd.DataFrame:
    """Every stage folder's failures rows: stage, reason."""
    parts = []
    for name in run.stages:
        df = run.table(name, FAILURES)
        if df is not None and len(df) and "reason" in df.columns:
            stage = df["stage"].fillna(name) if "stage" in df.columns else pd.Series(name, index=df.index)
            parts.append(pd.DataFrame({"stage": stage.astype(str), "reason": df["reason"].astype(str)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"stage": [], "reason": []}, dtype=str)


def _meaning(reason: str) -> str:
    http = f"the server answered HTTP {reason[5:]}" if reason.startswith("http_") else "(not a known reason code)"
    return REASONS.get(reason, http)


def _time_columns(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """{column: (first, last)} of the time columns (a datetime type, or named fetched_at, *_time, *_date)."""
    found = {}
    for col in df.columns:
        if re.search(r"(^|_)(at|time|date|timestamp|fetched)$", str(col)) or pd.api.types.is_datetime64_any_dtype(df[col]):
            values = pd.to_datetime(df[col], errors="coerce", utc=True).dropna()
            if len(values):
                found[str(col)] = (values.min().strftime("%Y-%m-%d %H:%M UTC"), values.max().strftime("%Y-%m-%d %H:%M UTC"))
    return found


# ---------------------------------------------------------------------------------------------
# Sections: each returns its lines and adds its figures to `fig`


def motivation(run: RunFiles, params_text: str | None, params_name: str, fig: dict[str, Any]) -> Lines:
    lines = ["## Motivation", ""]
    classes = fig["classes"]
    if classes:
        lines += [f"**Purpose.** Image classification of {len(classes)} classes: {', '.join(classes)}.", ""]
    doc = yaml.safe_load(params_text or "") or {}
    if doc.get("scrape"):
        from datakit.params import parse_params

        sp = parse_params(doc, params_name).scrape  # one ParamsError line naming the file and the key
        planned = {re.sub(r"\s+", " ", sp.template.format(item=i, attribute=a).strip())  # as scrape builds them
                   for i in sp.items for a in (sp.attributes or [""])}
        fig["queries_planned"] = len(planned)
        lines += [f"**Query matrix** (params). `scrape.items` ({len(sp.items)}: {', '.join(sp.items)}) × "
                  f"`scrape.attributes` ({len(sp.attributes)}: {', '.join(sp.attributes) or 'none'}) through the template "
                  f"`{sp.template}` = {len(planned)} queries, `scrape.per_query` {sp.per_query}; the label is the {sp.label}.",
                  ""]
        scraped = run.table("scrape")
        other = sorted(set(scraped["query"].dropna().astype(str)) - planned) if scraped is not None and "query" in scraped else []
        if other:  # the params shown may not be the ones the data was made with
            lines += [f"_The scrape manifest holds {len(other)} queries these params do not make (e.g. `{other[0]}`): the "
                      "params changed after the scrape, or it ran with other options._", ""]
    # not git's user.name: it differs between the clones that re-run the pipeline, and the
    # datasheet must be the same wherever the same data is made
    lines += ["**Who created the dataset.** _(fill in: the person or team who created this dataset)_",
              "", "**Funding.** _(fill in: who funded the work, if anyone)_", ""]
    if params_text is None:
        return lines + _absent("Parameters", "the params file (`datakit report --params`); dvc.lock records them")
    shown = {k: doc[k] for k in SHAPING if doc.get(k) is not None}
    return lines + [f"**Parameters that shaped the data** (`{params_name}`, sections {', '.join(shown) or 'none'}):",
                    "", "```yaml", yaml.safe_dump(shown, sort_keys=False, width=100).rstrip(), "```", ""]


def composition(run: RunFiles, fig: dict[str, Any]) -> Lines:
    lines = ["## Composition", ""]
    final = final_rows(run)
    if final is None:
        return lines + _absent("Instances", "any manifest (scrape, dedup, curate, split)")
    stage, df = final
    cols = set(df.columns)
    prov = [c for c in ("query", "provider", "source_url", "page_url", "license", "license_url", "creator") if c in cols]
    what = ("**What an instance is.** One image file (content-addressed: `image_id` is the SHA-256 of its bytes) with one "
            f"label and its provenance ({', '.join(f'`{c}`' for c in prov) or 'none recorded'}): one row of "
            f"`{stage}/manifest.parquet`.")
    if "format" in cols:
        what += f" Formats: {_join(_counts(df['format']))}."
    if {"width", "height"} <= cols and df["width"].notna().any():
        what += (f" Sizes: {int(df['width'].min())}–{int(df['width'].max())} px wide, "
                 f"{int(df['height'].min())}–{int(df['height'].max())} px high.")
    lines += [what, ""]
    labels = df["label"].astype(str)
    fig["images"] = len(df)
    if stage == "split" and "split" in cols:
        names = [s for s in SPLITS if s in set(df["split"])] + sorted(set(df["split"].dropna().astype(str)) - set(SPLITS))
        fig["per_split"], rows = _by_class(labels, df["split"], names)
        lines += [f"**Images per class and split** ({len(df)} kept images in `split`):", "",
                  *_table(["class", *names, "total"], rows)]
    else:
        fig["per_class"] = per_class = _counts(labels)
        lines += [*_absent("Splits", f"split (no train/val/test yet): the counts are the kept rows of `{stage}`"),
                  *_table(["class", "images"], [*per_class.items(), ["**total**", len(df)]])]
    return lines + _duplicates(run, fig) + _noise(run, fig) + _training_rows(run, fig)


def _by_class(labels: pd.Series, by: pd.Series, names: Sequence[str]) -> tuple[dict[str, dict[str, int]], list[list[Any]]]:
    """{class: {name: rows}} of `labels` x `by`, and its table rows with a total per column."""
    per = {c: {n: int((labels.eq(c) & by.eq(n)).sum()) for n in names} for c in sorted(set(labels))}
    return per, [*([c, *v.values(), sum(v.values())] for c, v in per.items()),
                 ["**total**", *(sum(v[n] for v in per.values()) for n in names), len(labels)]]


def _duplicates(run: RunFiles, fig: dict[str, Any]) -> Lines:
    df = run.table("dedup")
    if df is None or "keep" not in df.columns:
        return _absent("Duplicates", "dedup")
    drop = df[~kept(df)]
    reasons = _counts(drop["dedup_reason"]) if "dedup_reason" in df.columns else {"(no reason column)": len(drop)}
    sizes = df["dup_group"].dropna().value_counts() if "dup_group" in df.columns else pd.Series(dtype=int)
    fig["dedup"] = {"images": len(df), "kept": len(df) - len(drop), "removed": len(drop), "by_reason": reasons,
                    "groups": int((sizes > 1).sum())}
    return [f"**Duplicates.** dedup kept {len(df) - len(drop)} of {len(df)} images and removed {len(drop)} "
            f"({_join(reasons)}); {int((sizes > 1).sum())} groups of copies.", ""]


def _noise(run: RunFiles, fig: dict[str, Any]) -> Lines:
    rep = run.report("suspects")
    if rep is None:
        return _absent("Label noise", "suspects (no label-noise estimate)")
    by = rep.get("noise_by_label") or {}
    fig["noise"] = {"overall": rep.get("estimated_noise"), "by_label": by}
    rows = [[k, v.get("images"), v.get("flagged"), _pct(v.get("estimated_noise"))] for k, v in sorted(by.items())]
    return [f"**Label noise** (estimated by `datakit suspects` before review): {_pct(rep.get('estimated_noise'))} "
            f"of {rep.get('scored')} scored images look wrongly labelled; {rep.get('flagged')} flagged, "
            f"{rep.get('ambiguous')} ambiguous.", "", *_table(["class", "scored", "flagged", "estimated wrong"], rows)]


def _training_rows(run: RunFiles, fig: dict[str, Any]) -> Lines:
    stage = next((s for s in ("balance", "augment") if run.table(s) is not None), None)
    df = run.table(stage) if stage else None
    if stage is None or df is None:
        return _absent("Rows made for training", "augment or balance (training uses the train images as they are)")
    train = df[training_rows(df)]
    origin, labels = origins(train), train["label"].astype(str)
    kinds = [o for o in (ORIGINAL, AUGMENTED, OVERSAMPLED, SMOTE) if origin.eq(o).any()]
    kinds += sorted(set(origin) - set(kinds))
    per, rows = _by_class(labels, origin, kinds)
    fig["training_rows"] = {"stage": stage, "per_class": per}
    return [f"**Rows made for training** (kept train rows of `{stage}` by origin; val and test are never augmented):",
            "", *_table(["class", *kinds, "total"], rows)]


def collection(run: RunFiles, fig: dict[str, Any]) -> Lines:
    lines = ["## Collection process", ""]
    df = run.table("scrape")
    if df is None:
        lines += _absent("Sources", "scrape (no scrape manifest: providers, queries and dates unknown)")
    else:
        fails = run.table("scrape", FAILURES)
        fails = fails if fails is not None else pd.DataFrame({"provider": [], "query": [], "label": []})
        rep = run.report("scrape") or {}
        fig["scrape"] = {"stored": len(df), "failed": len(fails), "results": len(df) + len(fails)}
        lines += [f"**Counts.** {len(df) + len(fails)} search results: {len(df)} stored as images, {len(fails)} failed"
                  + (f" (the scrape report says {rep['results']} results)" if "results" in rep else "") + ".", ""]
        if "provider" in df.columns:
            stored = _counts(df["provider"])
            failed = _counts(fails["provider"]) if "provider" in fails.columns else {}
            rows = [[p, stored.get(p, 0), failed.get(p, 0)] for p in sorted(set(stored) | set(failed))]
            lines += ["**Providers:**", "", *_table(["provider", "stored", "failed"], rows)]
        lines += _queries(df, fails)
        times = _time_columns(df)
        lines += ["**Dates.** " + ("; ".join(f"`{c}` from {a} to {b}" for c, (a, b) in times.items()) + "." if times else
                  ("No fetch time: every image was read from local files (the synthetic or folder provider), "
                   "not downloaded. _(fill in: when these files were made)_" if "fetched_at" in df.columns else
                   f"The scrape manifest records no fetch time (no date column among its {len(df.columns)} columns). "
                   "_(fill in: when the scrape ran)_")), ""]
    counts = _failures(run).groupby(["stage", "reason"]).size()
    fig["failures"] = {f"{s}/{r}": int(n) for (s, r), n in counts.items()}
    if not len(counts):
        return lines + ["**What failed and why.** No stage recorded a failure.", ""]
    return lines + ["**What failed and why** (failures.parquet of every stage; reason codes of `datakit.manifest.REASONS`):",
                    "", *_table(["stage", "reason", "count", "meaning"],
                                ([s, r, int(n), _meaning(r)] for (s, r), n in sorted(counts.items())))]


def _queries(df: pd.DataFrame, fails: pd.DataFrame) -> Lines:
    if "query" not in df.columns:
        return []
    stored = _counts(df["query"])
    failed = _counts(fails["query"]) if "query" in fails.columns else {}
    label = {str(q): ", ".join(sorted(set(g.astype(str)))) for q, g in df.groupby("query")["label"]}
    names = sorted(set(stored) | set(failed), key=lambda q: (label.get(q, ""), q))
    rows = [[q, label.get(q, ""), stored.get(q, 0) + failed.get(q, 0), stored.get(q, 0), failed.get(q, 0)] for q in names]
    return [f"**Queries** ({len(names)}):", "", *_table(["query", "label", "returned", "stored", "failed"], rows)]


def preprocessing(run: RunFiles, project: Path, fig: dict[str, Any]) -> Lines:
    lines = ["## Preprocessing, cleaning and labelling", ""]
    rep = run.report("dedup")
    if rep is not None:
        keys = ("signals", "threshold", "crop_threshold", "embedding_similarity", "embedding_neighbours", "verify",
                "match_threshold", "exact", "keep_policy", "conflict_policy")
        lines += ["**Deduplication** (`datakit dedup`; " + ", ".join(f"{k} {_cell(rep[k])}" for k in keys if k in rep)
                  + f"): removed {_join(rep.get('removed_by_reason') or {})}; {rep.get('conflict_groups', 0)} groups held "
                  "images with different labels. Duplicates are marked `keep=False`, never deleted.", ""]
    else:
        lines += _absent("Deduplication", "reports/dedup.json")
    return lines + _review(run, project, fig) + _licence_gate(run, fig) + _split_audit(run) + _augmentation(run)


def _review(run: RunFiles, project: Path, fig: dict[str, Any]) -> Lines:
    sus, cur, df = run.report("suspects"), run.report("curate") or {}, run.table("curate")
    lines = []
    if sus is not None:
        lines += [f"**Label review.** `datakit suspects` scored {sus.get('scored')} images from their embeddings "
                  f"(out-of-fold probe and neighbours; flag_margin {(sus.get('settings') or {}).get('flag_margin', '?')}) "
                  f"and flagged {sus.get('flagged')} ({_join(sus.get('flagged_by_reason') or {})}) for a person to decide.", ""]
    if df is None or "review_action" not in df.columns:
        return lines + _absent("Review decisions", "curate (no flagged image decided: labels are the queries' as scraped)")
    fig["review"] = actions = {a: int(df["review_action"].eq(a).sum()) for a in ("relabel", "remove", "accept")}
    where = cur.get("decisions_file", "the decisions file")
    text = (f"**Review decisions** applied by `datakit curate` ({_shown(project / str(where), project)}): "
            f"{actions['relabel']} relabelled, {actions['remove']} removed, {actions['accept']} accepted as labelled"
            + (f"; {cur['unknown_images']} decisions name images not in this run" if cur.get("unknown_images") else "") + ".")
    if cur and (project / str(where)).is_file():
        table = pd.read_csv(project / str(where), dtype=str)
        when = table["decided_at"].dropna() if "decided_at" in table.columns else pd.Series(dtype=str)
        text += f" The file holds {len(table)} decisions" + (f", made from {when.min()} to {when.max()}." if len(when) else ".")
    return [*lines, text, ""]


def _licence_gate(run: RunFiles, fig: dict[str, Any]) -> Lines:
    """The rows curate's licence gate (`licenses.allow`) marked keep=False, by licence family."""
    df, rep = run.table("curate"), run.report("curate") or {}
    if df is None or "curate_reason" not in df.columns:
        return _absent("Licence gate", "curate (every licence kept)")
    gated = df[df["curate_reason"].eq(lic.REASON).fillna(False).astype(bool)]
    by_family = _counts(lic.families(gated)) if len(gated) else {}
    fig["licence_gate"] = {"dropped": len(gated), "by_family": by_family}
    allow = (rep.get("licenses") or {}).get("allow")
    allowed = "not recorded" if not allow else "every family" if set(allow) == set(lic.FAMILIES) else ", ".join(allow)
    return [f"**Licence gate** (`licenses.allow`: {allowed}): {len(gated)} images marked keep=False ({lic.REASON})"
            + (f": {_join(by_family)}" if by_family else "") + ".", ""]


def _split_audit(run: RunFiles) -> Lines:
    rep, audit = run.report("split"), run.report("audit")
    lines = []
    if rep is not None:
        lines.append(f"**Split** (`datakit split`): {_join(rep.get('per_split') or {})} images in {rep.get('groups')} "
                     "groups (copies never cross splits)"
                     + (f"; tiny classes: {', '.join(rep['tiny_classes'])}" if rep.get("tiny_classes") else "") + ".")
    if audit is None and rep is not None:
        lines.append("_Not in this run: audit (no check for near-copies across splits)._")
    elif audit is not None:
        lines.append(f"**Audit** (`datakit audit`): {'passed' if audit.get('ok') else 'FAILED'}, {audit.get('leaks', 0)} "
                     f"cross-split leaks (max_leaks {audit.get('max_leaks', 0)}), {audit.get('label_conflicts', 0)} label "
                     "conflicts.")
    return [" ".join(lines), ""] if lines else _absent("Split and audit", "reports/split.json, reports/audit.json")


def _augmentation(run: RunFiles) -> Lines:
    rep, bal = run.report("augment"), run.report("balance")
    lines = []
    if rep is not None:
        made = rep.get("pipeline") or {}
        p, transforms = made.get("params") or {}, ((made.get("pipeline") or {}).get("transform") or {}).get("transforms") or []
        names = ", ".join(f"{t.get('__class_fullname__', '?')} (p={t.get('p')})" for t in transforms) or "none"
        lines.append(f"**Augmentation** (`datakit augment`, preset `{p.get('preset')}`, variants per train image "
                     f"{p.get('variants')}, seed {p.get('seed')}): {names}; {rep.get('variants')} variants of "
                     f"{rep.get('parents')} train images.")
    if bal is not None:
        lines.append(f"**Balance** (`datakit balance`, strategy `{bal.get('strategy')}`): rows added "
                     f"{_join(bal.get('rows_added') or {})}, {bal.get('rows_undersampled', 0)} undersampled; imbalance "
                     f"{bal.get('imbalance_before')} → {bal.get('imbalance_after')}." + (f" {bal['note']}." if bal.get("note") else ""))
    return [" ".join(lines), ""] if lines else _absent("Augmentation", "augment and balance (no variant, no resampling)")


def uses(run: RunFiles, licences: Mapping[str, Any] | None, fig: dict[str, Any]) -> Lines:
    classes = fig["classes"]
    lines = ["## Uses", "", "**Intended use.** Training and evaluating image classifiers that tell apart "
             + (f"the {len(classes)} classes {', '.join(classes)}" if classes else "the classes above")
             + ", on images like these (see Collection process). Other uses are not covered by this datasheet.", "",
             "**Cautions drawn from the data:**", ""]
    cautions = []
    noise = fig.get("noise")
    if noise:
        worst = max((noise["by_label"] or {}).items(), key=lambda kv: kv[1].get("estimated_noise", 0), default=None)
        decided = sum((fig.get("review") or {}).values())
        cautions.append(f"About {_pct(noise['overall'])} of labels look wrong before review"
                        + (f" (most in `{worst[0]}`: {_pct(worst[1].get('estimated_noise'))})" if worst else "")
                        + (f"; {decided} images have been reviewed." if decided else "; none has been reviewed yet."))
    per = fig.get("per_split") or {}
    few = {c: v.get("test", 0) for c, v in per.items() if v.get("test", 0) < FEW_TEST}
    if few:
        cautions.append(f"Classes with fewer than {FEW_TEST} test images (per-class test figures are noisy): {_join(few)}.")
    totals = [sum(v.values()) for v in per.values()]
    if totals and min(totals) and max(totals) / min(totals) > 1.5:
        cautions.append(f"The classes are imbalanced: {max(totals)} vs {min(totals)} images.")
    final = final_rows(run)
    df = final[1] if final is not None else pd.DataFrame()
    if "provider" in df.columns and df["provider"].eq("synthetic").any():
        cautions.append(f"{int(df['provider'].eq('synthetic').sum())} images are rendered by the `synthetic` provider "
                        "(demo and test data), not photographs: not for real-world use.")
    gps = df["has_gps"].astype("boolean").fillna(False).astype(bool) if "has_gps" in df.columns else pd.Series(dtype=bool)
    if gps.any():
        cautions.append(f"{int(gps.sum())} images carry GPS coordinates in their metadata (`has_gps`): strip the "
                        "EXIF data before publishing them.")
    obligations = [str(w).partition(":")[0] for w in (licences or {}).get("warnings") or []]
    if obligations:
        cautions.append(f"Licence obligations (see Distribution): {', '.join(obligations)}.")
    audit = run.report("audit")
    if audit is not None and not audit.get("ok"):
        cautions.append(f"The audit failed: {audit.get('leaks')} near-copies cross splits, so test figures are optimistic.")
    fig["cautions"] = cautions
    return [*lines, *([f"- {c}" for c in cautions] or ["- None found in the files this run wrote."]), ""]


def distribution(run: RunFiles, licences: Mapping[str, Any] | None, out: Path, project: Path) -> Lines:
    lines = ["## Distribution", ""]
    final = final_rows(run)
    if final is None or licences is None:
        return lines + _absent("Licences", "any manifest: the licences are unknown")
    stage = final[0]
    by_split = licences.get("by_split") or {}
    splits = [s for s in by_split if s != lic.NO_SPLIT]
    rows = [[f, lic.MEANING.get(f, ""), *(by_split[s].get(f, 0) for s in splits), n]
            for f, n in licences["families"].items() if n]
    warnings = licences.get("warnings") or []
    lines += [f"**Licences** of the {licences['images']} kept images of `{stage}`, by family (`datakit.licences`):", "",
              *_table(["family", "what it asks", *splits, "total"], rows),
              "Named by the providers as: " + _join(licences.get("licenses") or {}) + ".", "",
              *(["**Obligations:**", "", *(f"- {w}" for w in warnings)] if warnings else
                ["**Obligations:** none: every image is in the public domain."]), ""]
    places = (out.parent, out.parent.parent, run.stages.get("split", out.parent).parent / "credits")  # credits' --out
    att = next((p / lic.ATTRIBUTION_MD for p in places if (p / lic.ATTRIBUTION_MD).is_file()), None)
    folder = _shown(run.stages.get(stage, Path(stage)), project) if stage == "split" else "SPLIT"
    return lines + ["**Attribution.** " + (f"See [{_rel(att, out)}]({_rel(att, out)})" if att
                    else f"`datakit credits {folder} --out DIR` writes {lic.ATTRIBUTION_MD} and {lic.ATTRIBUTION_CSV}")
                    + " (per image: title, creator, licence, licence URL, source page)"
                    + (": it needs a split, not in this run." if folder == "SPLIT" and not att else "."), ""]


def maintenance(run: RunFiles, project: Path, git: dict[str, Any] | None, out: Path, fig: dict[str, Any]) -> Lines:
    """How to get this version back, from the data's own DVC hashes. Not the commit the run was
    built on: the datasheet is a pipeline output, so the commit that will hold it does not exist
    yet, and naming HEAD would make the same data give another datasheet in every commit (and
    `dvc.lock` change on every fresh clone). The hash of the split finds its commit instead."""
    lines = ["## Maintenance: how to get this exact version", ""]
    lock = project / "dvc.lock"
    fig["dvc_lock"] = hashes = lock_outs(lock, {k: v for k, v in run.stages.items() if v.is_dir()}) if lock.is_file() else {}
    remotes, default = dvc_remotes(project)
    fig["remotes"] = remotes
    if git is None:
        lines += ["**Git.** Not a git work tree: this version can only be kept as these folders. _(fill in: where this "
                  "dataset version is kept)_", ""]
    if hashes:
        lines += [f"**Data** as DVC recorded it (`{_shown(lock, project)}`, written by the last `dvc repro` or `dvc commit`):",
                  "", *_table(["stage", "out", "md5", "files"],
                              ([n, h["path"], h["md5"], h.get("nfiles")] for n, h in sorted(hashes.items())))]
    else:
        lines += ["**Data.** _No dvc.lock in the folder the report ran in lists the stage folders: this data is not "
                  "versioned by DVC here._", ""]
    lines.append("**DVC remote:** " + (", ".join(f"`{n}`" + (f" ({u})" if u else "") + (" (default)" if n == default else "")
                                                for n, u in remotes) + "." if remotes else
                                      "no DVC remote configured (`dvc remote add -d NAME URL`, then `dvc push`): the data "
                                      "is only in this machine's DVC cache."))
    pull = "dvc pull" + (f" -r {remotes[0][0]}" if remotes and default not in dict(remotes) else "")
    if git is None:
        return lines + [""]
    lines += ["", "**To get this version:** the git commit that holds it is the first whose dvc.lock records this "
              "split (commit dvc.lock after `dvc repro`, and `dvc push`), then:", "", "```sh"]
    where = _shown(project, Path(git["top"]))
    if where != ".":
        lines.append(f"cd {where}   # from the repository's root: the folder of dvc.yaml")
    if "split" in hashes:
        lines += [f"git log --format=%H -S {str(hashes['split']['md5']).removesuffix('.dir')} -- "
                  f":/{_shown(lock, Path(git['top']))} | tail -1   # that commit",
                  f"git checkout <that commit> && {pull}"]
    else:
        lines.append(f"git checkout <the commit of this dvc.lock> && {pull}")
    lines += ["```", ""]
    if "split" in hashes:
        lines += [f"The split this datasheet describes is `{hashes['split']['path']}` at DVC hash "
                  f"`{hashes['split']['md5']}`.", ""]
    elif hashes:
        lines += [f"_The split folder is not among the outs of {lock.name}._", ""]
    return lines


# ---------------------------------------------------------------------------------------------


def build_datasheet(run: RunFiles, out: Path, *, project: Path | None = None, params_text: str | None = None,
                    params_name: str = "params.yaml", html: Path | None = None) -> dict[str, Any]:
    """Write DATASHEET.md for the run `run` to `out` and return its figures.

    `project` is the folder git, dvc.lock and .dvc/config are read from (the folder `dvc repro`
    runs the report stage in; default: the current one); `params_text` the params file's text;
    `html` the HTML report (linked, and never counted as an uncommitted change)."""
    out = Path(out)
    project = Path(project) if project is not None else Path.cwd()
    git = git_state(project)
    final = final_rows(run)
    licences = lic.summary(final[1]) if final is not None else None
    classes = sorted(final[1]["label"].astype(str).unique()) if final is not None else []
    # no git state in the figures either: they are the report stage's declared output (report.json)
    fig: dict[str, Any] = {"path": str(out), "licences": licences, "classes": classes}
    head = ["# Datasheet", "", "_After \"Datasheets for Datasets\" (Gebru et al., 2018/2021). Every figure is read by "
            "`datakit report` from this run's stage folders and reports"
            + (f"; the HTML report: [{html.name}]({_rel(html, out)})" if html else "") + "._", ""]
    when = source_date()
    if when:
        head += [f"Generated {when} (SOURCE_DATE_EPOCH).", ""]
    folders = [n for n, p in run.stages.items() if p.is_dir()]
    reports = [n for n in run.stages if run.report(n) is not None]  # not report.json: the report's own figures
    head += [f"Stage folders: {', '.join(folders) or 'none'}. Reports: {', '.join(reports) or 'none'}.", ""]
    body = [*head, *motivation(run, params_text, params_name, fig),
            *composition(run, fig), *collection(run, fig), *preprocessing(run, project, fig),
            *uses(run, licences, fig), *distribution(run, licences, out, project),
            *maintenance(run, project, git, out, fig)]
    text = "\n".join(body).rstrip() + "\n"
    atomic_write_text(out, text)
    fig["bytes"] = len(text.encode("utf-8"))
    return fig


__all__ = ["DATASHEET", "build_datasheet", "dvc_remotes", "final_rows", "git_state", "lock_outs", "source_date"]
