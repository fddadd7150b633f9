"""Load a Hugging Face checkpoint folder (DeepSeek-V3, Kimi K2, Kimi K2.5) into our model.

Reads config.json, builds the model on the meta device (no memory), allocates it once on
the target device, then streams tensors shard by shard from memory-mapped safetensors
files straight into the allocated parameters: at no point are there two copies of the
model. Handles per-expert weights (stacked into the MoE's tensors), INT4
compressed-tensors experts (kept packed), FP8 block-scaled weights (dequantized to
`dtype`), the `kimi_k25` wrapper's `language_model.` prefix (vision tensors and
multi-token-prediction layers are skipped, with a log line), and tied embeddings.
Nothing is downloaded: `path` must be a local folder.

For tensor parallelism (parallel/) the loader takes `narrows`: which slice of a tensor
this rank holds (`Narrow`), or which range of a layer's routed experts. It then reads
only that slice from disk (safetensors `get_slice`), and only its own experts.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from model_runtime.config import ModelConfig
from model_runtime.errors import CheckpointError, CheckpointNotFoundError, ShapeMismatchError
from model_runtime.layers.moe import DenseExperts, MoE, RoutedExperts
from model_runtime.layers.rope import RotaryEmbedding
from model_runtime.models.deepseek_v3 import DeepseekV3ForCausalLM
from model_runtime.quant.fp8 import dequantize_fp8_blocks
from model_runtime.quant.int4 import Int4Experts, quantize_experts_int4, unpack_int4

log = logging.getLogger(__name__)

_EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.(weight|weight_packed)$")
_LAYER = re.compile(r"model\.layers\.(\d+)\.")
_COMPANIONS = (".weight_scale_inv", ".weight_scale", ".weight_shape")
_SKIPPED_PREFIXES = ("vision_tower.", "mm_projector.", "multi_modal_projector.")


def checkpoint_files(path: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index when sharded."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = {name: path / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointNotFoundError(f"shard {shard.name} named in {index.name} is missing from {path}")
        return files
    single = path / "model.safetensors"
    if not single.is_file():
        raise CheckpointNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")
    with safe_open(single, framework="pt") as handle:
        return {name: single for name in handle.keys()}


@dataclass(frozen=True)
class Narrow:
    """The part of a checkpoint tensor one rank holds: `length` entries of dimension `dim`
    from `start`. `length` 0: the rank holds zeros (a row-parallel bias off rank 0). For a
    layer's routed experts (key `model.layers.L.mlp.experts`): experts start..start+length-1."""

    dim: int
    start: int
    length: int

    def slices(self, ndim: int) -> tuple[slice, ...]:
        return tuple(slice(self.start, self.start + self.length) if d == self.dim else slice(None) for d in range(ndim))


@contextmanager
def _no_weight_init() -> Iterator[None]:
    """`torch.nn.init` made a no-op (process-wide, while a model is built on the meta device):
    a meta tensor has no values to initialise, and the first real call imports torch._dynamo
    (about a second of every engine's start on CPU)."""
    names = [name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def build_meta_model(config: ModelConfig, dtype: torch.dtype) -> DeepseekV3ForCausalLM:
    """The model on the meta device (no memory), in `dtype`, router float32, INT4 experts
    packed when the checkpoint's are: what passes (tensor parallelism) reshape before
    `materialize` allocates it."""
    with torch.device("meta"), _no_weight_init():
        model = DeepseekV3ForCausalLM(config).to(dtype)
        if config.quantization is not None and config.quantization.method == "int4":
            quantize_experts_int4(model, config.quantization.group_size, is_empty=True)
        for module in model.modules():
            if isinstance(module, MoE):
                module.gate.float()
    return model


def build_empty_model(config: ModelConfig, dtype: torch.dtype, device: str | torch.device) -> DeepseekV3ForCausalLM:
    """The model with uninitialised weights in `dtype` on `device` (router kept float32)."""
    return materialize(build_meta_model(config, dtype), device)


def materialize(model: DeepseekV3ForCausalLM, device: str | torch.device) -> DeepseekV3ForCausalLM:
    """Allocates a meta model's weights (uninitialised) on `device`."""
    config = model.config
    # `Module.to_empty` without its `empty_like`, whose meta path imports sympy (a third of a second).
    model = model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rotary = RotaryEmbedding(config.rope, config.qk_rope_head_dim).to(device)
    return model.eval()


def load_model(
    path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"
) -> DeepseekV3ForCausalLM:
    """Load the checkpoint in local folder `path`; `model(input_ids [B, T])` gives logits."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {path} does not exist")
    config = ModelConfig.from_path(path)
    model = build_empty_model(config, dtype, device)
    load_weights(model, path)
    return model


def load_weights(model: DeepseekV3ForCausalLM, path: Path, narrows: Mapping[str, Narrow] | None = None) -> None:
    """Fills an allocated model from the checkpoint in `path`; `narrows` as in `Narrow`."""
    files = checkpoint_files(path)
    with ExitStack() as stack, torch.no_grad():
        _Loader(model, model.config, files, stack, narrows or {}).run()


class _Loader:
    def __init__(self, model: DeepseekV3ForCausalLM, config: ModelConfig, files: dict[str, Path], stack: ExitStack, narrows: Mapping[str, Narrow]):
        self.model, self.config, self.files, self.stack, self.narrows = model, config, files, stack, narrows
        self.targets = model.state_dict(keep_vars=True)
        if config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight:
            self.targets.pop("lm_head.weight", None)
        self.handles: dict[Path, object] = {}
        self.loaded: set[str] = set()
        self.skipped: dict[str, int] = {}
        self.missing_experts = {
            (layer, expert, proj)
            for layer in range(config.num_hidden_layers)
            if config.is_moe_layer(layer)
            for expert in self._own_experts(layer)
            for proj in ("gate", "up", "down")
        }

    def _own_experts(self, layer: int) -> range:
        narrow = self.narrows.get(f"model.layers.{layer}.mlp.experts")
        return range(narrow.start, narrow.start + narrow.length) if narrow else range(self.config.n_routed_experts)

    def run(self) -> None:
        shards = sorted(set(self.files.values()))
        for shard in tqdm(shards, desc="loading shards", unit="shard", disable=None):
            for name in self._handle(shard).keys():
                self._load(name)
        for what, count in self.skipped.items():
            log.warning("skipped %d %s tensors", count, what)
        missing = [name for name in self.targets if name not in self.loaded]
        missing += [f"model.layers.{l}.mlp.experts.{e}.{p}_proj" for l, e, p in sorted(self.missing_experts)]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CheckpointError(f"checkpoint has no tensor for {', '.join(missing[:5])}{more}")

    def _handle(self, shard: Path):
        if shard not in self.handles:
            self.handles[shard] = self.stack.enter_context(safe_open(shard, framework="pt", device="cpu"))
        return self.handles[shard]

    def _get(self, name: str, narrow: Narrow | None = None) -> torch.Tensor:
        if name not in self.files:
            raise CheckpointError(f"checkpoint has no tensor {name}")
        if narrow is None:
            return self._handle(self.files[name]).get_tensor(name)
        lazy = self._handle(self.files[name]).get_slice(name)
        return lazy[narrow.slices(len(lazy.get_shape()))]

    def _load(self, full_name: str) -> None:
        name = full_name
        prefix = self.config.weight_prefix
        if prefix:
            if not name.startswith(prefix):
                kind = "vision (no vision support yet)" if name.startswith(_SKIPPED_PREFIXES) else "non-language-model"
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                return
            name = name[len(prefix) :]
        if name.endswith(_COMPANIONS) or name.endswith("rotary_emb.inv_freq"):
            return
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= self.config.num_hidden_layers:
            kind = "multi-token-prediction layer (not used)"
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        if name == "lm_head.weight" and "lm_head.weight" not in self.targets:
            return  # tied to the embedding
        expert = _EXPERT.match(name)
        if expert:
            self._load_expert(full_name, int(expert.group(1)), int(expert.group(2)), expert.group(3))
            return
        base = name.removesuffix("_packed")
        if base not in self.targets:
            raise CheckpointError(f"unexpected tensor {full_name} (no such weight in a {self.config.model_type} model)")
        target = self.targets[base]
        narrow = self.narrows.get(base)
        if narrow is not None and narrow.length == 0:
            target.data.zero_()
        else:
            target.data.copy_(self._dense(full_name, target.shape, target.dtype, narrow))
        self.loaded.add(base)

    def _dense(self, full_name: str, shape: torch.Size, dtype: torch.dtype, narrow: Narrow | None = None) -> torch.Tensor:
        """The tensor `full_name` (its `narrow` slice) as a plain `dtype` tensor,
        dequantizing INT4 or FP8."""
        stem = full_name.removesuffix(".weight_packed").removesuffix(".weight")
        if full_name.endswith(".weight_packed"):  # rare (Kimi keeps these bf16): unpack whole, then slice
            value = unpack_int4(self._get(full_name), self._get(stem + ".weight_scale"), dtype)
            self._check_packed_shape(stem, value.shape)
            value = value[narrow.slices(value.ndim)] if narrow else value
        elif stem + ".weight_scale_inv" in self.files and full_name.endswith(".weight"):
            value = self._fp8(full_name, stem, dtype, narrow)
        else:
            value = self._get(full_name, narrow)
        if value.shape != shape:
            raise ShapeMismatchError(f"{full_name} has shape {tuple(value.shape)}, the model expects {tuple(shape)}")
        return value.to(dtype)

    def _fp8(self, full_name: str, stem: str, dtype: torch.dtype, narrow: Narrow | None) -> torch.Tensor:
        """Dequantized FP8 weight; with `narrow`, reads only the whole blocks covering it."""
        block = self.config.quantization.block_size if self.config.quantization else (128, 128)
        if narrow is None:
            return dequantize_fp8_blocks(self._get(full_name), self._get(stem + ".weight_scale_inv"), block, dtype, name=stem)
        size = self._handle(self.files[full_name]).get_slice(full_name).get_shape()[narrow.dim]
        step = block[narrow.dim]
        first, end = narrow.start // step * step, min(size, -(-(narrow.start + narrow.length) // step) * step)
        covering = Narrow(narrow.dim, first, end - first)
        scales = Narrow(narrow.dim, first // step, -(-end // step) - first // step)
        value = dequantize_fp8_blocks(self._get(full_name, covering), self._get(stem + ".weight_scale_inv", scales), block, dtype, name=stem)
        return value.narrow(narrow.dim, narrow.start - first, narrow.length)

    def _check_packed_shape(self, stem: str, shape: torch.Size) -> None:
        if stem + ".weight_shape" in self.files:
            declared = tuple(int(v) for v in self._get(stem + ".weight_shape").tolist())
            if declared != tuple(shape):
                raise ShapeMismatchError(f"{stem}.weight_shape says {declared}, packed data holds {tuple(shape)}")

    def _load_expert(self, full_name: str, layer: int, expert: int, proj: str) -> None:
        mlp = self.model.model.layers[layer].mlp
        if not isinstance(mlp, MoE) or expert >= self.config.n_routed_experts:
            raise CheckpointError(f"unexpected tensor {full_name}: layer {layer} has no routed expert {expert}")
        own = self._own_experts(layer)
        if expert not in own:
            return  # another rank's expert: never read
        global_expert, expert = expert, expert - own.start
        experts: RoutedExperts = mlp.experts
        hidden = experts.hidden_dim
        rows = {"gate": slice(0, hidden), "up": slice(hidden, 2 * hidden), "down": slice(None)}[proj]
        fused = "w2" if proj == "down" else "w13"
        if isinstance(experts, Int4Experts):
            packed_slot = getattr(experts, f"{fused}_packed")[expert, rows]
            scale_slot = getattr(experts, f"{fused}_scale")[expert, rows]
            if not full_name.endswith("_packed"):
                raise CheckpointError(f"{full_name} is not INT4-packed but the config says routed experts are")
            stem = full_name.removesuffix(".weight_packed")
            packed, scale = self._get(full_name), self._get(stem + ".weight_scale")
            for slot, value, what in ((packed_slot, packed, "weight_packed"), (scale_slot, scale, "weight_scale")):
                if value.shape != slot.shape:
                    raise ShapeMismatchError(
                        f"{stem}.{what} has shape {tuple(value.shape)}, the model expects {tuple(slot.shape)}"
                    )
            self._check_packed_shape(stem, torch.Size((packed.shape[0], packed.shape[1] * 8)))
            packed_slot.copy_(packed)
            scale_slot.copy_(scale)
        else:
            assert isinstance(experts, DenseExperts)
            slot = getattr(experts, fused)[expert, rows]
            slot.copy_(self._dense(full_name, slot.shape, slot.dtype))
        self.missing_experts.discard((layer, global_expert, proj))
        stacked = ("_packed", "_scale") if isinstance(experts, Int4Experts) else ("",)
        self.loaded.update(f"model.layers.{layer}.mlp.experts.{fused}{suffix}" for suffix in stacked)
