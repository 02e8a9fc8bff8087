#!/usr/bin/env bash
# Integration/docs.sh [adapters]: the documentation, with warnings as errors, as the test command
# checks it.
# - swift-docc-plugin (the package's plugin dependency, the command the README gives) builds the
#   public modules and the Tandem product's articles (Sources/Tandem/Tandem.docc) into one archive,
#   .build/docs/Tandem.doccarchive. Browse it with
#   `swift package --disable-sandbox preview-documentation --target Tandem`.
# - `adapters`: also the Hummingbird and Vapor adapters (their traits on; a build of SwiftNIO,
#   Hummingbird and Vapor in .build-adapters the first time), .build/docs/Tandem{Hummingbird,Vapor}.doccarchive.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TANDEM_ROOT"
plugin_docs "$TANDEM_ROOT/.build/docs"
if [ "${1:-}" = adapters ]; then
  swift build --traits HummingbirdAdapter,VaporAdapter --scratch-path "$TANDEM_ROOT/.build-adapters" "${adapter_symbol_flags[@]}"
  convert_docs "$TANDEM_ROOT/.build/docs" "$ADAPTER_SYMBOL_GRAPHS" "${ADAPTER_DOC_MODULES[@]}"
fi
echo "docs: .build/docs/*.doccarchive" >&2
