//! sockcheck: can this loopback address go to a new server right now, and if
//! not, who holds it?
//!
//! The library does the work; the binary is a thin shell around [`cli::run`]; only
//! `main` uses [`cli`]. What users type is parsed in [`input`], and
//! everything printed goes through [`output`].
//! Tests and the CI-gate commands call [`inspect::inspect`] directly.

pub mod bpf;
pub mod canary;
pub mod cli;
pub mod context;
pub mod diag;
pub mod doctor;
pub mod document;
pub mod error;
pub mod exit;
pub mod gate;
pub mod input;
pub mod inspect;
pub mod lease;
pub mod netns;
pub mod output;
pub mod owners;
pub mod report;
pub mod reuseport;
pub mod schema;
#[doc(hidden)]
pub mod selftest;
pub mod sys;
pub mod text;
pub mod verdict;
pub mod watch;

pub use error::Error;
pub use inspect::{Query, inspect};
pub use report::Report;
pub use report::Verdict;
