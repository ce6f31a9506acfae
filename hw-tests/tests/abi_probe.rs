//! ABI probe: compiles a C program against DAHDI's own `dahdi/user.h`, and checks that every
//! request number, struct size, field offset and size, and constant `tdm_driver::abi` declares
//! is what the C compiler makes of the header on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use tdm_driver::abi::{CONSTANTS, LAYOUTS, REQUESTS, StructLayout};

const HEADER: &str = "/usr/include/dahdi/user.h";

/// What the Rust side declares, in the shape the probe prints.
#[derive(Debug, Default, Clone)]
struct AbiTables {
    requests: BTreeMap<String, u64>,
    sizes: BTreeMap<String, u64>,
    offsets: BTreeMap<(String, String), u64>,
    field_sizes: BTreeMap<(String, String), u64>,
    constants: BTreeMap<String, i64>,
}

fn ours() -> AbiTables {
    ours_from(REQUESTS, LAYOUTS, CONSTANTS)
}

fn ours_from(
    requests: &[(&str, u64)],
    layouts: &[StructLayout],
    constants: &[(&str, i32)],
) -> AbiTables {
    let mut t = AbiTables::default();
    for (name, number) in requests {
        t.requests.insert((*name).to_owned(), *number);
    }
    for layout in layouts {
        t.sizes.insert(layout.c_name.to_owned(), layout.size as u64);
        for ((field, offset), size) in layout.fields.iter().zip(layout.field_sizes) {
            let key = (layout.c_name.to_owned(), (*field).to_owned());
            t.offsets.insert(key.clone(), *offset as u64);
            t.field_sizes.insert(key, *size as u64);
        }
    }
    for (name, value) in constants {
        t.constants.insert((*name).to_owned(), i64::from(*value));
    }
    t
}

/// A C program printing, for every name in `tables`, the header's value as one line:
/// `req NAME N`, `size STRUCT N`, `off STRUCT FIELD N`, `const NAME N`.
fn probe_source(tables: &AbiTables) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <dahdi/user.h>\nint main(void) {\n",
    );
    for name in tables.requests.keys() {
        writeln!(
            c,
            "  printf(\"req {name} %llu\\n\", (unsigned long long)({name}));"
        )
        .unwrap();
    }
    for name in tables.sizes.keys() {
        writeln!(
            c,
            "  printf(\"size {name} %zu\\n\", sizeof(struct {name}));"
        )
        .unwrap();
    }
    for (st, field) in tables.offsets.keys() {
        writeln!(
            c,
            "  printf(\"off {st} {field} %zu\\n\", offsetof(struct {st}, {field}));"
        )
        .unwrap();
    }
    for (st, field) in tables.field_sizes.keys() {
        writeln!(
            c,
            "  printf(\"fsize {st} {field} %zu\\n\", sizeof(((struct {st} *)0)->{field}));"
        )
        .unwrap();
    }
    for name in tables.constants.keys() {
        writeln!(
            c,
            "  printf(\"const {name} %lld\\n\", (long long)({name}));"
        )
        .unwrap();
    }
    c.push_str("  return 0;\n}\n");
    c
}

/// Parses the probe's output into the same tables.
fn parse_probe_output(out: &str) -> Result<AbiTables, String> {
    let mut t = AbiTables::default();
    for (i, line) in out.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("probe output line {}: cannot parse {line:?}", i + 1);
        match words.as_slice() {
            ["req", name, n] => {
                t.requests
                    .insert((*name).to_owned(), n.parse().map_err(|_| bad())?);
            }
            ["size", name, n] => {
                t.sizes
                    .insert((*name).to_owned(), n.parse().map_err(|_| bad())?);
            }
            ["off", st, field, n] => {
                t.offsets.insert(
                    ((*st).to_owned(), (*field).to_owned()),
                    n.parse().map_err(|_| bad())?,
                );
            }
            ["fsize", st, field, n] => {
                t.field_sizes.insert(
                    ((*st).to_owned(), (*field).to_owned()),
                    n.parse().map_err(|_| bad())?,
                );
            }
            ["const", name, n] => {
                t.constants
                    .insert((*name).to_owned(), n.parse().map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(t)
}

/// Every difference between what we declare and what the header says, one line each.
fn compare(ours: &AbiTables, header: &AbiTables) -> Vec<String> {
    fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Display>(
        what: &str,
        ours: &BTreeMap<K, V>,
        header: &BTreeMap<K, V>,
        hex: bool,
        out: &mut Vec<String>,
    ) {
        for (key, our) in ours {
            match header.get(key) {
                None => out.push(format!("{what} {key:?}: missing from the probe output")),
                Some(theirs) if theirs != our => {
                    if hex {
                        out.push(format!(
                            "{what} {key:?}: ours {our} (0x{:x}), user.h {theirs} (0x{:x})",
                            our.to_string().parse::<u64>().unwrap_or(0),
                            theirs.to_string().parse::<u64>().unwrap_or(0)
                        ));
                    } else {
                        out.push(format!("{what} {key:?}: ours {our}, user.h {theirs}"));
                    }
                }
                Some(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    diff("request", &ours.requests, &header.requests, true, &mut out);
    diff("sizeof", &ours.sizes, &header.sizes, false, &mut out);
    diff("offsetof", &ours.offsets, &header.offsets, false, &mut out);
    diff(
        "field sizeof",
        &ours.field_sizes,
        &header.field_sizes,
        false,
        &mut out,
    );
    diff(
        "constant",
        &ours.constants,
        &header.constants,
        false,
        &mut out,
    );
    out
}

fn run_probe(tables: &AbiTables) -> AbiTables {
    assert!(
        Path::new(HEADER).exists(),
        "{HEADER} is missing: install DAHDI's header with `apt-get install -y dahdi-source`"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("abi_probe.c");
    let exe = dir.path().join("abi_probe");
    std::fs::write(&src, probe_source(tables)).unwrap();
    let cc = Command::new("cc")
        .arg("-std=gnu11")
        .arg("-Wall")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running cc (install gcc: `apt-get install -y gcc`)");
    assert!(
        cc.status.success(),
        "the probe does not compile against {HEADER} (a name we declare is not in the header?):\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "the probe failed: {run:?}");
    parse_probe_output(&String::from_utf8(run.stdout).unwrap()).unwrap()
}

#[test]
fn every_request_size_offset_and_constant_matches_dahdi_user_h() {
    let ours = ours();
    // The probe must cover what the brief lists: nothing silently dropped from the tables.
    assert!(
        ours.requests.len() >= 85,
        "{} requests",
        ours.requests.len()
    );
    assert!(ours.sizes.len() >= 27, "{} structs", ours.sizes.len());
    let header = run_probe(&ours);
    let mismatches = compare(&ours, &header);
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es) between tdm_driver::abi and {HEADER}:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // And the probe really reported each entry (a comparison over nothing proves nothing).
    assert_eq!(header.requests.len(), ours.requests.len());
    assert_eq!(header.offsets.len(), ours.offsets.len());
    assert_eq!(header.field_sizes.len(), ours.field_sizes.len());
    assert_eq!(header.constants.len(), ours.constants.len());
}

#[test]
fn a_wrong_number_size_offset_or_constant_is_reported() {
    let good = ours();
    let header = good.clone();
    let mut bad = good.clone();
    *bad.requests.get_mut("DAHDI_SPECIFY").unwrap() = 0x4004_da27;
    *bad.sizes.get_mut("dahdi_spaninfo").unwrap() = 316;
    *bad.offsets
        .get_mut(&("dahdi_params".to_owned(), "chan_alarms".to_owned()))
        .unwrap() = 136;
    *bad.constants.get_mut("DAHDI_SIG_HDLCFCS").unwrap() = 0x180;
    *bad.field_sizes
        .get_mut(&("dahdi_chanconfig".to_owned(), "netdev_name".to_owned()))
        .unwrap() = 15;
    bad.requests.insert("DAHDI_NOT_IN_HEADER".to_owned(), 1);
    let mismatches = compare(&bad, &header);
    assert_eq!(mismatches.len(), 6, "{mismatches:#?}");
    let all = mismatches.join("\n");
    for needle in [
        "DAHDI_SPECIFY",
        "0x4004da27",
        "0x4004da26",
        "dahdi_spaninfo",
        "chan_alarms",
        "DAHDI_SIG_HDLCFCS",
        "netdev_name",
        "DAHDI_NOT_IN_HEADER",
    ] {
        assert!(all.contains(needle), "{needle} not named in:\n{all}");
    }
    assert!(compare(&good, &header).is_empty());
}

#[test]
fn probe_output_parser_rejects_garbage() {
    assert!(parse_probe_output("req DAHDI_SPECIFY 1074060838\n").is_ok());
    assert!(parse_probe_output("req DAHDI_SPECIFY x\n").is_err());
    assert!(parse_probe_output("hello\n").is_err());
}

#[test]
fn a_deliberately_wrong_table_fails_against_the_real_header() {
    // End to end: a wrong request number goes through the C compiler and is caught.
    let mut tables = ours_from(&[("DAHDI_SPECIFY", 0x4004_da25)], &[], &[]);
    let header = run_probe(&tables);
    let mismatches = compare(&tables, &header);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    tables
        .requests
        .insert("DAHDI_SPECIFY".to_owned(), 0x4004_da26);
    assert!(compare(&tables, &header).is_empty());
}
