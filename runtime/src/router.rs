//! Calling a router: `route(task, candidates) -> plan`.

use crate::call::{CallExtras, CallResult, Failure, WireSize, check_input, run, wrong_kind};
use crate::legacy;
use crate::plugin::KindPre;
use crate::types::{Candidate, Plan, RouteError, TaskInfo};
use crate::{Limits, Plugin, PluginKind, Runtime};

impl Runtime {
    /// Asks a router plugin to order `candidates` into a plan for `task`,
    /// in a fresh instance under `limits`.
    pub async fn route(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        task: &TaskInfo,
        candidates: &[Candidate],
    ) -> CallResult<Result<Plan, RouteError>> {
        if !matches!(
            &plugin.inner.pre,
            KindPre::Router(_) | KindPre::RouterV0_1(_)
        ) {
            return CallResult::refused(wrong_kind(plugin, PluginKind::Router));
        }
        if let Err(refused) = check_input(limits, task.wire_size() + candidates.wire_size()) {
            return CallResult::refused(refused);
        }
        let calls = &self.inner.calls;
        let mut prepared = match calls.prepare(plugin, limits, CallExtras::pure()) {
            Ok(prepared) => prepared,
            Err(busy) => return CallResult::refused(busy),
        };
        let store = &mut prepared.store;
        let work = async {
            match &plugin.inner.pre {
                KindPre::RouterV0_1(pre) => {
                    let router = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    let (task, candidates) =
                        (legacy::task_info(task), legacy::candidates(candidates));
                    router
                        .vel_plugins_routing()
                        .call_route(&mut *store, &task, &candidates)
                        .await
                        .map(legacy::plan)
                        .map_err(Failure::Call)
                }
                KindPre::Router(pre) => {
                    let router = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    router
                        .vel_plugins_routing()
                        .call_route(&mut *store, task, candidates)
                        .await
                        .map_err(Failure::Call)
                }
                _ => Err(Failure::Call(wasmtime::Error::msg("not a router"))),
            }
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }
}
