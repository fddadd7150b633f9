"""The `browser` kit: one Chromium per run, one isolated `Browser` per agent, and its tools.

Run-wide: the Playwright driver, Chromium, and the background loop that hosts every
agent's allowlist proxy. Per agent, opened by its first browser tool call (`LazyBrowser`):
a browser context, its page and its proxy listener (or, with `share_context`, a page of
one run-wide context).

Task-file options (`[tools.browser]`): `allowed_origins` (list of origins, required),
`executable_path` (Chromium; default: `chromium` on PATH), `max_snapshot_chars`,
`share_context` (default false: each agent gets its own context).
Playwright is imported only when the kit is entered, so building the registry is cheap.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from tools.background import BackgroundLoop
from tools.base import FunctionTool, ToolError, ToolOptionError, argument, check_known, option, schema
from tools.browser import CHROMIUM_NAMES, Browser, BrowserConfig, launch_chromium, open_context
from tools.origins import OriginAllowlist

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page


class WarmBrowsers:
    """Chromium with one shared context kept open across runs, and pages of it opened ahead
    of use: for a process that runs swarm after swarm on one site (the demo runs both
    modes), so that no run waits for Chromium to start or for its agents' pages to open.

    `BrowserKit(..., warm=this)` borrows it instead of launching Chromium (its agents'
    browsers are pages of the shared context, as with `share_context`). `refill()`, between
    runs, opens pages until `spare_pages` wait (16 pages opened at once cost Chromium ~2 s
    on 2 cores, most of a 16-agent run's browsing); `new_page()` hands out a waiting one,
    or opens one if none is left. Pages are not reused: an agent's page closes with it.
    """

    def __init__(self, allowed_origins: Sequence[str], config: BrowserConfig | None = None, *, spare_pages: int = 16) -> None:
        self.allowed_origins = list(allowed_origins)
        self.config = config or BrowserConfig()
        self.spare_pages = spare_pages
        self._stack = AsyncExitStack()
        self._spares: list[Page] = []
        self.chromium: Any = None
        self.background: BackgroundLoop | None = None
        self.context: BrowserContext | None = None

    async def __aenter__(self) -> WarmBrowsers:
        from playwright.async_api import async_playwright

        async with AsyncExitStack() as stack:
            playwright = await stack.enter_async_context(async_playwright())
            self.chromium = await launch_chromium(playwright, self.config)
            stack.push_async_callback(self.chromium.close)
            self.background = await stack.enter_async_context(BackgroundLoop())
            self.context = await open_context(stack, self.chromium, self.background, OriginAllowlist(self.allowed_origins), self.config)
            await self.refill()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._spares = []
        await self._stack.aclose()
        self.chromium = self.background = self.context = None

    async def refill(self) -> None:
        """Opens pages, all at once, until `spare_pages` wait."""
        context = self._context()
        missing = self.spare_pages - len(self._spares)
        if missing > 0:
            self._spares += await asyncio.gather(*(context.new_page() for _ in range(missing)))

    async def new_page(self) -> Page:
        return self._spares.pop() if self._spares else await self._context().new_page()

    def _context(self) -> BrowserContext:
        if self.context is None:
            raise RuntimeError("WarmBrowsers used outside `async with`")
        return self.context


class BrowserKit:
    """Launches Chromium when entered; `for_agent` gives each agent its own context."""

    name = "browser"

    def __init__(self, allowed_origins: Sequence[str], config: BrowserConfig | None = None, *, share_context: bool = False,
                 warm: WarmBrowsers | None = None) -> None:  # fmt: skip
        """`share_context`: the agents' browsers are pages of one context (shared cookies and
        storage; much cheaper when many agents start at once, see `open_context`).
        `warm`: borrow that Chromium and its context (open, with the same allowed origins)
        instead of launching one; implies `share_context`."""
        if warm is not None and OriginAllowlist(warm.allowed_origins).entries != OriginAllowlist(allowed_origins).entries:
            raise ValueError(f"the warm browsers allow {warm.allowed_origins}, not this kit's {list(allowed_origins)}")
        self.allowed_origins = list(allowed_origins)
        self.config = warm.config if warm is not None else config or BrowserConfig()
        self.share_context = share_context or warm is not None
        self.warm = warm
        self._stack = AsyncExitStack()
        self._chromium: Any = None
        self._background: BackgroundLoop | None = None
        self._shared: BrowserContext | None = None  # the agents' one context, with share_context
        self._warming: set[asyncio.Task[None]] = set()  # browsers opening ahead of use (`lazy_browser(warm=True)`)

    async def __aenter__(self) -> BrowserKit:
        from playwright.async_api import async_playwright

        if self.warm is not None:
            if self.warm.context is None:
                raise RuntimeError("BrowserKit(warm=...) entered while its WarmBrowsers is not open")
            self._chromium, self._background, self._shared = self.warm.chromium, self.warm.background, self.warm.context
            return self
        async with AsyncExitStack() as stack:
            playwright = await stack.enter_async_context(async_playwright())
            self._chromium = await launch_chromium(playwright, self.config)
            stack.push_async_callback(self._chromium.close)
            self._background = await stack.enter_async_context(BackgroundLoop())
            if self.share_context:
                allowlist = OriginAllowlist(self.allowed_origins)
                self._shared = await open_context(stack, self._chromium, self._background, allowlist, self.config)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._warming:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*self._warming, return_exceptions=True)
        await self._stack.aclose()
        self._chromium = self._shared = None

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[list[FunctionTool]]:
        async with self.lazy_browser() as browser:
            yield browser_tools(browser.get, self.allowed_origins)

    @asynccontextmanager
    async def lazy_browser(self, *, warm: bool = False) -> AsyncIterator[LazyBrowser]:
        """An agent's browser, opened by its first tool call and closed when this exits.

        `warm`: start opening it now, in the background of the agent's first turns, so that
        its first browser call need not wait for Chromium (for agents sure to browse). The
        opening runs as a plain asyncio task (Playwright runs only on asyncio), which the
        kit cancels at its exit if still running: not in a task group, because the swarm
        enters kits and agents' tools in cancel scopes and closes them outside those."""
        if self._chromium is None:
            raise RuntimeError(f"{type(self).__name__}.for_agent called outside `async with kit`")
        browser = LazyBrowser(self.open_browser)
        if warm:
            task = asyncio.get_running_loop().create_task(browser.warm())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)
        try:
            yield browser
        finally:
            await browser.aclose()

    def open_browser(self) -> Browser:
        """A new `Browser` on this kit's Chromium: its own context and proxy, or its own page
        in the kit's shared context."""
        if self._chromium is None:
            raise RuntimeError(f"{type(self).__name__}.for_agent called outside `async with kit`")
        new_page = self.warm.new_page if self.warm is not None else None
        return Browser(self.allowed_origins, chromium=self._chromium, config=self.config, background=self._background,
                       shared=self._shared, new_page=new_page)  # fmt: skip


class LazyBrowser:
    """A `Browser` opened on first use: an agent that never browses costs no context or page,
    and a swarm's sub-agents start their first model turn without waiting for Chromium."""

    def __init__(self, open_browser: Callable[[], Browser]) -> None:
        self._open = open_browser
        self._browser: Browser | None = None
        self._lock = anyio.Lock()
        self._stack = AsyncExitStack()

    async def get(self) -> Browser:
        """The browser, opened by the first call; a failure to open it is a `ToolError` the
        model sees (its other tools keep working), not a crash of the agent."""
        from playwright.async_api import Error as PlaywrightError

        async with self._lock:
            if self._browser is None:
                try:
                    self._browser = await self._stack.enter_async_context(self._open())
                except PlaywrightError as error:
                    raise ToolError(f"could not open a browser: {str(error).splitlines()[0]}") from None
            return self._browser

    async def warm(self) -> None:
        """Opens the browser ahead of its first use; a failure is left for that use to report."""
        try:
            await self.get()
        except ToolError:
            pass

    async def aclose(self) -> None:
        # Under the lock: a browser a warming `get` is still opening is closed here too.
        with anyio.move_on_after(30, shield=True):
            async with self._lock:
                self._browser = None
                await self._stack.aclose()


def browser_kit_from_options(options: Mapping[str, Any], workdir: Path) -> BrowserKit:
    """The kit for a task file's `[tools.browser]` table."""
    check_known(options, "browser", {"allowed_origins", "executable_path", "max_snapshot_chars", "share_context"})
    origins = option(options, "browser", "allowed_origins", list)
    if not origins or not all(isinstance(origin, str) for origin in origins):
        raise ToolOptionError("[tools.browser] allowed_origins: expected a non-empty list of origins")
    try:
        OriginAllowlist(origins)
    except ValueError as error:
        raise ToolOptionError(f"[tools.browser] allowed_origins: {error}") from None
    executable = option(options, "browser", "executable_path", str, default=None)
    if executable is not None and not Path(executable).is_file():
        raise ToolOptionError(f"[tools.browser] executable_path: no file at {executable!r}")
    if executable is None and not any(shutil.which(name) for name in CHROMIUM_NAMES):
        raise ToolOptionError("[tools.browser] executable_path: no Chromium on PATH; install it or set this")
    max_chars = option(options, "browser", "max_snapshot_chars", int, default=BrowserConfig.max_snapshot_chars)
    if max_chars < 500:
        raise ToolOptionError("[tools.browser] max_snapshot_chars: must be at least 500")
    config = BrowserConfig(executable_path=Path(executable) if executable else None, max_snapshot_chars=max_chars)
    return BrowserKit(origins, config, share_context=option(options, "browser", "share_context", bool, default=False))


def browser_tools(browser: Callable[[], Awaitable[Browser]], allowed_origins: Sequence[str]) -> list[FunctionTool]:
    """The model's browser tools, all acting on the one `Browser` that `browser()` gives
    (`LazyBrowser.get`: opened by the first call)."""
    ref = {"type": "string", "description": "an element ref from the snapshot, like e12"}
    allowed = ", ".join(OriginAllowlist(allowed_origins).entries)

    async def navigate(arguments: dict[str, Any]) -> str:
        url = argument(arguments, "url", str)
        return await (await browser()).navigate(url)

    async def snapshot(arguments: dict[str, Any]) -> str:
        return await (await browser()).snapshot()

    async def click(arguments: dict[str, Any]) -> str:
        ref_ = argument(arguments, "ref", str)
        return await (await browser()).click(ref_)

    async def type_(arguments: dict[str, Any]) -> str:
        submit = argument(arguments, "submit", bool, default=False)
        ref_, text = argument(arguments, "ref", str), argument(arguments, "text", str)
        return await (await browser()).type(ref_, text, submit=submit)

    async def find(arguments: dict[str, Any]) -> str:
        text = argument(arguments, "text", str)
        return await (await browser()).find(text)

    async def back(arguments: dict[str, Any]) -> str:
        return await (await browser()).back()

    return [
        FunctionTool("browser_navigate", f"Open a URL (allowed origins: {allowed}); returns the page snapshot.",
                     schema({"url": {"type": "string"}}, ["url"]), navigate),
        FunctionTool("browser_snapshot", "The current page as an accessibility snapshot with element refs.",
                     schema({}, []), snapshot),
        FunctionTool("browser_click", "Click the element with this ref; returns the new snapshot.",
                     schema({"ref": ref}, ["ref"]), click),
        FunctionTool("browser_type", "Type text into the field with this ref; submit=true presses Enter.",
                     schema({"ref": ref, "text": {"type": "string"}, "submit": {"type": "boolean"}}, ["ref", "text"]),
                     type_),
        FunctionTool("browser_find", "Lines of the current page containing the text, with their refs.",
                     schema({"text": {"type": "string"}}, ["text"]), find),
        FunctionTool("browser_back", "Go back to the previous page; returns its snapshot.", schema({}, []), back),
    ]  # fmt: skip
