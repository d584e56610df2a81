//! `gce`: the UEFI disk as Google Compute Engine imports an image: a file
//! named `disk.raw` (a whole number of GiB) in a gzip'd tar in the GNU
//! format (`gcloud compute images create --source-uri`).
//!
//! GNU tar writes the disk as a sparse member (`-S`), so the zeros of a
//! mostly empty disk cost neither time nor space; the tar is then gzip'd
//! here, without a timestamp, so the same disk gives the same bytes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::tools::Tool;
use crate::{ExportError, io_error};

/// The member name GCE requires.
pub const MEMBER: &str = "disk.raw";

/// Writes `raw` (a file named [`MEMBER`]) in a tar.gz at `out`.
pub fn write(raw: &Path, out: &Path) -> Result<(), ExportError> {
    assert!(raw.ends_with(MEMBER), "GCE's member is named {MEMBER}");
    let dir = raw.parent().unwrap_or(Path::new("."));
    let mut child = Tool::Tar
        .command()
        .current_dir(dir)
        .args([
            "--format=oldgnu",
            "--sparse",
            // Holes found from the bytes, not from how the host's
            // filesystem happens to store them.
            "--hole-detection=raw",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0644",
            "-cf",
            "-",
            MEMBER,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExportError::ToolFailed {
            tool: "tar",
            status: "did not start".into(),
            output: e.to_string(),
        })?;
    let what = format!("cannot write `{}`", out.display());
    let file = File::create(out).map_err(io_error(what.clone()))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(file, Compression::new(6));
    let mut stdout = child.stdout.take().expect("piped");
    let copied = std::io::copy(&mut stdout, &mut gz);
    // Closed before waiting: a tar blocked on a full pipe would never exit.
    drop(stdout);
    let output = child.wait_with_output().map_err(io_error("tar failed"))?;
    if !output.status.success() {
        return Err(ExportError::ToolFailed {
            tool: "tar",
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    copied.map_err(io_error(what.clone()))?;
    finish(gz).map_err(io_error(what))
}

fn finish(gz: GzEncoder<File>) -> std::io::Result<()> {
    let mut file = gz.finish()?;
    file.flush()
}
