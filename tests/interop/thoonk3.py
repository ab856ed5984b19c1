"""thoonk.py 1.0.1.0 under Python 3 with a current redis-py: import this
instead of `thoonk` (`from thoonk3 import Thoonk`).

thoonk.py was written for Python 2 and redis-py 2.4. fix_thoonk.py (run by
scripts/setup) fixes the lines that do not import under Python 3; this module
patches, at import time, what differs at run time. The Thoonk protocol that
thoonk.py speaks is left exactly as it is — seconds as `feed.ids` scores in
Feed.publish, sorted-feed edits announced on `feed.publish`, events sent after
the transaction — because those are what other processes must cope with.

1. Bytes: redis-py 3+ returns bytes unless asked to decode; thoonk.py compares
   and splits the replies and messages as text. `redis.StrictRedis` here
   decodes responses (UTF-8).
2. ZADD: thoonk.py calls redis-py 2.4's `zadd(key, **{member: score})`;
   redis-py 3+ takes `zadd(key, {member: score})`. Both are accepted here.
3. The listener's start-up (ThoonkListener.run): with redis-py 3+ the
   subscribe confirmations come through `listen()`, and the very first one,
   on the listener's own close channel, takes thoonk.py into its close branch
   (it compares only the channel name), which reads
   `PubSub.subscription_count`, gone from redis-py: the listener thread dies
   at start-up and hears nothing. And `ready` was set before Redis had
   confirmed the subscriptions, so events published right after
   `Thoonk(listen=True)` returned could be missed. The replacement run() subscribes to the same
   channels, sets `ready` only after Redis confirmed every subscription, and
   hands only real messages to thoonk.py's own `_handle_message`.
   (Unchanged classic behaviour: a feed created later is subscribed to only
   when its `newfeed` arrives, so its first events may be missed.)
4. Redis Cluster: with THOONK_REDIS_CLUSTER=1, thoonk.py gets redis-py's
   cluster client instead (`RedisCluster`, which routes each command and
   each same-slot transaction by its keys). thoonk.py keeps one feed's keys
   in one transaction, so with hash-tagged names (`{notes}`) it runs on a
   cluster unchanged; only `delete_feed`, whose transaction spans the
   registry and the feed, cannot.
5. `put_as(job, id, item)`: thoonk.py's Job.put names a job `uuid4().hex`,
   but a thoonk-sync job payload carries its own id; this runs thoonk.py's
   put with the id chosen by the caller.
"""

import os
import sys
import threading
import time

import redis
import redis.cluster

_zadd = redis.Redis.zadd


def _compat_zadd(self, name, *args, **kwargs):
    if args and isinstance(args[0], dict):
        return _zadd(self, name, *args, **kwargs)
    if args:  # redis-py 2.4 StrictRedis: zadd(key, score1, member1, ...)
        mapping = {args[i + 1]: args[i] for i in range(0, len(args), 2)}
        return _zadd(self, name, mapping)
    return _zadd(self, name, kwargs)


redis.Redis.zadd = _compat_zadd  # also redis.client.Pipeline, a subclass


class StrictRedis(redis.Redis):
    """redis.StrictRedis that returns text, as redis-py 2.4 did under Python 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("decode_responses", True)
        super().__init__(*args, **kwargs)


class ClusterStrictRedis(redis.cluster.RedisCluster):
    """A Redis Cluster client built the way thoonk.py builds StrictRedis
    (host, port, db) that returns text; `db` must be 0 on a cluster."""

    def __init__(self, host="localhost", port=6379, db=0, **kwargs):
        assert db == 0, "a Redis Cluster has only db 0"
        kwargs.setdefault("decode_responses", True)
        super().__init__(host=host, port=port, **kwargs)

    @property
    def connection_pool(self):
        """Thoonk.close() disconnects through the pool; a cluster client closes itself."""
        client = self
        return type("Pool", (), {"disconnect": staticmethod(client.close)})()


redis.cluster.RedisCluster.zadd = _compat_zadd  # also its ClusterPipeline
# thoonk.py queues its events' PUBLISH inside a feed's transaction. Redis
# Cluster runs that (PUBLISH has no key; the MULTI goes to the feed's node),
# but redis-py refuses keyless commands in a cluster pipeline: let PUBLISH
# through, keeping the transaction on the slot of its keyed commands.
redis.cluster.ClusterPipeline.publish = redis.Redis.publish
redis.cluster.ClusterPipeline.NO_SLOTS_COMMANDS = {"UNWATCH", "PUBLISH"}

redis.StrictRedis = (
    ClusterStrictRedis if os.environ.get("THOONK_REDIS_CLUSTER") == "1" else StrictRedis
)

import thoonk  # noqa: E402  (after the patches above)
from thoonk import pubsub as _pubsub  # noqa: E402
from thoonk.exceptions import FeedDoesNotExist  # noqa: E402
import thoonk.feeds.job as _job_module  # noqa: E402

Thoonk = thoonk.Thoonk

SUBSCRIBE_PATIENCE = 10.0


def _listener_run(self):
    self._pubsub = self.redis.pubsub()
    channels = [self._finish_channel, "newfeed", "delfeed", "conffeed"]
    for feed in self.redis.smembers("feeds"):
        try:
            channels.extend(self.thoonk._feeds[feed].get_channels())
        except FeedDoesNotExist:
            pass  # registered, but its config is not written yet
    channels = list(dict.fromkeys(channels))
    self._pubsub.subscribe(*channels)
    confirmed = 0
    deadline = time.monotonic() + SUBSCRIBE_PATIENCE
    while confirmed < len(channels):
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not confirm the listener's subscriptions")
        message = self._pubsub.get_message(timeout=1.0)
        if message and message["type"] == "subscribe":
            confirmed += 1
    self.ready.set()
    for event in self._pubsub.listen():
        if event["type"] != "message":
            continue
        if event["channel"] == self._finish_channel:
            self._pubsub.unsubscribe()
            continue
        self._handle_message(event["channel"], event["data"])
    self.finished.set()


_pubsub.ThoonkListener.run = _listener_run


class _FixedUuid:
    def __init__(self, hex_id):
        self.hex = hex_id


_put_lock = threading.Lock()


def put_as(job, job_id, item, priority=False):
    """thoonk.py's Job.put(item, priority), naming the job `job_id`."""
    with _put_lock:
        real = _job_module.uuid
        _job_module.uuid = type("uuid", (), {"uuid4": staticmethod(lambda: _FixedUuid(job_id))})
        try:
            return job.put(item, priority)
        finally:
            _job_module.uuid = real


def connect(listen=False):
    """A Thoonk on the Redis named by THOONK_REDIS_HOST / THOONK_REDIS_PORT
    (a node of the cluster with THOONK_REDIS_CLUSTER=1)."""
    host = os.environ.get("THOONK_REDIS_HOST", "127.0.0.1")
    port = int(os.environ.get("THOONK_REDIS_PORT", "6379"))
    return Thoonk(host=host, port=port, listen=listen)


__all__ = ["Thoonk", "connect", "put_as"]

if __name__ == "__main__":
    print("thoonk %s on Python %s" % (thoonk.__version__, sys.version.split()[0]))
