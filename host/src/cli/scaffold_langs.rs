//! The JavaScript and Python templates of `vel plugin new` (routers and
//! conditions). Each project builds with one command that reads the
//! plugin's name and version from `vel-plugin.toml` (their one place) into
//! a generated module the code imports, then runs the language's
//! componentizer:
//!
//! - JavaScript: `npm run build` runs `build.mjs`, which calls
//!   componentize-qjs (QuickJS, `--sync --stub-wasi`: a 1.6 MB component);
//! - Python: `python3 build.py` runs componentize-py (`--stub-wasi`: an
//!   18 MB component carrying CPython), in the plugin class `python`.
//!
//! Providers are offered in Rust only.

use crate::cli::scaffold::Kind;

/// The componentize-qjs the JavaScript template pins (npm).
pub const COMPONENTIZE_QJS: &str = "0.4.5";
/// The componentize-py the Python template pins (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Where a built component lands, relative to the project.
pub fn component_path(name: &str) -> String {
    format!("dist/{name}.wasm")
}

/// The JavaScript project's files.
pub fn js_files(name: &str, kind: Kind, wit: &str) -> Vec<(&'static str, String)> {
    let (source, input, cases) = match kind {
        Kind::Condition => (
            JS_CONDITION,
            super::scaffold::CONDITION_INPUT,
            super::scaffold::CONDITION_CASES,
        ),
        _ => (
            JS_ROUTER,
            super::scaffold::ROUTER_INPUT,
            super::scaffold::ROUTER_CASES,
        ),
    };
    vec![
        ("package.json", js_package(name, kind)),
        ("build.mjs", JS_BUILD.replace("{world}", world(kind))),
        (
            ".gitignore",
            "/node_modules\n/dist\n/src/manifest.js\n".to_string(),
        ),
        ("vel-plugin.toml", manifest(name, kind, None)),
        (
            "README.md",
            readme(name, kind, "npm install\nnpm run build"),
        ),
        ("wit/vel-plugins.wit", wit.to_string()),
        ("src/index.js", source.to_string()),
        ("samples/input.json", input.to_string()),
        ("tests/cases.json", fixture(name, cases)),
    ]
}

/// The Python project's files.
pub fn python_files(name: &str, kind: Kind, wit: &str) -> Vec<(&'static str, String)> {
    let (source, input, cases) = match kind {
        Kind::Condition => (
            PY_CONDITION,
            super::scaffold::CONDITION_INPUT,
            super::scaffold::CONDITION_CASES,
        ),
        _ => (
            PY_ROUTER,
            super::scaffold::ROUTER_INPUT,
            super::scaffold::ROUTER_CASES,
        ),
    };
    vec![
        ("build.py", PY_BUILD.replace("{world}", world(kind))),
        (
            "requirements.txt",
            format!("componentize-py=={COMPONENTIZE_PY}\n"),
        ),
        (
            ".gitignore",
            "/dist\n/src/vel_plugin_meta.py\n__pycache__/\n".to_string(),
        ),
        ("vel-plugin.toml", manifest(name, kind, Some("python"))),
        (
            "README.md",
            readme(
                name,
                kind,
                "python3 -m pip install -r requirements.txt\npython3 build.py",
            ),
        ),
        ("wit/vel-plugins.wit", wit.to_string()),
        ("src/app.py", source.to_string()),
        ("samples/input.json", input.to_string()),
        ("tests/cases.json", fixture(name, cases)),
    ]
}

fn world(kind: Kind) -> &'static str {
    match kind {
        Kind::Condition => "condition",
        _ => "router",
    }
}

fn kind_name(kind: Kind) -> &'static str {
    world(kind)
}

fn manifest(name: &str, kind: Kind, class: Option<&str>) -> String {
    let kind = kind_name(kind);
    let class = match class {
        Some(class) => format!(
            "# The plugin class whose limits it runs under: a Python component carries\n\
             # the interpreter (38 core modules, 18 MB), beyond the default limits.\n\
             # The server must offer the class (VEL_PLUGIN_CLASSES={class}).\n\
             class = \"{class}\"\n"
        ),
        None => String::new(),
    };
    format!(
        "# vel plugin manifest. `name` and `version` live here only: the build\n\
         # writes them into a module the code imports. Check it with:\n\
         #   vel plugin check --manifest vel-plugin.toml\n\
         name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         kind = \"{kind}\"\n\
         description = \"A {kind} made with vel plugin new\"\n{class}"
    )
}

fn readme(name: &str, kind: Kind, build: &str) -> String {
    let kind = kind_name(kind);
    let wasm = component_path(name);
    format!(
        "# {name}\n\n\
         A vel {kind} plugin. Build, check, test and publish:\n\n\
         ```sh\n\
         {build}\n\
         vel plugin check {wasm} --manifest vel-plugin.toml\n\
         vel plugin run {wasm} --manifest vel-plugin.toml --input-file samples/input.json\n\
         vel plugin test tests/cases.json\n\
         vel plugin publish {wasm} --manifest vel-plugin.toml --activate\n\
         ```\n\n\
         A new version: raise `version` in `vel-plugin.toml` (its only place) and rebuild.\n\
         `tests/cases.json` holds inputs and what the answers must contain; see\n\
         `vel plugin test --help`.\n"
    )
}

fn fixture(name: &str, cases: &str) -> String {
    let wasm = component_path(name);
    format!(
        "{{\n  \"component\": \"../{wasm}\",\n  \"manifest\": \"../vel-plugin.toml\",\n  \"tenant\": true,\n{cases}}}\n"
    )
}

fn js_package(name: &str, kind: Kind) -> String {
    let kind = kind_name(kind);
    format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "description": "A vel {kind} plugin (its version is vel-plugin.toml's)",
  "type": "module",
  "scripts": {{
    "build": "node build.mjs"
  }},
  "devDependencies": {{
    "componentize-qjs": "{COMPONENTIZE_QJS}"
  }}
}}
"#
    )
}

const JS_BUILD: &str = r##"// Builds dist/NAME.wasm: writes src/manifest.js (the plugin's name and
// version, from vel-plugin.toml, their one place), then runs componentize-qjs
// (QuickJS; --sync: no component-model async; --stub-wasi: no WASI imports).
// COMPONENTIZE_QJS names another componentize-qjs executable.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

const top = {};
for (const line of readFileSync("vel-plugin.toml", "utf8").split("\n")) {
  if (line.trim().startsWith("[")) break;
  const m = line.match(/^\s*(name|version)\s*=\s*"([^"]*)"/);
  if (m) top[m[1]] = m[2];
}
if (!top.name || !top.version) {
  throw new Error("vel-plugin.toml has no top-level name or version");
}
writeFileSync(
  "src/manifest.js",
  `// Written by build.mjs from vel-plugin.toml.\nexport const NAME = ${JSON.stringify(top.name)};\nexport const VERSION = ${JSON.stringify(top.version)};\n`,
);
const tool = process.env.COMPONENTIZE_QJS || "node_modules/.bin/componentize-qjs";
if (!existsSync(tool)) {
  console.error(`componentize-qjs is not at ${tool}: run \`npm install\` (or set COMPONENTIZE_QJS)`);
  process.exit(1);
}
mkdirSync("dist", { recursive: true });
const output = `dist/${top.name}.wasm`;
execFileSync(
  tool,
  ["--wit", "wit", "--world", "{world}", "--js", "src/index.js", "--sync", "--stub-wasi", "-o", output],
  { stdio: "inherit" },
);
console.log(`built ${output}`);
"##;

const JS_ROUTER: &str = r##"// A vel router: the cheapest usable candidate first.
//
// componentize-qjs maps the WIT: records are objects with camelCase fields,
// enums are their kebab-case names ("open", "code-generation"), an option is
// a value or null, and a result's error is thrown as a variant
// `{ tag: "no-candidate", val: "why" }`. JSON-typed fields (`metadata`) are
// strings.
import { NAME, VERSION } from "./manifest.js";

export const routing = {
  info() {
    return {
      name: NAME,
      version: VERSION,
      description: "The cheapest candidate with a usable circuit first",
    };
  },

  route(task, candidates) {
    const usable = candidates.filter((c) => c.circuit !== "open");
    if (usable.length === 0) {
      throw { tag: "no-candidate", val: "every candidate's circuit is open" };
    }
    const price = (c) => c.inputPricePer1k + c.outputPricePer1k;
    usable.sort((a, b) => price(a) - price(b));
    return {
      attempts: usable.map((c) => ({ provider: c.provider, model: c.model })),
      reason: `cheapest first among ${usable.length} usable candidates`,
    };
  },
};
"##;

const JS_CONDITION: &str = r##"// A vel condition: matched when the step's output contains `args.contains`.
//
// `args` and `state` arrive as JSON text; an error is thrown as a variant
// `{ tag: "invalid-args", val: "why" }`; an option is a value or null.
import { NAME, VERSION } from "./manifest.js";

export const evaluation = {
  info() {
    return {
      name: NAME,
      version: VERSION,
      description: "Matched when the output contains a text",
      argsSchema: JSON.stringify({
        type: "object",
        properties: { contains: { type: "string" } },
        required: ["contains"],
      }),
    };
  },

  evaluate(input) {
    let args;
    try {
      args = JSON.parse(input.args);
    } catch (e) {
      throw { tag: "invalid-args", val: `not JSON: ${e}` };
    }
    if (typeof args?.contains !== "string") {
      throw { tag: "invalid-args", val: "`contains` must be a string" };
    }
    const matched = input.output.includes(args.contains);
    return {
      matched,
      branch: null,
      score: null,
      explanation: matched
        ? `the output contains ${JSON.stringify(args.contains)}`
        : `the output does not contain ${JSON.stringify(args.contains)}`,
    };
  },
};
"##;

const PY_BUILD: &str = r##""""Builds dist/NAME.wasm: writes src/vel_plugin_meta.py (the plugin's name
and version, from vel-plugin.toml, their one place), then runs componentize-py
(--stub-wasi: no WASI imports). Uses the componentize-py beside this Python
(a venv's), else the one on PATH; COMPONENTIZE_PY names another."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

with open("vel-plugin.toml", "rb") as f:
    manifest = tomllib.load(f)
name, version = manifest["name"], manifest["version"]
Path("src/vel_plugin_meta.py").write_text(
    "# Written by build.py from vel-plugin.toml.\n"
    f"NAME = {name!r}\nVERSION = {version!r}\n"
)
tool = os.environ.get("COMPONENTIZE_PY")
if not tool:
    beside = Path(sys.executable).parent / "componentize-py"
    tool = str(beside) if beside.exists() else shutil.which("componentize-py")
if not tool:
    sys.exit(
        "componentize-py is not installed: python3 -m pip install -r requirements.txt"
    )
Path("dist").mkdir(exist_ok=True)
output = f"dist/{name}.wasm"
subprocess.run(
    [tool, "-d", "wit", "-w", "{world}", "componentize", "--stub-wasi",
     "-p", "src", "app", "-o", output],
    check=True,
)
print(f"built {output}")
"##;

const PY_ROUTER: &str = r##""""A vel router: the cheapest usable candidate first.

componentize-py maps the WIT: records are dataclasses with snake_case
fields, enums are Enum members (types.CircuitState.OPEN), an option is a
value or None, and a result's error is raised as Err(variant case).
JSON-typed fields (`metadata`) are strings."""

from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import routing
from wit_world.imports import types

from vel_plugin_meta import NAME, VERSION


class Routing(exports.Routing):
    def info(self) -> routing.RouterInfo:
        return routing.RouterInfo(
            name=NAME,
            version=VERSION,
            description="The cheapest candidate with a usable circuit first",
        )

    def route(
        self, task: routing.TaskInfo, candidates: List[routing.Candidate]
    ) -> routing.Plan:
        usable = [c for c in candidates if c.circuit != types.CircuitState.OPEN]
        if not usable:
            raise Err(routing.RouteError_NoCandidate("every candidate's circuit is open"))
        usable.sort(key=lambda c: c.input_price_per_1k + c.output_price_per_1k)
        return routing.Plan(
            attempts=[routing.Attempt(provider=c.provider, model=c.model) for c in usable],
            reason=f"cheapest first among {len(usable)} usable candidates",
        )
"##;

const PY_CONDITION: &str = r##""""A vel condition: matched when the step's output contains `args.contains`.

`args` and `state` arrive as JSON text; an error is raised as
Err(evaluation.ConditionError_InvalidArgs("why")); an option is a value or
None."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import evaluation

from vel_plugin_meta import NAME, VERSION

ARGS_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"contains": {"type": "string"}},
        "required": ["contains"],
    }
)


class Evaluation(exports.Evaluation):
    def info(self) -> evaluation.ConditionInfo:
        return evaluation.ConditionInfo(
            name=NAME,
            version=VERSION,
            description="Matched when the output contains a text",
            args_schema=ARGS_SCHEMA,
        )

    def evaluate(self, input: evaluation.ConditionInput) -> evaluation.Outcome:
        try:
            args = json.loads(input.args)
        except ValueError as e:
            raise Err(evaluation.ConditionError_InvalidArgs(f"not JSON: {e}"))
        needle = args.get("contains") if isinstance(args, dict) else None
        if not isinstance(needle, str):
            raise Err(evaluation.ConditionError_InvalidArgs("`contains` must be a string"))
        matched = needle in input.output
        verb = "contains" if matched else "does not contain"
        return evaluation.Outcome(
            matched=matched,
            branch=None,
            score=None,
            explanation=f"the output {verb} {needle!r}",
        )
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_and_python_projects_have_one_version_and_a_valid_manifest() {
        for kind in [Kind::Router, Kind::Condition] {
            for (lang, files) in [
                ("js", js_files("my-plugin", kind, "wit")),
                ("python", python_files("my-plugin", kind, "wit")),
            ] {
                let get = |name: &str| {
                    files
                        .iter()
                        .find(|(path, _)| *path == name)
                        .map(|(_, text)| text.clone())
                        .unwrap_or_else(|| panic!("{lang} {kind:?} has no {name}"))
                };
                let manifest = crate::plugins::manifest::Manifest::parse(&get("vel-plugin.toml"))
                    .expect("the manifest is valid");
                assert_eq!(manifest.name, "my-plugin");
                assert_eq!(
                    manifest.class.as_deref(),
                    (lang == "python").then_some("python")
                );
                let cases: serde_json::Value =
                    serde_json::from_str(&get("tests/cases.json")).expect("cases are JSON");
                assert_eq!(cases["component"], "../dist/my-plugin.wasm");
                let _: serde_json::Value =
                    serde_json::from_str(&get("samples/input.json")).expect("the sample is JSON");
                // The version is written once, in the manifest.
                for (path, text) in &files {
                    if *path != "vel-plugin.toml" && *path != "README.md" {
                        assert!(!text.contains("0.1.0"), "{lang} {path} repeats the version");
                    }
                }
            }
        }
    }
}
