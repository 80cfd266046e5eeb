"""Plant known bugs in a copy of the repository, one at a time, and report those no test catches.

    python tools/mutate.py [--only ID,ID] [--list] [--jobs N] [--json FILE] [--timeout S]
    make mutate

Each mutant of the catalogue (tools/mutants.toml) replaces one exact snippet of one source file.
For each, the repository is copied into a temporary folder (the working tree is never
modified, so an interrupted run leaves nothing planted), the snippet is replaced in the copy,
and the mutant's own test selection runs there with PYTHONPATH pointing at the copy. Before
any mutant, each distinct selection runs once unmutated: a selection that fails (or collects
nothing) without a bug would make every mutant look caught.

Adding a mutant: append a [[mutant]] table to tools/mutants.toml with
    id          short unique name, e.g. "verify-tolerance-5x"
    file        path from the repository root, e.g. "sbexport/verify.py"
    find        the exact source text to replace; it must occur exactly once in the file
                (widen it with surrounding text until it does)
    replace     what to put there: the bug, as small and plausible as a real slip
    description one line: what a user would suffer if this shipped
    tests       test files or node ids that should catch it; keep the selection to seconds
                or a minute (the whole suite takes minutes)
    k           optional pytest -k expression narrowing `tests`
    timeout     optional seconds; default max(--min-timeout, 3 x the unmutated run)
Check it with `python tools/mutate.py --only ID`: it must say killed. If it SURVIVES, the
tests have a gap: write the test that catches it (never weaken the mutant).

Reading the result: one line per mutant as it finishes, then a table.
    killed    a test failed (or the tests could not import the mutated code): good
    SURVIVED  every selected test passed with the bug in place: a gap in the tests
    stale     `find` is no longer in the file (the code moved on): update the catalogue
    timeout   the tests ran past the mutant's timeout (a hang the bug caused, or a slow machine)
    error     the selection fails or collects nothing unmutated, `find` occurs more than
              once, or the replacement does not compile: fix the catalogue entry
Exit status: 0 when every mutant run was killed; 1 when any survived, is stale, timed out or
errored; 2 for bad usage or a bad catalogue.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = Path(__file__).resolve().parent / "mutants.toml"
# Set in every test run this tool starts; a tool started inside one refuses to run, so that a
# test of the tool (or a careless selection) can never recurse into the real catalogue.
GUARD_ENV = "SBEXPORT_MUTATE_RUN"
# Not copied: version control, environments and build output (large, and not what tests read).
SKIP_NAMES = {".git", ".venv", "venv", "artifacts", "build", "dist", "__pycache__", ".pytest_cache"}
# Build output the copies use where it is, named to them by an environment variable: `verify
# --target arm64-qemu`'s setup (`make arm64`; SETUP_ENV of sbexport/targets/arm64.py), which tests
# only read. Without it, a selection running that command fails before any mutant.
SHARED_BUILDS = {"SBEXPORT_ARM64_DIR": "build/arm64"}
FIELDS = {"id": str, "file": str, "find": str, "replace": str, "description": str, "tests": list}
OPTIONAL = {"k": str, "timeout": (int, float)}


class CatalogueError(Exception):
    """The catalogue file is unreadable or an entry is malformed."""


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    description: str
    tests: tuple[str, ...]
    k: str | None = None
    timeout: float | None = None

    @property
    def selection(self) -> tuple[tuple[str, ...], str | None]:
        return self.tests, self.k


@dataclass
class Result:
    id: str
    file: str
    description: str
    status: str                  # killed, SURVIVED, stale, timeout, error
    seconds: float = 0.0
    detail: str = ""             # the failing test, or why it is stale / an error
    selection: str = ""


@dataclass
class Baseline:
    selection: str
    passed: bool = False
    seconds: float = 0.0
    detail: str = ""
    tests: int = 0


# -- catalogue --------------------------------------------------------------------------------

def load_catalogue(path: Path) -> list[Mutant]:
    """The mutants of the TOML file at `path`, in file order; raises CatalogueError naming the
    entry and field that are missing, mistyped or unknown, or a repeated id."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CatalogueError(f"{path}: {e}") from None
    entries = data.get("mutant")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{path}: no [[mutant]] entries")
    mutants, seen = [], set()
    for n, entry in enumerate(entries, 1):
        where = f"{path}: mutant {entry.get('id', f'#{n}')!r}"
        unknown = set(entry) - set(FIELDS) - set(OPTIONAL)
        if unknown:
            raise CatalogueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        for name, kind in {**FIELDS, **OPTIONAL}.items():
            if (name in FIELDS or name in entry) and not isinstance(entry.get(name), kind):
                raise CatalogueError(f"{where}: field {name!r} is missing or of the wrong type")
        if not entry["tests"] or not all(isinstance(t, str) and t for t in entry["tests"]):
            raise CatalogueError(f"{where}: 'tests' must list at least one test path")
        if entry["find"] == entry["replace"] or not entry["find"]:
            raise CatalogueError(f"{where}: 'replace' must differ from a non-empty 'find'")
        if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts:
            # The copy is written to; a path leaving it would plant the bug in the real tree.
            raise CatalogueError(f"{where}: 'file' must be a path inside the repository")
        if entry["id"] in seen:
            raise CatalogueError(f"{where}: id used twice")
        seen.add(entry["id"])
        mutants.append(Mutant(entry["id"], entry["file"], entry["find"], entry["replace"], entry["description"],
                              tuple(entry["tests"]), entry.get("k"), entry.get("timeout")))
    return mutants


def check_snippet(root: Path, mutant: Mutant) -> tuple[str, str]:
    """('ok', '') when `find` occurs exactly once in the mutant's file under `root`, else
    ('stale', why) when it is absent (or the file is gone) or ('error', why) when ambiguous."""
    path = root / mutant.file
    if not path.is_file():
        return "stale", f"{mutant.file} does not exist"
    count = path.read_text(encoding="utf-8").count(mutant.find)
    if count == 0:
        return "stale", f"the snippet is no longer in {mutant.file}"
    if count > 1:
        return "error", f"the snippet occurs {count} times in {mutant.file}; widen it to one"
    return "ok", ""


def describe(selection: tuple[tuple[str, ...], str | None]) -> str:
    tests, k = selection
    return " ".join(tests) + (f" -k {k!r}" if k else "")


# -- one run of a selection in a copy ---------------------------------------------------------

class Runs:
    """Copies the repository and runs pytest in the copy; remembers live processes so that an
    interrupted tool can stop them (each runs in its own session, so Ctrl-C does not reach it)."""

    def __init__(self, root: Path, workdir: Path, python: str):
        self.root, self.workdir, self.python = root, workdir, python
        self.live: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.counter = 0
        self.stopping = False

    def copy(self) -> Path:
        """A fresh copy of the repository inside the work folder."""
        with self.lock:
            self.counter += 1
            dst = self.workdir / f"copy-{self.counter}"
        shutil.copytree(self.root, dst, symlinks=True,
                        ignore=lambda _, names: [n for n in names if n in SKIP_NAMES or n.endswith(".egg-info")])
        return dst

    def pytest(self, copy: Path, selection, timeout: float) -> tuple[int | None, float, str]:
        """Run the selection in `copy`; returns (pytest's exit code or None on timeout,
        seconds, output). The process group is killed on timeout."""
        tests, k = selection
        cmd = [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               f"--basetemp={copy / '.pytest-tmp'}", *tests] + (["-k", k] if k else [])
        env = {**shared_builds(self.root), **os.environ,
               "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", GUARD_ENV: "1"}
        started = time.perf_counter()
        with self.lock:
            if self.stopping:
                raise RuntimeError("stopped")
            proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
            self.live.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            code = None
        finally:
            with self.lock:
                self.live.discard(proc)
        return code, time.perf_counter() - started, out

    def stop_all(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in list(self.live):
                _kill_group(proc)


def shared_builds(root: Path) -> dict[str, str]:
    """SHARED_BUILDS's variables whose folder exists under `root` (the caller's own setting of
    one still wins: it comes later in the copies' environment)."""
    return {name: str(root / path) for name, path in SHARED_BUILDS.items() if (root / path).is_dir()}


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group this tool started for `proc` (pytest and anything it spawned)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_baseline(runs: Runs, selection, timeout: float) -> Baseline:
    """The selection on an unmutated copy: it must pass and run at least one test."""
    base = Baseline(describe(selection))
    copy = runs.copy()
    try:
        code, base.seconds, out = runs.pytest(copy, selection, timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    base.tests = _passed_count(out)
    if code == 0:
        base.passed = True
    elif code is None:
        base.detail = f"the unmutated run took over {timeout:.0f} s"
    elif code == 5:
        base.detail = "the selection collects no test"
    else:
        base.detail = f"fails without any mutation (pytest exit {code}): {_first_failure(out) or _tail(out)}"
    return base


def run_mutant(runs: Runs, mutant: Mutant, timeout: float) -> Result:
    """Plant `mutant` in a fresh copy and run its selection; returns its Result."""
    result = Result(mutant.id, mutant.file, mutant.description, "error", selection=describe(mutant.selection))
    copy = runs.copy()
    try:
        path = copy / mutant.file
        source = path.read_text(encoding="utf-8")
        if source.count(mutant.find) != 1:    # checked before; the tree changed since
            result.status, result.detail = "stale", f"the snippet is no longer once in {mutant.file}"
            return result
        mutated = source.replace(mutant.find, mutant.replace)
        if path.suffix == ".py":
            try:
                compile(mutated, str(path), "exec")
            except SyntaxError as e:
                result.detail = f"the replacement does not compile: {e.msg} (line {e.lineno})"
                return result
        path.write_text(mutated, encoding="utf-8")
        code, result.seconds, out = runs.pytest(copy, mutant.selection, timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    if code is None:
        result.status, result.detail = "timeout", f"still running after {timeout:.0f} s"
    elif code == 0:
        result.status, result.detail = "SURVIVED", f"{_passed_count(out)} tests passed with the bug in place"
    elif code in (1, 2):    # 1: a test failed; 2: collection failed (the mutated module broke an import)
        result.status, result.detail = "killed", _first_failure(out) or _tail(out)
    else:
        result.detail = f"pytest exit {code}: {_tail(out)}"
    return result


def _first_failure(out: str) -> str:
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:160]
    return ""


def _passed_count(out: str) -> int:
    match = re.search(r"(\d+) passed", out)
    return int(match.group(1)) if match else 0


def _tail(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no output)")[:160]


# -- the whole run ----------------------------------------------------------------------------

@dataclass
class Options:
    root: Path
    catalogue: Path
    only: tuple[str, ...] = ()
    jobs: int = 1
    timeout: float | None = None
    min_timeout: float = 60.0
    baseline_timeout: float = 900.0
    python: str = sys.executable
    json_path: Path | None = None


def select(mutants: list[Mutant], only: tuple[str, ...]) -> list[Mutant]:
    if not only:
        return mutants
    known = {m.id for m in mutants}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise CatalogueError(f"no mutant with id {unknown[0]!r}; see --list")
    return [m for m in mutants if m.id in only]


def run_all(opts: Options, mutants: list[Mutant], say=print) -> tuple[list[Result], list[Baseline]]:
    """Check every snippet, run each distinct selection once unmutated, then every mutant
    whose selection passed. Returns the results in catalogue order and the baselines."""
    results: dict[str, Result] = {}
    runnable = []
    for m in mutants:
        status, why = check_snippet(opts.root, m)
        if status == "ok":
            runnable.append(m)
        else:
            results[m.id] = Result(m.id, m.file, m.description, status, detail=why, selection=describe(m.selection))
    selections = list(dict.fromkeys(m.selection for m in runnable))
    workdir = Path(tempfile.mkdtemp(prefix="sbexport-mutate-"))
    runs = Runs(opts.root, workdir, opts.python)
    total, done = len(mutants), len(results)
    for r in results.values():
        say(_progress(done, total, r))
    pool = ThreadPoolExecutor(max_workers=opts.jobs)
    try:
        say(f"running {len(selections)} test selection(s) unmutated first, {opts.jobs} at a time")
        futures = {pool.submit(run_baseline, runs, s, opts.baseline_timeout): s for s in selections}
        baselines = {}
        for f in as_completed(futures):
            b = baselines[futures[f]] = f.result()
            say(f"  baseline {'ok' if b.passed else 'FAILED'} {b.seconds:6.1f} s  {b.selection}"
                f"{'' if b.passed else ': ' + b.detail}")
        todo = []
        for m in runnable:
            base = baselines[m.selection]
            if base.passed:
                todo.append(m)
                continue
            results[m.id] = Result(m.id, m.file, m.description, "error", detail=f"selection {base.detail}",
                                   selection=base.selection)
            done += 1
            say(_progress(done, total, results[m.id]))
        futures = {pool.submit(run_mutant, runs, m, _timeout(opts, m, baselines[m.selection])): m for m in todo}
        for f in as_completed(futures):
            r = results[futures[f].id] = f.result()
            done += 1
            say(_progress(done, total, r))
    finally:
        # On Ctrl-C: cancel what has not started, kill what runs (its own session did not get
        # the signal), wait for the workers, then delete every copy.
        runs.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return [results[m.id] for m in mutants], list(baselines.values())


def _timeout(opts: Options, mutant: Mutant, base: Baseline) -> float:
    if opts.timeout is not None:
        return opts.timeout
    if mutant.timeout is not None:
        return float(mutant.timeout)
    return max(opts.min_timeout, 3 * base.seconds)


def _progress(done: int, total: int, r: Result) -> str:
    return f"[{done:>{len(str(total))}}/{total}] {r.status:<8} {r.id:<34} {r.seconds:6.1f} s  {r.detail}"


def table(results: list[Result]) -> str:
    width = max([len(r.id) for r in results] + [2])
    lines = [f"{'id':<{width}}  {'status':<8} {'seconds':>7}  description / detail", "-" * (width + 60)]
    for r in results:
        lines.append(f"{r.id:<{width}}  {r.status:<8} {r.seconds:>7.1f}  {r.description}")
        if r.status != "killed":
            lines.append(f"{'':<{width}}  {'':<8} {'':>7}    {r.detail}  [{r.selection}]")
    counts = {s: sum(r.status == s for r in results) for s in ("killed", "SURVIVED", "stale", "timeout", "error")}
    lines.append(f"{len(results)} mutants: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def listing(opts: Options, mutants: list[Mutant]) -> str:
    lines = []
    for m in mutants:
        status, why = check_snippet(opts.root, m)
        lines.append(f"{m.id:<34} {status:<6} {m.file}: {m.description}\n{'':<34} tests: {describe(m.selection)}"
                     + (f"\n{'':<34} {why}" if why else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Options, bool]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", metavar="ID,ID", help="run only these mutants")
    p.add_argument("--list", action="store_true", help="list the catalogue (and stale snippets) and exit")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="mutants run at once (default 1)")
    p.add_argument("--json", dest="json_path", type=Path, default=None, metavar="FILE", help="also write the results")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per mutant (default: the entry's, else max(--min-timeout, 3 x unmutated run))")
    p.add_argument("--min-timeout", type=float, default=60.0, metavar="S", help="default 60")
    p.add_argument("--root", type=Path, default=ROOT, help="repository to copy (default: this one)")
    p.add_argument("--catalogue", type=Path, default=None, help="default: tools/mutants.toml")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be at least 1")
    return Options(root=a.root.resolve(), catalogue=a.catalogue or CATALOGUE, jobs=a.jobs, timeout=a.timeout,
                   min_timeout=a.min_timeout, json_path=a.json_path,
                   only=tuple(i.strip() for i in a.only.split(",") if i.strip())), a.list


def main(argv: list[str] | None = None) -> int:
    opts, list_only = parse_args(argv)
    if os.environ.get(GUARD_ENV):
        print(f"error: {GUARD_ENV} is set: refusing to run mutants from inside a mutant's test run", file=sys.stderr)
        return 2
    try:
        mutants = select(load_catalogue(opts.catalogue), opts.only)
    except CatalogueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if list_only:
        print(listing(opts, mutants))
        return 0
    started = time.perf_counter()
    say = lambda line: print(line, flush=True)   # noqa: E731
    say(f"{len(mutants)} mutants of {opts.catalogue} on copies of {opts.root}")
    results, baselines = run_all(opts, mutants, say)
    seconds = time.perf_counter() - started
    say("")
    say(table(results))
    say(f"total {seconds:.0f} s")
    if opts.json_path:
        opts.json_path.write_text(json.dumps({
            "schema": "sbexport.mutate/1", "root": str(opts.root), "catalogue": str(opts.catalogue),
            "seconds": round(seconds, 1), "results": [asdict(r) for r in results],
            "baselines": [asdict(b) for b in baselines]}, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.status == "killed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
