//! Console output: every line init prints starts with
//! [`nodeos_manifest::console::PREFIX`].

use std::io::Write;

/// Prints one `nodeos-init: …` line on stderr (the console). Never panics,
/// even when the console is gone.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line(::std::format_args!($($arg)*))
    };
}

#[doc(hidden)]
pub fn line(args: std::fmt::Arguments<'_>) {
    let text = format!("{}{args}\n", nodeos_manifest::console::PREFIX);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints a marker line from [`nodeos_manifest::console`] exactly as it is.
pub fn marker(line: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}
