"""Many agents opening their browsers at once: a context each, against pages of one shared context.

A swarm's sub-agents start together, and each opens its browser and loads a page. This
runs N agents concurrently (`tools.browser.Browser` on one Chromium, the fixture web
on loopback): each opens its browser, navigates to one entity page and reads its
snapshot, then closes. Once with a context per agent (BrowserKit's default), once
with every agent a page of one shared context (`open_context`; what `swarm demo`'s kit does). It
prints the wall time of each round (mean and best of `--repeats`) and the ratio;
then the same per agent when the agents go one after another (the single agent's
case, where contexts cost little).

    PYTHONPATH=. python bench/browser_contexts.py [--agents 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio

from tools.background import BackgroundLoop
from tools.browser import Browser, BrowserConfig, launch_chromium, open_context
from tools.origins import OriginAllowlist
from tools.fixture_web import FixtureWebServer, generate_world

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext


async def one_agent(base_url: str, path: str, chromium: Any, background: BackgroundLoop, shared: BrowserContext | None) -> None:
    async with Browser([base_url], chromium=chromium, background=background, shared=shared) as browser:
        snapshot = await browser.navigate(base_url + path)
        assert "Title:" in snapshot


async def round_time(base_url: str, paths: list[str], chromium: Any, background: BackgroundLoop, *, shared: bool, concurrent: bool) -> float:
    async with AsyncExitStack() as stack:
        context = None
        if shared:
            context = await open_context(stack, chromium, background, OriginAllowlist([base_url]), BrowserConfig())
        start = time.perf_counter()
        if concurrent:
            async with anyio.create_task_group() as group:
                for path in paths:
                    group.start_soon(one_agent, base_url, path, chromium, background, context)
        else:
            for path in paths:
                await one_agent(base_url, path, chromium, background, context)
        return time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    world = generate_world(5, num_entities=max(3, args.agents))
    paths = [entity.path for entity in world.entities[: args.agents]]
    with FixtureWebServer(world) as web:
        async with async_playwright() as playwright, BackgroundLoop() as background:
            chromium = await launch_chromium(playwright, BrowserConfig())
            try:
                await round_time(web.base_url, paths[:2], chromium, background, shared=False, concurrent=True)  # warm-up
                for concurrent in (True, False):
                    times: dict[bool, list[float]] = {False: [], True: []}
                    for _ in range(args.repeats):
                        for shared in (False, True):  # interleaved: both see the same machine
                            times[shared].append(await round_time(web.base_url, paths, chromium, background, shared=shared, concurrent=concurrent))
                    how = f"{args.agents} agents at once" if concurrent else f"{args.agents} agents one after another"
                    for shared, label in ((False, "a context per agent"), (True, "one shared context")):
                        print(f"{how:32s} {label:22s} mean {statistics.mean(times[shared]):6.2f} s   best {min(times[shared]):6.2f} s")
                    print(f"{how:32s} shared context: {statistics.mean(times[False]) / statistics.mean(times[True]):.2f}x faster (means)")
            finally:
                await chromium.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("needs Debian's chromium on PATH")
    anyio.run(main, args)
