//! Each organisation's share of one server. Bounds on single inputs keep any one request cheap,
//! but a tenant can still send the largest allowed requests back to back and take the machine
//! from everyone else. So every organisation has a token bucket of bytes: the request body it
//! sends, the response body it receives and a fixed cost per request are taken from it, and it
//! refills at `TENANT_BYTES_PER_SEC`. An organisation whose bucket is empty is answered 429 with
//! `Retry-After` before its body is read. The buckets live in the process (each replica keeps its
//! own); docs/LIMITS.md has the numbers.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// What one request costs besides its bodies: the work of any request, so a flood of tiny ones
/// counts too.
pub const REQUEST_COST: u64 = 1024;
/// Organisations remembered at once; the longest idle are forgotten (a forgotten one starts with
/// a full bucket, which is what an idle one would have anyway).
const MAX_TRACKED: usize = 10_000;

pub struct Shares {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Shares {
    /// `rate` bytes per second into buckets of `burst` bytes; a rate of 0 admits everything.
    pub fn new(rate: u64, burst: u64) -> Self {
        Shares {
            rate: rate as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(&self, org: &str, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(org) {
            let (rate, burst) = (self.rate, self.burst);
            // Full buckets hold nothing worth remembering.
            buckets.retain(|_, b| b.refilled(now, rate, burst).tokens < burst);
            if buckets.len() >= MAX_TRACKED {
                if let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(k, _)| k.clone())
                {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(org.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *bucket = bucket.refilled(now, self.rate, self.burst);
        f(bucket)
    }

    /// Takes `bytes` (what the request will send, plus [`REQUEST_COST`]) from `org`'s bucket, or
    /// says how long until it holds something again. A bucket may go below zero (a large body is
    /// admitted whole while anything is left), and then waits until it is refilled past zero.
    pub fn admit(&self, org: &str, bytes: u64) -> Result<(), Duration> {
        self.admit_at(org, bytes, Instant::now())
    }

    fn admit_at(&self, org: &str, bytes: u64, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let rate = self.rate;
        self.with_bucket(org, now, |b| {
            if b.tokens <= 0.0 {
                return Err(Duration::from_secs_f64((1.0 - b.tokens) / rate));
            }
            b.tokens -= (bytes + REQUEST_COST) as f64;
            Ok(())
        })
    }

    /// Takes what a response sent to `org` from its bucket.
    pub fn charge(&self, org: &str, bytes: u64) {
        if self.rate > 0.0 && bytes > 0 {
            self.with_bucket(org, Instant::now(), |b| b.tokens -= bytes as f64);
        }
    }
}

impl Bucket {
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        Bucket {
            tokens: (self.tokens + elapsed * rate).min(burst),
            at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_rate_holds() {
        let shares = Shares::new(10_000, 20_000);
        let t0 = Instant::now();
        // 20,000 bytes of burst: the first request empties it, the second waits.
        assert!(shares.admit_at("a", 19_000, t0).is_ok());
        let wait = shares.admit_at("a", 1, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Another organisation is not affected.
        assert!(shares.admit_at("b", 19_000, t0).is_ok());
        // After the wait the bucket holds something again.
        assert!(shares
            .admit_at("a", 1, t0 + wait + Duration::from_millis(1))
            .is_ok());
    }

    #[test]
    fn responses_count_and_a_deficit_is_paid_back_before_the_next_request() {
        let shares = Shares::new(1_000, 10_000);
        let t0 = Instant::now();
        assert!(shares.admit_at("a", 0, t0).is_ok());
        shares.charge("a", 20_000);
        let wait = shares.admit_at("a", 0, t0).unwrap_err();
        // 11,024 bytes in deficit at 1,000 bytes a second.
        assert!(
            wait >= Duration::from_secs(11) && wait < Duration::from_secs(12),
            "{wait:?}"
        );
    }

    #[test]
    fn rate_zero_admits_everything() {
        let shares = Shares::new(0, 0);
        for _ in 0..1000 {
            assert!(shares.admit("a", u64::MAX / 2).is_ok());
        }
    }

    #[test]
    fn the_map_of_organisations_stays_bounded() {
        let shares = Shares::new(1, 1_000_000);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED + 500) {
            shares.admit_at(&format!("org{i}"), 10, t0).unwrap();
        }
        assert!(shares.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
