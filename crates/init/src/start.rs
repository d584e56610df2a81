//! Phase 8, start: spawn node with the app's arguments, working directory
//! and environment, as the unprivileged app user in a session of its own,
//! with stdout and stderr piped into the log.

use std::process::{Command, Stdio};

use nodeos_manifest::AppConfig;
use nodeos_manifest::console;
use rustix::process::Pid;

use crate::error::Error;
use crate::sys::Credentials;
use crate::{config, log, sys};

/// Prints [`console::STARTING_APP`] and spawns generation `generation` of
/// the app; returns its pid and the handle that tells when its output is
/// drained. The child is not waited for here: [`crate::supervise`] reaps it.
pub fn spawn(
    app: &AppConfig,
    creds: Credentials,
    generation: u32,
) -> Result<(Pid, log::Drain), Error> {
    let fail = |source| Error::Spawn {
        node: app.node.clone(),
        workdir: app.workdir.clone(),
        source,
    };
    if let Some(entry) = &app.entry
        && let Err(source) = std::fs::metadata(entry)
    {
        return Err(Error::Entry {
            entry: entry.clone(),
            source,
        });
    }
    let output = log::capture(generation).map_err(fail)?;
    let mut cmd = Command::new(&app.node);
    cmd.args(&app.args)
        .current_dir(&app.workdir)
        .env_clear()
        .envs(config::app_env(app))
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.stdout))
        .stderr(Stdio::from(output.stderr));
    sys::unprivileged_session(&mut cmd, creds);
    log::marker(console::STARTING_APP);
    // `cmd` (and with it the pipes' write ends) is dropped on return, so
    // only the child holds them: the log sees EOF when the app is gone.
    let child = cmd.spawn().map_err(fail)?;
    // Dropping a std Child neither kills nor waits for it.
    Ok((Pid::from_child(&child), output.drain))
}
