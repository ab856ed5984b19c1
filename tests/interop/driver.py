"""A thoonk.py process that the Rust interop tests drive.

Reads one JSON command per line on stdin, runs it with thoonk.py (through
thoonk3), and writes one JSON line per reply on stdout: {"reply": value} or
{"error": "message"}. With --listen, thoonk.py's listener runs too and every
event it hears is written as {"event": name, ...} (interleaved with replies);
{"ready": true} is written first, once the listener's subscriptions stand.

Commands ({"op": ..., ...}):
  create      feed, type, config?        thoonk.<type>(feed, config)
  publish     feed, item, id?            Feed.publish -> id
  retract     feed, id                   Feed/SortedFeed.retract
  append      feed, item                 SortedFeed.append -> id
  prepend     feed, item                 SortedFeed.prepend -> id
  before      feed, rel, item            SortedFeed.publish_before -> id
  after       feed, rel, item            SortedFeed.publish_after -> id
  edit        feed, id, item             SortedFeed.edit
  move        feed, pos, id              SortedFeed.move (":end", "begin:", ":rel", "rel:")
  ids         feed                       get_ids
  items       feed                       get_all / get_items (a dict)
  put         queue, id, item            Job.put naming the job `id` (thoonk3.put_as)
  get         queue, timeout             Job.get -> [id, item, cancels] | null on timeout
  finish      queue, id, result          Job.finish
Environment: THOONK_REDIS_HOST, THOONK_REDIS_PORT, THOONK_REDIS_CLUSTER=1 for a
node of a Redis Cluster.
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import thoonk3  # noqa: E402
from thoonk.exceptions import Empty  # noqa: E402

_out = threading.Lock()


def emit(obj):
    line = json.dumps(obj)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def listen_to(t):
    def on(name, fields):
        def handler(*args):
            event = {"event": name}
            event.update(dict(zip(fields, args)))
            emit(event)
        t.register_handler(name, handler)

    on("publish", ["feed", "item", "id"])
    on("edit", ["feed", "item", "id"])
    on("retract", ["feed", "id"])
    on("position", ["feed", "id", "pos"])
    on("finish", ["feed", "id", "result"])
    on("create", ["feed"])
    on("delete", ["feed"])


def run(t, cmd):
    op = cmd["op"]
    if op == "create":
        getattr(t, cmd["type"])(cmd["feed"], cmd.get("config"))
        return None
    if op in ("put", "get", "finish"):
        job = t.job(cmd["queue"])
        if op == "put":
            return thoonk3.put_as(job, cmd["id"], cmd["item"])
        if op == "get":
            try:
                return list(job.get(timeout=cmd.get("timeout", 10)))
            except Empty:
                return None
        job.finish(cmd["id"], cmd["result"])
        return None
    feed = t._feeds[cmd["feed"]]
    if op == "publish":
        return feed.publish(cmd["item"], cmd.get("id"))
    if op == "retract":
        return feed.retract(cmd["id"])
    if op == "append":
        return str(feed.append(cmd["item"]))
    if op == "prepend":
        return str(feed.prepend(cmd["item"]))
    if op == "before":
        return str(feed.publish_before(cmd["rel"], cmd["item"]))
    if op == "after":
        return str(feed.publish_after(cmd["rel"], cmd["item"]))
    if op == "edit":
        return feed.edit(cmd["id"], cmd["item"])
    if op == "move":
        return feed.move(cmd["pos"], cmd["id"])
    if op == "ids":
        return list(feed.get_ids())
    if op == "items":
        return feed.get_items() if hasattr(feed, "get_items") else feed.get_all()
    raise ValueError("unknown op %r" % op)


def main():
    listen = "--listen" in sys.argv[1:]
    t = thoonk3.connect(listen=listen)
    if listen:
        listen_to(t)
    emit({"ready": True})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            emit({"reply": run(t, json.loads(line))})
        except Exception as err:  # reported to the test, which fails on it
            emit({"error": "%s: %s" % (type(err).__name__, err)})
    t.close()


if __name__ == "__main__":
    main()
