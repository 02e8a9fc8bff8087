// swift-tools-version:6.2
// The Swift peer of Tandem's HTTP benchmarks: swift-server's async-http-client doing the work that
// `tandem-bench ahc-peer` measures Tandem doing, in the same run (Integration/bench.sh ahc-peer).
// A package of its own, so that Tandem's package does not depend on async-http-client or SwiftNIO.
import PackageDescription

let package = Package(
    name: "TandemPeer",
    dependencies: [
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
    ],
    targets: [
        .executableTarget(
            name: "ahc-peer",
            dependencies: [.product(name: "AsyncHTTPClient", package: "async-http-client")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
