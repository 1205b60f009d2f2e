//! HTTP handlers, one module per resource.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod credentials;
pub(crate) mod directory;
pub(crate) mod email_links;
pub(crate) mod grants;
pub(crate) mod health;
pub(crate) mod paging;
pub(crate) mod requests;
pub(crate) mod slack;
pub(crate) mod tasks;
pub(crate) mod tokens;
