"""The teacher-student descent loop on a CUDA device (numba-cuda), the twin of :mod:`.kernel`.

One launch runs many replicas, of one or several cells (k, n, d, teacher): replica r belongs to cell
``cell[r]``. The grid is persistent: each block takes the next replica from an atomic counter when its
replica leaves, so the device stays full until the queue is empty (no straggler tail, and a launch of
all 45 grid cells is one launch). Each replica runs the whole protocol of :func:`.kernel.descend_one`
inside the launch: restarts with half the step at |g| > restart_grad_norm or a non-finite g, per-replica
budgets, stop at stationarity <= tol, the log-spaced loss-curve samples, the stall window and the
Newton switch point (the Newton finish stays batched torch, run by the engine).

Why one block per replica, its lanes over student rows, its state in shared memory: a step is n rows
times (n + k) partners times d coordinates, 1,200 to 16,000 multiply-adds at the published sizes, with
three dependent phases (units and norms; every row's gradient, which reads every partner's unit; the
scalar decisions on the whole gradient). One lane per student row keeps each row's sums in one lane
(no cross-lane reductions, the same summation order as the CPU loop row by row), the partners are
read by every lane from shared memory, and the phases are separated by ``syncthreads``, which within
one or two warps costs a few cycles. At k = n = d = 20 a replica's state is 13 KB of shared memory,
so an H200 SM holds 16 such blocks; with 32 threads per block (one warp, ``THREADS``) every row up to
n = 32 has its own lane. Every lane runs the (uniform) scalar logic itself, so no broadcast is needed.

Shared memory per block (doubles): X (n, d) the point, U (n, d) student units, G (n, d) the gradient,
T (k, d) teacher units (general teacher), norms (n) and (k), row squares (n), loss partials (n):
:func:`shared_doubles`. A cell that needs more than ``CUDA_SHARED_LIMIT`` (48 KB, k = n = d = 37 with
an identity teacher) is not run here: the engine's ``auto`` picks torch for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import config, cuda, float64, int64

from study.landscapes.kernels import DescentState
from study.landscapes.teacher_student.kernel import TWO_PI, acos_body

THREADS = 32  # lanes per replica: one warp
_TINY = 1e-300

# the simulator swaps module globals on every device-function call (slow): plain functions there
if config.ENABLE_CUDASIM:  # type: ignore[attr-defined]

    def device(function: Any) -> Any:
        return function  # plain calls: the simulator runs the kernel as Python anyway

else:
    device = cuda.jit(device=True, inline=True)
acos = device(acos_body)


def shared_doubles(n: int, d: int, k: int, identity: bool) -> int:
    """Shared doubles a replica of this cell needs (see the module docstring)."""
    return 3 * n * d + (0 if identity else k * d + k) + 3 * n


class Cells(NamedTuple):
    """The cells of a packed launch: ``dims: (S, 4)`` int64 n, d, k, identity; ``V: (S, kmax, dmax)``
    the teachers (zero-padded); ``term: (S,)`` 1/2 sum h(v_i, v_j); ``cell: (R,)`` each replica's cell."""

    dims: Any
    V: Any
    term: Any
    cell: Any


@device
def _h(a: Any, na: float, b: Any, nb: float, d: int) -> float:
    """h(a, b) * 2 pi = |a||b| (sin t + (pi - t) cos t), t = 2 atan2(|ua - ub|, |ua + ub|), as _h_sum."""
    diff = 0.0
    summ = 0.0
    da = max(na, _TINY)
    db = max(nb, _TINY)
    for c in range(d):
        ua = a[c] / da
        ub = b[c] / db
        diff += (ua - ub) * (ua - ub)
        summ += (ua + ub) * (ua + ub)
    diff = math.sqrt(diff)
    summ = math.sqrt(summ)
    t = 2.0 * math.atan2(diff, summ)
    scale = diff * diff + summ * summ
    if not scale > 0:
        scale = 1.0
    sn = 2.0 * diff * summ / scale
    cs = (summ * summ - diff * diff) / scale
    return na * nb * (sn + (math.pi - t) * cs)


@device
def _angle(u: Any, partner: Any, d: int, exact: bool) -> tuple[float, float]:
    """(pi - t, sin t) for the unit rows ``u`` and ``partner``: arccos of the clipped cosine, or, where
    ``exact`` and |cos| > 0.9, t = 2 atan2(|u - s|, |u + s|) (as :func:`.kernel.grad_into`)."""
    cj = 0.0
    for c in range(d):
        cj += u[c] * partner[c]
    if exact and abs(cj) > 0.9:  # nearly (anti-)parallel
        minus = 0.0
        plus = 0.0
        for c in range(d):
            minus += (u[c] - partner[c]) * (u[c] - partner[c])
            plus += (u[c] + partner[c]) * (u[c] + partner[c])
        minus = math.sqrt(minus)
        plus = math.sqrt(plus)
        return math.pi - 2.0 * math.atan2(minus, plus), 0.5 * minus * plus
    cj = min(1.0, max(-1.0, cj))
    return math.pi - acos(cj), math.sqrt(max(1.0 - cj * cj, 0.0))


@device
def _row_gradient(
    i: int,
    X: Any,
    U: Any,
    G: Any,
    T: Any,
    V: Any,
    norm: Any,
    tnorm: Any,
    n: int,
    d: int,
    k: int,
    ident: bool,
) -> float:
    """G[i] <- grad_{w_i} F (as :func:`.kernel.grad_into`); returns |G[i]|^2."""
    for c in range(d):
        G[i, c] = 0.0
    radial = 0.0
    for j in range(n):  # student partners
        if j == i:
            weight, sine = math.pi, 0.0  # the self pair: t = 0
        else:
            weight, sine = _angle(U[i], U[j], d, not ident)
        radial += sine * norm[j]
        for c in range(d):
            G[i, c] += weight * X[j, c]
    for t in range(k):  # teacher partners
        if ident:  # v_t = e_t: cos s_it = u_it
            cj = min(1.0, max(-1.0, U[i, t]))
            G[i, t] -= math.pi - acos(cj)
            radial -= math.sqrt(max(1.0 - cj * cj, 0.0))
        else:
            weight, sine = _angle(U[i], T[t], d, True)
            radial -= sine * tnorm[t]
            for c in range(d):
                G[i, c] -= weight * V[t, c]
    squares = 0.0
    for c in range(d):
        g = (G[i, c] + radial * U[i, c]) / TWO_PI
        G[i, c] = g
        squares += g * g
    return squares


@device
def _loss(
    lane: int, lanes: int, X: Any, norm: Any, V: Any, partial: Any, n: int, d: int, k: int, term: float
) -> float:
    """F at X, every lane returning the same value (rows' partial sums in shared memory)."""
    for i in range(lane, n, lanes):
        s = 0.0
        for j in range(n):
            s += 0.5 * _h(X[i], norm[i], X[j], norm[j], d)
        for t in range(k):
            nv = 0.0
            for c in range(d):
                nv += V[t, c] * V[t, c]
            s -= _h(X[i], norm[i], V[t], math.sqrt(nv), d)
        partial[i] = s
    cuda.syncthreads()  # type: ignore[call-arg]
    total = 0.0
    for i in range(n):
        total += partial[i]
    cuda.syncthreads()  # partial is free again only when every lane has read it
    return total / TWO_PI + term


@cuda.jit
def descend_kernel(rows: Any, cells: Cells, state: DescentState, counter: Any) -> None:
    """Persistent grid: each block descends replicas ``rows[counter++]`` until the queue is empty."""
    theta0, theta, ints, floats, flags, limit, settings, curve_steps, curve = state
    lane = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    slot = cuda.shared.array(1, int64)
    space = cuda.shared.array(0, float64)  # dynamic: shared_doubles of the widest cell
    tol, restart_at, max_restarts = settings[0], settings[1], settings[2]
    window, stall_rtol, stall_factor, stall_reductions = (
        int(settings[3]),
        settings[4],
        settings[5],
        settings[6],
    )
    C = curve_steps.shape[0]
    while True:
        cuda.syncthreads()  # type: ignore[call-arg]
        if lane == 0:
            slot[0] = cuda.atomic.add(counter, 0, 1)
        cuda.syncthreads()
        q = slot[0]
        if q >= rows.shape[0]:
            return
        r = rows[q]
        s = cells.cell[r]
        n, d, k = cells.dims[s, 0], cells.dims[s, 1], cells.dims[s, 2]
        identity = cells.dims[s, 3] != 0
        V = cells.V[s]
        term = cells.term[s]
        # the shared layout of this replica (views into the dynamic array)
        X = space[0 : n * d].reshape((n, d))
        U = space[n * d : 2 * n * d].reshape((n, d))
        G = space[2 * n * d : 3 * n * d].reshape((n, d))
        norm = space[3 * n * d : 3 * n * d + n]
        rowsq = space[3 * n * d + n : 3 * n * d + 2 * n]
        partial = space[3 * n * d + 2 * n : 3 * n * d + 3 * n]
        base = 3 * n * d + 3 * n
        kt = 0 if identity else k
        T = space[base : base + kt * d].reshape((kt, d))
        tnorm = space[base + kt * d : base + kt * d + kt]
        for i in range(lane, n, lanes):
            for c in range(d):
                X[i, c] = theta[r, i * d + c]
        for t in range(lane, kt, lanes):
            q2 = 0.0
            for c in range(d):
                q2 += V[t, c] * V[t, c]
            nrm = math.sqrt(q2)
            tnorm[t] = nrm
            den = max(nrm, _TINY)
            for c in range(d):
                T[t, c] = V[t, c] / den
        step, total, restarts, reductions = ints[r, 0], ints[r, 1], ints[r, 2], ints[r, 3]
        lr, checkpoint, switch_at = floats[r, 0], floats[r, 1], floats[r, 2]
        diverged = flags[r, 1]
        stalled = flags[r, 2]
        col = 0
        done = False
        switch = False
        while True:
            cuda.syncthreads()
            for i in range(lane, n, lanes):  # norms and units of the student rows
                q2 = 0.0
                for c in range(d):
                    q2 += X[i, c] * X[i, c]
                nrm = math.sqrt(q2)
                norm[i] = nrm
                den = max(nrm, _TINY)
                for c in range(d):
                    U[i, c] = X[i, c] / den
            cuda.syncthreads()
            for i in range(lane, n, lanes):
                rowsq[i] = _row_gradient(i, X, U, G, T, V, norm, tnorm, n, d, k, identity)
            cuda.syncthreads()
            squares = 0.0
            widest = 0.0
            for i in range(n):
                squares += rowsq[i]
                widest = max(widest, rowsq[i])
            stat = TWO_PI * math.sqrt(widest) if squares == squares else math.nan  # NaN anywhere: NaN
            gnorm = math.sqrt(squares)
            here = total + step
            while col < C and curve_steps[col] < here:
                col += 1
            blew = not (gnorm <= restart_at)  # also NaN
            done = stat <= tol
            over = step >= limit[r]
            switch = stat <= switch_at and not done
            if col < C and curve_steps[col] == here:
                now = _loss(lane, lanes, X, norm, V, partial, n, d, k, term)
                if lane == 0:
                    curve[r, col] = now
            if window > 0 and step > 0 and step % window == 0 and not done and not blew and not switch:
                now = _loss(lane, lanes, X, norm, V, partial, n, d, k, term)
                stuck = not (now < checkpoint - stall_rtol * abs(now))
                checkpoint = now
                slower = stuck and reductions < stall_reductions
                if slower:
                    reductions += 1
                    checkpoint = math.inf
                    lr = lr * stall_factor
                stalled = stuck and not slower
                over = over or stalled
            if blew:
                restarts += 1
                total += step
                lr = lr / 2
                for i in range(lane, n, lanes):
                    for c in range(d):
                        X[i, c] = theta0[r, i * d + c]
                checkpoint = math.inf
                if restarts > max_restarts:
                    diverged = True
                    done = True
                switch = False
                step = -1  # the gradient of the blown-up point is never applied
            if done or over or switch:
                break
            if not blew:
                for i in range(lane, n, lanes):
                    for c in range(d):
                        X[i, c] = X[i, c] - lr * G[i, c]
            step += 1
        for i in range(lane, n, lanes):
            for c in range(d):
                theta[r, i * d + c] = X[i, c]
        if lane == 0:
            ints[r, 0], ints[r, 1], ints[r, 2], ints[r, 3] = step, total, restarts, reductions
            floats[r, 0], floats[r, 1] = lr, checkpoint
            flags[r, 0] = done and not diverged
            flags[r, 1] = diverged
            flags[r, 2] = stalled
            flags[r, 3] = switch
            flags[r, 4] = True


class TeacherStudentCuda:
    """The teacher-student landscape's :class:`study.landscapes.kernels.CudaDescent`: its teacher
    ``V: (k, d)`` float64 and the student count n."""

    def __init__(self, V: np.ndarray, n: int, identity: bool, term: float) -> None:
        self.V, self.n, self.identity, self.term = V, n, identity, term

    def shared_bytes(self) -> int:
        k, d = self.V.shape
        return 8 * shared_doubles(self.n, d, k, self.identity)

    def descend_cells(
        self, cells: Sequence[Any], cell: Any, rows: Any, state: DescentState, *, threads: int = THREADS
    ) -> None:
        kmax = max(c.V.shape[0] for c in cells)
        dmax = max(c.V.shape[1] for c in cells)
        V = np.zeros((len(cells), kmax, dmax))
        for s, c in enumerate(cells):
            V[s, : c.V.shape[0], : c.V.shape[1]] = c.V
        dims = np.array([[c.n, c.V.shape[1], c.V.shape[0], int(c.identity)] for c in cells], dtype=np.int64)
        packed = Cells(
            dims=cuda.to_device(dims),
            V=cuda.to_device(V),
            term=cuda.to_device(np.array([c.term for c in cells])),
            cell=cell,
        )
        shared = max(c.shared_bytes() for c in cells)
        current = getattr(cuda, "get_current_device", None)  # the simulator has none
        sms = 1 if current is None else current().MULTIPROCESSOR_COUNT
        per_sm = max(1, min(32, (228 * 1024) // max(shared, 1)))
        blocks = max(1, min(rows.shape[0], sms * per_sm))
        counter = cuda.to_device(np.zeros(1, dtype=np.int64))
        descend_kernel[blocks, threads, 0, shared](rows, packed, state, counter)
        cuda.synchronize()
