//! SIGINT and SIGTERM, blocked while the watch is attached and taken
//! between polls.

/// Some signals blocked in this thread (so delivered only when asked for),
/// restored on drop.
pub(super) struct SignalGuard {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl SignalGuard {
    pub(super) fn block(signals: &[i32]) -> SignalGuard {
        // SAFETY: plain libc calls on local sigsets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalGuard { set, old }
        }
    }

    /// A blocked signal that arrived, taken (without waiting).
    pub(super) fn pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timespec; siginfo may be null.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
        (signal > 0).then_some(signal)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's own mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
