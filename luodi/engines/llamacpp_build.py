"""Build llama.cpp once per machine, portably, and install it into the running Python's llama-cpp-python.

pip's own build of llama-cpp-python compiles with -march=native: the library runs only on CPUs like the build
machine's, and on some CPUs (AVX-512 FP16 / AMX VMs that report features they cannot run) not even there. This
builds the same llama.cpp sources (vendored in llama-cpp-python's sdist) with the CPU backend as loadable
variants, one per instruction-set level (haswell = AVX2 ... sapphirerapids = AMX); luodi.engines.ggml_cpu picks
the fastest variant that really runs, by trying it in a child process.

    python -m luodi.engines.llamacpp_build            # build (or reuse) and install into this environment
    python -m luodi.engines.llamacpp_build --tools llama-server   # also the C++ server (bench baseline)

The build lives in ~/.cache/luodi/llama.cpp/<version>-<flags digest>/ (LUODI_NATIVE_CACHE moves it) and is
reused by every checkout and virtual environment on the machine. Standard library only: it runs before luodi's
dependencies are installed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from luodi.atomic import write_json  # standard library only, like this module

DEFAULT_VERSION = "0.3.36"

# CPU backend variants, best first, with ggml's own feature sets (ggml/src/CMakeLists.txt, GGML_CPU_ALL_VARIANTS).
# ggml's full list has 14 levels and takes ~30 min to compile on 2 cores; these cover x86-64 CPUs from AVX2 up
# (the AVX2 haswell level is built with the libraries; each other one is a small separate build of ggml).
_AVX2 = ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2")
CPU_VARIANT_FEATURES = {
    "sapphirerapids": (*_AVX2, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8"),
    "zen4": (*_AVX2, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"),
    "icelake": (*_AVX2, "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cascadelake": (*_AVX2, "AVX512", "AVX512_VNNI"),
    "skylakex": (*_AVX2, "AVX512"),
    "alderlake": (*_AVX2, "AVX_VNNI"),
    "haswell": _AVX2,
}
CPU_VARIANTS = tuple(CPU_VARIANT_FEATURES)
BASE_VARIANT = "haswell"
ALL_FEATURES = ("SSE42", "AVX", "AVX_VNNI", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16",
                "FMA", "F16C", "AMX_TILE", "AMX_INT8", "AMX_BF16")

COMMON_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",  # never -march=native: the build must run on other CPUs than the build machine's
    "-DGGML_BACKEND_DL=ON",  # the CPU backend is a loadable module: one per instruction-set level
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_OPENMP=OFF",  # ggml's own thread pool: its barrier polling can be tuned (see ggml_cpu.py)
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN:$ORIGIN/../lib",
)
LLAMA_FLAGS = ("-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON")
# one more CPU level: configure the same tree with only ggml's libraries (the sdist has no standalone ggml project)
VARIANT_FLAGS = ("-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_COMMON=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
                 "-DLLAMA_BUILD_SERVER=OFF")
CMAKE_FLAGS = COMMON_FLAGS + LLAMA_FLAGS


def feature_flags(variant: str) -> list[str]:
    on = set(CPU_VARIANT_FEATURES[variant])
    return [f"-DGGML_{f}={'ON' if f in on else 'OFF'}" for f in ALL_FEATURES]


LIBRARIES = ("llama", "ggml", "ggml-base", "ggml-cpu")
DEFAULT_TOOLS: tuple[str, ...] = ()  # bench/serve.py adds llama-bench and llama-server


def cache_root() -> Path:
    root = os.environ.get("LUODI_NATIVE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "luodi"
    return Path(root).expanduser()


def build_key(version: str) -> str:
    """The build folder's name: the llama-cpp-python version and a digest of everything that shapes the build."""
    shape = [version, CMAKE_FLAGS, VARIANT_FLAGS, CPU_VARIANT_FEATURES, _compiler()]
    digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()
    return f"{version}-{digest[:10]}"


def build_dir(version: str = DEFAULT_VERSION) -> Path:
    return cache_root() / "llama.cpp" / build_key(version)


NATIVE_FLAGS = tuple(f for f in COMMON_FLAGS if "NATIVE" not in f and "BACKEND_DL" not in f) + (
    "-DGGML_NATIVE=ON", "-DGGML_BACKEND_DL=OFF")


def build_native(version: str = DEFAULT_VERSION, jobs: int | None = None) -> Path:
    """A -march=native build of the same sources, for bench/serve.py's portable-vs-native comparison only
    (lib/ holds it; point LLAMA_CPP_LIB_PATH there). Never installed: it runs on this CPU alone, if at all."""
    out = cache_root() / "llama.cpp" / f"{build_key(version)}-native"
    lib = out / "lib"
    if (lib / "libllama.so").exists():
        return lib
    tree = build(version, (), jobs) / "src" / f"llama_cpp_python-{version}"
    work = _cmake(tree / "vendor" / "llama.cpp", out / "cmake-build", [*NATIVE_FLAGS, *LLAMA_FLAGS],
                  ["llama", "ggml", "ggml-base", "ggml-cpu"], jobs or os.cpu_count() or 1)
    for f in (work / "bin").iterdir():
        if f.name.startswith("lib") and ".so" in f.name:
            _copy(f, lib / f.name)
    return lib


def build_cuda_server(version: str = DEFAULT_VERSION, jobs: int | None = None) -> Path:
    """llama-server built with CUDA from the same sources, for bench/serve_vllm.py's baseline only (bin/ holds it
    with its libraries). Needs the CUDA toolkit (nvcc); never installed into luodi's engine."""
    out = cache_root() / "llama.cpp" / f"{build_key(version)}-cuda"
    binary = out / "bin" / "llama-server"
    if binary.exists():
        return out / "bin"
    if shutil.which("nvcc") is None:
        raise RuntimeError("llama.cpp's CUDA build needs the CUDA toolkit (nvcc on PATH), which this machine lacks")
    tree = build(version, (), jobs) / "src" / f"llama_cpp_python-{version}"
    flags = [f for f in COMMON_FLAGS if "BACKEND_DL" not in f] + ["-DGGML_BACKEND_DL=OFF", "-DGGML_CUDA=ON",
                                                                   *LLAMA_FLAGS]
    work = _cmake(tree / "vendor" / "llama.cpp", out / "cmake-build", flags, ["llama-server"],
                  jobs or os.cpu_count() or 1)
    for f in (work / "bin").iterdir():
        if f.name == "llama-server" or (f.name.startswith("lib") and ".so" in f.name):
            _copy(f, out / "bin" / f.name)
    return out / "bin"


def _compiler() -> str:
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def _say(msg: str) -> None:
    print(f"[llama.cpp build] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> None:
    _say(" ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def _sdist(version: str, dest: Path) -> Path:
    """llama-cpp-python's source archive (it vendors llama.cpp), downloaded once into the build folder."""
    for f in dest.glob(f"llama_cpp_python-{version}.tar.gz"):
        return f
    dest.mkdir(parents=True, exist_ok=True)
    # --no-binary for this package only: with :all: pip compiles its build dependencies (cmake...) from source too
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
          f"llama_cpp_python=={version}", "-d", str(dest)])
    return next(dest.glob(f"llama_cpp_python-{version}.tar.gz"))


def _tool(name: str) -> str:
    """cmake / ninja from this environment (pip packages) before the system's."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: `pip install cmake ninja` (or apt-get install cmake ninja-build)")
    return found


def build(version: str = DEFAULT_VERSION, tools: tuple[str, ...] = DEFAULT_TOOLS, jobs: int | None = None) -> Path:
    """Build (or reuse) the portable libraries and `tools`; returns the build folder (lib/, cpu/, bin/)."""
    out = build_dir(version)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two installs at once: the second waits, then reuses
        manifest = _manifest(out)
        missing = [t for t in tools if not (out / "bin" / t).exists()]
        if manifest and not missing:
            return out
        started = time.monotonic()
        src_root = out / "src"
        tree = src_root / f"llama_cpp_python-{version}"
        if not (tree / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
            archive = _sdist(version, src_root)
            with tarfile.open(archive) as tar:
                # the "data" filter (no links out, no devices) where this Python has it (3.11.4+; Debian 12: 3.11.2)
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(src_root, **safe)
        llama_src = tree / "vendor" / "llama.cpp"
        jobs = jobs or os.cpu_count() or 1
        if not manifest:
            _say(f"compiling llama.cpp and {len(CPU_VARIANTS)} CPU levels on {jobs} cores "
                 "(about 5 minutes on 2 cores, once per machine)")
            work = _cmake(llama_src, out / "cmake-build", [*CMAKE_FLAGS, *feature_flags(BASE_VARIANT)],
                          [*LIBRARIES, *tools], jobs)
            _collect(work / "bin", out, BASE_VARIANT)
            for variant in CPU_VARIANTS:
                if variant != BASE_VARIANT and not (out / "cpu" / f"libggml-cpu-{variant}.so").exists():
                    work = _cmake(llama_src, out / f"cmake-build-{variant}",
                                  [*COMMON_FLAGS, *VARIANT_FLAGS, *feature_flags(variant)], ["ggml-cpu"], jobs)
                    _copy(work / "bin" / "libggml-cpu.so", out / "cpu" / f"libggml-cpu-{variant}.so")
                    shutil.rmtree(work, ignore_errors=True)  # objects of a finished level are not needed again
        elif missing:
            work = _cmake(llama_src, out / "cmake-build", [*CMAKE_FLAGS, *feature_flags(BASE_VARIANT)], missing, jobs)
            _collect(work / "bin", out, BASE_VARIANT)
        seconds = round(time.monotonic() - started, 1)
        done = manifest or {"version": version, "flags": list(CMAKE_FLAGS), "variants": list(CPU_VARIANTS),
                            "compiler": _compiler(), "build_seconds": seconds}
        done["tools"] = sorted(p.name for p in (out / "bin").glob("llama-*"))
        write_json(out / "build.json", done)
        _say(f"built in {seconds} s: {out}")
        return out


def _manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return None


def _cmake(source: Path, work: Path, flags: list[str], targets: list[str], jobs: int) -> Path:
    cmake, ninja = _tool("cmake"), _tool("ninja")
    _run([cmake, "-S", str(source), "-B", str(work), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *flags],
         stdout=subprocess.DEVNULL)
    _run([cmake, "--build", str(work), "-j", str(jobs), "--target", *targets])
    return work


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    shutil.copy2(src, dest, follow_symlinks=False)


def _collect(built: Path, out: Path, cpu_variant: str) -> None:
    """Libraries to lib/, the CPU backend to cpu/ under its level's name, programs to bin/ (symlinks kept)."""
    for f in built.iterdir():
        if f.name == "libggml-cpu.so":
            _copy(f, out / "cpu" / f"libggml-cpu-{cpu_variant}.so")
        elif f.name.startswith("lib") and ".so" in f.name:
            _copy(f, out / "lib" / f.name)
        elif f.name.startswith("llama-") and os.access(f, os.X_OK) and f.is_file():
            _copy(f, out / "bin" / f.name)


def install(out: Path, version: str = DEFAULT_VERSION) -> Path:
    """Install llama-cpp-python `version` (its Python side only) and put the portable build in its lib/."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    installed = _installed_version()
    if installed != version or spec is None:
        env = dict(os.environ, CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF")  # compile nothing
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", str(_sdist(version, out / "src"))]
        constraints = Path("constraints.txt")
        if constraints.is_file():
            cmd += ["-c", str(constraints)]
        _run(cmd, env=env)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llama_cpp")
    lib = Path(spec.origin).parent / "lib"
    shutil.rmtree(lib, ignore_errors=True)  # a native build's libraries must not stay beside ours
    lib.mkdir(parents=True)
    for f in (out / "lib").iterdir():
        if not f.name.startswith(("libllama-common", "libllama-server", "libllama-bench")):  # tools' own parts
            shutil.copy2(f, lib / f.name, follow_symlinks=False)
    shutil.copytree(out / "cpu", lib / "ggml-cpu", symlinks=True)
    write_json(lib / "luodi-build.json", {"build": str(out), **(_manifest(out) or {})})
    _say(f"installed into {lib}")
    return lib


def _installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def rebuild_command() -> str:
    """What a user runs to get the portable build into the environment that runs luodi."""
    return f"{sys.executable} -m luodi.engines.llamacpp_build"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m luodi.engines.llamacpp_build", description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=None, help=f"llama-cpp-python version (default: {DEFAULT_VERSION} "
                    "or the one in ./constraints.txt)")
    ap.add_argument("--tools", nargs="*", default=list(DEFAULT_TOOLS), help="llama.cpp programs to build too")
    ap.add_argument("--no-install", action="store_true", help="only build (or find) it; print the folder")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--native", action="store_true", help="build the -march=native comparison libraries only")
    args = ap.parse_args(argv)
    version = args.version or _pinned_version() or DEFAULT_VERSION
    tools = tuple(dict.fromkeys([*DEFAULT_TOOLS, *args.tools]))
    try:
        if args.native:
            print(build_native(version, args.jobs))
            return 0
        out = build(version, tools, args.jobs)
        if not args.no_install:
            install(out, version)
    except subprocess.CalledProcessError as e:
        _say(f"FAILED: {' '.join(map(str, e.cmd))} exited {e.returncode}. Needs a C++17 compiler, cmake >= 3.21 "
             "and ninja (`pip install cmake ninja`).")
        return 1
    print(out)
    return 0


def _pinned_version() -> str | None:
    try:
        for line in Path("constraints.txt").read_text().splitlines():
            if line.lower().replace("-", "_").startswith("llama_cpp_python=="):
                return line.split("==", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
