//! The kernel's view: one sock_diag dump of every socket on the queried
//! ports, both families, split into listeners and the rest.

use crate::diag::{DiagSocket, Family, SockDiag, TcpState};
use crate::error::Error;

/// Every socket on the queried ports, per family, as the kernel showed it.
#[derive(Debug, Default, Clone)]
pub struct KernelView {
    pub listeners: Vec<DiagSocket>,
    pub others: Vec<DiagSocket>,
    /// Why a family could not be dumped (IPv6 disabled, …).
    pub notes: Vec<String>,
}

/// Dumps listeners and other sockets on `ports`, for IPv4 and IPv6.
pub fn kernel_view(ports: &[u16]) -> Result<KernelView, Error> {
    let mut diag = SockDiag::open()?;
    let mut view = KernelView::default();
    let sockets = match diag.sockets_both(ports) {
        Ok(sockets) => sockets,
        // A kernel without the legacy request: one dump per family.
        Err(Error::NetlinkReply { .. }) => {
            let mut sockets = diag.sockets(Family::Inet, ports)?;
            match diag.sockets(Family::Inet6, ports) {
                Ok(more) => sockets.extend(more),
                // No IPv6 in this kernel: the AF_INET6 handler is absent.
                Err(Error::NetlinkReply {
                    errno: Some(libc::ENOENT),
                    ..
                }) => view
                    .notes
                    .push("IPv6 sock_diag is not available (no IPv6?)".into()),
                Err(e) => return Err(e),
            }
            sockets
        }
        Err(e) => return Err(e),
    };
    for socket in sockets {
        if socket.state == TcpState::Listen {
            view.listeners.push(socket);
        } else {
            view.others.push(socket);
        }
    }
    view.notes.dedup();
    Ok(view)
}
