"""The `fibergrid` command line."""

from __future__ import annotations

import argparse
import sys

import fibergrid as fg


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=f"driver name (default: {fg.default_driver()}); see `fibergrid drivers`")
    p.add_argument("--workers", type=int, default=None, help="worker threads for local-task (default: one per core)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fibergrid", description="Compiled compute kernels on CPUs with GPU semantics.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a built-in saxpy + barrier + matmul command buffer and check it against numpy")
    _device_options(demo)
    sub.add_parser("drivers", help="list the drivers available here")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from fibergrid import demo as demo_module

            return demo_module.run(args.device, args.workers)
        if args.command == "drivers":
            for name in fg.available_drivers():
                print(name + (" (default)" if name == fg.default_driver() else ""))
            return 0
    except fg.Error as e:
        print(f"fibergrid: error: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
