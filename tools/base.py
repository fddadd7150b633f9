"""What every tool shares: the error a tool raises when the model can fix the call.

    ToolError                 the call failed in a way the model can see and correct
"""

from __future__ import annotations


class ToolError(Exception):
    """A tool call failed in a way the model should see as an observation and may fix."""
