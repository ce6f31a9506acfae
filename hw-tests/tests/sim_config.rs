//! dahdi-sim with a `--config` file: a second simulator mounted on a temporary directory serves
//! the spans the TOML describes (a T1 pair wired together and a lone E1), and a bad file is
//! refused with a message that says what to change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::{Dev, field_i32, field_str, params, spaninfo};
use hw_tests::{SimInstance, run_bounded, sim_bin};
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = r#"
crossconnect = [[1, 2]]

[[span]]
type = "T1"

[[span]]
type = "T1"
name = "SIMT1/B"

[[span]]
type = "E1"
channels = 31
dchannels = [16]
"#;

#[test]
fn a_config_file_describes_t1_and_e1_spans() {
    let Some(bin) = sim_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let sim = SimInstance::start(&bin, &["--config".as_ref(), config.as_os_str()], &mnt);

    let ctl = Dev::open(&mnt.join("ctl"), false).unwrap();
    let t1 = ctl.spanstat(1).unwrap();
    assert_eq!(field_str(&t1, spaninfo::SPANTYPE, 6), "T1");
    assert_eq!(field_i32(&t1, spaninfo::TOTALCHANS), 24);
    let t1b = ctl.spanstat(2).unwrap();
    assert_eq!(field_str(&t1b, spaninfo::NAME, 20), "SIMT1/B");
    let e1 = ctl.spanstat(3).unwrap();
    assert_eq!(field_str(&e1, spaninfo::SPANTYPE, 6), "E1");
    assert_eq!(field_i32(&e1, spaninfo::TOTALCHANS), 31);
    assert_eq!(
        ctl.spanstat(4).unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    // Channel numbering runs on across spans: span 3 starts at 49.
    let p = ctl.params(49).unwrap();
    assert_eq!(
        (
            field_i32(&p, params::SPANNO),
            field_i32(&p, params::CHANPOS)
        ),
        (3, 1)
    );
    assert!(mnt.join("chan/003/031").exists());
    assert!(!mnt.join("chan/001/025").exists(), "a T1 has 24 channels");
    let proc1 = std::fs::read_to_string(mnt.join("sim/proc/dahdi/1")).unwrap();
    assert!(proc1.contains("wired to span 2"), "{proc1}");
    let proc3 = std::fs::read_to_string(mnt.join("sim/proc/dahdi/3")).unwrap();
    assert!(!proc3.contains("wired"), "span 3 is not wired: {proc3}");
    drop(ctl);
    drop(sim);
}

#[test]
fn a_bad_config_is_refused_with_a_reason_and_nothing_is_mounted() {
    let Some(bin) = sim_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "crossconnect = [[1, 2]]\n[[span]]\ntype = \"E1\"\n[[span]]\ntype = \"T1\"\n",
    )
    .unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let (code, out) = run_bounded(
        Command::new(&bin).arg("--config").arg(&config).arg(&mnt),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("different channel counts"), "{out}");
    assert!(!mnt.join("ctl").exists());
}
