//! Differential test of the system.conf parser against DAHDI's own `dahdi_cfg` (Debian package
//! `dahdi`): for the same file, both must accept or both reject (at the same line), and for
//! accepted files the span and channel map `dahdi_cfg -t -vv` prints must equal ours.
//!
//! `dahdi_cfg` insists on opening `/dev/dahdi/ctl`, so it runs inside a private mount namespace
//! with a tmpfs `/dev` holding an empty regular file `dahdi/ctl` (and `null`); in test mode
//! (`-t`) it issues no ioctl but GETVERSION, whose failure it only prints. The host's `/dev`
//! is never touched. Needs root (unshare), as the rest of the DAHDI suites do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tdm_driver::Law;
use tdm_driver::SigType;
use tdm_driver::config::{Coding, Framing, SystemConf};

struct CfgRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn dahdi_cfg(text: &str, verbose: bool) -> CfgRun {
    assert!(
        Path::new("/usr/sbin/dahdi_cfg").exists(),
        "dahdi_cfg is missing: `apt-get install -y dahdi`"
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("system.conf");
    std::fs::write(&conf, text).unwrap();
    let flags = if verbose { "-t -vv" } else { "-t" };
    let script = format!(
        "mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && mkdir /dev/dahdi \
         && touch /dev/dahdi/ctl && exec /usr/sbin/dahdi_cfg {flags} -c {}",
        conf.display()
    );
    let out = Command::new("timeout")
        .args([
            "20",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .expect("running unshare");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("unshare failed") && !stderr.contains("mount:"),
        "could not build the private /dev (this test needs root): {stderr}"
    );
    CfgRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// The first `line N:` dahdi_cfg reports.
fn first_error_line(stderr: &str) -> Option<usize> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("line ")?.split(':').next()?.parse().ok())
}

/// dahdi_cfg's name for a channel's signalling in its channel map.
fn sig_name(keyword: &str, sig: SigType) -> &'static str {
    match keyword {
        "dchan" => return "D-channel",
        "hardhdlc" => return "Hardware assisted D-channel",
        "mtp2" => return "MTP2",
        _ => {}
    }
    match sig {
        SigType::Em => "E & M",
        SigType::EmE1 => "E & M E1",
        SigType::FxsLs => "FXS Loopstart",
        SigType::FxsGs => "FXS Groundstart",
        SigType::FxsKs => "FXS Kewlstart",
        SigType::FxoLs => "FXO Loopstart",
        SigType::FxoGs => "FXO Groundstart",
        SigType::FxoKs => "FXO Kewlstart",
        SigType::Cas => "CAS / User",
        SigType::Clear => "Clear channel",
        SigType::HdlcRaw => "Raw HDLC",
        SigType::HdlcNet => "Network HDLC",
        SigType::HdlcFcs => "HDLC with FCS check",
        _ => "Unknown",
    }
}

/// The span lines and channel map dahdi_cfg -vv would print for `conf`.
fn expected_printout(conf: &SystemConf) -> Vec<String> {
    let mut out = Vec::new();
    for s in &conf.spans {
        let framing = match s.framing {
            Framing::D4 => "D4",
            Framing::Esf => "ESF",
            Framing::Ccs => "CCS",
            Framing::Cas => "CAS",
        };
        let coding = match s.coding {
            Coding::Ami => "AMI",
            Coding::B8zs => "B8ZS",
            Coding::Hdb3 => "HDB3",
        };
        out.push(format!(
            "SPAN {}: {framing:>3}/{coding:>4} Build-out:",
            s.span
        ));
    }
    let masters: BTreeMap<i32, Vec<i32>> =
        conf.channels
            .iter()
            .fold(BTreeMap::new(), |mut m, (chan, line)| {
                m.entry(line.master).or_insert_with(Vec::new).push(*chan);
                m
            });
    for (chan, line) in &conf.channels {
        if matches!(line.sigtype, SigType::None | SigType::Slave) {
            continue;
        }
        let law = match conf.law_of(*chan) {
            Law::MuLaw => "Mu-law",
            Law::ALaw => "A-law",
            _ => "Default",
        };
        let ec = conf
            .echo_cancellers
            .get(chan)
            .map(String::as_str)
            .unwrap_or("none");
        let slaves: Vec<String> = masters
            .get(chan)
            .map(|v| v.iter().map(|c| format!("{c:02}")).collect())
            .unwrap_or_default();
        out.push(format!(
            "Channel {chan:02}: {} ({law}) (Echo Canceler: {ec}) (Slaves: {})",
            sig_name(&line.keyword, line.sigtype),
            slaves.join(" ")
        ));
    }
    out
}

fn printed(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| {
            l.starts_with("SPAN ")
                || l.strip_prefix("Channel ")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|l| match l.find("Build-out:") {
            Some(i) => l[..i + "Build-out:".len()].to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

const GOOD: &[&str] = &[
    // E1 PRI pair.
    "loadzone=us\ndefaultzone=us\nspan=1,1,0,ccs,hdb3,crc4\nspan=2,0,0,ccs,hdb3,crc4\n\
     bchan=1-15,17-31\ndchan=16\nbchan=32-46,48-62\ndchan=47\nalaw=1-62\n\
     echocanceller=mg2,1-15,17-31\n",
    // T1 analog and CAS mix.
    "span=1,1,0,esf,b8zs\nfxsks=1-12\nfxoks=13-20\nfxsls=21\nfxols=22\nfxsgs=23\nfxogs=24\n\
     mulaw=1-24\nechocanceller=oslec,1-24\n",
    // E1 CAS, E&M, HDLC flavours, clear groups, 56k.
    "span=1,1,0,cas,hdb3\ne&me1=1-15\ncas=17-31:1101\ne&m=32\nunused=33\nhardhdlc=34\nmtp2=35\n\
     indclear=36\nrawhdlc=37-38\nfcshdlc=39-40\n56k=39\nclear=41-43\nnethdlc=44-45:hdlc0\n\
     user=46:0001\n",
    // Comments, blank lines, case and spacing.
    "# a comment\n\n  SPAN = 1, 1, 0, CCS, HDB3, CRC4  # trailing\n\tBCHAN=1-15 , 17-31\nDChan=16\n\
     span=2,0,3,d4,ami,yellow,crc4\nspan=3,2,7,ccs,hdb3,nt,te,term\n",
];

#[test]
fn files_dahdi_cfg_accepts_parse_to_the_same_span_and_channel_map() {
    for (i, text) in GOOD.iter().enumerate() {
        let ours = SystemConf::parse("system.conf", text);
        let theirs = dahdi_cfg(text, true);
        assert!(
            theirs.ok,
            "file {i}: dahdi_cfg rejects it:\n{}",
            theirs.stderr
        );
        let conf = ours.unwrap_or_else(|e| panic!("file {i}: dahdi_cfg accepts it, we say:\n{e}"));
        assert_eq!(
            printed(&theirs.stdout),
            expected_printout(&conf),
            "file {i}: dahdi_cfg -vv printed:\n{}",
            theirs.stdout
        );
    }
}

#[test]
fn files_dahdi_cfg_rejects_fail_at_the_same_line() {
    let bad: &[&str] = &[
        "span=3,1,0,ccs,xyz\n",
        "span=1,1,0,ccs,hdb3\nfrobnicate=1\n",
        "bchan=1-15\ndchan=15\n",
        "cas=1-15\n",
        "bchan=5-3\n",
        "bchan=1024\n",
        "bchan=0\n",
        "span=1,256,0,ccs,hdb3\n",
        "span=1,1,8,ccs,hdb3\n",
        "span=1,1,0,sf,hdb3\n",
        "span=1,1,0,ccs\n",
        "bchan=1\njusttext\n",
        "span=1,1,0,ccs,hdb3,crc5\n",
        "dynamic=eth,eth0/00:11:22:33:44:55,5\n",
        "# ok\nbchan=\n",
        "dacs=1-2\n",
        "bchan=1-x\n",
    ];
    for text in bad {
        let theirs = dahdi_cfg(text, false);
        let ours = SystemConf::parse("system.conf", text);
        assert!(!theirs.ok, "dahdi_cfg accepted {text:?}");
        let ours = ours.expect_err(&format!(
            "we accepted {text:?}, dahdi_cfg says {}",
            theirs.stderr
        ));
        assert_eq!(
            first_error_line(&theirs.stderr),
            Some(ours.errors[0].line),
            "{text:?}: dahdi_cfg said {}; we said {ours}",
            theirs.stderr
        );
    }
}

#[test]
fn our_deliberate_differences_from_dahdi_cfg() {
    // Where we are stricter: trailing garbage in numbers (sscanf reads "0abc" as 0), a span
    // configured twice (dahdi_cfg silently sends both), radio keywords we do not support, and
    // an echocanceller line naming no channel.
    for text in [
        "span=1,1,0abc,ccs,hdb3\n",
        "span=1,1,0,ccs,hdb3\nspan=1,0,0,ccs,hdb3\n",
        "ctcss=1,1,1\n",
        "echocanceller=mg2\n",
    ] {
        assert!(dahdi_cfg(text, false).ok, "dahdi_cfg now rejects {text:?}");
        assert!(SystemConf::parse("system.conf", text).is_err(), "{text:?}");
    }
    // Where we are laxer: tone zone names (we do not load zones, libtonezone knows the names).
    let text = "defaultzone=xx\n";
    assert!(!dahdi_cfg(text, false).ok);
    assert!(SystemConf::parse("system.conf", text).is_ok());
}
