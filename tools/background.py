"""An event loop in its own thread, for long-lived resources that run task groups.

anyio requires a task group to be exited in the same cancel scope it was entered in.
A kit is entered in one place and closed in another (the swarm opens an agent's tools
inside that agent's cancel scope and closes them, shielded, after it), so a resource
that keeps a task group open (the allowlist proxy, an MCP session) cannot live in the
caller's task. `BackgroundLoop` runs such resources on an anyio blocking portal in a
worker thread: `enter` opens an async context manager there, `call` runs a coroutine
function there and waits for it without blocking the caller's loop; cancelling the
caller cancels the call. It is not a general executor: keep the work it runs I/O-bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.from_thread
from anyio.from_thread import BlockingPortal

T = TypeVar("T")


class BackgroundLoop:
    """While entered, an event loop thread that owns what `enter` opened; closed on exit."""

    def __init__(self) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._opened: list[AbstractContextManager[Any]] = []

    async def __aenter__(self) -> BackgroundLoop:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = await anyio.to_thread.run_sync(self._portal_cm.__enter__)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            while self._opened:
                await self.exit(self._opened[-1])
            if self._portal_cm is not None:
                await anyio.to_thread.run_sync(self._portal_cm.__exit__, None, None, None)
            self._portal_cm = self._portal = None

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("BackgroundLoop used outside `async with`")
        return self._portal

    async def enter(self, manager: AbstractAsyncContextManager[T]) -> tuple[T, AbstractContextManager[Any]]:
        """Enters `manager` on the background loop; returns its value and a handle for `exit`."""
        wrapped = self.portal.wrap_async_context_manager(manager)
        value = await anyio.to_thread.run_sync(wrapped.__enter__)
        self._opened.append(wrapped)
        return value, wrapped

    async def exit(self, handle: AbstractContextManager[Any]) -> None:
        """Exits what `enter` opened (shielded: this is cleanup)."""
        if handle in self._opened:
            self._opened.remove(handle)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(handle.__exit__, None, None, None)

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await function(*args)` on the background loop; cancelling the caller cancels it."""
        future: Future[T] = self.portal.start_task_soon(function, *args)
        try:
            return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        finally:
            future.cancel()
