"""Command line for the fixture web: `python -m tools.fixture_web serve|generate ...`.

`serve` prints the base URL on its first line of stdout, then serves until interrupted;
`generate` writes the pages and `ground_truth.json` to a folder.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from tools.fixture_web import FixtureWebServer, generate_world, render_site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fixture_web")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the fixture web on loopback")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    generate = commands.add_parser("generate", help="write the pages and ground truth to a folder")
    generate.add_argument("--out", type=Path, required=True)
    for command in (serve, generate):
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--num-entities", type=int, default=24)
    args = parser.parse_args(argv)
    world = generate_world(args.seed, num_entities=args.num_entities)
    if args.command == "generate":
        print(render_site(world, args.out))
        return 0
    with FixtureWebServer(world, port=args.port) as web:
        print(web.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
