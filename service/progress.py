"""Live terminal display of a solve (rich), fed by its events (`service.events`)."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service.events import (
    CancelRequestedEvent,
    ClaimedEvent,
    DoneEvent,
    Event,
    RoundStartEvent,
    TrainedEvent,
    TrainingEvent,
    VerifiedEvent,
)
from service.schemas import SolveRequest, SolveResult


class SolveProgress:
    def __init__(self, req: SolveRequest, title: str, console: Console) -> None:
        self.req = req
        self.title = title
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[title]}[/]"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("attempts"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=False,
        )
        self.task = None
        self.passes = 0
        self.t_phase = time.monotonic()

    @contextmanager
    def loading(self, model: str) -> Iterator[None]:
        with self.console.status(f"loading model [bold]{model}[/] (first run assembles and verifies it)…"):
            t = time.monotonic()
            yield
        self.console.print(f"model [bold]{model}[/] ready in {time.monotonic() - t:.1f} s")

    def __enter__(self) -> SolveProgress:
        self.progress.start()
        self.task = self.progress.add_task(
            "starting", total=self.req.budget.max_attempts, title=f"{self.title} · {self.req.strategy}"
        )
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _say(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def on_event(self, e: Event) -> None:
        if isinstance(e, RoundStartEvent):
            self.t_phase = time.monotonic()
            self._say(f"round {e.round + 1}: sampling {e.n} attempts…")
        elif isinstance(e, VerifiedEvent):
            self.progress.update(self.task, completed=e.attempts_used)
            self.passes += e.passes
            kinds = ", ".join(f"{k} ×{n}" for k, n in Counter(e.kinds).most_common())
            self.progress.console.print(
                f"  round {e.round + 1}: {e.passes} passed of {len(e.kinds)} "
                f"[dim]({kinds}; {time.monotonic() - self.t_phase:.0f} s)[/]"
            )
            self._say(f"round {e.round + 1}: verified")
        elif isinstance(e, TrainingEvent):
            self.t_phase = time.monotonic()
            self._say(f"round {e.round + 1}: SDPO, {e.steps} steps on the failures…")
        elif isinstance(e, TrainedEvent):
            fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
            note = " [yellow](collapse guard: kept the best weights)[/]" if e.collapsed else ""
            self.progress.console.print(
                f"  round {e.round + 1}: SDPO divergence {fmt(e.loss_before)} → {fmt(e.loss_after)} "
                f"[dim]({time.monotonic() - self.t_phase:.0f} s)[/]{note}"
            )
        elif isinstance(e, ClaimedEvent) and e.delivery > 1:
            self.progress.console.print(f"  [yellow]resumed by {e.worker} from round {e.resumed_from_round + 1}[/]")
        elif isinstance(e, CancelRequestedEvent):
            self.progress.console.print("  [yellow]cancel requested[/]")
        elif isinstance(e, DoneEvent):
            self.ended(e.status)

    def ended(self, status: str) -> None:
        """The job is over (a `done` event followed, or a local solve returned)."""
        self._say(status)

    def summary(self, r: SolveResult) -> None:
        colour = {"solved": "green", "exhausted": "yellow"}.get(r.status, "red")
        self.console.print(
            f"\n[bold {colour}]{r.status.upper()}[/] after {r.attempts_used} attempt(s) in "
            f"{len(r.rounds)} round(s), {r.wall_s:.0f} s "
            f"(generate {r.timings.generate_s:.0f} s, verify {r.timings.verify_s:.1f} s, "
            f"train {r.timings.train_s:.0f} s)" + (f" — {r.reason}" if r.reason else "")
        )
        t = Table(show_header=True, header_style="bold", box=None)
        for col in ("round", "passed", "SDPO divergence", "generate s", "verify s", "train s"):
            t.add_column(col, justify="right")
        for rd in r.rounds:
            div = "–"
            if rd.train and rd.train.loss_before is not None:
                after = "n/a" if rd.train.loss_after is None else f"{rd.train.loss_after:.4f}"
                div = f"{rd.train.loss_before:.4f} → {after}"
            t.add_row(str(rd.round + 1), f"{rd.passes}/{len(rd.attempts)}", div,
                      f"{rd.timings.generate_s:.0f}", f"{rd.timings.verify_s:.1f}", f"{rd.timings.train_s:.0f}")
        self.console.print(t)
        if r.solution is not None:
            self.console.rule(f"solution (attempt {r.solved_attempt + 1})")
            self.console.print(r.solution, markup=False, highlight=False)
