#!/usr/bin/env python3
"""Extracts the README's Swift code blocks into test sources, so that a snippet that no longer
compiles fails the test command (issue 30).

Every ```swift block in README.md and in the documentation catalogs' articles (Sources/*/*.docc/*.md)
is preceded by a marker line naming where it is compiled:

    <!-- snippet: core -->         Tests/TandemTests (the tests phase)
    <!-- snippet: hummingbird -->  Tests/Adapters/TandemHummingbirdTests (the adapters phase, traits on)
    <!-- snippet: vapor -->        Tests/Adapters/TandemVaporTests (the adapters phase, traits on)
    <!-- snippet: manifest -->     a Package.swift fragment: not Swift a target can compile; its lines
                                   are checked to name tools version 6.1 and the product and package

A block's `import` lines go to the top of the generated file; the rest becomes the body of a function
that is compiled, never run. The function's parameters (see CONTEXT) are names a README reader has
from the text around the block (`app`, `caches`, `http`, ...); a block that declares one of them
itself shadows it. Writes `ReadmeSnippets.generated.swift` in each target folder (ignored by git).
Exits 1, naming the line, for a Swift block without a marker or a marker of an unknown kind.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "core": ROOT / "Tests/TandemTests",
    "hummingbird": ROOT / "Tests/Adapters/TandemHummingbirdTests",
    "vapor": ROOT / "Tests/Adapters/TandemVaporTests",
}
GUARDS = {"core": None, "hummingbird": "HummingbirdAdapter", "vapor": "VaporAdapter"}
IMPORTS = {
    "core": ["Foundation", "Logging", "ServiceLifecycle", "Tandem", "Testing"],
    "hummingbird": ["Foundation", "Hummingbird", "HummingbirdAuth", "Tandem", "TandemHummingbird", "Testing"],
    "vapor": ["Foundation", "Tandem", "TandemVapor", "Testing", "Vapor"],
}
# What the prose around the blocks gives a reader: parameters of every snippet function, and helpers.
CONTEXT = {
    "core": ("cache: Tandem.Cache, caches: Caches, http: UpstreamClient, logger: Logger, data: Data, myServer: ReadmeServer",
             "struct ReadmeServer: Service { func run() async throws {} }\n"
             "private func render() async throws -> String { \"\" }\n"
             "private func load() async throws -> [String] { [] }\n"),
    "hummingbird": ("upstreamClient: UpstreamClient",
                    "struct User: Codable, Sendable {}\n"
                    "private func loadProduct() async throws -> String { \"\" }\n"),
    "vapor": ("app: Application", ""),
}


def blocks(text, name):
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```swift"):
            marker = lines[i - 1].strip() if i > 0 else ""
            m = re.fullmatch(r"<!-- snippet: ([a-z]+) -->", marker)
            if not m:
                sys.exit(f"{name}:{i + 1}: a ```swift block without a '<!-- snippet: KIND -->' line before it")
            kind = m.group(1)
            if kind not in TARGETS and kind != "manifest":
                sys.exit(f"{name}:{i}: unknown snippet kind '{kind}' (core, hummingbird, vapor, manifest)")
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((kind, name, i - len(body), body))
        i += 1
    return out


def check_manifest(name, line, body):
    text = "\n".join(body)
    for needed in ["6.1", ".product(name:", "package:"]:
        if needed not in text:
            sys.exit(f"{name}:{line}: the Package.swift fragment does not mention '{needed}'")


def main():
    # The README, and the articles of the documentation catalogs (Sources/*/*.docc), with the same markers.
    documents = [ROOT / "README.md"] + sorted(ROOT.glob("Sources/*/*.docc/*.md"))
    found = []
    for path in documents:
        found += blocks(path.read_text(), str(path.relative_to(ROOT)))
    per_kind = {k: [] for k in TARGETS}
    for kind, name, line, body in found:
        if kind == "manifest":
            check_manifest(name, line, body)
        else:
            per_kind[kind].append((name, line, body))
    for kind, snippets in per_kind.items():
        imports = set(IMPORTS[kind])
        functions = []
        params, helpers = CONTEXT[kind]
        for name, line, body in snippets:
            code = []
            declared = []
            for l in body:
                m = re.match(r"\s*import (\w+)\s*$", l)
                if m:
                    imports.add(m.group(1))
                    continue
                code.append("        " + l if l.strip() else "")
                d = re.match(r"(?:let|var) (\w+)\b", l)  # a name the block declares at its top level
                if d:
                    declared.append(d.group(1))
            # Uses every top-level name, so that a block that only shows a value compiles without warnings.
            code += [f"        _ = {name}" for name in declared]
            prefix = "" if name == "README.md" else re.sub(r"\W", "_", Path(name).stem) + "_"
            functions.append(f"    // {name} line {line}\n"
                             f"    static func {prefix}line{line}({params}) async throws {{\n"
                             f"        do {{\n" + "\n".join("    " + c if c else c for c in code) + "\n        }\n    }")
        src = ["// Generated by Integration/readme_snippets.py from README.md and the .docc articles: do not edit (ignored by git).",
               "// Each function is one of the README's code blocks, compiled and never run."]
        if GUARDS[kind]:
            src.append(f"#if {GUARDS[kind]}")
        src += [f"import {i}" for i in sorted(imports)]
        src.append("")
        src.append("// Names the README's prose gives its readers.")
        src.append(helpers.rstrip())
        src.append("")
        src.append(f"enum ReadmeSnippets{kind.capitalize()} {{")
        src.append("\n\n".join(functions))
        src.append("}")
        if GUARDS[kind]:
            src.append("#endif")
        (TARGETS[kind] / "ReadmeSnippets.generated.swift").write_text("\n".join(src) + "\n")
        print(f"README snippets: {len(snippets)} {kind} block(s) -> {TARGETS[kind].relative_to(ROOT)}", file=sys.stderr)


main()
