//! The ACPI power button: `struct input_event`s read from every
//! `/dev/input/event*`. QEMU's `system_powerdown` presses it.

use std::io::Read;
use std::sync::mpsc::Sender;

use crate::say;
use crate::supervise::Event;

/// `EV_KEY` from `<linux/input-event-codes.h>`.
pub const EV_KEY: u16 = 0x01;
/// `KEY_POWER` from `<linux/input-event-codes.h>`.
pub const KEY_POWER: u16 = 116;
/// Size of the `struct timeval` at the start of an event (two longs).
const TIME_SIZE: usize = 2 * std::mem::size_of::<libc::c_long>();
/// Size of one `struct input_event` (24 bytes on 64-bit Linux).
pub const EVENT_SIZE: usize = TIME_SIZE + 8;

/// The parts of a `struct input_event` init looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// Decodes one event in native byte order.
    pub fn decode(bytes: &[u8; EVENT_SIZE]) -> Self {
        let b = &bytes[TIME_SIZE..];
        InputEvent {
            kind: u16::from_ne_bytes([b[0], b[1]]),
            code: u16::from_ne_bytes([b[2], b[3]]),
            value: i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// A press (not the release, not auto-repeat) of the power key.
    pub fn is_power_press(self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Starts one thread per `/dev/input/event*` that sends
/// [`Event::PowerButton`] on each power-key press. Missing devices are fine.
pub fn watch_power_button(tx: &Sender<Event>) {
    let Ok(dir) = std::fs::read_dir("/dev/input") else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("event") {
            continue;
        }
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("input".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&path, &tx));
        if let Err(e) = spawned {
            say!("warning: cannot watch input devices: {e}");
        }
    }
}

fn watch(path: &std::path::Path, tx: &Sender<Event>) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return say!("warning: cannot open {}: {e}", path.display()),
    };
    let mut buf = [0u8; EVENT_SIZE * 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return say!("warning: reading {} failed: {e}", path.display()),
        };
        // evdev returns whole events only.
        for chunk in buf[..n].chunks_exact(EVENT_SIZE) {
            let event = InputEvent::decode(chunk.try_into().expect("chunk is EVENT_SIZE"));
            if event.is_power_press() && tx.send(Event::PowerButton).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut b = [0xAAu8; EVENT_SIZE]; // timestamp bytes are ignored
        b[TIME_SIZE..TIME_SIZE + 2].copy_from_slice(&kind.to_ne_bytes());
        b[TIME_SIZE + 2..TIME_SIZE + 4].copy_from_slice(&code.to_ne_bytes());
        b[TIME_SIZE + 4..].copy_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn event_is_24_bytes_on_x86_64() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(EVENT_SIZE, 24);
    }

    #[test]
    fn power_press_is_recognised() {
        let e = InputEvent::decode(&raw(EV_KEY, KEY_POWER, 1));
        assert_eq!(
            e,
            InputEvent {
                kind: 1,
                code: 116,
                value: 1
            }
        );
        assert!(e.is_power_press());
    }

    #[test]
    fn release_repeat_sync_and_other_keys_are_not() {
        assert!(!InputEvent::decode(&raw(EV_KEY, KEY_POWER, 0)).is_power_press());
        assert!(!InputEvent::decode(&raw(EV_KEY, KEY_POWER, 2)).is_power_press());
        assert!(!InputEvent::decode(&raw(0, 0, 0)).is_power_press());
        assert!(!InputEvent::decode(&raw(EV_KEY, 30, 1)).is_power_press());
    }
}
