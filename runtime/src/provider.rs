//! Calling a provider: `complete` or, with a delta sink, `complete-stream`;
//! with settings, an outbound allowlist and a host-held secret.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::call::{CallExtras, CallResult, Failure, WireSize, check_input, run, wrong_kind};
use crate::error::PluginError;
use crate::legacy;
use crate::outbound::{Credential, Origin, OutboundHooks, OutboundPolicy};
use crate::plugin::{KindPre, PluginInfo};
use crate::sandbox::DeltaSink;
use crate::types::{CompletionRequest, CompletionResponse, ProviderError};
use crate::{Limits, Plugin, PluginKind, Runtime};

/// A provider credential. Only the host reads it (to add it to outbound
/// requests); it never enters the guest, and `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything besides the request that one provider call needs.
#[derive(Debug, Default)]
pub struct ProviderCall {
    /// The integration's settings, served by the `config` import.
    pub settings: Vec<(String, String)>,
    /// The integration's secret, added by the host as the header the
    /// provider's `info().credential` names.
    pub secret: Option<Secret>,
    /// Hosts (`host` or `host:port`) the plugin may call.
    pub allowed_hosts: Vec<String>,
    /// Also allow the host of the setting named by `info().base-url-setting`.
    pub allow_base_url_host: bool,
    /// Where streamed deltas go; when set, `complete-stream` is called.
    /// Dropping the receiver tells the plugin to stop (`emit` returns false).
    pub deltas: Option<DeltaSink>,
}

impl Runtime {
    /// Runs one completion on a provider plugin, in a fresh instance under
    /// `limits`. Dropping the returned future drops the instance and any
    /// upstream connection it had open.
    pub async fn complete(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        call: ProviderCall,
        request: &CompletionRequest,
    ) -> CallResult<Result<CompletionResponse, ProviderError>> {
        let pre = match &plugin.inner.pre {
            KindPre::Provider(pre) => Pre::Current(pre),
            KindPre::ProviderV0_1(pre) => {
                if let Some(refused) = legacy::refusal(request, plugin.name()) {
                    return CallResult {
                        result: Ok(Err(refused)),
                        stats: Default::default(),
                    };
                }
                Pre::V0_1(pre, legacy::request(request))
            }
            _ => return CallResult::refused(wrong_kind(plugin, PluginKind::Provider)),
        };
        let streaming = call.deltas.is_some();
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
            match pre {
                Pre::Current(pre) => {
                    let provider = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let completion = provider.vel_plugins_completion();
                    let answer = if streaming {
                        completion.call_complete_stream(&mut *store, request).await
                    } else {
                        completion.call_complete(&mut *store, request).await
                    };
                    answer.map_err(Failure::Call)
                }
                Pre::V0_1(pre, old_request) => {
                    let provider = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let completion = provider.vel_plugins_completion();
                    let answer = if streaming {
                        completion
                            .call_complete_stream(&mut *store, &old_request)
                            .await
                    } else {
                        completion.call_complete(&mut *store, &old_request).await
                    };
                    answer.map(legacy::response).map_err(Failure::Call)
                }
            }
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }
}

impl Runtime {
    /// The checks before a provider call (its input's size, where it may
    /// reach, with which credential) and the extras its store gets.
    pub(crate) fn provider_extras(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        call: ProviderCall,
        input_bytes: usize,
    ) -> Result<CallExtras, PluginError> {
        check_input(limits, input_bytes + call.settings.wire_size())?;
        let PluginInfo::Provider(info) = plugin.info() else {
            return Err(PluginError::Host("provider without provider info".into()));
        };
        let credential = info
            .credential
            .as_ref()
            .map(|c| (c.name.as_str(), c.prefix.as_str()));
        let reach = Reach {
            settings: &call.settings,
            secret: call.secret.as_ref(),
            allowed_hosts: &call.allowed_hosts,
            allow_base_url_host: call.allow_base_url_host,
        };
        let policy = outbound_policy(reach, credential, info.base_url_setting.as_deref())?;
        Ok(CallExtras {
            hooks: OutboundHooks::new(self.inner.http.clone(), Arc::new(policy)),
            settings: Arc::new(call.settings),
            deltas: call.deltas,
            progress: None,
        })
    }
}

/// The pre-instantiated provider of either contract, with the request in
/// its types.
enum Pre<'a> {
    Current(&'a crate::bindings::provider::ProviderPre<crate::sandbox::CallState>),
    V0_1(
        &'a crate::bindings::v0_1::provider::ProviderPre<crate::sandbox::CallState>,
        crate::bindings::v0_1::provider::exports::vel::plugins::completion::CompletionRequest,
    ),
}

/// What a call that reaches out is given: its settings, secret and
/// allowed hosts (a provider's or a tool server's).
#[derive(Clone, Copy)]
pub(crate) struct Reach<'a> {
    pub(crate) settings: &'a [(String, String)],
    pub(crate) secret: Option<&'a Secret>,
    pub(crate) allowed_hosts: &'a [String],
    pub(crate) allow_base_url_host: bool,
}

/// The hosts a call may reach and the credential header it carries
/// (`credential`: the plugin's header name and prefix), which goes only to
/// the origin (scheme, host and port) of the setting `base_url_setting`
/// names, when the plugin has one.
pub(crate) fn outbound_policy(
    call: Reach<'_>,
    credential: Option<(&str, &str)>,
    base_url_setting: Option<&str>,
) -> Result<OutboundPolicy, PluginError> {
    let mut allowed = call.allowed_hosts.to_vec();
    let mut base = None;
    if let Some(setting) = base_url_setting
        && let Some((_, url)) = call.settings.iter().find(|(k, _)| k == setting)
    {
        let uri: http::Uri = url.parse().map_err(|e| {
            PluginError::Host(format!("setting `{setting}` is not a valid URL: {e}"))
        })?;
        let origin = Origin::of(&uri).ok_or_else(|| {
            PluginError::Host(format!("setting `{setting}` is not an absolute URL"))
        })?;
        if call.allow_base_url_host {
            allowed.push(format!("{}:{}", origin.host, origin.port));
        }
        base = Some(origin);
    }
    let header = match (credential, call.secret) {
        (Some((header, prefix)), Some(secret)) => {
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                PluginError::Host(format!(
                    "the plugin's credential header name `{header}` is not a valid header name"
                ))
            })?;
            let mut value =
                HeaderValue::from_str(&format!("{prefix}{}", secret.0)).map_err(|_| {
                    PluginError::Host(
                        "the secret cannot be sent as an HTTP header value".to_string(),
                    )
                })?;
            value.set_sensitive(true);
            Some((name, value))
        }
        _ => None,
    };
    let credential = header.map(|header| Credential {
        header,
        origin: base,
    });
    Ok(OutboundPolicy::new(allowed, credential))
}
