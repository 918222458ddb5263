"""``ftpipe jobs list|show|events|cancel|pause|resume``: fine-tuning jobs on the API ``ftpipe run`` uses."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from cli.api import API_EXAMPLE, add_api_options, connect
from cli.common import EXIT_FAILED, EXIT_OK, key_value, positive_float, positive_int

if TYPE_CHECKING:
    from client import MKA1Client
    from client.models import FineTuningJob

PROG = "ftpipe jobs"
Action = Literal["cancel", "pause", "resume"]
# What each action needs, said when the server refuses it (409) so the user knows why.
ACTION_NEEDS: dict[str, str] = {
    "cancel": "a job that has not finished",
    "pause": "a running job",
    "resume": "a paused job",
}
LIST_PAGE_MAX = 100
METRICS_LOOKBACK = 20

EPILOG = f"""examples:
  ftpipe jobs list                                 the 20 newest jobs
  ftpipe jobs list --status running --status queued --limit 5
  ftpipe jobs show ftjob_0123...                   one job, its checkpoints and what to do next
  ftpipe jobs events ftjob_0123... --follow        print events until the job finishes
  ftpipe jobs cancel ftjob_0123...
  ftpipe jobs list --json | jq -r '.[].id'         JSON for scripts
  ftpipe jobs list {API_EXAMPLE}
"""
EXAMPLES = {
    "list": """examples:
  ftpipe jobs list
  ftpipe jobs list --limit 50 --status succeeded
  ftpipe jobs list --metadata team=support --json
""",
    "show": """examples:
  ftpipe jobs show ftjob_0123...
  ftpipe jobs show ftjob_0123... --json | jq -r .fine_tuned_model
""",
    "events": """examples:
  ftpipe jobs events ftjob_0123...                 the newest 50 events, oldest first
  ftpipe jobs events ftjob_0123... --all
  ftpipe jobs events ftjob_0123... --follow        until the job finishes (exit 0 only if it succeeded)
  ftpipe jobs events ftjob_0123... --follow --interval 5 --json | jq .message
""",
    "cancel": """examples:
  ftpipe jobs cancel ftjob_0123...
  ftpipe jobs cancel ftjob_0123... --json
""",
    "pause": """examples:
  ftpipe jobs pause ftjob_0123...                  saves a checkpoint; 'ftpipe jobs resume' continues from it
  ftpipe jobs pause ftjob_0123... --json
""",
    "resume": """examples:
  ftpipe jobs resume ftjob_0123...
  ftpipe jobs resume ftjob_0123... --json
""",
}
for _name in EXAMPLES:
    _args = "" if _name == "list" else " ftjob_0123..."
    EXAMPLES[_name] += f"  ftpipe jobs {_name}{_args} {API_EXAMPLE}\n"


def register(sub: Any) -> None:
    """Add ``jobs`` to the command tree."""
    sub.add_parser(
        "jobs",
        help="list, inspect, follow, cancel, pause and resume fine-tuning jobs",
        description="Fine-tuning jobs on the API `ftpipe run` uses: MKA1 when MKA1_* (or --base-url) is set, "
        "else the embedded backend (started when it is not running).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_commands,
    )


def _sub(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def _job_id(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "job_id", metavar="JOB_ID", help="the job's id, e.g. ftjob_0123... (see 'ftpipe jobs list')"
    )


def _json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")


def add_commands(p: argparse.ArgumentParser) -> None:
    """``jobs``' subcommands."""
    from contract.wire import JOB_STATUSES

    sub = p.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    listing = _sub(sub, "list", "the newest jobs first, with status and fine-tuned model")
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=20,
        metavar="N",
        help="show at most N jobs (default: %(default)s); example: --limit 50",
    )
    listing.add_argument(
        "--status",
        action="append",
        choices=JOB_STATUSES,
        metavar="STATUS",
        help=f"only jobs in this status, repeat for several ({', '.join(JOB_STATUSES)}); "
        "example: --status running",
    )
    listing.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only jobs whose metadata has KEY=VALUE (filtered by the server), repeat for more; "
        "example: --metadata team=support",
    )
    _json_flag(listing, "the jobs")
    listing.set_defaults(handler=list_command)

    show = _sub(sub, "show", "one job: status, model ids, hyperparameters, times, error and checkpoints")
    _job_id(show)
    _json_flag(show, "the job (with a 'checkpoints' list)")
    show.set_defaults(handler=show_command)

    events = _sub(sub, "events", "a job's events (log lines and metrics), oldest first")
    _job_id(events)
    shown = events.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="show the newest N events (default: %(default)s); example: --limit 200",
    )
    shown.add_argument("--all", action="store_true", help="show every event")
    events.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events until the job finishes; exit 0 only if it succeeded",
    )
    events.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="with --follow, seconds between polls (default: %(default)s); example: --interval 5",
    )
    _json_flag(events, "one event per line")
    events.set_defaults(handler=events_command)

    for action, text in (
        ("cancel", "cancel a job that has not finished"),
        ("pause", "pause a running job (it saves a checkpoint to resume from)"),
        ("resume", "resume a paused job from its checkpoint"),
    ):
        ap = _sub(sub, action, text)
        _job_id(ap)
        _json_flag(ap, "the job as the server returned it")
        ap.set_defaults(handler=action_command, action=action)

    for parser in (listing, show, events, *(sub.choices[a] for a in ACTION_NEEDS)):
        add_api_options(parser)


@contextmanager
def _job_errors(client: MKA1Client, job_id: str, action: str | None = None) -> Iterator[None]:
    """A 404 becomes "no job X at URL"; a 409 names the job's status and what the action needs."""
    from client.errors import APIError, ConflictError, NotFoundError

    try:
        yield
    except NotFoundError:
        from cli.errors import CommandError

        raise CommandError(
            f"no job {job_id!r} at {client.settings.base_url} (see 'ftpipe jobs list')"
        ) from None
    except ConflictError as exc:
        from cli.errors import CommandError

        if action is None:
            raise
        try:
            status = str(client.jobs.retrieve(job_id).status)
        except APIError:
            status = None
        if status is None:
            raise CommandError(f"cannot {action} job {job_id}: {exc.message}") from None
        raise CommandError(
            f"cannot {action} job {job_id}: its status is '{status}' ({action} needs {ACTION_NEEDS[action]})"
        ) from None


def list_command(args: argparse.Namespace) -> int:
    """Print the newest jobs (filtered by status client-side: the API filters only on metadata)."""
    from cli.present import JOB_COLUMNS, Screen, as_json, job_row

    wanted = set(args.status or ())
    page = LIST_PAGE_MAX if wanted else min(args.limit, LIST_PAGE_MAX)
    found: list[FineTuningJob] = []
    with connect(args) as client:
        for job in client.jobs.list(metadata=dict(args.metadata) or None, limit=page):
            if not wanted or str(job.status) in wanted:
                found.append(job)
                if len(found) >= args.limit:
                    break
        where = client.settings.base_url
    screen = Screen()
    if args.json:
        screen.line(as_json(found))
        return EXIT_OK
    if not found:
        what = f" with status {' or '.join(sorted(wanted))}" if wanted else ""
        screen.line(f"no jobs{what} at {where}")
        return EXIT_OK
    screen.table(JOB_COLUMNS, [job_row(j) for j in found])
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    """Print one job, its checkpoints and what to do next."""
    from cli.present import (
        CHECKPOINT_COLUMNS,
        Screen,
        as_json,
        checkpoint_row,
        job_fields,
        next_steps,
        progress,
    )

    with connect(args) as client, _job_errors(client, args.job_id):
        job = client.jobs.retrieve(args.job_id)
        checkpoints = sorted(
            client.jobs.list_checkpoints(args.job_id),
            key=lambda c: c.step_number if c.step_number is not None else -1,
        )
        latest = None
        if not job.is_terminal and not args.json:
            # The newest metrics event says how far a live job is (one page: metrics come every few steps).
            page = client.jobs.list_events(args.job_id, limit=METRICS_LOOKBACK)
            latest = next((e for e in page.data if e.type == "metrics" and e.data), None)
    screen = Screen()
    if args.json:
        screen.line(as_json({**job.model_dump(mode="json"), "checkpoints": checkpoints}))
        return EXIT_OK
    fields = job_fields(job)
    where = progress(latest)
    if where is not None:
        fields.insert(2, ("progress", where))
    screen.fields(fields)
    if checkpoints:
        screen.line()
        screen.table(CHECKPOINT_COLUMNS, [checkpoint_row(c) for c in checkpoints], title="checkpoints")
    for line in next_steps(job):
        screen.line()
        screen.line(line)
    return EXIT_OK


def events_command(args: argparse.Namespace) -> int:
    """Print a job's events oldest first; with ``--follow``, poll until the job finishes."""
    from cli.present import Screen, as_json_line, event_line

    screen = Screen()

    def show(events: list[Any]) -> None:
        for event in events:
            screen.line(as_json_line(event) if args.json else event_line(event))

    with connect(args) as client, _job_errors(client, args.job_id):
        if args.all:
            events = client.jobs.new_events(args.job_id, None)
        else:
            events = list(reversed(client.jobs.list_events(args.job_id, limit=args.limit).data))
        show(events)
        if not args.follow:
            return EXIT_OK
        last_id = events[-1].id if events else None
        while True:
            # Status first, events second: once a finished status is read, the events read after it
            # include the last ones, so nothing is missed when the loop ends.
            job = client.jobs.retrieve(args.job_id)
            newer = client.jobs.new_events(args.job_id, last_id)
            show(newer)
            if newer:
                last_id = newer[-1].id
            if job.is_terminal:
                break
            time.sleep(args.interval)
    if not args.json:
        screen.line(f"job {job.id} {job.status}")
    return EXIT_OK if job.status == "succeeded" else EXIT_FAILED


def action_command(args: argparse.Namespace) -> int:
    """Cancel, pause or resume a job and print its status afterwards."""
    from cli.present import Screen, as_json

    action: Action = args.action
    with connect(args) as client, _job_errors(client, args.job_id, action):
        job = getattr(client.jobs, action)(args.job_id)
    screen = Screen()
    if args.json:
        screen.line(as_json(job))
        return EXIT_OK
    note = ""
    if action == "pause" and job.status == "running":
        note = " (pause requested: it pauses at its next step and saves a checkpoint)"
    screen.line(f"job {job.id}: {job.status}{note}")
    return EXIT_OK
