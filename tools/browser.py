"""A real browser for one agent: Playwright driving Chromium, shown as accessibility snapshots.

`Browser` is one isolated browser context (its own cookies, storage, cache) with one
page, or one page of a context several agents' browsers share (`open_context`: much
cheaper when many agents start at once; they then share cookies and storage). The model sees the page as Playwright's AI accessibility snapshot in which every
actionable element carries a ref (`[ref=e12]`) it can pass to `click` and `type`;
snapshots are capped (`max_snapshot_chars`) with a note, and `find` returns just the
matching lines, so a huge page cannot flood a context.

Security: all of the context's traffic goes through `AllowlistProxy`, so only allowed
origins are ever contacted, redirects and subresources included; `file:` and other
non-http(s) URLs, and downloads, are refused with a message the model sees
(`RefusedError`). What it does not do: it does not sandbox Chromium itself (the
browser runs with `--no-sandbox`, as Debian's Chromium in a container must; isolate
the host for hostile sites), does not hide content of allowed origins from the model
(prompt injection on an allowed page reaches the model), and does not inspect what
a page POSTs to an allowed origin.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from tools.background import BackgroundLoop
from tools.base import RefusedError, ToolError, cap_text
from tools.browser_proxy import REFUSED_MARKER, AllowlistProxy
from tools.origins import OriginAllowlist

if TYPE_CHECKING:
    from playwright.async_api import Browser as Chromium
    from playwright.async_api import BrowserContext
    from playwright.async_api import Page, Playwright

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage", "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)  # fmt: skip

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

_ACTIONABLE_ROLES = {
    "link", "button", "textbox", "searchbox", "checkbox", "radio", "combobox", "option",
    "menuitem", "menuitemcheckbox", "menuitemradio", "tab", "switch", "slider",
    "spinbutton", "listbox", "treeitem",
}  # fmt: skip
_REF = re.compile(r" \[ref=([A-Za-z0-9]+)\]")
_ROLE = re.compile(r"^\s*- ([a-z]+)")


@dataclass(frozen=True)
class BrowserConfig:
    """How Chromium is found and how much of a page a model sees."""

    executable_path: Path | None = None
    """Chromium to launch; None looks for `chromium` on PATH."""
    max_snapshot_chars: int = 8_000
    max_find_lines: int = 40
    action_timeout_s: float = 10.0
    navigation_timeout_s: float = 20.0


async def launch_chromium(playwright: Playwright, config: BrowserConfig) -> Chromium:
    """Launches headless Chromium (the system's, not a downloaded one)."""
    executable = config.executable_path or _find_chromium()
    return await playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_FLAGS))


def _find_chromium() -> Path:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ToolError("no Chromium found on PATH (install Debian's `chromium`)")


async def open_context(
    stack: AsyncExitStack, chromium: Chromium, background: BackgroundLoop, allowlist: OriginAllowlist,
    config: BrowserConfig, on_refused: Callable[[str], None] = lambda url: None,
) -> BrowserContext:  # fmt: skip
    """A new browser context whose traffic all goes through its own `AllowlistProxy`; both
    are closed by `stack`.

    Several agents' `Browser`s may share one (`Browser(..., shared=context)`, `BrowserKit(
    share_context=True)`), each with its own page: Chromium pays far more for a context than
    for a page (16 agents opening a context each at once took ~9 s on 2 cores, 16 pages of
    one context ~2.5 s: bench/browser_contexts.py). The price is isolation: they share
    cookies, storage and cache, so it is for sites where that cannot matter (the demo's
    read-only fixture web). Each `Browser` still reports only its own page's refusals.
    """
    # The proxy's task group lives on the background loop, not in the caller's scopes.
    proxy, handle = await background.enter(AllowlistProxy(allowlist, on_refused=on_refused))
    stack.push_async_callback(background.exit, handle)
    context = await chromium.new_context(
        proxy={"server": proxy.url, "bypass": "<-loopback>"},
        accept_downloads=False,
        service_workers="block",
    )
    stack.push_async_callback(context.close)
    context.set_default_timeout(config.action_timeout_s * 1000)
    context.set_default_navigation_timeout(config.navigation_timeout_s * 1000)
    return context


class Browser:
    """One agent's browser context and page, limited to `allowed_origins`."""

    def __init__(
        self, allowed_origins: Iterable[str], *, chromium: Chromium | None = None,
        config: BrowserConfig | None = None, background: BackgroundLoop | None = None,
        shared: BrowserContext | None = None, new_page: Callable[[], Awaitable[Page]] | None = None,
    ) -> None:  # fmt: skip
        """`chromium` and `background` are shared run-wide by a kit; without them it starts its own.
        With `shared` (a context from `open_context` with the same allowed origins), this
        Browser opens only its own page, in that context: `new_page()` if given (a page of
        `shared` opened ahead of use, `WarmBrowsers.new_page`), else `shared.new_page()`.
        The page is this Browser's until it exits, then closed."""
        self.allowlist = OriginAllowlist(allowed_origins)
        self.config = config or BrowserConfig()
        self._chromium = chromium
        self._background = background
        self._shared = shared
        if new_page is not None and shared is None:
            raise ValueError("Browser(new_page=...) gives pages of a shared context: pass that context as `shared`")
        self._new_page = new_page or (shared.new_page if shared is not None else None)
        self._stack = AsyncExitStack()
        self._page: Page | None = None
        self._refs: set[str] = set()
        self._refused: list[str] = []
        self._downloads: list[str] = []
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Browser:
        async with AsyncExitStack() as stack:
            if self._new_page is not None:
                self._page = await self._new_page()
                stack.push_async_callback(self._page.close)
            else:
                chromium = self._chromium
                if chromium is None:
                    from playwright.async_api import async_playwright

                    playwright = await stack.enter_async_context(async_playwright())
                    chromium = await launch_chromium(playwright, self.config)
                    stack.push_async_callback(chromium.close)
                background = self._background
                if background is None:
                    background = await stack.enter_async_context(BackgroundLoop())
                context = await open_context(stack, chromium, background, self.allowlist, self.config, self._refused.append)
                self._page = await context.new_page()
            self._watch(self._page)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def _watch(self, page: Page) -> None:
        page.on("download", lambda download: self._downloads.append(download.url))
        page.on("popup", self._on_popup)
        if self._shared is not None:  # the context is others' too: refusals are told apart by this page's own events
            page.on("response", self._on_response)
            page.on("requestfailed", self._on_request_failed)

    def _on_popup(self, page: Page) -> None:
        # A link that opens a new tab: follow it there, as a person would.
        self._page = page
        self._watch(page)
        if self._shared is not None:  # closing the context closes it otherwise; a shared one outlives this agent
            self._stack.push_async_callback(page.close)

    def _on_response(self, response: Any) -> None:
        if response.headers.get("x-refused-by") == REFUSED_MARKER:
            self._refused.append(response.url)

    def _on_request_failed(self, request: Any) -> None:
        # A refused https origin: the proxy declines its CONNECT, so the page sees a failed tunnel.
        if "ERR_TUNNEL_CONNECTION_FAILED" in (request.failure or "") and not self.allowlist.allows(request.url):
            self._refused.append(request.url)

    @property
    def page(self) -> Page:
        if self._page is None:
            raise RuntimeError("Browser used outside `async with`")
        return self._page

    async def navigate(self, url: str) -> str:
        """Loads `url` and returns the page's snapshot."""
        if not self.allowlist.allows(url):
            raise RefusedError(self.allowlist.refusal(url))
        async with self._lock:
            await self._act(lambda: self.page.goto(url, wait_until="load"), what=f"load {url}")
            return await self._snapshot()

    async def load(self, url: str) -> None:
        """Loads `url` as `navigate` does (allowlist, refusals, downloads), without a snapshot:
        for a kit that reads the page its own way (`evaluate`)."""
        if not self.allowlist.allows(url):
            raise RefusedError(self.allowlist.refusal(url))
        async with self._lock:
            await self._act(lambda: self.page.goto(url, wait_until="load"), what=f"load {url}")

    async def evaluate(self, function: str) -> Any:
        """The JSON-able result of a JavaScript function run on the current page. Cheaper
        than a snapshot (Playwright's snapshot script is set up anew on every document)."""
        from playwright.async_api import Error as PlaywrightError

        async with self._lock:
            try:
                return await self.page.evaluate(function)
            except PlaywrightError as error:
                raise ToolError(f"could not read {self.page.url}: {str(error).splitlines()[0]}") from None

    async def snapshot(self) -> str:
        async with self._lock:
            return await self._snapshot()

    async def click(self, ref: str) -> str:
        async with self._lock:
            locator = self._locate(ref)
            await self._act(lambda: locator.click(), what=f"click {ref}")
            return await self._snapshot()

    async def type(self, ref: str, text: str, *, submit: bool = False) -> str:
        """Replaces the field's text with `text`; `submit` presses Enter after it."""
        async with self._lock:
            locator = self._locate(ref)
            await self._act(lambda: locator.fill(text), what=f"type into {ref}")
            if submit:
                await self._act(lambda: locator.press("Enter"), what=f"submit {ref}")
            return await self._snapshot()

    async def find(self, text: str) -> str:
        """The snapshot lines containing `text` (any case), with their refs."""
        if not text.strip():
            raise ToolError("find needs some text to look for")
        async with self._lock:
            lines = (await self._compact_snapshot()).splitlines()
            hits = [line.strip() for line in lines if text.lower() in line.lower()]
            if not hits:
                return f"no line of {self.page.url} contains {text!r}"
            shown = hits[: self.config.max_find_lines]
            note = f"\n[{len(hits) - len(shown)} more matches not shown]" if len(hits) > len(shown) else ""
            return f"{len(hits)} matches on {self.page.url}:\n" + "\n".join(shown) + note

    async def back(self) -> str:
        async with self._lock:
            before = self.page.url
            response = await self._act(lambda: self.page.go_back(wait_until="load"), what="go back")
            if response is None and self.page.url == before:
                raise ToolError("there is no previous page")
            return await self._snapshot()

    async def _act(self, action: Any, *, what: str) -> Any:
        """Runs a page action; turns refusals, downloads and load failures into `ToolError`s."""
        from playwright.async_api import Error as PlaywrightError

        num_refused, num_downloads = len(self._refused), len(self._downloads)
        try:
            result = await action()
            await self.page.wait_for_load_state("load")
        except PlaywrightError as error:
            message = str(error).splitlines()[0]
            if "Download is starting" in message or len(self._downloads) > num_downloads:
                # Its download event comes after the error; let it land here, not in the next call.
                with anyio.move_on_after(1):
                    while len(self._downloads) == num_downloads:
                        await anyio.sleep(0.02)
                raise RefusedError(f"refused: downloads are not allowed ({what})") from None
            if len(self._refused) > num_refused:
                await self._leave_refused_page()
                raise RefusedError(self.allowlist.refusal(self._refused[-1])) from None
            raise ToolError(f"could not {what}: {message}") from None
        if len(self._downloads) > num_downloads:
            raise RefusedError(f"refused: downloads are not allowed ({self._downloads[-1]})")
        if self.page.url != "about:blank" and not self.allowlist.allows(self.page.url):
            refused = self._refused[-1] if len(self._refused) > num_refused else self.page.url
            await self._leave_refused_page()
            raise RefusedError(self.allowlist.refusal(refused) + " (reached by a redirect or link)")
        return result

    async def _leave_refused_page(self) -> None:
        """Back to the last allowed page (or a blank one), so the refusal page is never shown."""
        if self.allowlist.allows(self.page.url) or self.page.url == "about:blank":
            return
        response = await self.page.go_back(wait_until="load")
        if response is None or not self.allowlist.allows(self.page.url):
            await self.page.goto("about:blank")

    def _locate(self, ref: str) -> Any:
        if ref not in self._refs:
            raise ToolError(f"unknown ref {ref!r}: take a new snapshot and use a ref shown in it")
        return self.page.locator(f"aria-ref={ref}")

    async def _snapshot(self) -> str:
        text = await self._compact_snapshot()
        capped = cap_text(text, self.config.max_snapshot_chars, what="snapshot")
        if capped != text:
            capped += " (use browser_find to search the whole page)"
        return f"URL: {self.page.url}\nTitle: {await self.page.title()}\n{capped}"

    async def _compact_snapshot(self) -> str:
        raw = await self.page.aria_snapshot(mode="ai")
        text, self._refs = compact_snapshot(raw)
        return text


def compact_snapshot(raw: str) -> tuple[str, set[str]]:
    """The snapshot with refs kept on actionable lines only, and the set of those refs."""
    lines, refs = [], set()
    for line in raw.splitlines():
        is_pointer = "[cursor=pointer]" in line
        line = line.replace(" [cursor=pointer]", "")
        role = _ROLE.match(line)
        match = _REF.search(line)
        if match and (is_pointer or (role is not None and role.group(1) in _ACTIONABLE_ROLES)):
            refs.add(match.group(1))
        else:
            line = _REF.sub("", line)
        lines.append(line)
    return "\n".join(lines), refs
