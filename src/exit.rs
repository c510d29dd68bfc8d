//! Exit statuses: a documented contract, the same table in `--help` and the
//! README.

/// How sockcheck exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every address is free (`wait`: it became free in time; `acquire`: an
    /// address was leased).
    Free,
    /// At least one address is not free (`wait`: timed out; `acquire`: no
    /// address could be leased).
    NotFree,
    /// Bad usage or input: nothing was inspected or changed.
    Usage,
    /// The inspection itself failed (netlink sock_diag unavailable, …). An
    /// unreadable /proc is not a failure: owners are then reported unknown.
    Failed,
    /// `run`: the command succeeded but left lingering holders.
    Lingering,
    /// `run`: no address of the pool could be leased.
    NoAddress,
    /// `run`: the command's own exit status (128+N when killed by signal N).
    Command(u8),
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Free => 0,
            ExitStatus::NotFree => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Failed => 3,
            ExitStatus::Lingering => 4,
            ExitStatus::NoAddress => 5,
            ExitStatus::Command(code) => code,
        }
    }
}

/// The table printed at the end of `--help`.
pub const HELP: &str = "\
Exit status:
  0  every address is free
  1  at least one address is not free (busy, foreign, conflict or unavailable)
  2  bad usage or input (nothing was inspected or changed)
  3  the inspection itself failed (netlink sock_diag unavailable, ...)
  4  run: the command succeeded but left lingering holders
  5  run: no address of the pool could be leased
  (run otherwise exits with the command's own status)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(ExitStatus::Free.code(), 0);
        assert_eq!(ExitStatus::NotFree.code(), 1);
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::Failed.code(), 3);
        assert_eq!(ExitStatus::Lingering.code(), 4);
        assert_eq!(ExitStatus::NoAddress.code(), 5);
        assert_eq!(ExitStatus::Command(42).code(), 42);
        for code in 0..=5 {
            assert!(HELP.contains(&format!("  {code}  ")));
        }
    }
}
