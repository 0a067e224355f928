"""Ganeti's own confd client, timed. Runs under the system Python with Debian's ganeti-3.0.

    /usr/bin/python3 benchmarks/ganeti_client.py PORT KEY_FILE SEQUENTIAL PIPELINED

Prints one JSON object: sequential latencies (seconds) and pipelined throughput.
Standalone on purpose: it imports nothing from trioconfd.
"""

import json
import sys
import time

sys.path.insert(0, "/usr/share/ganeti/3.0")

from ganeti import constants
from ganeti.confd import client as confd_client


def main():  # type: ignore[no-untyped-def]
    port, key_file = int(sys.argv[1]), sys.argv[2]
    sequential, pipelined = int(sys.argv[3]), int(sys.argv[4])
    with open(key_file) as handle:
        key = handle.read()  # Ganeti reads the key as text
    replies = {}

    def count(upcall):
        if upcall.type == confd_client.UPCALL_REPLY:
            replies[upcall.salt] = replies.get(upcall.salt, 0) + 1

    client = confd_client.ConfdClient(key, ["127.0.0.1"], count, port=port)

    def new_request():
        return confd_client.ConfdClientRequest(type=constants.CONFD_REQ_CLUSTER_MASTER)

    for _ in range(max(1, sequential // 10)):  # warm up
        request = new_request()
        client.SendRequest(request, async_=False)
        client.WaitForReply(request.rsalt)

    latencies, timeouts = [], 0
    for _ in range(sequential):
        start = time.perf_counter()
        request = new_request()
        client.SendRequest(request, async_=False)
        timed_out, _, _ = client.WaitForReply(request.rsalt)
        if timed_out:
            timeouts += 1
        else:
            latencies.append(time.perf_counter() - start)

    # Its best throughput: 64 requests sent at once, then replies read until
    # each has one (the asyncore-style use the API allows).
    window, done, lost = 64, 0, 0
    start = time.perf_counter()
    while done + lost < pipelined:
        batch = [new_request() for _ in range(min(window, pipelined - done - lost))]
        for request in batch:
            client.SendRequest(request, async_=True)
        client.FlushSendQueue()
        waiting = {request.rsalt for request in batch}
        while waiting:
            if not client.ReceiveReply(timeout=1):
                lost += len(waiting)
                break
            answered = {salt for salt in waiting if replies.get(salt)}
            done += len(answered)
            waiting -= answered
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "latencies": latencies,
                "timeouts": timeouts,
                "pipelined_per_second": done / elapsed,
                "pipelined_timeouts": lost,
            }
        )
    )


main()
