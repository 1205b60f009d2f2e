//! Slack: request verification, the `[slack]` settings, Block Kit rendering and the Web API client.
//!
//! Inbound requests (interactivity, slash commands) are checked with [`verify::verify`] on the
//! raw body before anything is decoded. Outbound, [`blocks`] renders approval messages and
//! modals — escaping every user-supplied string — and [`api::SlackApi`] sends them, mapping
//! Slack's answers to retryable or permanent [`ConnectorError`](crate::outbound::ConnectorError)s
//! for the outbox.

pub mod api;
pub mod blocks;
pub mod channel;
pub mod settings;
pub mod verify;

pub use api::{PostedMessage, SlackApi};
pub use channel::SlackChannel;
pub use settings::{ResolvedSlack, SlackSettings};
pub use verify::VerifyError;
