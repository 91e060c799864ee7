"""``python -m warmfork COMMAND``: only ``bench`` for now."""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m warmfork bench [--quick] [--json PATH] "
              "[--plot PATH] ...\n       python -m warmfork bench --help")
        return 0 if argv else 2
    if argv[0] == "bench":
        from warmfork.bench.cli import main as bench

        return bench(argv[1:])
    print(f"unknown command {argv[0]!r}; try: python -m warmfork bench",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
