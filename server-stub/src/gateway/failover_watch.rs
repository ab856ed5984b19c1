//! Failovers on a Redis Cluster, as a gateway sees them.
//!
//! A replica promoted at failover may lack writes its primary acknowledged.
//! The feed scripts then go on under a new epoch (a node's replication
//! history is part of a feed's epoch; see `read_feed` in
//! `server-stub/lua/prelude.lua`), but a session learns of it only at the
//! feed's next write or its next catch-up. So the gateway watches which node
//! is primary for each slot range, and when one changes every session
//! catches up at once: clients that saw revisions the new primary lacks
//! start over from a snapshot of the new epoch, instead of keeping them
//! until the next write.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::hub::Hub;
use crate::redis_target::RedisTarget;

/// A slot range and the id of the node that serves it as primary.
type Owner = (i64, i64, String);

/// Polls the cluster's slot map every `every` until the process ends; a
/// change of primary for any range makes every session resync. Returns at
/// once for a single Redis.
pub async fn watch_for_failovers(hub: Hub, redis: RedisTarget, every: Duration) {
    let RedisTarget::Cluster { nodes, .. } = redis else {
        return;
    };
    let mut known: Option<Vec<Owner>> = None;
    // One connection per node, made when first needed and dropped on error.
    let mut conns: Vec<Option<MultiplexedConnection>> = vec![None; nodes.len()];
    loop {
        if let Some(owners) = slot_owners(&nodes, &mut conns).await {
            if known.as_ref().is_some_and(|known| *known != owners) {
                tracing::warn!(
                    "the cluster's primaries changed (a failover?); sessions resync from the change logs"
                );
                hub.dispatch_resync();
            }
            known = Some(owners);
        }
        tokio::time::sleep(every).await;
    }
}

/// `CLUSTER SLOTS` of the first node that answers, as sorted owners.
async fn slot_owners(
    nodes: &[redis::Client],
    conns: &mut [Option<MultiplexedConnection>],
) -> Option<Vec<Owner>> {
    for (node, held) in nodes.iter().zip(conns.iter_mut()) {
        let reply: redis::RedisResult<Value> = async {
            if held.is_none() {
                *held = Some(node.get_multiplexed_async_connection().await?);
            }
            let conn = held.as_mut().expect("connected above");
            redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await
        }
        .await;
        match reply {
            Ok(Value::Array(ranges)) => {
                let mut owners: Vec<Owner> = ranges.iter().filter_map(owner).collect();
                owners.sort();
                return Some(owners);
            }
            _ => *held = None,
        }
    }
    None
}

/// One `CLUSTER SLOTS` entry: `[start, end, [host, port, id, …], replicas…]`.
fn owner(range: &Value) -> Option<Owner> {
    let Value::Array(parts) = range else {
        return None;
    };
    let (Value::Int(start), Value::Int(end), Value::Array(primary)) =
        (parts.first()?, parts.get(1)?, parts.get(2)?)
    else {
        return None;
    };
    let id = match primary.get(2)? {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(id) => id.clone(),
        _ => return None,
    };
    Some((*start, *end, id))
}
