//! The harness's parts, re-exported from the crate root.

pub(crate) mod client;
pub(crate) mod db;
pub(crate) mod fixtures;
pub(crate) mod github;
pub(crate) mod oauth;
pub(crate) mod receiver;
pub(crate) mod server;
pub mod slack;
pub(crate) mod smtp;
