"""The SimGrid engine both cross-check scripts use: the plain max-min model (CM02) with every
TCP correction off (bandwidth and latency factors 1, no cross-traffic), on a platform given as
XML text."""
import os
import tempfile

from simgrid import Engine


def engine(name, platform_xml):
    e = Engine([
        name,
        "--cfg=network/model:CM02",
        "--cfg=network/crosstraffic:0",
        "--cfg=network/latency-factor:1",
        "--cfg=network/bandwidth-factor:1",
        "--cfg=network/weight-S:0",
        "--cfg=maxmin/precision:1e-9",
        "--cfg=surf/precision:1e-9",
        "--log=root.thres:critical",
    ])
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as tmp:
        tmp.write(platform_xml)
    try:
        e.load_platform(tmp.name)
    finally:
        os.unlink(tmp.name)
    return e
