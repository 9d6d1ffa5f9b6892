"""Mutation testing of the modules that carry the guarantees (scripts/mutation runs this).

Each module is mutated alone, against the fast unit tests of that module only, in a scratch copy
of the work tree under .mutation/ (git-ignored): mutmut writes its mutants there, never into
the real tree. The score is killed / all mutants (a timeout counts as killed: a test noticed).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"

# module -> the fast unit tests that pin it. Keep each set to seconds: every mutant runs the
# tests of this set that reach the mutated function.
MODULES: dict[str, list[str]] = {
    "consumers/subscription.py": ["tests/unit/test_subscription.py"],
    "consumers/hub.py": ["tests/unit/test_hub.py"],
    "consumers/outlet.py": ["tests/unit/test_outlet.py"],
    "consumers/protocol.py": ["tests/unit/test_protocol.py"],
    "consumers/limits.py": ["tests/unit/test_limits.py"],
    "streamapp/asgi/buckets.py": ["tests/unit/test_buckets.py"],
    "streamapp/asgi/handshakes.py": ["tests/unit/test_handshakes.py"],
    "streamapp/protocol.py": ["tests/unit/test_server_protocol.py"],
    "streamapp/eventlog/store.py": ["tests/unit/test_store.py",
                                    "tests/integration/test_group_commit.py"],
    "streamapp/eventlog/stream.py": ["tests/unit/test_stream.py"],
    "streamapp/runner/leases.py": ["tests/unit/test_leases.py"],
    "streamapp/runner/outcomes.py": ["tests/unit/test_leases.py",
                                     "tests/integration/test_group_commit.py"],
    "streamapp/runner/sweeper.py": ["tests/unit/test_sweeper.py"],
    "streamapp/runner/run.py": ["tests/unit/test_run.py"],
}

# Lines whose expressions are not mutated: log text and metric counters are observability, not
# the rules; tests/e2e/test_logging.py and test_metrics.py pin them. docs/mutation.md says so.
NOT_MUTATED = [r"\blogger\.\w+\(", r"^\s*metrics\.\w+"]

STATUS = {  # mutmut's exit codes (mutmut/stats.py)
    1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
    36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
    37: "caught by type check", None: "not checked",
}
CAUGHT = {"killed", "timeout", "caught by type check"}


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def prepare(module: str, tests: list[str], workdir: Path) -> None:
    """A fresh copy of the work tree (tracked and new files, not ignored ones) with its config."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    config = {
        "source_paths": ["streamapp", "consumers"],
        "only_mutate": [module],
        "also_copy": ["demo", "asgi.py", "manage.py"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": [
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--timeout=60",
        ],
        "do_not_mutate_patterns": NOT_MUTATED,
        # fork from a server that has collected the tests but run none: Django's async ORM
        # thread (asgiref's executor) would not survive a fork from a process that ran tests.
        "process_isolation": "forkserver",
        "timeout_multiplier": 2.0,
        "timeout_constant": 10.0,
        "use_git_change_detection": False,
    }
    with open(workdir / "pyproject.toml", "a", encoding="utf-8") as pyproject:
        pyproject.write("\n[tool.mutmut]\n")
        for key, value in config.items():
            pyproject.write(f"{key} = {json.dumps(value)}\n")


def patterns(module: str, only: list[str] | None) -> list[str]:
    """mutmut's name patterns for the mutants of ``only`` (function or Class.method names)."""
    names = []
    for name in only or ():
        cls, _, function = name.rpartition(".")
        mangled = f"x\u01c1{cls}\u01c1{function}" if cls else f"x_{function}"
        names.append(f"{slug(module)}.{mangled}__mutmut_*")
    return names


def results(module: str, workdir: Path) -> dict[str, str]:
    meta = workdir / "mutants" / (module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious") for name, code in sorted(codes.items())}


def mutmut(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), *args],
        cwd=workdir, env=env, text=True, **kwargs,
    )


def run_module(
    module: str, children: int, tests: list[str] | None = None, only: list[str] | None = None
) -> tuple[float, dict[str, str], float]:
    tests = tests or MODULES.get(module) or [f"tests/unit/test_{Path(module).stem}.py"]
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        sys.exit(f"{module}: no unit tests at {', '.join(missing)}")
    workdir = SCRATCH / slug(module)
    prepare(module, tests, workdir)
    started = time.monotonic()
    log = workdir / "mutmut.log"
    with open(log, "w", encoding="utf-8") as out:
        done = mutmut(workdir, "run", "--max-children", str(children), *patterns(module, only),
                      stdout=out, stderr=out)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{module}: mutmut failed (exit {done.returncode}); see {log}")
    statuses = results(module, workdir)
    if only:  # the other functions' mutants were not run
        statuses = {k: v for k, v in statuses.items() if v != "not checked"}
    caught = sum(status in CAUGHT for status in statuses.values())
    score = 100.0 * caught / len(statuses) if statuses else 100.0
    return score, statuses, elapsed


def report(module: str, score: float, statuses: dict[str, str], elapsed: float,
           show_diffs: bool) -> None:
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"\n== {module}: score {score:.1f}% of {len(statuses)} mutants ({detail}) "
          f"in {elapsed:.0f} s")
    functions = mutated_functions(SCRATCH / slug(module) / "mutants" / module)
    for name, status in statuses.items():
        if status in CAUGHT:
            continue
        print(f"-- {status}: {name}")
        if show_diffs:
            print(mutant_diff(functions, name))


def mutated_functions(path: Path) -> dict[str, str]:
    """Source of every function in mutmut's rewritten module, by name."""
    source = path.read_text(encoding="utf-8")
    return {
        node.name: ast.get_source_segment(source, node) or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def mutant_diff(functions: dict[str, str], name: str) -> str:
    """The changed lines of one mutant against the original function."""
    mangled = name.rsplit(".", 1)[-1]
    original = functions.get(mangled.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    mutant = functions.get(mangled, "")
    lines = difflib.unified_diff(original.splitlines(), mutant.splitlines(), lineterm="", n=0)
    return "\n".join(f"   {line}" for line in list(lines)[2:] if not line.startswith("@@"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: all of them)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="fail when a module scores under this percentage")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--no-diffs", action="store_true", help="name survivors only")
    parser.add_argument("--tests", nargs="+", help="run these tests instead of the table's")
    parser.add_argument("--only", nargs="+", metavar="FUNCTION",
                        help="mutate these functions only (name, or Class.method)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    failed = []
    for module in modules:
        if not (ROOT / module).is_file():
            parser.error(f"no such module: {module}")
    for module in modules:
        score, statuses, elapsed = run_module(module, args.children, args.tests, args.only)
        report(module, score, statuses, elapsed, not args.no_diffs)
        if args.min_score is not None and score < args.min_score:
            failed.append(f"{module} scored {score:.1f}% < {args.min_score}%")
        if not args.keep:
            shutil.rmtree(SCRATCH / slug(module), ignore_errors=True)
    for line in failed:
        print("FAILED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
