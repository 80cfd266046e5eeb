"""tools/mutate.py on a tiny fake repository (never on the real catalogue: each run names its
own --root and --catalogue, and the tool refuses to start inside a mutant's test run)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutate.py"

SOURCE = '''\
def add(a, b):
    return a + b


def clamp(x, lo, hi):
    return max(lo, min(x, hi))
'''
TESTS = '''\
from calc import add, clamp


def test_add():
    assert add(2, 3) == 5


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5
'''
# add-minus is caught by test_add; clamp-no-upper-bound by nothing (no test goes above hi);
# the third snippet is not in the file.
CATALOGUE = """\
[[mutant]]
id = "add-minus"
file = "calc/__init__.py"
description = "add subtracts"
find = '''return a + b'''
replace = '''return a - b'''
tests = ["tests/test_calc.py"]

[[mutant]]
id = "clamp-no-upper-bound"
file = "calc/__init__.py"
description = "clamp ignores hi"
find = '''max(lo, min(x, hi))'''
replace = '''max(lo, x)'''
tests = ["tests/test_calc.py"]

[[mutant]]
id = "gone"
file = "calc/__init__.py"
description = "a snippet the code no longer has"
find = '''return a * b'''
replace = '''return a / b'''
tests = ["tests/test_calc.py"]
"""


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "calc").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "calc" / "__init__.py").write_text(SOURCE)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n")
    (root / "mutants.toml").write_text(CATALOGUE)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_tool(root: Path, *args, env_extra=None, catalogue=None,
             base_env=None) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the tool on `root` with its own temporary folder (in `base_env`, default this
    process's environment); returns (process, temp folder)."""
    tmp = root.parent / "tool-tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in (base_env or os.environ).items() if k != "SBEXPORT_MUTATE_RUN"}
    # Third-party pytest plugins (hydra, via executorch) take seconds to load; the fake repo needs none.
    env.update(TMPDIR=str(tmp), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **(env_extra or {}))
    proc = subprocess.run([sys.executable, str(TOOL), "--root", str(root),
                           "--catalogue", str(catalogue or root / "mutants.toml"), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    return proc, tmp


def statuses(json_path: Path) -> dict[str, str]:
    return {r["id"]: r["status"] for r in json.loads(json_path.read_text())["results"]}


def test_killed_survived_and_stale_are_told_apart(repo):
    before = snapshot(repo)
    proc, tmp = run_tool(repo, "--json", str(repo.parent / "out.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(repo.parent / "out.json") == {"add-minus": "killed", "clamp-no-upper-bound": "SURVIVED",
                                                  "gone": "stale"}
    result = json.loads((repo.parent / "out.json").read_text())
    killed = next(r for r in result["results"] if r["id"] == "add-minus")
    assert "test_add" in killed["detail"]                  # names the test that caught it
    assert [b["passed"] for b in result["baselines"]] == [True]
    # A progress line per mutant, then the table with the counts.
    assert proc.stdout.count("] ") >= 3 and "3 mutants: 1 killed, 1 SURVIVED, 1 stale" in proc.stdout
    # The working tree is untouched and every copy is gone.
    assert snapshot(repo) == before
    assert list(tmp.iterdir()) == []


def test_all_killed_exits_0(repo):
    proc, _ = run_tool(repo, "--only", "add-minus")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 mutants: 1 killed" in proc.stdout


def test_selection_failing_without_a_mutant_is_an_error(repo):
    """Otherwise every mutant of a broken selection would look killed."""
    (repo / "tests" / "test_calc.py").write_text(TESTS + "\n\ndef test_broken():\n    assert False\n")
    proc, _ = run_tool(repo, "--only", "add-minus", "--json", str(repo.parent / "out.json"))
    assert proc.returncode == 1
    assert statuses(repo.parent / "out.json") == {"add-minus": "error"}
    assert "fails without any mutation" in proc.stdout


def test_copies_use_the_roots_arm64_setup(repo):
    """Build output is not copied, but a selection that runs `verify --target arm64-qemu` needs
    its setup (`make arm64`): the copies are told where the root's is (else the CLI's help
    examples failed unmutated, and `make mutate` reported four CLI mutants as errors)."""
    setup = repo / "build" / "arm64"
    setup.mkdir(parents=True)
    (repo / "tests" / "test_setup.py").write_text(
        "import os\n\n\ndef test_setup_is_named():\n"
        f"    assert os.environ['SBEXPORT_ARM64_DIR'] == {str(setup)!r}\n")
    catalogue = repo / "setup.toml"
    catalogue.write_text(CATALOGUE.replace('tests = ["tests/test_calc.py"]',
                                           'tests = ["tests/test_calc.py", "tests/test_setup.py"]', 1))
    env = {k: v for k, v in os.environ.items() if k != "SBEXPORT_ARM64_DIR"}
    proc, _ = run_tool(repo, "--only", "add-minus", catalogue=catalogue, base_env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 mutants: 1 killed" in proc.stdout


def test_ambiguous_snippet_and_uncompilable_replacement_are_errors(repo):
    (repo / "calc" / "__init__.py").write_text(SOURCE + "\n\ndef add2(a, b):\n    return a + b\n")
    catalogue = repo / "bad.toml"
    catalogue.write_text(CATALOGUE.replace("'''max(lo, x)'''", "'''max(lo, x'''"))
    proc, _ = run_tool(repo, "--only", "add-minus,clamp-no-upper-bound", "--json", str(repo.parent / "o.json"),
                       catalogue=catalogue)
    assert proc.returncode == 1
    assert statuses(repo.parent / "o.json") == {"add-minus": "error", "clamp-no-upper-bound": "error"}
    assert "occurs 2 times" in proc.stdout and "does not compile" in proc.stdout


def test_hanging_mutant_times_out_and_is_stopped(repo):
    catalogue = repo / "hang.toml"
    catalogue.write_text(CATALOGUE.replace("'''return a - b'''",
                                           "'''return a + b if __import__('time').sleep(600) else 0'''"))
    proc, tmp = run_tool(repo, "--only", "add-minus", "--timeout", "3", "--json", str(repo.parent / "o.json"),
                         catalogue=catalogue)
    assert proc.returncode == 1
    assert statuses(repo.parent / "o.json") == {"add-minus": "timeout"}
    assert list(tmp.iterdir()) == []


def test_list_and_bad_usage(repo):
    proc, _ = run_tool(repo, "--list")
    assert proc.returncode == 0
    assert "add-minus" in proc.stdout and "stale" in proc.stdout
    proc, _ = run_tool(repo, "--only", "nope")
    assert proc.returncode == 2 and "no mutant with id 'nope'" in proc.stderr
    bad = repo / "typo.toml"
    bad.write_text(CATALOGUE.replace('tests = ["tests/test_calc.py"]', 'test = ["tests/test_calc.py"]', 1))
    proc, _ = run_tool(repo, catalogue=bad)
    assert proc.returncode == 2 and "unknown field 'test'" in proc.stderr
    # A file outside the copy would be written in place: refused before anything runs.
    bad.write_text(CATALOGUE.replace('file = "calc/__init__.py"', f'file = "{repo}/calc/__init__.py"', 1))
    before = snapshot(repo)
    proc, _ = run_tool(repo, catalogue=bad)
    assert proc.returncode == 2 and "inside the repository" in proc.stderr
    assert snapshot(repo) == before


def test_refuses_to_run_inside_a_mutant_run(repo):
    """A selection that reached this file must not start the tool again."""
    before = snapshot(repo)
    proc, tmp = run_tool(repo, env_extra={"SBEXPORT_MUTATE_RUN": "1"})
    assert proc.returncode == 2 and "refusing" in proc.stderr
    assert snapshot(repo) == before and list(tmp.iterdir()) == []


def test_real_catalogue_parses_and_none_is_stale():
    """The shipped catalogue is valid TOML with every field, and each mutant's snippet is still
    once in its file (no run: --list only). A change that rewrites a guarded line updates its
    mutant with it: three had gone stale unnoticed (found in stop 22), each then guarding
    nothing while the README counted it."""
    proc = subprocess.run([sys.executable, str(TOOL), "--list"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "SBEXPORT_MUTATE_RUN"})
    assert proc.returncode == 0, proc.stderr
    entries = [line.split() for line in proc.stdout.splitlines() if line and not line.startswith(" ")]
    assert len(entries) >= 20
    assert [e[0] for e in entries if e[1] != "ok"] == [], "update tools/mutants.toml:\n" + proc.stdout
