"""llama.cpp's threads: a persistent ggml thread pool per context, and how much CPU other processes use
(the engine's adaptive decode threads read it each second)."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

import llama_cpp as L

from luodi.engines import ggml_cpu

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_sample() -> tuple[float, float, float] | None:
    """(CPU seconds the machine has been busy, CPU seconds this process used, monotonic time); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    busy = (user + nice + system + irq + softirq) / _TICK
    return busy, (int(own[11]) + int(own[12])) / _TICK, time.monotonic()


class _ThreadPoolParams(ctypes.Structure):
    """ggml.h's struct ggml_threadpool_params."""

    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


class ThreadPool:
    """A persistent ggml thread pool for a context, as llama.cpp's own programs attach one: without it every
    llama_decode starts and joins its worker threads. `poll` (0-100) is how long idle workers spin before
    sleeping."""

    def __init__(self, n_threads: int, poll: int = 50) -> None:
        self._pool = None
        choice = ggml_cpu.active_choice()
        cpu = ctypes.CDLL(choice.path) if choice and choice.path else L.llama_cpp._lib  # ggml_threadpool_new's home
        base = ctypes.CDLL(str(ggml_cpu.lib_dir() / "libggml-base.so"))
        base.ggml_threadpool_params_default.restype = _ThreadPoolParams
        base.ggml_threadpool_params_default.argtypes = [ctypes.c_int]
        params = base.ggml_threadpool_params_default(n_threads)
        params.poll = max(0, min(100, poll))
        self._new, self._free = cpu.ggml_threadpool_new, cpu.ggml_threadpool_free
        self._new.restype, self._new.argtypes = ctypes.c_void_p, [ctypes.POINTER(_ThreadPoolParams)]
        self._free.restype, self._free.argtypes = None, [ctypes.c_void_p]
        self._pool = self._new(ctypes.byref(params))
        self._attach = L.llama_cpp._lib.llama_attach_threadpool
        self._attach.restype, self._attach.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._detach = L.llama_cpp._lib.llama_detach_threadpool
        self._detach.restype, self._detach.argtypes = None, [ctypes.c_void_p]
        self._ctx = None

    def attach(self, ctx: Any) -> None:
        if self._pool:
            self._attach(ctx, self._pool, self._pool)
            self._ctx = ctx

    def free(self) -> None:
        if self._pool:
            self._pool, pool = None, self._pool
            self._free(pool)
