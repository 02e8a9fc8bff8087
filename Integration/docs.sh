#!/usr/bin/env bash
# Integration/docs.sh: builds Tandem with its public symbol graphs and converts every module (and the
# Tandem product's articles, Sources/Tandem/Tandem.docc) with DocC into .build/docs/*.doccarchive,
# failing on any warning. Browse one with `docc preview Sources/Tandem/Tandem.docc
# --additional-symbol-graph-dir .build/docs/graphs/Tandem`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TANDEM_ROOT"
swift build "${symbol_flags[@]}"
convert_docs "$TANDEM_ROOT/.build/docs"
echo "docs: .build/docs/{$(IFS=,; echo "${DOC_MODULES[*]}")}.doccarchive" >&2
