//! Our `system.conf` parser and `apply()` against `dahdi_cfg` itself: the same file is applied
//! by `dahdi_cfg` to the harness's /dev/dahdi and by tdm-driver to a second, fresh dahdi-sim;
//! afterwards every span's line configuration and every channel's signalling and law read back
//! the same through SPANSTAT and GET_PARAMS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use hw_tests::{SYSTEM_CONF, SimInstance, configure_spans, dahdi_root, sim_bin};
use tdm_driver::config::{ApplyOptions, SystemConf, apply};
use tdm_driver::{Ctl, DeviceRoot};

#[test]
fn our_apply_leaves_the_spans_exactly_as_dahdi_cfg_does() {
    let Some(bin) = sim_bin() else { return };
    configure_spans().expect("dahdi_cfg on /dev/dahdi");
    let theirs = Ctl::open(Arc::new(DeviceRoot::new(dahdi_root()))).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let _sim = SimInstance::start(&bin, &[], &mnt);
    let ours = Ctl::open(Arc::new(DeviceRoot::new(&mnt))).unwrap();
    let conf = SystemConf::parse("system.conf", SYSTEM_CONF).unwrap();
    let report = apply(&ours, &conf, ApplyOptions::default()).unwrap();
    assert_eq!(report.spans_configured, vec![1, 2]);
    assert_eq!(report.spans_started, vec![1, 2]);
    assert_eq!(report.channels_configured.len(), 62, "{report:?}");

    for span in 1..=2 {
        let a = theirs.span_stat(span).unwrap();
        let b = ours.span_stat(span).unwrap();
        assert_eq!(
            (a.line_config, a.lbo, a.configured_channels, a.sync_source),
            (b.line_config, b.lbo, b.configured_channels, b.sync_source),
            "span {span}: dahdi_cfg vs ours"
        );
    }
    for chan in 1..=62 {
        let a = theirs.channel_params(chan).unwrap();
        let b = ours.channel_params(chan).unwrap();
        assert_eq!(
            (a.sigtype, a.law, a.span, a.chanpos),
            (b.sigtype, b.law, b.span, b.chanpos),
            "channel {chan}: dahdi_cfg vs ours"
        );
    }
    // Applying again changes nothing (like dahdi_cfg without -f).
    let again = apply(&ours, &conf, ApplyOptions::default()).unwrap();
    assert!(
        again.channels_configured.is_empty(),
        "re-applied {:?}; channel 1 state {:?}, wanted {:?}",
        again.channels_configured,
        ours.channel_state(1),
        conf.channel_config(1)
    );
    assert_eq!(again.channels_unchanged.len(), 62);
}
