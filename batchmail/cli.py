"""The command line: parse arguments, call the library, print, and map errors to exit codes.

This is the only module that prints.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import TextIO

from batchmail import __version__, campaign_id
from batchmail.campaign import Campaign, load_campaign
from batchmail.check import MessageFactory, check_campaign, run_warnings
from batchmail.delivery import RunResult, dry_run, send, test_send
from batchmail.display import shown, shown_json
from batchmail.errors import BatchmailError, CampaignError, Problem
from batchmail.inputs import refuse_input
from batchmail.journal import Journal
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.problem_groups import problem_lines
from batchmail.recipients import read_rows
from batchmail.report import (
    DONE,
    STATUSES,
    export_refused,
    journal_path,
    json_status,
    recipient_statuses,
    status_listing,
    write_csv_report,
)
from batchmail.runner import Selector, select_pending, select_resendable
from batchmail.stop import StopRequest, grace_from_environment

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # as a shell reports a process ended by SIGPIPE
SENDING_COMMANDS = ("run", "resend")  # the only ones whose errors need say nothing was sent
# Interrupted: 128 + the signal, as a shell reports a process it ended: 130 for SIGINT
# (Ctrl-C), 143 for SIGTERM.
EXIT_SIGNALLED = 128


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BatchmailError as exc:
        _print_error(exc, could_send=args.command in SENDING_COMMANDS)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _interrupted(getattr(exc, "signum", signal.SIGINT))
    except MemoryError:
        _say(_out_of_memory(args.command), file=sys.stderr)
        return EXIT_ABORTED
    except BrokenPipeError:
        # The reader went away (`batchmail status x | head`): nothing more to say to it, and
        # Python must not complain at exit while flushing what is left for it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchmail",
        description="Send one personalized message to each row of a CSV, from a YAML campaign "
        "file and Jinja2 templates, through one SMTP session, with a durable journal.",
        epilog="Exit codes: 0 every recipient accepted; 1 some failed, deferred or unknown; "
        "2 bad campaign or input (nothing sent); 3 run aborted; 130 interrupted (Ctrl-C); "
        "141 the reader of the output went away; 143 stopped by SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"batchmail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    check = command(
        "check",
        _check,
        "Validate the campaign, its CSV, templates and attachments without contacting any server.",
    )
    check.add_argument("campaign", type=Path, help="the campaign YAML file")

    preview = command(
        "preview",
        _preview,
        "Print one recipient's message exactly as it would be sent (the envelope goes to stderr).",
    )
    preview.add_argument("campaign", type=Path, help="the campaign YAML file")
    preview.add_argument("--row", type=int, default=1, help="data row number, 1-based (default 1)")

    run = command(
        "run",
        _run,
        "Send to every recipient that has no outcome in the journal yet; "
        "after an interruption, the same command continues where it stopped.",
    )
    run.add_argument("campaign", type=Path, help="the campaign YAML file")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="write one .eml per recipient and manifest.csv instead of sending",
    )
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="directory for --dry-run (default .batchmail/<name>/outbox/)",
    )
    run.add_argument(
        "--test-to",
        metavar="ADDRESS",
        help="send the first rows' messages, subject prefixed [TEST], only to ADDRESS; "
        "the journal and the real recipients are not touched",
    )
    run.add_argument(
        "--limit",
        type=int,
        default=3,
        metavar="N",
        help="with --test-to: how many rows (default 3)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and the summary line"
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the SMTP dialogue on stderr (AUTH lines redacted, message data summarised)",
    )
    run.add_argument(
        "--allow-changed",
        action="store_true",
        help="carry on although the campaign file, a template or a shared attachment changed "
        "since the first message was sent",
    )
    _allow_damaged_journal(run)

    resend = command(
        "resend", _resend, "Send again to recipients whose last outcome is failed or deferred."
    )
    resend.add_argument("campaign", type=Path, help="the campaign YAML file")
    resend.add_argument(
        "--include-unknown",
        action="store_true",
        help="also recipients whose outcome is unknown (they may have received it)",
    )
    resend.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and the summary line"
    )
    resend.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the SMTP dialogue on stderr (AUTH lines redacted, message data summarised)",
    )
    resend.add_argument(
        "--allow-changed",
        action="store_true",
        help="carry on although the campaign file, a template or a shared attachment changed "
        "since the first message was sent",
    )
    _allow_damaged_journal(resend)

    status = command(
        "status",
        _status,
        "Counts per status and every recipient not sent, with the server's reply.",
    )
    status.add_argument("campaign", type=Path, help="the campaign YAML file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--all",
        action="store_true",
        help="list the pending recipients one by one too (by default the text output counts "
        "them; --json always lists them)",
    )
    status.add_argument(
        "--export-failed",
        type=Path,
        metavar="FILE",
        help="write the addresses the server refused permanently (5xx), one per line, or as a "
        "CSV with an email column if FILE ends in .csv: a list for recipients.exclude",
    )
    status.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="write the recipients CSV with batchmail_status, batchmail_reply and "
        "batchmail_sent_at columns added, row order kept",
    )
    _allow_damaged_journal(status)

    sink = command(
        "sink",
        _sink,
        "Run the embedded SMTP server in the foreground, storing every "
        "message in a Maildir (for trying campaigns out).",
    )
    sink.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only)",
    )
    sink.add_argument("--port", type=int, default=8025, help="the port to listen on (default 8025)")
    sink.add_argument(
        "--maildir",
        type=Path,
        default=Path("sink-maildir"),
        metavar="DIR",
        help="the Maildir every message is stored in, created if missing (default ./sink-maildir)",
    )

    init = command("init", _init, "Write a starter campaign (YAML, CSV, templates) into DIR.")
    init.add_argument(
        "directory", type=Path, metavar="DIR", help="where to write it (created if missing)"
    )
    return parser


def _allow_damaged_journal(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--allow-damaged-journal",
        action="store_true",
        help="go on although the journal's files are missing or damaged (refused otherwise, "
        "exit 3): what the journal cannot account for reads as unknown, and recipients it "
        "lost are sent to again",
    )


# --- commands ---------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    report = check_campaign(campaign)
    _print_warnings(report.warnings)
    if not report.ok:
        raise CampaignError(report.problems)
    _say(f"{campaign.path.name}: ok, {_count(report.rows, 'recipient')}, every message renders")
    return EXIT_OK


def _preview(args: argparse.Namespace) -> int:
    campaign = campaign_id.with_id(load_campaign(args.campaign))
    factory = MessageFactory.prepare(campaign)
    for row in read_rows(campaign.recipients):
        if row.row_number == args.row:
            if row.recipient is None:
                raise CampaignError(row.problems)
            message = factory.build(row.recipient)
            _say(f"MAIL FROM: {message.envelope.mail_from}", file=sys.stderr)
            _say(f"RCPT TO: {', '.join(message.envelope.rcpt_tos)}", file=sys.stderr)
            _print_message(message.data)
            return EXIT_OK
    raise CampaignError([Problem(campaign.recipients.file.name, f"there is no row {args.row}")])


def _print_message(data: bytes) -> None:
    """The message's bytes as they go, for a file or a pipe; on a terminal, read as text
    with its control characters shown, as a CSV value in the body could hold them."""
    if sys.stdout.isatty():
        _say(data.decode("utf-8", "replace").replace("\r\n", "\n").removesuffix("\n"))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _run(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    if not args.quiet:
        _print_warnings(run_warnings(campaign))
    progress = _BarProgress(args.quiet)
    if args.test_to is not None:
        if args.dry_run:
            raise CampaignError([Problem("--test-to", "cannot be combined with --dry-run")])
        debug = _BarProgress(quiet=True).dialogue if args.verbose else None
        result = test_send(campaign, args.test_to, max(1, args.limit), debug)
        _say(
            f"{campaign.name}: test send of {_count(result.summary.selected, 'message')} to "
            f"{result.delivered_to}: "
            + ", ".join(f"{result.summary.counts[s.value]} {s.value}" for s in Status)
        )
        return EXIT_OK if result.all_sent else EXIT_SOME_FAILED
    if args.dry_run:
        try:
            result = dry_run(campaign, args.out, progress)
        finally:
            progress.close()
        return _finish(campaign, args, result, dry=True)
    return _send(campaign, args, progress, select_pending)


def _resend(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    progress = _BarProgress(args.quiet)
    return _send(campaign, args, progress, select_resendable(args.include_unknown))


def _send(
    campaign: Campaign, args: argparse.Namespace, progress: _BarProgress, select: Selector
) -> int:
    """`run` and `resend`: the first Ctrl-C or SIGTERM finishes what is on the wire."""
    stop = StopRequest(grace_from_environment(), on_request=_say_stopping)
    with stop.handling_signals():
        try:
            result = send(
                campaign,
                select,
                progress,
                args.allow_changed,
                debug=progress.dialogue if args.verbose else None,
                allow_damaged=args.allow_damaged_journal,
                stop=stop,
            )
        finally:
            progress.close()
        code = _finish(campaign, args, result, dry=False)
    return _interrupted(stop.signum) if stop.requested() and stop.signum else code


def _finish(campaign: Campaign, args: argparse.Namespace, result: RunResult, dry: bool) -> int:
    counts = result.summary.counts
    if dry:
        written = _count(result.summary.attempted, "message")
        _say(f"{campaign.name}: wrote {written} and manifest.csv to {result.delivered_to}")
        return EXIT_OK
    parts = ", ".join(f"{counts[s.value]} {s.value}" for s in Status)
    if result.summary.suppressed:
        parts += f", {result.summary.suppressed} suppressed (on an exclusion list)"
    if result.summary.selected == 0:
        statuses = ", ".join(f"{n} {s}" for s, n in result.statuses.items() if n)
        _say(f"{campaign.name}: nothing to send{': ' if statuses else ''}{statuses}.")
    else:
        where = f" Delivered to {result.delivered_to}." if counts[Status.SENT.value] else ""
        _say(f"{campaign.name}, this run: {parts}{_left_alone(result.left_alone)}.{where}")
    if result.summary.capped_until:
        when = result.summary.capped_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        _say(
            f"{campaign.name}: {result.capped_by}; run again after {when} to carry on.",
            file=sys.stderr,
        )
    if result.all_sent:
        return EXIT_OK
    if not args.quiet:
        _say(_next_step_hint(campaign, args), file=sys.stderr)
    return EXIT_SOME_FAILED


def _left_alone(statuses: Counter[str]) -> str:
    """The rows the run did not take, by status: the rest of the campaign beside its counts."""
    total = sum(statuses.values())
    if not total:
        return ""
    named = {"pending": "not attempted"}
    each = ", ".join(f"{statuses[s]} {named.get(s, s)}" for s in STATUSES if statuses[s])
    return f"; {total} left alone: {each}"


def _say_stopping(signum: int) -> None:
    """Called from the signal handler: os.write, as a buffered stream may be mid-write."""
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    text = (
        f"\nbatchmail: {what}: sending no more; waiting for the replies to the messages "
        "already sent, then stopping (interrupt again to stop at once)\n"
    )
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), text.encode())


def _interrupted(signum: int) -> int:
    _say(
        "\ninterrupted; the journal is consistent: run the same command again to continue",
        file=sys.stderr,
    )
    return EXIT_SIGNALLED + signum


def _out_of_memory(command: str) -> str:
    # A message is built whole in memory, its attachments with it: they are what grows.
    sent = (
        "; messages already sent are in the journal: `batchmail status` lists them, and "
        "running the same command again continues"
        if command in SENDING_COMMANDS
        else ""
    )
    return (
        f"batchmail: {command}: out of memory{sent}. Each message is built in memory with "
        "its attachments, base64-encoded (a third larger): check the attachments' sizes "
        "(`check` warns about messages over message.max_size), or give batchmail more memory"
    )


def _next_step_hint(campaign: Campaign, args: argparse.Namespace) -> str:
    path = args.campaign
    counts: Counter[str] = Counter()
    refused = 0  # failed rows the server refused for good (5xx)
    with _open_journal(campaign, args.allow_damaged_journal) as journal:
        for status in recipient_statuses(campaign, journal):
            counts[status.status] += 1
            refused += status.status == "failed" and 500 <= (status.code or 0) < 600
    hints = []
    if counts["failed"] and counts["failed"] == refused and not counts["deferred"]:
        # Refused for good: sending again gets the same answer; keeping them out helps.
        hints.append(
            f"{counts['failed']} failed, refused for good (5xx): see `batchmail status {path}`; "
            f"`batchmail status {path} --export-failed FILE` lists the refused addresses "
            "for recipients.exclude"
        )
    elif counts["failed"] or counts["deferred"]:
        hints.append(
            f"{counts['failed']} failed and {counts['deferred']} deferred: see "
            f"`batchmail status {path}`, then `batchmail resend {path}`"
        )
    if counts["unknown"]:
        hints.append(
            f"{counts['unknown']} unknown (may have been delivered): "
            f"`batchmail resend {path} --include-unknown` to send them again"
        )
    if counts["pending"]:
        hints.append(f"{counts['pending']} not attempted yet: `batchmail run {path}`")
    return "\n".join(hints)


def _status(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    _write_status_files(campaign, args)
    with (
        _open_journal(campaign, args.allow_damaged_journal) as journal,
        status_listing(campaign, journal, with_pending=args.json or args.all) as listing,
    ):
        counts, listed = listing
        if not campaign.recipients.exclude:
            del counts["suppressed"]  # 1.0's JSON and table, for campaigns without exclusion lists
        if args.json:
            for piece in json_status(counts, listed):
                sys.stdout.write(shown_json(piece))
            _say()
        else:
            _say(f"{campaign.name}: " + ", ".join(f"{counts[s]} {s}" for s in counts))
            for status in listed:
                code = f"{status.code} " if status.code else ""
                reply = f": {code}{status.reply}" if (code or status.reply) else ""
                key, reply = shown(status.key, False), shown(reply, False)
                _say(f"  row {status.row_number}  {key}  {status.status}{reply}")
    return EXIT_OK if sum(counts[s] for s in DONE) == sum(counts.values()) else EXIT_SOME_FAILED


def _write_status_files(campaign: Campaign, args: argparse.Namespace) -> None:
    """--csv and --export-failed, both paths checked before either file is written."""
    for option, path in (("--csv", args.csv), ("--export-failed", args.export_failed)):
        if path:
            refuse_input(campaign, path, option)
    if args.csv:
        with _open_journal(campaign, args.allow_damaged_journal) as journal:
            rows = write_csv_report(campaign, journal, args.csv)
        _say(f"wrote {_count(rows, 'row')} to {args.csv}", file=sys.stderr)
    if args.export_failed:
        with _open_journal(campaign, args.allow_damaged_journal) as journal:
            count = export_refused(campaign, journal, args.export_failed)
        refused = _count(count, "permanently refused address", "permanently refused addresses")
        _say(f"wrote {refused} to {args.export_failed}", file=sys.stderr)


def _open_journal(
    campaign: Campaign, allow_damaged: bool = False
) -> contextlib.AbstractContextManager[Journal | None]:
    """The campaign's journal for reading, or None when nothing was ever sent."""
    journal = Journal.open_readonly(journal_path(campaign), allow_damaged)
    return journal if journal is not None else contextlib.nullcontext(None)


def _sink(args: argparse.Namespace) -> int:
    from batchmail.sink import serve

    serve(args.host, args.port, args.maildir, on_ready=lambda text: _say(text, flush=True))
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    from batchmail.starter import write_starter

    campaign_file = write_starter(args.directory)
    _say(
        f"wrote a starter campaign: {campaign_file}\n"
        f"try it: batchmail check {campaign_file} && batchmail run {campaign_file}"
    )
    return EXIT_OK


# --- output -----------------------------------------------------------------------------------


def _say(text: str = "", file: TextIO | None = None, flush: bool = False) -> None:
    """Print a line: the only way this module prints. What it says can quote a CSV, a server
    or the journal, so control characters are shown as escapes, never sent to the terminal."""
    print(shown(text), file=file or sys.stdout, flush=flush)


def _print_warnings(warnings: Sequence[Problem]) -> None:
    """Worth knowing, not stopping for: on stderr, one line each; the exit code is unchanged."""
    if warnings:
        _say(f"batchmail: {_count(len(warnings), 'warning')}:", file=sys.stderr)
        for line in problem_lines(warnings):
            _say(f"  {line}", file=sys.stderr)


def _print_error(exc: BatchmailError, could_send: bool) -> None:
    if isinstance(exc, CampaignError):
        sent = ", nothing was sent" if could_send else ""
        _say(f"batchmail: {_count(len(exc.problems), 'problem')}{sent}:", file=sys.stderr)
        for line in problem_lines(exc.problems):
            _say(f"  {line}", file=sys.stderr)
    else:
        _say(f"batchmail: {exc}", file=sys.stderr)


def _count(number: int, thing: str, things: str | None = None) -> str:
    """ "1 message", "2 messages": the noun agreeing with the number."""
    return f"{number} {thing if number == 1 else things or thing + 's'}"


class _BarProgress:
    """A tqdm bar on stderr when it is a terminal; notes and nothing else otherwise."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self._quiet = quiet
        self._stream = stream or sys.stderr
        self._bar = None
        self._counts: Counter[str] = Counter()

    def start(self, total: int) -> None:
        if self._quiet or not self._stream.isatty():
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=self._stream, unit="msg", dynamic_ncols=True)

    def outcome(self, message: ComposedMessage, outcome: Outcome) -> None:
        self._counts[outcome.status.value] += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                sent=self._counts["sent"],
                failed=self._counts["failed"],
                deferred=self._counts["deferred"],
                refresh=False,
            )

    def note(self, text: str) -> None:
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.write(shown(text), file=self._stream)
        else:
            _say(text, file=self._stream)

    def dialogue(self, line: str) -> None:
        """One line of the SMTP dialogue (--verbose): shown even with --quiet."""
        if self._bar is not None:
            self._bar.write(shown(line), file=self._stream)
        else:
            _say(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
