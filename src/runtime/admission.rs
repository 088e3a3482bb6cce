//! What a connection or a request body may take before anything is known about who sends it:
//! the process-wide body budget (`OPENCHAT_HTTP_BODY_BUDGET_BYTES`) and the connection caps
//! (`OPENCHAT_MAX_CONNECTIONS`, split over the shards, and `OPENCHAT_MAX_CONNECTIONS_PER_ADDR`,
//! shared by all shards). Both hand out permits that give their share back when dropped, so no
//! exit path of a connection or request can leak one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Request body bytes in flight over every connection of the process, counted from the
/// declared length in each head (a chunked body at the limit of its kind).
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    in_use: AtomicUsize,
}

/// A share of the [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            in_use: AtomicUsize::new(0),
        })
    }

    /// `bytes` of the budget, or `None` when they do not fit beside what is in flight.
    pub fn try_take(self: &Arc<Self>, bytes: usize) -> Option<BodyPermit> {
        let mut current = self.in_use.load(Ordering::Relaxed);
        loop {
            let next = current.checked_add(bytes).filter(|n| *n <= self.total)?;
            match self.in_use.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(BodyPermit {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Bytes currently taken.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Open connections per source address, over all shards.
#[derive(Debug)]
pub struct ConnectionCaps {
    per_shard: usize,
    per_addr: usize,
    /// Shared with the permits, which outlive any borrow of the caps (a WebSocket session
    /// holds its connection's permit in a task of its own).
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection counted against its address; uncounted on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    addr: IpAddr,
}

impl ConnectionCaps {
    /// `total` is split evenly over `shards` (rounded up, at least one each).
    pub fn new(total: usize, per_addr: usize, shards: usize) -> ConnectionCaps {
        ConnectionCaps {
            per_shard: total.div_ceil(shards.max(1)).max(1),
            per_addr,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Open connections one shard may hold.
    pub fn per_shard(&self) -> usize {
        self.per_shard
    }

    /// Admits a new connection from `addr` on a shard that has `shard_open` open, or `None`
    /// when either cap is reached.
    pub fn admit(&self, addr: IpAddr, shard_open: usize) -> Option<ConnectionPermit> {
        if shard_open >= self.per_shard {
            return None;
        }
        let addr = addr.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(addr).or_insert(0);
        if *count >= self.per_addr {
            return None;
        }
        *count += 1;
        Some(ConnectionPermit {
            open: self.open.clone(),
            addr,
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_takes_it_back_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.try_take(60).unwrap();
        assert!(budget.try_take(41).is_none());
        let b = budget.try_take(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        assert!(budget.try_take(1).is_none());
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(budget.try_take(60).is_some(), "and given back again");
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_take(usize::MAX).is_none());
    }

    #[test]
    fn connections_are_capped_per_address_and_per_shard() {
        let caps = ConnectionCaps::new(5, 2, 2);
        assert_eq!(caps.per_shard(), 3);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let a = caps.admit(one, 0).unwrap();
        let b = caps.admit(one, 1).unwrap();
        assert!(caps.admit(one, 2).is_none(), "third from one address");
        // The same address as IPv4-mapped IPv6 counts as the same address.
        assert!(caps.admit("::ffff:10.0.0.1".parse().unwrap(), 2).is_none());
        let c = caps.admit(two, 2).unwrap();
        assert!(caps.admit(two, 3).is_none(), "the shard is full");
        drop(a);
        let d = caps.admit(one, 2).unwrap();
        drop((b, c, d));
        assert!(caps.open.lock().unwrap().is_empty());
    }
}
