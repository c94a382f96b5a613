//! What the tools say: messages on stderr as `TOOL: JAIL: LAYER: what happened`,
//! records on stdout as TAB-separated lines. A closed stdout (`| head`) is not an error.

use std::ffi::OsStr;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// How much a run says on stderr: `-q`, the default, `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verbosity {
    /// Errors and problems only.
    Quiet,
    /// And warnings.
    Normal,
    /// And a line per action.
    Verbose,
}

impl Verbosity {
    pub(crate) fn of(quiet: bool, verbose: bool) -> Verbosity {
        if quiet {
            Verbosity::Quiet
        } else if verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }
}

/// stderr messages of one tool run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Messages {
    pub(crate) tool: &'static str,
    pub(crate) level: Verbosity,
}

impl Messages {
    /// An error with its whole chain on one line.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        match err.downcast_ref::<crate::exit::Failures>() {
            Some(failures) => failures.msgs.iter().for_each(|m| self.emit(&[], m)),
            None => self.emit(&[], &crate::exit::message(err)),
        }
    }

    /// A warning: shown unless `-q`.
    pub(crate) fn warn(&self, scope: &[&str], msg: &str) {
        if self.level > Verbosity::Quiet {
            self.emit(scope, msg);
        }
    }

    /// A problem that fails the run, with its scope: shown even with `-q`.
    pub(crate) fn problem(&self, scope: &[&str], msg: &str) {
        self.emit(scope, msg);
    }

    /// A progress note: shown with `-v`.
    pub(crate) fn info(&self, scope: &[&str], msg: &str) {
        if self.level == Verbosity::Verbose {
            self.emit(scope, msg);
        }
    }

    fn emit(&self, scope: &[&str], msg: &str) {
        let mut line = String::from(self.tool);
        for part in scope {
            line.push_str(": ");
            line.push_str(part);
        }
        line.push_str(": ");
        // One message, one line, whatever a path held.
        line.push_str(&msg.replace('\n', "\\n"));
        line.push('\n');
        drawn_around(|| {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        });
    }
}

/// The progress bars on the terminal while they are drawn: every line written
/// meanwhile goes through them, so that none lands on a spinner's line.
static BARS: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

/// Draw lines through `bars` from now on (`None`: straight again).
pub(crate) fn set_bars(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(|p| p.into_inner()) = bars;
}

/// Write with the bars cleared (indicatif's suspend), then drawn again.
fn drawn_around<R>(write: impl FnOnce() -> R) -> R {
    let bars = BARS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match bars {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Set when a write to stdout failed for any reason but a closed pipe: the run
/// then exits 74 (EX_IOERR).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// The tool's name, for the one message about a failed stdout.
static TOOL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Name the tool for messages that no [`Messages`] is at hand for.
pub(crate) fn set_tool(tool: &'static str) {
    let _ = TOOL.set(tool);
}

/// Whether a write to stdout failed (not a closed pipe, which is no error).
pub(crate) fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// A write to stdout failed with `err`: a closed pipe (`| head`) ends the output
/// quietly; anything else is said once on stderr (if stderr can take it) and
/// makes the run exit 74.
pub(crate) fn stdout_error(err: &std::io::Error) {
    if STDOUT_CLOSED.swap(true, Ordering::Relaxed) {
        return;
    }
    if err.kind() == ErrorKind::BrokenPipe {
        return;
    }
    STDOUT_FAILED.store(true, Ordering::Relaxed);
    let tool = TOOL.get().copied().unwrap_or("jlayers");
    let line = format!("{tool}: stdout: {}\n", crate::exit::IoText(err));
    // Never a panic when stderr fails too (eprintln! would).
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `--json`: records go to stdout as JSON Lines instead of TAB-separated lines.
static JSON: AtomicBool = AtomicBool::new(false);

/// Choose the record format for this run.
pub(crate) fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A path as a JSON string: its bytes as UTF-8, any that are not as U+FFFD.
pub(crate) fn path_json(path: &Path) -> serde_json::Value {
    serde_json::Value::String(path.to_string_lossy().into_owned())
}

/// One record in this run's format: the TAB fields, or the JSON object (which gets
/// `"tool"` first).
pub(crate) fn emit(tool: &str, fields: &[&OsStr], object: serde_json::Value) {
    if json() {
        json_record(tool, object);
    } else {
        record(fields);
    }
}

/// One JSON Lines record: `{"tool": TOOL, ...object}`.
pub(crate) fn json_record(tool: &str, object: serde_json::Value) {
    let mut map = serde_json::Map::new();
    map.insert("tool".into(), tool.into());
    if let serde_json::Value::Object(fields) = object {
        map.extend(fields);
    }
    let mut line = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default();
    line.push(b'\n');
    out(&line);
}

/// Write one record (already joined) to stdout; after EPIPE, drop records silently.
fn out(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = drawn_around(|| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes).and_then(|()| stdout.flush())
    });
    if let Err(err) = result {
        stdout_error(&err);
    }
}

/// The line that heads this run's records where they are appended to a log
/// (`>>clean.log`): when and what ran, taken by the first record.
static HEADER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Whether this run's records went to a log under a header.
static HEADED: AtomicBool = AtomicBool::new(false);

/// Make the header of this run: `# TOOL: DATE: ARGS`, `(dry run)` for `-n`. A
/// comment, so that scripts reading the log skip it as they skip blank lines.
pub(crate) fn set_header(tool: &str, dry_run: bool) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let dry = if dry_run { " (dry run)" } else { "" };
    let line = format!(
        "# {tool}: {}{dry}: {}\n",
        utc_timestamp(std::time::SystemTime::now()),
        sh_one_line(&args)
    );
    *HEADER.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
}

/// Whether stdout is a regular file opened to append: a log, not a terminal, a
/// pipe to a script, or a file a script rewrites.
fn appending_to_a_log() -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let stdout = std::io::stdout();
    let appending = fcntl(&stdout, FcntlArg::F_GETFL)
        .is_ok_and(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_APPEND));
    appending
        && nix::sys::stat::fstat(&stdout).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// The header, before this run's first record in a log.
fn head() {
    let header = HEADER.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(header) = header {
        if appending_to_a_log() {
            HEADED.store(true, Ordering::Relaxed);
            out(header.as_bytes());
        }
    }
}

/// An interrupted run's records in a log end with a line saying they are partial.
pub(crate) fn interrupted_note() {
    if HEADED.load(Ordering::Relaxed) {
        out(b"# interrupted: the counts above are partial\n");
    }
}

/// One report line: fields joined by one TAB. Paths are written as their bytes.
pub(crate) fn record(fields: &[&OsStr]) {
    head();
    let mut line = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            line.push(b'\t');
        }
        line.extend_from_slice(field.as_bytes());
    }
    line.push(b'\n');
    out(&line);
}

/// One sh command line, each word quoted as needed.
pub(crate) fn sh_line<S: AsRef<OsStr>>(argv: &[S]) {
    sh_line_with_inputs(argv, &[]);
}

/// One line already in sh form (a comment, a command jlayers quoted itself).
pub(crate) fn sh_raw(line: &str) {
    out(format!("{line}\n").as_bytes());
}

/// One sh command line with files opened for reading on descriptors: `CMD... 3<PATH`.
pub(crate) fn sh_line_with_inputs<S: AsRef<OsStr>>(argv: &[S], inputs: &[(u32, &Path)]) {
    let mut line = Vec::with_capacity(256);
    for (index, word) in argv.iter().enumerate() {
        if index > 0 {
            line.push(b' ');
        }
        quote_into(&mut line, word.as_ref());
    }
    for (fd, path) in inputs {
        line.extend_from_slice(format!(" {fd}<").as_bytes());
        quote_into(&mut line, path.as_os_str());
    }
    line.push(b'\n');
    out(&line);
}

/// The bytes a word may hold and still go to sh(1) unquoted.
const SH_SAFE: [bool; 256] = {
    let mut safe = [false; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        safe[index] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'_' | b'@' | b'%' | b'+' | b'=' | b':' | b',' | b'.' | b'/' | b'-'
            );
        index += 1;
    }
    safe
};

/// Quote a word for sh(1): as is when plainly safe, else in single quotes.
pub(crate) fn sh_quote(word: &OsStr) -> Vec<u8> {
    let mut quoted = Vec::with_capacity(word.len() + 2);
    quote_into(&mut quoted, word);
    quoted
}

/// [`sh_quote`], appended to `line`.
fn quote_into(line: &mut Vec<u8>, word: &OsStr) {
    let bytes = word.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|&byte| SH_SAFE[usize::from(byte)]) {
        line.extend_from_slice(bytes);
        return;
    }
    line.push(b'\'');
    for &byte in bytes {
        if byte == b'\'' {
            line.extend_from_slice(b"'\\''");
        } else {
            line.push(byte);
        }
    }
    line.push(b'\'');
}

/// A command as one sh line whatever its words hold: [`sh_quote`], but a word
/// with a control character (a newline) as `$'...'` with escapes (POSIX.1-2024;
/// FreeBSD's sh, bash, zsh, ksh), so that a log header stays one line.
pub(crate) fn sh_one_line<S: AsRef<OsStr>>(argv: &[S]) -> String {
    let mut line = Vec::new();
    for (index, word) in argv.iter().enumerate() {
        if index > 0 {
            line.push(b' ');
        }
        let bytes = word.as_ref().as_bytes();
        if !bytes.iter().any(|byte| byte.is_ascii_control()) {
            line.extend_from_slice(&sh_quote(word.as_ref()));
            continue;
        }
        line.extend_from_slice(b"$'");
        for &byte in bytes {
            match byte {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\t' => line.extend_from_slice(b"\\t"),
                b'\'' | b'\\' => line.extend_from_slice(&[b'\\', byte]),
                byte if byte.is_ascii_control() => {
                    line.extend_from_slice(format!("\\x{byte:02x}").as_bytes())
                }
                byte => line.push(byte),
            }
        }
        line.push(b'\'');
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Sizes as the report prints them: `1.36 GiB`, or exact bytes with `-b`.
pub fn size(bytes: u64, exact: bool) -> String {
    if exact {
        bytes.to_string()
    } else {
        humansize::format_size(bytes, humansize::BINARY)
    }
}

/// `2026-11-23 20:55:00 UTC`, without a time zone database.
pub(crate) fn utc_timestamp(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let shifted = days as i64 + 719_468;
    let era = shifted.div_euclid(146_097);
    let doe = shifted - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let time =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_467_300);
        assert_eq!(utc_timestamp(time), "2026-11-23 20:55:00 UTC");
        assert_eq!(
            utc_timestamp(std::time::SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
        let leap = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn quoting() {
        let quote = |word: &str| String::from_utf8(sh_quote(OsStr::new(word))).unwrap();
        assert_eq!(quote("/usr/ports"), "/usr/ports");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a\nb"), "'a\nb'");
        assert_eq!(quote("$x"), "'$x'");
    }

    #[test]
    fn one_line() {
        let line = sh_one_line(&["sh", "-c", "echo a\necho 'b'", "x y", "$z"]);
        assert_eq!(line, "sh -c $'echo a\\necho \\'b\\'' 'x y' '$z'");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn sizes() {
        assert_eq!(size(1_460_288_880, false), "1.36 GiB");
        assert_eq!(size(1234, true), "1234");
        assert_eq!(size(0, false), "0 B");
    }
}
