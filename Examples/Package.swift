// swift-tools-version: 6.1
// An example shop on Hummingbird and Tandem: a package of its own that depends on Tandem by path, so
// that Tandem itself never builds Hummingbird. `Examples/run.sh` starts it with its servers;
// `Examples/test.sh` runs its tests against real servers.
import Foundation
import PackageDescription

// SwiftPM names a path dependency after its folder: this repository's root, whatever it is called
// in a checkout (`tandem`, or a CI clone's folder).
let tandem = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

let package = Package(
    name: "TandemExamples",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "shop", targets: ["shop"])],
    dependencies: [
        .package(path: "..", traits: ["HummingbirdAdapter"]),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        .target(name: "Shop", dependencies: [
            .product(name: "Tandem", package: tandem),
            .product(name: "TandemHummingbird", package: tandem),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        .executableTarget(name: "shop", dependencies: ["Shop", .product(name: "Metrics", package: "swift-metrics")]),
        .testTarget(name: "ShopTests", dependencies: [
            "Shop",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
