//! The end of each tool's `--help` (not `-h`): exit status, environment, files and
//! the manual page, as the page itself says them.

/// `(code, meaning)` of the exit statuses every tool shares.
const COMMON: &[(&str, &str)] = &[
    ("64", "usage: bad flags, unknown jail name, nothing named"),
    ("66", "a source or root directory is missing"),
    (
        "69",
        "a mount, unmount, start, stop or update command failed",
    ),
    ("73", "an upper, work, target or log dir cannot be created"),
    ("74", "writing standard output failed (not a closed pipe)"),
    (
        "75",
        "busy mount, live upper, jail locked by another run, timeout",
    ),
    (
        "77",
        "not permitted: not root, or a symbolic link in a target path",
    ),
    ("78", "the configuration file is invalid"),
    ("130", "interrupted"),
];

/// The text after the options in `TOOL --help`.
pub(crate) fn after_long_help(tool: &str) -> String {
    let ok = match tool {
        "jmount" => {
            "everything was mounted, or already was (--status: every layer shown is mounted as configured)"
        }
        "junmount" => "everything was unmounted, or was not mounted",
        "jclean" => "every upper dir was emptied (or counted, or listed)",
        _ => "every update succeeded",
    };
    let mut text = String::from("EXIT STATUS\n");
    let mut code =
        |status: &str, meaning: &str| text.push_str(&format!("  {status:<5}{meaning}\n"));
    code("0", ok);
    if tool == "jmount" {
        code(
            "1",
            "--status: some layer shown is not mounted as configured",
        );
    }
    for (status, meaning) in COMMON {
        code(status, meaning);
    }
    text.push_str("  With several jails, the status is that of the first jail that failed.\n");
    text.push_str(
        "\nENVIRONMENT\n\
         \x20 JLAYERS_CONF      the configuration file, unless -c is given\n\
         \x20 JLAYERS_PLATFORM  freebsd or linux: the backend, instead of this system's\n",
    );
    text.push_str(
        "\nFILES\n\
         \x20 /usr/local/etc/jlayers.conf  configuration (FreeBSD; /etc/jlayers.conf on Linux)\n\
         \x20 /var/run/jlayers/JAIL.lock   lock files (/run/jlayers on Linux)\n",
    );
    if tool == "jupdate" {
        text.push_str("  /var/log/jlayers/JAIL.log    each jail's log, appended to\n");
    }
    text.push_str(&format!("\nSee {tool}(8) and jlayers.conf(5).\n"));
    text
}
