"""`datakit review DIR`: a small web app on 127.0.0.1 where a person decides on suspects.

Three queues from a suspects folder: suspects by score (each image with its suggestion), groups
whose duplicates carry different labels (dedup's label conflicts), and near-duplicate groups.
Keyboard first (the page lists the keys): accept, relabel (one key per class), remove, skip,
undo; on a group every action applies to the whole group. Every decision is written at once to
the decisions file (`decisions.py`: atomic rewrite, one writer at a time), so closing the page
loses nothing and reopening resumes at the first undecided item.

Nothing leaves the machine: the server binds 127.0.0.1, the page has no external asset, and
requests whose Host or Origin is not this server are refused (no other site can post decisions).
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.curation import decisions as dec
from datakit.curation.review_page import PAGE_HTML
from datakit.errors import ManifestError

KEYS = "123456789bcdefhijklmnopqrtvwy"  # relabel keys, in class order (a, x, s, u, z, g are actions)


@dataclass
class ReviewData:
    root: Path
    classes: list[str]
    queues: dict[str, list[dict[str, Any]]]
    paths: dict[str, str]  # image_id -> manifest path (root-relative)
    labels: dict[str, str] = field(default_factory=dict)  # image_id -> its label now


def _image(r: Any) -> dict[str, Any]:
    def text(name: str) -> str | None:
        v = getattr(r, name, None)
        return None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)

    score = getattr(r, "score", None)
    return {"image_id": r.image_id, "label": str(r.label), "query": text("query"), "page_url": text("page_url"),
            "provider": text("provider"), "suggested": text("suggested_label"), "reason": text("reason"),
            "score": None if score is None or pd.isna(score) else round(float(score), 3)}


def load(folder: Path, *, max_items: int = 500) -> ReviewData:
    """The queues of a suspects folder (or any stage folder with dedup columns)."""
    from datakit.stage import SCRAPED, load_input

    inp = load_input(folder, needs=(SCRAPED,), check_files=False)
    df = inp.manifest
    queues: dict[str, list[dict[str, Any]]] = {"suspects": [], "conflicts": [], "duplicates": []}
    if "score" in df.columns:
        s = df[df["score"].notna()].sort_values(["flagged", "score"], ascending=[False, False]).head(max_items)
        s = s[s["flagged"] | s["reason"].notna()]
        queues["suspects"] = [{"key": f"s:{r.image_id}", "kind": "suspect", "images": [_image(r)]} for r in s.itertuples()]
    if "dup_group" in df.columns:
        sizes = df.groupby("dup_group")["image_id"].transform("size")
        multi = df[sizes > 1]
        conflict = multi["label_conflict"].fillna(False).astype(bool) if "label_conflict" in multi.columns else pd.Series(False, index=multi.index)
        for name, rows in (("conflicts", multi[conflict]), ("duplicates", multi[~conflict])):
            for g, members in list(rows.groupby("dup_group", sort=True))[:max_items]:
                queues[name].append({"key": f"{name[0]}:{g}", "kind": name[:-1],
                                     "images": [_image(r) for r in members.itertuples()]})
    classes = sorted(set(df["label"].dropna().astype(str)))
    return ReviewData(inp.root, classes, queues, dict(zip(df["image_id"], df["path"], strict=True)),
                      dict(zip(df["image_id"], df["label"].astype(str), strict=True)))


@dataclass
class Server:
    data: ReviewData
    decisions_path: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    undo: list[dict[str, dec.Decision | None]] = field(default_factory=list)
    thumbs: dict[str, bytes] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        decided = dec.read(self.decisions_path)
        return {"classes": self.data.classes, "keys": dict(zip(self.data.classes, KEYS, strict=False)),
                "queues": self.data.queues, "decisions": {k: vars(v) for k, v in decided.items()},
                "undo": len(self.undo)}

    async def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("image_ids")
        action = body.get("action")
        label = body.get("label")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i in self.data.paths for i in ids):
            raise ValueError("image_ids: a list of image ids from this review")
        if action not in dec.ACTIONS:
            raise ValueError(f"action: one of {', '.join(dec.ACTIONS)}")
        if action == "relabel" and label not in self.data.classes:
            raise ValueError(f"label: one of {', '.join(self.data.classes)}")
        reason = str(body.get("reason") or "")[:80]
        async with self.lock:
            current = dec.read(self.decisions_path)  # re-read: the file is the truth
            self.undo.append({i: current.get(i) for i in ids})
            for i in ids:
                own = label if action == "relabel" else self.data.labels.get(i, "")
                current[i] = dec.Decision(i, action, own, reason, dec.now())
            dec.write(self.decisions_path, current)
            return {"decided": len(ids), "total": len(current)}

    async def undo_last(self) -> dict[str, Any]:
        async with self.lock:
            if not self.undo:
                return {"undone": 0}
            previous = self.undo.pop()
            current = dec.read(self.decisions_path)
            for i, before in previous.items():
                if before is None:
                    current.pop(i, None)
                else:
                    current[i] = before
            dec.write(self.decisions_path, current)
            return {"undone": len(previous), "image_ids": list(previous)}

    def thumb(self, image_id: str, size: int = 320) -> bytes:
        if image_id not in self.thumbs:
            from datakit.images import load_image

            rel = self.data.paths.get(image_id)
            if rel is None:
                raise KeyError(image_id)
            im = load_image(self.data.root, rel)
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=85)
            self.thumbs[image_id] = buf.getvalue()
        return self.thumbs[image_id]


def make_app(server: Server) -> Any:
    from aiohttp import web

    @web.middleware
    async def same_origin(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.host.split(":")[0]
        if host not in ("127.0.0.1", "localhost"):
            return web.Response(status=403, text="review serves 127.0.0.1 only")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin not in (f"http://{request.host}",):
                return web.Response(status=403, text="cross-origin request refused")
            if request.content_type != "application/json":
                return web.Response(status=415, text="send JSON")
        return await handler(request)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=PAGE_HTML, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                     "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

    async def state(_: web.Request) -> web.Response:
        return web.json_response(server.state(), headers={"Cache-Control": "no-store"})

    async def decide(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            return web.json_response(await server.decide(body))
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def undo(_: web.Request) -> web.Response:
        return web.json_response(await server.undo_last())

    async def thumb(request: web.Request) -> web.Response:
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, server.thumb, request.match_info["image_id"])
        except (KeyError, OSError, ManifestError, Exception):  # noqa: BLE001 - an unreadable image is a blank tile
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    app = web.Application(middlewares=[same_origin], client_max_size=64 * 1024)
    app.add_routes([web.get("/", index), web.get("/api/state", state), web.post("/api/decide", decide),
                    web.post("/api/undo", undo), web.get("/thumb/{image_id}", thumb)])
    return app


async def serve(server: Server, port: int, ready: Any = None) -> None:
    """Serve until cancelled; `ready(url)` is called once listening."""
    from aiohttp import web

    runner = web.AppRunner(make_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    if ready is not None:
        ready(f"http://127.0.0.1:{bound}/")
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()
