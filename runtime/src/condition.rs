//! Calling a condition: `evaluate(input) -> outcome`.

use crate::call::{CallExtras, CallResult, Failure, WireSize, check_input, run, wrong_kind};
use crate::legacy;
use crate::plugin::KindPre;
use crate::types::{ConditionError, ConditionInput, Outcome};
use crate::{Limits, Plugin, PluginKind, Runtime};

impl Runtime {
    /// Asks a condition plugin to judge `input`, in a fresh instance under
    /// `limits`.
    pub async fn evaluate(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        input: &ConditionInput,
    ) -> CallResult<Result<Outcome, ConditionError>> {
        if !matches!(
            &plugin.inner.pre,
            KindPre::Condition(_) | KindPre::ConditionV0_1(_)
        ) {
            return CallResult::refused(wrong_kind(plugin, PluginKind::Condition));
        }
        if let Err(refused) = check_input(limits, input.wire_size()) {
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
                KindPre::ConditionV0_1(pre) => {
                    let condition = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    condition
                        .vel_plugins_evaluation()
                        .call_evaluate(&mut *store, &legacy::condition_input(input))
                        .await
                        .map(legacy::outcome)
                        .map_err(Failure::Call)
                }
                KindPre::Condition(pre) => {
                    let condition = pre
                        .instantiate_async(&mut *store)
                        .await
                        .map_err(Failure::Instantiate)?;
                    condition
                        .vel_plugins_evaluation()
                        .call_evaluate(&mut *store, input)
                        .await
                        .map_err(Failure::Call)
                }
                _ => Err(Failure::Call(wasmtime::Error::msg("not a condition"))),
            }
        };
        let outcome = run(&prepared.watch, plugin, limits, work).await;
        calls.finish(prepared, limits, outcome)
    }
}
