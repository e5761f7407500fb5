//! What this layer knows of plugins: nothing but a catalog to ask. The plugin layer
//! implements [`PluginCatalog`]: it parses each plugin's `config` into its own typed form
//! (kept here opaque, as [`ParsedPlugin`]) and checks credentials, reporting problems
//! with a field path that the loader turns into file:line.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde_norway::Value;

/// A problem inside a plugin's `config` or a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    #[error("unknown plugin")]
    Unknown,
    #[error("{message}")]
    Invalid { path: String, message: String },
}

impl SpecError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A plugin configuration parsed by the plugin layer (its concrete type is that layer's).
pub type ParsedPlugin = Arc<dyn Any + Send + Sync>;

/// Credential entities whose values a plugin defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    JwtSecret,
    KeyAuth,
    BasicAuth,
    HmacAuth,
    Acl,
}

/// Something a configuration means that Kong accepts but is risky or likely a mistake:
/// (field path inside the plugin's `config`, message).
pub type SpecWarning = (String, String);

pub trait PluginCatalog: Send + Sync {
    /// Parses plugin `name`'s `config`; `SpecError::Unknown` for a plugin it lacks. Risky
    /// but valid settings are reported in `warnings`.
    fn parse(
        &self,
        name: &str,
        config: &Value,
        warnings: &mut Vec<SpecWarning>,
    ) -> Result<ParsedPlugin, SpecError>;
    /// Checks one credential entity (key material, formats).
    fn check_credential(&self, kind: CredentialKind, value: &Value) -> Result<(), SpecError>;
    /// Kong's load-time transformation of a checked credential (basic-auth replaces the
    /// password with its salted hash), skipped when the file says `_transform: false`.
    fn transform_credential(&self, _kind: CredentialKind, _consumer_id: &str, _value: &mut Value) {}
}

/// The catalog a load asks. The default knows no plugin.
#[derive(Clone)]
pub struct Catalog(pub Arc<dyn PluginCatalog>);

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Catalog")
    }
}

struct NoPlugins;

impl PluginCatalog for NoPlugins {
    fn parse(
        &self,
        _: &str,
        _: &Value,
        _: &mut Vec<SpecWarning>,
    ) -> Result<ParsedPlugin, SpecError> {
        Err(SpecError::Unknown)
    }
    fn check_credential(&self, _: CredentialKind, _: &Value) -> Result<(), SpecError> {
        Ok(())
    }
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog(Arc::new(NoPlugins))
    }
}
