#!/usr/bin/env python3
"""Runs one all-reduce bucket in SimGrid, an independent simulator, for topolab's cross-check.

Reads JSON on stdin:
  {"resources": [capacity in bytes/s, ...], "latency": seconds,
   "links": [[{"path": [resource index, ...], "latency": true|false} or null, x2] per rank],
   "messages": [[{"to": rank, "slot": 0|1, "bytes": n, "needs": [a, b]}, ...] per rank]}
Rank i sends its messages in order, each over its link `slot`, once it has received `needs[s]`
messages over each of its predecessors' links `s` and its own previous message on that link
has arrived (one connection, in order). Each resource becomes a link of that bandwidth and no
latency; a link that crosses NICs also crosses a latency link of unlimited bandwidth. SimGrid
runs with its plain max-min model (CM02), every TCP correction off. Prints when the last
rank has received its last message, in seconds, as JSON.
"""
import json
import sys

import plain
from simgrid import Actor, Engine, Mailbox


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
            to = next(m["to"] for m in spec["messages"][i] if m["slot"] == slot)
            ctn = "".join(f'<link_ctn id="r{r}"/>' for r in link["path"])
            if link["latency"]:
                ctn += '<link_ctn id="lat"/>'
            assert (i, to) not in routes, "one route per pair of ranks"
            routes[(i, to)] = ctn
    for (i, to), ctn in routes.items():
        lines.append(f'<route src="h{i}" dst="h{to}" symmetrical="NO">{ctn}</route>')
    lines += ["</zone>", "</platform>"]
    return "\n".join(lines)


def main():
    spec = json.load(sys.stdin)
    n = len(spec["links"])
    done = [0.0] * n
    e = plain.engine("collective", platform(spec))

    def rank(i):
        inbox = [Mailbox.by_name(f"m{i}.{s}") for s in range(2)]
        for mb in inbox:
            mb.set_receiver(Actor.self())
        got = [0, 0]
        previous = [None, None]

        def receive(slot, count):
            while got[slot] < count:
                inbox[slot].get()
                got[slot] += 1

        for m in spec["messages"][i]:
            for slot in range(2):
                receive(slot, m["needs"][slot])
            if previous[m["slot"]] is not None:
                previous[m["slot"]].wait()
            out = Mailbox.by_name(f"m{m['to']}.{m['slot']}")
            previous[m["slot"]] = out.put_async(0, int(m["bytes"]))
        for slot in range(2):
            receive(slot, spec["receives"][slot])
        for p in previous:
            if p is not None:
                p.wait()
        done[i] = Engine.clock

    for i in range(n):
        Actor.create(f"rank{i}", e.host_by_name(f"h{i}"), rank, i)
    e.run()
    json.dump(max(done), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
