//! Tollgate's workflow language: the model of a declarative approval workflow, its YAML parser
//! with precise errors, its validation rules, and the catalog that picks the workflow governing a
//! request. Callers hand in text and get values or errors back; the one piece of I/O is
//! [`read_file`], which reads a definition file by the same rules for every caller.

#![deny(missing_docs)]

pub mod catalog;
mod file;
pub mod model;
pub mod parse;
mod references;
mod validate;

pub use catalog::{Catalog, CatalogError, IntegrationFacts};
pub use file::read_file;
pub use model::*;
pub use parse::{DefinitionError, locate, parse_definition};
pub use references::{Reference, ReferenceKind};
pub use validate::MAX_DURATION;

/// The workflow definitions shipped with Tollgate, as `(file name, YAML text)`.
pub const BUNDLED: &[(&str, &str)] = &[
    ("grant.yaml", include_str!("../examples/grant.yaml")),
    ("renew.yaml", include_str!("../examples/renew.yaml")),
    ("rotate.yaml", include_str!("../examples/rotate.yaml")),
    ("revoke.yaml", include_str!("../examples/revoke.yaml")),
];
