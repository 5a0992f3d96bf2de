"""Pre-generation of the next iteration's sparse weights, overlapped with the card's iteration (SPEC 4).

After the card finishes layer ``l``'s WU GEMM, the host has the layer's new master weights and can prune
(:func:`~sat.sw.bdwp.nm_mask`), compress and pack (:mod:`sat.sw.nmformat`) them for the next iteration. Each
sparse pass of each layer is one **task**:

* **released** when the layer's WU GEMM ends on the card;
* **due** when the card starts that pass's GEMM in the *next* iteration: ``W_ff`` by the layer's next FF, ``W_bp``
  only by its next BP, almost a whole iteration later;
* run by a pool of host threads, **earliest deadline first** among the released tasks (NumPy releases the GIL in
  its array kernels, so threads run the pruning in parallel);
* then streamed over one H2C channel, in the order the tasks finish, at :data:`PCIE_BYTES_PER_S` (assumed).

:func:`replay` measures this for real: it runs the actual pruning and packing of every task on ``threads`` worker
threads against the card's timeline replayed in wall-clock time (the cycle model's GEMM times at the build's clock,
engine or GEMM unit cycles, one iteration after the other), for several iterations so that the last one is in steady
state (its tasks compete with what is left of the iteration before). Only the card side is modelled; the host side
is the code the driver runs. A task is **hidden** when its weights are on the card by the deadline; otherwise the
card would wait ``-slack`` seconds for it.

Not included: the SGD update itself (it runs whether or not there is pre-generation) and the host's activation
work between layers.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .conv import ConvShape, bp_weight_matrix
from .descriptor import ConvDescriptor
from .nm import nm_mask
from .nmformat import compress, pack
from .schedule import PCIE_BYTES_PER_S, Schedule, ScheduledGemm

__all__ = ["PregenTask", "PregenReplay", "replay", "pregen_work"]


@dataclass(frozen=True)
class PregenTask:
    """One pass of one layer in the steady-state iteration of a :func:`replay` (times in seconds from the
    start of that iteration on the card)."""

    layer: str
    pass_: str
    packed_bytes: int
    release_s: float
    start_s: float
    host_s: float
    ready_s: float
    deadline_s: float

    @property
    def slack_s(self) -> float:
        return self.deadline_s - self.ready_s

    @property
    def hidden(self) -> bool:
        return self.slack_s >= 0

    def as_dict(self) -> dict:
        return {"layer": self.layer, "pass": self.pass_, "packed_bytes": self.packed_bytes,
                "release_s": self.release_s, "start_s": self.start_s, "host_s": self.host_s,
                "ready_s": self.ready_s, "deadline_s": self.deadline_s, "slack_s": self.slack_s,
                "hidden": self.hidden}


@dataclass(frozen=True)
class PregenReplay:
    """Result of :func:`replay`.

    Attributes
    ----------
    tasks : list of PregenTask
        The steady-state (last) iteration's tasks, in the order they were released.
    threads, iterations : int
    iteration_s : float
        The card's modelled iteration time.
    work_s : float
        Host time of one iteration's tasks, each run alone on one thread (best of ``repeats``): the host work
        that has to be overlapped.
    busy_s : float
        The summed wall time of the steady-state iteration's tasks during the replay (threads contend for the
        machine's cores, so this can exceed ``work_s``).
    """

    tasks: list[PregenTask]
    threads: int
    iterations: int
    iteration_s: float
    work_s: float
    busy_s: float

    @property
    def hidden(self) -> int:
        return sum(t.hidden for t in self.tasks)

    @property
    def worst_slack_s(self) -> float:
        return min((t.slack_s for t in self.tasks), default=0.0)

    @property
    def threads_needed(self) -> int:
        """Host threads that would keep up with the card if they scaled perfectly: ``ceil(work / iteration)``
        (a projection; the replay's own result is what was measured)."""
        return max(1, -(-int(round(self.work_s * 1e6)) // max(1, int(round(self.iteration_s * 1e6)))))

    def as_dict(self) -> dict:
        return {"threads": self.threads, "iterations": self.iterations, "iteration_s": self.iteration_s,
                "work_s": self.work_s, "busy_s": self.busy_s, "hidden": self.hidden,
                "worst_slack_s": self.worst_slack_s, "threads_needed": self.threads_needed,
                "tasks": [t.as_dict() for t in self.tasks]}


def pregen_work(schedule: Schedule, *, seed: int = 0) -> list[tuple[str, str, Callable[[], int]]]:
    """The host work of one iteration's pre-generation: ``(layer, pass, work)`` per sparse pass, in backward
    order; ``work()`` prunes, compresses and packs that pass's ``B`` operand per K chunk exactly as the schedule's
    descriptors use it (random FP32 weights of the real shape: the cost does not depend on the values) and
    returns the packed bytes."""
    if schedule.nm is None:
        return []
    n, m = schedule.nm
    fmt = schedule.config.fmt
    rng = np.random.default_rng(seed)
    out = []
    for layer in reversed(schedule.network.layers):
        sparse = [g for g in schedule.gemms if g.layer == layer.name and g.sparse]
        if not sparse:
            continue
        w = rng.standard_normal((layer.c_out, layer.k)).astype(np.float32)
        for g in sparse:
            def work(g=g, w=w, layer=layer) -> int:
                # FF: B = W^T (K x C_out), groups along K; BP: B = W (C_out x K), groups along C_out, or for a
                # convolution W_bp as K' x C_in (groups of M output channels of one tap, sat.sw.conv)
                if g.pass_ == "ff":
                    b, mask = w.T, nm_mask(w.T, n, m, axis=0)
                elif isinstance(g.descriptors[0], ConvDescriptor):
                    d0 = g.descriptors[0]
                    shape = ConvShape(d0.batch, d0.height, d0.width, d0.c_in, d0.c_out, d0.kh, d0.kw, d0.stride,
                                      d0.padding)
                    w4 = w.reshape(shape.w_shape)
                    b = bp_weight_matrix(w4, shape, m)
                    mask = bp_weight_matrix(nm_mask(w, n, m, axis=0).reshape(shape.w_shape), shape, m)
                else:
                    b, mask = w, nm_mask(w, n, m, axis=0)
                nbytes, k0 = 0, 0
                for d in g.descriptors:
                    nbytes += pack(compress(b[k0:k0 + d.red], n, m, mask[k0:k0 + d.red]), fmt).nbytes
                    k0 += d.red
                return nbytes
            out.append((layer.name, g.pass_, work))
    return out


def _timeline(schedule: Schedule, gemm_cycles: Callable[[ScheduledGemm], int] | None = None,
              ) -> tuple[float, dict[tuple[str, str], tuple[float, float]]]:
    """Card timeline of one iteration: its length and ``(start, end)`` of every GEMM (GEMMs back to back)."""
    clock = schedule.config.clock_hz
    t, spans = 0.0, {}
    for g in schedule.gemms:
        dt = (gemm_cycles(g) if gemm_cycles is not None else g.counters.cycles) / clock
        spans[(g.layer, g.pass_)] = (t, t + dt)
        t += dt
    return t, spans


def replay(schedule: Schedule, *, threads: int = 1, iterations: int = 3, repeats: int = 3, seed: int = 0,
           gemm_cycles: Callable[[ScheduledGemm], int] | None = None) -> PregenReplay:
    """Run pre-generation for real on ``threads`` host threads against the card's timeline (module docstring).

    Parameters
    ----------
    schedule : Schedule
        A sparse schedule (``schedule.nm`` set).
    threads : int
        Host worker threads.
    iterations : int
        Iterations replayed; the last one is reported.
    repeats : int
        Runs of each task alone, best taken, for :attr:`PregenReplay.work_s`.
    gemm_cycles : callable, optional
        Card cycles of a scheduled GEMM (default: its engine cycles, ``g.counters.cycles``; ``sat bench`` passes
        the GEMM unit's).

    Raises
    ------
    ValueError
        For a dense schedule, ``threads < 1`` or ``iterations < 1``.
    """
    if schedule.nm is None:
        raise ValueError("pre-generation needs a sparse schedule (nm set): dense training has nothing to prune")
    if threads < 1 or iterations < 1:
        raise ValueError(f"threads and iterations must be at least 1, not {threads} and {iterations}")
    work = pregen_work(schedule, seed=seed)
    iteration_s, spans = _timeline(schedule, gemm_cycles)
    alone = {}
    for layer, pass_, fn in work:
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        alone[(layer, pass_)] = best

    # jobs: (release, deadline, order, layer, pass, fn) over all iterations, absolute times
    jobs = []
    for it in range(iterations):
        for order, (layer, pass_, fn) in enumerate(work):
            release = it * iteration_s + spans[(layer, "wu")][1]
            deadline = (it + 1) * iteration_s + spans[(layer, pass_)][0]
            jobs.append((release, deadline, it * len(work) + order, it, layer, pass_, fn))
    jobs.sort()
    records: dict[int, tuple[float, float, int]] = {}
    cond = threading.Condition()
    released: list[tuple[float, int, int]] = []       # heap of (deadline, order, job index)
    next_job = 0
    errors: list[BaseException] = []
    t0 = time.perf_counter()

    def worker() -> None:
        nonlocal next_job
        while True:
            with cond:
                while True:
                    now = time.perf_counter() - t0
                    while next_job < len(jobs) and jobs[next_job][0] <= now:
                        heapq.heappush(released, (jobs[next_job][1], jobs[next_job][2], next_job))
                        next_job += 1
                    if released or errors:
                        break
                    if next_job == len(jobs):
                        return
                    cond.wait(timeout=jobs[next_job][0] - now)
                if errors:
                    return
                _, _, index = heapq.heappop(released)
            start = time.perf_counter() - t0
            try:
                nbytes = jobs[index][6]()
            except BaseException as exc:  # re-raised in the caller's thread
                with cond:
                    errors.append(exc)
                    cond.notify_all()
                return
            records[index] = (start, time.perf_counter() - t0, nbytes)

    pool = [threading.Thread(target=worker, name=f"pregen-{i}", daemon=True) for i in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    if errors:
        raise errors[0]

    # H2C: one channel, in the order the host finishes
    ready: dict[int, float] = {}
    h2c_free = 0.0
    for index in sorted(records, key=lambda i: records[i][1]):
        _, end, nbytes = records[index]
        h2c_free = max(h2c_free, end) + nbytes / PCIE_BYTES_PER_S
        ready[index] = h2c_free
    last = iterations - 1
    base = last * iteration_s
    tasks = []
    for index, (release, deadline, _, it, layer, pass_, _) in enumerate(jobs):
        if it != last:
            continue
        start, end, nbytes = records[index]
        tasks.append(PregenTask(layer, pass_, nbytes, release - base, start - base, end - start,
                                ready[index] - base, deadline - base))
    return PregenReplay(tasks, threads, iterations, iteration_s, sum(alone.values()),
                        sum(t.host_s for t in tasks))
