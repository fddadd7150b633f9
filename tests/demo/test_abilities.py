"""The teacher-forced error report: which part of a turn each token is, and the tally."""

from __future__ import annotations

from demo.abilities import ErrorReport, EvalSet, cell_of
from model_runtime.tokenizer import KimiTokenizer


def test_cell_of_names_the_part_of_a_turn_a_token_goes_in() -> None:
    assert cell_of("<|tool_calls_section_begin|><|tool_call_begin|>functions.web_search:0") == "call"
    assert cell_of("| # | city | Country | Founded |\n|---|---|---|---|\n| 1") == "number"
    assert cell_of("| 12 | Te") == "name"
    assert cell_of("| 3 | Tesosul | Country: Bel") == "Country"
    assert cell_of("| 3 | Tesosul | Country: Belmora | Home city: ") == "Home city"
    assert cell_of("| # | ci") == "other"


def test_the_report_counts_each_wrong_token_in_its_ability_and_cell(tokenizer: KimiTokenizer) -> None:
    eval_set = EvalSet.build(tokenizer, num_swarm_runs=2, num_single_runs=1)
    perfect = ErrorReport()
    for conversation in eval_set.conversations:
        perfect.add(tokenizer, conversation, conversation.ids[1:] + [0])
    assert not perfect.confusions and all(right == total for right, total in perfect.turns.values())
    assert set(perfect.turns) == {"search_call", "url_copy", "answer", "assign", "table", "single_calls", "single_table"}

    conversation = next(c for c in eval_set.conversations if any(name == "answer" for name, *_ in c.turns))
    _, start, end = next(turn for turn in conversation.turns if turn[0] == "answer")
    first_value = next(i for i in range(start, end) if cell_of(tokenizer.decode(conversation.ids[start:i])) not in ("number", "name", "other"))
    label = cell_of(tokenizer.decode(conversation.ids[start:first_value]))
    predicted = conversation.ids[1:] + [0]
    wrong = (conversation.ids[first_value] + 1) % tokenizer.vocab_size
    predicted[first_value - 1] = wrong
    report = ErrorReport()
    report.add(tokenizer, conversation, predicted)
    assert report.turns["answer"] == [0, 1]
    right, guess = tokenizer.decode([conversation.ids[first_value]]), tokenizer.decode([wrong])
    assert dict(report.confusions) == {("answer", label, right, guess): 1}
    assert report.cells[("answer", label)][0] == 1
    assert f"answer/{label}: 1 of" in report.describe()
