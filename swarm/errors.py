"""The swarm's errors.

    SwarmError
    ├── TaskFileError        bad task file or flags (exit code 2)
    ├── ModelSpecError       a model spec that cannot be used (exit code 2)
    └── ModelError           a model call failed
        ├── RetryableModelError      worth another try
        │   ├── RateLimited          429, maybe with Retry-After
        │   ├── ModelUnavailable     5xx
        │   └── ModelTimeout         connection or read timeout
        └── ModelRequestError        4xx other than 429: retrying will not help
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base of every error the swarm raises on purpose."""


class TaskFileError(SwarmError):
    """A task file or command-line flag is invalid; the message names the field."""


class ModelSpecError(SwarmError):
    """A model spec (`openai:URL`, `local:DIR`, `scripted:FILE`) cannot be used."""


class ModelError(SwarmError):
    """A call to the model failed."""


class RetryableModelError(ModelError):
    """A model call failed in a way that another attempt may fix."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryableModelError):
    """The endpoint answered 429 Too Many Requests."""


class ModelUnavailable(RetryableModelError):
    """The endpoint answered with a 5xx status or could not be reached."""


class ModelTimeout(RetryableModelError):
    """The call timed out."""


class ModelRequestError(ModelError):
    """The endpoint rejected the request (4xx other than 429); retrying will not help."""
