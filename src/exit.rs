//! Exit statuses: a documented contract, the same table in `--help` and the
//! README.

/// How sockcheck exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every address is free (`wait`: it became free in time).
    Free = 0,
    /// At least one address is not free (`wait`: timed out).
    NotFree = 1,
    /// Bad usage or input: nothing was inspected or changed.
    Usage = 2,
    /// The inspection itself failed (netlink unavailable, /proc unreadable, …).
    Failed = 3,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The table printed at the end of `--help`.
pub const HELP: &str = "\
Exit status:
  0  every address is free
  1  at least one address is not free (busy, foreign, conflict or unavailable)
  2  bad usage or input (nothing was inspected or changed)
  3  the inspection itself failed (netlink or /proc unavailable)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(ExitStatus::Free.code(), 0);
        assert_eq!(ExitStatus::NotFree.code(), 1);
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::Failed.code(), 3);
        for code in 0..=3 {
            assert!(HELP.contains(&format!("  {code}  ")));
        }
    }
}
