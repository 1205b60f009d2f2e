//! Features: each defines the writer jobs that change its part of the state, next to the rest
//! of the feature. The writer runs them without knowing what they are; adding a feature adds a
//! file here, not an arm in the writer.

pub(crate) mod audit_events;
pub mod config_sync;
pub mod credentials;
pub mod grant_secrets;
pub mod links;
pub(crate) mod outbox;
pub(crate) mod reconcile;
pub(crate) mod runs;
pub(crate) mod slack_messages;
pub(crate) mod tasks;
pub(crate) mod timers;
pub(crate) mod tokens;
