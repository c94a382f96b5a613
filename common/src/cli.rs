//! Flags every tool shares, argument parsing with the contract's exit status, and
//! the selection of jails.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser};

use crate::config::Config;
use crate::exit::{Coded, Domain, ExitCode};

/// `-c`, `-a`, `-n`, `-q`, `-v` and the jail names.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// Configuration file
    ///
    /// [default: $JLAYERS_CONF, else /etc/jlayers.conf on Linux,
    /// /usr/local/etc/jlayers.conf on FreeBSD]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Every jail in the configuration file, in file order (none: 78, unless it
    /// sets allow_empty)
    #[arg(short = 'a', long = "all")]
    pub(crate) all: bool,

    /// Print what would be done; change nothing
    #[arg(short = 'n', long = "dry-run")]
    pub(crate) dry_run: bool,

    /// Print only errors: no report line for what succeeded
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// Say what is done, one line per action
    #[arg(short = 'v', long = "verbose")]
    pub(crate) verbose: bool,

    /// Records as JSON Lines on stdout, one object each, instead of TAB-separated
    /// lines
    #[arg(long = "json")]
    pub(crate) json: bool,

    /// FreeBSD's spelling of --json (libxo): --libxo json
    #[arg(long = "libxo", value_name = "FORMAT", value_parser = parse_libxo)]
    pub(crate) libxo: Option<String>,

    /// Jails to work on, by name from the configuration file; '-' reads names from
    /// standard input, one a line
    #[arg(value_name = "JAIL")]
    pub(crate) jails: Vec<OsString>,

    /// The layers to work on (`--layer`, for the tools that take it): all when
    /// empty.
    #[arg(skip)]
    pub(crate) layers: Vec<String>,

    /// How `layers` treats a nested layer named without its parent.
    #[arg(skip = Nested::Alone)]
    pub(crate) nested: Nested,
}

/// `--layer NAME` of jmount, junmount and jclean.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct LayerChoice {
    /// Only layer NAME of each jail, with the layers nested inside it; repeatable
    ///
    /// Only layer NAME of each jail (a jail without it is left alone), with the
    /// layers nested inside it, which stand on it (taken along, and said so);
    /// repeatable. jmount refuses a nested layer without the layer it stands on.
    #[arg(long = "layer", value_name = "NAME")]
    pub(crate) layers: Vec<String>,
}

impl LayerChoice {
    /// `common` with this choice of layers.
    pub(crate) fn apply(&self, common: &Common, nested: Nested) -> Common {
        Common {
            layers: self.layers.clone(),
            nested,
            ..common.clone()
        }
    }
}

/// Whether a nested layer may be chosen without the layer it stands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nested {
    /// jmount: a nested layer mounted without its parent would land in the jail's
    /// own directory, under where the parent later goes.
    NeedsParent,
    /// junmount, jclean, --status: each layer stands alone.
    Alone,
}

/// What is wrong with the jails or layers named on the command line.
#[derive(Debug)]
pub(crate) enum UsageError {
    /// `--layer NAME`: the file has no such layer.
    NoSuchLayer { name: String, config: PathBuf },
    /// jmount `--layer`: a nested layer named without the layer it stands on.
    ParentNotNamed {
        layer: String,
        jail: String,
        parent: String,
    },
    /// Neither jail names nor `--all`.
    NoJailNamed,
    /// `-` read no name.
    NoJailOnStdin,
    /// Jail names and `--all` both.
    NamesAndAll,
    /// `--all` on a file with no jail (not `allow_empty`): the file's mistake.
    NoJailForAll { config: PathBuf },
    /// `-`: standard input could not be read.
    Stdin(io::Error),
    /// A name the file has no jail of.
    NoSuchJail { name: OsString, config: PathBuf },
    /// jupdate `-i` with other than one jail.
    InteractiveNotOne,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::NoSuchLayer { name, config } => {
                write!(f, "--layer {name}: no such layer in {}", config.display())
            }
            UsageError::ParentNotNamed {
                layer,
                jail,
                parent,
            } => write!(
                f,
                "--layer {layer}: jail {jail}: it stands on layer {parent}: name that too"
            ),
            UsageError::NoJailNamed => f.write_str("no jail named (give JAIL... or --all)"),
            UsageError::NoJailOnStdin => f.write_str("no jail named on standard input"),
            UsageError::NamesAndAll => f.write_str("give jail names or --all, not both"),
            UsageError::NoJailForAll { config } => write!(
                f,
                "{}: no jail configured for --all (set allow_empty = true in [defaults] if that is meant)",
                config.display()
            ),
            // The cause, shown after it, says what failed.
            UsageError::Stdin(_) => f.write_str("stdin"),
            UsageError::NoSuchJail { name, config } => write!(
                f,
                "{}: no such jail in {}",
                name.to_string_lossy(),
                config.display()
            ),
            UsageError::InteractiveNotOne => f.write_str("-i works on exactly one jail"),
        }
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsageError::Stdin(source) => Some(source),
            _ => None,
        }
    }
}

impl Coded for UsageError {
    /// 64, also for stdin unreadable (what was named cannot be known); a file
    /// with no jail is the file's mistake (78).
    fn code(&self) -> ExitCode {
        match self {
            UsageError::NoJailForAll { .. } => ExitCode::Config,
            _ => ExitCode::Usage,
        }
    }
}

/// Restrict each selected jail to the layers `names` (and the layers nested in
/// them), in its own order. An unknown name is a usage error; a note says which
/// nested layers were taken along.
pub(crate) fn restrict_layers(
    cfg: &mut Config,
    jails: &[usize],
    names: &[String],
    nested: Nested,
) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    for name in names {
        if !cfg.layers.iter().any(|layer| &layer.name == name) {
            return Err(Domain::error(UsageError::NoSuchLayer {
                name: name.clone(),
                config: cfg.path.clone(),
            }));
        }
    }
    let mut along = Vec::new();
    for &index in jails {
        let jail = &cfg.jails[index];
        let chosen = |i: usize| names.contains(&cfg.layers[i].name);
        // Layer `inner` stands on `outer`: its target lies strictly below.
        let on = |inner: usize, outer: usize| {
            let (a, b) = (&cfg.layers[inner].target, &cfg.layers[outer].target);
            a != b && a.starts_with(b)
        };
        let mut keep = Vec::new();
        for &layer in &jail.layers {
            let parent_chosen = jail.layers.iter().any(|&o| on(layer, o) && chosen(o));
            if chosen(layer) || parent_chosen {
                if nested == Nested::NeedsParent {
                    if let Some(&parent) = jail
                        .layers
                        .iter()
                        .find(|&&o| on(layer, o) && !keep.contains(&o))
                    {
                        return Err(Domain::error(UsageError::ParentNotNamed {
                            layer: cfg.layers[layer].name.clone(),
                            jail: jail.name.clone(),
                            parent: cfg.layers[parent].name.clone(),
                        }));
                    }
                }
                if !chosen(layer) && !along.contains(&cfg.layers[layer].name) {
                    along.push(cfg.layers[layer].name.clone());
                }
                keep.push(layer);
            }
        }
        cfg.jails[index].layers = keep;
    }
    Ok(along)
}

impl Common {
    /// Whether records are JSON (`--json` or `--libxo json`).
    pub(crate) fn json(&self) -> bool {
        self.json || self.libxo.is_some()
    }
}

/// `--libxo FORMAT`: only `json` (with libxo's own modifiers after a comma, which
/// change nothing here).
pub(crate) fn parse_libxo(arg: &str) -> Result<String, String> {
    match arg.split([',', ':']).next() {
        Some("json") => Ok(arg.to_string()),
        _ => Err(format!("{arg:?}: only json is supported")),
    }
}

/// Parse the command line. `--help` and `--version` exit 0; any other problem is a
/// one-line message and exit 64.
pub fn parse<T: Parser>(tool: &str) -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(err) => {
            use clap::error::ErrorKind::*;
            if matches!(err.kind(), DisplayHelp | DisplayVersion) {
                use std::io::Write;
                let text = err.render().to_string();
                let mut stdout = std::io::stdout().lock();
                // A closed pipe is no error; anything else is 74.
                let written = stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush());
                if let Err(write_err) = written.or_else(|io_err| match io_err.kind() {
                    std::io::ErrorKind::BrokenPipe => Ok(()),
                    _ => Err(io_err),
                }) {
                    let _ = writeln!(std::io::stderr(), "{tool}: stdout: {write_err}");
                    std::process::exit(ExitCode::IoErr.code());
                }
                std::process::exit(0);
            }
            let text = err.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("bad usage").to_string();
            // "the following required arguments were not provided:" names them
            // on the next line: one line all the same.
            if first.ends_with(':') {
                if let Some(next) = lines.next().filter(|l| !l.starts_with("Usage:")) {
                    first = format!("{first} {next}");
                }
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            // Never a panic when stderr is gone (eprintln! would).
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{tool}: {first} (see '{tool} --help')");
            std::process::exit(ExitCode::Usage.code());
        }
    }
}

/// The jails to work on, in the order given (file order with `--all`), each once.
/// Unknown names are a usage error before anything is done.
pub(crate) fn select(cfg: &Config, args: &Common) -> Result<Vec<usize>> {
    if args.all {
        return select_all(cfg, args);
    }
    if args.jails.is_empty() {
        return Err(Domain::error(UsageError::NoJailNamed));
    }
    let names = named(args)?;
    if names.is_empty() {
        return Err(Domain::error(UsageError::NoJailOnStdin));
    }
    indices(cfg, &names)
}

/// `--all`: every jail, in file order.
fn select_all(cfg: &Config, args: &Common) -> Result<Vec<usize>> {
    if !args.jails.is_empty() {
        return Err(Domain::error(UsageError::NamesAndAll));
    }
    // A file with no jail is a broken template more often than a choice:
    // deployed, it would pass as a success.
    if cfg.jails.is_empty() && !cfg.allow_empty {
        return Err(Domain::error(UsageError::NoJailForAll {
            config: cfg.path.clone(),
        }));
    }
    Ok((0..cfg.jails.len()).collect())
}

/// The names given, `-` replaced by those read from stdin.
fn named(args: &Common) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = Vec::new();
    for name in &args.jails {
        if name == "-" {
            let mut raw = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut raw)
                .map_err(|e| Domain::error(UsageError::Stdin(e)))?;
            names.extend(names_from(&raw));
        } else {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// Each name's jail, once, in the order named; an unknown one is a usage error.
fn indices(cfg: &Config, names: &[OsString]) -> Result<Vec<usize>> {
    // By name, once: a long list on stdin costs no scan of the file per name.
    let by_name: std::collections::HashMap<&str, usize> = cfg
        .jails
        .iter()
        .enumerate()
        .rev()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let index = name
            .to_str()
            .and_then(|s| by_name.get(s).copied())
            .ok_or_else(|| {
                Domain::error(UsageError::NoSuchJail {
                    name: name.clone(),
                    config: cfg.path.clone(),
                })
            })?;
        if seen.insert(index) {
            out.push(index);
        }
    }
    Ok(out)
}

/// Jail names as read from stdin: one a line, surrounding white space (a CR
/// too) dropped, blank lines skipped. Bytes are kept as they are: a name that is
/// not UTF-8 matches no jail and is reported as given.
pub fn names_from(raw: &[u8]) -> Vec<OsString> {
    raw.split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .map(|l| std::ffi::OsStr::from_bytes(l).to_os_string())
        .collect()
}

/// The longest age or timeout taken: 100 years. Anything longer means "never" and
/// would overflow the clock arithmetic.
pub const MAX_AGE_SECS: u64 = 100 * 365 * 86400;

/// An age or duration as the tools take it: a number and a unit, `s`, `m`, `h`, `d`
/// or `w` (`90s`, `12h`, `7d`); a bare number is refused. At most 100 years.
pub fn parse_age(arg: &str) -> Result<std::time::Duration, String> {
    let arg = arg.trim();
    let split = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (num, unit) = arg.split_at(split);
    let mult = match unit {
        // A bare number is refused: `find -mtime 7` means days, so guessing
        // seconds would delete what the administrator meant to keep.
        "" if !num.is_empty() => {
            return Err(format!(
                "{arg:?}: give a unit: s, m, h, d or w (e.g. {num}d for {num} days)"
            ));
        }
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{arg:?}: unknown unit {unit:?} (s, m, h, d, w)")),
    };
    if num.is_empty() {
        return Err(format!(
            "{arg:?}: expected a number and a unit, e.g. 12h or 7d"
        ));
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&secs| secs <= MAX_AGE_SECS)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{arg:?}: too large (at most 100 years, 5214w)"))
}

/// A timeout: an age of at least one second.
pub(crate) fn parse_timeout(arg: &str) -> Result<std::time::Duration, String> {
    let bare = arg.trim();
    // A bare number of a time limit most likely means seconds (timeout(1)):
    // suggest that first, where an age's "7" more likely means days.
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{bare:?}: give a unit: s, m, h, d or w (e.g. {bare}s for {bare} seconds)"
        ));
    }
    let age = parse_age(arg)?;
    if age.is_zero() {
        return Err(format!("{:?}: give at least 1s", arg.trim()));
    }
    Ok(age)
}

/// A directory named on the command line where the configuration takes only an
/// absolute path (`--log-dir`, as `log_dir`): a relative one would depend on the
/// directory cron or Ansible happens to run in. Any bytes, not only UTF-8.
pub(crate) fn abs_dir() -> impl clap::builder::TypedValueParser<Value = std::path::PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::PathBufValueParser::new().try_map(|path| {
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(format!(
                "{:?} is not an absolute path (as log_dir in the configuration)",
                path
            ))
        }
    })
}

/// The most worker threads or jails at a time: more buys nothing on any machine
/// jlayers runs on, and each thread costs a stack and start-up time.
pub(crate) const MAX_JOBS: usize = 256;

/// `-j N`: 1 to [`MAX_JOBS`].
pub(crate) fn parse_jobs(arg: &str) -> Result<usize, String> {
    match arg.trim().parse::<usize>() {
        Ok(jobs) if (1..=MAX_JOBS).contains(&jobs) => Ok(jobs),
        _ => Err(format!("{arg:?}: give a number from 1 to {MAX_JOBS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages() {
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_age("90").unwrap_err().contains("s, m, h, d or w"));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86400)));
        assert!(parse_age("7y").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("").is_err());
        // Found by hand: these overflowed the clock arithmetic (issue 9).
        for big in [
            "18446744073709551615s",
            "20000000000000w",
            "110000000000000d",
            "5215w",
        ] {
            assert!(parse_age(big).unwrap_err().contains("too large"), "{big}");
        }
        assert_eq!(
            parse_age("5214w"),
            Ok(Duration::from_secs(5214 * 7 * 86400))
        );
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert!(parse_age("0").is_err());
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("30").is_err());
        // A time limit's bare number suggests seconds; an age's, days.
        assert!(
            parse_timeout("600")
                .unwrap_err()
                .contains("e.g. 600s for 600 seconds")
        );
        assert!(parse_age("7").unwrap_err().contains("e.g. 7d for 7 days"));
    }

    #[test]
    fn usage_error_codes_and_lines() {
        use crate::exit::check_domain as check;
        let config = || PathBuf::from("/etc/jlayers.conf");
        check(
            UsageError::NoSuchLayer {
                name: "ports".into(),
                config: config(),
            },
            ExitCode::Usage,
            "--layer ports: no such layer in /etc/jlayers.conf",
        );
        check(
            UsageError::ParentNotNamed {
                layer: "distfiles".into(),
                jail: "web".into(),
                parent: "ports".into(),
            },
            ExitCode::Usage,
            "--layer distfiles: jail web: it stands on layer ports: name that too",
        );
        check(
            UsageError::NoJailNamed,
            ExitCode::Usage,
            "no jail named (give JAIL... or --all)",
        );
        check(
            UsageError::NoJailOnStdin,
            ExitCode::Usage,
            "no jail named on standard input",
        );
        check(
            UsageError::NamesAndAll,
            ExitCode::Usage,
            "give jail names or --all, not both",
        );
        check(
            UsageError::NoJailForAll { config: config() },
            ExitCode::Config,
            "/etc/jlayers.conf: no jail configured for --all (set allow_empty = true in [defaults] if that is meant)",
        );
        check(
            UsageError::Stdin(io::Error::from_raw_os_error(libc::EBADF)),
            ExitCode::Usage,
            &format!("stdin: {}", nix::errno::Errno::EBADF.desc()),
        );
        check(
            UsageError::NoSuchJail {
                name: OsString::from("db"),
                config: config(),
            },
            ExitCode::Usage,
            "db: no such jail in /etc/jlayers.conf",
        );
        check(
            UsageError::InteractiveNotOne,
            ExitCode::Usage,
            "-i works on exactly one jail",
        );
    }

    #[test]
    fn jobs() {
        assert_eq!(parse_jobs("1"), Ok(1));
        assert_eq!(parse_jobs("256"), Ok(256));
        for bad in ["0", "257", "3000", "100000", "-1", "x", ""] {
            assert!(parse_jobs(bad).is_err(), "{bad}");
        }
    }
}
