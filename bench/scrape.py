#!/usr/bin/env python3
"""Download benchmark: datakit scrape against img2dataset on the same loopback URL list.

What it does, in one run:

1. makes (or reuses) its own virtualenv with img2dataset, Pillow and aiohttp
   (bench/requirements-peers.txt), then re-runs itself inside it;
2. makes (or reuses) a corpus of N distinct small JPEGs (bench/_corpus.py) and serves it from
   nginx on 127.0.0.1 (an aiohttp static server in its own process when nginx is unavailable);
3. runs each client into a fresh folder, timed from process start to exit, ``--repeat`` times,
   interleaved: img2dataset with its defaults (resize + re-encode), img2dataset with re-encoding
   off (it then validates nothing), ``datakit scrape --provider urls`` (full validation: complete
   decode, hashing, manifest), and a bare aiohttp loop that only writes bytes (upper bound);
4. checks what each client stored, prints images/s (median) and the ratios
   datakit / img2dataset-defaults (goal >= 2) and datakit / img2dataset-no-reencode (goal >= 1).

Run from anywhere with any Python 3.9+ (only the standard library is needed before the re-run):

    python3 bench/scrape.py                    # N = 20,000, one repeat
    python3 bench/scrape.py --n 500            # quick smoke run
    python3 bench/scrape.py --repeat 3 --json bench-out/scrape.json

Everything stays on 127.0.0.1. See bench/README.md.
"""

# The bench starts the processes it measures, with command lines it builds itself, and opens
# only http://127.0.0.1 URLs:
# ruff: noqa: S603, S606, S607, S310

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REQUIREMENTS = BENCH_DIR / "requirements-peers.txt"
IN_VENV_FLAG = "DATAKIT_BENCH_IN_VENV"

CLIENTS = ("img2dataset-defaults", "img2dataset-no-reencode", "datakit", "bare-aiohttp")
GOALS = {"img2dataset-defaults": 2.0, "img2dataset-no-reencode": 1.0}

# img2dataset settings of shared/reference/perf-baselines.md: 2 processes x 64 threads.
I2D_PROCESSES = 2
I2D_THREADS = 64
BARE_CONCURRENCY = 64


# --------------------------------------------------------------------------------------------
# The datakit command line. The CLI is young: adjust here, and only here.
# --------------------------------------------------------------------------------------------

# Written to WORK/datakit-params.yaml and passed with --params (JSON is YAML). Everything is
# datakit's default (full decode, hashing, atomic store, manifest) except the per-host cap: the
# whole corpus sits on one loopback host, img2dataset opens 2 x 64 connections to it, and
# datakit's polite default of 8 per host is meant for other people's servers.
DATAKIT_SCRAPE_PARAMS: dict = {"scrape": {"fetch": {"per_host": 64, "concurrency": 128}}}


def datakit_command(datakit: Path, urls_parquet: Path, out: Path, params_file: Path | None) -> list[str]:
    """The datakit run being measured: every URL of the list, full validation on."""
    cmd = [str(datakit), "scrape", "--provider", "urls", "--source", str(urls_parquet)]
    cmd += ["--allow-private"]  # the server is on 127.0.0.1
    cmd += ["--out", str(out)]
    if params_file is not None:
        cmd += ["--params", str(params_file)]
    return cmd


# --------------------------------------------------------------------------------------------
# Stage 0: the bench's own virtualenv (standard library only)
# --------------------------------------------------------------------------------------------


def _requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure_venv(venv: Path) -> Path:
    """Create or reuse the peer virtualenv; reinstall when requirements-peers.txt changed."""
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements.sha256"
    digest = _requirements_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"bench venv: creating {venv} (img2dataset and friends, from {REQUIREMENTS.name})", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["/usr/bin/env", "python3", "-m", "venv", "--clear", str(venv)], check=True)
    log = venv / "pip-install.log"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    with open(log, "wb") as f:
        done = subprocess.run(pip, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        sys.exit(f"bench venv: pip install failed (full log: {log})")
    check = [str(python), "-c", "import img2dataset, aiohttp, PIL, pyarrow"]
    subprocess.run(check, check=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    stamp.write_text(digest + "\n")
    return python


def reexec_in_venv(args: argparse.Namespace) -> None:
    venv = args.venv.resolve()
    python = ensure_venv(venv)
    env = dict(os.environ, **{IN_VENV_FLAG: "1"})
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# --------------------------------------------------------------------------------------------
# Loopback server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_nginx() -> str | None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx or os.geteuid() != 0 or not shutil.which("apt-get"):
        return nginx
    print("server: nginx missing, installing it with apt-get", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env, **quiet)
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {state}/nginx.pid;
error_log {state}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ image/jpeg jpg jpeg; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path {state}/tmp/body;
    proxy_temp_path {state}/tmp/proxy;
    fastcgi_temp_path {state}/tmp/fastcgi;
    uwsgi_temp_path {state}/tmp/uwsgi;
    scgi_temp_path {state}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name localhost;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
}}
"""


@dataclass
class Server:
    kind: str
    port: int
    proc: subprocess.Popen
    error_log: Path | None = None

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_lines(self) -> int:
        """How many lines nginx has logged at error level or worse (0 for the aiohttp server)."""
        if self.error_log is None or not self.error_log.exists():
            return 0
        with open(self.error_log, "rb") as f:
            return sum(1 for line in f if any(t in line for t in (b"[error]", b"[crit]", b"[alert]", b"[emerg]")))

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # nginx: QUIT is a graceful stop; aiohttp: INT stops run_app.
            self.proc.send_signal(signal.SIGQUIT if self.kind == "nginx" else signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(kind: str, corpus: Path, work: Path, workers: str) -> Server:
    port = free_port()
    if kind in ("auto", "nginx"):
        nginx = ensure_nginx()
        if nginx:
            state = work / "nginx"
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (state / "tmp" / sub).mkdir(parents=True, exist_ok=True)
            user = ""
            if os.geteuid() == 0:  # workers would drop to "nobody", who may not read WORK
                import grp
                import pwd

                user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
            (state / "error.log").write_text("")  # this run's errors only
            conf = state / "nginx.conf"
            conf.write_text(NGINX_CONF.format(workers=workers, state=state, user=user, port=port, root=corpus))
            cmd = [nginx, "-p", str(state), "-e", str(state / "error.log"), "-c", str(conf)]
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            server = Server("nginx", port, proc, state / "error.log")
            if wait_ready(server):
                return server
            server.stop()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            print(f"server: nginx did not start ({err.strip()[:300]}); falling back to aiohttp", flush=True)
        elif kind == "nginx":
            sys.exit("server: nginx requested but not available")
        else:
            print("server: nginx not available; falling back to aiohttp", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_serve", str(corpus), str(port)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("aiohttp", port, proc)
    if not wait_ready(server):
        server.stop()
        sys.exit("server: the aiohttp static server did not start")
    return server


def wait_ready(server: Server, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.base_url()}/000000.jpg", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def serve_aiohttp(corpus: str, port: int) -> None:
    """Fallback server (runs in its own process): static files, no access log."""
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", corpus)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --------------------------------------------------------------------------------------------
# Upper bound: a bare aiohttp loop that only writes bytes
# --------------------------------------------------------------------------------------------


def bare_loop(urls_txt: str, out: str, concurrency: int) -> None:
    import asyncio

    import aiohttp

    urls = Path(urls_txt).read_text().split()
    Path(out).mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        todo = iter(enumerate(urls))
        failed = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def worker() -> None:
                nonlocal failed
                for i, url in todo:
                    try:
                        async with session.get(url) as resp:
                            body = await resp.read()
                            if resp.status != 200:
                                failed += 1
                                continue
                        with open(f"{out}/{i:06d}.jpg", "wb") as f:
                            f.write(body)
                    except (aiohttp.ClientError, TimeoutError):
                        failed += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(json.dumps({"failed": failed}))

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Running and timing one client
# --------------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU of a live process and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def system_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


@dataclass
class RunResult:
    client: str
    wall_s: float
    cpu_s: float  # the client's processes (waited-for children included), not the server's
    server_cpu_s: float
    stored: int
    failed: int
    exit_code: int | None
    other_cpu_s: float = 0.0  # CPU the rest of the machine used meanwhile (other jobs: noise)
    steal_s: float = 0.0
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)

    def img_per_s(self) -> float | None:
        if self.timed_out or self.wall_s <= 0:
            return None
        return self.stored / self.wall_s


def run_timed(cmd: list[str], log: Path, timeout: float, cwd: Path, env: dict) -> tuple[float, float, int | None, bool]:
    """Run cmd, wall clock from spawn to exit; kill its process group after `timeout` s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as logf:
        logf.write(("$ " + " ".join(cmd) + "\n").encode())
        logf.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        done: dict = {}

        def reap() -> None:  # wait4 gives the child's rusage, its reaped children included
            _, status, usage = os.wait4(proc.pid, 0)
            done["t"] = time.perf_counter()
            done["status"] = status
            done["cpu"] = usage.ru_utime + usage.ru_stime

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        waiter.join(timeout)
        timed_out = waiter.is_alive()
        if timed_out:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                waiter.join(5)
                if not waiter.is_alive():
                    break
            waiter.join()
        proc.returncode = os.waitstatus_to_exitcode(done["status"])  # keep Popen from waiting again
        return done["t"] - t0, done["cpu"], proc.returncode, timed_out


def count_files(folder: Path, suffixes: tuple[str, ...]) -> int:
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(1 for f in files if f.lower().endswith(suffixes))
    return n


def check_img2dataset(out: Path, n: int) -> tuple[int, int, list[str]]:
    stored = failed = count = 0
    for stats_file in sorted(out.glob("*_stats.json")):
        stats = json.loads(stats_file.read_text())
        stored += int(stats.get("successes", 0))
        count += int(stats.get("count", 0))
    failed = count - stored
    notes = []
    if count != n:
        notes.append(f"img2dataset stats cover {count} of {n} URLs")
    on_disk = count_files(out, (".jpg", ".jpeg", ".png", ".webp"))
    if on_disk != stored:
        notes.append(f"{on_disk} image files on disk vs {stored} successes in stats")
    return stored, failed, notes


def check_datakit(out: Path, n: int) -> tuple[int, int, list[str]]:
    import pyarrow.parquet as pq

    manifest = out / "manifest.parquet"
    if not manifest.exists():
        return 0, n, [f"no {manifest}"]
    table = pq.read_table(manifest)
    stored = table.num_rows
    notes = []
    if "image_id" in table.column_names:
        distinct = len(set(table.column("image_id").to_pylist()))
        if distinct != stored:
            notes.append(f"{distinct} distinct image_id for {stored} rows")
    else:
        notes.append("manifest has no image_id column")
    failures = out / "failures.parquet"
    failed = pq.read_metadata(failures).num_rows if failures.exists() else 0
    if stored != n:
        notes.append(f"manifest has {stored} rows, expected {n}")
    return stored, failed, notes


def check_bare(out: Path, n: int) -> tuple[int, int, list[str]]:
    stored = count_files(out, (".jpg",))
    return stored, n - stored, []


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def write_url_lists(work: Path, base_url: str, n: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _corpus import file_name, label_of

    urls = [f"{base_url}/{file_name(i)}" for i in range(n)]
    labels = [label_of(i) for i in range(n)]
    paths = {"txt": work / "urls.txt", "csv": work / "urls.csv", "parquet": work / "urls.parquet"}
    paths["txt"].write_text("\n".join(urls) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "label"])
        w.writerows(zip(urls, labels, strict=True))
    pq.write_table(pa.table({"url": urls, "label": labels}), paths["parquet"])
    return paths


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.pop(IN_VENV_FLAG, None)
    env.pop("VIRTUAL_ENV", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # img2dataset imports albumentations: no version check online
    return env


def img2dataset_command(venv: Path, urls_txt: Path, out: Path, n: int, reencode: bool) -> list[str]:
    # 10,000 per shard is img2dataset's default; fewer for small N so both processes get work.
    shard = max(1, min(10_000, -(-n // I2D_PROCESSES)))
    cmd = [
        str(venv / "bin" / "img2dataset"),
        f"--url_list={urls_txt}",
        "--input_format=txt",
        f"--output_folder={out}",
        "--output_format=files",
        f"--processes_count={I2D_PROCESSES}",
        f"--thread_count={I2D_THREADS}",
        f"--number_sample_per_shard={shard}",
    ]
    if not reencode:  # no decode, no resize, no re-encode: bytes straight to disk
        cmd += ["--resize_mode=no", "--disable_all_reencoding=True"]
    return cmd


def lock_work(work: Path) -> object:
    """Hold WORK/.lock for the whole run: two runs sharing WORK would share the server config,
    the URL lists and the output folders, and each would spoil the other's timings."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    handle = open(work / ".lock", "w")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another bench run is using {work}; wait for it, or pass another --work")
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def run_bench(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(BENCH_DIR))
    from _corpus import ensure_corpus

    work: Path = args.work.resolve()
    _lock = lock_work(work)  # noqa: F841 - kept open for the run
    venv: Path = args.venv.resolve()
    n: int = args.n
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        sys.exit(f"unknown client(s) {sorted(unknown)}; choose from {', '.join(CLIENTS)}")
    datakit_bin = args.datakit.resolve()
    if "datakit" in clients and not datakit_bin.exists():
        print(f"datakit: {datakit_bin} not found (run `make venv` in the repo root); skipping datakit", flush=True)
        clients.remove("datakit")

    out_root: Path = args.out_root or work
    out_root.mkdir(parents=True, exist_ok=True)
    corpus_dir = work / "corpus"
    t0 = time.perf_counter()
    ensure_corpus(corpus_dir, n, log=lambda m: print(m, flush=True))
    corpus_bytes = sum((corpus_dir / f"{i:06d}.jpg").stat().st_size for i in range(n))
    print(
        f"corpus: {n} JPEGs, mean {corpus_bytes / n / 1024:.1f} KB, in {corpus_dir} ({time.perf_counter() - t0:.1f} s)"
    )

    params_file = args.datakit_params
    if params_file is None and DATAKIT_SCRAPE_PARAMS:
        params_file = work / "datakit-params.yaml"
        params_file.write_text(json.dumps(DATAKIT_SCRAPE_PARAMS, indent=2) + "\n")

    server = start_server(args.server, corpus_dir, work, args.server_workers)
    results: list[RunResult] = []
    try:
        print(f"server: {server.kind} on {server.base_url()} (pid {server.proc.pid})", flush=True)
        lists = write_url_lists(work, server.base_url(), n)
        for i in range(n):  # warm the page cache so the first client is not the one paying for it
            (corpus_dir / f"{i:06d}.jpg").read_bytes()
        env = child_env()

        def command_for(client: str, out: Path) -> tuple[list[str], object]:
            if client == "img2dataset-defaults":
                return img2dataset_command(venv, lists["txt"], out, n, reencode=True), check_img2dataset
            if client == "img2dataset-no-reencode":
                return img2dataset_command(venv, lists["txt"], out, n, reencode=False), check_img2dataset
            if client == "datakit":
                return datakit_command(datakit_bin, lists["parquet"], out, params_file), check_datakit
            exe = [
                sys.executable,
                str(Path(__file__).resolve()),
                "_bare",
                str(lists["txt"]),
                str(out),
                str(BARE_CONCURRENCY),
            ]
            return exe, check_bare

        for rep in range(args.repeat):
            for client in clients:
                out = out_root / f"out-{client}"
                shutil.rmtree(out, ignore_errors=True)
                os.sync()  # earlier runs' writes should not be flushed on this run's clock
                cmd, check = command_for(client, out)
                server_cpu0, server_err0 = server.cpu_seconds(), server.error_lines()
                busy0, steal0 = system_busy_seconds()
                wall, cpu, code, timed_out = run_timed(
                    cmd, work / "logs" / f"{client}-{rep + 1}.log", args.timeout, work, env
                )
                server_cpu = server.cpu_seconds() - server_cpu0
                busy1, steal1 = system_busy_seconds()
                other_cpu = max(0.0, busy1 - busy0 - cpu - server_cpu)
                stored, failed, notes = check(out, n)
                server_errors = server.error_lines() - server_err0
                if server_errors:
                    notes.append(f"server logged {server_errors} errors ({server.error_log})")
                if code != 0:
                    notes.append(f"exit code {code} (log: {work / 'logs' / f'{client}-{rep + 1}.log'})")
                if timed_out:
                    notes.append(f"killed after {args.timeout:.0f} s")
                if other_cpu > 0.15 * wall:
                    notes.append(f"other processes used {other_cpu:.1f} CPU-s meanwhile: noisy")
                r = RunResult(
                    client, wall, cpu, server_cpu, stored, failed, code, other_cpu, steal1 - steal0, timed_out, notes
                )
                results.append(r)
                rate = r.img_per_s()
                print(
                    f"run {rep + 1}/{args.repeat} {client:<24} {wall:7.2f} s  stored {stored}/{n}  failed {failed}"
                    f"  {'n/a' if rate is None else f'{rate:,.0f}'} img/s"
                    + (f"  [{'; '.join(notes)}]" if notes else ""),
                    flush=True,
                )
                if args.out_root is not None:  # a RAM-backed root: give the memory back
                    shutil.rmtree(out, ignore_errors=True)
                if server.proc.poll() is not None:
                    break
            if server.proc.poll() is not None:
                print(
                    f"server: {server.kind} exited during the runs (see {work / 'nginx'}); stopping early", flush=True
                )
                break
    finally:
        server.stop()

    code = report(args, results, clients, n, server.kind, venv, datakit_bin, params_file)
    return code or (3 if len(results) < args.repeat * len(clients) else 0)


def _median_per_img(seconds: list[float], stored: list[int]) -> float | None:
    return statistics.median(1000 * t / k for t, k in zip(seconds, stored, strict=True)) if stored else None


def report(args, results, clients, n, server_kind, venv, datakit_bin, params_file) -> int:
    summary: dict[str, dict] = {}
    for client in clients:
        runs = [r for r in results if r.client == client]
        if not runs:
            continue
        rates = [r.img_per_s() for r in runs]
        ok = [x for x in rates if x is not None]
        summary[client] = {
            "median_img_per_s": statistics.median(ok) if ok else None,
            "median_wall_s": statistics.median(r.wall_s for r in runs),
            "cpu_ms_per_img": _median_per_img(
                [r.cpu_s for r in runs if r.stored], [r.stored for r in runs if r.stored]
            ),
            "server_cpu_ms_per_img": _median_per_img(
                [r.server_cpu_s for r in runs if r.stored], [r.stored for r in runs if r.stored]
            ),
            "stored": [r.stored for r in runs],
            "failed": [r.failed for r in runs],
            "complete": all(r.stored == n and not r.timed_out and r.exit_code == 0 for r in runs),
            "runs": [
                {
                    "wall_s": round(r.wall_s, 3),
                    "cpu_s": round(r.cpu_s, 3),
                    "server_cpu_s": round(r.server_cpu_s, 3),
                    "other_cpu_s": round(r.other_cpu_s, 3),
                    "steal_s": round(r.steal_s, 3),
                    "stored": r.stored,
                    "failed": r.failed,
                    "exit_code": r.exit_code,
                    "timed_out": r.timed_out,
                    "img_per_s": r.img_per_s(),
                    "notes": r.notes,
                }
                for r in runs
            ],
        }

    print()
    print(
        f"N = {n} images, {args.repeat} run(s) each, median; server {server_kind}, {os.cpu_count()} CPUs;"
        f" outputs under {args.out_root or args.work}"
    )
    header = f"{'client':<26}{'img/s':>9}{'wall s':>9}{'stored':>9}{'failed':>8}{'CPU ms/img':>12}{'server ms/img':>15}"
    print(header)
    print("-" * len(header))
    for client, s in summary.items():
        rate = "n/a" if s["median_img_per_s"] is None else f"{s['median_img_per_s']:,.0f}"
        cpu, srv = (("n/a" if x is None else f"{x:.2f}") for x in (s["cpu_ms_per_img"], s["server_cpu_ms_per_img"]))
        print(
            f"{client:<26}{rate:>9}{s['median_wall_s']:>9.2f}{min(s['stored']):>9}{max(s['failed']):>8}"
            f"{cpu:>12}{srv:>15}"
        )
    print("(CPU ms/img: the client's own processes; server ms/img: the loopback server's.)")

    ratios: dict[str, float | None] = {}
    dk = summary.get("datakit", {}).get("median_img_per_s")
    print()
    for peer, goal in GOALS.items():
        other = summary.get(peer, {}).get("median_img_per_s")
        ratio = dk / other if dk and other else None
        ratios[f"datakit/{peer}"] = ratio
        verdict = "n/a" if ratio is None else ("meets" if ratio >= goal else "BELOW") + f" goal >= {goal:g}"
        print(f"datakit / {peer:<24} {'n/a' if ratio is None else f'{ratio:.2f}x':>7}   ({verdict})")

    exit_code = 0
    if "datakit" in summary and not summary["datakit"]["complete"]:
        print("\nWARNING: datakit did not store every image (see notes above); its figure is not valid.")
        exit_code = 2

    if args.json:
        from importlib.metadata import version

        doc = {
            "bench": "scrape",
            "n": n,
            "repeat": args.repeat,
            "server": server_kind,
            "out_root": str(args.out_root or args.work),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "img2dataset": {"version": version("img2dataset"), "processes": I2D_PROCESSES, "threads": I2D_THREADS},
            "datakit_command": datakit_command(
                datakit_bin, Path("WORK/urls.parquet"), Path("WORK/out-datakit"), params_file
            ),
            "clients": summary,
            "ratios": ratios,
            "goals": {f"datakit/{k}": v for k, v in GOALS.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return exit_code


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=20_000, help="number of images (default 20000)")
    p.add_argument("--repeat", type=int, default=1, help="runs per client; the median is reported (default 1)")
    p.add_argument("--work", type=Path, default=REPO / "bench-out", help="work folder (default <repo>/bench-out)")
    p.add_argument("--venv", type=Path, default=None, help="peer virtualenv (default WORK/.bench-venv)")
    p.add_argument("--datakit", type=Path, default=REPO / ".venv" / "bin" / "datakit", help="datakit executable")
    p.add_argument(
        "--datakit-params",
        type=Path,
        default=None,
        help="params.yaml passed to datakit with --params (default: DATAKIT_SCRAPE_PARAMS in this script, if any)",
    )
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated subset of: {', '.join(CLIENTS)}")
    p.add_argument(
        "--server",
        choices=("auto", "nginx", "aiohttp"),
        default="auto",
        help="loopback server (auto: nginx, else aiohttp)",
    )
    p.add_argument("--server-workers", default="1", help="nginx worker_processes (default 1; 'auto' for one per CPU)")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="kill a client run after this many seconds (default 600)"
    )
    p.add_argument(
        "--out-root",
        type=Path,
        default=None,
        help="where the clients write (default WORK); e.g. /dev/shm/bench to take the disk out of "
        "the comparison (outputs are then deleted after each run is checked)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        p.error("--n and --repeat must be >= 1")
    args.work = args.work.resolve()
    args.venv = (args.venv or args.work / ".bench-venv").resolve()
    if args.json:
        args.json = args.json.resolve()
    if args.out_root:
        args.out_root = args.out_root.resolve()
    if args.datakit_params:
        args.datakit_params = args.datakit_params.resolve()
    return args


def main() -> int:
    # Internal modes, run as child processes inside the bench venv.
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        bare_loop(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_aiohttp(sys.argv[2], int(sys.argv[3]))
        return 0
    args = parse_args(sys.argv[1:])
    if os.environ.get(IN_VENV_FLAG) != "1":
        reexec_in_venv(args)  # replaces this process with the venv's Python
    elif Path(sys.prefix).resolve() != args.venv:
        sys.exit(f"expected to run inside {args.venv}, but sys.prefix is {sys.prefix}")
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
