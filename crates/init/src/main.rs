//! The `nodeos-init` binary: PID 1 of a nodeos guest. See the library's docs
//! (`nodeos_init`) for the phases and the guest contract.
//!
//! This wrapper only makes sure PID 1 never exits: whatever [`nodeos_init::run`]
//! returns (the app's exit, an error, or a panic), it ends in
//! [`nodeos_init::shutdown`], which stops every process and powers the VM off.

use std::io::Write;
use std::panic;

use nodeos_init::say;
use nodeos_init::supervise::End;

fn main() {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        // Refuse to run anywhere else: the shutdown phase signals every process.
        let _ = writeln!(
            std::io::stderr(),
            "nodeos-init: must run as PID 1 inside a nodeos guest (it powers the machine off when done)"
        );
        std::process::exit(2);
    }
    panic::set_hook(Box::new(|info| say!("bug: {info}")));
    let end = match panic::catch_unwind(nodeos_init::run) {
        Ok(Ok(end)) => end,
        Ok(Err(err)) => {
            nodeos_init::console::best_effort();
            say!("error: {}", nodeos_init::error_chain(&err));
            End::PowerOff
        }
        Err(_) => {
            say!("error: init panicked (a bug); powering off");
            End::PowerOff
        }
    };
    nodeos_init::shutdown(end)
}
