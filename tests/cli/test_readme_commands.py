"""README.md's command list names every `study` command and every benchmark the CLI has."""

from __future__ import annotations

import argparse
from pathlib import Path

from study.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_and_benchmark_is_in_the_readme():
    commands = _choices(build_parser())
    assert {"hunt", "sweep", "gpu-sweep", "bench"} <= set(commands)
    missing = [name for name in commands if f"study {name} " not in README]
    bench_what = next(a for a in commands["bench"]._actions if a.dest == "what")
    missing += [f"bench {what}" for what in bench_what.choices or () if f"study bench {what} " not in README]
    assert not missing, f"README.md's command list lacks: {missing}"
