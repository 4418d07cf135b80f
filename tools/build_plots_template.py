#!/usr/bin/env python3
"""Build `src/datakit/templates/dvc_plots.html`: DVC's plots page with vega inlined (no CDN).

`dvc plots show` fills an HTML template: `{plot_divs}` becomes one `<div>` per plot, each with a
`<script>` calling `vegaEmbed(...)`; `{scripts}` becomes DVC's `<script src=cdn.jsdelivr.net/...>`
tags. This page has no `{scripts}`: vega, vega-lite and vega-embed are inlined from their npm
packages (the exact versions and tarball hashes pinned below), so the page renders with no network.

    python tools/build_plots_template.py              fetch the pinned tarballs, write the page
    python tools/build_plots_template.py --check      exit 1 when the committed page differs
    python tools/build_plots_template.py --tarballs DIR   use DIR/<name>-<version>.tgz (offline)

Each library is preceded by an HTML comment with its name, version, the LICENSE text from its
tarball (BSD-3-Clause asks for it in binary redistributions) and the notices of the third-party
code its minified build bundles (read from the build's source map; an unknown one fails the build).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "datakit" / "templates" / "dvc_plots.html"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    build: str  # the minified browser build inside the tarball, relative to package/
    integrity: str  # the registry's dist.integrity (sha512 of the tarball)


# vega 5 / vega-lite 5: the majors of the specs dvc_render emits ($schema vega-lite/v5.json).
# vega 5.33.0 rather than 5.33.1: the 5.33.1 tarball ships without its LICENSE file.
PACKAGES = [
    Package("vega", "5.33.0", "build/vega.min.js",
            "sha512-jNAGa7TxLojOpMMMrKMXXBos4K6AaLJbCgGDOw1YEkLRjUkh12pcf65J2lMSdEHjcEK47XXjKiOUVZ8L+MniBA=="),
    Package("vega-lite", "5.23.0", "build/vega-lite.min.js",
            "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    Package("vega-embed", "6.29.0", "build/vega-embed.min.js",
            "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
]

IDL = "BSD-3-Clause, Copyright University of Washington Interactive Data Lab (the terms above)"
BOSTOCK = "ISC, Copyright Mike Bostock"
# Third-party packages bundled into the builds above, by the licence and holder their packages state.
BUNDLED = {
    **{name: BOSTOCK for name in (
        "d3-array", "d3-color", "d3-delaunay", "d3-dispatch", "d3-dsv", "d3-force", "d3-format",
        "d3-geo-projection", "d3-hierarchy", "d3-interpolate", "d3-path", "d3-quadtree", "d3-scale",
        "d3-shape", "d3-time", "d3-time-format", "d3-timer", "internmap", "topojson-client")},
    "d3-geo": BOSTOCK + "; includes code from GeographicLib, MIT, Copyright Charles Karney",
    "d3-scale-chromatic": BOSTOCK + "; ColorBrewer schemes, Apache-2.0, Copyright Cynthia Brewer, "
                          "Mark Harrower and The Pennsylvania State University",
    "delaunator": "ISC, Copyright Mapbox",
    "robust-predicates": "Unlicense (public domain), Vladimir Agafonkin",
    "fast-json-patch": "MIT, Copyright Joachim Wester",
    "json-stringify-pretty-compact": "MIT, Copyright Simon Lydell",
    "semver": "ISC, Copyright Isaac Z. Schlueter and Contributors",
}
ISC_TEXT = """Permission to use, copy, modify, and/or distribute this software for any purpose with or
without fee is hereby granted, provided that the above copyright notice and this permission
notice appear in all copies. THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL
WARRANTIES WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR
CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS,
WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN
CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE."""
MIT_TEXT = """Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions: The above copyright notice
and this permission notice shall be included in all copies or substantial portions of the
Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE
AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE."""

# DVC fills the template with str.replace on these; none may occur anywhere but where we put them.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
# Text that would end an inline <script> or an HTML comment early.
SCRIPT_BREAKERS = re.compile(r"</script|<!--|<script", re.I)

# After vega-embed: every chart drawn as SVG (crisp, text selectable, testable), and no
# "Open in Vega Editor" action (a page on vega.github.io: the one online link vega-embed offers).
EMBED_DEFAULTS = """\
(function () {
  "use strict";
  var embed = window.vegaEmbed;
  var defaults = {renderer: "svg", actions: {export: true, source: true, compiled: false, editor: false}};
  function offlineEmbed(el, spec, opts) {
    var done = embed(el, spec, Object.assign({}, defaults, opts || {}));
    done.catch(function (err) {
      console.error("datakit plots: " + el + " was not drawn: " + err);
      var node = typeof el === "string" ? document.querySelector(el) : el;
      if (node) {
        var msg = document.createElement("p");
        msg.className = "plot-error";
        msg.textContent = "not drawn: " + err;
        node.appendChild(msg);
      }
    });
    return done;
  }
  Object.assign(offlineEmbed, embed);
  window.vegaEmbed = offlineEmbed;
})();"""

STYLE = """\
:root { color-scheme: light; --ink: #1f2430; --muted: #5b6372; --line: #d9dde5; --card: #fff; --bg: #f4f5f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { padding: 20px 28px 8px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; color: var(--muted); font-size: 13px; }
main.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr));
             gap: 18px; padding: 16px 28px 32px; align-items: start; }
main.plots > div { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
                   padding: 14px; overflow-x: auto; min-height: 80px; }
main.plots > div img { max-width: 100%; }
.plot-error { color: #b00020; font-weight: 600; }
.vega-embed { width: 100%; }
.vega-embed summary { opacity: 0.6; }
@media print { body { background: #fff; } main.plots > div { break-inside: avoid; } }"""

# No connection of any kind: scripts and styles only inline, images from files or data: URLs.
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src file: data: blob:")


def fail(msg: str) -> None:
    print(f"build_plots_template: {msg}", file=sys.stderr)
    raise SystemExit(1)


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tarball(pkg: Package, local: Path | None) -> bytes:
    """The package's npm tarball (from `local` when given), checked against its pinned hash."""
    name = f"{pkg.name}-{pkg.version}.tgz"
    if local is not None:
        path = local / name
        if not path.is_file():
            fail(f"{path} is missing (npm pack {pkg.name}@{pkg.version} writes it)")
        data = path.read_bytes()
    else:
        url = f"{REGISTRY}/{pkg.name}/-/{name}"
        with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - the fixed https registry
            data = resp.read()
    if sri(data) != pkg.integrity:
        fail(f"{name}: hash {sri(data)} is not the pinned {pkg.integrity}")
    return data


def member(data: bytes, path: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        try:
            f = tar.extractfile("package/" + path)
        except KeyError:
            f = None
        if f is None:
            fail(f"the tarball has no package/{path}")
        return f.read().decode("utf-8")


def bundled(source_map: str) -> list[str]:
    """Third-party packages a build bundles: the `node_modules/<name>` of its source map's sources."""
    names = set()
    for src in json.loads(source_map)["sources"]:
        found = re.findall(r"node_modules/((?:@[^/]+/)?[^/]+)", src)
        if found:
            names.add(found[-1])
        else:  # the monorepo's own packages: ../../vega-foo/src/...
            m = re.match(r"(?:\.\./)+(vega[-a-z]*)/", src)
            if m:
                names.add(m.group(1))
    return sorted(names)


def notice(pkg: Package, licence: str, deps: list[str]) -> str:
    lines = [f"{pkg.name} {pkg.version} (https://www.npmjs.com/package/{pkg.name}): its build {pkg.build}, "
             "inlined without its sourceMappingURL line. Licence (package/LICENSE):", "", licence.strip(), ""]
    groups: dict[str, list[str]] = {}
    for dep in deps:
        if dep == pkg.name:
            continue
        if dep.startswith("vega"):
            groups.setdefault(IDL, []).append(dep)
        elif dep in BUNDLED:
            groups.setdefault(BUNDLED[dep], []).append(dep)
        else:
            fail(f"{pkg.name} {pkg.version} bundles {dep}, whose licence is not recorded in BUNDLED: check it")
    if groups:
        lines.append("This build bundles (the packages its source map names):")
        lines += [f"  {', '.join(names)}: {licence_of}" for licence_of, names in groups.items()]
        kinds = " ".join(groups)
        if "ISC" in kinds:
            lines += ["", "ISC licence: " + ISC_TEXT]
        if "MIT" in kinds:
            lines += ["", "MIT licence: " + MIT_TEXT]
    return "\n".join(lines).replace("--", "- -")  # "--" has no place inside an HTML comment


def strip_source_map(js: str) -> str:
    """The code without `//# sourceMappingURL=...` (the map is not shipped; a browser must not look for it)."""
    return re.sub(r"(?m)^//# sourceMappingURL=\S*\s*$", "", js).strip()


def check_js(pkg: Package, js: str) -> None:
    for ph in PLACEHOLDERS:
        if ph in js:
            fail(f"{pkg.name} {pkg.version} {pkg.build} contains {ph!r}: DVC would replace it inside the code")
    m = SCRIPT_BREAKERS.search(js)
    if m:
        fail(f"{pkg.name} {pkg.version} {pkg.build} contains {m.group(0)!r}: it cannot be inlined in a <script>")


def page(parts: list[tuple[Package, str, str]]) -> str:
    """The whole template: `parts` are (package, notice, minified code)."""
    head = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">', "{refresh_tag}",
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>datakit plots</title>",
            "<!-- Written by tools/build_plots_template.py (datakit); DVC fills it on `dvc plots show`. -->",
            "<style>", STYLE, "</style>"]
    for pkg, text, js in parts:
        head += [f"<!--\n{text}\n-->", f'<script data-package="{pkg.name}@{pkg.version}">', js.strip(), "</script>"]
    head += ["<script>", EMBED_DEFAULTS, "</script>", "</head>"]
    versions = ", ".join(f"{p.name} {p.version}" for p, _, _ in parts)
    body = ["<body>", "<header>", "<h1>datakit plots</h1>",
            f"<p>Written by <code>dvc plots show</code>. {versions} are inside this page: it needs no network.</p>",
            "</header>", '<main class="plots">', "{plot_divs}", "</main>", "</body>", "</html>", ""]
    return "\n".join(head + body)


def check_page(html: str) -> None:
    if html.count("{plot_divs}") != 1:
        fail("the page must hold {plot_divs} exactly once")
    if html.count("{refresh_tag}") != 1 or "{scripts}" in html:
        fail("the page must hold {refresh_tag} once and {scripts} never (DVC would add CDN scripts there)")
    if re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I):
        fail("the page links to the network")


def build(local: Path | None) -> str:
    parts = []
    for pkg in PACKAGES:
        data = tarball(pkg, local)
        js = strip_source_map(member(data, pkg.build))
        check_js(pkg, js)
        deps = bundled(member(data, pkg.build + ".map"))
        parts.append((pkg, notice(pkg, member(data, "LICENSE"), deps), js))
    html = page(parts)
    check_page(html)
    return html


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tarballs", type=Path, help="a folder holding the pinned .tgz files (no download)")
    ap.add_argument("--check", action="store_true", help="build, compare with --out, write nothing")
    args = ap.parse_args(argv)
    html = build(args.tarballs)
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == html
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a fresh build'}")
        return 0 if same else 1
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(html)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(html.encode()) // 1024} KiB): " + ", ".join(f"{p.name} {p.version}" for p in PACKAGES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
