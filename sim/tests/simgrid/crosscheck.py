#!/usr/bin/env python3
"""Runs transfer patterns in SimGrid, an independent simulator, for topolab's cross-check.

Reads JSON on stdin:
  {"resources": [capacity in bytes/s, ...],
   "flows": [{"path": [resource index, ...], "bytes": n, "start": seconds}, ...]}
Each resource becomes a SimGrid link of that bandwidth and no latency; each flow gets a
sender and a receiver host of its own, routed over exactly its resources. SimGrid runs with
its plain max-min model (CM02) and every TCP correction off (bandwidth and latency factors 1,
no cross-traffic). Prints the completion time of every flow, in seconds, as a JSON list.
"""
import json
import sys

import plain
from simgrid import Actor, Comm, Engine, this_actor


def platform(spec):
    lines = [
        "<?xml version='1.0'?>",
        '<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">',
        '<platform version="4.1">',
        '<zone id="world" routing="Full">',
    ]
    for i, _ in enumerate(spec["flows"]):
        lines.append(f'<host id="s{i}" speed="1Gf"/><host id="d{i}" speed="1Gf"/>')
    for r, cap in enumerate(spec["resources"]):
        lines.append(f'<link id="r{r}" bandwidth="{cap!r}Bps" latency="0s"/>')
    for i, f in enumerate(spec["flows"]):
        links = "".join(f'<link_ctn id="r{r}"/>' for r in f["path"])
        lines.append(f'<route src="s{i}" dst="d{i}" symmetrical="NO">{links}</route>')
    lines += ["</zone>", "</platform>"]
    return "\n".join(lines)


def main():
    spec = json.load(sys.stdin)
    done = [None] * len(spec["flows"])
    e = plain.engine("crosscheck", platform(spec))

    def sender(i, f):
        if f["start"] > 0:
            this_actor.sleep_until(f["start"])
        Comm.sendto(e.host_by_name(f"s{i}"), e.host_by_name(f"d{i}"), int(f["bytes"]))
        done[i] = Engine.clock

    for i, f in enumerate(spec["flows"]):
        Actor.create(f"flow{i}", e.host_by_name(f"s{i}"), sender, i, f)
    e.run()
    json.dump(done, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
