"""Which llama.cpp CPU kernels this machine runs, chosen by trying them, and the engine's start-up self-check.

What a CPU reports is no proof that it runs: VMs report AVX-512 FP16 and AMX that die with SIGILL. So:
- the portable build (luodi.engines.llamacpp_build) ships one CPU backend per instruction-set level;
- each level the CPU claims is tried in a child process (load the model, greedy-decode a few tokens); a crash
  or tokens that differ from the plainest level's rule it out; the fastest of the rest is chosen;
- the choice is remembered per machine (CPU model + flags) and library build, and loaded into this process
  before llama.cpp initialises (it would otherwise pick the highest-scoring level blindly);
- before an engine serves, `prepare` decodes its model in a child, then in-process, and compares the tokens.

With a library that has no variants (pip's own build), only the self-check runs.

    python -m luodi.engines.ggml_cpu            # show (choose if needed) this machine's variant
    python -m luodi.engines.ggml_cpu --reprobe  # forget the remembered choice and try every level again
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from luodi.atomic import write_json
from luodi.engines.llamacpp_build import CPU_VARIANTS, cache_root, rebuild_command

log = logging.getLogger(__name__)

PROBE_PROMPT = "The capital of France is Paris. The capital of Italy is"
CHECK_TOKENS = 8  # greedy tokens compared by the self-check
SPEED_TOKENS = 32  # tokens decoded per variant when choosing (speed: a fast step's CPU time, 1 thread)
SPEED_ROUNDS = 3  # each runnable variant is timed this many times, interleaved; its best counts
CHILD_TIMEOUT_S = 120.0
FEATURES_SHOWN = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                  "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


class SelfCheckFailed(RuntimeError):
    """The loaded model does not decode correctly with this llama.cpp library on this CPU."""


@dataclass
class CpuChoice:
    """The CPU backend this process uses, and how it was chosen (shown by `luodi models` and /health)."""

    variant: str | None  # None: a library without variants (CPU backend built in)
    path: str | None
    features: list[str]
    tried: dict[str, str] = field(default_factory=dict)  # variant -> "ok 45.1 tok/s" / "crashed (SIGILL)" / ...
    chosen_at: float = 0.0
    remembered: bool = False


# --- where things are ------------------------------------------------------------------------------
def lib_dir() -> Path:
    """llama-cpp-python's lib/ folder, found without importing llama_cpp (importing loads the library)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise SelfCheckFailed(f"llama-cpp-python is not installed; run `{rebuild_command()}`")
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    return Path(override) if override else Path(spec.origin).parent / "lib"


def variant_paths() -> dict[str, Path]:
    """The CPU variants the installed library has, best first."""
    folder = lib_dir() / "ggml-cpu"
    found = {p.name[len("libggml-cpu-"):].split(".so")[0]: p for p in folder.glob("libggml-cpu-*.so")}
    order = [v for v in CPU_VARIANTS if v in found] + sorted(set(found) - set(CPU_VARIANTS))
    return {v: found[v] for v in order}


def cpu_features() -> list[str]:
    """The instruction-set extensions the CPU reports (Linux /proc/cpuinfo), the ones ggml cares about."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in FEATURES_SHOWN if f in flags]
    except OSError:
        pass
    return []


def cpu_fingerprint() -> str:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()}|{model}|{cpu_features()}".encode()).hexdigest()[:16]


def _library_digest(paths: dict[str, Path]) -> str:
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths.values()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _choice_file(paths: dict[str, Path]) -> Path:
    return cache_root() / "ggml-cpu" / f"{_library_digest(paths)}-{cpu_fingerprint()}.json"


# --- loading a variant into a process --------------------------------------------------------------------
_active: CpuChoice | None = None
_passed: dict[tuple[str, int], dict] = {}  # (model, threads) -> the self-check that passed in this process
_lock = threading.RLock()


def _load_variant(path: Path) -> bool:
    """Register one CPU backend with ggml (before llama_backend_init). False: the CPU lacks its features."""
    ggml = ctypes.CDLL(str(lib_dir() / "libggml.so"), mode=ctypes.RTLD_GLOBAL)
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    return bool(ggml.ggml_backend_load(str(path).encode()))


def current_choice(model_path: str | Path) -> CpuChoice:
    """The CPU variant to use: LUODI_GGML_CPU (a level name or a .so path), the remembered one, or a new choice."""
    if _active is not None:
        return _active
    paths = variant_paths()
    from luodi.settings import get_settings

    forced = get_settings().ggml_cpu.strip()
    if forced:
        path = Path(forced) if "/" in forced else paths.get(forced)
        if path is None:
            raise SelfCheckFailed(f"LUODI_GGML_CPU={forced!r} is neither a CPU level of this build "
                                  f"({', '.join(paths) or 'it has none'}) nor a path to a libggml-cpu .so file")
        return CpuChoice(path.name if "/" in forced else forced, str(path), cpu_features(), {"forced": forced})
    if not paths:
        return CpuChoice(None, None, cpu_features())
    return remembered_choice(paths) or choose_variant(model_path, paths)


def active_choice() -> CpuChoice | None:
    return _active


def remembered_choice(paths: dict[str, Path] | None = None) -> CpuChoice | None:
    paths = paths if paths is not None else variant_paths()
    try:
        data = json.loads(_choice_file(paths).read_text())
        choice = CpuChoice(**data)
    except (OSError, ValueError, TypeError):
        return None
    if choice.variant not in paths:
        return None
    choice.path, choice.remembered = str(paths[choice.variant]), True
    return choice


# --- choosing by trying ---------------------------------------------------------------------------------
def choose_variant(model_path: str | Path, paths: dict[str, Path] | None = None) -> CpuChoice:
    """Try every variant in a child process; keep the fastest one that runs and decodes like the plainest."""
    paths = paths if paths is not None else variant_paths()
    log.warning("choosing llama.cpp's CPU kernels for this machine (once; CPU reports: %s)",
                " ".join(cpu_features()) or "unknown")
    results: dict[str, dict] = {}
    tried: dict[str, str] = {}
    for name, path in paths.items():
        res = run_child(model_path, variant=path, n_tokens=SPEED_TOKENS, threads=1)
        results[name] = res
        tried[name] = _describe(res)
        log.warning("  %-15s %s", name, tried[name] if not res.get("tokens") else "runs")
    runs = [n for n in paths if results[n].get("tokens")]
    if not runs:
        raise SelfCheckFailed(
            f"no llama.cpp CPU backend runs on this CPU ({', '.join(f'{k}: {v}' for k, v in tried.items())})")
    reference = results[runs[-1]]["tokens"][:CHECK_TOKENS]  # the plainest level that runs
    good = []
    for n in runs:
        if results[n]["tokens"][:CHECK_TOKENS] != reference:
            tried[n] = f"wrong tokens {results[n]['tokens'][:CHECK_TOKENS]} (plainest level: {reference})"
            log.warning("  %-15s ruled out: %s", n, tried[n])
        else:
            good.append(n)
    for _ in range(SPEED_ROUNDS - 1):  # more rounds, interleaved: a VM's speed wanders by tens of % for seconds
        for n in good:
            again = run_child(model_path, variant=paths[n], n_tokens=SPEED_TOKENS, threads=1)
            results[n]["tok_s"] = max(results[n]["tok_s"], again.get("tok_s", 0.0))
            tried[n] = _describe(results[n])
    fastest = max(results[n]["tok_s"] for n in good)
    best = next(n for n in good if results[n]["tok_s"] >= 0.95 * fastest)  # ties go to the richer level
    for n in good:
        log.warning("  %-15s %s", n, tried[n])
    choice = CpuChoice(best, str(paths[best]), cpu_features(), tried, time.time())
    target = _choice_file(paths)
    try:
        write_json(target, asdict(choice))
    except OSError as e:  # a read-only cache: choose again next time rather than fail now
        log.warning("could not remember the CPU kernels in %s (%s); set LUODI_NATIVE_CACHE to a writable folder",
                    target, e)
    log.warning("llama.cpp CPU kernels: %s (remembered in %s)", best, target)
    return choice


def _describe(res: dict) -> str:
    if res.get("tokens"):
        return f"ok {res['tok_s']:.1f} tok/s"
    return res.get("error", "failed")


def run_child(model_path: str | Path, *, variant: Path | None, n_tokens: int, threads: int) -> dict:
    """Greedy-decode in a child process; a crash there is a result ({"error": "crashed (SIGILL)"}), not ours."""
    cmd = [sys.executable, "-m", "luodi.engines.ggml_cpu", "--child", "--model", str(model_path),
           "--tokens", str(n_tokens), "--threads", str(threads)]
    if variant is not None:
        cmd += ["--variant", str(variant)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              env=dict(os.environ, PYTHONFAULTHANDLER="0"))
    except subprocess.TimeoutExpired:
        return {"error": f"hung for {CHILD_TIMEOUT_S:.0f} s"}
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return {"error": f"crashed ({sig})"}
    if proc.returncode == 3:
        return {"error": "not supported by this CPU"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exited {proc.returncode}: {' / '.join(tail)}"}


_log_callback = None


def quiet_llama_logs() -> None:
    """Route llama.cpp's log to Python logging, errors only (its default prints every load detail to stderr,
    which blocks a server whose stderr is a pipe nobody reads yet)."""
    global _log_callback
    import llama_cpp as L

    if _log_callback is None:
        @L.llama_log_callback
        def errors_only(level: int, text: bytes, _user) -> None:
            if level == 4 and text:  # GGML_LOG_LEVEL_ERROR
                log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        _log_callback = errors_only
        L.llama_log_set(_log_callback, ctypes.c_void_p(0))


def greedy_decode(model_path: str | Path, n_tokens: int, threads: int) -> dict:
    """Load the model and greedy-decode PROBE_PROMPT (the backend must already be loaded)."""
    import llama_cpp as L
    import numpy as np

    quiet_llama_logs()
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(model_path).encode(), mp)
    if not model:
        return {"error": f"could not load {model_path}"}
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = 256, 64, 64
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_model_get_vocab(model)
    try:
        data = PROBE_PROMPT.encode()
        arr = (L.llama_token * (len(data) + 8))()
        n = L.llama_tokenize(vocab, data, len(data), arr, len(arr), True, False)
        batch = L.llama_batch_get_one(arr, n)
        tokens: list[int] = []
        one = (L.llama_token * 1)()
        n_vocab = L.llama_vocab_n_tokens(vocab)
        step_cpu: list[float] = []  # CPU time of each decode step on this thread: other processes don't count
        for i in range(n_tokens + 1):
            t = time.thread_time()
            if L.llama_decode(ctx, batch) != 0:
                return {"error": "llama_decode failed"}
            if i > 0:
                step_cpu.append(time.thread_time() - t)
            if i == n_tokens:
                break
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            best = int(logits.argmax())
            tokens.append(best)
            one[0] = best
            batch = L.llama_batch_get_one(one, 1)
        buf = ctypes.create_string_buffer(64)
        pieces = []
        for tok in tokens:
            n = L.llama_token_to_piece(vocab, tok, buf, len(buf), 0, False)
            pieces.append(buf.raw[: max(0, n)])
        per_token = sorted(step_cpu)[len(step_cpu) // 5] if step_cpu else 0.0  # a fast step: VMs' speed wanders
        return {"tokens": tokens, "text": b"".join(pieces).decode("utf-8", "replace"),
                "tok_s": 1.0 / per_token if per_token > 0 else 0.0}
    finally:
        L.llama_free(ctx)
        L.llama_model_free(model)


# --- the engine's self-check ---------------------------------------------------------------------------
def prepare(model_path: str | Path, threads: int) -> dict:
    """Before an engine serves: decode the model in a child with the chosen kernels; only if the child lives,
    load the kernels into this process and decode again; the tokens must match.

    Raises SelfCheckFailed (with the library, the CPU features and the rebuild command); returns
    {"seconds", "tokens", "variant"} when the check passes.
    """
    global _active
    started = time.perf_counter()
    key = (str(model_path), threads)
    with _lock:
        if key in _passed:
            return _passed[key]
        choice = current_choice(model_path)
        variant = Path(choice.path) if choice.path else None
        child = run_child(model_path, variant=variant, n_tokens=CHECK_TOKENS, threads=threads)
        if not child.get("tokens"):
            raise SelfCheckFailed(failure_message(f"the test decode in a child process {child.get('error')}",
                                                  choice))
        if _active is None:
            quiet_llama_logs()
            if variant is not None and not _load_variant(variant):
                raise SelfCheckFailed(failure_message(f"ggml refused the CPU backend {variant}", choice))
            _active = choice
        here = greedy_decode(model_path, CHECK_TOKENS, threads)
        if here.get("tokens") != child["tokens"]:
            raise SelfCheckFailed(failure_message(
                f"in-process tokens {here.get('tokens')} differ from the child process's {child['tokens']}", choice))
        _passed[key] = {"seconds": round(time.perf_counter() - started, 3), "tokens": child["tokens"],
                        "variant": choice.variant}
        log.info("llama.cpp self-check passed in %.2f s (CPU kernels: %s)", _passed[key]["seconds"],
                 choice.variant or "built in")
        return _passed[key]


def failure_message(what: str, choice: CpuChoice | None) -> str:
    lib = lib_dir()
    kernels = f"CPU backend {choice.variant}" if choice and choice.variant else "CPU backend built into the library"
    return (f"llama.cpp self-check failed: {what}. Library: {lib} ({kernels}); CPU features: "
            f"{' '.join(cpu_features()) or 'unknown'}. Rebuild it portably with: {rebuild_command()}")


def describe() -> dict:
    """What `luodi models`, /health and bench/serve.py print about the CPU kernels."""
    choice = _active or remembered_choice()
    return {"cpu_features": cpu_features(), "ggml_cpu_variant": choice.variant if choice else None,
            "variants_available": list(variant_paths()), "library": str(lib_dir()),
            "tried": choice.tried if choice else {}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m luodi.engines.ggml_cpu", description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="GGUF to try (default: the bundled chat model)")
    ap.add_argument("--tokens", type=int, default=CHECK_TOKENS, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--reprobe", action="store_true", help="forget the remembered choice and try again")
    args = ap.parse_args(argv)
    if args.child:
        import llama_cpp  # noqa: F401  (loads libllama and libggml)

        if args.variant and not _load_variant(Path(args.variant)):
            return 3
        print(json.dumps(greedy_decode(args.model, args.tokens, args.threads)), flush=True)
        return 0
    model = args.model or _bundled_model()
    paths = variant_paths()
    if args.reprobe or not remembered_choice(paths):
        if paths:
            choose_variant(model, paths)
    print(json.dumps(describe(), indent=1))
    return 0


def _bundled_model() -> str:
    from luodi.models import resolve
    from luodi.settings import get_settings

    return resolve(get_settings().chat_model).path


if __name__ == "__main__":
    sys.exit(main())
