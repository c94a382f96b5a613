//! The rules of jlayers.conf(5), each with the message a writer sees.

use std::path::{Component, Path};

use super::paths::normal;
use super::shared::{any_shared, name_shared, shared_paths};
use super::*;
use crate::exit::{ExitCode, Failures, code_of};

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/jlayers.conf"), Os::Linux)
}

fn err(text: &str) -> String {
    let error = parse(text).unwrap_err();
    assert_eq!(code_of(&error), ExitCode::Config);
    format!("{error:#}")
}

/// `pids`, `memory` and `cpu`: a jail's own over `[defaults]`, key by key;
/// nonsense refused.
#[test]
fn limits() {
    let cfg = parse(
        "[defaults]\npids = 100\nmemory = \"1g\"\n\
         [jail.a]\nroot = '/a'\ncpu = 2\n\
         [jail.b]\nroot = '/b'\npids = 5\ncpu = 0.5\n",
    )
    .unwrap();
    assert_eq!(
        cfg.jails[0].limits,
        Limits {
            pids: Some(100),
            memory: Some((1 << 30, "1g".into())),
            cpu: Some(2.0)
        }
    );
    assert_eq!(cfg.jails[1].limits.pids, Some(5));
    assert_eq!(cfg.jails[1].limits.cpu, Some(0.5));
    assert_eq!(
        parse("[jail.a]\nroot='/a'\n").unwrap().jails[0].limits,
        Limits::default()
    );
    assert!(err("[jail.a]\nroot='/a'\npids = 0\n").contains("pids: 0: at least 1"));
    assert!(err("[defaults]\nmemory = \"lots\"\n").contains("defaults: memory"));
    assert!(err("[jail.a]\nroot='/a'\ncpu = 0\n").contains("cpu: 0"));
    assert!(err("[jail.a]\nroot='/a'\ncpu = \"1\"\n").contains("a number of CPUs"));
}

const SPEC: &str = r#"
[defaults]
upper_root = "/usr/local/var/jlayers"
log_dir    = "/var/log/jlayers"
lock_dir   = "/var/run/jlayers"
update     = ["portmaster", "-a", "-G", "--no-confirm"]

[[layer]]
name   = "ports"
source = "/usr/ports"
target = "usr/ports"
mode   = "union"
union_options = ["noatime"]

[[layer]]
name   = "distfiles"
source = "/usr/ports/distfiles"
target = "usr/ports/distfiles"
mode   = "shared"

[jail.server]
root   = "/usr/local/var/jails/192.168.0.100"
upper.ports = "usr/tmp/foo"

[jail.web]
root   = "/usr/local/var/jails/192.168.0.101"
"#;

#[test]
fn spec_example() {
    let config = parse(SPEC).unwrap();
    assert_eq!(config.layers.len(), 2);
    assert_eq!(
        config.jails.iter().map(|j| &j.name[..]).collect::<Vec<_>>(),
        ["server", "web"]
    );
    let server = &config.jails[0];
    assert_eq!(server.layers, [0, 1]);
    assert_eq!(server.uppers[&0], Upper::InRoot("usr/tmp/foo".into()));
    assert_eq!(
        config.jails[1].uppers[&0],
        Upper::Host("/usr/local/var/jlayers/web/ports".into())
    );
    assert!(!config.jails[1].uppers.contains_key(&1));
}

/// The first mistakes of a config writer get what was most likely meant.
#[test]
fn hints_for_first_mistakes() {
    let msg = err("[defaults]\nupdate = \"portmaster -a -G\"\n");
    assert!(
        msg.ends_with(
            "expected a sequence; write it as an array, e.g. update = [\"portmaster\", \"-a\", \"-G\"]"
        ),
        "{msg}"
    );
    let msg = err("[jail.www.example.com]\nroot = \"/j/www\"\n");
    assert!(
        msg.ends_with(
            "[jail.www.example.com] is a jail \"www\" with tables below it; a jail \
             name is one word (letters, digits, '-' and '_'), e.g. [jail.www-example-com]"
        ),
        "{msg}"
    );
    // Other errors get no guess.
    assert!(!err("[jail.w]\nroot = 5\n").contains("; "));
    assert!(err("[jail.\"www.example.com\"]\nroot = \"/j/www\"\n").contains("bad jail name"));
}

#[test]
fn defaults_and_file_order() {
    let config = parse(
        "[[layer]]\nname='p'\nsource='/usr/ports/'\n[jail.zz]\nroot='/j/zz'\n[jail.aa]\nroot='/j/aa'\n",
    )
    .unwrap();
    assert_eq!(config.layers[0].target, Path::new("usr/ports"));
    assert_eq!(config.layers[0].mode, Mode::Union);
    assert_eq!(config.layers[0].union_options, ["noatime"]);
    assert_eq!(config.lock_dir, Path::new("/run/jlayers"));
    assert_eq!(config.upper_root, Path::new("/var/lib/jlayers"));
    assert!(!config.allow_empty);
    assert_eq!(config.update, ["portmaster", "-a", "-G", "--no-confirm"]);
    assert_eq!(config.jails[0].name, "zz");
    let freebsd = Config::parse("[jail.a]\nroot='/j'\n", Path::new("x"), Os::FreeBsd).unwrap();
    assert_eq!(freebsd.lock_dir, Path::new("/var/run/jlayers"));
    assert_eq!(freebsd.upper_root, Path::new("/usr/local/var/jlayers"));
}

#[test]
fn unknown_key_names_line_and_column() {
    let msg = err("[[layer]]\nname = 'p'\nsource = '/usr/ports'\n  colour = 'red'\n");
    assert!(
        msg.starts_with("/etc/jlayers.conf:4:3: unknown field `colour`"),
        "{msg}"
    );
    let msg = err("[jail.a]\nroot='/j'\nstrat = ['x']\n");
    assert!(
        msg.starts_with("/etc/jlayers.conf:3:1: unknown field `strat`"),
        "{msg}"
    );
    let msg = err("[defaults]\nupper_rot = '/x'\n");
    assert!(msg.contains(":2:1: unknown field `upper_rot`"), "{msg}");
    let msg = err("[[layer]]\nname='p'\nsource='/p'\nmode='unoin'\n");
    assert!(msg.contains(":4:6: unknown variant `unoin`"), "{msg}");
    assert!(!err("[x\n").contains('\n'));
}

const LAYER: &str = "[[layer]]\nname='p'\nsource='/usr/ports'\n";
const SHARED: &str = "[[layer]]\nname='p'\nsource='/usr/ports'\nmode='shared'\nupper_fs='tmpfs'\n";

/// Each text is refused with its message.
fn fires(cases: &[(&str, &str)]) {
    for (text, want) in cases {
        let msg = err(text);
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
    }
}

/// Names: each once, each one known.
#[test]
fn validation_rules_names() {
    fires(&[
        (&format!("{LAYER}{LAYER}"), "layer p: duplicate layer name"),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nlayers=['q']\n"),
            "jail a: unknown layer q",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupper.q='x'\n"),
            "jail a: upper.q: unknown layer q",
        ),
    ]);
}

/// Paths: absolute where a host path, relative in a jail, never `..`.
#[test]
fn validation_rules_paths() {
    fires(&[
        (
            &format!("{LAYER}[jail.a]\nroot='j'\n"),
            "jail a: root: \"j\" is not an absolute path",
        ),
        (
            "[[layer]]\nname='p'\nsource='usr/ports'\n",
            "layer p: source: \"usr/ports\" is not an absolute path",
        ),
        (
            "[[layer]]\nname='p'\nsource='/p'\ntarget='/usr/ports'\n",
            "layer p: target: \"/usr/ports\" is absolute",
        ),
        (
            "[[layer]]\nname='p'\nsource='/p'\ntarget='usr/../../etc'\n",
            "layer p: target: \"usr/../../etc\" contains '..'",
        ),
    ]);
}

/// A nested layer after its parent, in the file and in a jail.
#[test]
fn validation_rules_nesting() {
    fires(&[
        (
            "[[layer]]\nname='d'\nsource='/d'\ntarget='usr/ports/distfiles'\n[[layer]]\nname='p'\nsource='/p'\ntarget='usr/ports'\n",
            "layer d: listed before its parent layer p",
        ),
        (
            "[[layer]]\nname='p'\nsource='/p'\ntarget='usr/ports'\n[[layer]]\nname='d'\nsource='/d'\ntarget='usr/ports/distfiles'\n[jail.a]\nroot='/j'\nlayers=['d','p']\n",
            "jail a: layer d: listed before its parent layer p",
        ),
    ]);
}

/// An upper dir never inside its layer's target or source.
#[test]
fn validation_rules_uppers() {
    fires(&[
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupper.p='usr/ports/up'\n"),
            "jail a: layer p: upper dir /j/usr/ports/up is inside the layer's target",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupper.p='/usr/ports/up'\n"),
            "jail a: layer p: upper dir /usr/ports/up is inside the layer's source",
        ),
        (
            &format!("[defaults]\nupper_root='/usr/ports/x'\n{LAYER}[jail.a]\nroot='/j'\n"),
            "jail a: layer p: upper dir /usr/ports/x/a/p is inside the layer's source",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupper.p='../x'\n"),
            "jail a: layer p: upper: \"../x\" contains '..'",
        ),
    ]);
}

/// Jails: names, commands, and roots and uppers apart.
#[test]
fn validation_rules_jails() {
    fires(&[
        (
            &format!("{LAYER}[jail.'a.b']\nroot='/j'\n"),
            "jail a.b: bad jail name",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupdate=[]\n"),
            "jail a: update: empty command",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\n[jail.b]\nroot='/j/'\n"),
            "jail b: same root as jail a: /j",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j/a'\nupper.p='/u'\n[jail.b]\nroot='/u/b'\n"),
            "jail a: layer p: upper dir /u is or holds the root of jail b",
        ),
        (
            &format!(
                "{LAYER}[jail.a]\nroot='/j/a'\nupper.p='/u'\n[jail.b]\nroot='/j/b'\nupper.p='/u/b'\n"
            ),
            "jail b: layer p: upper dir /u/b is, holds or lies in the upper dir of jail a: layer p",
        ),
    ]);
}

/// A tmpfs upper: only on a union layer, with a size in bytes.
#[test]
fn validation_rules_tmpfs() {
    fires(&[
        (
            &format!("{LAYER}upper_size='4g'\n[jail.a]\nroot='/j'\n"),
            "layer p: upper_size: only with upper_fs = \"tmpfs\"",
        ),
        (
            &format!("{LAYER}upper_fs='tmpfs'\nupper_size='4x'\n[jail.a]\nroot='/j'\n"),
            "layer p: upper_size: \"4x\": a number of bytes",
        ),
        (
            &format!("{LAYER}upper_fs='zfs'\n[jail.a]\nroot='/j'\n"),
            "unknown variant `zfs`",
        ),
        (
            &format!("{SHARED}[jail.a]\nroot='/j'\n"),
            "layer p: upper_fs: only a union layer has an upper dir",
        ),
        (
            &format!("{LAYER}[jail.a]\nroot='/j'\nupper_size='1g'\n"),
            "jail a: upper_size: only with upper_fs",
        ),
    ]);
}

/// A path taken as written is the one its components make.
#[test]
fn normal_as_written_or_rebuilt() {
    for written in [
        "/a/b", "a/b", "/a//b", "/a/./b", "/a/b/", "./a", "a/.", "/", ".", "/a/../b", "a/..b",
        "/.a/b.", "a", "//a",
    ] {
        let by_components = (|| {
            let mut out = PathBuf::new();
            for component in Path::new(written).components() {
                match component {
                    Component::ParentDir => return None,
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            Some(out)
        })();
        let got = normal(Path::new(written), written).ok();
        assert_eq!(got, by_components, "{written:?}");
        if let Some(path) = got {
            assert_eq!(
                path.as_os_str().as_encoded_bytes(),
                {
                    let mut bytes = Vec::new();
                    for (index, component) in path.components().enumerate() {
                        if index > 1 || (index == 1 && !path.is_absolute()) {
                            bytes.push(b'/');
                        }
                        bytes.extend_from_slice(component.as_os_str().as_encoded_bytes());
                    }
                    bytes
                },
                "{written:?}: bytes as the components write them"
            );
        }
    }
}

/// The one-sort check says a rule is broken whenever the rule-by-rule one
/// names one (it may say so when none is: the rules then run one by one).
#[test]
fn quick_shared_check_misses_nothing() {
    let layer = |name: &str| Layer {
        name: name.into(),
        source: "/src".into(),
        target: "t".into(),
        mode: Mode::Union,
        union_options: Vec::new(),
        tmpfs: None,
    };
    let layers = [layer("p"), layer("q")];
    let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
    let (mut broken, mut fine) = (0, 0);
    for _ in 0..20_000 {
        let jails = rng.jails();
        let named = name_shared(&jails, &layers).is_err();
        assert!(
            !named || any_shared(&jails),
            "missed: {:?}",
            jails
                .iter()
                .map(|j| (&j.root, &j.uppers))
                .collect::<Vec<_>>()
        );
        if named {
            broken += 1
        } else {
            fine += 1
        }
        assert_eq!(shared_paths(&jails, &layers).is_err(), named);
    }
    assert!(broken > 1000 && fine > 1000, "{broken} {fine}");
}

/// A seeded generator of jail sets for [`quick_shared_check_misses_nothing`].
struct Lcg(u64);

impl Lcg {
    const PATHS: [&str; 10] = [
        "/", "/a", "/a/b", "/a/b/c", "/a-b", "/a-b/c", "/ab", "/a/bc", "/b", "/b/a",
    ];

    /// A number below `n`.
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize % n
    }

    fn path(&mut self) -> PathBuf {
        Self::PATHS[self.next(Self::PATHS.len())].into()
    }

    /// One to three jails, each with a root and up to two host uppers.
    fn jails(&mut self) -> Vec<Jail> {
        (0..1 + self.next(3))
            .map(|number| {
                let mut uppers = BTreeMap::new();
                for layer_index in 0..self.next(3) {
                    uppers.insert(layer_index, Upper::Host(self.path()));
                }
                Jail {
                    name: format!("j{number}"),
                    root: self.path(),
                    layers: uppers.keys().copied().collect(),
                    uppers,
                    tmpfs: BTreeMap::new(),
                    upper_group: None,
                    update: None,
                    start: None,
                    stop: None,
                    network: None,
                    limits: Limits::default(),
                    log_max: None,
                }
            })
            .collect()
    }
}

/// 10,000 jails: the file loads, and a conflict written last is still found,
/// naming the first jail it conflicts with (the rules index paths instead of
/// comparing everything with everything; the benchmark times it).
fn big() -> &'static str {
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIG.get_or_init(|| {
        use std::fmt::Write;
        let mut big = String::from(
            "[defaults]\nupper_root='/u'\n\
             [[layer]]\nname='ports'\nsource='/usr/ports'\n\
             [[layer]]\nname='distfiles'\nsource='/d'\ntarget='usr/ports/distfiles'\nmode='shared'\n\
             [[layer]]\nname='src'\nsource='/usr/src'\nmode='readonly'\n",
        );
        for number in 1..=10_000 {
            write!(big, "[jail.j{number}]\nroot='/j/j{number}'\n").unwrap();
        }
        big
    })
}

const JAIL_X: &str = "[jail.x]\nroot='/k/x'\n";

/// Each text written after the 10,000 jails is refused with its message.
fn fires_after_big(cases: &[(String, &str)]) {
    let big = big();
    for (tail, want) in cases {
        let msg =
            parse(&format!("{big}{tail}")).map_or_else(|e| format!("{e:#}"), |_| tail.clone());
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
    }
}

#[test]
fn large_config_every_rule_still_fires() {
    let config = parse(big()).unwrap();
    assert_eq!(config.jails.len(), 10_000);
    assert_eq!(
        config.jails[9_999].uppers[&0],
        Upper::Host("/u/j10000/ports".into())
    );
}

/// Roots and uppers against every jail's.
#[test]
fn large_config_roots_and_uppers_still_fire() {
    fires_after_big(&[
        (
            "[jail.x]\nroot='/j/j1/'\n".into(),
            "jail x: same root as jail j1: /j/j1",
        ),
        (
            format!("{JAIL_X}upper.ports='/j'\n"),
            "jail x: layer ports: upper dir /j is or holds the root of jail j1",
        ),
        (
            format!("{JAIL_X}upper.ports='/j/j5000'\n"),
            "jail x: layer ports: upper dir /j/j5000 is or holds the root of jail j5000",
        ),
        (
            format!("{JAIL_X}upper.ports='/u/j10000/ports/in'\n"),
            "jail x: layer ports: upper dir /u/j10000/ports/in is, holds or lies in the upper dir of jail j10000: layer ports",
        ),
        (
            format!("{JAIL_X}upper.ports='/u/j9999'\n"),
            "upper dir /u/j9999 is, holds or lies in the upper dir of jail j9999: layer ports",
        ),
        (
            format!("{JAIL_X}upper.ports='/u'\n"),
            "upper dir /u is, holds or lies in the upper dir of jail j1: layer ports",
        ),
    ]);
    // The same root written last, as the first jail's was: the pair is named.
    let msg = err(&format!("{}[jail.x]\nroot='/j/j10000/./'\n", big()));
    assert!(msg.contains("jail x: same root as jail j10000"), "{msg}");
}

/// A jail's own layer list and names.
#[test]
fn large_config_layer_rules_still_fire() {
    fires_after_big(&[
        (
            format!("{JAIL_X}layers=['src','distfiles','ports']\n"),
            "jail x: layer distfiles: listed before its parent layer ports",
        ),
        (
            format!("{JAIL_X}layers=['ports','nope']\n"),
            "jail x: unknown layer nope",
        ),
        (
            format!("{JAIL_X}layers=['src','ports','src']\n"),
            "jail x: layer src listed twice",
        ),
        (
            format!("{JAIL_X}upper.src='/up'\n"),
            "jail x: layer src: upper given for a layer that is not a union layer",
        ),
        (
            "[jail.'x y']\nroot='/k/x'\n".into(),
            "jail x y: bad jail name",
        ),
    ]);
}

/// Sorted by bytes, `/u/a/p!x` and `/u/a/p.x` fall between `/u/a/p` and
/// `/u/a/p/x`: neither lies in `/u/a/p`, and neither holds it.
#[test]
fn neighbours_in_sort_order_are_not_nested() {
    let layer = "[[layer]]\nname='p'\nsource='/usr/ports'\n";
    for other in ["/u/a/p!x", "/u/a/p.x", "/u/a/o", "/u/a/p-"] {
        let text = format!(
            "{layer}[jail.a]\nroot='/j/a'\nupper.p='/u/a/p'\n\
             [jail.b]\nroot='/j/b'\nupper.p='{other}'\n\
             [jail.c]\nroot='/j/a!'\n[jail.d]\nroot='/j/a.d'\n"
        );
        assert!(parse(&text).is_ok(), "{other}: {}", err(&text));
    }
    let msg = err(&format!(
        "{layer}[jail.a]\nroot='/j/a'\nupper.p='/u/a/p!x'\n[jail.b]\nroot='/j/b'\nupper.p='/u/a/p!x/in'\n"
    ));
    assert!(msg.contains("lies in the upper dir of jail a"), "{msg}");
    let msg = err(&format!(
        "{layer}[jail.a]\nroot='/j/a!'\n[jail.b]\nroot='/j/b'\nupper.p='/j/a!'\n"
    ));
    assert!(msg.contains("is or holds the root of jail a"), "{msg}");
}

/// 2,000 layers: a layer listed before its parent, or on another's target, is
/// found however far apart the two are.
#[test]
fn many_layers_nesting_and_targets() {
    use std::fmt::Write;
    let mut many = String::new();
    for number in 0..2_000 {
        write!(
            many,
            "[[layer]]\nname='l{number}'\nsource='/s/{number}'\ntarget='t/{number}'\n"
        )
        .unwrap();
    }
    let jail = "[jail.a]\nroot='/j'\n";
    let config = parse(&format!("{many}{jail}")).unwrap();
    assert_eq!(config.jails[0].layers.len(), 2_000);
    let msg = err(&format!(
        "{many}[[layer]]\nname='dup'\nsource='/x'\ntarget='t/0'\n{jail}"
    ));
    assert!(msg.contains("layer dup: same target as layer l0"), "{msg}");
    let msg = err(&format!(
        "[[layer]]\nname='in'\nsource='/x'\ntarget='t/0/in'\n{many}{jail}"
    ));
    assert!(
        msg.contains("layer in: listed before its parent layer l0 (mounted inside it)"),
        "{msg}"
    );
    // Two parents after it: the first one listed is named.
    let msg = err(&format!(
        "[[layer]]\nname='in'\nsource='/x'\ntarget='t/5/a/b'\n{many}\
         [[layer]]\nname='mid'\nsource='/y'\ntarget='t/5/a'\n{jail}"
    ));
    assert!(
        msg.contains("layer in: listed before its parent layer l5"),
        "{msg}"
    );
    let msg = err(&format!(
        "{many}[jail.a]\nroot='/j'\nlayers=['l7','l1999','l7']\n"
    ));
    assert!(msg.contains("jail a: layer l7 listed twice"), "{msg}");
}

#[test]
fn tmpfs_uppers_per_layer_or_per_jail() {
    let text = "[[layer]]\nname='p'\nsource='/usr/ports'\nupper_fs='tmpfs'\nupper_size='2g'\n\
                [[layer]]\nname='q'\nsource='/usr/src'\n\
                [jail.a]\nroot='/j/a'\n\
                [jail.b]\nroot='/j/b'\nupper_fs='tmpfs'\n\
                [jail.c]\nroot='/j/c'\nupper_fs='dir'\n";
    let config = parse(text).unwrap();
    let tmpfs_of = |jail: usize| {
        config.jails[jail]
            .tmpfs
            .clone()
            .into_iter()
            .collect::<Vec<_>>()
    };
    // The layer's own setting; a jail's decides for all its union layers.
    assert_eq!(tmpfs_of(0), [(0, Some("2g".to_string()))]);
    assert_eq!(tmpfs_of(1), [(0, None), (1, None)]);
    assert!(tmpfs_of(2).is_empty());
}

#[test]
fn all_digit_jail_name_refused_on_freebsd() {
    let text = "[[layer]]\nname='p'\nsource='/usr/ports'\n[jail.100]\nroot='/j'\n";
    assert!(parse(text).is_ok());
    let error = Config::parse(text, Path::new("f"), Os::FreeBsd).unwrap_err();
    assert_eq!(code_of(&error), ExitCode::Config);
    assert!(
        format!("{error:#}").contains("jail 100: an all-digit jail name is a jail ID"),
        "{error:#}"
    );
    let ok = text.replace("jail.100", "jail.j100");
    assert!(Config::parse(&ok, Path::new("f"), Os::FreeBsd).is_ok());
}

#[test]
fn union_options_that_write_elsewhere_or_are_unknown_refused_on_freebsd() {
    let conf = |opts: &str| {
        format!(
            "[[layer]]\nname='p'\nsource='/usr/ports'\nunion_options = [{opts}]\n[jail.a]\nroot='/j'\n"
        )
    };
    let refused = |opts: &str, want: &str| {
        let error = Config::parse(&conf(opts), Path::new("f"), Os::FreeBsd).unwrap_err();
        assert_eq!(code_of(&error), ExitCode::Config);
        let msg = format!("{error:#}");
        assert!(msg.contains(want), "{msg}");
    };
    refused(
        "'noatime', 'below'",
        "layer p: union_options: \"below\" swaps the layers: the jail would write into the source",
    );
    refused(
        "'target=/usr/ports'",
        "another directory as the writable layer",
    );
    refused(
        "'noatme'",
        "unknown option \"noatme\" (unionfs would ignore it without a word); accepted: noatime, nosuid",
    );
    refused("'copymode'", "unknown option \"copymode\"");
    let ok = "'noatime', 'copymode=masquerade', 'whiteout=whenneeded', 'udir=0755', 'uid=0'";
    assert!(Config::parse(&conf(ok), Path::new("f"), Os::FreeBsd).is_ok());
}

#[test]
fn white_space_only_refused_on_freebsd() {
    let text = "[[layer]]\nname='p'\nsource='/usr/my ports'\n[jail.a]\nroot='/j'\n";
    assert!(parse(text).is_ok());
    let error = Config::parse(text, Path::new("f"), Os::FreeBsd).unwrap_err();
    assert_eq!(code_of(&error), ExitCode::Config);
    assert!(format!("{error:#}").contains("jail a: path with white space: /usr/my ports"));
}

#[test]
fn network_per_jail_or_defaults() {
    let config =
        parse("[jail.a]\nroot = \"/j/a\"\n[jail.b]\nroot = \"/j/b\"\nnetwork = \"host\"\n")
            .unwrap();
    assert_eq!(config.network(&config.jails[0]), Network::None);
    assert_eq!(config.network(&config.jails[1]), Network::Host);
    let config = parse(
        "[defaults]\nnetwork = \"host\"\n[jail.a]\nroot = \"/j/a\"\n\
         [jail.b]\nroot = \"/j/b\"\nnetwork = \"none\"\n",
    )
    .unwrap();
    assert_eq!(config.network(&config.jails[0]), Network::Host);
    assert_eq!(config.network(&config.jails[1]), Network::None);
    let msg = err("[jail.a]\nroot = \"/j/a\"\nnetwork = \"bridge\"\n");
    assert!(
        msg.contains(":3:") && msg.contains("none") && msg.contains("host"),
        "{msg}"
    );
}

#[test]
fn upper_group_per_jail_or_defaults() {
    let config = parse(
        "[defaults]\nupper_group = \"5\"\n[jail.a]\nroot = \"/j/a\"\n\
         [jail.b]\nroot = \"/j/b\"\nupper_group = \"0\"\n",
    )
    .unwrap();
    assert_eq!(config.jails[0].upper_group, Some(5));
    assert_eq!(config.jails[1].upper_group, Some(0));
    let config = parse("[jail.a]\nroot = \"/j/a\"\n").unwrap();
    assert_eq!(config.jails[0].upper_group, None);
    // By name, as getgrnam(3) finds it (root's group is 0 on every system).
    let root = nix::unistd::Group::from_gid(0.into())
        .unwrap()
        .unwrap()
        .name;
    let config = parse(&format!(
        "[jail.a]\nroot = \"/j/a\"\nupper_group = \"{root}\"\n"
    ))
    .unwrap();
    assert_eq!(config.jails[0].upper_group, Some(0));
    let msg = err("[jail.a]\nroot = \"/j/a\"\nupper_group = \"no-such-group-jlayers\"\n");
    assert!(
        msg.contains("jail a: upper_group: unknown group \"no-such-group-jlayers\""),
        "{msg}"
    );
    let msg = err("[defaults]\nupper_group = \"no-such-group-jlayers\"\n");
    assert!(
        msg.contains("defaults: upper_group: unknown group"),
        "{msg}"
    );
}

#[test]
fn log_max_per_jail_or_defaults() {
    let two = "[jail.a]\nroot = \"/j/a\"\n[jail.b]\nroot = \"/j/b\"\nlog_max = \"64k\"\n";
    let config = parse(two).unwrap();
    assert_eq!(config.log_max(&config.jails[0]), LOG_MAX);
    assert_eq!(config.log_max(&config.jails[1]), 64 << 10);
    let config = parse(&format!("[defaults]\nlog_max = \"2G\"\n{two}")).unwrap();
    assert_eq!(config.log_max(&config.jails[0]), 2 << 30);
    assert_eq!(config.log_max(&config.jails[1]), 64 << 10);
    assert_eq!(
        parse("[defaults]\nlog_max = \"1000\"\n")
            .unwrap()
            .default_log_max,
        1000
    );
    for bad in [
        "",
        "m",
        "1.5m",
        "-1",
        "1mb",
        "1x",
        "16777216t",
        "99999999999999999999",
    ] {
        let msg = err(&format!("[jail.a]\nroot = \"/j/a\"\nlog_max = \"{bad}\"\n"));
        assert!(msg.contains("jail a: log_max:"), "{bad}: {msg}");
        let msg = err(&format!("[defaults]\nlog_max = \"{bad}\"\n"));
        assert!(msg.contains("defaults: log_max:"), "{bad}: {msg}");
    }
    let error = parse("[defaults]\nlog_max = \"lots\"\n").unwrap_err();
    assert_eq!(code_of(&error), ExitCode::Config);
}

/// Every mistake of a file in one run, each at its place, up to MAX_ERRORS; a
/// key written wrong is not also reported missing; a jail's rules still run when
/// another jail's table is written wrong.
#[test]
fn all_mistakes_in_one_run() {
    let text = "[defaults]\nupper_rot = '/u'\n\n\
                [[layer]]\nname = 'ports'\nsource = '/usr/ports'\n\n\
                [jail.a]\nrot = '/j/a'\nlayers = 'ports'\n\n\
                [jail.b]\nroot = 'j/b'\n\n\
                [jail.c]\nroot = '/j/c'\npids = 0\n";
    let error = parse(text).unwrap_err();
    assert_eq!(code_of(&error), ExitCode::Config);
    let lines = &error.downcast_ref::<Failures>().unwrap().msgs;
    let want = [
        "/etc/jlayers.conf:2:1: unknown field `upper_rot`",
        "/etc/jlayers.conf:9:1: unknown field `rot`",
        "/etc/jlayers.conf:10:10: invalid type: string \"ports\", expected a sequence",
    ];
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "{line}\nwanted {want}");
    }
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // With [defaults] right, the jails' own rules are checked too: every jail's.
    let text = text.replace("upper_rot", "upper_root");
    let error = parse(&text).unwrap_err();
    let lines = &error.downcast_ref::<Failures>().unwrap().msgs;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[2].ends_with("jail b: root: \"j/b\" is not an absolute path"),
        "{lines:#?}"
    );
    assert!(
        lines[3].ends_with("jail c: pids: 0: at least 1"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("missing field")),
        "{lines:#?}"
    );
    // At most MAX_ERRORS, then how many more.
    let many: String = (0..25)
        .map(|i| format!("[jail.j{i}]\nroot = 'r'\n"))
        .collect();
    let error = parse(&many).unwrap_err();
    let lines = &error.downcast_ref::<Failures>().unwrap().msgs;
    assert_eq!(lines.len(), raw::MAX_ERRORS + 1);
    assert_eq!(
        lines[raw::MAX_ERRORS],
        "/etc/jlayers.conf: 5 more mistakes not shown (at most 20 a run)"
    );
}
