//! Phase 2, console: stdin, stdout and stderr are `/dev/console` (the first
//! serial port). The kernel normally opens it for PID 1; if it could not
//! (no `/dev/console` on the initial root), init opens it itself.

use std::io;
use std::os::fd::{AsFd, IntoRawFd};

use rustix::fs::{Mode, OFlags};

use crate::error::Error;

/// Opens `/dev/console` on whichever of fds 0–2 are closed.
pub fn setup() -> Result<(), Error> {
    let closed = [
        is_closed(io::stdin().as_fd()),
        is_closed(io::stdout().as_fd()),
        is_closed(io::stderr().as_fd()),
    ];
    if !closed.contains(&true) {
        return Ok(());
    }
    let console = rustix::fs::open("/dev/console", OFlags::RDWR | OFlags::NOCTTY, Mode::empty())
        .map_err(|e| Error::Console(e.into()))?;
    let dup = [
        rustix::stdio::dup2_stdin,
        rustix::stdio::dup2_stdout,
        rustix::stdio::dup2_stderr,
    ];
    for (fd, is_closed) in closed.iter().enumerate() {
        if *is_closed {
            dup[fd](&console).map_err(|e| Error::Console(e.into()))?;
        }
    }
    // If open() itself landed on 0, 1 or 2, that fd is one of ours now: keep it.
    if rustix::fd::AsRawFd::as_raw_fd(&console) <= 2 {
        let _ = console.into_raw_fd();
    }
    Ok(())
}

/// [`setup`] for the error path, where there is nobody left to report to.
pub fn best_effort() {
    let _ = setup();
}

fn is_closed(fd: rustix::fd::BorrowedFd<'_>) -> bool {
    rustix::io::fcntl_getfd(fd) == Err(rustix::io::Errno::BADF)
}
