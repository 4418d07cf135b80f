"""`dvc plots show` in a project made by `datakit init` renders every chart with no network.

The page DVC writes is datakit's template (vega, vega-lite and vega-embed inlined, see
tools/build_plots_template.py); it is opened in headless Chromium with every network scheme
blocked and every request recorded. The plot definitions are the repository's own (dvc.yaml's
top-level `plots:`), fed small CSV files written here (no `dvc repro`: it is slow).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from datakit.project import PLOTS_PAGE, install_plot_templates, plot_templates, plots_page
from tests.e2e.browser import open_page
from tests.e2e.helpers import REPO
from tests.e2e.test_dvc import make_env


def _load_build_script() -> Any:  # tools/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("build_plots_template", REPO / "tools" / "build_plots_template.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


build = _load_build_script()

# The repository's dvc.yaml plots (pipelines/demo/dvc.yaml), with the per-epoch plots on datakit's
# `epochs` template (integer ticks, named axes, a legend).
PLOTS = """
plots:
  - confusion:  # actual on rows, predicted on columns, as in the HTML report
      template: confusion
      x: predicted
      y:
        data/evaluate/predictions.csv: actual
      x_label: predicted
      y_label: actual
  - per_class_recall:
      template: bar_horizontal
      x: recall
      y:
        data/evaluate/per_class.csv: label
  - per_class_precision:
      template: bar_horizontal
      x: precision
      y:
        data/evaluate/per_class.csv: label
  - loss:  # losses and accuracies on separate plots: they do not share a scale
      template: epochs
      x: epoch
      y:
        data/train/history.csv: [train_loss, val_loss]
      x_label: epoch
      y_label: cross-entropy loss
  - accuracy:
      template: epochs
      x: epoch
      y:
        data/train/history.csv: [val_accuracy, val_balanced_accuracy]
      x_label: epoch
      y_label: validation accuracy
  - learning_curve:
      x: n_train
      y:
        data/evaluate/learning_curve.csv: [accuracy, balanced_accuracy]
      x_label: train rows
      y_label: test accuracy
"""
DATA = {
    "data/train/history.csv": "epoch,train_loss,val_loss,val_accuracy,val_balanced_accuracy\n"
                              "1,1.92,1.71,0.41,0.38\n2,1.35,1.30,0.58,0.55\n3,1.02,1.11,0.66,0.64\n",
    "data/evaluate/predictions.csv": "image_id,actual,predicted\n"
                                     + "".join(f"i{n},{a},{p}\n" for n, (a, p) in enumerate(
                                         [("boot", "boot")] * 4 + [("boot", "sandal"), ("sandal", "sandal")] * 3
                                         + [("shirt", "shirt")] * 5 + [("shirt", "boot")])),
    "data/evaluate/per_class.csv": "label,precision,recall,f1,support\n"
                                   "boot,0.80,0.80,0.80,5\nsandal,0.75,1.00,0.86,3\nshirt,1.00,0.83,0.91,6\n",
    "data/evaluate/learning_curve.csv": "n_train,accuracy,balanced_accuracy\n20,0.45,0.41\n40,0.58,0.55\n80,0.66,0.64\n",
}
BLOCKED = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--window-size=1400,2400", "--remote-debugging-port=0"]

# Per plot container (the divs DVC puts in place of {plot_divs}): its chart's size, and every axis
# with its title and tick labels (the charts are SVG: datakit's page asks vega-embed for it).
CHARTS_JS = """
Array.from(document.querySelectorAll('main.plots > div')).map(div => {
  const chart = div.querySelector('svg.marks, canvas.marks');
  const box = chart ? chart.getBoundingClientRect() : {width: 0, height: 0};
  return {
    id: div.id, embedded: div.classList.contains('vega-embed'),
    kind: chart ? chart.tagName.toLowerCase() : null, width: box.width, height: box.height,
    axes: Array.from(div.querySelectorAll('g.role-axis')).map(ax => ({
      aria: ax.getAttribute('aria-label') || '',
      title: Array.from(ax.querySelectorAll('.role-axis-title text')).map(t => t.textContent).join(' '),
      labels: Array.from(ax.querySelectorAll('.role-axis-label text')).map(t => t.textContent),
    })),
    legend: Array.from(div.querySelectorAll('.role-legend-label text')).map(t => t.textContent),
  };
})
"""
DRAWN_JS = """(() => { const divs = Array.from(document.querySelectorAll('main.plots > div'));
  return divs.length > 0 && divs.every(d => { const c = d.querySelector('svg.marks, canvas.marks');
    return c && c.getBoundingClientRect().width > 0 && d.querySelector('.role-axis, .role-legend'); }); })()"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# ---- the page template and the installer (no browser) ------------------------------------------

def test_page_template_is_offline_and_fillable_by_dvc() -> None:
    html = plots_page().read_text(encoding="utf-8")
    assert "{scripts}" not in html  # DVC's CDN <script src> tags would go there
    assert html.count("{plot_divs}") == 1 and html.count("{refresh_tag}") == 1
    markup = re.sub(r"(?s)(<script[^>]*>).*?</script>", r"\1</script>", html)  # the page without the libraries
    assert not re.search(r"""<(script|link|img|iframe)[^>]*\s(src|href)\s*=""", markup, re.I)
    assert "<title>datakit plots</title>" in html
    for pkg in build.PACKAGES:  # each library inlined once, after its name, version and licence
        assert html.count(f'<script data-package="{pkg.name}@{pkg.version}">') == 1
        notice = html.split(f'<script data-package="{pkg.name}@{pkg.version}">')[0].rsplit("<!--", 1)[1]
        assert f"{pkg.name} {pkg.version}" in notice and "Redistribution and use in source and binary forms" in notice
    # DVC fills it with str.replace: what comes out holds the plots and nothing of DVC's CDN
    from dvc_render.html import HTML

    page = HTML(html).with_scripts('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>')
    filled = page.with_element('<div id="p1">x</div>').embed()
    assert '<main class="plots">\n<div id="p1">x</div>\n</main>' in filled and "cdn.jsdelivr" not in filled
    build.check_page(html)


def test_build_refuses_code_that_dvc_would_rewrite_or_that_ends_a_script() -> None:
    pkg = build.PACKAGES[0]
    for bad in ("var a='{plot_divs}';", "x('{scripts}')", "'{refresh_tag}'", "s='</script>'", "s='<!--'"):
        with pytest.raises(SystemExit):
            build.check_js(pkg, "!function(){" + bad + "}();")
    build.check_js(pkg, "!function(){var a={b:1};}();")
    assert build.strip_source_map("a();\n//# sourceMappingURL=vega.min.js.map\n") == "a();"
    with pytest.raises(SystemExit):
        build.notice(pkg, "licence", ["left-pad"])  # a bundled package of unknown licence


def test_plot_templates_fill_every_anchor() -> None:
    """Each JSON template, filled by dvc_render as `dvc plots show` does, leaves no anchor behind."""
    from dvc_render import VegaRenderer

    assert {"epochs.json", "linear_logx.json"} <= set(plot_templates())
    one = [{"epoch": e, "loss": 1.0 / e, "rev": "workspace", "filename": "h.csv", "field": "loss"} for e in (1, 2, 3)]
    two = [{"epoch": e, "dvc_inferred_y_value": v, "rev": "workspace", "filename": "h.csv", "field": f}
           for e in (1, 2, 3) for f, v in (("train_loss", 1.0 / e), ("val_loss", 1.2 / e))]
    cases = {
        "epochs.json": [(one, {"x": "epoch", "y": "loss"}),
                        (two, {"x": "epoch", "y": "dvc_inferred_y_value", "anchors_y_definitions": [
                            {"filename": "h.csv", "field": "train_loss"}, {"filename": "h.csv", "field": "val_loss"}]})],
        "linear_logx.json": [([{"lr": 10.0 ** -k, "smoothed_loss": 1.0 + k / 10, "rev": "workspace",
                                "filename": "lr_find.csv", "field": "smoothed_loss"} for k in range(7)],
                              {"x": "lr", "y": "smoothed_loss"})],
    }
    for name, path in plot_templates().items():
        assert name in cases, f"{name}: add a case here"
        for datapoints, props in cases[name]:
            renderer = VegaRenderer([dict(d) for d in datapoints], "p", template=str(path),
                                    x_label="X", y_label="Y", title="T", **props)
            spec = json.dumps(renderer.get_filled_template())
            assert "<DVC_METRIC" not in spec, (name, re.findall(r"<DVC_METRIC_\w+>", spec))
            assert '"X"' in spec and '"Y"' in spec


def test_install_plot_templates_copies_links_and_sets_the_config(tmp_path) -> None:
    from dvc.config import Config

    env = make_env(tmp_path)
    project = tmp_path / "p"
    project.mkdir()
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], project, env)
    dvc_dir = project / ".dvc"
    written, kept = install_plot_templates(dvc_dir, overwrite=False)
    assert kept == [] and f".dvc/plots/{PLOTS_PAGE}" in written and ".dvc/plots/epochs.json" in written
    assert (dvc_dir / "plots" / PLOTS_PAGE).read_bytes() == plots_page().read_bytes()
    value = Config(dvc_dir=str(dvc_dir), validate=False).load_one("repo")["plots"]["html_template"]
    assert value == f"plots/{PLOTS_PAGE}" and "html_template = plots/datakit.html" in (dvc_dir / "config").read_text()
    assert install_plot_templates(dvc_dir) == ([], [])  # up to date: nothing to do

    (dvc_dir / "plots" / "epochs.json").write_text("{}")  # a user's edit is kept unless overwrite
    assert install_plot_templates(dvc_dir, overwrite=False) == ([], [".dvc/plots/epochs.json"])
    assert install_plot_templates(dvc_dir)[0] == [".dvc/plots/epochs.json"]

    written, _ = install_plot_templates(dvc_dir, link=True)  # a source checkout: no second copies
    link = dvc_dir / "plots" / "epochs.json"
    assert link.is_symlink() and link.resolve() == plot_templates()["epochs.json"].resolve()
    value = Config(dvc_dir=str(dvc_dir), validate=False).load_one("repo")["plots"]["html_template"]
    assert not os.path.isabs(value) and (dvc_dir / value).resolve() == plots_page().resolve()  # as DVC joins it

    with pytest.raises(Exception, match="not a DVC folder"):
        install_plot_templates(tmp_path / "nowhere" / ".dvc")

    # the same from the command line, for an existing project: copies back in place of the links
    out = _run([sys.executable, "-m", "datakit", "init", str(project), "--plots-only"], tmp_path, env).stdout
    assert ("wrote .dvc/plots/epochs.json, .dvc/plots/linear_logx.json, .dvc/config (plots.html_template = "
            "plots/datakit.html)") in " ".join(out.split())
    assert not link.is_symlink() and link.read_bytes() == plot_templates()["epochs.json"].read_bytes()
    assert "up to date" in _run([sys.executable, "-m", "datakit", "init", str(project), "--plots-only"], tmp_path, env).stdout
    bad = subprocess.run([sys.executable, "-m", "datakit", "init", str(tmp_path / "elsewhere"), "--plots-only"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not a DVC folder" in bad.stderr and not (tmp_path / "elsewhere").exists()


# ---- init, dvc plots show, Chromium offline ----------------------------------------------------

async def _drive(workdir: Path, url: str, screenshot: Path) -> dict[str, Any]:
    import base64

    async with open_page(workdir, FLAGS) as page:
        await page.call("Log.enable")
        await page.call("Network.setBlockedURLs", urls=BLOCKED)
        await page.call("Network.setCacheDisabled", cacheDisabled=True)
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1, mobile=False)
        page.events.clear()
        await page.call("Page.navigate", url=url)
        await page.wait_for("Page.loadEventFired", 30)
        drawn = True
        try:
            await page.wait(DRAWN_JS, timeout=30)
        except AssertionError:
            drawn = False
        await asyncio.sleep(0.3)  # late console messages
        charts = await page.eval(CHARTS_JS)
        cdn = await page.eval("document.querySelectorAll('script[src], link[href]').length")
        shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        log_errors = [e["params"]["entry"].get("text", "") for e in page.events
                      if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
        failed = [e["params"] for e in page.events if e.get("method") == "Network.loadingFailed"]
        return {"drawn": drawn, "charts": charts, "requests": page.requests(), "errors": page.errors() + log_errors,
                "failed": failed, "linked": cdn}


def _axis(chart: dict[str, Any], title: str) -> dict[str, Any]:
    found = [a for a in chart["axes"] if a["title"] == title]
    assert found, f"{chart['id']}: no axis titled {title!r} in {[a['title'] for a in chart['axes']]}"
    return found[0]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_dvc_plots_show_renders_every_chart_offline(tmp_path) -> None:
    (tmp_path / "home").mkdir()
    env = make_env(tmp_path / "home")
    project = tmp_path / "proj"
    _run([sys.executable, "-m", "datakit", "init", str(project), "--provider", "synthetic"], tmp_path, env)
    assert "html_template = plots/datakit.html" in (project / ".dvc" / "config").read_text()
    assert (project / ".dvc" / "plots" / "epochs.json").is_file()

    repo_plots = yaml.safe_load((REPO / "pipelines" / "demo" / "dvc.yaml").read_text())["plots"]
    ours = yaml.safe_load(PLOTS)["plots"]
    assert [next(iter(p)) for p in ours] == [next(iter(p)) for p in repo_plots]  # the same plots as the demo
    (project / "dvc.yaml").write_text(PLOTS.lstrip())
    for name, text in DATA.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)

    shown = _run([sys.executable, "-m", "dvc", "plots", "show"], project, env)
    index = project / "dvc_plots" / "index.html"
    assert index.as_uri() in shown.stdout, shown.stdout + shown.stderr
    assert "failed to load" not in shown.stderr.lower(), shown.stderr
    html = index.read_text(encoding="utf-8")
    assert "<title>datakit plots</title>" in html and "cdn.jsdelivr" not in html

    res = asyncio.run(asyncio.wait_for(_drive(tmp_path, index.as_uri(), tmp_path / "plots.png"), 120))
    assert res["requests"] == [index.as_uri()], res["requests"]  # the page itself, nothing else
    assert res["errors"] == [], res["errors"]
    assert res["linked"] == 0
    charts = {c["id"]: c for c in res["charts"]}
    assert set(charts) == {next(iter(p)) for p in ours}, list(charts)
    assert res["drawn"], res["charts"]
    for chart in charts.values():
        assert chart["embedded"] and chart["kind"] == "svg", chart
        assert chart["width"] > 50 and chart["height"] > 50, chart

    for name in ("loss", "accuracy"):
        epoch = _axis(charts[name], "epoch")
        assert epoch["labels"] and all(re.fullmatch(r"\d+", t) for t in epoch["labels"]), epoch
        assert {"1", "3"} <= set(epoch["labels"]), epoch
        assert len(charts[name]["legend"]) == 2, charts[name]  # one entry per metric
    _axis(charts["loss"], "cross-entropy loss")
    _axis(charts["accuracy"], "validation accuracy")
    assert set(charts["loss"]["legend"]) == {"train_loss", "val_loss"}

    actual = _axis(charts["confusion"], "actual")
    assert actual["aria"].startswith("Y-axis"), actual  # actual on rows, as in the HTML report
    assert set(actual["labels"]) == {"boot", "sandal", "shirt"}
    assert _axis(charts["confusion"], "predicted")["aria"].startswith("X-axis")
