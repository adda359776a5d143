#!/usr/bin/env python3
"""Runs one ring all-reduce in SimGrid, an independent simulator, for topolab's cross-check.

Reads JSON on stdin:
  {"resources": [capacity in bytes/s, ...], "latency": seconds,
   "hops": [{"path": [resource index, ...], "latency": true|false}, ...],   # rank i -> i + 1
   "chunk": bytes, "rounds": n}
Rank i sends one chunk to rank i + 1 per round over hop i: round 0 at once, round k once it
has received round k - 1 and its own previous send has left (one connection, in order). Each
resource becomes a link of that bandwidth and no latency; a hop that crosses NICs also
crosses a latency link of unlimited bandwidth. SimGrid runs with its plain max-min model
(CM02), every TCP correction off. Prints when the last rank has received the last round, in
seconds, as JSON.
"""
import json
import sys

import plain
from simgrid import Actor, Engine, Mailbox


def platform(spec):
    n = len(spec["hops"])
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
    for i, hop in enumerate(spec["hops"]):
        links = "".join(f'<link_ctn id="r{r}"/>' for r in hop["path"])
        if hop["latency"]:
            links += '<link_ctn id="lat"/>'
        lines.append(f'<route src="h{i}" dst="h{(i + 1) % n}" symmetrical="NO">{links}</route>')
    lines += ["</zone>", "</platform>"]
    return "\n".join(lines)


def main():
    spec = json.load(sys.stdin)
    n = len(spec["hops"])
    done = [0.0] * n
    e = plain.engine("ring", platform(spec))

    def rank(i):
        inbox = Mailbox.by_name(f"m{i}")
        inbox.set_receiver(Actor.self())
        out = Mailbox.by_name(f"m{(i + 1) % n}")
        previous = None
        for k in range(spec["rounds"]):
            if k > 0:
                inbox.get()
            if previous is not None:
                previous.wait()
            previous = out.put_async(k, int(spec["chunk"]))
        inbox.get()
        previous.wait()
        done[i] = Engine.clock

    for i in range(n):
        Actor.create(f"rank{i}", e.host_by_name(f"h{i}"), rank, i)
    e.run()
    json.dump(max(done), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
