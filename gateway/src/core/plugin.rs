//! The plugin model: Kong's phases as hooks on one trait, what a plugin gets when it is
//! built, and the factory through which the runtime gets instances (implemented by the
//! plugin layer, so this layer names no plugin).

use std::sync::Arc;

use async_trait::async_trait;

use super::respond::LocalResponse;
use super::state::RequestState;
use super::{RequestHeader, ResponseHeader, Session};
use crate::config::{Declarative, PluginDef, PluginScope, SpecError};

/// A request's plugin instances in the order they run.
pub type Chain = Arc<[Arc<dyn Plugin>]>;

/// Why a plugin instance could not be built from its (checked) configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A credential entity the plugin reads is invalid.
    #[error("{path}: {source}")]
    Credential {
        path: String,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Configured where Kong's schema does not allow it (the whole message).
    #[error("{0}")]
    Scope(&'static str),
    /// A value that only fails when the instance is built (a header, a URL, a method).
    #[error("{0}")]
    Invalid(String),
    /// A client the plugin needs could not be created.
    #[error("{what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A plugin's own error type.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
    #[error("{path}: plugin `{name}` was not parsed by this gateway")]
    NotParsed { path: String, name: String },
}

impl BuildError {
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> BuildError {
        BuildError::Other(Box::new(e))
    }
}

/// Builds running plugin instances from parsed configurations.
pub trait PluginFactory: Sync {
    fn build(&self, def: &PluginDef, ctx: &BuildContext<'_>)
    -> Result<Arc<dyn Plugin>, BuildError>;
    /// Whether target health is exported (a prometheus plugin asks for it).
    fn health_metrics(&self, decl: &Declarative) -> bool;
}

/// What plugins may need from the whole configuration when they are built.
pub struct BuildContext<'a> {
    pub decl: &'a Declarative,
    /// The background runtime for plugin tasks (JWKS refresh); None in `gateway check`.
    pub bg: Option<&'a tokio::runtime::Handle>,
    /// Where the instance being built is configured.
    pub scope: &'a PluginScope,
    /// Values every instance of this configuration shares (credential tables).
    pub cache: &'a BuildCache,
}

/// Values shared by every plugin instance built from one configuration, built by the
/// first instance that asks: 10,000 routes with key-auth share one table of 100,000 keys
/// instead of building 10,000 copies. Keyed by type: each plugin uses its own types.
#[derive(Default)]
pub struct BuildCache {
    map: std::sync::Mutex<http::Extensions>,
}

impl BuildCache {
    pub fn get_or_try_init<T, F>(&self, init: F) -> Result<T, BuildError>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<T, BuildError>,
    {
        if let Some(v) = self.map.lock().ok().and_then(|m| m.get::<T>().cloned()) {
            return Ok(v);
        }
        let v = init()?;
        if let Ok(mut m) = self.map.lock() {
            m.insert(v.clone());
        }
        Ok(v)
    }
}

/// What the access phase decided.
pub enum Flow {
    Continue,
    Respond(LocalResponse),
}

/// One running plugin instance. Every hook has a no-op default.
#[async_trait]
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Kong's PRIORITY: higher runs first.
    fn priority(&self) -> i32;

    /// Called for every plugin of the route before any access phase runs, with the
    /// consumer not yet known: the opentelemetry plugin starts (or continues) the trace
    /// here, so the other plugins' access phases are timed only when it is sampled.
    fn start_trace(&self, _req: &RequestHeader, _st: &mut RequestState) {}

    /// Request headers this plugin sets from an authenticated identity (claims, consumer
    /// data). Clients' own copies are removed on every route before any plugin runs.
    fn identity_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }

    /// False for plugins without an access phase: the proxy then skips the call (and the
    /// boxed future it costs).
    fn has_access(&self) -> bool {
        true
    }

    /// Before routing-dependent work: may answer the request itself.
    async fn access(
        &self,
        _session: &mut Session,
        _st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Edits the request sent upstream.
    fn upstream_request(&self, _req: &mut RequestHeader, _st: &mut RequestState) {}

    /// Edits the response headers sent to the client (proxied and local responses).
    fn response_header(&self, _resp: &mut ResponseHeader, _st: &mut RequestState) {}

    /// Edits the response body; `body` is the whole body when the plugin asked for buffering.
    fn response_body(&self, _body: &mut bytes::BytesMut, _st: &mut RequestState) {}

    /// After the response went out (Kong's log phase): metrics, traces.
    fn log(&self, _st: &RequestState, _status: u16) {}

    /// True when `log` needs the request head and the response headers
    /// (`RequestState::log_heads`): the proxy then keeps a copy of both for this request.
    fn logs_heads(&self) -> bool {
        false
    }

    /// True when the plugin needs the whole request body in `request_body` (asked once,
    /// after the access phase). The proxy then buffers the body up to the gateway's body
    /// limit and sends it upstream chunked, since its length may change.
    fn buffers_request(&self, _req: &RequestHeader, _st: &RequestState) -> bool {
        false
    }

    /// Edits the request body; `body` is the whole body when the plugin asked for buffering.
    /// A plugin either rewrites it completely or leaves it untouched.
    fn request_body(&self, _body: &mut bytes::BytesMut, _st: &mut RequestState) {}

    /// True when sending the response body without this plugin's rewrite would leak
    /// something (a redaction): a body that cannot be rewritten (too large, an unknown
    /// encoding) is then refused with 502 instead of passed through.
    fn must_transform(&self) -> bool {
        false
    }

    /// True when the plugin needs the whole response body in `response_body`.
    fn buffers_response(&self, _resp: &ResponseHeader) -> bool {
        false
    }
}
