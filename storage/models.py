"""SQLModel tables of the trace database.

One row per run, agent, model-call attempt, message and tool call. Times are UTC epoch
seconds (float) so that durations subtract without time-zone work. Secrets never get
here: the recorder scrubs known secret values before rows are built.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"

    id: str = Field(primary_key=True)
    prompt: str
    mode: str  # swarm | single
    model: str  # the model spec with credentials removed
    model_name: str = ""
    config_json: str = "{}"  # the validated task, secrets left out
    status: str = "running"  # running | succeeded | failed | cancelled | budget_exceeded
    stop_reason: str | None = None
    final_answer: str | None = None
    num_tool_calls: int = 0
    num_agents: int = 0
    critical_steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    started_at: float = Field(index=True)
    finished_at: float | None = None
    wall_time_s: float | None = None


class AgentRow(SQLModel, table=True):
    __tablename__ = "agents"

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True, foreign_key="runs.id")
    parent_id: str | None = None
    name: str
    role: str  # orchestrator | subagent
    task: str = ""
    system_prompt: str = ""
    launched_at_step: int | None = None  # the parent's step that launched it
    status: str = "running"  # running | succeeded | failed | cancelled | budget_exceeded
    stop_reason: str | None = None
    final_answer: str | None = None
    steps: int = 0
    num_tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    started_at: float
    finished_at: float | None = None


class ModelCallRow(SQLModel, table=True):
    __tablename__ = "model_calls"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    agent_id: str = Field(index=True)
    step: int
    attempt: int = 1
    model: str
    status: str  # ok | error
    error: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    started_at: float


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    agent_id: str = Field(index=True)
    seq: int  # position in the agent's conversation
    role: str
    content: str | None = None
    reasoning: str | None = None
    tool_calls_json: str | None = None  # [{"id","name","arguments"}] for assistant turns
    tool_call_id: str | None = None
    name: str | None = None
    created_at: float


class ToolCallRow(SQLModel, table=True):
    __tablename__ = "tool_calls"

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    agent_id: str = Field(index=True)
    step: int
    call_id: str  # the model's id, e.g. functions.assign_task:0
    tool: str
    arguments: str
    status: str = "running"  # running | ok | error | cancelled
    result: str | None = None
    error: str | None = None
    attempt: int = 1
    started_at: float
    duration_s: float | None = None
