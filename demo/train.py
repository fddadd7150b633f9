"""Train the demo model: `python -m demo.train OUT_DIR [--steps N] [--minutes M] ...`.

1. Learns the tokenizer from generated conversations (demo/vocab.py) into OUT_DIR/tokenizer.
2. Trains model_runtime's architecture (demo/model.py) on conversations from fresh seeded
   worlds (demo/trajectories.py), one per row, batched with others of similar length. Loss: the assistant's tokens, plus the rest at
   `--context-weight` (copies such as a tool result echoing its call help the model
   learn to copy early).
3. Every `--eval-every` steps, measures each ability on worlds whose seeds training never
   draws (`demo/abilities.py`), and appends a line to OUT_DIR/log.jsonl.
   `--init CKPT` starts from an exported checkpoint instead (its tokenizer, config and
   weights, INT4 experts dequantized; a new optimizer and schedule): to train on from
   the shipped model (`--init demo/checkpoint`) when no state.pt of its run is at hand;
   `--grow-after I,J` then inserts new layers that add nothing until trained (block
   expansion). `--digit-weight W` weighs the digits the assistant writes W times its other
   tokens (the values' digits are most of what the model gets wrong).
4. Saves OUT_DIR/state.pt (resumable with --resume) and, at the end, the shipped format:
   OUT_DIR/checkpoint (HF layout, routed experts INT4, tokenizer and chat template).

CPU: run it under `nice -n 19`; it uses `--threads` (2) threads.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from demo.abilities import EvalSet, evaluate
from demo.model import (DEMO_GROUP_SIZE, RoutingBalancer, build_model, check_growth, demo_config, export_checkpoint, grow_layers,
                        load_checkpoint_weights, save_state, train_logits)
from demo.trajectories import TRAIN_SEED_LIMIT, Conversation, encode, sample_conversation
from demo.vocab import build_tokenizer
from model_runtime import load_model
from model_runtime.tokenizer import KimiTokenizer


class Batcher:
    """Batches of whole conversations, one per row, of similar lengths (a pool is sorted by
    length and cut into batches of at most `max_tokens` row slots, padding included)."""

    def __init__(self, tokenizer: KimiTokenizer, rng: random.Random, sample: Callable[[random.Random], Conversation], *,
                 max_tokens: int, max_len: int, pool_size: int = 64) -> None:  # fmt: skip
        """`sample`: one conversation from a seeded generator (`sample_conversation` with the run's mixture)."""
        self.tokenizer, self.rng, self.sample = tokenizer, rng, sample
        self.max_tokens, self.max_len, self.pool_size = max_tokens, max_len, pool_size
        self.pad_id = tokenizer.token_id("[EOS]") or 0
        self._ready: list[dict[str, torch.Tensor]] = []

    def _document(self) -> tuple[list[int], list[bool]]:
        while True:
            seed = self.rng.randrange(TRAIN_SEED_LIMIT)
            conversation = self.sample(random.Random(seed))
            ids, mask = encode(self.tokenizer, conversation.segments())
            if len(ids) <= self.max_len:
                return ids, mask

    def batch(self) -> dict[str, torch.Tensor]:
        if not self._ready:
            pool = sorted((self._document() for _ in range(self.pool_size)), key=lambda doc: len(doc[0]))
            group: list[tuple[list[int], list[bool]]] = []
            for doc in pool:
                if group and (len(group) + 1) * len(doc[0]) > self.max_tokens:
                    self._ready.append(self._tensors(group))
                    group = []
                group.append(doc)
            self._ready.append(self._tensors(group))
            self.rng.shuffle(self._ready)
        return self._ready.pop()

    def _tensors(self, docs: list[tuple[list[int], list[bool]]]) -> dict[str, torch.Tensor]:
        length = max(len(ids) for ids, _ in docs)
        ids = torch.full((len(docs), length), self.pad_id, dtype=torch.long)
        is_assistant = torch.zeros(len(docs), length, dtype=torch.bool)
        is_real = torch.zeros(len(docs), length, dtype=torch.bool)
        for row, (doc_ids, mask) in enumerate(docs):
            ids[row, : len(doc_ids)] = torch.tensor(doc_ids)
            is_assistant[row, : len(doc_ids)] = torch.tensor(mask)
            is_real[row, : len(doc_ids)] = True
        return {"ids": ids, "is_assistant": is_assistant, "is_real": is_real}


def digit_ids(tokenizer: KimiTokenizer) -> torch.Tensor:
    """The ten digits' token ids (the demo vocabulary never merges a digit with anything)."""
    ids = [tokenizer.encode(str(d)) for d in range(10)]
    if any(len(piece) != 1 for piece in ids):
        raise ValueError("this tokenizer merges digits into longer tokens: --digit-weight needs one token per digit")
    return torch.tensor([piece[0] for piece in ids])


def loss_of(model: torch.nn.Module, batch: dict[str, torch.Tensor], context_weight: float, *,
            digits: torch.Tensor | None = None, digit_weight: float = 1.0) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Weighted next-token loss; also returns the assistant-token loss alone (for the log).
    The assistant's tokens weigh 1, or `digit_weight` where they are one of `digits` (the
    values copied digit by digit: what the model gets wrong most); the rest `context_weight`."""
    logits = train_logits(model, batch["ids"])  # [B, T, V]
    targets = batch["ids"][:, 1:]
    is_real = batch["is_real"][:, 1:]
    is_assistant = batch["is_assistant"][:, 1:]
    assistant_weight = torch.where(torch.isin(targets, digits), digit_weight, 1.0) if digits is not None else 1.0
    weight = torch.where(is_assistant, assistant_weight, context_weight) * is_real
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view_as(weight)
    loss = (per_token * weight).sum() / weight.sum()
    assistant_loss = float((per_token.detach() * is_assistant).sum() / is_assistant.sum().clamp(min=1))
    return loss, assistant_loss


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _mix(parser: argparse.ArgumentParser, text: str) -> tuple[float, float]:
    try:
        subagents, orchestrators = (float(x) for x in text.split(","))
    except ValueError:
        parser.error(f"--mix takes two shares such as 0.6,0.3 (sub-agents, orchestrators; the rest: single agents), not {text!r}")
    if subagents < 0 or orchestrators < 0 or subagents + orchestrators > 1:
        parser.error(f"--mix shares must be at least 0 and add up to at most 1, not {text!r}")
    return subagents, orchestrators


def _init_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The training config of the checkpoint `--init` names (its quantization and dtype dropped)."""
    if args.resume or args.export_only:
        parser.error("--init starts a run from a checkpoint and --resume continues a run's state.pt: not both")
    if (args.out_dir / "state.pt").exists():
        parser.error(f"{args.out_dir} already holds a run (state.pt): --resume it, or --init into a new directory")
    missing = [n for n in ("config.json", "tiktoken.model", "tokenizer_config.json") if not (args.init / n).is_file()]
    if missing or not any(args.init.glob("*.safetensors")):
        parser.error(f"--init {args.init}: not an exported checkpoint (missing {', '.join(missing) or '*.safetensors'})")
    config = json.loads((args.init / "config.json").read_text())
    config.pop("quantization_config", None)
    return {**config, "torch_dtype": "float32"}


def _grow_after(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    if args.grow_after is None:
        return []
    if args.init is None:
        parser.error("--grow-after grows the model --init loads: it needs --init")
    try:
        return [int(part) for part in args.grow_after.split(",")]
    except ValueError:
        parser.error(f"--grow-after takes layer indices such as 1,3, not {args.grow_after!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=3000, help="schedule length (the cosine runs over it)")
    parser.add_argument("--minutes", type=float, default=None, help="stop (and export) after this much wall time")
    parser.add_argument("--until", type=int, default=None, help="stop (and export) at this step, inside a longer schedule (a phase of a resumed run)")
    parser.add_argument("--batch-tokens", type=int, default=6144, help="row slots per batch, padding included")
    parser.add_argument("--max-len", type=int, default=2560, help="longest conversation trained on, in tokens (a 16-entity single agent is ~2,500)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--context-weight", type=float, default=0.2)
    parser.add_argument("--max-single-entities", type=int, default=8)
    parser.add_argument("--mix", default="0.6,0.3", help="shares of sub-agent and orchestrator conversations (the rest: single agents)")
    parser.add_argument("--subagents-first", type=int, default=0, metavar="STEPS",
                        help="a curriculum: sub-agent conversations only (short: copying emerges there first) until this step, then --mix")
    parser.add_argument("--wide-power", type=float, default=2.0,
                        help="orchestrator conversations have 2 + 15 r^P entities, r uniform (2: small tasks more often; 1: every size alike)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/state.pt")
    parser.add_argument("--init", type=Path, default=None, metavar="CKPT",
                        help="start from an exported checkpoint's weights, tokenizer and config (e.g. demo/checkpoint), new optimizer")
    parser.add_argument("--warm-restart", action="store_true",
                        help="with --resume: the schedule (warmup, then the cosine to --steps) starts again at the resumed step")
    parser.add_argument("--config", type=str, default="{}", help="JSON overrides of demo_config (e.g. a tiny test model)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--export-only", action="store_true", help="export OUT_DIR/state.pt (implies --resume), no training")
    parser.add_argument("--miss", type=float, default=0.0, metavar="P",
                        help="share of sub-agents given a mis-copied name (they answer 'not found') and of orchestrators with one such finder")
    parser.add_argument("--digit-weight", type=float, default=1.0,
                        help="loss weight of the digits the assistant writes (the values' digits), against 1 for its other tokens")
    parser.add_argument("--grow-after", type=str, default=None, metavar="I,J",
                        help="with --init: insert a new layer after each of these layers (a copy that adds nothing until trained)")
    parser.add_argument("--group-size", type=int, default=DEMO_GROUP_SIZE, help="INT4 group size of the exported routed experts (a multiple of 8)")
    args = parser.parse_args(argv)
    if args.wide_power <= 0:
        parser.error(f"--wide-power must be above 0 (1 draws every task size alike), not {args.wide_power}")
    mix = _mix(parser, args.mix)
    if args.group_size <= 0 or args.group_size % 8:
        parser.error(f"--group-size must be a positive multiple of 8, not {args.group_size}")
    if not 0.0 <= args.miss <= 1.0:
        parser.error(f"--miss must be between 0 and 1, not {args.miss}")
    if args.digit_weight <= 0:
        parser.error(f"--digit-weight must be above 0, not {args.digit_weight}")

    grow_after = _grow_after(parser, args)
    init_config = _init_config(parser, args) if args.init is not None else None
    if grow_after:
        try:
            check_growth(init_config, grow_after)
        except ValueError as error:
            parser.error(f"--grow-after: {error}")

    torch.set_num_threads(args.threads)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = out / "tokenizer"
    if args.init is not None:
        tokenizer_dir.mkdir(exist_ok=True)
        for name in ("tiktoken.model", "tokenizer_config.json"):
            shutil.copy(args.init / name, tokenizer_dir / name)
    elif not (tokenizer_dir / "tiktoken.model").is_file():
        build_tokenizer(tokenizer_dir)
    tokenizer = KimiTokenizer.from_dir(tokenizer_dir)
    state = None
    if (args.resume or args.export_only) and (out / "state.pt").is_file():
        state = torch.load(out / "state.pt", weights_only=False)
    config = state["config"] if state else init_config or demo_config(tokenizer.vocab_size, **json.loads(args.config))
    model = build_model(config, seed=args.seed)
    if args.init is not None:
        load_checkpoint_weights(model, args.init)
        if grow_after:
            model, config = grow_layers(model, config, grow_after)
            print(f"grown to {config['num_hidden_layers']} layers: a new one after each of layers {grow_after}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    step = 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    balancer = RoutingBalancer(model)
    digits = digit_ids(tokenizer) if args.digit_weight != 1.0 else None
    def sampler(mix: tuple[float, float]) -> Callable[[random.Random], Conversation]:
        return partial(sample_conversation, max_single_entities=args.max_single_entities, mix=mix, wide_power=args.wide_power, miss=args.miss)

    sample = sampler(mix)
    in_curriculum = step < args.subagents_first
    batcher = Batcher(tokenizer, random.Random(args.seed * 7919 + step), sampler((1.0, 0.0)) if in_curriculum else sample,
                      max_tokens=args.batch_tokens, max_len=args.max_len)  # fmt: skip
    eval_set = EvalSet.build(tokenizer, max_len=args.max_len)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params / 1e6:.2f}M parameters, vocab {tokenizer.vocab_size}; eval: {eval_set.describe()}", flush=True)
    log = (out / "log.jsonl").open("a")
    if args.init is not None and step == 0:  # where training starts: the checkpoint's abilities in float32
        record = {"step": 0, "init": str(args.init), **evaluate(model, eval_set)}
        print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
    started = time.time()
    tokens_seen = 0
    last_step = min(args.steps, args.until) if args.until is not None else args.steps
    schedule_start = step if args.warm_restart else 0
    while step < last_step and not args.export_only:
        if args.minutes is not None and time.time() - started > 60 * args.minutes:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - schedule_start, args.steps - schedule_start, args.lr, args.warmup)
        if in_curriculum and step >= args.subagents_first:
            in_curriculum = False
            batcher = Batcher(tokenizer, random.Random(args.seed * 7919 + step), sample, max_tokens=args.batch_tokens, max_len=args.max_len)
            print(f"step {step}: sub-agents-only curriculum over, mix {args.mix}", flush=True)
        batch = batcher.batch()
        loss, assistant_loss = loss_of(model, batch, args.context_weight, digits=digits, digit_weight=args.digit_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        imbalance = balancer.update()
        step += 1
        tokens_seen += int(batch["is_real"].sum())
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.3f} assistant {assistant_loss:.3f} imbalance {imbalance:.2f} "
                  f"{(time.time() - started) / 60:.1f} min", flush=True)  # fmt: skip
        if step % args.eval_every == 0 or step == last_step:
            record = {"step": step, "minutes": round((time.time() - started) / 60, 2), "lr": optimizer.param_groups[0]["lr"], "loss": round(loss.item(), 4),
                      "assistant_loss": round(assistant_loss, 4), "tokens": tokens_seen, **evaluate(model, eval_set)}  # fmt: skip
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
            save_state(out / "state.pt", model, optimizer, step, config)
    if not args.export_only:
        save_state(out / "state.pt", model, optimizer, step, config)
    if not args.no_export:
        path = export_checkpoint(model.eval(), config, tokenizer_dir, out / "checkpoint", group_size=args.group_size)
        exported = evaluate(load_model(path, dtype=torch.float32), eval_set)  # as shipped: INT4 experts, bf16
        print(f"checkpoint: {path}\n" + json.dumps({"step": step, "exported": exported}), flush=True)
        log.write(json.dumps({"step": step, "exported": exported}) + "\n")


if __name__ == "__main__":
    main()
