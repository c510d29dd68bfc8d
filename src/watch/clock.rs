//! Wall-clock times of the kernel's monotonic event stamps.

/// The offset between CLOCK_MONOTONIC (the kernel's event stamps) and
/// CLOCK_REALTIME, sampled once per batch of events.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus monotonic, in ns.
    pub(super) offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let ns = |clock| {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid out-pointer; both clocks always exist on Linux.
            unsafe { libc::clock_gettime(clock, &mut t) };
            t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
        };
        let mono = ns(libc::CLOCK_MONOTONIC);
        let real = ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// The wall-clock time of a monotonic stamp.
    fn timestamp(&self, ktime_ns: u64) -> jiff::Timestamp {
        let ns = ktime_ns as i128 + self.offset_ns;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// `HH:MM:SS.mmm` in local time (jiff's system time zone: `TZ`, else
    /// /etc/localtime, else UTC).
    pub fn local_hms(&self, ktime_ns: u64) -> String {
        self.timestamp(ktime_ns)
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%H:%M:%S%.3f")
            .to_string()
    }

    /// `2025-11-24T12:34:56.789Z`.
    pub fn utc_rfc3339(&self, ktime_ns: u64) -> String {
        self.timestamp(ktime_ns)
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_converts_monotonic_to_wall_time() {
        let clock = Clock {
            offset_ns: 1_700_000_000_000_000_000 - 1_500_000_000,
        };
        // 1_700_000_000 is 2023-11-14T22:13:20Z.
        assert_eq!(
            clock.utc_rfc3339(1_500_000_000 + 123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(clock.local_hms(1_500_000_000).len(), "12:34:56.789".len());
    }
}
