//! The OS clock, read in one place and only by drivers: the domain takes "now" from its caller
//! (the authority), so its rules can be tested at any instant.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::model::Millis;

/// The system clock in Unix milliseconds (0 if it reads before 1970).
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            Millis::try_from(elapsed.as_millis()).unwrap_or(Millis::MAX)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_after_2025() {
        // 2025-01-01T00:00:00Z
        assert!(super::now_millis() > 1_735_689_600_000);
    }
}
