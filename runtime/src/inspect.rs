//! The cheap look at a component before anything compiles it: its
//! structure, which world it exports, what it imports and how much code it
//! carries, read with `wasmparser` in one pass over the bytes (function
//! bodies are measured, not validated). Cranelift's time and memory grow
//! with the code it is given, so a component refused here costs the host
//! milliseconds instead of a compilation.

use wasmparser::component_types::ComponentEntityType;
use wasmparser::types::Types;
use wasmparser::{Instance, Parser, Payload, ValidPayload, Validator, WasmFeatures};

use crate::error::LoadError;
use crate::plugin::{Contract, PluginKind};

/// How much code a component may ask the compiler to translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeLimits {
    /// Largest sum of the function bodies of all its core modules, in bytes.
    pub max_code_bytes: usize,
    /// Largest single function body, in bytes.
    pub max_function_bytes: usize,
}

impl Default for CodeLimits {
    fn default() -> Self {
        CodeLimits {
            max_code_bytes: 4 * 1024 * 1024,
            max_function_bytes: 64 * 1024,
        }
    }
}

/// What [`crate::Runtime::inspect`] learned about a component without
/// compiling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The world it implements, from its exports.
    pub kind: PluginKind,
    /// The contract version it was built against, from its exports.
    pub contract: Contract,
    /// Sum of the function bodies of all its core modules, in bytes.
    pub code_bytes: usize,
    /// Its largest function body, in bytes.
    pub largest_function_bytes: usize,
    /// How many functions its core modules define.
    pub functions: usize,
    /// How many core module instances it creates (instantiations; its
    /// nested components' included).
    pub core_instances: usize,
    /// Whether it also exports `embeddings` (a 0.2.0 provider built
    /// against the `embedding-provider` world).
    pub embeddings: bool,
}

/// The most core module instances a component may create, and whose
/// limit that is (for the error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstanceLimit<'a> {
    pub(crate) max: u32,
    pub(crate) class: Option<&'a str>,
}

/// Reads `wasm` and checks, in this order: that it is a component, that
/// it is well formed (structure and types; function bodies are left to the
/// compiler), that its code is within `limits` (when given), that it
/// exports exactly one vel world with that world's functions, that it
/// imports only what that world may import, and that it creates no more
/// core instances than `instances` allows (when given).
pub(crate) fn inspect(
    wasm: &[u8],
    limits: Option<&CodeLimits>,
    instances: Option<InstanceLimit<'_>>,
) -> Result<Inspection, LoadError> {
    check_header(wasm)?;
    let malformed = |e: wasmparser::BinaryReaderError| LoadError::Malformed(e.to_string());
    // Every feature: this pass must never refuse what the engine would
    // accept; the engine validates again, against its own features, when
    // it compiles.
    let features = WasmFeatures::all();
    let mut validator = Validator::new_with_features(features);
    let mut parser = Parser::new(0);
    parser.set_features(features);
    let mut depth = 0usize;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut code_bytes = 0usize;
    let mut largest_function_bytes = 0usize;
    let mut functions = 0usize;
    let mut core_instances = 0usize;
    let mut top_level = None;
    for payload in parser.parse_all(wasm) {
        let payload = payload.map_err(malformed)?;
        match &payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section.clone() {
                    imports.push(import.map_err(malformed)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section.clone() {
                    exports.push(export.map_err(malformed)?.name.name.to_string());
                }
            }
            Payload::InstanceSection(section) => {
                for instance in section.clone() {
                    if let Instance::Instantiate { .. } = instance.map_err(malformed)? {
                        core_instances += 1;
                    }
                }
                if let Some(limit) = instances
                    && core_instances > limit.max as usize
                {
                    return Err(LoadError::TooManyCoreInstances {
                        count: core_instances,
                        max: limit.max,
                        class: limit
                            .class
                            .map_or_else(|| "default".to_string(), |c| format!("class `{c}`")),
                    });
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                code_bytes = code_bytes.saturating_add(*size as usize);
                if let Some(limits) = limits
                    && code_bytes > limits.max_code_bytes
                {
                    return Err(LoadError::CodeTooLarge {
                        bytes: code_bytes,
                        max: limits.max_code_bytes,
                    });
                }
            }
            Payload::CodeSectionEntry(body) => {
                functions += 1;
                let bytes = body.range().len();
                largest_function_bytes = largest_function_bytes.max(bytes);
                if let Some(limits) = limits
                    && bytes > limits.max_function_bytes
                {
                    return Err(LoadError::FunctionTooLarge {
                        bytes,
                        max: limits.max_function_bytes,
                    });
                }
            }
            _ => {}
        }
        match validator.payload(&payload).map_err(malformed)? {
            ValidPayload::End(types) => {
                if depth == 0 {
                    top_level = Some(types);
                } else {
                    depth -= 1;
                }
            }
            ValidPayload::Ok | ValidPayload::Parser(_) | ValidPayload::Func(..) => {}
        }
    }
    let types = top_level.ok_or_else(|| LoadError::Malformed("the component ends early".into()))?;
    let (kind, contract) = kind_from_exports(&exports)?;
    check_world_functions(&types, kind, kind.export_for(contract), kind.functions())?;
    let embeddings = exports.iter().any(|e| e == PluginKind::EMBEDDINGS);
    if embeddings {
        if (kind, contract) != (PluginKind::Provider, Contract::V0_2) {
            return Err(LoadError::WrongExports {
                interface: PluginKind::EMBEDDINGS.to_string(),
                kind,
                message: "only a 0.2.0 provider may export it".into(),
            });
        }
        check_world_functions(&types, kind, PluginKind::EMBEDDINGS, EMBEDDING_FUNCTIONS)?;
    }
    check_imports(&imports, kind, contract)?;
    Ok(Inspection {
        kind,
        contract,
        code_bytes,
        largest_function_bytes,
        functions,
        core_instances,
        embeddings,
    })
}

/// Refuses bytes that are not a component before parsing further.
fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.get(..4) != Some(b"\0asm") {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version and layer; layer 1 is the component model.
    match wasm.get(6..8) {
        Some([1, 0]) => Ok(()),
        Some([0, 0]) => Err(LoadError::CoreModule),
        _ => Err(LoadError::NotWasm),
    }
}

/// Which world and contract version the component implements, from its
/// top-level export names.
fn kind_from_exports(exports: &[String]) -> Result<(PluginKind, Contract), LoadError> {
    let kinds: Vec<(PluginKind, Contract)> = PluginKind::ALL
        .into_iter()
        .flat_map(|k| Contract::ALL.into_iter().map(move |c| (k, c)))
        .filter(|(k, c)| exports.iter().any(|e| e == k.export_for(*c)))
        .collect();
    match kinds.as_slice() {
        [found] => Ok(*found),
        [] => Err(LoadError::UnknownWorld {
            exports: if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            },
        }),
        many => Err(LoadError::AmbiguousWorld {
            exports: many
                .iter()
                .map(|(k, c)| k.export_for(*c))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Checks that `interface` is exported as an instance with each of
/// `functions` taking the right number of parameters. The
/// parameter and result types are checked when the compiled component is
/// linked.
fn check_world_functions(
    types: &Types,
    kind: PluginKind,
    interface: &str,
    functions: &[(&str, usize)],
) -> Result<(), LoadError> {
    let wrong = |message: String| LoadError::WrongExports {
        interface: interface.to_string(),
        kind,
        message,
    };
    let Some(item) = types.component_item_for_export(interface) else {
        return Err(wrong("it is not exported".into()));
    };
    let ComponentEntityType::Instance(instance) = item.ty else {
        return Err(wrong(format!("it is exported as a {}", describe(item.ty))));
    };
    let exported = &types[instance].exports;
    for (function, params) in functions {
        match exported.get(*function).map(|item| item.ty) {
            Some(ComponentEntityType::Func(f)) => {
                let found = types[f].params.len();
                if found != *params {
                    return Err(wrong(format!(
                        "`{function}` takes {found} parameters instead of {params}"
                    )));
                }
            }
            Some(other) => {
                return Err(wrong(format!(
                    "`{function}` is a {}, not a function",
                    describe(other)
                )));
            }
            None => return Err(wrong(format!("it has no `{function}` function"))),
        }
    }
    Ok(())
}

/// The functions of the `embeddings` interface, with their parameter counts.
const EMBEDDING_FUNCTIONS: &[(&str, usize)] = &[("models", 0), ("embed", 1)];

/// What kind of item an export is, for error messages.
fn describe(ty: ComponentEntityType) -> &'static str {
    match ty {
        ComponentEntityType::Module(_) => "core module",
        ComponentEntityType::Func(_) => "function",
        ComponentEntityType::Value(_) => "value",
        ComponentEntityType::Type { .. } => "type",
        ComponentEntityType::Instance(_) => "instance",
        ComponentEntityType::Component(_) => "component",
    }
}

/// Refuses imports the kind may not use (or versions the host does not
/// serve: vel's own interfaces must be of the contract the component
/// exports).
fn check_imports(
    imports: &[String],
    kind: PluginKind,
    contract: Contract,
) -> Result<(), LoadError> {
    for name in imports {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        let version_ok = if interface.starts_with("vel:") {
            version == contract.as_str()
        } else {
            version.starts_with("0.2.")
        };
        if !version_ok || !kind.allows_import(interface) {
            return Err(LoadError::ForbiddenImport {
                import: name.clone(),
                kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section: its id, its length, its bytes (lengths below 128).
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id, u8::try_from(body.len()).expect("a short section")];
        out.extend_from_slice(body);
        out
    }

    /// A component with one empty core module instantiated `count` times.
    fn instantiating(count: u8) -> Vec<u8> {
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        component.extend(section(1, b"\0asm\x01\0\0\0"));
        let mut instances = vec![count];
        for _ in 0..count {
            instances.extend([0x00, 0x00, 0x00]); // instantiate module 0, no arguments
        }
        component.extend(section(2, &instances));
        component
    }

    #[test]
    fn core_instances_are_counted_against_the_limit_of_the_class() {
        let limit = |max| InstanceLimit {
            max,
            class: Some("python"),
        };
        match inspect(&instantiating(17), None, Some(limit(16))) {
            Err(LoadError::TooManyCoreInstances { count, max, class }) => {
                assert_eq!((count, max, class.as_str()), (17, 16, "class `python`"));
            }
            other => panic!("expected too many core instances, got {other:?}"),
        }
        // Within the limit, the inspection goes on (to the missing world).
        assert!(matches!(
            inspect(&instantiating(16), None, Some(limit(16))),
            Err(LoadError::UnknownWorld { .. })
        ));
        assert!(matches!(
            inspect(&instantiating(17), None, None),
            Err(LoadError::UnknownWorld { .. })
        ));
    }
}
