"""``rater simulate``: traffic for the demo and benchmarks (being written)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:9092")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("rater simulate: not implemented yet")
