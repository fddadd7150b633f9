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

from dataclasses import dataclass

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
def evaluate(model: torch.nn.Module, eval_set: EvalSet, *, batch_size: int = 8) -> dict[str, float]:
    """Fraction of turns exactly right, per ability; `ABILITY_tokens`: fraction of its tokens right
    (a smoother curve, which moves before whole turns come right)."""
    was_training = model.training
    model.eval()
    right: dict[str, list[bool]] = {name: [] for name in ABILITIES}
    tokens: dict[str, list[float]] = {name: [] for name in ABILITIES}
    items = sorted(eval_set.conversations, key=lambda c: len(c.ids))
    for first in range(0, len(items), batch_size):
        chunk = items[first : first + batch_size]
        length = max(len(c.ids) for c in chunk)
        ids = torch.zeros(len(chunk), length, dtype=torch.long)
        for row, conversation in enumerate(chunk):
            ids[row, : len(conversation.ids)] = torch.tensor(conversation.ids)
        predicted = train_logits(model, ids).argmax(-1)  # [B, T]
        for row, conversation in enumerate(chunk):
            for name, start, end in conversation.turns:
                target = ids[row, start:end]
                hits = predicted[row, start - 1 : end - 1] == target
                right[name].append(bool(hits.all()))
                tokens[name].append(float(hits.float().mean()))
    model.train(was_training)
    result = {name: round(sum(flags) / len(flags), 3) for name, flags in right.items() if flags}
    return result | {f"{name}_tokens": round(sum(v) / len(v), 3) for name, v in tokens.items() if v}


def main(argv: list[str] | None = None) -> None:
    """`python -m demo.abilities CHECKPOINT_DIR`: the abilities of a saved checkpoint (as loaded, INT4 included)."""
    import argparse
    import json

    from model_runtime import load_model

    parser = argparse.ArgumentParser(description="Per-ability accuracy of a demo checkpoint on unseen worlds.")
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, dtype=torch.float32)
    print(json.dumps(evaluate(model, EvalSet.build(KimiTokenizer.from_dir(args.checkpoint)))))


if __name__ == "__main__":
    main()
