"""Run every benchmark scenario side by side and print one table per scenario.

    python tests/benchmarks/run.py            # the full run (see README.md for how long)
    python tests/benchmarks/run.py --quick    # reduced counts, a few minutes
    python tests/benchmarks/run.py --only loopback-2k,memory --profile

Use the interpreter that has batchmail installed. See README.md beside this file for the
scenarios, the servers (Postfix's smtp-sink and smtpd) and how to install them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import contenders
import scenarios
import tables
from scenarios import Outcome, Settings

HERE = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Settings], Outcome]] = {
    "loopback-2k": lambda s: scenarios.loopback(s, attachment=False),
    "loopback-100k": lambda s: scenarios.loopback(s, attachment=True),
    "rtt-chunking": lambda s: scenarios.round_trip(s, chunking=True),
    "rtt-pipelining": lambda s: scenarios.round_trip(s, chunking=False),
    "memory": scenarios.memory,
    "dry-run-memory": scenarios.dry_run_memory,
}
TITLES = {
    "loopback-2k": "Loopback, text + HTML (~2.3 KB per message)",
    "loopback-100k": "Loopback, text + HTML + one shared 100 KB PDF (~140 KB per message)",
    "rtt-chunking": "Emulated 50 ms round trip, server with PIPELINING and CHUNKING",
    "rtt-pipelining": "Emulated 50 ms round trip, server with PIPELINING only",
    "memory": "Peak RSS as the recipient list grows",
    "dry-run-memory": "Peak RSS of a dry run of short text-only messages",
}
QUICK = {
    "loopback_count": 1_000,
    "rtt_count": 100,
    "rtt_baseline_count": 20,
    "memory_counts": (1_000, 10_000),
    "dry_run_counts": (10_000, 40_000),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="batchmail benchmarks (see README.md)")
    parser.add_argument("--quick", action="store_true", help="reduced counts, a few minutes")
    parser.add_argument("--only", help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/batchmail-bench"))
    parser.add_argument("--loopback-count", type=int, help="recipients in the loopback runs")
    parser.add_argument("--rtt", type=float, default=0.05, help="emulated round trip, seconds")
    parser.add_argument("--rtt-count", type=int, help="recipients in the round-trip runs")
    parser.add_argument(
        "--rtt-baseline-count", type=int, help="recipients for mailmerge and smtplib there"
    )
    parser.add_argument("--memory-counts", help="SMALL,LARGE recipients for peak RSS")
    parser.add_argument("--dry-run-counts", help="SMALL,LARGE recipients for the dry run's RSS")
    parser.add_argument("--window", type=int, default=100, help="raw BDAT messages in flight")
    parser.add_argument("--profile", action="store_true", help="also cProfile batchmail runs")
    parser.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `send:` setting for every batchmail campaign, e.g. window=32 (repeatable)",
    )
    parser.add_argument(
        "--mailmerge-venv", type=Path, default=HERE / ".venv-mailmerge", help="created if missing"
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings(
        workdir=args.workdir,
        mailmerge=contenders.mailmerge_executable(args.mailmerge_venv),
        rtt=args.rtt,
        window=args.window,
        profile=args.profile,
        send_options=tuple(_send_option(text) for text in args.send),
    )
    if args.quick:
        base = dataclasses.replace(base, **QUICK)  # type: ignore[arg-type]
    overrides: dict[str, object] = {}
    for name in ("loopback_count", "rtt_count", "rtt_baseline_count"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.memory_counts:
        small, large = (int(n) for n in args.memory_counts.split(","))
        overrides["memory_counts"] = (small, large)
    if args.dry_run_counts:
        small, large = (int(n) for n in args.dry_run_counts.split(","))
        overrides["dry_run_counts"] = (small, large)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def _send_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key.strip(), int(value) if value.strip().isdigit() else value.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    report = ["# batchmail benchmark", "", tables.machine(HERE.parents[1], mm_version())]
    if settings.send_options:
        extra = ", ".join(f"{key}: {value}" for key, value in settings.send_options)
        report.append(f"- every batchmail campaign also has, under `send:`, {extra}")
    report.append("")
    everything: list[scenarios.Result] = []
    started = time.monotonic()
    for name in chosen:
        print(f"{name} ...", flush=True)
        load = tables.load_note()
        outcome = SCENARIOS[name](settings)
        everything += outcome.results
        report += [f"## {name}: {TITLES[name]}", "", load, "", tables.table(outcome.results), ""]
        report += [f"Note: {note}" for note in outcome.notes]
        for profiled, prof in outcome.profiles.items():
            report += ["", tables.profile_summary(profiled, prof), ""]
    report += ["## Targets", "", tables.targets(everything), ""]
    report += [f"Total benchmark time: {time.monotonic() - started:.0f} s.", ""]
    text = "\n".join(report)
    print("\n" + text)
    if args.output:
        args.output.write_text(text)
    (settings.workdir / "results.json").write_text(
        json.dumps([_as_json(r) for r in everything], indent=1)
    )
    return 0 if all(r.measurement for r in everything) else 1


def mm_version() -> str:
    return contenders.MAILMERGE_VERSION


def _as_json(result: scenarios.Result) -> dict[str, object]:
    row = dataclasses.asdict(result)
    row["rate"] = result.rate
    return row


if __name__ == "__main__":
    sys.exit(main())
