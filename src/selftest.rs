//! Checks of the library's insides that need what a unit test cannot count
//! on: root, CAP_BPF, `setpriv`, the kernel's BTF or its notes. They exist
//! only for the integration tests (`tests/it`), whose harness reports a
//! test that cannot run here as ignored, with its reason, in its summary
//! line; libtest, which runs the unit tests, cannot decide at run time that
//! a test is ignored, so a unit test whose need was unmet could only pass
//! without a word. Nothing here has any effect unless called, and nothing
//! but `tests/it` calls it. Not part of the library's interface.
//!
//! Each check panics on a mismatch. One that needs a privilege says so,
//! and the caller makes sure of it first (`support::require_*`); one that
//! needs a kernel feature returns `Err(why)` when this kernel lacks it.

pub use crate::bpf::selftest::*;
pub use crate::gate::state::selftest::root_default_dir_is_not_creatable_by_others;
