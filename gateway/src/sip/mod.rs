//! SIP for the gateway: sans-IO protocol pieces (time passed in, tested on virtual time) and
//! one tokio shell ([`transport`]). A SIP leg is assembled from them; each module's docs have
//! an example.
//!
//! | module | what | RFC |
//! |---|---|---|
//! | [`message`], [`parse`] | strict parser/serializer, TCP framer | 3261 §7, §18.3, 4475 |
//! | [`validate`] | what a UAS refuses (501, 416, 483, 482, 420, 415) | 3261 §8.2 |
//! | [`transaction`] | client/server transactions, timers A–M, validation on receive, rport | 3261 §17, 6026, 3581 |
//! | [`dialog`] | dialogs, route sets, 2xx/ACK, glare | 3261 §12–14 |
//! | [`offer_answer`] | one dialog's offer/answer state, 491/500 rules | 3264, 3311 §5 |
//! | [`prack`] | reliable provisionals, PRACK, both roles | 3262 |
//! | [`session_timer`] | Session-Expires/Min-SE, 422, refresh, expiry BYE | 4028 |
//! | [`update`] | UPDATE in early and confirmed dialogs | 3311 |
//! | [`dtmf_info`] | INFO `application/dtmf-relay` and `application/dtmf` | — |
//! | [`refer`] | REFER/NOTIFY, Refer-Sub, Replaces, sipfrag | 3515, 4488, 3891, 3420 |
//! | [`auth`] | digest UAS and UAC | 7616, 8760 |
//! | [`registration`] | REGISTER client: refresh, back-off, un-REGISTER | 3261 §10.2, 5626 |
//! | [`registrar`] | registrar/location service with flows | 3261 §10.3, 5626 |
//! | [`keepalive`] | OPTIONS pings to trunks, up/down, RTT | — |
//! | [`sdp`] | SDP offer/answer for audio | 4566, 3264 |
//! | [`transport`] | tokio UDP/TCP/TLS/WS/WSS, connection ids, reuse | 3261 §18, 7118, 5923 |
//! | [`uas`] | a minimal OPTIONS UAS/registrar over the shell (tests, tools) | — |
//!
//! How a leg wires them (one loop per SIP endpoint):
//!
//! 1. [`transport::SipTransport::recv`] → [`transaction::TransactionLayer::handle_datagram`]
//!    (validation, retransmissions, malformed input counted). Remember the
//!    [`registrar::Flow`] (transport, source, connection id) of each source address;
//!    [`transport::SipTransport::closed_connections`] → [`registrar::Registrar::connection_closed`].
//! 2. `TuEvent::Request` out of dialog: REGISTER → [`registrar::Registrar::handle_register`];
//!    INVITE → [`session_timer::SessionTimer::check_request`] (422),
//!    [`prack::UasPrack::for_invite`], [`dialog::Dialog::new_uas`],
//!    [`offer_answer::OfferAnswer`]; in dialog (To tag): [`dialog::Dialog::handle_request`],
//!    then PRACK → [`prack::UasPrack::handle_prack`], UPDATE → [`update::check_update`],
//!    INFO → [`dtmf_info::DtmfInfo::from_request`], REFER → [`refer::ReferTo::from_request`],
//!    [`refer::accept_refer`] and [`refer::ReferNotifier`], NOTIFY →
//!    [`refer::ReferClient::handle_notify`].
//! 3. `TuEvent::Response`: 1xx → [`prack::UacPrack::handle_provisional`]; final →
//!    [`dialog::Dialog::handle_response`], [`session_timer::SessionTimer::handle_response`],
//!    [`registration::Registration::handle_response`], [`keepalive::TrunkPinger::handle_response`],
//!    [`refer::ReferClient::handle_response`], [`update::handle_update_response`].
//! 4. Timers: the minimum of every piece's `poll_timeout()`; call each `handle_timeout(now)`.
//! 5. [`transaction::TransactionLayer::poll_transmit`] →
//!    [`transport::SipTransport::send_response`] / `send` (a `.invalid` target goes on its flow:
//!    [`transport::needs_flow`], [`transport::SipTransport::send_on`]).
//!
//! Why our own core and not `rsipstack`: see `docs/decisions/0001-sip-stack.md`.

pub mod auth;
pub mod dialog;
pub mod dtmf_info;
pub mod keepalive;
pub mod message;
pub mod offer_answer;
pub mod parse;
pub mod prack;
pub mod refer;
pub mod registrar;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod transport;
pub mod uas;
pub mod update;
pub mod validate;
