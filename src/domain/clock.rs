//! The time rules read. Production uses the system clock; tests share a clock whose offset they
//! advance, so TTL expiry, leases and guardrail days can be reached without waiting.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use chrono::{DateTime, Duration, Utc};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; `None` for the plain system clock.
    offset_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { offset_ms: None }
    }

    /// A clock that starts at the system time and moves forward when told to. Clones share it.
    pub fn adjustable() -> Self {
        Clock {
            offset_ms: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .offset_ms
            .as_ref()
            .map(|o| o.load(Ordering::SeqCst))
            .unwrap_or(0);
        Utc::now() + Duration::milliseconds(offset)
    }

    /// Moves an adjustable clock forward; a system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(o) = &self.offset_ms {
            o.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjustable_clock_moves_and_clones_share_it() {
        let c = Clock::adjustable();
        let other = c.clone();
        let before = c.now();
        other.advance(Duration::days(40));
        assert!(c.now() - before >= Duration::days(40));
        let s = Clock::system();
        s.advance(Duration::days(40));
        assert!(s.now() - Utc::now() < Duration::days(1));
    }
}
