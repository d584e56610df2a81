//! The update state record on the state partition: two copies, each write
//! going to the older one and synced, so a torn write leaves the previous
//! record readable ([`State::read`] takes the newest valid copy).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nodeos_manifest::frame;
use nodeos_manifest::slots::{
    LOG_MAX, LOG_OFFSET, STATE_COPY_LEN, State, decode_log_tail, encode_log_tail,
};

use super::UpdateError;

/// The open state partition and the record last read or written.
#[derive(Debug)]
pub struct StateStore {
    file: File,
    path: PathBuf,
    state: State,
}

impl StateStore {
    /// Opens the state partition read-write and reads the newest valid
    /// copy; an error if neither copy is valid.
    pub fn open(state_partition: &Path) -> Result<StateStore, UpdateError> {
        let path = state_partition.to_owned();
        let read_error = |source| UpdateError::StateRead {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(read_error)?;
        let mut area = vec![0; 2 * STATE_COPY_LEN];
        let n = read_at_most(&file, &mut area, 0).map_err(read_error)?;
        let state = State::read(&area[..n]).ok_or(UpdateError::NoState { path: path.clone() })?;
        Ok(StateStore { file, path, state })
    }

    /// The record as last read or written.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state partition's device node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `f` to a copy of the record, writes it as the next copy
    /// ([`State::next_copy`]) and syncs it; only then is it the current
    /// record. On an error the current record is unchanged.
    pub fn update(&mut self, f: impl FnOnce(&mut State)) -> io::Result<()> {
        let mut next = self.state.clone();
        f(&mut next);
        let (offset, bytes) = next.next_copy();
        self.file.write_all_at(&bytes, offset)?;
        self.file.sync_data()?;
        self.state = next;
        Ok(())
    }

    /// Writes the last lines of a failed trial into the log area (the end
    /// of `text`, at most [`LOG_MAX`] bytes) and syncs it.
    pub fn write_log_tail(&mut self, text: &str) -> io::Result<()> {
        self.file.write_all_at(&encode_log_tail(text), LOG_OFFSET)?;
        self.file.sync_data()
    }

    /// The log tail last written (by init or by the host), if any.
    pub fn log_tail(&self) -> Option<String> {
        let mut area = vec![0; LOG_MAX + frame::OVERHEAD];
        let n = read_at_most(&self.file, &mut area, LOG_OFFSET).ok()?;
        decode_log_tail(&area[..n])
    }
}

/// Fills `buf` from `offset` as far as the file goes; the bytes read.
pub(crate) fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::slots::{STATE_PARTITION_LEN, Slot, SlotStatus};

    use super::*;

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let file = File::create(&path).unwrap();
        file.set_len(STATE_PARTITION_LEN).unwrap();
        let (offset, bytes) = State::new(Slot::A, "1.0.0").next_copy();
        file.write_all_at(&bytes, offset).unwrap();
        (dir, path)
    }

    #[test]
    fn updates_survive_a_reopen() {
        let (_dir, path) = fresh();
        let mut store = StateStore::open(&path).unwrap();
        assert_eq!(store.state().a.status, SlotStatus::Good);
        store.update(|s| s.max_sequence = 5).unwrap();
        store
            .update(|s| {
                s.max_sequence = 9;
                s.b.status = SlotStatus::Writing;
            })
            .unwrap();
        assert_eq!(store.state().seq, 3);
        let again = StateStore::open(&path).unwrap();
        assert_eq!(again.state(), store.state());
        assert_eq!(again.state().max_sequence, 9);
    }

    #[test]
    fn a_torn_newest_copy_falls_back_to_the_older_one() {
        let (_dir, path) = fresh();
        let mut store = StateStore::open(&path).unwrap();
        store.update(|s| s.max_sequence = 5).unwrap();
        store.update(|s| s.max_sequence = 9).unwrap();
        // seq 3 is in the copy at STATE_COPY_LEN; tear it.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 8], STATE_COPY_LEN as u64 + 30)
            .unwrap();
        let again = StateStore::open(&path).unwrap();
        assert_eq!((again.state().seq, again.state().max_sequence), (2, 5));
    }

    #[test]
    fn no_valid_copy_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, vec![0; 3 * STATE_COPY_LEN]).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, UpdateError::NoState { .. }), "{err}");
        let err = StateStore::open(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, UpdateError::StateRead { .. }), "{err}");
    }

    #[test]
    fn log_tail_round_trips() {
        let (_dir, path) = fresh();
        let mut store = StateStore::open(&path).unwrap();
        assert_eq!(store.log_tail(), None);
        store.write_log_tail("boom at start\n").unwrap();
        assert_eq!(store.log_tail().as_deref(), Some("boom at start\n"));
        assert_eq!(
            StateStore::open(&path).unwrap().log_tail().as_deref(),
            Some("boom at start\n")
        );
    }
}
