//! Calling a provider's `embeddings` export (a provider built against the
//! `embedding-provider` world): `embed`, with the same settings, outbound
//! allowlist and host-held secret as its completions.

use crate::call::{CallResult, WireSize, run};
use crate::error::PluginError;
use crate::types::{EmbeddingError, EmbeddingRequest, EmbeddingResponse};
use crate::{Limits, Plugin, ProviderCall, Runtime};

impl Runtime {
    /// Embeds `request`'s inputs on a provider plugin, in a fresh instance
    /// under `limits`. A plugin without the `embeddings` export is refused
    /// (check [`Plugin::embedding_models`] first).
    pub async fn embed(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        call: ProviderCall,
        request: &EmbeddingRequest,
    ) -> CallResult<Result<EmbeddingResponse, EmbeddingError>> {
        let Some(pre) = &plugin.inner.embedder else {
            return CallResult::refused(PluginError::Host(format!(
                "plugin `{}` serves no embeddings",
                plugin.name()
            )));
        };
        let extras = match self.provider_extras(plugin, limits, call, request.wire_size()) {
            Ok(extras) => extras,
            Err(refused) => return CallResult::refused(refused),
        };
        let calls = &self.inner.calls;
        let mut prepared = match calls.prepare(plugin, limits, extras) {
            Ok(prepared) => prepared,
            Err(busy) => return CallResult::refused(busy),
        };
        let store = &mut prepared.store;
        let work = async {
            let embedder = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(crate::call::Failure::Instantiate)?;
            embedder
                .vel_plugins_embeddings()
                .call_embed(&mut *store, request)
                .await
                .map_err(crate::call::Failure::Call)
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }
}
