"""Each ability of the demo model, measured separately on worlds training never sees.

An assistant turn counts as right when every one of its tokens is the model's top
choice given the conversation before it (teacher forcing). That is exactly the turn
greedy decoding would write, so one forward pass per conversation measures what the
agents would do, turn by turn, without generating. The abilities:

    search_call   sub-agent, turn 1: web_search with the entity's name (copied from the task)
    url_copy      sub-agent, turn 2: browser_navigate with the URL the search returned
    answer        sub-agent, turn 3: the two values asked for, read from the page's facts
    assign        orchestrator, turn 1: create_subagent and one assign_task per entity
    table         orchestrator, turn 2: the table, from the sub-agents' answers
    single_calls  single agent: each search and navigate call
    single_table  single agent: the final table
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from demo.model import train_logits
from demo.trajectories import TRAIN_SEED_LIMIT, Conversation, encode, single_run, swarm_run
from model_runtime.tokenizer import KimiTokenizer

ABILITIES = ("search_call", "url_copy", "answer", "assign", "table", "single_calls", "single_table")


def turn_names(conversation: Conversation) -> list[str]:
    num_turns = sum(m["role"] == "assistant" for m in conversation.messages)
    if conversation.role == "subagent":
        return ["search_call", "url_copy", "answer"][:num_turns]
    if conversation.role == "orchestrator":
        return ["assign", "table"][:num_turns]
    return ["single_calls"] * (num_turns - 1) + ["single_table"]


@dataclass
class EncodedConversation:
    ids: list[int]
    turns: list[tuple[str, int, int]]  # ability, first token, end (exclusive)


@dataclass
class EvalSet:
    conversations: list[EncodedConversation]

    @classmethod
    def build(cls, tokenizer: KimiTokenizer, *, max_len: int = 2560, num_swarm_runs: int = 12, num_single_runs: int = 6) -> EvalSet:
        chosen: list[Conversation] = []
        for i in range(num_swarm_runs):
            _, conversations = swarm_run(TRAIN_SEED_LIMIT + i, 2 + (14 * i) // max(1, num_swarm_runs - 1))
            chosen += [conversations[0]] + conversations[1:][-4:]  # the last sub-agents: numbers up to 16
        for i in range(num_single_runs):
            chosen.append(single_run(TRAIN_SEED_LIMIT + 1000 + i, 2 + i % 7)[1])
        encoded = []
        for conversation in chosen:
            ids, is_assistant = encode(tokenizer, conversation.segments())
            if len(ids) > max_len:
                continue
            spans, start = [], None
            for i, flag in enumerate(is_assistant + [False]):
                if flag and start is None:
                    start = i
                elif not flag and start is not None:
                    spans.append((start, i))
                    start = None
            names = turn_names(conversation)
            encoded.append(EncodedConversation(ids, [(n, a, b) for n, (a, b) in zip(names, spans, strict=True)]))
        return cls(encoded)

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for conversation in self.conversations:
            for name, *_ in conversation.turns:
                counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{counts.get(name, 0)} {name}" for name in ABILITIES)


@torch.no_grad()
def predictions(model: torch.nn.Module, eval_set: EvalSet, *, batch_size: int = 8) -> Iterator[tuple[EncodedConversation, list[int]]]:
    """Each conversation with the model's top choice after each of its tokens (`[i]` predicts `ids[i + 1]`)."""
    was_training = model.training
    model.eval()
    items = sorted(eval_set.conversations, key=lambda c: len(c.ids))
    try:
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            length = max(len(c.ids) for c in chunk)
            ids = torch.zeros(len(chunk), length, dtype=torch.long)
            for row, conversation in enumerate(chunk):
                ids[row, : len(conversation.ids)] = torch.tensor(conversation.ids)
            predicted = train_logits(model, ids).argmax(-1)  # [B, T]
            for row, conversation in enumerate(chunk):
                yield conversation, predicted[row, : len(conversation.ids)].tolist()
    finally:
        model.train(was_training)


def evaluate(model: torch.nn.Module, eval_set: EvalSet, *, batch_size: int = 8) -> dict[str, float]:
    """Fraction of turns exactly right, per ability; `ABILITY_tokens`: fraction of its tokens right
    (a smoother curve, which moves before whole turns come right)."""
    right: dict[str, list[bool]] = {name: [] for name in ABILITIES}
    tokens: dict[str, list[float]] = {name: [] for name in ABILITIES}
    for conversation, predicted in predictions(model, eval_set, batch_size=batch_size):
        for name, start, end in conversation.turns:
            hits = [predicted[i - 1] == conversation.ids[i] for i in range(start, end)]
            right[name].append(all(hits))
            tokens[name].append(sum(hits) / len(hits))
    result = {name: round(sum(flags) / len(flags), 3) for name, flags in right.items() if flags}
    return result | {f"{name}_tokens": round(sum(v) / len(v), 3) for name, v in tokens.items() if v}


def cell_of(turn_text: str) -> str:
    """Where in an assistant turn the next token goes, from the turn's text before it: "call"
    in a tool call; in a table row, the label of a "Label: value" cell, "name" for the
    entity's cell, "number" for the row's number; "other" elsewhere (the header, the rule)."""
    if "<|tool_call" in turn_text:
        return "call"
    line = turn_text.rsplit("\n", 1)[-1]
    cell = line.rsplit("|", 1)[-1]
    if ":" in cell:
        return cell.split(":", 1)[0].strip() or "other"
    if line.count("|") == 1:
        return "number"
    if line.count("|") == 2 and line.split("|")[1].strip().isdigit():
        return "name"
    return "other"


@dataclass
class ErrorReport:
    """Teacher-forced errors, where they fall: turns right per ability, wrong tokens per
    (ability, cell) and the commonest (ability, cell, right token, predicted token)."""

    turns: dict[str, list[int]] = field(default_factory=dict)  # ability -> [right, total]
    cells: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> [wrong, total]
    confusions: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)

    def add(self, tokenizer: KimiTokenizer, conversation: EncodedConversation, predicted: list[int]) -> None:
        ids = conversation.ids
        for name, start, end in conversation.turns:
            hits = [predicted[i - 1] == ids[i] for i in range(start, end)]
            turn = self.turns.setdefault(name, [0, 0])
            turn[1] += 1
            turn[0] += all(hits)
            for i, hit in zip(range(start, end), hits, strict=True):
                cell = cell_of(tokenizer.decode(ids[start:i]))
                counts = self.cells.setdefault((name, cell), [0, 0])
                counts[1] += 1
                if not hit:
                    counts[0] += 1
                    self.confusions[(name, cell, tokenizer.decode([ids[i]]), tokenizer.decode([predicted[i - 1]]))] += 1

    def describe(self, top: int = 20) -> str:
        lines = ["turns right: " + ", ".join(f"{name} {right}/{total}" for name, (right, total) in self.turns.items())]
        lines.append("wrong tokens by cell (ability/cell: wrong of all):")
        ranked = sorted(self.cells.items(), key=lambda item: -item[1][0])
        lines += [f"  {name}/{cell}: {wrong} of {total}" for (name, cell), (wrong, total) in ranked if wrong]
        lines.append(f"commonest confusions (right -> predicted), top {top}:")
        lines += [f"  {name}/{cell}: {right!r} -> {guess!r} x{n}" for (name, cell, right, guess), n in self.confusions.most_common(top)]
        return "\n".join(lines)


def error_report(model: torch.nn.Module, eval_set: EvalSet, tokenizer: KimiTokenizer) -> ErrorReport:
    report = ErrorReport()
    for conversation, predicted in predictions(model, eval_set):
        report.add(tokenizer, conversation, predicted)
    return report


def main(argv: list[str] | None = None) -> None:
    """`python -m demo.abilities CHECKPOINT_DIR [--errors] [--runs N]`: the abilities of a saved
    checkpoint (as loaded, INT4 included); `--errors`: where its wrong tokens fall."""
    import argparse
    import json

    from model_runtime import load_model

    parser = argparse.ArgumentParser(description="Per-ability accuracy of a demo checkpoint on unseen worlds.")
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--errors", action="store_true", help="also where the wrong tokens fall, and what was predicted")
    parser.add_argument("--runs", type=int, default=12, help="swarm runs in the eval set (12: the training log's set); single runs: half")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error(f"--runs must be at least 2, not {args.runs}")
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, dtype=torch.float32)
    tokenizer = KimiTokenizer.from_dir(args.checkpoint)
    eval_set = EvalSet.build(tokenizer, num_swarm_runs=args.runs, num_single_runs=args.runs // 2)
    print(json.dumps(evaluate(model, eval_set)))
    if args.errors:
        print(error_report(model, eval_set, tokenizer).describe())


if __name__ == "__main__":
    main()
