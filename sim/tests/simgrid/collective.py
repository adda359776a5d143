#!/usr/bin/env python3
"""Runs one all-reduce bucket in SimGrid, an independent simulator, for topolab's cross-check.

Reads JSON on stdin:
  {"resources": [capacity in bytes/s, ...], "latency": seconds,
   "links": [[{"path": [resource index, ...], "latency": true|false} or null, per slot] per rank],
   "streams": [[[{"to": rank, "slot": s, "in_slot": s, "bytes": n, "needs": [per slot]}, ...]
                per stream] per rank],
   "receives": [[messages received per incoming slot] per rank]}
Each stream of a rank sends its messages in order, each over its link `slot`, once the rank
has received `needs[s]` messages on each incoming link `s` and its own previous message on
that link has arrived (one connection, in order). Each resource becomes a link of that
bandwidth and no latency; a link that crosses NICs also crosses a latency link of unlimited
bandwidth. SimGrid runs with its plain max-min model (CM02), every TCP correction off. Prints
when the last rank has received its last message, in seconds, as JSON.
"""
import json
import sys

import plain
from simgrid import Actor, Engine, Mailbox, Semaphore


def platform(spec):
    n = len(spec["links"])
    lines = [
        "<?xml version='1.0'?>",
        '<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">',
        '<platform version="4.1">',
        '<zone id="world" routing="Full">',
    ]
    for i in range(n):
        lines.append(f'<host id="h{i}" speed="1Gf"/>')
    for r, cap in enumerate(spec["resources"]):
        lines.append(f'<link id="r{r}" bandwidth="{cap!r}Bps" latency="0s"/>')
    lines.append(f'<link id="lat" bandwidth="1e18Bps" latency="{spec["latency"]!r}s" sharing_policy="FATPIPE"/>')
    routes = {}
    for i, links in enumerate(spec["links"]):
        for slot, link in enumerate(links):
            if link is None:
                continue
            sends = [m for st in spec["streams"][i] for m in st if m["slot"] == slot]
            if not sends:
                continue
            ctn = "".join(f'<link_ctn id="r{r}"/>' for r in link["path"])
            if link["latency"]:
                ctn += '<link_ctn id="lat"/>'
            to = sends[0]["to"]
            # Two links between the same ranks (a parent in one tree, a child in the other)
            # take the same route.
            assert routes.get((i, to), ctn) == ctn, "one route per pair of ranks"
            routes[(i, to)] = ctn
    for (i, to), ctn in routes.items():
        lines.append(f'<route src="h{i}" dst="h{to}" symmetrical="NO">{ctn}</route>')
    lines += ["</zone>", "</platform>"]
    return "\n".join(lines)


def main():
    spec = json.load(sys.stdin)
    n = len(spec["links"])
    slots = len(spec["links"][0])
    finished = [0.0]
    got = [[0] * slots for _ in range(n)]
    wake = [[Semaphore(0) for _ in spec["streams"][i]] for i in range(n)]
    e = plain.engine("collective", platform(spec))

    def receiver(i, slot):
        inbox = Mailbox.by_name(f"m{i}.{slot}")
        inbox.set_receiver(Actor.self())
        for _ in range(spec["receives"][i][slot]):
            inbox.get()
            got[i][slot] += 1
            for w in wake[i]:
                w.release()
        finished[0] = max(finished[0], Engine.clock)

    def stream(i, st):
        # A link belongs to one stream: its previous send is this actor's to wait for.
        mine = {}
        for m in spec["streams"][i][st]:
            while any(got[i][s] < m["needs"][s] for s in range(slots)):
                wake[i][st].acquire()
            if m["slot"] in mine:
                mine[m["slot"]].wait()
            out = Mailbox.by_name(f"m{m['to']}.{m['in_slot']}")
            mine[m["slot"]] = out.put_async(0, int(m["bytes"]))
        for p in mine.values():
            p.wait()
        finished[0] = max(finished[0], Engine.clock)

    for i in range(n):
        host = e.host_by_name(f"h{i}")
        for slot in range(slots):
            if spec["receives"][i][slot] > 0:
                Actor.create(f"recv{i}.{slot}", host, receiver, i, slot)
        for st in range(len(spec["streams"][i])):
            Actor.create(f"rank{i}.{st}", host, stream, i, st)
    e.run()
    json.dump(finished[0], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
