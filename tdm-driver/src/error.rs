//! Typed errors of the safe DAHDI API: each variant says what happened and what to do.

use std::io;
use std::path::{Path, PathBuf};

use crate::abi;

/// An error from the DAHDI device API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdmError {
    /// EBUSY: DAHDI allows one open per channel, and someone has this one open.
    #[error(
        "{what} ({path}) is busy: another process or handle has it open (EBUSY); close it there first"
    )]
    Busy {
        /// What was being opened (`channel 5`).
        what: String,
        /// The device node.
        path: PathBuf,
    },
    /// ENXIO: the channel exists but has no signalling configured.
    #[error(
        "{what} ({path}) is not configured (ENXIO): give it a signalling type in system.conf and run the span configuration"
    )]
    Unconfigured {
        /// What was being opened.
        what: String,
        /// The device node.
        path: PathBuf,
    },
    /// Errno 500 (DAHDI's ELAST): an event is queued; read()/write() refuse until it is fetched.
    #[error("{op} on {path}: an event is pending (errno 500); fetch it with get_event() and retry")]
    EventPending {
        /// The operation that was refused.
        op: &'static str,
        /// The device node.
        path: PathBuf,
    },
    /// ENOTTY/ENOSYS: the device does not implement this request.
    #[error(
        "{op} is not supported by {path} (ENOTTY/ENOSYS): is this a DAHDI device node, and does its driver implement it?"
    )]
    NotSupported {
        /// The request.
        op: &'static str,
        /// The device node.
        path: PathBuf,
    },
    /// EINVAL on a request that names a channel: no such channel exists.
    #[error(
        "channel {channel} does not exist ({op} on {path} gave EINVAL); check the channel number"
    )]
    NoSuchChannel {
        /// The channel number asked for.
        channel: i32,
        /// The request.
        op: &'static str,
        /// The device node.
        path: PathBuf,
    },
    /// EINVAL on SPANSTAT: no such span.
    #[error("span {span} does not exist (SPANSTAT on {path} gave EINVAL); check the span number")]
    NoSuchSpan {
        /// The span number asked for.
        span: i32,
        /// The device node.
        path: PathBuf,
    },
    /// EINVAL on any other request: the driver rejected the argument.
    #[error("{op} on {path}: the driver rejected the argument (EINVAL): {hint}")]
    Rejected {
        /// The request.
        op: &'static str,
        /// The device node.
        path: PathBuf,
        /// What is typically wrong.
        hint: &'static str,
    },
    /// ENOENT on open: the device node is absent.
    #[error(
        "{path} does not exist: is the DAHDI driver loaded (or dahdi-sim mounted) and the device root right?"
    )]
    NoDevice {
        /// The missing node.
        path: PathBuf,
    },
    /// An argument we refuse before it reaches the driver.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong with the argument.
        reason: String,
    },
    /// The driver replied with something DAHDI never sends (a short frame, an odd length).
    #[error("{op} on {path}: unexpected reply from the driver: {detail}")]
    BadReply {
        /// The operation.
        op: &'static str,
        /// The device node.
        path: PathBuf,
        /// What was odd.
        detail: String,
    },
    /// Any other system error.
    #[error("{op} on {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The device node.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

/// Result of the DAHDI device API.
pub type Result<T, E = TdmError> = std::result::Result<T, E>;

impl TdmError {
    /// Maps a system error of `op` on `path` to the variant a caller can act on. EINVAL is
    /// reported as [`TdmError::Rejected`]; callers that know EINVAL means "no such channel" or
    /// "no such span" map it before calling this.
    pub fn from_io(op: &'static str, path: &Path, source: io::Error) -> TdmError {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(abi::ELAST) => TdmError::EventPending { op, path },
            Some(libc::ENOTTY) | Some(libc::ENOSYS) => TdmError::NotSupported { op, path },
            Some(libc::EINVAL) => TdmError::Rejected {
                op,
                path,
                hint: rejected_hint(op),
            },
            Some(libc::ENOENT) => TdmError::NoDevice { path },
            _ => TdmError::Io { op, path, source },
        }
    }

    /// Maps an error of opening `what` (a channel) at `path`: EBUSY and ENXIO get their own
    /// variants, EINVAL means the channel does not exist.
    pub(crate) fn from_open(
        op: &'static str,
        what: &str,
        channel: Option<i32>,
        path: &Path,
        source: io::Error,
    ) -> TdmError {
        match (source.raw_os_error(), channel) {
            (Some(libc::EBUSY), _) => TdmError::Busy {
                what: what.to_owned(),
                path: path.to_path_buf(),
            },
            (Some(libc::ENXIO), _) => TdmError::Unconfigured {
                what: what.to_owned(),
                path: path.to_path_buf(),
            },
            (Some(libc::EINVAL), Some(channel)) => TdmError::NoSuchChannel {
                channel,
                op,
                path: path.to_path_buf(),
            },
            _ => TdmError::from_io(op, path, source),
        }
    }

    /// True for EventPending: fetch the event and retry.
    pub fn is_event_pending(&self) -> bool {
        matches!(self, TdmError::EventPending { .. })
    }
}

fn rejected_hint(op: &'static str) -> &'static str {
    match op {
        "DAHDI_SET_BLOCKSIZE" | "DAHDI_SET_BUFINFO" => {
            "sizes must be 16..=8192 bytes and numbufs * bufsize at most 32768"
        }
        "DAHDI_SETLINEAR" => "linear mode needs an audio (not HDLC/clear) channel",
        "DAHDI_AUDIOMODE" | "DAHDI_HDLCFCSMODE" | "DAHDI_HDLCRAWMODE" => {
            "this mode switch needs a channel configured as clear (bchan)"
        }
        "DAHDI_SPANCONFIG" | "DAHDI_CHANCONFIG" | "DAHDI_STARTUP" | "DAHDI_SHUTDOWN" => {
            "check the span/channel numbers and that the span supports this configuration"
        }
        _ => "check the request's argument against the channel's configuration",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn errno_500_is_event_pending() {
        let e = TdmError::from_io("read", Path::new("/dev/dahdi/chan/001/001"), err(500));
        assert!(e.is_event_pending());
        assert!(e.to_string().contains("get_event"), "{e}");
    }

    #[test]
    fn open_errors_map_to_busy_unconfigured_and_no_such_channel() {
        let p = Path::new("/dev/dahdi/channel");
        let busy = TdmError::from_open("DAHDI_SPECIFY", "channel 5", Some(5), p, err(libc::EBUSY));
        assert!(matches!(busy, TdmError::Busy { .. }), "{busy:?}");
        assert!(busy.to_string().contains("channel 5"));
        let unconf =
            TdmError::from_open("DAHDI_SPECIFY", "channel 5", Some(5), p, err(libc::ENXIO));
        assert!(
            matches!(unconf, TdmError::Unconfigured { .. }),
            "{unconf:?}"
        );
        let none = TdmError::from_open(
            "DAHDI_SPECIFY",
            "channel 99",
            Some(99),
            p,
            err(libc::EINVAL),
        );
        assert!(
            matches!(none, TdmError::NoSuchChannel { channel: 99, .. }),
            "{none:?}"
        );
    }

    #[test]
    fn enotty_and_enosys_are_not_supported_and_others_keep_their_source() {
        let p = Path::new("/tmp/x");
        for errno in [libc::ENOTTY, libc::ENOSYS] {
            let e = TdmError::from_io("DAHDI_HOOK", p, err(errno));
            assert!(
                matches!(
                    e,
                    TdmError::NotSupported {
                        op: "DAHDI_HOOK",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        let e = TdmError::from_io("DAHDI_HOOK", p, err(libc::EIO));
        match e {
            TdmError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        let e = TdmError::from_io("DAHDI_SET_BLOCKSIZE", p, err(libc::EINVAL));
        assert!(e.to_string().contains("16..=8192"), "{e}");
    }
}
