"""How a verdict is shown: its text, its JSON, and the exit code it means."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any, TextIO

from ..client import (
    format_address,
)
from ..protocol import (
    ConfdReply,
    ConfdRequest,
    ErrorCode,
    NodeRole,
    QueryKey,
    QueryResult,
    ReplyStatus,
    RequestType,
)
from ._exits import EXIT_ERROR_REPLY, EXIT_OK, EXIT_TIMEOUT


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    return json.dumps(value, indent=2, sort_keys=True)


def describe(request: ConfdRequest, result: QueryResult) -> str:
    """The answer of ``result`` as a person reads it."""
    answer = result.answer
    if request.type is RequestType.NODE_ROLE_BYNAME and result.status is ReplyStatus.OK:
        with contextlib.suppress(ValueError):  # a role this version does not know
            answer = f"{NodeRole(answer).name.lower()} ({answer})"
    ips = request.query.get(QueryKey.IPLIST.value) if isinstance(request.query, dict) else None
    if ips is not None and isinstance(answer, list) and len(answer) == len(ips):
        # One [status, answer, serial] per IP asked: say each one's outcome.
        return "\n".join(_per_ip(ip, row) for ip, row in zip(ips, answer, strict=True))
    return _render(answer)


def _per_ip(ip: str, row: Any) -> str:
    try:
        reply = ConfdReply(ReplyStatus(row[0]), row[1], row[2])
    except (TypeError, ValueError, IndexError, KeyError):
        return f"{ip} {json.dumps(row)}"
    if reply.ok:
        return f"{ip} {reply.answer}"
    return f"{ip} not found" if reply.not_found else f"{ip} {one_line(reply.error)}"


#: Ganeti's ways of writing an error: a failed prerequisite, over three
#: lines, and an OpPrereqError as Haskell shows it (after a prefix or not).
_PREREQUISITES = re.compile(
    r"Failure: prerequisites not met for this operation:\s*"
    r"error type: (?P<kind>\w+), error details:\s*(?P<details>.*)",
    re.DOTALL,
)
_OP_PREREQ_ERROR = re.compile(
    r'(?:.*: )?OpPrereqError "(?P<details>(?:[^"\\]|\\.)*)" (?P<kind>\w+)'
)


def one_line(text: str | None) -> str:
    """An error the daemon wrote, on one line: Ganeti's details, then its error type."""
    text = text or ""
    for form in (_PREREQUISITES, _OP_PREREQ_ERROR):
        match = form.fullmatch(text.strip())
        if match is not None:
            details = match["details"]
            if form is _OP_PREREQ_ERROR:
                details = details.replace('\\"', '"').replace("\\\\", "\\")
            text = f"{details} ({match['kind']})"
            break
    return " ".join(text.split())


def _subject(request: ConfdRequest) -> str:
    """What ``request`` asks about, as a "not found" line names it."""
    kind, query = request.type, request.query
    if kind in {RequestType.NODE_ROLE_BYNAME, RequestType.NODE_DRBD, RequestType.NODE_INSTANCES}:
        return f"node {query!r}"
    if kind is RequestType.INSTANCE_DISKS:
        return f"instance {query!r}"
    if kind is RequestType.CONFIG_QUERY:
        return f"nothing at {query} in the configuration"
    if kind is RequestType.NODE_PIP_BY_INSTANCE_IP and isinstance(query, dict):
        link = query.get(QueryKey.LINK.value)
        on_link = "" if link is None else f" on link {link!r}"
        return f"no instance has IP {query.get(QueryKey.IP.value)}{on_link}"
    if kind is RequestType.CLUSTER_MASTER:
        return "the master node named in the configuration"
    return f"{kind.name} {json.dumps(query)}"


def not_found(request: ConfdRequest, result: QueryResult) -> bool:
    """Whether ``result`` says that what ``request`` asks about is not in the configuration.

    A reply's own word (:attr:`QueryResult.not_found`), or, for a pointer
    (the request checked that it is a path), an ``ARGUMENT`` error: the
    path leads nowhere.
    """
    if result.not_found:
        return True
    return (
        request.type is RequestType.CONFIG_QUERY
        and result.best is not None
        and result.best.error_code is ErrorCode.ARGUMENT
    )


def _nothing_matched(request: ConfdRequest, result: QueryResult) -> str | None:
    """What an empty list answer means for ``request``; None if the answer is not one."""
    if result.answer != [] or result.status is not ReplyStatus.OK:
        return None
    if request.type is RequestType.INSTANCES_IPS_LIST:
        link = request.query
        where = "the default link" if link is None else f"link {link!r}"
        return f"no instance has an IP on {where} (or no such link)"
    return "the answer is an empty list"


def error_as_json(
    result: QueryResult, request: ConfdRequest | None = None
) -> dict[str, Any] | None:
    """The error a result's trusted reply names: code, name, words, and whether it
    says what was asked about is not in the configuration; None if none."""
    if result.best is None or result.best.ok:
        return None
    code = result.best.error_code
    return {
        "code": None if code is None else int(code),
        "name": None if code is None else code.name,
        "message": result.error,
        "not_found": result.not_found if request is None else not_found(request, result),
    }


def result_as_json(result: QueryResult, request: ConfdRequest | None = None) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "serial": result.serial,
        "status": None if result.status is None else result.status.name,
        "error": error_as_json(result, request),
        "sent": result.sent,
        "received": result.received,
        "needed": result.needed,
        "quorum": result.quorum_reached,
        "timed_out": result.timed_out,
        "saturated": result.saturated,
        "consistent": result.consistent,
        "diagnosis": list(result.diagnosis),
        "send_errors": [
            {"peer": format_address(peer), "error": error} for peer, error in result.send_errors
        ],
        "discards": dict(result.discards),
        "replies": [
            {
                "peer": format_address(reply.address),
                "status": reply.reply.status.name,
                "serial": reply.reply.serial,
                "answer": reply.reply.answer,
            }
            for reply in result.replies
        ],
    }


def exit_code(result: QueryResult) -> int:
    if result.timed_out or result.best is None:
        return EXIT_TIMEOUT
    return EXIT_OK if result.best.ok else EXIT_ERROR_REPLY


def shown(request: ConfdRequest, result: QueryResult) -> tuple[str | None, str | None]:
    """What the trusted reply of ``result`` says, as (an answer, or a remark).

    An answer is what a script reads on standard output; a remark (the
    daemon's error on one line, "not found: …", "nothing matched: …") is
    said to a person, and is not an answer.
    """
    if result.best is None:
        return None, None
    if not result.best.ok:
        if not_found(request, result):
            subject, details = _subject(request), one_line(result.error)
            if isinstance(result.answer, str) and str(request.query) not in details:
                subject += f" ({details})"  # something else it names is missing
            return None, f"not found: {subject}"
        return None, f"the daemons answered with an error: {one_line(result.error)}"
    nothing = _nothing_matched(request, result)
    if nothing is not None:
        return None, f"nothing matched: {nothing}"
    return describe(request, result), None


def report(
    request: ConfdRequest,
    result: QueryResult,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    *,
    partial: bool = False,
) -> int:
    """Print ``result`` for people (or as JSON) and return the exit code.

    Without a quorum nothing goes to ``out`` (a script reading it must not
    take an untrusted answer): what arrived goes to ``err`` with the
    verdict, unless ``partial`` asks for an answer on ``out`` (an error
    reply is never one). The JSON says ``"quorum": false``.
    """
    code = exit_code(result)
    if as_json:
        print(json.dumps(result_as_json(result, request), indent=2), file=out)
        return code
    summary = (
        f"serial {result.serial}, {result.received}/{result.sent} replies "
        f"(quorum {result.needed}), "
        + ("replies agree" if result.consistent else "REPLIES DISAGREE at one serial")
    )
    answer, remark = shown(request, result)
    if code == EXIT_TIMEOUT:
        print(
            f"trioconfd: no quorum: {result.received}/{result.sent} replies in time, "
            f"{result.needed} needed",
            file=err,
        )
        for cause in result.diagnosis:
            print(f"  {cause}", file=err)
        if result.best is None:
            return code
        if partial and answer is not None:
            print(answer, file=out)
        else:
            print(
                "trioconfd: the best reply that did arrive, untrusted without a quorum"
                + (" (--partial prints it on standard output):" if answer is not None else ":"),
                file=err,
            )
            print(answer if answer is not None else f"trioconfd: {remark}", file=err)
        print(summary, file=err)
        return code
    if answer is not None:
        print(answer, file=out)
    else:
        print(f"trioconfd: {remark}", file=err)
    if code == EXIT_OK and request.type is RequestType.PING:
        print(_explain_ping(result), file=err)
    print(summary, file=err)
    return code


def _explain_ping(result: QueryResult) -> str:
    version = result.answer
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        # Ganeti writes version major.minor.revision as major*10^6 + minor*10^4 + revision.
        major, rest = divmod(version, 1_000_000)
        minor, revision = divmod(rest, 10_000)
        named = f" (Ganeti {major}.{minor}.{revision})"
    else:
        named = ""
    return (
        f"{version} is the configuration format version{named} of the daemons that "
        f"replied: {result.received} of {result.sent} asked are up, read our key, and "
        "find our clock within 300 s of theirs"
    )
