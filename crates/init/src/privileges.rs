//! Phase 7, privileges: the app runs as the unprivileged user `app`
//! (uid/gid 1000) with no capabilities and `no_new_privs` (the switch
//! itself happens in the child, [`crate::sys::unprivileged_session`]).
//! So that it can still listen on its port below 1024, the lowest
//! unprivileged port (`net.ipv4.ip_unprivileged_port_start`, which covers
//! IPv6 too) is lowered to that port.

use std::path::Path;

use nodeos_manifest::{APP_GID, APP_UID, APP_USER, AppConfig};

use crate::error::Error;
use crate::say;
use crate::sys::Credentials;
use crate::system::System;

/// The sysctl holding the lowest port an unprivileged process may bind.
pub const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
/// The kernel's default for it.
pub const DEFAULT_UNPRIVILEGED_PORT_START: u16 = 1024;

/// Prepares the system for the unprivileged app; returns who it runs as.
pub fn prepare(sys: &mut impl System, app: &AppConfig) -> Result<Credentials, Error> {
    let port = lowest_app_port(app);
    if port < DEFAULT_UNPRIVILEGED_PORT_START {
        sys.write(
            Path::new(UNPRIVILEGED_PORT_START),
            port.to_string().as_bytes(),
        )
        .map_err(|source| Error::Write {
            path: UNPRIVILEGED_PORT_START.into(),
            source,
        })?;
    }
    let low = if port < DEFAULT_UNPRIVILEGED_PORT_START {
        format!("; ports from {port} up may be bound")
    } else {
        String::new()
    };
    say!(
        "privileges: the app runs as {APP_USER} (uid {APP_UID}, gid {APP_GID}) without capabilities{low}"
    );
    Ok(Credentials {
        uid: APP_UID,
        gid: APP_GID,
    })
}

/// The port the app is configured for: the settings' port, or a lower
/// numeric `PORT` from the environment (e.g. `nodeos run --env PORT=80`).
pub fn lowest_app_port(app: &AppConfig) -> u16 {
    let env_port = app.env.get("PORT").and_then(|p| p.parse::<u16>().ok());
    env_port
        .filter(|p| *p > 0)
        .map_or(app.settings.port, |p| p.min(app.settings.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Recorder;

    fn app(port: u16) -> AppConfig {
        AppConfig {
            name: "hello".into(),
            node: "/usr/bin/node".into(),
            workdir: "/app".into(),
            args: vec!["index.js".into()],
            env: Default::default(),
            entry: None,
            settings: nodeos_manifest::Settings {
                port,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_high_port_needs_no_sysctl() {
        let mut sys = Recorder::default();
        let creds = prepare(&mut sys, &app(3000)).unwrap();
        assert_eq!(
            creds,
            Credentials {
                uid: 1000,
                gid: 1000
            }
        );
        assert!(sys.calls.is_empty(), "{:?}", sys.calls);
    }

    #[test]
    fn a_low_port_lowers_the_unprivileged_port_start() {
        let mut sys = Recorder::default();
        prepare(&mut sys, &app(80)).unwrap();
        assert_eq!(sys.text(UNPRIVILEGED_PORT_START).as_deref(), Some("80"));
    }

    #[test]
    fn port_from_the_environment_counts_too() {
        let mut a = app(3000);
        a.env.insert("PORT".into(), "443".into());
        assert_eq!(lowest_app_port(&a), 443);
        a.env.insert("PORT".into(), "not a number".into());
        assert_eq!(lowest_app_port(&a), 3000);
    }
}
