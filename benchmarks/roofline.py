"""This machine's float32 matrix-multiply rate, the yardstick of the embedding benchmarks' ``--roofline``:
a float32 runtime cannot do a model's arithmetic faster than the machine multiplies matrices, so a model's
floating-point operations over that rate bound the speed-up any runtime can reach over eager PyTorch."""

from __future__ import annotations

import time

import numpy as np


def matmul_rate(rows: int, inner: int, outer: int, threads: int, rounds: int = 5) -> tuple[float, float]:
    """(GFLOP per wall second, GFLOP per CPU second) of float32 products (rows x inner) @ (inner x outer) and
    (rows x outer) @ (outer x inner), a model's widest layer and its way back, the best of numpy's BLAS and torch
    over ``rounds`` tries each."""
    import torch

    rng = np.random.default_rng(0)
    a = rng.random((rows, inner), dtype=np.float32)
    b = rng.random((inner, outer), dtype=np.float32)
    c = rng.random((rows, outer), dtype=np.float32)
    d = rng.random((outer, inner), dtype=np.float32)
    flops = 2 * 2 * rows * inner * outer * 20
    best_wall = best_cpu = 0.0
    torch.set_num_threads(threads)
    pairs = {"numpy": (a, b, c, d), "torch": tuple(torch.from_numpy(x) for x in (a, b, c, d))}
    for x, y, z, w in pairs.values():
        for _ in range(rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(20):
                x @ y
                z @ w
            best_wall = max(best_wall, flops / (time.perf_counter() - start) / 1e9)
            best_cpu = max(best_cpu, flops / (time.process_time() - start_cpu) / 1e9)
    return best_wall, best_cpu
