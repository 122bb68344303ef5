#!/usr/bin/env node
// Semantic check of Flux scripts with InfluxData's Flux language server compiled to WebAssembly
// (@influxdata/flux-lsp-browser), so queries can be checked without an InfluxDB 2.x server.
//
// Usage:
//   node check.mjs FILE...      one script per file ("-" = stdin)
//   node check.mjs              stdin is one script
//   node check.mjs --json       stdin is a JSON array of scripts (strings)
// Prints a JSON array, one {"name", "valid", "errors"} per script, in input order.
// Exit status: 0 all valid, 1 some invalid, 2 usage or loading error.
//
// Why the manual loading: the package's entry does `import * as wasm from "./..._bg.wasm"`, which
// Node 20 cannot evaluate (ESM wasm integration is circular there). So we instantiate the .wasm
// ourselves, forward each of its imports to the same-named export of flux-lsp-browser_bg.js, and load
// a copy of that JS glue whose wasm import is replaced by our instance's exports.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const GLUE_IMPORT = /^import \* as wasm from ['"]\.\/flux-lsp-browser_bg\.wasm['"];?$/m;

async function loadFlux() {
  const require = createRequire(import.meta.url);
  const pkgDir = dirname(require.resolve("@influxdata/flux-lsp-browser/package.json"));
  const module = new WebAssembly.Module(readFileSync(join(pkgDir, "flux-lsp-browser_bg.wasm")));

  let glue = null; // set once the JS glue is loaded; wasm calls into it only after that
  const imports = {};
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (kind !== "function") throw new Error(`unexpected wasm import ${from}.${name} (${kind})`);
    imports[from] ??= {};
    imports[from][name] = (...args) => glue[name](...args);
  }
  const instance = new WebAssembly.Instance(module, imports);

  const source = readFileSync(join(pkgDir, "flux-lsp-browser_bg.js"), "utf8");
  if (!GLUE_IMPORT.test(source)) throw new Error("flux-lsp-browser_bg.js no longer imports its wasm as expected");
  globalThis.__fluxCheckWasm = instance.exports;
  const patched = source.replace(GLUE_IMPORT, "const wasm = globalThis.__fluxCheckWasm;");
  glue = await import("data:text/javascript;base64," + Buffer.from(patched).toString("base64"));
  return glue;
}

// Syntax errors are recorded in the AST; semantic (type, signature) failures only as a boolean.
function syntaxErrors(node, found = []) {
  if (Array.isArray(node)) node.forEach((child) => syntaxErrors(child, found));
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "errors" && Array.isArray(value)) found.push(...value.map((e) => e.msg ?? String(e)));
      else syntaxErrors(value, found);
    }
  }
  return found;
}

function check(flux, name, script) {
  const program = new flux.Flux(script);
  try {
    const valid = program.is_valid();
    let errors = [];
    if (!valid) {
      errors = syntaxErrors(flux.parse(script));
      if (errors.length === 0) errors = ["semantic check failed: unknown identifier, wrong type or wrong function arguments"];
    }
    return { name, valid, errors };
  } finally {
    program.free();
  }
}

function readScripts(args) {
  if (args[0] === "--json") {
    const scripts = JSON.parse(readFileSync(0, "utf8"));
    if (!Array.isArray(scripts) || !scripts.every((s) => typeof s === "string")) {
      throw new Error("--json expects a JSON array of strings on stdin");
    }
    return scripts.map((script, i) => [`#${i}`, script]);
  }
  const files = args.length ? args : ["-"];
  return files.map((f) => [f, readFileSync(f === "-" ? 0 : f, "utf8")]);
}

try {
  const scripts = readScripts(process.argv.slice(2));
  const flux = await loadFlux();
  const results = scripts.map(([name, script]) => check(flux, name, script));
  process.stdout.write(JSON.stringify(results, null, 1) + "\n");
  process.exitCode = results.every((r) => r.valid) ? 0 : 1;
} catch (err) {
  process.stderr.write(`flux-check: ${err.message}\n`);
  process.exitCode = 2;
}
