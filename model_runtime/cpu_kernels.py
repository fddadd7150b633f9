"""C kernels for the engine on CPU, built on first use with the system's C compiler.

A small model's step on CPU is bound by how many operations it runs, not their size.
A few places spent most of what was left after the torch-level fusions
(models/deepseek_v3.py `fuse_for_inference`), and each is one C call here:

- MLA decode attention (`csrc/mla_decode.c`): the torch path (engine/paged_attention.py)
  gathers every sequence's context padded to the batch's longest, then runs two batched
  matmuls with four query rows each and a softmax, ~40% of the tiny model's decode
  step. The kernel reads each sequence's own context in place, with B-wide vector
  multiply-adds over blocks stored transposed (`[D, B]` per block: see
  `PagedLatentAttention`), about 3x faster on bench/engine_throughput.py's batches.
  Heads, widths and block size are compile-time constants (one library per shape), so
  every loop has a fixed trip count.
- RMSNorm (`csrc/cpu_ops.c`): F.rms_norm is six operations on CPU (~11 us on a
  [32, 64] batch); a step runs four per layer.
- Greedy argmax over the logits (`csrc/cpu_ops.c`): torch's CPU argmax is not
  vectorised (~30 us for [32, 1024]).
- Rotary embedding of q_pe and k_pe (`csrc/cpu_ops.c`): six operations each in torch.
- The MoE router's selection (`csrc/cpu_ops.c`; without group limits): sigmoid, bias,
  top-k, gather, renormalise, scale, eight operations in torch.
- A small MoE layer's experts for a decode-sized batch (`csrc/cpu_ops.c`): each token
  through its own k experts and the shared one, over weights kept transposed, instead
  of every token through every expert in batched matmuls (layers/moe.py's dense path).

Plain C called through ctypes (no torch headers): `cc -O3 -ffast-math -march=native
-shared` takes well under a second. Libraries go to `$XDG_CACHE_HOME/moe-swarm/kernels/`
(default `~/.cache/...`) under a name hashing the source, defines, flags, compiler and
host, and are loaded from there afterwards. Results match the torch paths to float32
rounding, not bit for bit. Where no C compiler works the engine keeps its torch paths
and logs why once; `MOE_SWARM_CPU_KERNELS=0` turns the kernels off. Only the engine
uses them (through `fuse_for_inference` and its runner): training never does.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
FLAGS = ("-O3", "-ffast-math", "-march=native", "-fPIC", "-shared")
ENV_SWITCH = "MOE_SWARM_CPU_KERNELS"
BLOCK_SIZES = (4, 8, 16, 32, 64)  # a block row is one vector: a power of two floats
MAX_ACCUMULATOR_FLOATS = 1 << 13  # heads x latent x block: the decode kernel's accumulators live on the stack (32 KiB; musl threads get 128 KiB)

DecodeKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

_lock = threading.Lock()
_libraries: dict[tuple[str, tuple[str, ...]], ctypes.CDLL | None] = {}
_decode_kernels: dict[tuple[int, int, int, int], DecodeKernel | None] = {}
_warned = False


def is_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


# -- MLA decode attention ------------------------------------------------------------------


def fits(num_heads: int, dim: int, latent: int, block_size: int) -> bool:
    """Whether the decode kernel takes this shape (small models; large ones keep the torch path)."""
    return block_size in BLOCK_SIZES and latent <= dim and num_heads * latent * block_size <= MAX_ACCUMULATOR_FLOATS


def mla_decode(num_heads: int, dim: int, latent: int, block_size: int) -> DecodeKernel | None:
    """The decode kernel for this shape (built or loaded once per process), or None where
    kernels are off, the shape does not fit, or it cannot be built."""
    key = (num_heads, dim, latent, block_size)
    if key not in _decode_kernels:
        library = _library("mla_decode.c", (f"-DNUM_HEADS={num_heads}", f"-DDIM={dim}", f"-DLATENT={latent}", f"-DBLOCK={block_size}")) if fits(*key) else None
        _decode_kernels[key] = _decode_kernel(library, *key) if library is not None else None
    return _decode_kernels[key]


def _decode_kernel(library: ctypes.CDLL, num_heads: int, dim: int, latent: int, block_size: int) -> DecodeKernel:
    function = _declare(library, "moe_swarm_mla_decode", [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p])

    def decode(q: torch.Tensor, blocks: torch.Tensor, tables: torch.Tensor, lens: torch.Tensor, softmax_scale: float) -> torch.Tensor:
        """q `[S, H, D]`, blocks `[num_blocks, D * B]` (one layer, each block `[D, B]`),
        tables `[S, nb]` and lens `[S]` int64 -> `[S, H, C]`."""
        num_seqs = q.shape[0]
        assert q.shape[1:] == (num_heads, dim) and q.dtype == blocks.dtype == torch.float32
        assert blocks.shape[1] == dim * block_size and blocks.is_contiguous() and tables.dtype == lens.dtype == torch.int64
        q, tables, lens = q.contiguous(), tables.contiguous(), lens.contiguous()
        out = torch.empty(num_seqs, num_heads, latent, dtype=torch.float32)
        if num_seqs:
            scratch = torch.empty(num_heads * tables.shape[1] * block_size, dtype=torch.float32)  # scores
            function(q.data_ptr(), blocks.data_ptr(), tables.data_ptr(), lens.data_ptr(), num_seqs, tables.shape[1], softmax_scale, out.data_ptr(), scratch.data_ptr())
        return out

    return decode


# -- RMSNorm and argmax ----------------------------------------------------------------


def rms_norm() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None:
    """`rms_norm(x [..., D], weight [D], eps)` in one call (float32, rows of x may be
    strided), or None where kernels are unavailable."""
    function = _cpu_op("moe_swarm_rms_norm", [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p])
    if function is None:
        return None

    def norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape, dim = x.shape, x.shape[-1]
        rows = x if x.dim() == 2 and x.stride(-1) == 1 else x.reshape(-1, dim).contiguous()  # [M, D], rows maybe strided
        out = torch.empty(rows.shape[0], dim, dtype=torch.float32)
        function(rows.data_ptr(), rows.shape[0], dim, rows.stride(0), weight.data_ptr(), eps, out.data_ptr())
        return out.view(shape)

    return norm


def argmax() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`argmax(logits [M, V])` over the last dim (float32, contiguous), or None."""
    function = _cpu_op("moe_swarm_argmax", [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p])
    if function is None:
        return None

    def best(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.contiguous()
        out = torch.empty(logits.shape[0], dtype=torch.int64)
        if logits.shape[0]:
            function(logits.data_ptr(), logits.shape[0], logits.shape[1], out.data_ptr())
        return out

    return best


def route() -> Callable[[torch.Tensor, torch.Tensor, int, bool, float], tuple[torch.Tensor, torch.Tensor]] | None:
    """`route(logits [N, E], bias [E], k, normalize, scaling) -> (idx [N, k], weights [N, k])`:
    layers/moe.py's `TopkRouter` without group limits, in one call (float32), or None."""
    function = _cpu_op("moe_swarm_route", [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float] + [ctypes.c_void_p] * 3)
    if function is None:
        return None

    def select(logits: torch.Tensor, bias: torch.Tensor, k: int, normalize: bool, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        rows, experts = logits.shape
        assert k <= experts and logits.dtype == bias.dtype == torch.float32
        logits, bias = logits.contiguous(), bias.contiguous()
        idx = torch.empty(rows, k, dtype=torch.int64)
        weights = torch.empty(rows, k, dtype=torch.float32)
        if rows:
            scratch = torch.empty(2 * experts, dtype=torch.float32)  # scores, biased scores
            function(logits.data_ptr(), rows, experts, bias.data_ptr(), k, int(normalize), scaling, idx.data_ptr(), weights.data_ptr(), scratch.data_ptr())
        return idx, weights

    return select


def rope_pairs() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """`rope_pairs(x [N, H, R] or [N, R], rotation [N, R/2] complex) -> [N, (H,) R]`:
    layers/rope.py's rotation of interleaved pairs, written de-interleaved, in one call
    (float32; x's rows may be strided), or None."""
    function = _cpu_op("moe_swarm_rope_pairs", [ctypes.c_void_p] + [ctypes.c_int64] * 5 + [ctypes.c_void_p, ctypes.c_void_p])
    if function is None:
        return None

    def rotate(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        rows = x if x.dim() == 3 else x[:, None, :]  # [N, H, R]
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        rot = torch.view_as_real(rotation.contiguous())  # [N, R/2, 2]: cos, sin
        assert rows.dtype == rot.dtype == torch.float32 and rot.shape[1] * 2 == rows.shape[-1]
        out = torch.empty(rows.shape, dtype=torch.float32)
        function(rows.data_ptr(), rows.shape[0], rows.shape[1], rows.shape[2], rows.stride(0), rows.stride(1), rot.data_ptr(), out.data_ptr())
        return out.view(x.shape)

    return rotate


def moe_experts() -> Callable[..., torch.Tensor] | None:
    """`moe_experts(x [N, D], idx [N, K], weights [N, K], w13t [E', D, 2I], w2t [E', I, D],
    num_routed) -> [N, D]`: each token through its K routed experts and the shared ones
    (`E' - num_routed` of them, weight 1) only, weights transposed (float32), or None."""
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    function = _cpu_op("moe_swarm_moe", [pointer, count, count, count, pointer, pointer, count, pointer, pointer, count, count, pointer, pointer])
    if function is None:
        return None

    def experts(x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, w13t: torch.Tensor, w2t: torch.Tensor, num_routed: int) -> torch.Tensor:
        tokens, dim = x.shape
        hidden = w2t.shape[1]
        assert w13t.shape[1:] == (dim, 2 * hidden) and w2t.shape[2] == dim
        assert x.dtype == weights.dtype == w13t.dtype == w2t.dtype == torch.float32 and idx.dtype == torch.int64
        assert w13t.is_contiguous() and w2t.is_contiguous()
        x, idx, weights = x.contiguous(), idx.contiguous(), weights.contiguous()
        out = torch.empty(tokens, dim, dtype=torch.float32)
        if tokens:
            scratch = torch.empty(3 * hidden, dtype=torch.float32)  # gate|up, activation
            function(x.data_ptr(), tokens, dim, hidden, idx.data_ptr(), weights.data_ptr(), idx.shape[1],
                     w13t.data_ptr(), w2t.data_ptr(), num_routed, w13t.shape[0] - num_routed, out.data_ptr(), scratch.data_ptr())  # fmt: skip
        return out

    return experts


# -- building ------------------------------------------------------------------------------


def _cpu_op(name: str, argtypes: list[Any]) -> Any:
    """Function `name` of csrc/cpu_ops.c, its argument types declared, or None where the
    kernels are off or cannot be built."""
    library = _library("cpu_ops.c")
    return None if library is None else _declare(library, name, argtypes)


def _declare(library: ctypes.CDLL, name: str, argtypes: list[Any]) -> Any:
    """`library.name` returning void, taking `argtypes` (ctypes converts and checks the arguments)."""
    function = getattr(library, name)
    function.restype = None
    function.argtypes = argtypes
    return function


def _library(source: str, defines: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The built library (once per process), or None where kernels are off or it cannot
    be built (the first failure is logged)."""
    global _warned
    key = (source, defines)
    if key in _libraries:
        return _libraries[key]
    with _lock:
        if key in _libraries:
            return _libraries[key]
        library = None
        if is_enabled():
            try:
                library = ctypes.CDLL(str(_build(CSRC / source, defines)))
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                if not _warned:
                    log.warning("CPU kernels are not available (%s): the engine uses its slower torch paths", exc)
                    _warned = True
        _libraries[key] = library
        return library


def _build(source: Path, defines: tuple[str, ...]) -> Path:
    """The shared library, compiled now unless cached. Concurrent builders (several
    engines, tensor-parallel ranks) each compile into a temporary file of their own and
    rename it into place, so no one loads half a library."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler found (cc, gcc, clang or $CC)")
    recipe = " ".join((compiler, *FLAGS, *defines, platform.machine(), platform.node()))
    key = hashlib.sha256(source.read_bytes() + recipe.encode()).hexdigest()[:20]
    target = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moe-swarm" / "kernels" / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):  # a compiler without -march=native: generic code
            result = subprocess.run([compiler, *flags, *defines, str(source), "-o", str(built), "-lm"], capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                break
        else:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:500]}")
        os.replace(built, target)
    return target
