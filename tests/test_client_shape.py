"""The client's shape and what it promises: all I/O through trio.socket, deadlines that
always fire, closed means closed, and nothing left behind."""

from __future__ import annotations

import ast
import contextlib
import errno
import math
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioconfd
from trioconfd import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientBrokenError,
    ConfdClientClosedError,
    ConfdClientError,
    ConfdRequest,
    ConfdRequestEndedError,
    RequestType,
    RetryPolicy,
    open_confd_client,
)
from trioconfd.client._router import RECEIVE_TASKS
from trioconfd.protocol import ConfdReply, PeerReply, ReplyStatus
from trioconfd.protocol._aggregate import with_answered
from trioconfd.testing import (
    ConfdServer,
    FaultProxy,
    make_cluster_config,
    open_confd_server,
    open_fault_proxy,
    open_simulated_cluster,
)

from .responders import answer_ping, run_responders, settle, silent

KEY = b"shape key\n"


class RecordingSocket(trio.socket.SocketType):
    """A custom Trio socket around a real one: it counts calls and has no kernel extras.

    ``fileno()`` and ``setsockopt()`` fail as a simulated network's socket
    would, so the client must do without them.
    """

    def __init__(self, family: int, calls: Counter[str], fail_receive: list[BaseException]) -> None:
        super().__init__()
        self._inner = trio.socket.from_stdlib_socket(socket.socket(family, socket.SOCK_DGRAM))
        self._calls = calls
        self._fail_receive = fail_receive

    def fileno(self) -> int:
        self._calls["fileno"] += 1
        raise NotImplementedError("no kernel file behind this socket")

    def setsockopt(self, *args: Any) -> None:
        self._calls["setsockopt"] += 1
        raise OSError("no socket options here")

    async def bind(self, address: Any) -> None:
        self._calls["bind"] += 1
        await self._inner.bind(address)

    def getsockname(self) -> Any:
        return self._inner.getsockname()

    @property
    def family(self) -> socket.AddressFamily:
        return self._inner.family

    async def sendto(self, *args: Any) -> int:
        self._calls["sendto"] += 1
        return await self._inner.sendto(*args)

    async def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        self._calls["recvfrom"] += 1
        if self._fail_receive:
            raise self._fail_receive.pop()
        return await self._inner.recvfrom(bufsize, flags)

    def close(self) -> None:
        self._calls["close"] += 1
        self._inner.close()

    def __enter__(self) -> RecordingSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RecordingFactory(trio.abc.SocketFactory):
    def __init__(self, socket_class: type[RecordingSocket] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_receive: list[BaseException] = []
        self._socket_class = socket_class or RecordingSocket

    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        return self._socket_class(family, self.calls, self.fail_receive)


@contextmanager
def installed(factory: trio.abc.SocketFactory) -> Iterator[None]:
    """``factory`` makes this run's trio sockets for the block."""
    previous = trio.socket.set_custom_socket_factory(factory)
    try:
        yield
    finally:
        trio.socket.set_custom_socket_factory(previous)


async def test_every_send_and_receive_goes_through_the_trio_socket() -> None:
    async with run_responders(3, KEY, answer_ping(serial=4)) as responders:
        factory = RecordingFactory()
        with installed(factory):
            async with open_confd_client(KEY, [r.address for r in responders]) as client:
                for _ in range(5):
                    result = await client.query(RequestType.PING, coverage=-1, timeout=5)
                    assert result.ok
                    assert result.serial == 4
                # Kernel extras degrade gracefully on a socket without them.
                assert client.socket_drops() is None
                await settle(lambda: client.stats.received == 15)
    calls = factory.calls
    assert calls["bind"] == 1
    assert calls["sendto"] == 15  # 5 queries to 3 peers, nothing sent around the socket
    assert calls["recvfrom"] >= 15  # every reply came through it
    # The large buffer and the ICMP error queue were asked for, refused, done without.
    assert calls["setsockopt"] == 2
    # Asked once at the start (whether the kernel can say the socket holds
    # unread datagrams) and once by socket_drops(); refused both times.
    assert calls["fileno"] == 2
    assert calls["close"] == 1


def test_no_task_of_the_client_is_parked_by_hand() -> None:
    # The shape: a query waits for its replies on a memory channel, for a
    # place on a trio.Event, under a cancel scope; none is parked with Trio's
    # low-level wait (wait_task_rescheduled) and rescheduled by hand.
    by_hand = {"wait_task_rescheduled", "reschedule", "temporarily_detach_coroutine_object"}
    package = Path(trioconfd.__file__).parent
    found = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in by_hand:
                found.append(f"{source.relative_to(package)}:{getattr(node, 'lineno', 0)} {name}")
    assert found == []


async def test_infinite_timeout_then_finite_ones_all_end_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        run_responders(3, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        async with trio.open_nursery() as nursery:
            forever_started = trio.Event()

            async def forever() -> None:
                forever_started.set()
                await client.query(RequestType.PING, timeout=math.inf)

            nursery.start_soon(forever)
            await forever_started.wait()
            for timeout in (0.05, 0.5, 1, 2.5, 0):
                start = trio.current_time()
                result = await client.query(RequestType.PING, timeout=timeout)
                assert result.timed_out
                assert trio.current_time() - start == pytest.approx(timeout)
            await trio.sleep(100)
            assert client.outstanding == 1  # the query that never times out is still there
            nursery.cancel_scope.cancel()
        assert client.outstanding == 0


@pytest.mark.parametrize(
    ("bad", "error", "shown"),
    [
        (math.nan, ConfdArgumentError, "nan"),
        (-1, ConfdArgumentError, "-1"),
        (-math.inf, ConfdArgumentError, "-inf"),
        (10**400, ConfdArgumentError, "an integer of 1,329 bits, beyond a float.s range"),
        (-(10**5000), ConfdArgumentError, "an integer of 16,610 bits"),
        ("5", ConfdArgumentTypeError, "'5'"),
        (True, ConfdArgumentTypeError, "True"),
        ([5], ConfdArgumentTypeError, r"\[5\]"),
    ],
    ids=["nan", "-1", "-inf", "10**400", "-10**5000", "str", "bool", "list"],
)
async def test_bad_timeouts_are_refused(bad: Any, error: type[Exception], shown: str) -> None:
    message = f"timeout must be a number of seconds >= 0 .*, not {shown}"
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        with pytest.raises(error, match=message) as refused:
            await client.query(RequestType.PING, timeout=bad)
        assert type(refused.value) is error
        with pytest.raises(error, match=message):
            async with client.request(RequestType.PING, timeout=bad):
                pass  # pragma: no cover
        with pytest.raises(error, match=message):
            await client.wait_for_reply("salt", timeout=bad)
        with pytest.raises(error, match=message):
            client.watch(RequestType.PING, timeout=bad)
        assert client.outstanding == 0


async def test_a_watch_refuses_at_once_what_its_queries_would() -> None:
    async with open_confd_client(KEY, ["127.0.0.1", "127.0.0.2"]) as client:
        with pytest.raises(ConfdArgumentError, match="coverage 3 asks for more peers"):
            client.watch(RequestType.PING, coverage=3)
        with pytest.raises(ConfdArgumentTypeError, match="coverage must be an integer"):
            client.watch(RequestType.PING, coverage=1.0)  # type: ignore[arg-type]
        with pytest.raises(ConfdArgumentTypeError, match="retry must be a RetryPolicy"):
            client.watch(RequestType.PING, retry=0.1)  # type: ignore[arg-type]
        with pytest.raises(ConfdArgumentError, match="unknown request type"):
            client.watch(99)
        with pytest.raises(ConfdArgumentError, match="either inside the ConfdRequest"):
            client.watch(ConfdRequest(RequestType.PING), "a query")


async def _calls_after_close(client: Any) -> list[Callable[[], Any]]:
    async def stream() -> None:
        async with client.request(RequestType.PING):
            pass  # pragma: no cover

    return [
        lambda: client.query(RequestType.PING),
        stream,
        lambda: client.send_request(ConfdRequest(RequestType.PING)),
        lambda: client.wait_for_reply("any salt"),
    ]


async def test_every_call_after_close_raises_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        peers = client.peers
    assert client.closed
    assert "closed" in repr(client)
    for call in await _calls_after_close(client):
        start = trio.current_time()
        with pytest.raises(ConfdClientClosedError, match="async with block has exited"):
            await call()
        assert trio.current_time() == start
    for sync_call in (
        lambda: client.update_peer_list(["127.0.0.2"]),
        client.expire_requests,
        lambda: client.watch(RequestType.PING),
        client.socket_drops,
    ):
        with pytest.raises(ConfdClientClosedError, match="async with block has exited"):
            sync_call()
    assert client.peers == peers  # unchanged
    # Catchable as Trio's own error, and as ours.
    assert issubclass(ConfdClientClosedError, trio.ClosedResourceError)
    assert issubclass(ConfdClientClosedError, ConfdClientError)


async def test_queries_in_flight_end_at_once_when_the_client_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: list[str] = []
    # Nested on purpose: the client's block ends while the outer nursery runs on.
    async with run_responders(3, KEY, silent) as responders, trio.open_nursery() as outer:  # noqa: SIM117
        async with open_confd_client(KEY, [r.address for r in responders]) as client:

            async def expect_closed(call: Callable[[], Any], name: str) -> None:
                with pytest.raises(ConfdClientClosedError):
                    await call()
                outcomes.append(f"{name} at {trio.current_time() - start:g}")

            async def stream() -> None:
                async with client.request(RequestType.PING, timeout=60) as replies:
                    async for _ in replies:
                        pass  # pragma: no cover

            async def send_and_wait() -> None:
                request = ConfdRequest(RequestType.PING)
                await client.send_request(request)
                await client.wait_for_reply(request.rsalt, timeout=60)

            start = trio.current_time()
            outer.start_soon(expect_closed, lambda: client.query(0, timeout=60), "query")
            outer.start_soon(expect_closed, stream, "stream")
            outer.start_soon(expect_closed, send_and_wait, "wait")
            await trio.sleep(1)  # all three are waiting, retransmitting to silent peers
            assert client.outstanding == 3
            # The block has exited: they end now, not at their 60 s deadlines.
    assert sorted(outcomes) == ["query at 1", "stream at 1", "wait at 1"]
    assert client.outstanding == 0


async def test_a_dead_receive_task_closes_the_client() -> None:
    async with run_responders(2, KEY, silent) as responders:
        factory = RecordingFactory()
        waiting: list[BaseException] = []
        with installed(factory):
            async with trio.open_nursery() as outer:

                async def wait_in_flight(client: Any) -> None:
                    try:
                        await client.query(RequestType.PING, timeout=60)
                    except ConfdClientBrokenError as exc:
                        waiting.append(exc)

                # The receive task's own failure surfaces from the client's block,
                # unwrapped: it is the one failure there.
                with pytest.raises(RuntimeError, match="a bug in the socket"):  # noqa: PT012
                    async with open_confd_client(KEY, [r.address for r in responders]) as client:
                        outer.start_soon(wait_in_flight, client)
                        await settle(lambda: client.outstanding == 1)
                        factory.fail_receive.append(RuntimeError("a bug in the socket"))
                        # Wake the receive task so that its next read fails.
                        await responders[0].sock.sendto(b"x", client.local_address[:2])
                        await trio.sleep_forever()
    assert len(waiting) == 1
    assert "receive task has stopped" in str(waiting[0])
    assert isinstance(waiting[0], trio.BrokenResourceError)
    assert isinstance(waiting[0].__cause__, RuntimeError)
    assert client.closed
    with pytest.raises(ConfdClientBrokenError, match="receive task has stopped"):
        await client.query(RequestType.PING)


async def test_ten_thousand_queries_leave_nothing_behind() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=1)) as responders,
        # No retransmission: on a loaded machine a resend's second reply
        # would count as a duplicate, and this test is about what stays.
        open_confd_client(KEY, [r.address for r in responders], retry=RetryPolicy.off()) as client,
    ):
        done = 0

        async def worker() -> None:
            nonlocal done
            for _ in range(200):
                # One peer of the three each time: the client's work, not the responders'.
                assert (await client.query(RequestType.PING, coverage=1, timeout=5)).ok
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(worker)
        assert done == 10_000
        router = client._router
        assert client.outstanding == 0
        assert router.table == {}
        assert client._sent_requests._pending == {}
        # The channel pool is bounded by what was in flight at once, not by
        # how many queries ran.
        assert sum(len(pairs) for pairs in router.channels._spare.values()) <= 50
        assert client.stats.accepted == client.stats.received == 10_000


async def test_queries_with_retries_and_hedges_keep_their_exact_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sends: list[tuple[float, int]] = []
    async with run_responders(4, KEY, silent) as responders:
        start = 0.0

        def record(request: ConfdRequest, index: int) -> None:
            sends.append((round(trio.current_time() - start, 6), index))

        for responder in responders:
            responder.handler = record
        policy = RetryPolicy(initial=0.1, multiplier=2, max_interval=0.4, hedge_after=0.3)
        async with open_confd_client(KEY, [r.address for r in responders], retry=policy) as client:
            start = trio.current_time()
            result = await client.query(RequestType.PING, coverage=2, timeout=1)
            assert result.timed_out
            assert trio.current_time() - start == pytest.approx(1)
    by_peer: dict[int, list[float]] = {}
    for when, index in sends:
        by_peer.setdefault(index, []).append(when)
    first_asked = sorted(by_peer.values())
    # Each peer on its own schedule: the sample at 0, 0.1, 0.3 (+0.2), 0.7
    # (+0.4); a hedge at 0.3 (hedging is due), asked again 0.1 and 0.2 later;
    # another at 0.7 (a max_interval on); what falls due at 1.0 is too late.
    assert first_asked == [[0, 0.1, 0.3, 0.7], [0, 0.1, 0.3, 0.7], [0.3, 0.4, 0.6], [0.7, 0.8]]
    assert result.sent == 4


async def test_a_stream_used_after_its_block_refuses_and_steals_nothing() -> None:
    async with (
        run_responders(2, KEY, answer_ping(serial=3)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        async with client.request(RequestType.PING, coverage=-1, timeout=5) as kept:
            pass
        with pytest.raises(ConfdClientError, match="its async with block has exited"):
            await kept.__anext__()
        # Its channel went back to the pool and serves the next query alone.
        assert (await client.query(RequestType.PING, coverage=-1, timeout=5)).received == 2

        # A stream read by another task while its block exits ends that read.
        for r in responders:
            r.handler = silent
        errors: list[BaseException] = []

        async def read(replies: Any) -> None:
            try:
                async for _ in replies:
                    pass  # pragma: no cover
            except ConfdClientError as exc:
                errors.append(exc)

        async with (
            trio.open_nursery() as nursery,
            client.request(RequestType.PING, coverage=-1, timeout=5) as replies,
        ):
            nursery.start_soon(read, replies)
            await trio.sleep(0.05)
        assert len(errors) == 1
        assert client.outstanding == 0
        for r in responders:
            r.handler = answer_ping(serial=4)
        result = await client.query(RequestType.PING, coverage=-1, timeout=5)
        assert (result.received, result.serial) == (2, 4)


async def test_a_socket_that_keeps_failing_does_not_hog_the_loop() -> None:
    async with run_responders(2, KEY, answer_ping(serial=2)) as responders:
        factory = RecordingFactory()
        with installed(factory):
            async with open_confd_client(KEY, [r.address for r in responders]) as client:
                ticks = 0
                unreachable = OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
                factory.fail_receive.extend(unreachable for _ in range(200))
                while factory.fail_receive:  # the receive task works through them...
                    ticks += 1
                    await trio.lowlevel.checkpoint()
                # ...and lets this task run between every few (each of the
                # receive tasks takes one).
                assert ticks >= 0.75 * 200 / RECEIVE_TASKS
                assert client.stats.socket_errors == 200
                assert (await client.query(RequestType.PING, coverage=-1, timeout=5)).ok


def _raises(peers: int) -> int:
    raise ZeroDivisionError("a bug in the rule")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            _raises,
            r"quorum rule _raises raised ZeroDivisionError\('a bug in the rule'\) for 3 peers",
        ),
        (lambda peers: 0, "gave 0 for 3 peers; it must give a whole number from 1 to 3"),
        (lambda peers: peers + 1, "gave 4 for 3 peers"),
        (lambda peers: "2", "gave '2' for 3 peers"),
        (lambda peers: True, "gave True for 3 peers"),
    ],
)
async def test_a_bad_quorum_rule_is_named_and_leaves_nothing_behind(
    rule: Any, message: str
) -> None:
    async with (
        run_responders(3, KEY, answer_ping()) as responders,
        open_confd_client(KEY, [r.address for r in responders], quorum=rule) as client,
    ):
        with pytest.raises(ConfdClientError, match=message):
            await client.query(RequestType.PING, coverage=-1)
        with pytest.raises(ConfdClientError, match=message):
            async with client.request(RequestType.PING, coverage=-1):
                pass  # pragma: no cover
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request, coverage=-1)
        with pytest.raises(ConfdClientError, match=message):
            await client.wait_for_reply(request.rsalt, timeout=1)
        assert client.outstanding == 1  # only the send_request one, until it expires
        assert client.stats.accepted <= 3


async def test_a_second_reader_of_an_ended_stream_steals_no_later_reply() -> None:
    # Two tasks read one stream; one gives up, then the block exits while the
    # other still waits. That reader must be told at once that the request
    # ended, and the channel must not serve the next query under its feet.
    slow_retry = RetryPolicy(initial=5, max_interval=5)
    async with (
        run_responders(2, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders], retry=slow_retry) as client,
    ):
        outcomes: list[BaseException | None] = []
        stolen: list[object] = []

        async def read(replies: Any) -> None:
            try:
                async for peer_reply in replies:
                    stolen.append(peer_reply)
                outcomes.append(None)
            except trio.ClosedResourceError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as readers:
            async with client.request(RequestType.PING, coverage=-1, timeout=5) as replies:
                readers.start_soon(read, replies)  # one reader waits...
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(0.05):
                    await replies.__anext__()  # ...another gives up
            await trio.testing.wait_all_tasks_blocked()
            # The block has exited: the waiting reader has ended already.
            assert len(outcomes) == 1
            for r in responders:
                r.handler = answer_ping(serial=6)
            result = await client.query(RequestType.PING, coverage=-1, timeout=5)
        assert stolen == []
        assert isinstance(outcomes[0], ConfdClientError)
        assert "has ended" in str(outcomes[0])
        assert (result.received, result.serial) == (2, 6)


class FullBufferSocket(RecordingSocket):
    """A socket whose send buffer is full until ``drained`` is set; as a real trio
    socket does, it refuses a second task's send while one waits to send."""

    drained = trio.Event()
    busy = False

    async def sendto(self, *args: Any) -> int:
        cls = FullBufferSocket
        if cls.busy:
            raise trio.BusyResourceError("another task is using this socket")
        if not cls.drained.is_set():
            cls.busy = True
            try:
                await cls.drained.wait()
            finally:
                cls.busy = False
        return await super().sendto(*args)


async def test_concurrent_sends_wait_their_turn_when_the_send_buffer_is_full() -> None:
    FullBufferSocket.drained = trio.Event()
    async with run_responders(2, KEY, answer_ping(serial=8)) as responders:
        with installed(RecordingFactory(FullBufferSocket)):
            async with (
                open_confd_client(KEY, [r.address for r in responders]) as client,
                trio.open_nursery() as nursery,
            ):
                results: list[Any] = []

                async def ask() -> None:
                    results.append(await client.query(RequestType.PING, coverage=-1, timeout=5))

                for _ in range(3):
                    nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                FullBufferSocket.drained.set()
    assert [(result.ok, result.serial) for result in results] == [(True, 8)] * 3


async def test_a_socket_error_that_is_no_unreachable_peer_closes_the_client_with_it() -> None:
    async with run_responders(1, KEY, answer_ping(serial=2)) as responders:
        factory = RecordingFactory()
        with installed(factory), pytest.raises(OSError, match="Invalid argument"):  # noqa: PT012
            async with open_confd_client(KEY, [r.address for r in responders]) as client:
                factory.fail_receive.append(OSError(errno.EINVAL, os.strerror(errno.EINVAL)))
                await responders[0].sock.sendto(b"wake", client.local_address[:2])
                await trio.sleep(5)  # (a swallowed error: the test fails after this)
    assert client.closed
    with pytest.raises(ConfdClientBrokenError, match=r"the socket failed: .*Invalid argument"):
        await client.query(RequestType.PING)


@pytest.mark.parametrize("server_side", ["open_confd_server", "open_fault_proxy"])
async def test_the_servers_read_on_past_an_unreachable_peer_and_stop_on_other_errors(
    server_side: str,
) -> None:
    config = make_cluster_config(nodes=3)
    factory = RecordingFactory()
    refused = OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    invalid = OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    async with open_confd_server(config, KEY) as upstream:
        with installed(factory):
            opened: contextlib.AbstractAsyncContextManager[ConfdServer | FaultProxy]
            if server_side == "open_confd_server":
                opened = open_confd_server(config, KEY)
            else:
                opened = open_fault_proxy(upstream.address)
            with pytest.raises(OSError, match="Invalid argument"):  # noqa: PT012
                async with opened as server:
                    factory.fail_receive.append(refused)
                    async with open_confd_client(KEY, [server.address]) as client:
                        result = await client.query(RequestType.PING, timeout=5)
                        assert result.ok  # served on past the refusal
                        factory.fail_receive.append(invalid)
                        await client.query(RequestType.PING, timeout=0.5)
                    await trio.sleep(5)  # (a swallowed error: the test fails after this)


def test_errors_are_builtin_kinds_and_print_with_public_names() -> None:
    import traceback

    with pytest.raises(ValueError, match="MasterField") as value_error:
        trioconfd.requests.cluster_master(fields=["no such field"])  # type: ignore[list-item]
    assert isinstance(value_error.value, ConfdClientError)
    with pytest.raises(TypeError, match="query must be") as type_error:
        ConfdRequest(RequestType.PING, 3)  # type: ignore[arg-type]
    assert isinstance(type_error.value, ConfdClientError)
    shown = "".join(traceback.format_exception_only(type_error.value))
    assert shown.startswith("trioconfd.ConfdArgument")
    for name in trioconfd.__all__:
        value = getattr(trioconfd, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "trioconfd", name
            assert "trioconfd." + name == f"{value.__module__}.{value.__qualname__}"


async def test_every_public_async_call_checkpoints_even_when_it_has_nothing_to_wait_for() -> None:
    async with (
        run_responders(2, KEY, answer_ping(serial=1)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        with trio.testing.assert_checkpoints():
            await client.query(RequestType.PING, coverage=-1, timeout=5)
        with trio.testing.assert_checkpoints():
            await client.query(RequestType.PING, timeout=0)  # nothing to wait for
        async with client.request(RequestType.PING, coverage=-1, timeout=5) as replies:
            async for _ in replies:
                pass
            # An ended stream still checkpoints.
            with trio.testing.assert_checkpoints(), pytest.raises(StopAsyncIteration):
                await replies.__anext__()
        request = ConfdRequest(RequestType.PING)
        with trio.testing.assert_checkpoints():
            await client.send_request(request, coverage=-1)
        with trio.testing.assert_checkpoints():
            await client.wait_for_reply(request.rsalt, timeout=5)
        with trio.testing.assert_checkpoints():
            assert await client.wait_for_reply("no such salt", timeout=5) == (True, 0, 0)
        with trio.testing.assert_checkpoints():
            assert (
                await trioconfd.query(KEY, [r.address for r in responders], RequestType.PING)
            ).ok


async def test_a_stream_read_after_its_block_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        run_responders(2, KEY, silent) as responders,
        open_confd_client(
            KEY, [r.address for r in responders], retry=RetryPolicy(adaptive=False)
        ) as client,
    ):
        async with client.request(RequestType.PING, coverage=-1, timeout=5) as kept:
            pass
        await trio.sleep(1)  # well past its retransmission times
        with pytest.raises(ConfdRequestEndedError):
            await kept.__anext__()
        await settle(lambda: True)
        assert client.stats.retransmitted == 0
        assert sum(len(r.requests) for r in responders) == 2  # the first send only


class _ReadsPerBatch(trio.abc.Instrument):
    """The most datagrams the client read in one scheduler batch."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.last = 0
        self.most = 0

    def after_io_wait(self, timeout: float) -> None:
        received = self.stats.received
        self.most = max(self.most, received - self.last)
        self.last = received


async def test_replies_that_piled_up_are_read_several_a_batch() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=1)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        counter = _ReadsPerBatch(client.stats)
        trio.lowlevel.add_instrument(counter)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(partial(client.query, RequestType.PING, coverage=-1))
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert client.stats.accepted >= 400
        # One receive task reads one datagram a batch (trio.socket yields
        # after each); the client's take turns, and read several.
        assert 1 < counter.most <= RECEIVE_TASKS


async def test_the_client_makes_one_socket_and_reads_its_errors_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # All of the client's I/O goes through its trio.socket (the simulated
    # network plugs in there): the ICMP errors queued for it are read with
    # that socket's recvmsg, not through a second, stdlib socket on its file.
    made: list[object] = []

    class Counted(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()
    monkeypatch.setattr(socket, "socket", Counted)
    async with open_confd_client(KEY, [nobody]) as client:
        result = await client.query(RequestType.PING, timeout=0.3)
        assert client._router.error_queue is not None  # Linux: the queue is read
    assert result.unreachable == ((nobody, "port unreachable"),)
    assert len(made) == 1  # the trio.socket's own


async def test_an_error_read_from_a_stamped_socket_is_one_error() -> None:
    # With arrival stamps on, each error read from the queue comes with a
    # stamp too: only the error's own message is an error (the stamp's
    # seconds were once taken for an errno).
    from trioconfd._udp import ErrorQueue, ask_for_arrival_stamps

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        queue = ErrorQueue.attach(sock)
        assert queue is not None
        assert ask_for_arrival_stamps(sock)
        await sock.sendto(b"to nobody", nobody)
        await trio.sleep(0.05)  # the ICMP error, queued
        assert await queue.drain() == [(nobody, errno.ECONNREFUSED)]


async def test_a_retransmission_that_failed_to_send_is_no_copy_a_reply_answers() -> None:
    # The second send fails (EPERM, as a firewall says it): the reply at
    # 0.15 s answers the one copy that went, a round trip of 0.15 s. Counted
    # as sent, the failed copy would leave it 0.05 s after the last.
    class FailsItsSecondSend(RecordingSocket):
        async def sendto(self, *args: Any) -> int:
            self._calls["sendto"] += 1
            if self._calls["sendto"] == 2:
                raise OSError(errno.EPERM, os.strerror(errno.EPERM))
            return await self._inner.sendto(*args)

    async with run_responders(1, KEY, answer_ping(serial=1)) as responders:
        responders[0].delay = 0.15
        factory = RecordingFactory(FailsItsSecondSend)
        with installed(factory):
            async with open_confd_client(
                KEY,
                [responders[0].address],
                retry=RetryPolicy(adaptive=True, hedge_after=None),
            ) as client:
                result = await client.query(RequestType.PING, timeout=2)
                assert result.ok
                assert client.stats.send_errors == 1
                assert factory.calls["sendto"] == 2
                srtt = client._router.rtt[responders[0].address].srtt
                assert srtt is not None
                assert srtt >= 0.14


async def test_a_stream_read_late_learns_the_round_trip_of_its_replies_not_the_wait() -> None:
    # The reply comes at once; the stream is read 0.3 s later. The peer's
    # round-trip estimate (shared by every query to it) learns the first.
    async with (
        run_responders(1, KEY, answer_ping(serial=1)) as responders,
        open_confd_client(
            KEY,
            [responders[0].address],
            retry=RetryPolicy(adaptive=True, hedge_after=None),
        ) as client,
    ):
        async with client.request(RequestType.PING, timeout=2) as replies:
            await trio.sleep(0.3)
            got = [peer_reply async for peer_reply in replies]
        assert len(got) == 1
        srtt = client._router.rtt[responders[0].address].srtt
        assert srtt is not None
        assert srtt < 0.1


def _set_on_upcall(event: trio.Event, upcall: object) -> None:
    event.set()


async def test_a_stream_left_as_a_second_reader_is_handed_its_reply_closes_cleanly() -> None:
    # The receive task hands the reply straight to a reader task parked on
    # the channel; the owner, woken by the same reply (the callback),
    # leaves its block before that reader runs. The channel holds nothing
    # to drain: closing must not raise trio.WouldBlock.
    for _ in range(20):
        delivered = trio.Event()
        async with (
            run_responders(1, KEY, answer_ping(serial=1)) as responders,
            open_confd_client(
                KEY, [responders[0].address], callback=partial(_set_on_upcall, delivered)
            ) as client,
            trio.open_nursery() as nursery,
        ):

            async def read(replies: Any) -> None:
                with contextlib.suppress(ConfdRequestEndedError):  # it ended meanwhile
                    async for _ in replies:
                        pass

            async with client.request(RequestType.PING, timeout=2) as replies:
                nursery.start_soon(read, replies)
                await delivered.wait()
            assert client.outstanding == 0


async def test_a_stream_left_unread_after_its_reply_came_cuts_no_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The peer answered at once; the stream, never read, ends at its
    # deadline. Its peer is neither silent nor lost: its window is not cut.
    async with (
        open_simulated_cluster([make_cluster_config(nodes=3)], KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        async with client.request(RequestType.PING, timeout=0.3):
            await trio.sleep(0.4)
        window = client._router.admission.windows[cluster.peers[0]].window
        assert (window.size, window.in_use) == (64, 0)
        assert not client._router.admission.windows[cluster.peers[0]].silent


async def test_a_stream_reader_woken_with_a_copy_refused_as_the_stream_ends_reads_no_further() -> (
    None
):
    # A second task reading a stream is handed a copy "from" a peer, and
    # before it runs the copy is refused (that peer's hedge never went) and
    # the stream ends, its channel back in the pool: dropping the copy, the
    # reader must not wait on, on a channel that may be another request's.
    async with run_responders(2, KEY, silent) as responders:
        peers = [responder.address for responder in responders]
        async with open_confd_client(KEY, peers) as client:
            outcome: list[BaseException | PeerReply | None] = []
            async with trio.open_nursery() as nursery:
                async with client.request(RequestType.PING, coverage=-1, timeout=5) as replies:
                    in_flight = replies._exchange

                    async def read() -> None:
                        try:
                            outcome.append(await in_flight.receive())
                        except ConfdRequestEndedError as exc:
                            outcome.append(exc)

                    nursery.start_soon(read)
                    await trio.testing.wait_all_tasks_blocked()
                    peer = peers[1]
                    # As the receive task accepts a copy "from" it ...
                    in_flight.answered = with_answered(in_flight.answered, peer)
                    in_flight.deliver(PeerReply(peer, ConfdReply(ReplyStatus.OK, "copy", 1)))
                    in_flight._refuse([peer])  # ... then refused, in the same step
                # the stream ends, its channel back in the pool, the reader not run yet
                with trio.fail_after(1):
                    await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert len(outcome) == 1
            assert isinstance(outcome[0], ConfdRequestEndedError)


async def test_copies_refused_in_a_stream_leave_its_channel_before_it_sends_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each time the reader's own scope cuts a send short after a copy "from"
    # its peer was accepted, a refused copy stays in the channel. Left
    # there while the stream sends again (its reader cut short in the send
    # each time), a few fill the channel (room for one reply a peer), and
    # the next reply would not fit: the receive task's send_nowait would
    # raise. The stream reads them out before it sends.
    async with run_responders(2, KEY, silent) as responders:
        peers = [responder.address for responder in responders]
        async with (
            open_confd_client(KEY, peers) as client,
            client.request(RequestType.PING, coverage=-1, timeout=60) as replies,
        ):
            in_flight = replies._exchange
            peer = peers[1]
            for _ in range(2):  # as many as the channel holds
                in_flight.answered = with_answered(in_flight.answered, peer)
                in_flight.deliver(PeerReply(peer, ConfdReply(ReplyStatus.OK, "copy", 1)))
                in_flight._refuse([peer])
            assert in_flight.received.statistics().current_buffer_used == 2
            sock_type = type(client._router.socket)
            sendto = sock_type.sendto

            async def full_buffer(self: Any, *args: Any) -> Any:
                await trio.sleep(10)  # each send waits (a full send buffer)
                return await sendto(self, *args)

            monkeypatch.setattr(sock_type, "sendto", full_buffer)
            await trio.sleep(1)  # past the first retransmission time: a send is due
            with trio.move_on_after(1):  # the reader's own scope, cut in the send
                await replies.__anext__()
            assert in_flight.received.statistics().current_buffer_used == 0
            monkeypatch.setattr(sock_type, "sendto", sendto)
            genuine = PeerReply(peer, ConfdReply(ReplyStatus.OK, "real", 2))
            in_flight.answered = with_answered(in_flight.answered, peer)
            in_flight.deliver(genuine)  # as the receive task would: it fits
            assert await replies.__anext__() == genuine
            assert client.stats.unexpected_peer == 2
