"""Run limits and the shared counters that enforce them.

Defaults are Kimi K2.5's published Agent Swarm limits: 100 sub-agents, 1,500 tool calls,
orchestrator and sub-agents up to 100 steps each. A limit that trips is recorded with a
stop reason that names it and its value.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """`[limits]` of a task file; CLI flags override single fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_subagents: int = Field(default=100, ge=0)
    max_tool_calls: int = Field(default=1500, ge=0)
    max_concurrency: int = Field(default=16, ge=1)
    orchestrator_max_steps: int = Field(default=100, ge=1)
    subagent_max_steps: int = Field(default=100, ge=1)
    timeout_s: float = Field(default=3600.0, gt=0)
    max_input_tokens: int | None = Field(default=None, gt=0)  # run-wide token budgets
    max_output_tokens: int | None = Field(default=None, gt=0)


class BudgetExceeded(Exception):
    """A run-wide limit tripped; the message is the stop reason."""


class RunBudget:
    """Run-wide counters shared by every agent of a run (one event loop, no locks needed)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.num_tool_calls = 0
        self.num_subagents = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def take_tool_call(self) -> None:
        """Counts one tool call; raises `BudgetExceeded` when it would pass the limit."""
        if self.num_tool_calls >= self.limits.max_tool_calls:
            raise BudgetExceeded(f"max_tool_calls ({self.limits.max_tool_calls}) reached")
        self.num_tool_calls += 1

    def try_take_subagent(self) -> bool:
        if self.num_subagents >= self.limits.max_subagents:
            return False
        self.num_subagents += 1
        return True

    def add_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Counts a model call's tokens; raises `BudgetExceeded` past a token budget."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        max_in, max_out = self.limits.max_input_tokens, self.limits.max_output_tokens
        if max_in is not None and self.input_tokens > max_in:
            raise BudgetExceeded(f"max_input_tokens ({max_in}) exceeded: {self.input_tokens} used")
        if max_out is not None and self.output_tokens > max_out:
            raise BudgetExceeded(f"max_output_tokens ({max_out}) exceeded: {self.output_tokens} used")
