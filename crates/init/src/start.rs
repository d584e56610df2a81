//! Phase 5, start: spawn node with the app's arguments, working directory
//! and environment, in a session of its own.

use std::process::{Command, Stdio};

use nodeos_manifest::AppConfig;
use nodeos_manifest::console;
use rustix::process::Pid;

use crate::error::Error;
use crate::{config, log, sys};

/// Prints [`console::STARTING_APP`] and spawns the app; returns its pid.
/// The child is not waited for here: [`crate::supervise`] reaps it.
pub fn spawn(app: &AppConfig) -> Result<Pid, Error> {
    let mut cmd = Command::new(&app.node);
    cmd.args(&app.args)
        .current_dir(&app.workdir)
        .env_clear()
        .envs(config::app_env(app))
        .stdin(Stdio::null());
    sys::new_session(&mut cmd);
    log::marker(console::STARTING_APP);
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        node: app.node.clone(),
        workdir: app.workdir.clone(),
        source,
    })?;
    // Dropping a std Child neither kills nor waits for it.
    Ok(Pid::from_child(&child))
}
