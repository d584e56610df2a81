//! `nodeos deploy URL`: build, sign and upload a new version to a running
//! appliance, then wait until it commits or rolls back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use nodeos_image::bundle::{self, Bundle};
use nodeos_image::{Reporter, keys};
use nodeos_manifest::Manifest;
use nodeos_manifest::bundle::Source;
use nodeos_manifest::slots::{LastUpdate, UpdateResult};
use nodeos_manifest::update::{PublicKey, Status};

use crate::agent_client::{AgentError, Body, Client, Endpoint, printable};
use crate::build::ProfileArg;
use crate::exit::{Exit, fail};
use crate::system::now_ms;
use crate::ui::Ui;

/// How often the appliance is asked whether the update went through.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Lines of the failed version's log printed after a rollback.
const LOG_LINES: usize = 20;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The appliance's update agent: http://HOST:PORT (port default 7070).
    #[arg(value_name = "URL")]
    url: String,
    /// The npm project to build and deploy [default: the current directory].
    #[arg(value_name = "PROJECT_DIR")]
    project: Option<PathBuf>,
    /// The private key that signs the update [default:
    /// $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Hand the appliance over to another update key: the update is still
    /// signed with --key, the key the appliance trusts now, but the new
    /// image must trust FILE's key, and once it is committed the appliance
    /// takes requests signed with FILE only.
    #[arg(long, value_name = "FILE")]
    new_key: Option<PathBuf>,
    /// Deploy this image directory instead of building the project.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["project", "profile"])]
    image: Option<PathBuf>,
    /// The profile the project is built with (the same as the running
    /// image's, or the whole runtime layer travels).
    #[arg(long, value_enum, default_value_t = ProfileArg::Release)]
    profile: ProfileArg,
    /// Seconds to wait for the appliance to install, boot and judge the new
    /// version.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = crate::duration::whole_seconds)]
    timeout: u64,
    /// Allow a version lower than the running one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Print the appliance's final status as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DeployArgs, ui: &Ui) -> anyhow::Result<Exit> {
    deploy(args, ui).context("deploy failed")
}

fn deploy(args: DeployArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let start = Instant::now();
    let endpoint = Endpoint::parse(&args.url)?;
    let (signing, key_path) = crate::agent_client::signing_key(args.key)?;
    let key = keys::public_key(&signing);
    // With --new-key: the key the new version trusts, and a client with it
    // for when the new version answers.
    let new_key = match args.new_key {
        Some(path) => {
            let (new_signing, new_path) = crate::agent_client::signing_key(Some(path))?;
            let new_public = keys::public_key(&new_signing);
            if new_public == key {
                return Err(fail(
                    Exit::Key,
                    format!(
                        "--new-key {} is the key of --key {} (key {}): there is nothing to hand over",
                        new_path.display(),
                        key_path.display(),
                        key.key_id()
                    ),
                ));
            }
            Some((new_signing, new_public, new_path))
        }
        None => None,
    };
    let (dir, image) = match args.image {
        Some(dir) => {
            // The bundle is read from it: checked as `run` and `export`
            // check an image, with the same words.
            let image = crate::run::verify_image(&dir)?;
            (dir, image)
        }
        None => {
            let built = crate::build::build_image(
                crate::build::BuildArgs::for_project(args.project, args.profile),
                ui,
            )?;
            (built.dir, built.manifest)
        }
    };
    match &new_key {
        Some((_, new_public, new_path)) => check_key(&image, new_public, new_path)?,
        None => check_key(&image, &key, &key_path)?,
    }
    let what = format!("{} {}", image.name, image.version);

    let client = Client::new(endpoint.clone(), signing.clone());
    // The old version answers to the old key, the new one to the new key.
    let mut clients = vec![&client];
    let new_client = new_key
        .as_ref()
        .map(|(new_signing, _, _)| Client::new(endpoint, new_signing.clone()));
    clients.extend(new_client.as_ref());
    let status = client.status()?;
    if status.appliance != image.name {
        return Err(fail(
            Exit::Refused,
            format!(
                "{} runs the appliance {:?}, not {:?}; deploy {} to its own appliance",
                client.url(),
                printable(&status.appliance),
                image.name,
                what
            ),
        ));
    }
    if already_running(&image, &status) {
        ui.note(&format!(
            "{what} is already running on slot {} of {}; nothing to deploy",
            status.slot,
            client.url()
        ));
        print_json(args.json, &status)?;
        return Ok(Exit::Success);
    }

    let sequence = bundle::sequence_for(&status, now_ms());
    let manifest = bundle::plan(&image, Some(&status), sequence, &key, args.allow_downgrade);
    let bundle = Bundle::sign(manifest, &signing, &dir)?;
    ui.status(
        "Uploading",
        &format!("{what} to {} ({})", client.url(), payload_summary(&bundle)),
    );
    // --timeout runs from the start of the upload to the verdict.
    let timeout = Duration::from_secs(args.timeout);
    let deadline = Instant::now() + timeout;
    let mut reader = bundle
        .reader()
        .map_err(|source| AgentError::Bundle { source })?;
    let progress = ui.progress(&what, Some(bundle.len()));
    let upload = client.update(
        Body {
            reader: &mut reader,
            len: bundle.len(),
            progress: progress.as_ref(),
        },
        timeout,
    );
    progress.finish();
    match upload {
        Ok(accepted) => ui.status(
            "Installed",
            &format!(
                "{what} in slot {}; the appliance reboots to try it",
                accepted.slot
            ),
        ),
        // The whole bundle went out and the answer was lost: the status
        // will tell whether the agent took it.
        Err(AgentError::Broken { sent: true, .. }) => ui.warn(&format!(
            "the appliance at {} sent no answer to the upload; asking it how the update went",
            client.url()
        )),
        Err(e) => return Err(e.into()),
    }

    ui.status(
        "Waiting",
        &format!(
            "for {what} to boot and pass its health check (up to {} s)",
            args.timeout
        ),
    );
    let (status, last) = wait(&clients, sequence, deadline, args.timeout)?;
    print_json(args.json, &status)?;
    let to = if last.to.is_empty() {
        image.version.clone()
    } else {
        printable(&last.to)
    };
    match last.result {
        UpdateResult::Committed => {
            // How the trial passed, as the appliance recorded it at the commit.
            let health = &last.reason;
            let health = if health.is_empty() {
                "healthy".to_owned()
            } else {
                format!("healthy ({})", printable(health))
            };
            ui.status(
                "Deployed",
                &format!(
                    "{} {} → {to} on slot {}: {health}, {:.1} s",
                    image.name,
                    printable(&last.from),
                    last.slot,
                    start.elapsed().as_secs_f64()
                ),
            );
            if let Some((_, new_public, new_path)) = &new_key {
                ui.note(&format!(
                    "{} now takes requests signed with update key {} ({}) only; key {} ({}) and the read tokens it signed no longer work there",
                    client.url(),
                    new_public.key_id(),
                    new_path.display(),
                    key.key_id(),
                    key_path.display()
                ));
            }
            Ok(Exit::Success)
        }
        UpdateResult::RolledBack => Err(fail(
            Exit::RolledBack,
            rolled_back_message(&image.name, &to, &last, &status),
        )),
        UpdateResult::Pending => unreachable!("wait returns only verdicts"),
    }
}

/// Refuses an image that would not take updates signed with `key`: one
/// with no update key (it would take no update at all once deployed) or
/// with another key.
fn check_key(image: &Manifest, key: &PublicKey, key_path: &std::path::Path) -> anyhow::Result<()> {
    let what = format!("{} {}", image.name, image.version);
    let fix = format!(
        "set nodeos.update.publicKey to \"{key}\" in package.json, or build with `nodeos build --key {}` and deploy that image with --image",
        key_path.display()
    );
    match &image.update_key {
        Some(baked) if baked == key => Ok(()),
        Some(baked) => Err(fail(
            Exit::Key,
            format!(
                "the image {what} trusts update key {}, not {} ({}): once deployed, the appliance would refuse updates signed with it; {fix}; or, to hand the appliance over to key {}, deploy with --new-key and that key's private key file",
                baked.key_id(),
                key.key_id(),
                key_path.display(),
                baked.key_id(),
            ),
        )),
        None => Err(fail(
            Exit::Key,
            format!(
                "the image {what} has no update key, so once deployed the appliance would take no further update; {fix}"
            ),
        )),
    }
}

/// Whether the appliance already runs exactly this image, committed.
fn already_running(image: &Manifest, status: &Status) -> bool {
    let Some(slot) = status.slots.get(&status.slot) else {
        return false;
    };
    !status.trial
        && status.version == image.version
        && image.boot_artifacts().iter().all(|key| {
            image
                .artifacts
                .get(*key)
                .is_some_and(|a| slot.artifacts.get(*key) == Some(&a.sha256))
        })
}

/// `a 4.1 KiB bundle (4198 bytes): app; kernel and runtime are already on
/// the appliance`.
fn payload_summary(bundle: &Bundle) -> String {
    let names = |source| {
        bundle
            .manifest
            .payload
            .iter()
            .filter(|e| e.source == source)
            .map(|e| e.artifact.as_str())
            .collect::<Vec<_>>()
    };
    let sent = names(Source::Bundle);
    let kept = names(Source::Slot);
    let mut text = format!(
        "a {} bundle ({} bytes): {}",
        human_bytes(bundle.len()),
        bundle.len(),
        if sent.is_empty() {
            "the signed manifest only".to_owned()
        } else {
            sent.join(", ")
        }
    );
    if !kept.is_empty() {
        text.push_str(&format!(
            "; {} {} already on the appliance",
            kept.join(" and "),
            if kept.len() == 1 { "is" } else { "are" }
        ));
    }
    text
}

/// The status from the first of `clients` whose key the appliance
/// accepts (while a key is handed over, the old version answers to the old
/// key and the new one to the new key); the first refusal if none is.
fn status(clients: &[&Client]) -> Result<Status, AgentError> {
    let mut first_refusal = None;
    for client in clients {
        match client.status() {
            Err(e) if e.wrong_key() => {
                first_refusal.get_or_insert(e);
            }
            answer => return answer,
        }
    }
    Err(first_refusal.expect("at least one client"))
}

/// Asks for the status every second until the update with `sequence` has
/// a verdict. Not answering is expected while the appliance reboots; a
/// refusal ends the wait.
fn wait(
    clients: &[&Client],
    sequence: u64,
    deadline: Instant,
    timeout_secs: u64,
) -> anyhow::Result<(Status, LastUpdate)> {
    let client = clients[0];
    loop {
        let seen = match status(clients) {
            Ok(status) => match status.last_update.clone() {
                Some(last) if last.sequence == sequence => match last.result {
                    UpdateResult::Pending => format!(
                        "version {} on slot {}{}, the update still pending",
                        printable(&status.version),
                        status.slot,
                        if status.trial { " on trial" } else { "" }
                    ),
                    _ => return Ok((status, last)),
                },
                Some(last) if last.sequence > sequence => {
                    return Err(fail(
                        Exit::Unreachable,
                        format!(
                            "{} took a newer update (sequence {}, version {}) before this one had a verdict",
                            client.url(),
                            last.sequence,
                            printable(&last.to)
                        ),
                    ));
                }
                _ => format!(
                    "version {} on slot {}, with no record of this update",
                    printable(&status.version),
                    status.slot
                ),
            },
            // The agent may be busy starting up; keep asking.
            Err(AgentError::Refused { status, reason, .. }) if status >= 500 => {
                format!("answer {status}: {reason}")
            }
            Err(e) if e.refused() => return Err(e.into()),
            Err(e) => crate::format_chain(&e.into()),
        };
        if Instant::now() >= deadline {
            return Err(fail(
                Exit::Unreachable,
                format!(
                    "no verdict on the update from {} within {timeout_secs} s (--timeout); last seen: {seen}",
                    client.url(),
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `hello 1.0.1 was rolled back: <reason>` and the last lines of its log.
fn rolled_back_message(name: &str, to: &str, last: &LastUpdate, status: &Status) -> String {
    let reason = if last.reason.is_empty() {
        "no reason recorded".to_owned()
    } else {
        printable(&last.reason)
    };
    let mut message = format!(
        "{name} {to} was rolled back: {reason}; {} runs again on slot {}",
        printable(&status.version),
        status.slot
    );
    let tail = status.log_tail.as_deref().unwrap_or("");
    let lines: Vec<&str> = tail.lines().collect();
    let lines = &lines[lines.len().saturating_sub(LOG_LINES)..];
    if lines.is_empty() {
        message.push_str("\n(the appliance kept no log of the failed version)");
    } else {
        message.push_str(&format!("\nlast lines of {name} {to}'s log:"));
        for line in lines {
            message.push_str("\n    ");
            message.push_str(&printable(line));
        }
    }
    message
}

fn print_json(json: bool, status: &Status) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
    }
    Ok(())
}

/// `512 B`, `4.1 KiB`, `38.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4200), "4.1 KiB");
        assert_eq!(human_bytes(38 << 20), "38.0 MiB");
    }
}
