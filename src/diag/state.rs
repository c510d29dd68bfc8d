//! TCP states, as the kernel numbers them and ss(8) names them.

use std::cmp::Ordering;

use schemars::JsonSchema;
use serde::Serialize;

/// A TCP state (`include/net/tcp_states.h`), as the name ss(8) prints for
/// it; `BOUND_INACTIVE` is bound, neither listening nor connected (Linux
/// 6.7+), and `UNKNOWN` a number newer than this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,
    Unknown,
}
// (No doc comments on the variants: the schema stays one string enum,
// which also names the keys of `by_state`.)

/// Every state, in the kernel's order (1..=13), then `Unknown`.
const ALL: [TcpState; 14] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::TimeWait,
    TcpState::Close,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Listen,
    TcpState::Closing,
    TcpState::NewSynRecv,
    TcpState::BoundInactive,
    TcpState::Unknown,
];

impl TcpState {
    /// The state the kernel numbers `raw`.
    pub fn from_raw(raw: u8) -> TcpState {
        match raw {
            1..=13 => ALL[usize::from(raw) - 1],
            _ => TcpState::Unknown,
        }
    }

    /// The name ss(8) prints for this state (what it serializes as).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
            TcpState::BoundInactive => "BOUND_INACTIVE",
            TcpState::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for TcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// By name, the order of the `by_state` counts in the output, not the
/// kernel's numbers.
impl Ord for TcpState {
    fn cmp(&self, other: &TcpState) -> Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for TcpState {
    fn partial_cmp(&self, other: &TcpState) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_serialized_names_agree() {
        for (raw, state) in (1..=13).zip(ALL) {
            assert_eq!(TcpState::from_raw(raw), state);
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.name(), "{state:?}");
        }
        assert_eq!(TcpState::from_raw(6).name(), "TIME_WAIT");
        assert_eq!(TcpState::from_raw(10), TcpState::Listen);
        for raw in [0, 14, 255] {
            assert_eq!(TcpState::from_raw(raw), TcpState::Unknown);
        }
        assert_eq!(serde_json::to_value(TcpState::Unknown).unwrap(), "UNKNOWN");
    }

    #[test]
    fn states_order_by_name() {
        assert!(TcpState::Established < TcpState::TimeWait);
        assert!(TcpState::BoundInactive < TcpState::Established);
    }
}
