"""``ftpipe chat MODEL [PROMPT]``: ask a model through the Responses API, one answer or a conversation.

Answers are streamed as the server generates them (``stream: true``), or asked whole with ``--no-stream``
and from servers that refuse to stream. A conversation resends its history as ``input`` with
``store: false``: nothing accumulates on the server, any Responses server can follow it (no stored
``previous_response_id`` needed), and each call may be retried in place by the client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cli.api import API_EXAMPLE, add_api_options, connect
from cli.common import EXIT_OK, EXIT_USAGE, float_in, positive_int, usage_error

if TYPE_CHECKING:
    from client import MKA1Client
    from client.models import InputMessage, ResponseCreateRequest, ResponseObject

PROG = "ftpipe chat"
EXIT_WORDS = ("/exit", "/quit")
RESET_WORD = "/reset"
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})

EPILOG = f"""examples:
  ftpipe chat ft:local:tiny-chat:support:1a2b3c "Where is my order A-12345?"
  ftpipe chat local:tiny-chat                       a conversation (/reset clears it, /exit or Ctrl-D ends it)
  ftpipe chat --champion support-bot "Hi"           the model promoted with --promote-as support-bot
  echo "Say hi" | ftpipe chat local:micro-chat      the prompt from stdin
  ftpipe chat MODEL "Hi" --instructions "Answer in French." --max-output-tokens 64 --temperature 0.7
  ftpipe chat MODEL "Hi" --json | jq -r .output_text
  ftpipe chat MODEL "Hi" --no-stream               the whole answer at once
  ftpipe chat MODEL --top-p 0.9 {API_EXAMPLE}
Model ids: the fine-tuned model printed by 'ftpipe run' (or 'ftpipe jobs show JOB_ID'), a checkpoint's model,
or a base model (local:tiny-chat on the embedded backend).
"""


def register(sub: Any) -> None:
    """Add ``chat`` to the command tree."""
    sub.add_parser(
        "chat",
        help="ask a model (fine-tuned, checkpoint, base or champion): one answer or a conversation",
        description="Ask a model through the Responses API on the API `ftpipe run` uses, streaming the answer "
        "as it is generated. With PROMPT (or piped stdin): one answer. Without: a conversation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    ).set_defaults(handler=chat_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``chat``'s arguments."""
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="model id, e.g. the fine-tuned model 'ftpipe run' printed (or use --champion)",
    )
    p.add_argument(
        "prompt",
        nargs="?",
        metavar="PROMPT",
        help="ask this once and print the answer ('-': read it from stdin); "
        'without it (and no piped stdin) a conversation starts; example: "Where is my order?"',
    )
    p.add_argument(
        "--champion",
        metavar="NAME",
        help="ask the champion recorded by 'ftpipe run --promote-as NAME' (read from Prefect); "
        "example: --champion support-bot",
    )
    gen = p.add_argument_group("generation")
    gen.add_argument(
        "--instructions",
        metavar="TEXT",
        help="system instructions sent with every turn; example: --instructions 'Answer in one sentence.'",
    )
    gen.add_argument(
        "--max-output-tokens",
        type=positive_int,
        metavar="N",
        help="cap each answer at N tokens (default: the server's); example: --max-output-tokens 128",
    )
    gen.add_argument(
        "--temperature",
        type=float_in(0.0, 2.0, "temperature"),
        metavar="X",
        help="sampling temperature 0-2 (default: the server's; the embedded backend decodes greedily); "
        "example: --temperature 0.7",
    )
    gen.add_argument(
        "--top-p",
        type=float_in(0.0, 1.0, "top_p"),
        metavar="X",
        help="nucleus sampling 0-1 (default: the server's); example: --top-p 0.9",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="ask for the whole answer at once instead of streaming it",
    )
    out.add_argument(
        "--json",
        action="store_true",
        help="print the final Response object as JSON instead of its text (needs PROMPT)",
    )
    add_api_options(p)


@dataclass
class Conversation:
    """The turns so far and the options every turn is asked with."""

    model: str
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    history: list[InputMessage] = field(default_factory=list)

    def request(self, prompt: str) -> ResponseCreateRequest:
        """The ``POST /responses`` body for the next turn (history + ``prompt``; nothing stored)."""
        from client.models import InputMessage, ResponseCreateRequest

        return ResponseCreateRequest(
            model=self.model,
            input=[*self.history, InputMessage(role="user", content=prompt)],
            instructions=self.instructions,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            store=False,
        )

    def record(self, prompt: str, answer: str) -> None:
        """Keep a finished turn for the next request."""
        from client.models import InputMessage

        self.history += [
            InputMessage(role="user", content=prompt),
            InputMessage(role="assistant", content=answer),
        ]


@dataclass
class Asker:
    """Asks one turn, streaming when allowed and possible; ``write`` gets the text as it arrives."""

    client: MKA1Client
    stream: bool
    write: Callable[[str], None]

    def ask(self, request: ResponseCreateRequest) -> ResponseObject:
        """The final response; its text has gone to ``write`` (piece by piece when streamed)."""
        from client.errors import BadRequestError

        if self.stream:
            try:
                return self._streamed(request)
            except BadRequestError as exc:
                # A server that refuses ``stream`` (param names it) is asked again whole, once and for all.
                if exc.param != "stream":
                    raise
                self.stream = False
        final = self.client.responses.create(request)
        self.write(final.output_text)
        return final

    def _streamed(self, request: ResponseCreateRequest) -> ResponseObject:
        from cli.errors import CommandError

        shown = False
        final = None
        with closing(self.client.responses.stream(request)) as events:
            for event in events:
                if event.type == "response.output_text.delta" and event.delta:
                    self.write(event.delta)
                    shown = True
                elif event.type == "error":
                    raise CommandError(f"the server ended the answer: [{event.code}] {event.message}")
                elif event.type in FINAL_EVENTS and event.response is not None:
                    final = event.response
        if final is None:
            raise CommandError("the answer's stream ended before its final event; ask again")
        if not shown:  # a server that answered whole sent no deltas
            self.write(final.output_text)
        return final


def _outcome_problem(final: ResponseObject, max_tokens: int | None) -> str | None:
    """Why an answer is not whole (failed, or cut at the token cap), else None."""
    if final.status == "failed":
        err = final.error
        return f"the model failed: [{err.code if err else 'error'}] {err.message if err else ''}".rstrip()
    if final.status == "incomplete":
        cap = f" ({max_tokens})" if max_tokens else ""
        return f"(answer cut at the output-token cap{cap}; raise --max-output-tokens)"
    return None


def _resolve_model(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The model id and prompt, with ``--champion`` read from Prefect; None model: a usage error was printed."""
    if not args.champion:
        if args.model is None:
            usage_error(PROG, "give a MODEL (or --champion NAME)")
            return None, None
        return args.model, args.prompt
    if args.prompt is not None:
        usage_error(PROG, "give MODEL or --champion, not both")
        return None, None
    from evaluation.champion import check_name

    try:
        check_name(args.champion)
    except ValueError as exc:
        usage_error(PROG, str(exc))
        return None, None

    from cli.common import prefect_env_defaults

    prefect_env_defaults()
    from cli.errors import CommandError
    from cli.services import prefect_for_command
    from evaluation.champion import PrefectVariables, read_champion, variable_name

    with prefect_for_command(f"{PROG} --champion"):  # as `ftpipe models champion` reads it
        record = read_champion(PrefectVariables(), args.champion)
    if record is None:
        raise CommandError(
            f"no champion named {args.champion!r} (Prefect Variable {variable_name(args.champion)} is unset)"
        )
    return record.model_id, args.model  # with --champion, the one positional is the prompt


def chat_command(args: argparse.Namespace) -> int:
    """One answer when a prompt is given or piped, else a conversation on the terminal."""
    model, prompt = _resolve_model(args)
    if model is None:
        return EXIT_USAGE
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = sys.stdin.read().strip()
        if not prompt:
            return usage_error(PROG, "stdin held no prompt")
    if args.json and prompt is None:
        return usage_error(PROG, "--json needs a PROMPT (or piped stdin)")
    conv = Conversation(model, args.instructions, args.max_output_tokens, args.temperature, args.top_p)
    from cli.errors import CommandError
    from client.errors import NotFoundError

    with connect(args) as client:
        try:
            if prompt is not None:
                return _once(client, conv, prompt, stream=args.stream and not args.json, as_json=args.json)
            return _conversation(client, conv, stream=args.stream)
        except NotFoundError as exc:
            raise CommandError(
                f"unknown model {model!r} at {client.settings.base_url}: {exc.message} "
                "(model ids: 'ftpipe jobs show JOB_ID')"
            ) from None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _once(client: MKA1Client, conv: Conversation, prompt: str, *, stream: bool, as_json: bool) -> int:
    from cli.errors import CommandError
    from cli.present import as_json as to_json

    asker = Asker(client, stream, (lambda _: None) if as_json else _write)
    final = asker.ask(conv.request(prompt))
    if as_json:
        print(to_json(final))
    else:
        _write("\n")
    problem = _outcome_problem(final, conv.max_output_tokens)
    if final.status == "failed":
        raise CommandError(problem or "the model failed")
    if problem:
        print(problem, file=sys.stderr)
    return EXIT_OK


def _conversation(client: MKA1Client, conv: Conversation, *, stream: bool) -> int:
    """Read a line, answer it, keep both; Ctrl-C drops the answer in progress, Ctrl-D or /exit ends."""
    from cli.present import chat_banner

    with suppress(ImportError):  # not on every platform; input() works without it
        import readline  # noqa: F401 - line editing and history for input()
    print(chat_banner(conv.model, client.settings.base_url), file=sys.stderr)
    asker = Asker(client, stream, _write)
    while True:
        try:
            prompt = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return EXIT_OK
        if not prompt:
            continue
        if prompt in EXIT_WORDS:
            return EXIT_OK
        if prompt == RESET_WORD:
            conv.history.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        _write("model> ")
        try:
            final = asker.ask(conv.request(prompt))
        except KeyboardInterrupt:
            _write("\n")
            print("(interrupted: that answer is dropped from the conversation)", file=sys.stderr)
            continue
        _write("\n")
        problem = _outcome_problem(final, conv.max_output_tokens)
        if problem:
            print(problem, file=sys.stderr)
        if final.status != "failed":
            conv.record(prompt, final.output_text)
